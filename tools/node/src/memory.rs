//! The node process's memory policy: no transparent huge pages unless the operator asks for them.
//!
//! mimalloc marks its arenas `MADV_HUGEPAGE`, so with the kernel's THP mode at `madvise` (the common default) every
//! first touch of a 2 MiB region faults in a whole huge page and zeroes it on the faulting thread. A node's memory
//! grows with its UTXO set and its windows, so those faults land on the driver and the executor in the middle of a
//! block: on the 2-vCPU development VM a first touch of huge pages ran at 0.18-1.9 GB/s against 2.2-2.9 GB/s for
//! small pages, and `perf` put a quarter of the node's CPU in `clear_page_erms` under `do_huge_pmd_anonymous_page`
//! at 15,000 tx/s. With huge pages refused the same runs had p99 300-475 ms against 1,034-1,314 ms (perf/README.md).
//! Databases with the same pattern (Redis, MongoDB, TiKV) give the same advice.

/// Refuses transparent huge pages for this whole process (`PR_SET_THP_DISABLE`): the kernel then ignores
/// `MADV_HUGEPAGE` on every mapping, the allocator's earlier ones included, and children inherit it. Only speed and
/// memory depend on it; a kernel without the call leaves the process as it was, with a warning.
pub fn refuse_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "transparent huge pages stay allowed: the kernel refused PR_SET_THP_DISABLE"
        );
    }
}

/// Whether this process refuses transparent huge pages.
pub fn transparent_huge_pages_refused() -> bool {
    // SAFETY: as above; the answer is the return value.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_refuses_huge_pages_once_asked() {
        refuse_transparent_huge_pages();
        assert!(transparent_huge_pages_refused());
    }
}
