//! The transaction index: where each executed transaction landed (height, index, block) and its verdict (final, or
//! rejected in block order with its [`RejectCode`]), for the client API's status queries. The executor appends one
//! record per ledger block and fdatasyncs it before any receipt of that block is sent, so every `final` a client
//! heard is still answered after a crash or restart; the index is read back from its files at start.
//!
//! Files: segments `txindex/<first height, 12 digits>.log` of checksummed records,
//! `magic "CASI" | payload length u32 | blake3 checksum (32) | payload`, the payload
//! `height u64 | block hash (32) | count u32 | count x (tx id (32) | code u16, 0 when applied) | claims u32 |
//! claims x (sender (32) | client id u64 | index in the block u32)`, little-endian: the client ids the block's applied
//! transactions used ([`cas_engine::rules::claim_outpoint`]), for `duplicate` answers with the first one's id.
//! The same segments hold the committee's ledger certificates (magic `"CASC"`, the payload
//! [`LedgerCert::to_bytes`]), written as they form and made durable by the next block's fdatasync (a crash loses at
//! most the certificates formed since the last executed block: those heights have no receipt on this node). A torn
//! last record is cut at start; a bad record elsewhere is corruption and the node refuses to start.
//!
//! The view keeps where each block's record and certificate lie, and reads them back for a settlement receipt.
//!
//! Retention: the newest `kept` transactions are answered (88 bytes of map keys and values each, before the maps' overhead, and 34 bytes of disk);
//! older ones answer `unknown`, and segments whose transactions all fell out are deleted.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use cas_consensus::ledger_cert::LedgerCert;
use cas_engine::fasthash::FastSet;
use cas_engine::parted_map::PartedMap;
use cas_engine::{ArchivedTransaction, BlockHash, Hash32, PublicKey, RejectCode, TxError, TxId};

const MAGIC: [u8; 4] = *b"CASI";
const CERT_MAGIC: [u8; 4] = *b"CASC";
const HEADER_BYTES: usize = 4 + 4 + 32;
const CHECKSUM_DOMAIN: &str = "CAS 2026-12 transaction index record v1";
const ENTRY_BYTES: usize = 32 + 2;
const CLAIM_BYTES: usize = 32 + 8 + 4;

/// A client id an applied transaction used: its sender, the id, and the transaction's place in its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub sender: PublicKey,
    pub client_id: u64,
    pub index: u32,
}
/// A new segment starts when the current one passes this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Transactions answered by default (`tx_index_kept` in node.toml).
pub const TX_INDEX_KEPT_DEFAULT: usize = 2_000_000;
/// The most transactions one record holds: a ledger block's.
const RECORD_TXS_MAX: usize = cas_engine::codec::BLOCK_TXS_MAX;

/// Where a transaction landed, and whether the rules applied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    pub height: u64,
    pub index: u32,
    pub block: BlockHash,
    /// The rule it broke (nothing changed), or None when it was applied.
    pub rejection: Option<RejectCode>,
}

/// Where a record lies: its segment (by first height) and offset.
#[derive(Clone, Copy, Debug)]
struct Place {
    segment: u64,
    offset: u64,
}

/// What the view keeps per indexed height.
struct BlockEntry {
    hash: BlockHash,
    record: Place,
    cert: Option<Place>,
}

/// A block's results as the index holds them, for a settlement receipt.
pub struct BlockResults {
    pub hash: BlockHash,
    /// Each transaction's id and verdict code (0 when applied), in block order.
    pub results: Vec<(TxId, u16)>,
    /// The committee's certificate on the block's result, when this node holds one.
    pub cert: Option<LedgerCert>,
}

#[derive(Clone, Copy)]
struct Entry {
    height: u64,
    index: u32,
    code: u16,
}

/// The in-memory side, shared with the API: the newest `kept` transactions by id.
pub struct TxIndexView {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Transactions this node admitted and has not indexed yet (bounded by the node's in-flight bound: the driver
    /// takes out those that expire). Its own lock, taken once per admission batch and once per block, so the
    /// driver never waits on a block's index insert.
    pending: Mutex<FastSet<TxId>>,
}

struct Inner {
    kept: usize,
    /// Maps of staggered parts (see `cas_engine::parted_map`): they grow to millions of entries, and one map
    /// doubling at once held the executor and the API's readers for the whole move.
    by_tx: PartedMap<TxId, Entry>,
    /// Transactions in the order they were indexed, with their heights, for retention.
    order: VecDeque<(u64, TxId)>,
    blocks: BTreeMap<u64, BlockEntry>,
    by_client: PartedMap<(PublicKey, u64), TxId>,
    /// Claims in the order they were indexed, with their heights, for retention (with their transactions).
    claim_order: VecDeque<(u64, (PublicKey, u64))>,
}

impl TxIndexView {
    /// Marks transactions this node admitted: `pending` until they are indexed.
    pub fn mark_pending(&self, ids: &[TxId]) {
        self.pending
            .lock()
            .expect("pending lock")
            .extend(ids.iter().copied());
    }

    /// Forgets admitted transactions that will not be executed here (their admission expired).
    pub fn unmark_pending(&self, ids: &[TxId]) {
        let mut pending = self.pending.lock().expect("pending lock");
        for id in ids {
            pending.remove(id);
        }
    }

    /// Whether this node admitted the transaction and has not indexed it yet.
    pub fn is_pending(&self, id: &TxId) -> bool {
        self.pending.lock().expect("pending lock").contains(id)
    }

    /// The transaction that used `client_id` for `sender`, if the ledger applied one within retention.
    pub fn by_client(&self, sender: &PublicKey, client_id: u64) -> Option<TxId> {
        self.inner
            .lock()
            .expect("index lock")
            .by_client
            .get(&(*sender, client_id))
            .copied()
    }

    pub fn get(&self, id: &TxId) -> Option<Landed> {
        let inner = self.inner.lock().expect("index lock");
        let entry = inner.by_tx.get(id)?;
        Some(Landed {
            height: entry.height,
            index: entry.index,
            block: inner.blocks.get(&entry.height)?.hash,
            rejection: RejectCode::from_u16(entry.code),
        })
    }

    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.inner.lock().expect("index lock").order.len()
    }

    /// The lowest height of which transactions are still answered (older ones fell out of retention).
    pub fn first_height(&self) -> Option<u64> {
        self.inner
            .lock()
            .expect("index lock")
            .blocks
            .keys()
            .next()
            .copied()
    }

    /// A block's results and certificate, read back from the segments; None when the height is not indexed here
    /// (or fell out of retention meanwhile).
    pub fn results(&self, height: u64) -> Result<Option<BlockResults>> {
        let (hash, record, cert) = {
            let inner = self.inner.lock().expect("index lock");
            let Some(entry) = inner.blocks.get(&height) else {
                return Ok(None);
            };
            (entry.hash, entry.record, entry.cert)
        };
        let read = |place: Place, magic: [u8; 4]| -> Result<Option<Vec<u8>>> {
            let path = self.dir.join(format!("{:012}.log", place.segment));
            let file = match File::open(&path) {
                Ok(file) => file,
                // Deleted by retention after the lookup.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
            };
            read_frame_at(&file, place.offset, magic)
                .map(Some)
                .with_context(|| format!("{} at offset {}", path.display(), place.offset))
        };
        let Some(payload) = read(record, MAGIC)? else {
            return Ok(None);
        };
        let (_, _, results, _) = decode_payload(&payload).map_err(anyhow::Error::msg)?;
        let cert = match cert {
            Some(place) => read(place, CERT_MAGIC)?
                .map(|bytes| LedgerCert::from_bytes(&bytes).map_err(anyhow::Error::msg))
                .transpose()?,
            None => None,
        };
        Ok(Some(BlockResults {
            hash,
            results,
            cert,
        }))
    }

    /// Whether the committee's certificate on block `height` is kept here (a map lookup; no file is read).
    pub fn has_cert(&self, height: u64) -> bool {
        self.inner
            .lock()
            .expect("index lock")
            .blocks
            .get(&height)
            .is_some_and(|entry| entry.cert.is_some())
    }

    fn insert_cert(&self, height: u64, place: Place) {
        if let Some(entry) = self
            .inner
            .lock()
            .expect("index lock")
            .blocks
            .get_mut(&height)
        {
            entry.cert = Some(place);
        }
    }

    fn insert(
        &self,
        height: u64,
        block: BlockHash,
        record: Place,
        entries: &[(TxId, u16)],
        claims: &[Claim],
    ) {
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if !pending.is_empty() {
                for (id, _) in entries {
                    pending.remove(id);
                }
            }
        }
        let mut inner = self.inner.lock().expect("index lock");
        inner.blocks.insert(
            height,
            BlockEntry {
                hash: block,
                record,
                cert: None,
            },
        );
        for claim in claims {
            if let Some((id, _)) = entries.get(claim.index as usize) {
                let key = (claim.sender, claim.client_id);
                inner.by_client.insert(key, *id);
                inner.claim_order.push_back((height, key));
            }
        }
        for (index, (id, code)) in entries.iter().enumerate() {
            let entry = Entry {
                height,
                index: index as u32,
                code: *code,
            };
            // A transaction in the ledger twice (sent to two nodes, say) was applied at most once, the first time;
            // the later copy was refused (its inputs were spent). The first is its status.
            if inner.by_tx.contains_key(id) {
                continue;
            }
            inner.by_tx.insert(*id, entry);
            inner.order.push_back((height, *id));
        }
        while inner.order.len() > inner.kept {
            let (old_height, old) = inner.order.pop_front().expect("non-empty");
            // An id indexed again at a later height (a replay after a snapshot install) keeps its newer place.
            if inner
                .by_tx
                .get(&old)
                .is_some_and(|e| e.height == old_height)
            {
                inner.by_tx.remove(&old);
            }
        }
        if let Some(&(front, _)) = inner.order.front() {
            while let Some(&(claim_height, key)) = inner.claim_order.front() {
                if claim_height >= front {
                    break;
                }
                inner.claim_order.pop_front();
                inner.by_client.remove(&key);
            }
            while inner
                .blocks
                .first_key_value()
                .is_some_and(|(h, _)| *h < front)
            {
                inner.blocks.pop_first();
            }
        }
    }
}

/// The executor's side: appends records durably and keeps the view up to date.
pub struct TxIndex {
    dir: PathBuf,
    segment: Option<(u64, File, u64)>,
    last_height: Option<u64>,
    view: Arc<TxIndexView>,
    /// Told each record's fdatasync duration (the operator's metrics).
    pub fsync: Option<prometheus::Histogram>,
}

impl TxIndex {
    /// Opens (or creates) the index in `dir`, reading back what it holds; `kept` bounds what is answered.
    pub fn open(dir: &Path, kept: usize) -> Result<TxIndex> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let view = Arc::new(TxIndexView {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                kept: kept.max(1),
                by_tx: PartedMap::default(),
                order: VecDeque::new(),
                blocks: BTreeMap::new(),
                by_client: PartedMap::default(),
                claim_order: VecDeque::new(),
            }),
            pending: Mutex::new(FastSet::default()),
        });
        let mut index = TxIndex {
            dir: dir.to_path_buf(),
            segment: None,
            last_height: None,
            view,
            fsync: None,
        };
        let segments = index.segments()?;
        let last = segments.len().saturating_sub(1);
        for (position, (first, path)) in segments.iter().enumerate() {
            let bytes =
                fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let good = index.replay(*first, &bytes, path, position == last)?;
            if good < bytes.len() {
                tracing::warn!(path = %path.display(), cut = bytes.len() - good, "cutting a torn index record");
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(good as u64)?;
                file.sync_data()?;
            }
            if position == last {
                let file = OpenOptions::new().append(true).open(path)?;
                index.segment = Some((*first, file, good as u64));
            }
        }
        Ok(index)
    }

    pub fn view(&self) -> Arc<TxIndexView> {
        self.view.clone()
    }

    /// The last height indexed.
    pub fn last_height(&self) -> Option<u64> {
        self.last_height
    }

    fn segments(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut segments = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push((first, path));
            }
        }
        segments.sort();
        Ok(segments)
    }

    /// Reads the records of one segment into the view; returns the length of its good prefix.
    fn replay(&mut self, segment: u64, bytes: &[u8], path: &Path, last: bool) -> Result<usize> {
        let mut at = 0;
        while at < bytes.len() {
            let place = Place {
                segment,
                offset: at as u64,
            };
            match decode_frame(&bytes[at..]) {
                Ok((MAGIC, payload, used)) => {
                    let (height, block, entries, claims) = match decode_payload(payload) {
                        Ok(record) => record,
                        Err(reason) => bail!(
                            "{}: the transaction index is corrupt at offset {at}: {reason}",
                            path.display()
                        ),
                    };
                    self.view.insert(height, block, place, &entries, &claims);
                    self.last_height = Some(height);
                    at += used;
                }
                Ok((_, payload, used)) => {
                    let cert = LedgerCert::from_bytes(payload).map_err(|reason| {
                        anyhow::anyhow!(
                            "{}: a ledger certificate in the index is corrupt at offset {at}: {reason}",
                            path.display()
                        )
                    })?;
                    self.view.insert_cert(cert.statement.height, place);
                    at += used;
                }
                Err(reason) if last => {
                    tracing::warn!(path = %path.display(), offset = at, %reason, "index tail is torn");
                    return Ok(at);
                }
                Err(reason) => bail!(
                    "{}: the transaction index is corrupt at offset {at}: {reason}; move the txindex folder \
                     away to start with an empty index",
                    path.display()
                ),
            }
        }
        Ok(at)
    }

    /// Appends a ledger block's transactions with their verdicts, and the client ids its applied transactions
    /// used, and fdatasyncs them.
    pub fn append(
        &mut self,
        height: u64,
        block: BlockHash,
        ids: &[TxId],
        verdicts: &[Result<(), TxError>],
        claims: &[Claim],
    ) -> Result<()> {
        self.append_results(height, block, &results_of(ids, verdicts), claims)
    }

    /// [`TxIndex::append`] with the block's results already made ([`results_of`]): the executor makes them once,
    /// for the index and for its ledger vote.
    pub fn append_results(
        &mut self,
        height: u64,
        block: BlockHash,
        entries: &[(TxId, u16)],
        claims: &[Claim],
    ) -> Result<()> {
        let record = encode_record(height, block, entries, claims);
        let roll = self
            .segment
            .as_ref()
            .is_none_or(|(_, _, bytes)| *bytes >= SEGMENT_BYTES);
        if roll {
            let path = self.dir.join(format!("{height:012}.log"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            File::open(&self.dir)?.sync_all()?;
            self.segment = Some((height, file, 0));
            self.delete_old_segments()?;
        }
        let (segment, file, bytes) = self.segment.as_mut().expect("a segment is open");
        let place = Place {
            segment: *segment,
            offset: *bytes,
        };
        file.write_all(&record)?;
        let syncing = std::time::Instant::now();
        file.sync_data()?;
        if let Some(fsync) = &self.fsync {
            fsync.observe(syncing.elapsed().as_secs_f64());
        }
        *bytes += record.len() as u64;
        self.view.insert(height, block, place, entries, claims);
        self.last_height = Some(height);
        Ok(())
    }

    /// Keeps the committee's certificate on an indexed block's result: written now, durable with the next
    /// block's fdatasync (or [`TxIndex::sync`]). A certificate for a height not indexed here is not kept.
    pub fn append_cert(&mut self, cert: &LedgerCert) -> Result<()> {
        let height = cert.statement.height;
        let Some((segment, file, bytes)) = self.segment.as_mut() else {
            return Ok(());
        };
        if !self
            .view
            .inner
            .lock()
            .expect("index lock")
            .blocks
            .contains_key(&height)
        {
            return Ok(());
        }
        let record = frame(CERT_MAGIC, &cert.to_bytes());
        let place = Place {
            segment: *segment,
            offset: *bytes,
        };
        file.write_all(&record)?;
        *bytes += record.len() as u64;
        self.view.insert_cert(height, place);
        Ok(())
    }

    /// Makes what was written durable (a graceful stop).
    pub fn sync(&mut self) -> Result<()> {
        if let Some((_, file, _)) = self.segment.as_mut() {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Indexes a stored block replayed at start (the node crashed after the block was durable and before its
    /// index record was): its bytes as the store holds them, and the verdicts the replay gave.
    pub fn append_stored(&mut self, bytes: &[u8], verdicts: &[Result<(), TxError>]) -> Result<()> {
        let block =
            cas_engine::codec::decode_block(bytes).context("a stored block does not decode")?;
        let height = block.header.height.to_native();
        if self.last_height.is_some_and(|last| last >= height) {
            return Ok(());
        }
        let ids: Vec<TxId> = block.txs.iter().map(|tx| tx.tx_id()).collect();
        let claims = applied_claims(claims_of(block.txs.iter()), verdicts);
        self.append(height, block.header.hash(), &ids, verdicts, &claims)
    }

    /// Deletes segments whose every height is below what the view still answers (the next segment's first height
    /// is at or below the view's first height).
    fn delete_old_segments(&self) -> Result<()> {
        let Some(first_kept) = self.view.first_height() else {
            return Ok(());
        };
        let segments = self.segments()?;
        for pair in segments.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *next_first <= first_kept {
                fs::remove_file(path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// The client-id claim of every transaction of a block that makes one, by its place in the block.
pub fn claims_of<'a>(txs: impl Iterator<Item = &'a ArchivedTransaction>) -> Vec<Claim> {
    txs.enumerate()
        .filter_map(|(index, tx)| {
            let (sender, client_id) = cas_engine::rules::claim_of(tx)?;
            Some(Claim {
                sender,
                client_id,
                index: index as u32,
            })
        })
        .collect()
}

/// The claims of the transactions the rules applied (a rejected transaction claims nothing).
pub fn applied_claims(claims: Vec<Claim>, verdicts: &[Result<(), TxError>]) -> Vec<Claim> {
    claims
        .into_iter()
        .filter(|c| verdicts[c.index as usize].is_ok())
        .collect()
}

/// A block's results as the index keeps them: each transaction's id and verdict code (0 when applied), in order.
pub fn results_of(ids: &[TxId], verdicts: &[Result<(), TxError>]) -> Vec<(TxId, u16)> {
    debug_assert_eq!(ids.len(), verdicts.len());
    ids.iter()
        .zip(verdicts)
        .map(|(id, verdict)| (*id, verdict.as_ref().err().map_or(0, |e| e.code().number())))
        .collect()
}

fn encode_record(
    height: u64,
    block: BlockHash,
    entries: &[(TxId, u16)],
    claims: &[Claim],
) -> Vec<u8> {
    let mut payload = Vec::with_capacity(
        8 + 32 + 4 + entries.len() * ENTRY_BYTES + 4 + claims.len() * CLAIM_BYTES,
    );
    payload.extend_from_slice(&height.to_le_bytes());
    payload.extend_from_slice(&block.0);
    payload.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, code) in entries {
        payload.extend_from_slice(&id.0);
        payload.extend_from_slice(&code.to_le_bytes());
    }
    payload.extend_from_slice(&(claims.len() as u32).to_le_bytes());
    for claim in claims {
        payload.extend_from_slice(&claim.sender.0);
        payload.extend_from_slice(&claim.client_id.to_le_bytes());
        payload.extend_from_slice(&claim.index.to_le_bytes());
    }
    frame(MAGIC, &payload)
}

/// `magic | payload length u32 | checksum (32) | payload`.
fn frame(magic: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
    record.extend_from_slice(&magic);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(blake3::derive_key(CHECKSUM_DOMAIN, payload).as_slice());
    record.extend_from_slice(payload);
    record
}

/// The largest payload a frame may carry: a block record of the most transactions, each with a claim.
const PAYLOAD_BYTES_MAX: usize = 8 + 32 + 4 + RECORD_TXS_MAX * (ENTRY_BYTES + CLAIM_BYTES) + 4;

/// Checks one frame at the start of `bytes`: its magic (a block record or a certificate), length and checksum.
/// Returns the magic, the payload and the frame's length.
fn decode_frame(bytes: &[u8]) -> std::result::Result<([u8; 4], &[u8], usize), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "{} bytes, a record header is {HEADER_BYTES}",
            bytes.len()
        ));
    }
    let magic: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    if magic != MAGIC && magic != CERT_MAGIC {
        return Err("no record magic".into());
    }
    let length = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if length > PAYLOAD_BYTES_MAX {
        return Err(format!("a record of {length} bytes"));
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + length) else {
        return Err("the record runs past the end of the file".into());
    };
    if blake3::derive_key(CHECKSUM_DOMAIN, payload) != bytes[8..40] {
        return Err("checksum mismatch".into());
    }
    Ok((magic, payload, HEADER_BYTES + length))
}

/// Reads the frame at `offset` of a segment and returns its payload, which must carry `magic`.
fn read_frame_at(file: &File, offset: u64, magic: [u8; 4]) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, offset)?;
    let length = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    if header[..4] != magic || length > PAYLOAD_BYTES_MAX {
        bail!("no {} record here", String::from_utf8_lossy(&magic));
    }
    let mut bytes = vec![0u8; HEADER_BYTES + length];
    bytes[..HEADER_BYTES].copy_from_slice(&header);
    file.read_exact_at(&mut bytes[HEADER_BYTES..], offset + HEADER_BYTES as u64)?;
    let (_, payload, _) = decode_frame(&bytes).map_err(anyhow::Error::msg)?;
    Ok(payload.to_vec())
}

type Record = (u64, BlockHash, Vec<(TxId, u16)>, Vec<Claim>);

/// A block record's payload.
fn decode_payload(payload: &[u8]) -> std::result::Result<Record, String> {
    if payload.len() < 44 {
        return Err("payload shorter than its fixed part".into());
    }
    let height = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let block = Hash32(payload[8..40].try_into().expect("32 bytes"));
    let count = u32::from_le_bytes(payload[40..44].try_into().expect("4 bytes")) as usize;
    let claims_at = 44 + count * ENTRY_BYTES;
    let Some(claims_field) = payload.get(claims_at..claims_at + 4) else {
        return Err(format!(
            "{count} entries in {} payload bytes",
            payload.len()
        ));
    };
    let claim_count = u32::from_le_bytes(claims_field.try_into().expect("4 bytes")) as usize;
    if payload.len() != claims_at + 4 + claim_count * CLAIM_BYTES || claim_count > count {
        return Err(format!(
            "{count} entries and {claim_count} claims in {} payload bytes",
            payload.len()
        ));
    }
    let entries = payload[44..claims_at]
        .chunks_exact(ENTRY_BYTES)
        .map(|e| {
            let id = Hash32(e[..32].try_into().expect("32 bytes"));
            (id, u16::from_le_bytes([e[32], e[33]]))
        })
        .collect();
    let claims = payload[claims_at + 4..]
        .chunks_exact(CLAIM_BYTES)
        .map(|c| Claim {
            sender: PublicKey(c[..32].try_into().expect("32 bytes")),
            client_id: u64::from_le_bytes(c[32..40].try_into().expect("8 bytes")),
            index: u32::from_le_bytes(c[40..44].try_into().expect("4 bytes")),
        })
        .collect();
    Ok((height, block, entries, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> TxId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        Hash32(bytes)
    }

    fn block(height: u64) -> BlockHash {
        Hash32([height as u8; 32])
    }

    /// What was indexed is answered after a reopen, with its verdict; a torn tail is cut and the index goes on.
    #[test]
    fn the_index_survives_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        index
            .append(
                1,
                block(1),
                &[id(1), id(2)],
                &[Ok(()), Err(TxError::NoInputs)],
                &[],
            )
            .unwrap();
        index
            .append(
                2,
                block(2),
                &[id(3)],
                &[Ok(())],
                &[Claim {
                    sender: PublicKey([9; 32]),
                    client_id: 5,
                    index: 0,
                }],
            )
            .unwrap();
        drop(index);
        let segment = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&encode_record(3, block(3), &[(id(4), 0)], &[])[..50])
            .unwrap();
        drop(file);

        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        assert_eq!(index.last_height(), Some(2));
        let view = index.view();
        assert_eq!(
            view.get(&id(2)),
            Some(Landed {
                height: 1,
                index: 1,
                block: block(1),
                rejection: Some(RejectCode::NoInputs)
            })
        );
        assert_eq!(view.get(&id(3)).unwrap().rejection, None);
        assert_eq!(view.get(&id(4)), None, "the torn record is gone");
        assert_eq!(view.by_client(&PublicKey([9; 32]), 5), Some(id(3)));
        assert_eq!(view.by_client(&PublicKey([9; 32]), 6), None);
        index.append(3, block(3), &[id(4)], &[Ok(())], &[]).unwrap();
        drop(index);
        let index = TxIndex::open(dir.path(), 100).unwrap();
        assert_eq!(index.view().get(&id(4)).unwrap().height, 3);
    }

    /// A block's results and its ledger certificate are read back, after a reopen too; a certificate for a height
    /// not indexed is not kept, and a torn certificate at the tail is cut like a torn block record.
    #[test]
    fn results_and_certificates_are_read_back() {
        use cas_consensus::ledger_cert::LedgerStatement;
        use cas_consensus::messages::SignerSignature;
        let cert = |height: u64| LedgerCert {
            statement: LedgerStatement {
                chain_id: 1,
                epoch: 0,
                height,
                block: block(height),
                consensus: Hash32([7; 32]),
                results_root: Hash32([8; 32]),
                utxo_commitment: Hash32([9; 32]),
            },
            signatures: vec![SignerSignature {
                signer: 2,
                signature: cas_engine::Signature([5; 64]),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        index
            .append(
                1,
                block(1),
                &[id(1), id(2)],
                &[Ok(()), Err(TxError::NoInputs)],
                &[],
            )
            .unwrap();
        index.append(2, block(2), &[id(3)], &[Ok(())], &[]).unwrap();
        index.append_cert(&cert(1)).unwrap();
        index.append_cert(&cert(5)).unwrap();
        let view = index.view();
        let one = view.results(1).unwrap().unwrap();
        assert_eq!(
            one.results,
            vec![(id(1), 0), (id(2), RejectCode::NoInputs.number())]
        );
        assert_eq!(one.cert, Some(cert(1)));
        assert_eq!(view.results(2).unwrap().unwrap().cert, None);
        assert!(view.results(5).unwrap().is_none());
        index.append_cert(&cert(2)).unwrap();
        index.sync().unwrap();
        drop(index);
        // A torn certificate after them.
        let segment = dir.path().join(format!("{:012}.log", 1));
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&frame(CERT_MAGIC, &cert(2).to_bytes())[..60])
            .unwrap();
        drop(file);
        let index = TxIndex::open(dir.path(), 100).unwrap();
        let view = index.view();
        assert_eq!(view.results(1).unwrap().unwrap().cert, Some(cert(1)));
        assert_eq!(view.results(2).unwrap().unwrap().cert, Some(cert(2)));
        assert_eq!(view.results(2).unwrap().unwrap().results, vec![(id(3), 0)]);
    }

    /// A bad record with good ones after it is corruption, not a torn tail: the node refuses to start.
    #[test]
    fn a_damaged_record_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        index.append(1, block(1), &[id(1)], &[Ok(())], &[]).unwrap();
        // Force a second segment so the first is not the last.
        index.segment.as_mut().unwrap().2 = SEGMENT_BYTES;
        index.append(2, block(2), &[id(2)], &[Ok(())], &[]).unwrap();
        drop(index);
        let first = dir.path().join(format!("{:012}.log", 1));
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER_BYTES + 3] ^= 1;
        fs::write(&first, bytes).unwrap();
        let error = TxIndex::open(dir.path(), 100).err().unwrap().to_string();
        assert!(error.contains("corrupt"), "{error}");
    }

    /// Only the newest `kept` transactions (and the client ids they claimed) are answered, and segments that hold
    /// only older ones are deleted.
    #[test]
    fn retention_bounds_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 4).unwrap();
        let sender = PublicKey([9; 32]);
        for height in 1..=6u64 {
            let ids = [id(height as u32 * 10), id(height as u32 * 10 + 1)];
            let claims = [Claim {
                sender,
                client_id: height,
                index: 0,
            }];
            index
                .append(height, block(height), &ids, &[Ok(()), Ok(())], &claims)
                .unwrap();
            index.segment.as_mut().unwrap().2 = SEGMENT_BYTES; // one segment per block
        }
        let view = index.view();
        assert_eq!(view.get(&id(40)).map(|l| l.height), None);
        assert_eq!(view.get(&id(50)).map(|l| l.height), Some(5));
        assert_eq!(view.get(&id(61)).map(|l| l.height), Some(6));
        assert_eq!(view.first_height(), Some(5));
        assert_eq!(view.by_client(&sender, 4), None);
        assert_eq!(view.by_client(&sender, 5), Some(id(50)));
        assert_eq!(view.inner.lock().unwrap().claim_order.len(), 2);
        index
            .append(7, block(7), &[id(70)], &[Ok(())], &[])
            .unwrap();
        let left = fs::read_dir(dir.path()).unwrap().count();
        assert!(left <= 3, "{left} segments left");
    }

    /// A stored block replayed at start is indexed as the executor would have: its ids, verdicts and the client
    /// ids of its applied transactions; one already indexed is not indexed twice.
    #[test]
    fn a_replayed_stored_block_is_indexed_like_an_executed_one() {
        use cas_engine::fixtures::{key, transfer, ACCOUNT_KEYS};
        use cas_engine::tx::{OutPoint, TxOutput};
        let owner = key(ACCOUNT_KEYS, 0);
        // A fixture transfer, given a client id (and signed again).
        let tx = |client_id: Option<u64>, seed: u8| {
            let coin = TxOutput {
                amount: 10,
                asset: cas_engine::AssetId::CAS,
                owner: owner.public(),
                unlock_height: None,
            };
            let input = (
                OutPoint {
                    tx: Hash32([seed; 32]),
                    index: 0,
                },
                coin,
            );
            let mut body = transfer(1, &owner, &[input], &owner, 5, 1).body;
            body.client_id = client_id;
            body.sign(&[&owner])
        };
        let txs = vec![tx(Some(7), 1), tx(Some(8), 2), tx(None, 3)];
        let block = cas_engine::Block {
            header: cas_engine::BlockHeader {
                chain_id: 1,
                height: 4,
                round: 4,
                parent: Hash32([0; 32]),
                tx_root: Hash32([0; 32]),
                sig_root: Hash32([0; 32]),
                proposer: owner.public(),
                timestamp_ms: 0,
                utxo_commitment: Hash32([0; 32]),
            },
            txs: txs.clone(),
        };
        let bytes = cas_engine::codec::encode_block(&block);
        let verdicts = [Ok(()), Err(TxError::NoInputs), Ok(())];
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        index.append_stored(&bytes, &verdicts).unwrap();
        index.append_stored(&bytes, &verdicts).unwrap();
        let view = index.view();
        let landed = view.get(&txs[1].tx_id()).unwrap();
        assert_eq!((landed.height, landed.index), (4, 1));
        assert_eq!(landed.block, block.header.hash());
        assert_eq!(landed.rejection, Some(RejectCode::NoInputs));
        assert_eq!(view.by_client(&owner.public(), 7), Some(txs[0].tx_id()));
        assert_eq!(
            view.by_client(&owner.public(), 8),
            None,
            "refused: no claim"
        );
        drop(index);
        let reopened = TxIndex::open(dir.path(), 100).unwrap();
        assert_eq!(reopened.last_height(), Some(4));
        assert_eq!(reopened.view().order_len(), 3, "indexed once");
    }

    /// What this node admitted is pending until it is indexed; what expired unexecuted is forgotten.
    #[test]
    fn admitted_transactions_are_pending_until_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        let view = index.view();
        view.mark_pending(&[id(1), id(2)]);
        assert!(view.is_pending(&id(1)) && view.is_pending(&id(2)));
        index.append(1, block(1), &[id(1)], &[Ok(())], &[]).unwrap();
        assert!(
            !view.is_pending(&id(1)),
            "indexed: final, no longer pending"
        );
        assert!(view.get(&id(1)).is_some());
        view.unmark_pending(&[id(2)]);
        assert!(!view.is_pending(&id(2)));
    }

    /// A transaction in the ledger twice was applied the first time and refused the second: the index answers the
    /// first.
    #[test]
    fn a_transaction_included_twice_keeps_its_first_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxIndex::open(dir.path(), 100).unwrap();
        index.append(1, block(1), &[id(9)], &[Ok(())], &[]).unwrap();
        index
            .append(
                2,
                block(2),
                &[id(9)],
                &[Err(TxError::MissingInput { input: 0 })],
                &[],
            )
            .unwrap();
        let landed = index.view().get(&id(9)).unwrap();
        assert_eq!((landed.height, landed.rejection), (1, None));
    }
}
