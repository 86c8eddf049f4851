//! CAS consensus, sans-IO: state machines fed events (a message, a timer tick with the current time) that return
//! actions (send, broadcast, persist, store, commit). No sockets, threads, clocks or randomness inside; the node
//! and the deterministic simulator ([`sim`]) drive them.
//!
//! [`bft`] orders blocks among the DPOS committee (pipelined, leader-rotating, 2-chain commit of the HotStuff-2 /
//! Jolteon family); [`availability`] makes packages of transactions available and certified before they are
//! ordered; [`messages`] holds the wire types and certificate checks; [`committee`] the members and thresholds;
//! [`leader`] who leads each round (round-robin, skipping members silent in the recent committed history);
//! [`witness`] the POW witness chain that miners build over finalized blocks; [`rewards`] the ledger's order of
//! that chain (fed only from committed blocks) and the witness rewards minted from it; [`mining`] the protocol
//! between a standalone miner and the node it follows; [`protocol`] the versions of the consensus rules by height; [`spv`] a light client's certified header chain. [`limits`] holds every bound of the crate and checks the
//! relations between them at compile time.

/// Declares a struct of `u64` counters with `add`, which sums another one's field by field: every counter of the
/// struct is summed, so one added later cannot be forgotten (the node adds the counters of the BFT instances that
/// ended at hand-overs, so an operator's counters never go back).
macro_rules! counters {
    ($(#[$outer:meta])* pub struct $name:ident { $($(#[$inner:meta])* pub $field:ident: u64,)* }) => {
        $(#[$outer])*
        pub struct $name {
            $($(#[$inner])* pub $field: u64,)*
        }

        impl $name {
            /// Adds `other`'s counts.
            pub fn add(&mut self, other: &$name) {
                $(self.$field += other.$field;)*
            }
        }
    };
}
pub(crate) use counters;

pub mod availability;
pub mod bft;
pub mod bounded;
pub mod committee;
pub mod leader;
pub mod ledger_cert;
pub mod limits;
pub mod messages;
pub mod mining;
pub mod protocol;
pub mod receipt;
pub mod rewards;
pub mod sim;
pub mod spv;
pub mod verdicts;
pub mod witness;

use committee::MemberIndex;
use messages::{AvailabilityCert, Block, Message, Package};

/// What a state machine asks its driver to do, in order. A `Persist` must be durable before any later action of the
/// same list is carried out: that is how "safety state is written before a vote leaves" is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: MemberIndex,
        message: Message,
    },
    /// To every other member.
    Broadcast(Message),
    Persist(bft::SafetyState),
    /// Keep this block durably (restart, and serving members that catch up).
    StoreBlock(Block),
    /// Keep this package durably.
    StorePackage(Package),
    /// A package is certified available: hand it to the local BFT payload pool. `verified`: its signatures were
    /// checked already (a certificate this member formed), so the pool does not check them a second time.
    Certified {
        cert: AvailabilityCert,
        verified: bool,
    },
    /// This block is final. Commits come in height order, each exactly once.
    Commit(Block),
    /// The epoch's last height is final: this block (`height`, `hash`, `timestamp_ms`) is the base the next
    /// epoch's instance starts from ([`bft::Recovered::at_base`]). Once, after the last `Commit` of the epoch.
    EpochEnd(bft::Base),
    /// A member was seen voting for two blocks in one round: the proof, checked ([`messages::Equivocation::proves`]),
    /// once per member and round.
    Equivocation(Box<messages::Equivocation>),
}
