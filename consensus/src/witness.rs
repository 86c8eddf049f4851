//! The POW witness chain, sans-IO: miners commit to the hashes of the next `span` finalized DPOS blocks and search a
//! nonce that puts the header's blake3 under a target, so rewriting DPOS history costs work. This module owns the
//! header format and its one validating decoder, the chain state ([`WitnessChain`]: validation with typed reasons,
//! most-cumulative-work fork choice, per-window difficulty retarget, uncles cited once within a bounded depth), the
//! deterministic reward schedule and the pure nonce search [`mine`]. It never reads a clock, a file or a socket:
//! the caller passes `now_ms` and the finalized DPOS hashes.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use cas_engine::{BlockHash, Hash32, PublicKey};
use rkyv::{Archive, Deserialize, Serialize};

/// A witness block's id: the blake3 of its sealed header and nonce (the value compared with the target).
pub type WitnessHash = Hash32;

/// The parent of the first witness block: the chain starts before DPOS height 1.
pub const GENESIS_WITNESS: WitnessHash = Hash32([0; 32]);
pub use crate::limits::{
    RETARGET_CLAMP, STOP_CHECK_NONCES, UNCLES_PER_WITNESS_MAX, WITNESS_BYTES_MAX, WITNESS_SPAN_MAX,
};

mod domain {
    pub const SEAL: &str = "CAS 2026-11 witness header v1";
    pub const POW: &str = "CAS 2026-11 witness pow v1";
}

/// One witness block. Its hash is the proof of work; the miner's key is inside the sealed fields, so a header
/// cannot be re-targeted to another miner without redoing the work.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WitnessHeader {
    /// The witness this one extends ([`GENESIS_WITNESS`] for the first).
    pub parent: WitnessHash,
    /// Position in the witness chain: the parent's plus one (1 for the first).
    pub height: u64,
    /// The DPOS height of `dpos_hashes[0]`; the parent's range ends just before it.
    pub first_dpos_height: u64,
    /// The hashes of the DPOS (ledger) blocks `first_dpos_height ..`, exactly `span` of them.
    pub dpos_hashes: Vec<BlockHash>,
    /// Valid witnesses of an ancestor's range that lost the race, cited for the uncle/nephew reward.
    pub uncles: Vec<WitnessHash>,
    /// The miner's clock; bounded by the parent's and by the validator's clock.
    pub timestamp_ms: u64,
    /// The work this block claims; it must equal what the retarget rule expects after the parent.
    pub difficulty: u64,
    pub miner: PublicKey,
    pub nonce: u64,
}

impl WitnessHeader {
    /// The digest of every field but the nonce: mining hashes only this and a nonce (one blake3 block per try).
    pub fn seal(&self) -> Hash32 {
        let mut h = blake3::Hasher::new_derive_key(domain::SEAL);
        h.update(&self.parent.0);
        h.update(&self.height.to_le_bytes());
        h.update(&self.first_dpos_height.to_le_bytes());
        h.update(&(self.dpos_hashes.len() as u64).to_le_bytes());
        for hash in &self.dpos_hashes {
            h.update(&hash.0);
        }
        h.update(&(self.uncles.len() as u64).to_le_bytes());
        for uncle in &self.uncles {
            h.update(&uncle.0);
        }
        h.update(&self.timestamp_ms.to_le_bytes());
        h.update(&self.difficulty.to_le_bytes());
        h.update(&self.miner.0);
        Hash32::from(h.finalize())
    }

    pub fn hash(&self) -> WitnessHash {
        pow_hash(&self.seal(), self.nonce)
    }

    /// The last DPOS height this witness covers.
    pub fn last_dpos_height(&self) -> u64 {
        self.first_dpos_height + self.dpos_hashes.len() as u64 - 1
    }
}

/// The proof-of-work hasher before any input: deriving the domain key costs a compression, so it is done once
/// and the state cloned for each try.
fn pow_hasher() -> &'static blake3::Hasher {
    static HASHER: OnceLock<blake3::Hasher> = OnceLock::new();
    HASHER.get_or_init(|| blake3::Hasher::new_derive_key(domain::POW))
}

fn pow_hash(seal: &Hash32, nonce: u64) -> WitnessHash {
    let mut h = pow_hasher().clone();
    h.update(&seal.0);
    h.update(&nonce.to_le_bytes());
    Hash32::from(h.finalize())
}

/// Whether `hash` carries `difficulty` work: its first 8 bytes, big-endian, are at most `u64::MAX / difficulty`.
/// Expected tries to find one: `difficulty`.
pub fn meets_difficulty(hash: &WitnessHash, difficulty: u64) -> bool {
    let leading = u64::from_be_bytes(hash.0[..8].try_into().expect("8 bytes"));
    difficulty > 0 && leading <= u64::MAX / difficulty
}

/// Searches `nonces` for one that meets the header's difficulty; returns it and how many were tried. Stops early
/// (returning `None` and the count so far) once `stop` is set; it looks every [`STOP_CHECK_NONCES`] tries.
pub fn mine(header: &WitnessHeader, nonces: Range<u64>, stop: &AtomicBool) -> (Option<u64>, u64) {
    let seal = header.seal();
    let mut tried = 0u64;
    for nonce in nonces {
        if tried.is_multiple_of(STOP_CHECK_NONCES) && tried > 0 && stop.load(Ordering::Relaxed) {
            return (None, tried);
        }
        tried += 1;
        if meets_difficulty(&pow_hash(&seal, nonce), header.difficulty) {
            return (Some(nonce), tried);
        }
    }
    (None, tried)
}

/// Chain parameters, fixed per chain: every node must use the same ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessParams {
    /// N: DPOS blocks committed to per witness.
    pub span: u32,
    /// The interval between witness blocks that the retarget aims for.
    pub target_interval_ms: u64,
    /// Witness blocks per difficulty window: the difficulty changes at heights 1 + k * window.
    pub retarget_window: u64,
    /// The difficulty of the first window.
    pub initial_difficulty: u64,
    /// The retarget never goes below this. A witness cannot be mined before its range is final, so while the
    /// DPOS chain is slower than `span` blocks per target interval the windows run long and the difficulty falls;
    /// the floor keeps a witness from becoming free then.
    pub min_difficulty: u64,
    /// An uncle may be cited by a witness at most this many heights above it.
    pub uncle_depth_max: u64,
    /// The miner's reward for a witness at height 1; halves every `halving_interval` heights.
    pub base_reward: u64,
    pub halving_interval: u64,
    /// An uncle's miner gets this percentage of the base reward at the citing height.
    pub uncle_reward_percent: u64,
    /// The citing (nephew) miner gets this percentage of the base reward per uncle cited.
    pub nephew_reward_percent: u64,
    /// How far ahead of the validator's clock a timestamp may be.
    pub future_drift_ms: u64,
}

impl Default for WitnessParams {
    fn default() -> Self {
        WitnessParams {
            // 128 blocks per 2.5 s keeps up with a DPOS chain of up to ~51 blocks/s (a loaded 4-node cluster on
            // 2 cores makes 30-60); a slower chain is witnessed as fast as it finalizes, at the difficulty floor.
            span: cas_engine::genesis::DEFAULT_WITNESS_SPAN,
            target_interval_ms: 2_500,
            retarget_window: 16,
            initial_difficulty: 1 << 16,
            min_difficulty: 1 << 14,
            uncle_depth_max: 6,
            base_reward: 1_000,
            halving_interval: 1_000_000,
            uncle_reward_percent: 25,
            nephew_reward_percent: 3,
            future_drift_ms: 15_000,
        }
    }
}

impl WitnessParams {
    /// The miner's reward at witness `height` before uncles.
    pub fn base_reward_at(&self, height: u64) -> u64 {
        let halvings = height.saturating_sub(1) / self.halving_interval.max(1);
        self.base_reward.checked_shr(halvings as u32).unwrap_or(0)
    }
}

/// Limits on what a chain keeps in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessLimits {
    /// Finalized DPOS hashes remembered (the newest); a witness over older ones is refused as forgotten.
    pub finalized_kept: usize,
    /// Witness blocks more than this many heights below the best are forgotten, and new ones that deep refused.
    /// Must exceed the retarget window and the uncle depth.
    pub depth_kept: u64,
}

impl Default for WitnessLimits {
    fn default() -> Self {
        WitnessLimits {
            finalized_kept: crate::limits::WITNESS_FINALIZED_KEPT_DEFAULT,
            depth_kept: crate::limits::WITNESS_DEPTH_KEPT_DEFAULT,
        }
    }
}

/// Why a witness block is refused. Each names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("witness {0} is already known")]
    Duplicate(WitnessHash),
    #[error("the parent witness {0} is unknown")]
    UnknownParent(WitnessHash),
    #[error("height {got}, the parent's child is at {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("the range starts at DPOS height {got}, the parent's range ends before {expected}")]
    WrongStart { expected: u64, got: u64 },
    #[error("{got} DPOS hashes, the chain's span is {expected}")]
    WrongSpan { expected: usize, got: usize },
    #[error("difficulty {got}, the retarget rule expects {expected}")]
    WrongDifficulty { expected: u64, got: u64 },
    #[error("the hash does not meet difficulty {difficulty} (too little work)")]
    InsufficientWork { difficulty: u64 },
    #[error("DPOS height {height}: the witness names a hash that is not the finalized block's")]
    WrongDposHash { height: u64 },
    #[error("DPOS height {needed} is not finalized here yet (finalized up to {finalized})")]
    NotYetFinalized { needed: u64, finalized: u64 },
    #[error("DPOS height {height} is older than the finalized hashes kept")]
    RangeForgotten { height: u64 },
    #[error("timestamp {got} is before the parent's {parent}")]
    TimestampBeforeParent { parent: u64, got: u64 },
    #[error("timestamp {got} is more than the allowed drift ahead of {now}")]
    TimestampInFuture { now: u64, got: u64 },
    #[error("height {height} is too far below the best witness {best}")]
    TooDeep { height: u64, best: u64 },
    #[error("{count} uncles exceed the limit of {max}")]
    TooManyUncles { count: usize, max: usize },
    #[error("uncle {index} is cited twice")]
    DuplicateUncle { index: usize },
    #[error("uncle {index} ({hash}) is unknown")]
    UnknownUncle { index: usize, hash: WitnessHash },
    #[error("uncle {index} is an ancestor, not an uncle")]
    UncleIsAncestor { index: usize },
    #[error("uncle {index} does not branch from this witness's ancestry within the uncle depth")]
    UncleNotRelated { index: usize },
    #[error("uncle {index} was already cited by an ancestor")]
    UncleAlreadyCited { index: usize },
}

/// Why untrusted bytes are not a witness header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessDecodeError {
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed witness: {0}")]
    Malformed(String),
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("a witness must commit to at least one DPOS hash")]
    Empty,
}

/// The bounds every witness header must meet before anything else looks at it (shared with the message decoder).
pub fn check_witness_bounds(header: &ArchivedWitnessHeader) -> Result<(), WitnessDecodeError> {
    if header.dpos_hashes.len() > WITNESS_SPAN_MAX {
        return Err(WitnessDecodeError::TooMany {
            what: "DPOS hashes",
            count: header.dpos_hashes.len(),
            max: WITNESS_SPAN_MAX,
        });
    }
    if header.dpos_hashes.is_empty() {
        return Err(WitnessDecodeError::Empty);
    }
    if header.uncles.len() > UNCLES_PER_WITNESS_MAX {
        return Err(WitnessDecodeError::TooMany {
            what: "uncles",
            count: header.uncles.len(),
            max: UNCLES_PER_WITNESS_MAX,
        });
    }
    Ok(())
}

/// Validates untrusted bytes as a witness header (size, bytecheck, bounds) and returns it owned.
pub fn decode_witness(bytes: &[u8]) -> Result<WitnessHeader, WitnessDecodeError> {
    if bytes.len() > WITNESS_BYTES_MAX {
        return Err(WitnessDecodeError::TooLarge {
            len: bytes.len(),
            max: WITNESS_BYTES_MAX,
        });
    }
    let archived = rkyv::access::<ArchivedWitnessHeader, cas_engine::codec::CheckError>(bytes)
        .map_err(|e| WitnessDecodeError::Malformed(cas_engine::text::reason(&e)))?;
    check_witness_bounds(archived)?;
    rkyv::deserialize::<WitnessHeader, cas_engine::codec::CheckError>(archived)
        .map_err(|e| WitnessDecodeError::Malformed(cas_engine::text::reason(&e)))
}

pub fn encode_witness(header: &WitnessHeader) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(header).expect("archiving into memory cannot fail")
}

/// Why a reward is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RewardKind {
    /// For mining a witness of the best chain.
    Miner,
    /// For a witness that lost its race but was cited.
    Uncle,
    /// For citing an uncle.
    Nephew,
}

/// One reward: issuance of `amount` CAS to `to`, because of `witness` (the block mined or the uncle cited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reward {
    pub to: PublicKey,
    pub amount: u64,
    pub kind: RewardKind,
    pub witness: WitnessHash,
    /// The best-chain witness height that pays it.
    pub height: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    header: WitnessHeader,
    /// Sum of the difficulties from the first witness up to this one.
    work: u128,
}

/// What the chain reports after an accepted insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    pub hash: WitnessHash,
    /// The best tip changed (to this block, or to a chain through it).
    pub new_best: bool,
}

/// The witness chain as one node sees it: every valid witness block it was given (within the depth kept), the
/// finalized DPOS hashes they are checked against, and the best tip by cumulative work (ties keep the first seen).
#[derive(Clone, Debug)]
pub struct WitnessChain {
    params: WitnessParams,
    limits: WitnessLimits,
    entries: HashMap<WitnessHash, Entry>,
    best: WitnessHash,
    /// Finalized DPOS hashes, `finalized[0]` at height `finalized_first`.
    finalized: VecDeque<BlockHash>,
    finalized_first: u64,
    /// Best-chain rewards are paid up to this witness height (see [`WitnessChain::mature_rewards`]).
    paid_height: u64,
    /// Audit mode: the DPOS hashes are not checked against finalized ones (there are none); see [`Self::detached`].
    detached: bool,
}

impl WitnessChain {
    pub fn new(params: WitnessParams, limits: WitnessLimits) -> WitnessChain {
        assert!(params.span > 0 && params.span as usize <= WITNESS_SPAN_MAX);
        assert!(params.retarget_window > 0 && params.initial_difficulty > 0);
        assert!(params.min_difficulty > 0 && params.min_difficulty <= params.initial_difficulty);
        assert!(params.target_interval_ms > 0);
        assert!(
            limits.depth_kept > params.retarget_window + 1
                && limits.depth_kept > params.uncle_depth_max + 1,
            "the chain must keep every block the retarget and uncle rules look at"
        );
        assert!(limits.finalized_kept >= params.span as usize);
        WitnessChain {
            params,
            limits,
            entries: HashMap::new(),
            best: GENESIS_WITNESS,
            finalized: VecDeque::new(),
            finalized_first: 1,
            paid_height: 0,
            detached: false,
        }
    }

    /// A chain for auditing: it checks work, difficulty, linkage, timestamps order and uncles, but takes the DPOS
    /// hashes as claimed, so that stored DPOS blocks can then be compared with what the best chain witnessed.
    pub fn detached(params: WitnessParams, limits: WitnessLimits) -> WitnessChain {
        WitnessChain {
            detached: true,
            ..WitnessChain::new(params, limits)
        }
    }

    /// This chain in audit mode (see [`Self::detached`]): a restored one keeps its witness blocks and work.
    pub fn into_detached(self) -> WitnessChain {
        WitnessChain {
            detached: true,
            ..self
        }
    }

    pub fn params(&self) -> &WitnessParams {
        &self.params
    }

    pub fn limits(&self) -> &WitnessLimits {
        &self.limits
    }

    pub fn best(&self) -> WitnessHash {
        self.best
    }

    pub fn best_height(&self) -> u64 {
        self.height_of(&self.best)
    }

    pub fn best_work(&self) -> u128 {
        self.entries.get(&self.best).map_or(0, |e| e.work)
    }

    pub fn get(&self, hash: &WitnessHash) -> Option<&WitnessHeader> {
        self.entries.get(hash).map(|e| &e.header)
    }

    /// Every witness block held, lowest height first (then by hash).
    pub fn headers(&self) -> Vec<&WitnessHeader> {
        let mut headers: Vec<(u64, &WitnessHash, &WitnessHeader)> = self
            .entries
            .iter()
            .map(|(hash, e)| (e.header.height, hash, &e.header))
            .collect();
        headers.sort_by_key(|(height, hash, _)| (*height, **hash));
        headers.into_iter().map(|(_, _, header)| header).collect()
    }

    pub fn contains(&self, hash: &WitnessHash) -> bool {
        self.entries.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest finalized DPOS height given so far (0 before any).
    pub fn finalized_height(&self) -> u64 {
        self.finalized_first + self.finalized.len() as u64 - 1
    }

    /// The finalized DPOS hash at `height`, when still kept.
    pub fn finalized_hash(&self, height: u64) -> Option<BlockHash> {
        let index = height.checked_sub(self.finalized_first)?;
        self.finalized.get(index as usize).copied()
    }

    /// Records the next finalized DPOS block. Heights must come in order from 1, each once.
    pub fn add_finalized(&mut self, height: u64, hash: BlockHash) {
        assert_eq!(
            height,
            self.finalized_height() + 1,
            "finalized DPOS hashes come in height order"
        );
        self.finalized.push_back(hash);
        while self.finalized.len() > self.limits.finalized_kept {
            self.finalized.pop_front();
            self.finalized_first += 1;
        }
    }

    /// Forgets the finalized hashes kept and takes the next one at `height`: the node installed a UTXO snapshot at
    /// `height - 1` and knows no DPOS hash below it. Witnesses over those heights are then refused as too old.
    pub fn skip_finalized_to(&mut self, height: u64) {
        assert!(
            height > self.finalized_height() + 1,
            "a skip moves the finalized heights forward"
        );
        self.finalized.clear();
        self.finalized_first = height;
    }

    fn height_of(&self, hash: &WitnessHash) -> u64 {
        self.entries.get(hash).map_or(0, |e| e.header.height)
    }

    /// The last DPOS height covered by `hash` (0 for the genesis).
    fn last_dpos_of(&self, hash: &WitnessHash) -> u64 {
        self.entries
            .get(hash)
            .map_or(0, |e| e.header.last_dpos_height())
    }

    /// The difficulty a child of `parent` must carry. Heights 1 + k * window start a window: the difficulty
    /// scales by target time over the time the previous window took (at most [`RETARGET_CLAMP`] either way).
    /// For a parent whose window reaches below the blocks kept, the parent's own difficulty (such a child is
    /// refused as too deep by [`Self::insert`]).
    pub fn next_difficulty(&self, parent: &WitnessHash) -> u64 {
        self.retarget(parent).unwrap_or_else(|| {
            self.entries
                .get(parent)
                .map_or(self.params.initial_difficulty, |e| e.header.difficulty)
        })
    }

    /// [`Self::next_difficulty`], or `None` when the window's first block is no longer kept.
    fn retarget(&self, parent: &WitnessHash) -> Option<u64> {
        let Some(entry) = self.entries.get(parent) else {
            return Some(self.params.initial_difficulty);
        };
        let parent_header = &entry.header;
        let window = self.params.retarget_window;
        let child_height = parent_header.height + 1;
        if (child_height - 1) % window != 0 {
            return Some(parent_header.difficulty);
        }
        // The window's first block (the genesis has no timestamp, so the first window is measured from height 1).
        let first_height = parent_header.height.saturating_sub(window).max(1);
        let mut first = parent_header;
        while first.height > first_height {
            first = &self.entries.get(&first.parent)?.header;
        }
        let intervals = u128::from(parent_header.height - first.height);
        if intervals == 0 {
            return Some(parent_header.difficulty);
        }
        let actual_ms = u128::from(
            parent_header
                .timestamp_ms
                .saturating_sub(first.timestamp_ms)
                .max(1),
        );
        let previous = u128::from(parent_header.difficulty);
        let wanted = previous * intervals * u128::from(self.params.target_interval_ms) / actual_ms;
        let clamped = wanted
            .clamp(
                previous / u128::from(RETARGET_CLAMP),
                previous * u128::from(RETARGET_CLAMP),
            )
            .max(u128::from(self.params.min_difficulty));
        Some(u64::try_from(clamped).unwrap_or(u64::MAX))
    }

    /// The header a miner should work on next to extend the best tip, if its DPOS range is finalized here. The
    /// nonce is 0; the caller sets `timestamp_ms` (already `now_ms`) again as time passes.
    pub fn template(&self, miner: PublicKey, now_ms: u64) -> Option<WitnessHeader> {
        let parent = self.best;
        let first = self.last_dpos_of(&parent) + 1;
        let span = u64::from(self.params.span);
        if self.finalized_height() < first + span - 1 || first < self.finalized_first {
            return None;
        }
        let dpos_hashes = (first..first + span)
            .map(|h| self.finalized_hash(h).expect("checked in range"))
            .collect();
        let parent_timestamp = self
            .entries
            .get(&parent)
            .map_or(0, |e| e.header.timestamp_ms);
        Some(WitnessHeader {
            parent,
            height: self.height_of(&parent) + 1,
            first_dpos_height: first,
            dpos_hashes,
            uncles: self.citeable_uncles(&parent),
            timestamp_ms: now_ms.max(parent_timestamp),
            difficulty: self.next_difficulty(&parent),
            miner,
            nonce: 0,
        })
    }

    /// Uncles a child of `parent` may cite (up to the limit, lowest height first, then by hash).
    fn citeable_uncles(&self, parent: &WitnessHash) -> Vec<WitnessHash> {
        let child_height = self.height_of(parent) + 1;
        let mut candidates: Vec<(u64, WitnessHash)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                child_height - e.header.height.min(child_height) <= self.params.uncle_depth_max
            })
            .map(|(hash, e)| (e.header.height, *hash))
            .filter(|(_, hash)| self.check_uncle(parent, child_height, hash).is_ok())
            .collect();
        candidates.sort();
        candidates
            .into_iter()
            .take(UNCLES_PER_WITNESS_MAX)
            .map(|(_, hash)| hash)
            .collect()
    }

    /// Whether `ancestor` is `from` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &WitnessHash, from: &WitnessHash) -> bool {
        let target_height = self.height_of(ancestor);
        let mut cursor = *from;
        loop {
            if cursor == *ancestor {
                return true;
            }
            let Some(entry) = self.entries.get(&cursor) else {
                return false;
            };
            if entry.header.height <= target_height {
                return false;
            }
            cursor = entry.header.parent;
        }
    }

    /// Checks that `uncle` may be cited by a child (at `child_height`) of `parent`, with nothing cited yet.
    fn check_uncle(
        &self,
        parent: &WitnessHash,
        child_height: u64,
        uncle: &WitnessHash,
    ) -> Result<(), UncleProblem> {
        let Some(entry) = self.entries.get(uncle) else {
            return Err(UncleProblem::Unknown);
        };
        if self.is_ancestor(uncle, parent) {
            return Err(UncleProblem::Ancestor);
        }
        let uncle_height = entry.header.height;
        // An uncle is a sibling of a strict ancestor of the child, within the depth.
        if uncle_height >= child_height
            || child_height - uncle_height > self.params.uncle_depth_max
            || !self.is_ancestor(&entry.header.parent, parent)
        {
            return Err(UncleProblem::NotRelated);
        }
        // Any earlier citation sits on the ancestry above the uncle's height.
        let mut cursor = *parent;
        while let Some(ancestor) = self.entries.get(&cursor) {
            if ancestor.header.height <= uncle_height {
                break;
            }
            if ancestor.header.uncles.contains(uncle) {
                return Err(UncleProblem::AlreadyCited);
            }
            cursor = ancestor.header.parent;
        }
        Ok(())
    }

    /// Validates a witness block and adds it; moves the best tip when it brings more cumulative work.
    pub fn insert(&mut self, header: WitnessHeader, now_ms: u64) -> Result<Inserted, WitnessError> {
        let hash = header.hash();
        self.validate(&header, &hash, now_ms)?;
        let parent_work = self.entries.get(&header.parent).map_or(0, |e| e.work);
        let work = parent_work + u128::from(header.difficulty);
        self.entries.insert(hash, Entry { header, work });
        let new_best = work > self.best_work();
        if new_best {
            self.best = hash;
            self.prune();
        }
        Ok(Inserted { hash, new_best })
    }

    fn validate(
        &self,
        header: &WitnessHeader,
        hash: &WitnessHash,
        now_ms: u64,
    ) -> Result<(), WitnessError> {
        if self.entries.contains_key(hash) {
            return Err(WitnessError::Duplicate(*hash));
        }
        // The cheap, stateless test first: a flood of junk costs one hash each.
        if !meets_difficulty(hash, header.difficulty) {
            return Err(WitnessError::InsufficientWork {
                difficulty: header.difficulty,
            });
        }
        let parent_timestamp = if header.parent == GENESIS_WITNESS {
            None
        } else {
            let parent = self
                .entries
                .get(&header.parent)
                .ok_or(WitnessError::UnknownParent(header.parent))?;
            Some(parent.header.timestamp_ms)
        };
        let best = self.best_height();
        if header.height.saturating_add(self.limits.depth_kept) <= best {
            return Err(WitnessError::TooDeep {
                height: header.height,
                best,
            });
        }
        let expected_height = self.height_of(&header.parent) + 1;
        if header.height != expected_height {
            return Err(WitnessError::WrongHeight {
                expected: expected_height,
                got: header.height,
            });
        }
        let expected_start = self.last_dpos_of(&header.parent) + 1;
        if header.first_dpos_height != expected_start {
            return Err(WitnessError::WrongStart {
                expected: expected_start,
                got: header.first_dpos_height,
            });
        }
        if header.dpos_hashes.len() != self.params.span as usize {
            return Err(WitnessError::WrongSpan {
                expected: self.params.span as usize,
                got: header.dpos_hashes.len(),
            });
        }
        let Some(expected_difficulty) = self.retarget(&header.parent) else {
            return Err(WitnessError::TooDeep {
                height: header.height,
                best,
            });
        };
        if header.difficulty != expected_difficulty {
            return Err(WitnessError::WrongDifficulty {
                expected: expected_difficulty,
                got: header.difficulty,
            });
        }
        if let Some(parent) = parent_timestamp {
            if header.timestamp_ms < parent {
                return Err(WitnessError::TimestampBeforeParent {
                    parent,
                    got: header.timestamp_ms,
                });
            }
        }
        if header.timestamp_ms > now_ms.saturating_add(self.params.future_drift_ms) {
            return Err(WitnessError::TimestampInFuture {
                now: now_ms,
                got: header.timestamp_ms,
            });
        }
        if self.detached {
            return self.validate_uncles(header);
        }
        let last = header.last_dpos_height();
        if last > self.finalized_height() {
            return Err(WitnessError::NotYetFinalized {
                needed: last,
                finalized: self.finalized_height(),
            });
        }
        if header.first_dpos_height < self.finalized_first {
            return Err(WitnessError::RangeForgotten {
                height: header.first_dpos_height,
            });
        }
        for (offset, claimed) in header.dpos_hashes.iter().enumerate() {
            let height = header.first_dpos_height + offset as u64;
            if self.finalized_hash(height) != Some(*claimed) {
                return Err(WitnessError::WrongDposHash { height });
            }
        }
        self.validate_uncles(header)
    }

    fn validate_uncles(&self, header: &WitnessHeader) -> Result<(), WitnessError> {
        if header.uncles.len() > UNCLES_PER_WITNESS_MAX {
            return Err(WitnessError::TooManyUncles {
                count: header.uncles.len(),
                max: UNCLES_PER_WITNESS_MAX,
            });
        }
        for (index, uncle) in header.uncles.iter().enumerate() {
            if header.uncles[..index].contains(uncle) {
                return Err(WitnessError::DuplicateUncle { index });
            }
            match self.check_uncle(&header.parent, header.height, uncle) {
                Ok(()) => {}
                Err(UncleProblem::Unknown) => {
                    return Err(WitnessError::UnknownUncle {
                        index,
                        hash: *uncle,
                    })
                }
                Err(UncleProblem::Ancestor) => return Err(WitnessError::UncleIsAncestor { index }),
                Err(UncleProblem::NotRelated) => {
                    return Err(WitnessError::UncleNotRelated { index })
                }
                Err(UncleProblem::AlreadyCited) => {
                    return Err(WitnessError::UncleAlreadyCited { index })
                }
            }
        }
        Ok(())
    }

    /// Forgets witness blocks too deep below the best to matter to the retarget, uncle or fork-choice rules.
    fn prune(&mut self) {
        let best = self.best_height();
        if best <= self.limits.depth_kept {
            return;
        }
        let floor = best - self.limits.depth_kept;
        self.entries.retain(|_, e| e.header.height > floor);
    }

    /// The best chain from the first witness to the tip (as far back as kept), lowest first.
    pub fn best_chain(&self) -> Vec<WitnessHash> {
        let mut chain = Vec::new();
        let mut cursor = self.best;
        while let Some(entry) = self.entries.get(&cursor) {
            chain.push(cursor);
            cursor = entry.header.parent;
        }
        chain.reverse();
        chain
    }

    /// The rewards that the best-chain witness `hash` pays: its miner, and for each uncle it cites, the uncle's
    /// miner and (again) its own miner as nephew. Issuance; deterministic from the headers alone.
    pub fn rewards_of(&self, hash: &WitnessHash) -> Vec<Reward> {
        let Some(entry) = self.entries.get(hash) else {
            return Vec::new();
        };
        let header = &entry.header;
        let base = self.params.base_reward_at(header.height);
        let mut rewards = vec![Reward {
            to: header.miner,
            amount: base,
            kind: RewardKind::Miner,
            witness: *hash,
            height: header.height,
        }];
        for uncle in &header.uncles {
            let uncle_miner = self.entries.get(uncle).map(|e| e.header.miner);
            if let Some(uncle_miner) = uncle_miner {
                rewards.push(Reward {
                    to: uncle_miner,
                    amount: base * self.params.uncle_reward_percent / 100,
                    kind: RewardKind::Uncle,
                    witness: *uncle,
                    height: header.height,
                });
                rewards.push(Reward {
                    to: header.miner,
                    amount: base * self.params.nephew_reward_percent / 100,
                    kind: RewardKind::Nephew,
                    witness: *uncle,
                    height: header.height,
                });
            }
        }
        rewards.retain(|r| r.amount > 0);
        rewards
    }

    /// Rewards of best-chain witnesses that are now `confirmations` deep and not paid yet, in height order; each
    /// height is paid once. Fed the same headers in the same order (the BFT order), every node pays the same.
    /// A reorganisation deeper than `confirmations` does not un-pay (issuance is final like the DPOS block that
    /// carried it); the new chain is paid from the first unpaid height.
    pub fn mature_rewards(&mut self, confirmations: u64) -> Vec<Reward> {
        self.mature_rewards_bounded(confirmations, u64::MAX)
    }

    /// [`Self::mature_rewards`] paying at most `heights_max` heights per call (the rest on later calls, in order),
    /// so one call's rewards fit a bounded issuance.
    pub fn mature_rewards_bounded(&mut self, confirmations: u64, heights_max: u64) -> Vec<Reward> {
        let mature = self
            .best_height()
            .saturating_sub(confirmations)
            .min(self.paid_height.saturating_add(heights_max));
        if mature <= self.paid_height {
            return Vec::new();
        }
        let chain = self.best_chain();
        let mut rewards = Vec::new();
        for hash in &chain {
            let height = self.height_of(hash);
            if height > self.paid_height && height <= mature {
                rewards.extend(self.rewards_of(hash));
            }
        }
        self.paid_height = mature;
        rewards
    }

    pub fn paid_height(&self) -> u64 {
        self.paid_height
    }
}

/// One kept witness block and its cumulative work, as carried in a [`ChainState`] (the work as two halves: the
/// archive format has no 128-bit integer the decoder checks the same on every platform).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    pub header: WitnessHeader,
    pub work_low: u64,
    pub work_high: u64,
}

/// Everything a [`WitnessChain`] decides with, besides its params and limits (which come from the genesis and the
/// code): the kept witness blocks (sorted by height, then hash, so equal chains give equal bytes), the best tip,
/// the finalized DPOS hashes kept and the height paid up to. A chain restored from it behaves exactly as the one
/// exported (snapshot state transfer of the ledger's witness order).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChainState {
    pub entries: Vec<StateEntry>,
    pub best: WitnessHash,
    pub finalized_first: u64,
    pub finalized: Vec<BlockHash>,
    pub paid_height: u64,
}

/// Why a [`ChainState`] cannot be restored (it is not one a chain with these params and limits exports).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainStateError {
    #[error("{count} finalized hashes exceed the {max} kept")]
    TooManyFinalized { count: usize, max: usize },
    #[error("entry {index}: {reason}")]
    Entry { index: usize, reason: &'static str },
    #[error("the best witness is not among the entries")]
    UnknownBest,
    #[error("finalized hashes from height {first} are out of range")]
    FinalizedRange { first: u64 },
}

impl WitnessChain {
    /// The chain's state, byte-for-byte the same on every node holding the same chain (see [`ChainState`]).
    pub fn export(&self) -> ChainState {
        let mut entries: Vec<(u64, WitnessHash, &Entry)> = self
            .entries
            .iter()
            .map(|(hash, e)| (e.header.height, *hash, e))
            .collect();
        entries.sort_by_key(|(height, hash, _)| (*height, *hash));
        ChainState {
            entries: entries
                .into_iter()
                .map(|(_, _, e)| StateEntry {
                    header: e.header.clone(),
                    work_low: e.work as u64,
                    work_high: (e.work >> 64) as u64,
                })
                .collect(),
            best: self.best,
            finalized_first: self.finalized_first,
            finalized: self.finalized.iter().copied().collect(),
            paid_height: self.paid_height,
        }
    }

    /// The chain [`Self::export`] described, under `params` and `limits`. Checks what the state must satisfy
    /// (bounds, unique entries of the chain's span, work consistent with kept parents, a known best).
    pub fn restore(
        params: WitnessParams,
        limits: WitnessLimits,
        state: ChainState,
    ) -> Result<WitnessChain, ChainStateError> {
        let mut chain = WitnessChain::new(params, limits);
        if state.finalized.len() > chain.limits.finalized_kept {
            return Err(ChainStateError::TooManyFinalized {
                count: state.finalized.len(),
                max: chain.limits.finalized_kept,
            });
        }
        for (index, entry) in state.entries.into_iter().enumerate() {
            let work = u128::from(entry.work_low) | (u128::from(entry.work_high) << 64);
            let hash = entry.header.hash();
            let reason = if entry.header.dpos_hashes.len() != chain.params.span as usize
                || entry.header.uncles.len() > UNCLES_PER_WITNESS_MAX
            {
                Some("not of the chain's span or uncle bound")
            } else if entry.header.height == 0
                || entry.header.first_dpos_height == 0
                || entry
                    .header
                    .first_dpos_height
                    .checked_add(u64::from(chain.params.span))
                    .is_none()
            {
                Some("heights out of range")
            } else if entry.work_high >= entry.header.height {
                // Each block adds at most u64::MAX, so `height` blocks stay below height << 64.
                Some("work above what its height can carry")
            } else if chain.entries.contains_key(&hash) {
                Some("duplicate")
            } else if chain
                .entries
                .get(&entry.header.parent)
                .is_some_and(|parent| parent.work + u128::from(entry.header.difficulty) != work)
            {
                Some("work other than its parent's plus its difficulty")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ChainStateError::Entry { index, reason });
            }
            chain.entries.insert(
                hash,
                Entry {
                    header: entry.header,
                    work,
                },
            );
        }
        if state.best != GENESIS_WITNESS && !chain.entries.contains_key(&state.best) {
            return Err(ChainStateError::UnknownBest);
        }
        chain.best = state.best;
        chain.paid_height = state.paid_height;
        if state.finalized_first == 0
            || state
                .finalized_first
                .checked_add(state.finalized.len() as u64)
                .is_none()
        {
            return Err(ChainStateError::FinalizedRange {
                first: state.finalized_first,
            });
        }
        chain.finalized_first = state.finalized_first;
        chain.finalized = state.finalized.into();
        Ok(chain)
    }
}

/// Why an uncle cannot be cited (mapped to [`WitnessError`] with its index by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UncleProblem {
    Unknown,
    Ancestor,
    NotRelated,
    AlreadyCited,
}
