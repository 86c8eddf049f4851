//! The block store: append-only segment files of checksummed records, one block per record, written through
//! glommio DMA files (io_uring, O_DIRECT) and `fdatasync`ed before an append is acknowledged; an index from height
//! to location; and the scan that reopens the store after a crash. It stores bytes and never interprets a block.
//!
//! Record layout (little-endian), starting on a 4 KiB boundary:
//! `magic "CASR" | payload length u32 | height u64 | blake3 checksum (32) | payload | zero padding to 4 KiB`.
//! Records are aligned so that an append only writes fresh pages: an acknowledged record is never rewritten, so a
//! crash can tear only the record being appended. On open, the first bad record of the last segment is a torn tail
//! when nothing valid follows it, and is truncated; a bad record with a valid record after it, or in an earlier
//! segment, is corruption ([`Error::Corrupt`], naming segment and offset) and the store refuses to open.
//! Reads (recovery, replay) use plain `pread`: they happen once at start-up, off the hot path.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use glommio::io::{DmaFile, OpenOptions as DmaOpenOptions};
use glommio::{ExecutorJoinHandle, Placement};

use crate::error::Error;
use crate::executor::spawn_executor;
use crate::limits::{
    RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_DEFAULT,
    STORE_IO_MEMORY_BYTES, STORE_QUEUE_MAX,
};

const RECORD_MAGIC: [u8; 4] = *b"CASR";
const CHECKSUM_DOMAIN: &str = "CAS 2026-11 block store record v1";

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// A new segment file starts when the next record would pass this size.
    pub segment_bytes_max: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
        }
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

/// An append queued at the store executor; [`BlockStore::acknowledge`] waits until it is durable.
pub struct PendingAppend {
    height: u64,
    reply: Receiver<Result<Location, Error>>,
}

struct Append {
    height: u64,
    payload: Arc<Vec<u8>>,
    reply: Sender<Result<Location, Error>>,
}

pub struct BlockStore {
    dir: PathBuf,
    /// `index[height]` locates block `height`; every entry is durable.
    index: Vec<Location>,
    /// Heights handed to the writer so far (durable or not).
    appended: u64,
    writer: Option<Sender<Append>>,
    join: Option<ExecutorJoinHandle<()>>,
}

pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("segment-{segment:08}.log"))
}

fn record_len(payload_len: usize) -> usize {
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
fn encode_record(out: &mut [u8], height: u64, payload: &[u8]) {
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
        let numbers = segment_numbers(dir)?;
        let mut index = Vec::new();
        let mut truncated = 0u64;
        let mut tail = (numbers.last().copied().unwrap_or(0), 0u64);
        for (position, &segment) in numbers.iter().enumerate() {
            let last = position + 1 == numbers.len();
            let (end, cut) = Self::scan_segment(dir, segment, last, &mut index)?;
            truncated += cut;
            if last {
                tail = (segment, end);
            }
        }
        if truncated > 0 {
            tracing::warn!(dir = %dir.display(), truncated, "store: torn tail truncated");
        }
        let (writer, join) = Self::start_writer(dir, tail, config.segment_bytes_max)?;
        let durable = index.len().checked_sub(1);
        tracing::info!(dir = %dir.display(), durable_height = ?durable, segment = tail.0, "store opened");
        Ok((
            BlockStore {
                dir: dir.to_path_buf(),
                appended: index.len() as u64,
                index,
                writer: Some(writer),
                join: Some(join),
            },
            truncated,
        ))
    }

    /// Scans one segment into `index`; returns the end of its valid records and how many bytes were cut.
    fn scan_segment(
        dir: &Path,
        segment: u64,
        last: bool,
        index: &mut Vec<Location>,
    ) -> Result<(u64, u64), Error> {
        let path = segment_path(dir, segment);
        let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut offset = 0usize;
        while offset < bytes.len() {
            match parse_record(&bytes, offset) {
                Ok((height, payload)) => {
                    if height != index.len() as u64 {
                        return Err(Error::Corrupt {
                            segment: path,
                            offset: offset as u64,
                            reason: format!("record of height {height}, expected {}", index.len()),
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
    ) -> Result<(Sender<Append>, ExecutorJoinHandle<()>), Error> {
        let (sender, receiver) = bounded::<Append>(STORE_QUEUE_MAX);
        let dir = dir.to_path_buf();
        let join = spawn_executor(
            "cas-store",
            Placement::Unbound,
            STORE_IO_MEMORY_BYTES,
            move || async move {
                let mut writer = Writer {
                    dir,
                    segment: tail.0,
                    offset: tail.1,
                    segment_bytes_max,
                    file: None,
                };
                while let Ok(append) = receiver.recv() {
                    let result = writer.append(append.height, &append.payload).await;
                    let failed = result.is_err();
                    let _ = append.reply.send(result);
                    if failed {
                        // After a failed write the file's state is unknown: stop taking appends.
                        break;
                    }
                }
                if let Some(file) = writer.file.take() {
                    let _ = file.close().await;
                }
            },
        )?;
        Ok((sender, join))
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
            self.index.len() as u64,
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

    /// The height of the last durable block, or None when the store is empty.
    pub fn durable_height(&self) -> Option<u64> {
        (self.index.len() as u64).checked_sub(1)
    }

    pub fn location(&self, height: u64) -> Option<Location> {
        self.index.get(height as usize).copied()
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

fn stopped() -> Error {
    Error::ExecutorStopped {
        name: "cas-store".to_string(),
    }
}

impl Drop for BlockStore {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(join) = self.join.take() {
            if let Err(error) = join.join() {
                tracing::error!(%error, "store executor ended badly");
            }
        }
    }
}

/// The store executor's state: the open tail segment and where the next record goes.
struct Writer {
    dir: PathBuf,
    segment: u64,
    offset: u64,
    segment_bytes_max: u64,
    file: Option<DmaFile>,
}

impl Writer {
    async fn open_segment(&mut self) -> Result<(), Error> {
        let path = segment_path(&self.dir, self.segment);
        let file = DmaOpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&path)
            .await
            .map_err(|e| Error::io("open segment", &path, e.into()))?;
        // The new file's directory entry must be durable before any record in it is acknowledged.
        sync_dir(&self.dir)?;
        self.file = Some(file);
        Ok(())
    }

    async fn append(&mut self, height: u64, payload: &[u8]) -> Result<Location, Error> {
        let len = record_len(payload.len());
        if self.offset > 0 && self.offset + len as u64 > self.segment_bytes_max {
            if let Some(file) = self.file.take() {
                let path = segment_path(&self.dir, self.segment);
                file.close()
                    .await
                    .map_err(|e| Error::io("close segment", &path, e.into()))?;
            }
            self.segment += 1;
            self.offset = 0;
            tracing::info!(segment = self.segment, "store: new segment");
        }
        if self.file.is_none() {
            self.open_segment().await?;
        }
        let path = segment_path(&self.dir, self.segment);
        let file = self.file.as_ref().expect("opened above");
        let mut buffer = file.alloc_dma_buffer(len);
        encode_record(buffer.as_bytes_mut(), height, payload);
        let written = file
            .write_at(buffer, self.offset)
            .await
            .map_err(|e| Error::io("write segment", &path, e.into()))?;
        if written != len {
            return Err(Error::io(
                "write segment",
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {written} of {len} bytes"),
                ),
            ));
        }
        file.fdatasync()
            .await
            .map_err(|e| Error::io("fdatasync segment", &path, e.into()))?;
        let location = Location {
            segment: self.segment,
            offset: self.offset,
            payload_len: payload.len() as u32,
        };
        self.offset += len as u64;
        Ok(location)
    }
}
