//! The block store's writer: one plain thread that owns the tail segment and writes records through io_uring,
//! O_DIRECT, from one reused 4 KiB-aligned buffer. Each write is linked to its `fdatasync`, so both reach the
//! kernel in one `io_uring_enter` and the thread sleeps once until both are done: no reactor polls or cancels
//! anything between them. Appends that queue while a write is on disk are written together next (group commit):
//! one write and one fdatasync for all of them. An append is answered only after its group's fdatasync completed;
//! after any failed write the writer answers the error and stops, since the file's state is then unknown.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use io_uring::{opcode, squeue, types, IoUring};

use crate::error::Error;
use crate::limits::{GROUP_COMMIT_BYTES_MAX, RECORD_ALIGN_BYTES, STORE_QUEUE_MAX};
use crate::store::{
    encode_record, record_len, segment_path, stopped, sync_dir, FsyncObserver, Location,
};

/// Submission entries: one write linked to one fdatasync is all that is ever in flight.
const RING_ENTRIES: u32 = 2;
const WRITE: u64 = 1;
const SYNC: u64 = 2;

/// One block handed to the writer, answered with its location once durable.
pub(crate) struct Append {
    pub height: u64,
    pub payload: Arc<Vec<u8>>,
    pub reply: Sender<Result<Location, Error>>,
}

/// Where the writer starts and what it is told to report.
pub(crate) struct WriterConfig {
    pub dir: PathBuf,
    /// The tail segment and the end of its valid records.
    pub segment: u64,
    pub offset: u64,
    pub segment_bytes_max: u64,
    pub on_fsync: Option<FsyncObserver>,
}

/// Starts the writer thread; it runs until every sender of the returned queue is dropped (or a write fails).
pub(crate) fn start(config: WriterConfig) -> Result<(Sender<Append>, JoinHandle<()>), Error> {
    let ring =
        IoUring::new(RING_ENTRIES).map_err(|e| Error::io("set up io_uring for", &config.dir, e))?;
    let (sender, receiver) = bounded::<Append>(STORE_QUEUE_MAX);
    let dir = config.dir.clone();
    let join = std::thread::Builder::new()
        .name("cas-store".to_string())
        .spawn(move || {
            let mut writer = Writer {
                ring,
                buffer: AlignedBuffer::new(),
                file: None,
                direct: true,
                config,
            };
            writer.run(&receiver);
        })
        .map_err(|e| Error::io("start the store thread for", &dir, e))?;
    Ok((sender, join))
}

struct Writer {
    ring: IoUring,
    buffer: AlignedBuffer,
    /// The open tail segment (opened at the first append).
    file: Option<File>,
    /// Whether segments open with O_DIRECT (false once a file system refused it).
    direct: bool,
    config: WriterConfig,
}

impl Writer {
    fn run(&mut self, queue: &Receiver<Append>) {
        let mut next = None;
        loop {
            let first = match next.take() {
                Some(append) => append,
                None => match queue.recv() {
                    Ok(append) => append,
                    Err(_) => return,
                },
            };
            let mut group = vec![first];
            let mut bytes = record_len(group[0].payload.len());
            // Whatever queued meanwhile joins the group while it fits the segment and the group limit.
            while group.len() < STORE_QUEUE_MAX {
                match queue.try_recv() {
                    Ok(append) => {
                        let len = record_len(append.payload.len());
                        if bytes + len > GROUP_COMMIT_BYTES_MAX
                            || self.config.offset + (bytes + len) as u64
                                > self.config.segment_bytes_max
                        {
                            next = Some(append);
                            break;
                        }
                        bytes += len;
                        group.push(append);
                    }
                    Err(_) => break,
                }
            }
            match self.write_group(&group, bytes) {
                Ok(locations) => {
                    for (append, location) in group.iter().zip(locations) {
                        let _ = append.reply.send(Ok(location));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "store: write failed; the store takes no more appends");
                    // Appends are acknowledged in order: the first is told why, the rest that the writer stopped.
                    let mut answer = Some(error);
                    for append in group.iter().chain(next.as_ref()) {
                        let _ = append
                            .reply
                            .send(Err(answer.take().unwrap_or_else(stopped)));
                    }
                    return;
                }
            }
        }
    }

    /// Writes the group's records (`bytes` in all) after the tail, syncs them, and returns where each lies.
    fn write_group(&mut self, group: &[Append], bytes: usize) -> Result<Vec<Location>, Error> {
        if self.config.offset > 0
            && self.config.offset + bytes as u64 > self.config.segment_bytes_max
        {
            self.file = None;
            self.config.segment += 1;
            self.config.offset = 0;
            tracing::info!(segment = self.config.segment, "store: new segment");
        }
        if self.file.is_none() {
            self.open_segment()?;
        }
        let out = self.buffer.take(bytes);
        let mut locations = Vec::with_capacity(group.len());
        let mut at = 0;
        for append in group {
            let len = record_len(append.payload.len());
            encode_record(&mut out[at..at + len], append.height, &append.payload);
            locations.push(Location {
                segment: self.config.segment,
                offset: self.config.offset + at as u64,
                payload_len: append.payload.len() as u32,
            });
            at += len;
        }
        let path = segment_path(&self.config.dir, self.config.segment);
        let file = self.file.as_ref().expect("opened above");
        let started = Instant::now();
        write_and_sync(
            &mut self.ring,
            file,
            &self.buffer.bytes()[..bytes],
            self.config.offset,
        )
        .map_err(|e| Error::io("write and fdatasync segment", &path, e))?;
        if let Some(observe) = &self.config.on_fsync {
            (observe.0)(started.elapsed());
        }
        self.config.offset += bytes as u64;
        Ok(locations)
    }

    fn open_segment(&mut self) -> Result<(), Error> {
        let path = segment_path(&self.config.dir, self.config.segment);
        let open = |direct: bool| {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            if direct {
                options.custom_flags(libc::O_DIRECT);
            }
            options.open(&path)
        };
        let file = match open(self.direct) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // tmpfs and a few others refuse O_DIRECT; fdatasync still makes buffered writes durable.
                tracing::warn!(segment = %path.display(), "store: O_DIRECT refused, writing through the page cache");
                self.direct = false;
                open(false)
            }
            other => other,
        }
        .map_err(|e| Error::io("open segment", &path, e))?;
        // The new file's directory entry must be durable before any record in it is acknowledged.
        sync_dir(&self.config.dir)?;
        self.file = Some(file);
        Ok(())
    }
}

/// Writes all of `bytes` at `offset` and fdatasyncs the file: the write and the sync go in one submission, linked,
/// so the sync starts only after the write succeeded in full (a short write cancels it, and the rest is written
/// and synced the same way).
fn write_and_sync(
    ring: &mut IoUring,
    file: &File,
    bytes: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    let fd = types::Fd(file.as_raw_fd());
    let mut done = 0usize;
    loop {
        let rest = &bytes[done..];
        let write = opcode::Write::new(fd, rest.as_ptr(), rest.len() as u32)
            .offset(offset + done as u64)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(WRITE);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(SYNC);
        // SAFETY: `rest` (the writer's buffer) outlives both entries: this function returns only after both
        // completions are reaped below, and nothing else uses the ring.
        unsafe {
            let mut queue = ring.submission();
            queue
                .push(&write)
                .expect("the ring has room for two entries");
            queue
                .push(&sync)
                .expect("the ring has room for two entries");
        }
        let (mut written, mut synced) = (None, None);
        let mut reaped = 0;
        while reaped < 2 {
            // Waits for the completions not reaped yet: a signal may end a wait after one of the two arrived.
            match ring.submit_and_wait(2 - reaped) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            for entry in ring.completion() {
                reaped += 1;
                match entry.user_data() {
                    WRITE => written = Some(entry.result()),
                    _ => synced = Some(entry.result()),
                }
            }
        }
        let (written, synced) = (written.expect("reaped"), synced.expect("reaped"));
        if written < 0 {
            return Err(std::io::Error::from_raw_os_error(-written));
        }
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("wrote 0 of {} bytes", rest.len()),
            ));
        }
        done += written as usize;
        if done == bytes.len() {
            if synced < 0 {
                return Err(std::io::Error::from_raw_os_error(-synced));
            }
            return Ok(());
        }
        // A short write: the linked sync was cancelled; write (and sync) the rest.
    }
}

/// A heap buffer aligned for O_DIRECT, kept and grown (never shrunk) across appends.
struct AlignedBuffer {
    ptr: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuffer {}

impl AlignedBuffer {
    fn new() -> AlignedBuffer {
        AlignedBuffer {
            ptr: NonNull::dangling(),
            capacity: 0,
        }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, RECORD_ALIGN_BYTES).expect("a valid aligned layout")
    }

    /// The first `len` bytes (a multiple of the alignment), grown if needed; their contents are unspecified.
    fn take(&mut self, len: usize) -> &mut [u8] {
        debug_assert!(len.is_multiple_of(RECORD_ALIGN_BYTES));
        if len > self.capacity {
            self.release();
            let capacity = len.next_power_of_two();
            // SAFETY: the layout has a non-zero size (len > capacity >= 0).
            let ptr = unsafe { alloc::alloc_zeroed(Self::layout(capacity)) };
            self.ptr = NonNull::new(ptr)
                .unwrap_or_else(|| alloc::handle_alloc_error(Self::layout(capacity)));
            self.capacity = capacity;
        }
        // SAFETY: `ptr` holds `capacity >= len` initialized (zeroed at allocation) bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }

    fn bytes(&self) -> &[u8] {
        if self.capacity == 0 {
            return &[];
        }
        // SAFETY: as in `take`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity) }
    }

    fn release(&mut self) {
        if self.capacity > 0 {
            // SAFETY: allocated in `take` with this very layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) };
            self.capacity = 0;
            self.ptr = NonNull::dangling();
        }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_and_its_sync_land_whole() {
        let dir = std::env::temp_dir().join(format!("cas-store-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut ring = IoUring::new(RING_ENTRIES).unwrap();
        let mut buffer = AlignedBuffer::new();
        let out = buffer.take(2 * RECORD_ALIGN_BYTES);
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        write_and_sync(
            &mut ring,
            &file,
            &buffer.bytes()[..2 * RECORD_ALIGN_BYTES],
            4096,
        )
        .unwrap();
        let read = std::fs::read(&path).unwrap();
        assert_eq!(read.len(), 3 * RECORD_ALIGN_BYTES);
        assert!(read[..4096].iter().all(|b| *b == 0));
        assert!(read[4096..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_queued_together_are_durable_in_order_across_segments() {
        use crate::store::{BlockStore, StoreConfig};
        let dir = std::env::temp_dir().join(format!("cas-store-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Records of 1-3 pages in segments of 8 pages: groups are cut at segment ends.
        let config = StoreConfig {
            segment_bytes_max: 8 * RECORD_ALIGN_BYTES as u64,
            on_fsync: None,
        };
        let payload =
            |height: u64| vec![height as u8; 100 + (height as usize % 3) * RECORD_ALIGN_BYTES];
        let (mut store, _) = BlockStore::open(&dir, &config).unwrap();
        let pending: Vec<_> = (0..40)
            .map(|height| store.append(height, Arc::new(payload(height))).unwrap())
            .collect();
        let mut last = None;
        for pending in pending {
            let location = store.acknowledge(pending).unwrap();
            assert!(
                last < Some((location.segment, location.offset)),
                "locations ascend"
            );
            assert!(
                location.offset + record_len(location.payload_len as usize) as u64
                    <= config.segment_bytes_max
            );
            last = Some((location.segment, location.offset));
        }
        assert!(
            last.unwrap().0 >= 5,
            "40 records of 1-3 pages fill several 8-page segments"
        );
        drop(store);
        let (store, truncated) = BlockStore::open(&dir, &config).unwrap();
        assert_eq!((truncated, store.durable_height()), (0, Some(39)));
        for height in 0..40 {
            assert_eq!(store.read(height).unwrap(), payload(height));
        }
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A signal ends an io_uring wait early (EINTR, sometimes after one of the two completions came): every append
    /// must still be answered, and the writer must not wait for a completion it already reaped (it would sleep
    /// until some later signal). Each append here gets one signal at a varying delay, then must be answered.
    #[test]
    fn appends_complete_when_a_signal_interrupts_the_writer() {
        use std::os::unix::thread::JoinHandleExt;
        extern "C" fn ignore(_: libc::c_int) {}
        // SAFETY: installs a handler that does nothing, without SA_RESTART, for a signal nothing else here uses.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
                0
            );
        }
        let dir = std::env::temp_dir().join(format!("cas-store-signals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (queue, join) = start(WriterConfig {
            dir: dir.clone(),
            segment: 0,
            offset: 0,
            segment_bytes_max: 1 << 30,
            on_fsync: None,
        })
        .unwrap();
        for height in 0..300u64 {
            let (reply, answer) = bounded(1);
            queue
                .send(Append {
                    height,
                    payload: Arc::new(vec![height as u8; 700]),
                    reply,
                })
                .unwrap();
            std::thread::sleep(std::time::Duration::from_micros(height % 7 * 40));
            // SAFETY: the writer thread runs until `queue` is dropped below.
            unsafe { libc::pthread_kill(join.as_pthread_t(), libc::SIGUSR2) };
            let location = answer
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("answered, not left waiting for a completion already reaped")
                .unwrap();
            assert_eq!(location.offset, height * RECORD_ALIGN_BYTES as u64);
        }
        drop(queue);
        join.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_buffer_grows_aligned() {
        let mut buffer = AlignedBuffer::new();
        assert!(buffer.bytes().is_empty());
        buffer.take(RECORD_ALIGN_BYTES)[0] = 7;
        buffer.take(5 * RECORD_ALIGN_BYTES);
        assert_eq!(buffer.bytes().len(), 8 * RECORD_ALIGN_BYTES);
        assert_eq!(buffer.bytes().as_ptr() as usize % RECORD_ALIGN_BYTES, 0);
    }
}
