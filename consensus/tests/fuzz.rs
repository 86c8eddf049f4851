//! Fuzz targets (issue 16, "no input stops a node"), proptest-driven so they run on stable in every `cargo test`:
//! every consensus decoder of untrusted bytes (messages, mining requests and answers, witness headers) under
//! random, mutated, truncated and extended bytes, and the message handlers (`Bft::handle`, `Availability::handle`)
//! of a 4-member committee fed by a Byzantine member, beside honest traffic, with arbitrary messages: random bytes
//! that decode, mutated honest messages, and structurally valid ones with wrong rounds, signers, member indexes,
//! heights and hashes. Nothing may panic, the honest members' commits must agree, and refusals are counted.
//!
//! Cases per property: `CAS_FUZZ_CASES` (default small, for CI); the long run is in the README's test section.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

use cas_consensus::availability::{Availability, AvailabilityConfig};
use cas_consensus::bft::{Bft, BftConfig, Event, Recovered};
use cas_consensus::committee::{Committee, MemberIndex, COMMITTEE_MEMBERS_MAX};
use cas_consensus::messages::{
    ack_digest, commit_vote_digest, decode_message, encode_message, timeout_digest, vote_digest,
    Ack, AckSignature, AvailabilityCert, Block, Message, Package, PackageSize, QuorumCert,
    SignerSignature, SnapshotChunk, SnapshotChunkRequest, SnapshotInfo, Timeout, TimeoutCert,
    TimeoutSignature, Vote, BLOCK_WITNESSES_MAX, PACKAGE_TXS_MAX, PAYLOAD_CERTS_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX,
};
use cas_consensus::mining::{MiningAnswer, MiningRequest, Verdict, MINING_REASON_BYTES_MAX};
use cas_consensus::witness::{
    decode_witness, encode_witness, WitnessHeader, UNCLES_PER_WITNESS_MAX, WITNESS_SPAN_MAX,
};
use cas_consensus::Action;
use cas_engine::tx::{OutPoint, TxBody, TxKind};
use cas_engine::{Hash32, Keypair, PublicKey, Signature, Transaction};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property: `CAS_FUZZ_CASES`, or `default` (sized so the whole file stays within seconds in debug).
fn cases(default: u32) -> u32 {
    std::env::var("CAS_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // A failure prints its minimal case; keep no persistence files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Decoders.

const MEMBERS: usize = 4;
/// The member the fuzzer plays: its key signs whatever it sends, and the transport names it as the sender.
const BYZANTINE: MemberIndex = 3;

fn keypairs() -> &'static [Keypair] {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..MEMBERS)
            .map(|i| Keypair::from_seed(&[i as u8 + 1; 32]))
            .collect()
    })
}

fn committee() -> Committee {
    Committee::new(keypairs().iter().map(|k| (k.public(), 1)).collect()).unwrap()
}

/// A few signed transfers (distinct inputs), made once.
fn transactions() -> &'static [Transaction] {
    static TXS: OnceLock<Vec<Transaction>> = OnceLock::new();
    TXS.get_or_init(|| {
        let owner = Keypair::from_seed(&[200; 32]);
        (0..16u8)
            .map(|seed| {
                TxBody {
                    chain_id: 1,
                    vn: 0,
                    kind: TxKind::Transfer,
                    inputs: vec![OutPoint {
                        tx: Hash32([seed; 32]),
                        index: 0,
                    }],
                    outputs: Vec::new(),
                    fee: 1,
                    memo: vec![seed; 8],
                    client_id: Some(u64::from(seed)),
                }
                .sign(&[&owner])
            })
            .collect()
    })
}

fn witness(hashes: usize, uncles: usize) -> WitnessHeader {
    WitnessHeader {
        parent: Hash32([1; 32]),
        height: 2,
        first_dpos_height: 17,
        dpos_hashes: vec![Hash32([2; 32]); hashes],
        uncles: vec![Hash32([3; 32]); uncles],
        timestamp_ms: 9,
        difficulty: 4,
        miner: PublicKey([5; 32]),
        nonce: 6,
    }
}

fn signed_qc(round: u64, block: Hash32, height: u64) -> QuorumCert {
    let digest = vote_digest(0, round, &block, height);
    QuorumCert {
        round,
        block,
        height,
        signatures: (0..3)
            .map(|signer| SignerSignature {
                signer,
                signature: keypairs()[signer as usize].sign(&digest.0),
            })
            .collect(),
    }
}

fn cert(sequence: u64) -> AvailabilityCert {
    let package = Hash32::of("fuzz package", &sequence.to_le_bytes());
    let size = PackageSize { txs: 2, bytes: 700 };
    let digest = ack_digest(0, &package, size, true);
    AvailabilityCert {
        package,
        creator: 1,
        sequence,
        size,
        acks: (0..3)
            .map(|signer| AckSignature {
                signer,
                checked: signer != 2,
                signature: keypairs()[signer as usize].sign(&digest.0),
            })
            .collect(),
    }
}

/// One valid message of every kind, with every optional part present somewhere.
fn samples() -> &'static [Message] {
    static SAMPLES: OnceLock<Vec<Message>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let tc = TimeoutCert {
            round: 4,
            signatures: (0..3)
                .map(|signer| TimeoutSignature {
                    signer,
                    high_qc_round: 3,
                    signature: keypairs()[signer as usize].sign(&timeout_digest(0, 4, 3).0),
                })
                .collect(),
        };
        let block = Block::new_signed(
            0,
            &keypairs()[1],
            1,
            5,
            1,
            signed_qc(3, Hash32([9; 32]), 2),
            Some(tc),
            77,
            vec![cert(0), cert(1)],
            vec![witness(4, 2), witness(1, 0)],
        );
        let vote = Vote {
            round: 5,
            block: block.hash(),
            height: 3,
            signer: 2,
            signature: Signature([3; 64]),
        };
        vec![
            Message::Proposal(block.clone()),
            Message::Vote(vote),
            Message::CommitVote(vote),
            Message::Timeout(Timeout {
                round: 6,
                high_qc: signed_qc(3, Hash32([9; 32]), 2),
                signer: 0,
                signature: Signature([4; 64]),
            }),
            Message::BlockRequest(Hash32([4; 32])),
            Message::BlockResponse(block),
            Message::Package(Package {
                creator: 0,
                sequence: 9,
                txs: transactions()[..3].to_vec(),
            }),
            Message::Ack(Ack {
                package: Hash32([6; 32]),
                checked: true,
                signer: 1,
                signature: Signature([5; 64]),
            }),
            Message::Cert(cert(2)),
            Message::PackageRequest(Hash32([7; 32])),
            Message::Witness(witness(16, 1)),
            Message::SnapshotInfoRequest,
            Message::SnapshotInfo(SnapshotInfo {
                height: 40,
                ledger_hash: Hash32([5; 32]),
                commitment: Hash32([6; 32]),
                consensus_hash: Hash32([7; 32]),
                entries: 9_000,
                witness_state: Hash32([8; 32]),
                witness_state_bytes: 70_000,
            }),
            Message::SnapshotChunkRequest(SnapshotChunkRequest {
                height: 40,
                index: 2,
            }),
            Message::SnapshotChunk(SnapshotChunk {
                height: 40,
                index: 2,
                entries: vec![8; 117 * 3],
            }),
        ]
    })
}

fn witness_within_bounds(header: &WitnessHeader) {
    assert!(!header.dpos_hashes.is_empty() && header.dpos_hashes.len() <= WITNESS_SPAN_MAX);
    assert!(header.uncles.len() <= UNCLES_PER_WITNESS_MAX);
}

/// Whatever the message decoder accepts respects every bound it promises and round-trips unchanged.
fn accepted_message_is_sound(bytes: &[u8]) {
    let Ok(message) = decode_message(bytes) else {
        return;
    };
    match &message {
        Message::Proposal(block) | Message::BlockResponse(block) => {
            assert!(block.qc.signatures.len() <= COMMITTEE_MEMBERS_MAX);
            if let Some(tc) = &block.tc {
                assert!(tc.signatures.len() <= COMMITTEE_MEMBERS_MAX);
            }
            assert!(block.payload.len() <= PAYLOAD_CERTS_MAX);
            assert!(block
                .payload
                .iter()
                .all(|c| c.acks.len() <= COMMITTEE_MEMBERS_MAX));
            assert!(block.witnesses.len() <= BLOCK_WITNESSES_MAX);
            block.witnesses.iter().for_each(witness_within_bounds);
            // Hashing an accepted block never panics (handlers hash before anything else).
            let _ = block.hash();
            let _ = block.encoded_bytes_estimate();
        }
        Message::Timeout(timeout) => {
            assert!(timeout.high_qc.signatures.len() <= COMMITTEE_MEMBERS_MAX)
        }
        Message::Cert(cert) => assert!(cert.acks.len() <= COMMITTEE_MEMBERS_MAX),
        Message::Package(package) => {
            assert!(package.txs.len() <= PACKAGE_TXS_MAX);
            let _ = package.id();
            let _ = package.size();
        }
        Message::Witness(header) => witness_within_bounds(header),
        Message::SnapshotChunk(chunk) => assert!(chunk.entries.len() <= SNAPSHOT_CHUNK_BYTES_MAX),
        _ => {}
    }
    let again = encode_message(&message);
    assert_eq!(decode_message(&again).expect("re-encoded"), message);
}

/// Applies up to a few byte changes, then optionally cuts or extends: the shapes a hostile peer's bytes take.
fn mutate(mut bytes: Vec<u8>, flips: &[(Index, u8)], cut: Option<Index>, tail: &[u8]) -> Vec<u8> {
    if !bytes.is_empty() {
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value | 1;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    bytes.extend_from_slice(tail);
    bytes
}

fn mutation() -> impl Strategy<Value = (Vec<(Index, u8)>, Option<Index>, Vec<u8>)> {
    (
        vec((any::<Index>(), any::<u8>()), 0..6),
        proptest::option::weighted(0.2, any::<Index>()),
        prop_oneof![4 => Just(Vec::new()), 1 => vec(any::<u8>(), 1..48)],
    )
}

fn mining_samples() -> Vec<Vec<u8>> {
    vec![
        MiningRequest::Template {
            miner: PublicKey([7; 32]),
        }
        .encode(),
        MiningRequest::Submit(witness(8, 2)).encode(),
        MiningAnswer::Template(Some(witness(8, 0))).encode(),
        MiningAnswer::Template(None).encode(),
        MiningAnswer::Submitted {
            hash: Hash32([1; 32]),
            verdict: Verdict::Refused {
                reason: "stale".into(),
            },
        }
        .encode(),
        MiningAnswer::Submitted {
            hash: Hash32([2; 32]),
            verdict: Verdict::Pending,
        }
        .encode(),
    ]
}

fn mining_is_sound(bytes: &[u8]) {
    if let Ok(request) = MiningRequest::decode(bytes) {
        if let MiningRequest::Submit(header) = &request {
            witness_within_bounds(header);
        }
        assert_eq!(MiningRequest::decode(&request.encode()).unwrap(), request);
    }
    if let Ok(answer) = MiningAnswer::decode(bytes) {
        match &answer {
            MiningAnswer::Template(Some(header)) => witness_within_bounds(header),
            MiningAnswer::Submitted {
                verdict: Verdict::Refused { reason },
                ..
            } => assert!(reason.len() <= MINING_REASON_BYTES_MAX),
            _ => {}
        }
        assert_eq!(MiningAnswer::decode(&answer.encode()).unwrap(), answer);
    }
}

fn witness_is_sound(bytes: &[u8]) {
    if let Ok(header) = decode_witness(bytes) {
        witness_within_bounds(&header);
        let _ = header.hash();
        assert_eq!(decode_witness(&encode_witness(&header)).unwrap(), header);
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_message_decoder_random_bytes(bytes in vec(any::<u8>(), 0..1_024)) {
        accepted_message_is_sound(&bytes);
    }

    /// Every message kind, mutated, cut and extended.
    #[test]
    fn fuzz_message_decoder_mutated(which in any::<Index>(), (flips, cut, tail) in mutation()) {
        let sample = &samples()[which.index(samples().len())];
        let bytes = mutate(encode_message(sample).to_vec(), &flips, cut, &tail);
        accepted_message_is_sound(&bytes);
    }

    #[test]
    fn fuzz_mining_decoders(which in any::<Index>(), random in vec(any::<u8>(), 0..512), (flips, cut, tail) in mutation()) {
        mining_is_sound(&random);
        let samples = mining_samples();
        let sample = samples[which.index(samples.len())].clone();
        mining_is_sound(&mutate(sample, &flips, cut, &tail));
    }

    #[test]
    fn fuzz_witness_decoder(hashes in 0usize..40, uncles in 0usize..4, random in vec(any::<u8>(), 0..512), (flips, cut, tail) in mutation()) {
        witness_is_sound(&random);
        let sample = encode_witness(&witness(hashes, uncles)).to_vec();
        witness_is_sound(&mutate(sample, &flips, cut, &tail));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers: three honest members (0, 1, 2) run Bft and Availability and exchange their messages through a queue the
// fuzzer reorders and drops from; member 3 is the fuzzer's.

/// Honest messages in flight at most (the oldest are lost beyond it: the network may drop).
const QUEUE_MAX: usize = 512;
/// Honest messages remembered for replay and mutation.
const SEEN_MAX: usize = 64;
/// No honest member's round may pass this in a run: the fuzzer's huge rounds must not move anyone.
const ROUND_BOUND: u64 = 1_000_000;

struct Cluster {
    bfts: Vec<Bft>,
    availabilities: Vec<Availability>,
    queue: VecDeque<(MemberIndex, MemberIndex, Message)>,
    seen: VecDeque<Message>,
    /// Per honest member, what it committed: height -> consensus block hash.
    commits: Vec<BTreeMap<u64, Hash32>>,
    now_ms: u64,
    next_tx: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let committee = committee();
        let mut cluster = Cluster {
            bfts: Vec::new(),
            availabilities: Vec::new(),
            queue: VecDeque::new(),
            seen: VecDeque::new(),
            commits: vec![BTreeMap::new(); BYZANTINE as usize],
            now_ms: 0,
            next_tx: 0,
        };
        for me in 0..BYZANTINE {
            let (bft, actions) = Bft::new(
                committee.clone(),
                me,
                Keypair::from_seed(&[me as u8 + 1; 32]),
                BftConfig::default(),
                Recovered::default(),
                0,
            );
            cluster.bfts.push(bft);
            cluster.availabilities.push(Availability::new(
                committee.clone(),
                me,
                Keypair::from_seed(&[me as u8 + 1; 32]),
                AvailabilityConfig::default(),
            ));
            cluster.apply(me, actions);
        }
        cluster
    }

    fn apply(&mut self, me: MemberIndex, actions: Vec<Action>) {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Send { to, message } => self.push(me, to, message),
                Action::Broadcast(message) => {
                    for to in (0..MEMBERS as MemberIndex).filter(|to| *to != me) {
                        self.push(me, to, message.clone());
                    }
                }
                Action::Certified { cert, verified } => {
                    let bft = &mut self.bfts[me as usize];
                    bft.add_payload(cert, verified);
                    actions.extend(bft.take_deferred());
                }
                Action::EpochEnd(_) => unreachable!("no last height here"),
                Action::Equivocation(_) => {}
                Action::Commit(block) => {
                    let hash = block.hash();
                    let previous = self.commits[me as usize].insert(block.height, hash);
                    assert!(
                        previous.is_none(),
                        "member {me} committed height {} twice",
                        block.height
                    );
                    for (other, commits) in self.commits.iter().enumerate() {
                        if let Some(theirs) = commits.get(&block.height) {
                            assert_eq!(
                                *theirs, hash,
                                "members {me} and {other} committed different blocks at {}",
                                block.height
                            );
                        }
                    }
                }
                Action::Persist(_) | Action::StoreBlock(_) | Action::StorePackage(_) => {}
            }
        }
    }

    fn push(&mut self, from: MemberIndex, to: MemberIndex, message: Message) {
        if self.queue.len() >= QUEUE_MAX {
            self.queue.pop_front();
        }
        self.queue.push_back((from, to, message));
    }

    /// Hands `message` from `from` to member `to`'s handlers, as the node's driver routes it.
    fn deliver(&mut self, from: MemberIndex, to: MemberIndex, message: Message) {
        if to == BYZANTINE {
            return;
        }
        let actions = match &message {
            Message::Proposal(_)
            | Message::BlockResponse(_)
            | Message::Vote(_)
            | Message::CommitVote(_)
            | Message::Timeout(_)
            | Message::BlockRequest(_) => {
                self.bfts[to as usize].handle(Event::Message { from, message })
            }
            Message::Package(_)
            | Message::Ack(_)
            | Message::Cert(_)
            | Message::PackageRequest(_) => {
                self.availabilities[to as usize].handle(from, message, self.now_ms)
            }
            // Witnesses and snapshot transfer are the node's, not these state machines'.
            _ => Vec::new(),
        };
        self.apply(to, actions);
    }

    fn deliver_queued(&mut self, which: Index) {
        if !self.queue.is_empty() {
            self.deliver_at(which.index(self.queue.len()));
        }
    }

    fn deliver_at(&mut self, at: usize) {
        let (from, to, message) = self.queue.remove(at).expect("in range");
        if self.seen.len() >= SEEN_MAX {
            self.seen.pop_front();
        }
        self.seen.push_back(message.clone());
        self.deliver(from, to, message);
    }

    fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        for me in 0..BYZANTINE {
            let mut actions = self.bfts[me as usize].handle(Event::Tick {
                now_ms: self.now_ms,
            });
            actions.extend(self.availabilities[me as usize].on_tick(self.now_ms));
            self.apply(me, actions);
        }
    }

    fn create(&mut self, me: MemberIndex, count: usize) {
        let txs = transactions();
        let batch: Vec<Transaction> = (0..count)
            .map(|k| txs[(self.next_tx + k) % txs.len()].clone())
            .collect();
        self.next_tx += count;
        let actions = self.availabilities[me as usize].create(batch, true, self.now_ms);
        self.apply(me, actions);
    }

    fn check_bounds(&self) {
        for (me, bft) in self.bfts.iter().enumerate() {
            assert!(
                bft.round() < ROUND_BOUND,
                "member {me} moved to round {}",
                bft.round()
            );
            assert_eq!(bft.stats.conflicting_commits, 0, "member {me}");
            assert!(bft.committed_height() <= bft.high_qc_height().max(bft.committed_height()));
        }
    }
}

/// A round, height or sequence as a hostile member picks it: near the live ones, or at the edges of u64.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..24,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(1u64 << 63),
        1 => any::<u64>(),
    ]
}

/// A member index as a hostile member names it: in the committee, just past it, or far past it.
fn signer() -> impl Strategy<Value = MemberIndex> {
    prop_oneof![6 => 0..MEMBERS as MemberIndex, 1 => Just(MEMBERS as MemberIndex), 1 => any::<MemberIndex>()]
}

/// A hash: one of a recent honest message's blocks or packages (resolved at run time), or made up.
#[derive(Clone, Debug)]
enum HashPick {
    Seen(Index),
    Made([u8; 32]),
}

fn hash_pick() -> impl Strategy<Value = HashPick> {
    prop_oneof![
        2 => any::<Index>().prop_map(HashPick::Seen),
        1 => any::<[u8; 32]>().prop_map(HashPick::Made),
    ]
}

/// How a forged message is signed: by the Byzantine key over the right digest (the most a real one can do), by
/// another member's key (as if it had stolen it: checks must still hold the committee's rules), or not at all.
#[derive(Clone, Copy, Debug)]
enum Signing {
    Own,
    Other(MemberIndex),
    Garbage(u8),
}

fn signing() -> impl Strategy<Value = Signing> {
    prop_oneof![
        3 => Just(Signing::Own),
        1 => (0..MEMBERS as MemberIndex).prop_map(Signing::Other),
        1 => any::<u8>().prop_map(Signing::Garbage),
    ]
}

#[derive(Clone, Debug)]
enum QcPick {
    Genesis,
    /// A real certificate, from a recent honest block or timeout (the only valid ones a single Byzantine member
    /// can show), with its fields as they are.
    Seen(Index),
    /// Signatures that do not verify, any signers.
    Forged {
        round: u64,
        block: HashPick,
        height: u64,
        signers: Vec<MemberIndex>,
    },
}

fn qc_pick() -> impl Strategy<Value = QcPick> {
    prop_oneof![
        2 => Just(QcPick::Genesis),
        2 => any::<Index>().prop_map(QcPick::Seen),
        2 => (number(), hash_pick(), number(), vec(signer(), 0..6))
            .prop_map(|(round, block, height, signers)| QcPick::Forged { round, block, height, signers }),
    ]
}

#[derive(Clone, Debug)]
enum Forged {
    Vote {
        commit: bool,
        round: u64,
        block: HashPick,
        height: u64,
        signer: MemberIndex,
        signing: Signing,
    },
    Timeout {
        round: u64,
        qc: QcPick,
        signer: MemberIndex,
        signing: Signing,
    },
    Proposal {
        live: bool,
        round: u64,
        author: MemberIndex,
        qc: QcPick,
        height: Option<u64>,
        tc: Option<(u64, Vec<(MemberIndex, u64)>)>,
        certs: Vec<(HashPick, MemberIndex, u64, u32, Vec<MemberIndex>)>,
        signing: Signing,
    },
    BlockRequest(HashPick),
    Package {
        creator: MemberIndex,
        sequence: u64,
        txs: usize,
    },
    Ack {
        package: HashPick,
        checked: bool,
        signer: MemberIndex,
        signing: Signing,
    },
    Cert {
        package: HashPick,
        creator: MemberIndex,
        sequence: u64,
        txs: u32,
        bytes: u32,
        acks: Vec<MemberIndex>,
    },
    PackageRequest(HashPick),
}

fn forged() -> impl Strategy<Value = Forged> {
    prop_oneof![
        3 => (any::<bool>(), number(), hash_pick(), number(), signer(), signing()).prop_map(
            |(commit, round, block, height, signer, signing)| Forged::Vote { commit, round, block, height, signer, signing }),
        2 => (number(), qc_pick(), signer(), signing()).prop_map(
            |(round, qc, signer, signing)| Forged::Timeout { round, qc, signer, signing }),
        3 => (
            any::<bool>(),
            number(),
            signer(),
            qc_pick(),
            proptest::option::weighted(0.3, number()),
            proptest::option::weighted(0.3, (number(), vec((signer(), number()), 0..5))),
            vec((hash_pick(), signer(), number(), any::<u32>(), vec(signer(), 0..5)), 0..3),
            signing(),
        )
            .prop_map(|(live, round, author, qc, height, tc, certs, signing)| Forged::Proposal {
                live, round, author, qc, height, tc, certs, signing,
            }),
        1 => hash_pick().prop_map(Forged::BlockRequest),
        2 => (signer(), number(), 0usize..4).prop_map(|(creator, sequence, txs)| Forged::Package { creator, sequence, txs }),
        2 => (hash_pick(), any::<bool>(), signer(), signing()).prop_map(
            |(package, checked, signer, signing)| Forged::Ack { package, checked, signer, signing }),
        1 => (hash_pick(), signer(), number(), any::<u32>(), any::<u32>(), vec(signer(), 0..6)).prop_map(
            |(package, creator, sequence, txs, bytes, acks)| Forged::Cert { package, creator, sequence, txs, bytes, acks }),
        1 => hash_pick().prop_map(Forged::PackageRequest),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Deliver(Index),
    /// The next `n` honest messages in order (so that rounds complete and blocks commit).
    Flow(usize),
    Tick(u64),
    Create(MemberIndex, usize),
    /// Random bytes through the one decoder, then (if they decode) to a member.
    Bytes(MemberIndex, Vec<u8>),
    /// A recent honest message's bytes, mutated, from the Byzantine member.
    Mutated(MemberIndex, Index, Vec<(Index, u8)>),
    /// A recent honest message relayed as is by the Byzantine member.
    Replay(MemberIndex, Index),
    Forge(MemberIndex, Forged),
}

fn honest() -> impl Strategy<Value = MemberIndex> {
    0..BYZANTINE
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<Index>().prop_map(Op::Deliver),
        6 => (1usize..40).prop_map(Op::Flow),
        3 => prop_oneof![4 => 0u64..150, 1 => 0u64..1_500].prop_map(Op::Tick),
        1 => (honest(), 1usize..4).prop_map(|(me, count)| Op::Create(me, count)),
        1 => (honest(), vec(any::<u8>(), 0..256)).prop_map(|(to, bytes)| Op::Bytes(to, bytes)),
        2 => (honest(), any::<Index>(), vec((any::<Index>(), any::<u8>()), 1..4))
            .prop_map(|(to, which, flips)| Op::Mutated(to, which, flips)),
        1 => (honest(), any::<Index>()).prop_map(|(to, which)| Op::Replay(to, which)),
        4 => (honest(), forged()).prop_map(|(to, forged)| Op::Forge(to, forged)),
    ]
}

/// What a single Byzantine member can sign: for itself, over anything; for another member, nothing that verifies.
fn byzantine_or_garbage(signer: MemberIndex, digest: &[u8]) -> Signature {
    if signer == BYZANTINE {
        keypairs()[BYZANTINE as usize].sign(digest)
    } else {
        Signature([0xa5; 64])
    }
}

impl Cluster {
    fn hash(&self, pick: &HashPick) -> Hash32 {
        match pick {
            HashPick::Made(bytes) => Hash32(*bytes),
            HashPick::Seen(which) => {
                if self.seen.is_empty() {
                    return Hash32([0; 32]);
                }
                match &self.seen[which.index(self.seen.len())] {
                    Message::Proposal(block) | Message::BlockResponse(block) => block.hash(),
                    Message::Vote(vote) | Message::CommitVote(vote) => vote.block,
                    Message::Timeout(timeout) => timeout.high_qc.block,
                    Message::Package(package) => package.id(),
                    Message::Ack(ack) => ack.package,
                    Message::Cert(cert) => cert.package,
                    Message::BlockRequest(hash) | Message::PackageRequest(hash) => *hash,
                    _ => Hash32([1; 32]),
                }
            }
        }
    }

    fn qc(&self, pick: &QcPick) -> QuorumCert {
        match pick {
            QcPick::Genesis => QuorumCert::genesis(),
            QcPick::Seen(which) => {
                let certs: Vec<&QuorumCert> = self
                    .seen
                    .iter()
                    .filter_map(|m| match m {
                        Message::Proposal(block) | Message::BlockResponse(block) => Some(&block.qc),
                        Message::Timeout(timeout) => Some(&timeout.high_qc),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    QuorumCert::genesis()
                } else {
                    certs[which.index(certs.len())].clone()
                }
            }
            QcPick::Forged {
                round,
                block,
                height,
                signers,
            } => QuorumCert {
                round: *round,
                block: self.hash(block),
                height: *height,
                signatures: signers
                    .iter()
                    .map(|signer| SignerSignature {
                        signer: *signer,
                        signature: Signature([0x5a; 64]),
                    })
                    .collect(),
            },
        }
    }

    fn forge(&self, forged: &Forged) -> Message {
        let sign = |signing: Signing, digest: &[u8]| match signing {
            Signing::Own => keypairs()[BYZANTINE as usize].sign(digest),
            Signing::Other(member) => keypairs()[member as usize].sign(digest),
            Signing::Garbage(byte) => Signature([byte; 64]),
        };
        match forged {
            Forged::Vote {
                commit,
                round,
                block,
                height,
                signer,
                signing,
            } => {
                let block = self.hash(block);
                let digest = if *commit {
                    commit_vote_digest(0, *round, &block, *height)
                } else {
                    vote_digest(0, *round, &block, *height)
                };
                let vote = Vote {
                    round: *round,
                    block,
                    height: *height,
                    signer: *signer,
                    signature: sign(*signing, &digest.0),
                };
                if *commit {
                    Message::CommitVote(vote)
                } else {
                    Message::Vote(vote)
                }
            }
            Forged::Timeout {
                round,
                qc,
                signer,
                signing,
            } => {
                let high_qc = self.qc(qc);
                let signature = sign(*signing, &timeout_digest(0, *round, high_qc.round).0);
                Message::Timeout(Timeout {
                    round: *round,
                    high_qc,
                    signer: *signer,
                    signature,
                })
            }
            Forged::Proposal {
                live,
                round,
                author,
                qc,
                height,
                tc,
                certs,
                signing,
            } => {
                let qc = self.qc(qc);
                let tc = tc.as_ref().map(|(round, signatures)| TimeoutCert {
                    round: *round,
                    signatures: signatures
                        .iter()
                        .map(|(signer, high_qc_round)| TimeoutSignature {
                            signer: *signer,
                            high_qc_round: *high_qc_round,
                            signature: byzantine_or_garbage(
                                *signer,
                                &timeout_digest(0, *round, *high_qc_round).0,
                            ),
                        })
                        .collect(),
                });
                let payload = certs
                    .iter()
                    .map(|(package, creator, sequence, txs, acks)| AvailabilityCert {
                        package: self.hash(package),
                        creator: *creator,
                        sequence: *sequence,
                        size: PackageSize {
                            txs: *txs,
                            bytes: txs.wrapping_mul(300),
                        },
                        acks: acks
                            .iter()
                            .map(|signer| AckSignature {
                                signer: *signer,
                                checked: true,
                                signature: Signature([1; 64]),
                            })
                            .collect(),
                    })
                    .collect();
                let mut block = Block {
                    epoch: 0,
                    round: *round,
                    // The height a well-formed block has, unless the fuzzer picked another.
                    height: height.unwrap_or(qc.height.wrapping_add(1)),
                    protocol: 1,
                    qc,
                    tc,
                    author: *author,
                    timestamp_ms: self.now_ms,
                    payload,
                    witnesses: Vec::new(),
                    signature: Signature([0; 64]),
                };
                block.signature = sign(*signing, &block.hash().0);
                if *live {
                    Message::Proposal(block)
                } else {
                    Message::BlockResponse(block)
                }
            }
            Forged::BlockRequest(hash) => Message::BlockRequest(self.hash(hash)),
            Forged::Package {
                creator,
                sequence,
                txs,
            } => Message::Package(Package {
                creator: *creator,
                sequence: *sequence,
                txs: transactions()[..*txs].to_vec(),
            }),
            Forged::Ack {
                package,
                checked,
                signer,
                signing,
            } => {
                let package = self.hash(package);
                let digest = ack_digest(0, &package, PackageSize { txs: 1, bytes: 300 }, *checked);
                Message::Ack(Ack {
                    package,
                    checked: *checked,
                    signer: *signer,
                    signature: sign(*signing, &digest.0),
                })
            }
            Forged::Cert {
                package,
                creator,
                sequence,
                txs,
                bytes,
                acks,
            } => {
                let package = self.hash(package);
                let size = PackageSize {
                    txs: *txs,
                    bytes: *bytes,
                };
                let digest = ack_digest(0, &package, size, false);
                Message::Cert(AvailabilityCert {
                    package,
                    creator: *creator,
                    sequence: *sequence,
                    size,
                    acks: acks
                        .iter()
                        .map(|signer| AckSignature {
                            signer: *signer,
                            checked: false,
                            signature: byzantine_or_garbage(*signer, &digest.0),
                        })
                        .collect(),
                })
            }
            Forged::PackageRequest(hash) => Message::PackageRequest(self.hash(hash)),
        }
    }

    /// One fuzzer step; afterwards the bounds still hold.
    fn step(&mut self, op: &Op) {
        match op {
            Op::Deliver(which) => self.deliver_queued(*which),
            Op::Flow(count) => {
                for _ in 0..*count {
                    if self.queue.is_empty() {
                        break;
                    }
                    self.deliver_at(0);
                }
            }
            Op::Tick(ms) => self.tick(*ms),
            Op::Create(me, count) => self.create(*me, *count),
            Op::Bytes(to, bytes) => {
                if let Ok(message) = decode_message(bytes) {
                    self.deliver(BYZANTINE, *to, message);
                }
            }
            Op::Mutated(to, which, flips) => {
                if self.seen.is_empty() {
                    return;
                }
                let message = &self.seen[which.index(self.seen.len())];
                let bytes = mutate(encode_message(message).to_vec(), flips, None, &[]);
                if let Ok(message) = decode_message(&bytes) {
                    self.deliver(BYZANTINE, *to, message);
                }
            }
            Op::Replay(to, which) => {
                if self.seen.is_empty() {
                    return;
                }
                let message = self.seen[which.index(self.seen.len())].clone();
                self.deliver(BYZANTINE, *to, message);
            }
            Op::Forge(to, forged) => {
                let message = self.forge(forged);
                let refused_before = self.bfts[*to as usize].stats.refused;
                let availability_refused_before = self.availabilities[*to as usize].stats.refused;
                // What the handlers must count as refused, whatever their state.
                let must_refuse = match &message {
                    Message::Vote(vote) | Message::CommitVote(vote) => vote.signer != BYZANTINE,
                    Message::Timeout(timeout) => timeout.signer != BYZANTINE,
                    Message::Proposal(block) | Message::BlockResponse(block) => {
                        let receiver = &self.bfts[*to as usize];
                        receiver.knows_leader(block.round)
                            && block.author != receiver.leader(block.round)
                    }
                    _ => false,
                };
                let package_refused =
                    matches!(&message, Message::Package(p) if p.creator >= MEMBERS as MemberIndex);
                self.deliver(BYZANTINE, *to, message);
                if must_refuse {
                    assert!(
                        self.bfts[*to as usize].stats.refused > refused_before,
                        "{forged:?} was not counted as refused"
                    );
                }
                if package_refused {
                    assert!(
                        self.availabilities[*to as usize].stats.refused
                            > availability_refused_before
                    );
                }
            }
        }
        self.check_bounds();
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// The handlers under a Byzantine member's arbitrary messages, among honest traffic.
    #[test]
    fn fuzz_handlers_under_a_byzantine_member(ops in vec(op(), 1..160)) {
        let mut cluster = Cluster::new();
        for op in &ops {
            cluster.step(op);
        }
    }
}

/// Honest traffic alone makes progress in this harness (otherwise the handler fuzz would only ever see round 1).
#[test]
fn fuzz_harness_commits_without_the_byzantine_member() {
    let mut cluster = Cluster::new();
    cluster.create(0, 2);
    for _ in 0..400 {
        if cluster.queue.is_empty() {
            cluster.tick(200);
        } else {
            cluster.deliver_at(0);
        }
        cluster.check_bounds();
    }
    assert!(
        cluster.commits.iter().all(|c| c.len() >= 2),
        "{:?}",
        cluster
            .commits
            .iter()
            .map(BTreeMap::len)
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Bugs the handler fuzz found, kept as the minimal failing cases. They are ignored so that CI stays green until the
// fix lands in bft.rs (owned by others); `cargo test -p cas-consensus --test fuzz -- --ignored` shows them failing
// in debug builds (where overflow checks are on: every `cargo test`, the simulator, a debug `cas node`). Release
// builds wrap instead, and the wrapped comparison happens to refuse the message.

fn member(me: MemberIndex) -> Bft {
    Bft::new(
        committee(),
        me,
        Keypair::from_seed(&[me as u8 + 1; 32]),
        BftConfig::default(),
        Recovered::default(),
        0,
    )
    .0
}

/// BUG (issue 16): a member's own vote for round u64::MAX panics its receiver: `on_vote` computes `vote.round + 1`
/// (bft.rs, "vote.round + 1 < self.round") before any bound. Fix: `vote.round.saturating_add(1)`, or test
/// `vote.round > self.round + FUTURE_ROUNDS_MAX` first.
#[test]
fn a_vote_for_the_last_round_is_refused_without_a_panic() {
    let mut bft = member(0);
    let digest = vote_digest(0, u64::MAX, &Hash32([1; 32]), 2);
    bft.handle(Event::Message {
        from: BYZANTINE,
        message: Message::Vote(Vote {
            round: u64::MAX,
            block: Hash32([1; 32]),
            height: 2,
            signer: BYZANTINE,
            signature: keypairs()[BYZANTINE as usize].sign(&digest.0),
        }),
    });
}

fn block_from_the_leader(qc: QuorumCert, height: u64, tc: Option<TimeoutCert>) -> Block {
    let round = 3; // led by member 3, the Byzantine one
    assert_eq!(committee().leader(round), BYZANTINE);
    let mut block = Block {
        epoch: 0,
        round,
        height,
        protocol: 1,
        qc,
        tc,
        author: BYZANTINE,
        timestamp_ms: 0,
        payload: Vec::new(),
        witnesses: Vec::new(),
        signature: Signature([0; 64]),
    };
    block.signature = keypairs()[BYZANTINE as usize].sign(&block.hash().0);
    block
}

/// BUG (issue 16): a leader's block whose (unverified) QC claims height u64::MAX panics its receiver:
/// `check_block` computes `block.qc.height + 1` (bft.rs, "block.height != block.qc.height + 1") before it checks
/// the certificate. Fix: `block.qc.height.checked_add(1) != Some(block.height)`.
#[test]
fn a_block_whose_qc_claims_the_last_height_is_refused_without_a_panic() {
    let mut bft = member(0);
    let qc = QuorumCert {
        round: 1,
        block: Hash32([1; 32]),
        height: u64::MAX,
        signatures: Vec::new(),
    };
    let block = block_from_the_leader(qc, 0, None);
    bft.handle(Event::Message {
        from: BYZANTINE,
        message: Message::Proposal(block),
    });
    assert_eq!(bft.stats.refused, 1);
}

/// BUG (issue 16): a leader's block carrying an (unverified) TC for round u64::MAX panics its receiver:
/// `check_block` computes `tc.round + 1` (bft.rs, "tc.round + 1 != block.round") before `verify_tc`. Fix:
/// `tc.round.checked_add(1) != Some(block.round)`.
#[test]
fn a_block_whose_tc_claims_the_last_round_is_refused_without_a_panic() {
    let mut bft = member(0);
    let tc = TimeoutCert {
        round: u64::MAX,
        signatures: Vec::new(),
    };
    let block = block_from_the_leader(QuorumCert::genesis(), 1, Some(tc));
    bft.handle(Event::Message {
        from: BYZANTINE,
        message: Message::Proposal(block),
    });
    assert_eq!(bft.stats.refused, 1);
}
