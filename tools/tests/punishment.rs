//! Punishment on a real cluster (issue 19): `tools/tests/punishment.py` runs 4 members and a follower that declares
//! its candidacy; one member's process is stopped, the ledger blacklists it (no rewards) and then evicts it, the next
//! election picks the follower, which joins the committee at the epoch's start, the committee stays live, and the
//! stopped member, resumed, follows; all 5 nodes end at one commitment. The script says what failed.

mod common;

#[test]
fn a_member_that_stops_voting_is_blacklisted_evicted_and_replaced() {
    let stdout = common::run_script("punishment.py", "punishment: all checks passed");
    eprintln!("{stdout}");
}
