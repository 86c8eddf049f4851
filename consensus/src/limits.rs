//! Every bound of consensus in one place: committee and certificate sizes, block and message sizes, the BFT's pools,
//! caches and round windows, the witness chain's and the miner protocol's bounds, and the configuration defaults.
//! Each limit says what happens when it is reached; the relations between them are checked at compile time. The
//! modules that use a limit re-export it, so its old path (`bft::FUTURE_ROUNDS_MAX`, ...) still resolves.

use crate::committee::MemberIndex;
use crate::messages::Round;

// ---- The committee and its certificates ----

/// The largest committee consensus accepts (certificates are bounded by it). A larger one is refused by
/// `Committee::new` (`CommitteeError`), and a certificate naming more signers is refused by the decoder.
pub const COMMITTEE_MEMBERS_MAX: usize = 1024;

// ---- Blocks and messages on the wire ----

/// Availability certificates one block may carry. A block with more is refused by the decoder; a leader proposes
/// at most [`BftConfig::payload_certs_max`](crate::bft::BftConfig::payload_certs_max), which stays under it.
pub const PAYLOAD_CERTS_MAX: usize = 1024;
/// Transactions one package may carry. A larger package is refused by the decoder; the Synchronizer closes a
/// package at this count.
pub const PACKAGE_TXS_MAX: usize = 20_000;
/// The largest encoded message accepted (a full package). Larger bytes are refused by `decode_message` before
/// anything is read from them (`TooLarge`).
pub const MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Transactions of one block's certified packages, in all: the ledger block made from it adds the executor's
/// issuance and must pass the block decoder's count. A leader stops adding certificates at it, and a voter refuses
/// a block past it.
pub const BLOCK_PAYLOAD_TXS_MAX: usize = cas_engine::codec::BLOCK_TXS_MAX - 1;
/// The ledger block's fixed part (its header and the transactions' vector), bounded from above.
const LEDGER_BLOCK_FIXED_BYTES_MAX: usize = 4096;
/// Encoded bytes of one block's certified packages' transactions, in all (each as
/// [`cas_engine::codec::encoded_tx_len`] counts it): the ledger block adds its fixed part and the issuance. A
/// leader stops adding certificates at it, and a voter refuses a block past it.
pub const BLOCK_PAYLOAD_BYTES_MAX: usize = cas_engine::codec::BLOCK_BYTES_MAX
    - cas_engine::codec::TX_BYTES_MAX
    - LEDGER_BLOCK_FIXED_BYTES_MAX;
/// Witness headers one consensus block may carry into the ledger's witness order (the issuance evidence bound).
/// A leader carries at most this many (the rest wait for the next block); a voter refuses a block with more.
pub const BLOCK_WITNESSES_MAX: usize = cas_engine::codec::ISSUANCE_EVIDENCE_MAX;
/// Encoded bytes of the witness headers one consensus block may carry, in all. A leader stops adding headers at
/// it; a voter refuses a block past it.
pub const BLOCK_WITNESS_BYTES_MAX: usize = cas_engine::codec::ISSUANCE_EVIDENCE_BYTES_MAX;
/// Bytes of snapshot entries one [`SnapshotChunk`](crate::messages::SnapshotChunk) may carry (the entry layout is the shards crate's; 4,096
/// entries of 117 bytes fit). A larger chunk is refused by the decoder; a snapshot is served in as many chunks as
/// it needs.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 512 * 1024;

// ---- The BFT state machine ----

/// Certificates remembered as verified (each is verified once while remembered; a forgotten one is verified again).
pub const VERIFIED_CACHE_MAX: usize = 65_536;
/// Committed package ids remembered, so a late certificate of one is not proposed again. Past it the oldest is
/// forgotten.
pub const COMMITTED_PACKAGES_KEPT: usize = 262_144;
/// Witness headers waiting to be carried by a proposal; a full pool refuses more (counted).
pub const WITNESS_POOL_MAX: usize = 256;
/// Carried witness hashes remembered, so one is not proposed again. Past it the oldest is forgotten.
pub const COMMITTED_WITNESSES_KEPT: usize = 65_536;
/// How long a creator's package may wait in the pool for a missing predecessor before it is proposed anyway (the
/// predecessor's certificate may never come: its creator crashed before sending it).
pub const SEQUENCE_GAP_WAIT_MS: u64 = 2_000;
/// How often a member sends its own uncommitted certificates again (see `on_tick`): well under
/// [`SEQUENCE_GAP_WAIT_MS`], so a member that missed one has it before it would give up waiting.
pub const CERT_RESEND_MS: u64 = 500;
/// Votes, timeouts and unrequested blocks further ahead than this many rounds are ignored, bounding what a
/// Byzantine member can make us hold: at most one vote, one commit vote and one timeout per member and round, and
/// one unrequested block per round, over this window. Honest members' rounds stay within a few of each other (each
/// round needs a quorum to end); one far behind learns the round from certificates, not from votes.
pub const FUTURE_ROUNDS_MAX: Round = 100;
/// Committed heights between passes that prune the blocks below the kept window, at most.
pub const BLOCKS_PRUNE_STEP: u64 = 64;
/// Times a round's timeout doubles while rounds keep failing; past it the factor stays (the timeout itself is also
/// capped, by [`BftConfig::round_timeout_max_ms`](crate::bft::BftConfig::round_timeout_max_ms)).
pub const ROUND_TIMEOUT_DOUBLINGS_MAX: u32 = 16;

/// Rounds between a round and the newest history its leader is chosen from: more than the usual commit lag (a block
/// is committed about two rounds after its own), so members in step all have that history.
pub const LEADER_LAG_ROUNDS: Round = 4;
/// Rounds of committed history looked at: long enough that a live member shows up in it (every QC and certificate
/// holds a quorum's signatures), short enough that a dead one drops out fast. Older history is forgotten.
pub const LEADER_WINDOW_ROUNDS: Round = 8;

// ---- The BFT configuration's defaults (`BftConfig::default`; a node's config may set them otherwise) ----

/// The first timeout of a round: a round without progress by then ends in a timeout.
pub const ROUND_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// The cap of the round timeout's exponential backoff.
pub const ROUND_TIMEOUT_MAX_MS_DEFAULT: u64 = 10_000;
/// Certificates per proposed block: a leader with more waiting proposes the rest in its next blocks.
pub const PAYLOAD_CERTS_MAX_DEFAULT: usize = 256;
/// Other members' certificates waiting for a proposal; a full pool refuses more of theirs (counted).
pub const PAYLOAD_POOL_MAX_DEFAULT: usize = 4_096;
/// Committed blocks kept in memory for members that catch up; older ones are pruned (and served from disk).
pub const BLOCKS_KEPT_DEFAULT: u64 = 10_000;
/// Estimated encoded bytes of the committed blocks kept in memory, in all; past it the oldest are pruned.
pub const BLOCKS_BYTES_KEPT_DEFAULT: usize = 64 * 1024 * 1024;
/// How long an unanswered block request waits before it is sent again.
pub const REQUEST_RETRY_MS_DEFAULT: u64 = 500;
/// How long a leader with nothing to propose waits for payload before proposing an empty block.
pub const EMPTY_BLOCK_WAIT_MS_DEFAULT: u64 = 100;
/// How long a leader with a little new payload waits for more (0: it proposes at once).
pub const PROPOSAL_WAIT_MS_DEFAULT: u64 = 0;

// ---- Availability's defaults (`AvailabilityConfig::default`) ----

/// How long a creator waits for checked acks before certifying its package without attestation.
pub const ATTEST_WAIT_MS_DEFAULT: u64 = 500;
/// How long it waits when the checkers it misses are alive but behind (they acked one of its packages within this
/// time): an unattested certificate costs a verification on every executor instead of f+1 checkers.
pub const ATTEST_WAIT_MAX_MS_DEFAULT: u64 = 2_000;
/// How often a creator re-sends a package to the members that have not acked it.
pub const PACKAGE_RESEND_MS_DEFAULT: u64 = 500;
/// Packages kept in memory (own and others'); past it the oldest go first.
pub const PACKAGES_KEPT_DEFAULT: usize = 10_000;
/// Encoded transaction bytes of the packages kept in memory, in all; past it the oldest go first.
pub const PACKAGE_BYTES_KEPT_DEFAULT: usize = 256 * 1024 * 1024;

// ---- The POW witness chain and the miner protocol ----

/// The most DPOS hashes one witness may commit to (the decoder's bound on `span`); a longer header is refused.
pub const WITNESS_SPAN_MAX: usize = cas_engine::genesis::WITNESS_SPAN_MAX as usize;
/// Uncles one witness may cite; a header citing more is refused, and a miner cites at most this many.
pub const UNCLES_PER_WITNESS_MAX: usize = 2;
/// The largest encoded witness header accepted; larger bytes are refused by the decoder.
pub const WITNESS_BYTES_MAX: usize = 64 * 1024;
/// Retargets change the difficulty by at most this factor either way, so a burst of luck cannot swing it far.
pub const RETARGET_CLAMP: u64 = 4;
/// How often [`mine`](crate::witness::mine) looks at its stop flag, in nonces: at most this many more are tried once it is set.
pub const STOP_CHECK_NONCES: u64 = 4_096;
/// Finalized DPOS hashes a witness chain remembers by default (the newest); a witness over older ones is refused
/// as forgotten.
pub const WITNESS_FINALIZED_KEPT_DEFAULT: usize = 1 << 20;
/// Witness blocks more than this many heights below the best are forgotten by default, and new ones that deep
/// refused.
pub const WITNESS_DEPTH_KEPT_DEFAULT: u64 = 1_024;
/// The largest encoded mining request or answer (a witness header and a short envelope); larger bytes are refused
/// by the decoder.
pub const MINING_BYTES_MAX: usize = WITNESS_BYTES_MAX + 1024;
/// The longest refusal reason an answer carries: a longer one is cut (at a character boundary) before it is sent,
/// and refused by the decoder.
pub const MINING_REASON_BYTES_MAX: usize = 256;

// ---- The ledger's witness order ----

/// Bytes an encoded [`OrderState`](crate::rewards::OrderState) may take: the finalized hashes a default chain keeps (32 MiB) and room for the
/// kept witness blocks. A larger state is not served, and not accepted.
pub const ORDER_STATE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Witness heights paid per ledger block at most: with a miner, uncle and nephew reward per cited uncle, their
/// outputs fit one issuance transaction. Heights past it are paid by the next blocks, in order.
pub const REWARD_HEIGHTS_PER_BLOCK_MAX: u64 =
    (cas_engine::codec::WITNESS_REWARD_OUTPUTS_MAX / (1 + 2 * UNCLES_PER_WITNESS_MAX)) as u64;

// ---- Signature verification ----

/// Good verdicts the simulator's memo remembers at most; past it the memo starts again empty (it only saves time).
pub const MEMO_ENTRIES_MAX: usize = 1 << 20;

// Every member index fits a `MemberIndex`, and every committee a genesis can name is one consensus accepts.
const _: () = assert!(COMMITTEE_MEMBERS_MAX <= MemberIndex::MAX as usize + 1);
const _: () = assert!(cas_engine::codec::COMMITTEE_MAX <= COMMITTEE_MEMBERS_MAX);
const _: () = assert!(
    std::mem::size_of::<cas_engine::block::ArchivedBlock>() <= LEDGER_BLOCK_FIXED_BYTES_MAX
);
// Any one package that decodes fits a block on its own, so none is ever stuck in a pool.
const _: () = assert!(ATTEST_WAIT_MS_DEFAULT <= ATTEST_WAIT_MAX_MS_DEFAULT);
const _: () = assert!(PACKAGE_TXS_MAX <= BLOCK_PAYLOAD_TXS_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX <= BLOCK_PAYLOAD_BYTES_MAX);
// A full snapshot chunk is a message that decodes.
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX < MESSAGE_BYTES_MAX);
// A block's worth of witness headers can wait in the pool.
const _: () = assert!(BLOCK_WITNESSES_MAX <= WITNESS_POOL_MAX);
// A member that missed a certificate is sent it again (twice) before the pool gives up waiting for it.
const _: () = assert!(CERT_RESEND_MS * 2 < SEQUENCE_GAP_WAIT_MS);
const _: () = assert!(FUTURE_ROUNDS_MAX > 0 && BLOCKS_PRUNE_STEP > 0);
// The bounded sets need room for one entry.
const _: () =
    assert!(VERIFIED_CACHE_MAX > 0 && COMMITTED_PACKAGES_KEPT > 0 && COMMITTED_WITNESSES_KEPT > 0);
// The backoff factor is `1 << doublings`, a u64.
const _: () = assert!(ROUND_TIMEOUT_DOUBLINGS_MAX < u64::BITS);
// The leader window starts past the usual commit lag (about two rounds), and half of it (how long a member behind
// on history votes before it takes its turns again) is at least a round.
const _: () = assert!(LEADER_LAG_ROUNDS > 2 && LEADER_WINDOW_ROUNDS >= 2);
// The defaults pass `Bft::new`'s checks (the proposal wait's trivially: it is 0), a default block decodes
// everywhere, and a full payload pool fills a block.
const _: () = assert!(ROUND_TIMEOUT_MS_DEFAULT <= ROUND_TIMEOUT_MAX_MS_DEFAULT);
const _: () = assert!(EMPTY_BLOCK_WAIT_MS_DEFAULT < ROUND_TIMEOUT_MS_DEFAULT);
const _: () =
    assert!(PAYLOAD_CERTS_MAX_DEFAULT > 0 && PAYLOAD_CERTS_MAX_DEFAULT <= PAYLOAD_CERTS_MAX);
const _: () = assert!(PAYLOAD_CERTS_MAX_DEFAULT <= PAYLOAD_POOL_MAX_DEFAULT);
const _: () = assert!(BLOCKS_KEPT_DEFAULT > 0 && PACKAGES_KEPT_DEFAULT > 0);
const _: () = assert!(WITNESS_SPAN_MAX > 0 && RETARGET_CLAMP > 1 && STOP_CHECK_NONCES > 0);
// Every block pays at least one witness height, so the rewards never stall.
const _: () = assert!(REWARD_HEIGHTS_PER_BLOCK_MAX > 0);
const _: () = assert!(MEMO_ENTRIES_MAX > 0);
