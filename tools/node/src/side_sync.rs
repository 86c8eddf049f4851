//! The driver's second fdatasync: one long-lived thread that flushes a file while the driver flushes another (the
//! safety state beside the journal), so the messages held for both wait for one device flush's time, not two,
//! without a thread started and ended for every flush.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// The side thread and its two one-slot queues: a descriptor to flush in, the flush's outcome out.
pub struct SideSync {
    requests: Option<SyncSender<i32>>,
    done: Receiver<io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SideSync {
    pub fn start() -> io::Result<SideSync> {
        let (requests, inbox) = sync_channel::<i32>(1);
        let (reply, done) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("cas-side-sync".to_string())
            .spawn(move || {
                for fd in inbox {
                    // SAFETY: fdatasync(2) on a descriptor that `sync_data_beside` keeps open (its file stays
                    // borrowed) until this outcome has been received.
                    let synced = match unsafe { libc::fdatasync(fd) } {
                        0 => Ok(()),
                        _ => Err(io::Error::last_os_error()),
                    };
                    if reply.send(synced).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SideSync {
            requests: Some(requests),
            done,
            thread: Some(thread),
        })
    }

    /// fdatasyncs `file` on the side thread while `meanwhile` runs on this one, and returns both outcomes once
    /// both are done. `file` stays borrowed until the side thread has answered, so its descriptor cannot close
    /// under the flush.
    pub fn sync_data_beside<R>(
        &self,
        file: &File,
        meanwhile: impl FnOnce() -> R,
    ) -> (io::Result<()>, R) {
        let requests = self.requests.as_ref().expect("open until dropped");
        if requests.send(file.as_raw_fd()).is_err() {
            // The side thread is gone (it cannot be, short of a panic): flush here, one after the other.
            let here = meanwhile();
            return (file.sync_data(), here);
        }
        let here = meanwhile();
        let synced = self
            .done
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the side sync thread stopped")));
        (synced, here)
    }
}

impl Drop for SideSync {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Both flushes run and report, the side one's error included: a descriptor that cannot be flushed (a pipe's)
    /// comes back as an error, not as success, and the thread goes on serving.
    #[test]
    fn flushes_beside_the_caller_and_reports_the_side_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("side")).unwrap();
        file.write_all(b"record").unwrap();
        let side = SideSync::start().unwrap();
        let (synced, here) = side.sync_data_beside(&file, || 7);
        assert!(synced.is_ok(), "{synced:?}");
        assert_eq!(here, 7);
        let (reader, _writer) = {
            let mut fds = [0i32; 2];
            // SAFETY: pipe(2) fills two descriptors, each owned by one File below.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            use std::os::fd::FromRawFd;
            // SAFETY: the descriptors were just made by pipe(2) and are owned by nothing else.
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
        };
        let (synced, ()) = side.sync_data_beside(&reader, || ());
        assert!(synced.is_err(), "a pipe cannot be fdatasynced");
        let (synced, ()) = side.sync_data_beside(&file, || ());
        assert!(synced.is_ok(), "{synced:?}");
    }
}
