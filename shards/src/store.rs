//! The block store: append-only segment files of checksummed records, one block per record, written through
//! io_uring with O_DIRECT by the store's writer thread (`store_writer`: a write and its `fdatasync` linked in one
//! submission, appends that queue meanwhile committed as one group) and durable before an append is acknowledged;
//! an index from height to location; and the scan that reopens the store after a crash. It stores bytes and never
//! interprets a block.
//!
//! Record layout (little-endian), starting on a 4 KiB boundary:
//! `magic "CASR" | payload length u32 | height u64 | blake3 checksum (32) | payload | zero padding to 4 KiB`.
//! Records are aligned so that an append only writes fresh pages: an acknowledged record is never rewritten, so a
//! crash can tear only the record being appended. On open, the first bad record of the last segment is a torn tail
//! when nothing valid follows it, and is truncated; a bad record with a valid record after it, or in an earlier
//! segment, is corruption ([`Error::Corrupt`], naming segment and offset) and the store refuses to open.
//! Reads (recovery, replay) use plain `pread`: they happen once at start-up, off the hot path.
//!
//! A store may start above height 0 (a node that installed a UTXO snapshot): the `base` file names the first
//! height, the first segment that may hold it, and an opaque 32-byte anchor the caller keeps for what precedes it
//! (the node keeps the hash of block base - 1). [`BlockStore::reset_to_base`] writes that file durably first, then
//! deletes the older segments; an open finishes an interrupted reset by deleting them again.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::Error;
use crate::limits::{
    RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_DEFAULT,
};
use crate::store_writer::{self, Append, WriterConfig};

const RECORD_MAGIC: [u8; 4] = *b"CASR";
const CHECKSUM_DOMAIN: &str = "CAS 2026-11 block store record v1";
const BASE_MAGIC: [u8; 8] = *b"CASBASE1";
const BASE_CHECKSUM_DOMAIN: &str = "CAS 2026-11 block store base v1";
/// magic (8) + base height (8) + first segment (8) + anchor (32) + blake3 checksum (32).
const BASE_FILE_BYTES: usize = 88;

/// Where a store that does not start at height 0 starts (see the module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    /// The first height the store holds (or will hold).
    pub height: u64,
    /// Segments numbered below this are left over from before the base and are deleted.
    pub first_segment: u64,
    /// The caller's record of what precedes `height` (the node: block `height - 1`'s hash).
    pub anchor: [u8; 32],
}

fn base_path(dir: &Path) -> PathBuf {
    dir.join("base")
}

fn encode_base(base: &Base) -> [u8; BASE_FILE_BYTES] {
    let mut out = [0u8; BASE_FILE_BYTES];
    out[0..8].copy_from_slice(&BASE_MAGIC);
    out[8..16].copy_from_slice(&base.height.to_le_bytes());
    out[16..24].copy_from_slice(&base.first_segment.to_le_bytes());
    out[24..56].copy_from_slice(&base.anchor);
    let checksum = blake3::Hasher::new_derive_key(BASE_CHECKSUM_DOMAIN)
        .update(&out[..56])
        .finalize();
    out[56..].copy_from_slice(checksum.as_bytes());
    out
}

fn read_base(dir: &Path) -> Result<Option<Base>, Error> {
    let path = base_path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let corrupt = |reason: &str| Error::Corrupt {
        segment: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() != BASE_FILE_BYTES || bytes[0..8] != BASE_MAGIC {
        return Err(corrupt("not a store base file"));
    }
    let checksum = blake3::Hasher::new_derive_key(BASE_CHECKSUM_DOMAIN)
        .update(&bytes[..56])
        .finalize();
    if checksum.as_bytes()[..] != bytes[56..] {
        return Err(corrupt("base file checksum mismatch"));
    }
    Ok(Some(Base {
        height: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        first_segment: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        anchor: bytes[24..56].try_into().expect("32 bytes"),
    }))
}

/// Writes `bytes` to `path` through a temp file, fsync, rename and a directory fsync: old or new, never half.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let temp = path.with_extension("tmp");
    let mut file = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
    std::io::Write::write_all(&mut file, bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &temp, e))?;
    drop(file);
    fs::rename(&temp, path).map_err(|e| Error::io("rename", &temp, e))?;
    sync_dir(path.parent().expect("a file path has a parent"))
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// A new segment file starts when the next record would pass this size.
    pub segment_bytes_max: u64,
    /// Told how long each group of appends took to write and fdatasync (the node's metrics), on the store's thread.
    pub on_fsync: Option<FsyncObserver>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            on_fsync: None,
        }
    }
}

/// A callback given each write-and-fdatasync's duration: it must be cheap (it runs on the store's thread, per group).
#[derive(Clone)]
pub struct FsyncObserver(pub std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for FsyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncObserver")
    }
}

/// Where a block's record lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    /// Byte offset of the record's header in the segment.
    pub offset: u64,
    pub payload_len: u32,
}

/// An append queued at the store's writer; [`BlockStore::acknowledge`] waits until it is durable.
pub struct PendingAppend {
    height: u64,
    reply: Receiver<Result<Location, Error>>,
}

pub struct BlockStore {
    dir: PathBuf,
    /// Where the store starts (None: at height 0, no base file).
    base: Option<Base>,
    /// `index[i]` locates block `first_height() + i`; every entry is durable.
    index: Vec<Location>,
    /// Heights handed to the writer so far (durable or not).
    appended: u64,
    writer: Option<Sender<Append>>,
    join: Option<std::thread::JoinHandle<()>>,
    segment_bytes_max: u64,
    on_fsync: Option<FsyncObserver>,
}

pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("segment-{segment:08}.log"))
}

pub(crate) fn record_len(payload_len: usize) -> usize {
    (RECORD_HEADER_BYTES + payload_len).next_multiple_of(RECORD_ALIGN_BYTES)
}

fn checksum(payload_len: u32, height: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_DOMAIN);
    h.update(&payload_len.to_le_bytes());
    h.update(&height.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

/// Writes a whole record (header, payload, zero padding) into `out`, which is `record_len` bytes long.
pub(crate) fn encode_record(out: &mut [u8], height: u64, payload: &[u8]) {
    debug_assert_eq!(out.len(), record_len(payload.len()));
    let payload_len = payload.len() as u32;
    out[0..4].copy_from_slice(&RECORD_MAGIC);
    out[4..8].copy_from_slice(&payload_len.to_le_bytes());
    out[8..16].copy_from_slice(&height.to_le_bytes());
    out[16..48].copy_from_slice(&checksum(payload_len, height, payload));
    out[48..48 + payload.len()].copy_from_slice(payload);
    out[48 + payload.len()..].fill(0);
}

/// A record read back: its height and payload range inside the buffer, or why it is not a valid record.
fn parse_record(bytes: &[u8], offset: usize) -> Result<(u64, std::ops::Range<usize>), String> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(format!(
            "{} bytes left, a header needs {RECORD_HEADER_BYTES}",
            rest.len()
        ));
    }
    if rest[0..4] != RECORD_MAGIC {
        return Err("no record magic".to_string());
    }
    let payload_len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let height = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    if payload_len == 0 || payload_len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Err(format!("payload length {payload_len} is out of range"));
    }
    let end = RECORD_HEADER_BYTES + payload_len as usize;
    if rest.len() < end {
        return Err(format!(
            "payload of {payload_len} bytes runs past the end of the segment"
        ));
    }
    let payload = &rest[RECORD_HEADER_BYTES..end];
    if rest[16..48] != checksum(payload_len, height, payload) {
        return Err("checksum mismatch".to_string());
    }
    Ok((height, offset + RECORD_HEADER_BYTES..offset + end))
}

fn segment_numbers(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

impl BlockStore {
    /// Opens (or creates) the store in `dir`: scans every segment, truncates a torn tail, and starts the writer.
    /// Returns the store and the number of torn bytes cut off.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<(BlockStore, u64), Error> {
        assert!(config.segment_bytes_max >= RECORD_ALIGN_BYTES as u64);
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let base = read_base(dir)?;
        let first_height = base.map_or(0, |b| b.height);
        let first_segment = base.map_or(0, |b| b.first_segment);
        let mut numbers = segment_numbers(dir)?;
        let stale: Vec<u64> = numbers
            .iter()
            .copied()
            .filter(|n| *n < first_segment)
            .collect();
        if !stale.is_empty() {
            // A reset to a base was interrupted after its base file was durable: finish it.
            for segment in &stale {
                let path = segment_path(dir, *segment);
                fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
            sync_dir(dir)?;
            tracing::warn!(dir = %dir.display(), segments = stale.len(), "store: segments below the base removed");
            numbers.retain(|n| *n >= first_segment);
        }
        let mut index = Vec::new();
        let mut truncated = 0u64;
        let mut tail = (numbers.last().copied().unwrap_or(first_segment), 0u64);
        for (position, &segment) in numbers.iter().enumerate() {
            let last = position + 1 == numbers.len();
            let (end, cut) = Self::scan_segment(dir, segment, last, first_height, &mut index)?;
            truncated += cut;
            if last {
                tail = (segment, end);
            }
        }
        if truncated > 0 {
            tracing::warn!(dir = %dir.display(), truncated, "store: torn tail truncated");
        }
        let (writer, join) =
            Self::start_writer(dir, tail, config.segment_bytes_max, config.on_fsync.clone())?;
        let store = BlockStore {
            dir: dir.to_path_buf(),
            base,
            appended: first_height + index.len() as u64,
            index,
            writer: Some(writer),
            join: Some(join),
            segment_bytes_max: config.segment_bytes_max,
            on_fsync: config.on_fsync.clone(),
        };
        tracing::info!(dir = %dir.display(), first_height, durable_height = ?store.durable_height(), segment = tail.0, "store opened");
        Ok((store, truncated))
    }

    /// The first height this store holds or will hold (0 unless it was reset to a base).
    pub fn first_height(&self) -> u64 {
        self.base.map_or(0, |b| b.height)
    }

    /// The base the store was reset to, if any.
    pub fn base(&self) -> Option<Base> {
        self.base
    }

    /// The height the next append must carry.
    pub fn next_height(&self) -> u64 {
        self.appended
    }

    /// Drops every stored block and makes the store start at `height` (a snapshot of the state at `height - 1` is
    /// installed by the caller before), remembering `anchor`. Crash-safe: the base file is durable before any
    /// segment is deleted, and an open deletes what a crash left. Nothing may be in flight.
    pub fn reset_to_base(&mut self, height: u64, anchor: [u8; 32]) -> Result<(), Error> {
        assert_eq!(
            self.appended,
            self.first_height() + self.index.len() as u64,
            "no append in flight during a reset"
        );
        self.stop_writer();
        let numbers = segment_numbers(&self.dir)?;
        let first_segment = numbers
            .last()
            .map_or(self.base.map_or(0, |b| b.first_segment), |n| n + 1);
        let base = Base {
            height,
            first_segment,
            anchor,
        };
        write_atomic(&base_path(&self.dir), &encode_base(&base))?;
        for segment in numbers {
            let path = segment_path(&self.dir, segment);
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
        sync_dir(&self.dir)?;
        let (writer, join) = Self::start_writer(
            &self.dir,
            (first_segment, 0),
            self.segment_bytes_max,
            self.on_fsync.clone(),
        )?;
        self.writer = Some(writer);
        self.join = Some(join);
        self.base = Some(base);
        self.index.clear();
        self.appended = height;
        tracing::info!(dir = %self.dir.display(), height, first_segment, "store reset to a base");
        Ok(())
    }

    fn stop_writer(&mut self) {
        self.writer.take();
        if let Some(join) = self.join.take() {
            if join.join().is_err() {
                tracing::error!("the store's writer thread panicked");
            }
        }
    }

    /// Scans one segment into `index`; returns the end of its valid records and how many bytes were cut.
    fn scan_segment(
        dir: &Path,
        segment: u64,
        last: bool,
        first_height: u64,
        index: &mut Vec<Location>,
    ) -> Result<(u64, u64), Error> {
        let path = segment_path(dir, segment);
        let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut offset = 0usize;
        while offset < bytes.len() {
            match parse_record(&bytes, offset) {
                Ok((height, payload)) => {
                    let expected = first_height + index.len() as u64;
                    if height != expected {
                        return Err(Error::Corrupt {
                            segment: path,
                            offset: offset as u64,
                            reason: format!("record of height {height}, expected {expected}"),
                        });
                    }
                    index.push(Location {
                        segment,
                        offset: offset as u64,
                        payload_len: payload.len() as u32,
                    });
                    offset += record_len(payload.len());
                }
                Err(reason) => {
                    let valid_after = (offset + RECORD_ALIGN_BYTES..bytes.len())
                        .step_by(RECORD_ALIGN_BYTES)
                        .any(|later| parse_record(&bytes, later).is_ok());
                    if !last || valid_after {
                        return Err(Error::Corrupt {
                            segment: path,
                            offset: offset as u64,
                            reason,
                        });
                    }
                    // A torn append: only the record being written when the process died can be incomplete.
                    let cut = (bytes.len() - offset) as u64;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io("open", &path, e))?;
                    file.set_len(offset as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| Error::io("truncate", &path, e))?;
                    tracing::warn!(segment = %path.display(), offset, %reason, "store: torn record cut");
                    return Ok((offset as u64, cut));
                }
            }
        }
        Ok((offset as u64, 0))
    }

    fn start_writer(
        dir: &Path,
        tail: (u64, u64),
        segment_bytes_max: u64,
        on_fsync: Option<FsyncObserver>,
    ) -> Result<(Sender<Append>, std::thread::JoinHandle<()>), Error> {
        store_writer::start(WriterConfig {
            dir: dir.to_path_buf(),
            segment: tail.0,
            offset: tail.1,
            segment_bytes_max,
            on_fsync,
        })
    }

    /// Queues block `height` for a durable append; heights must come in order, one after the other.
    pub fn append(&mut self, height: u64, payload: Arc<Vec<u8>>) -> Result<PendingAppend, Error> {
        assert_eq!(height, self.appended, "blocks are appended in height order");
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                len: payload.len(),
                max: RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        let (reply, answer) = bounded(1);
        let writer = self.writer.as_ref().expect("the writer runs until drop");
        writer
            .send(Append {
                height,
                payload,
                reply,
            })
            .map_err(|_| stopped())?;
        self.appended += 1;
        Ok(PendingAppend {
            height,
            reply: answer,
        })
    }

    /// Waits until an append is durable (written and fdatasync'ed) and indexes it.
    pub fn acknowledge(&mut self, pending: PendingAppend) -> Result<Location, Error> {
        assert_eq!(
            pending.height,
            self.first_height() + self.index.len() as u64,
            "acknowledged in order"
        );
        let location = pending.reply.recv().map_err(|_| stopped())??;
        self.index.push(location);
        Ok(location)
    }

    /// Appends one block and waits until it is durable.
    pub fn append_durable(&mut self, height: u64, payload: Vec<u8>) -> Result<Location, Error> {
        let pending = self.append(height, Arc::new(payload))?;
        self.acknowledge(pending)
    }

    /// The height of the last durable block, or None when the store holds none.
    pub fn durable_height(&self) -> Option<u64> {
        (self.index.len() as u64)
            .checked_sub(1)
            .map(|last| self.first_height() + last)
    }

    pub fn location(&self, height: u64) -> Option<Location> {
        let position = height.checked_sub(self.first_height())?;
        self.index.get(usize::try_from(position).ok()?).copied()
    }

    /// Reads block `height`'s payload, checking its checksum again.
    pub fn read(&self, height: u64) -> Result<Vec<u8>, Error> {
        let location = self.location(height).ok_or(Error::NotStored {
            height,
            durable: self.durable_height(),
        })?;
        let path = segment_path(&self.dir, location.segment);
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let mut record = vec![0u8; RECORD_HEADER_BYTES + location.payload_len as usize];
        file.read_exact_at(&mut record, location.offset)
            .map_err(|e| Error::io("read", &path, e))?;
        let (stored_height, payload) =
            parse_record(&record, 0).map_err(|reason| Error::Corrupt {
                segment: path.clone(),
                offset: location.offset,
                reason,
            })?;
        if stored_height != height {
            return Err(Error::Corrupt {
                segment: path,
                offset: location.offset,
                reason: format!("record of height {stored_height}, expected {height}"),
            });
        }
        Ok(record[payload].to_vec())
    }
}

pub(crate) fn stopped() -> Error {
    Error::ExecutorStopped {
        name: "cas-store".to_string(),
    }
}

impl Drop for BlockStore {
    fn drop(&mut self) {
        self.stop_writer();
    }
}
