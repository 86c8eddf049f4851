//! Package availability, the Synchronizer's side of consensus: a member packs client transactions into a package
//! and broadcasts it; members store it and answer a signed ack; acks of more than two thirds of the stake form an
//! availability certificate, which is what blocks carry, so ordering cost does not grow with the payload. An ack also
//! signs the package's size (transactions and encoded bytes), which the certificate carries: a leader fills a block
//! only up to what the ledger block decoder accepts, and voters check it, without holding the packages.
//!
//! **Each signature is verified about f+1 times, not n times.** The creator verifies its package's signatures
//! (its Synchronizer checked them at ingest), and so do the next members in committee order until their stake with
//! the creator's exceeds one third: the *checkers*. A checker that finds every signature good acks with
//! `checked = true`; everyone else acks `checked = false` (stored, not checked). A certificate whose checked acks
//! carry more than a third of the stake is *attested*: at most a third of the stake is Byzantine, so at least one
//! honest member verified every signature, and executors skip re-verification. A Byzantine member can ack
//! `checked` without checking, but alone it cannot attest: it needs an honest checker beside it, who found the
//! signatures good. If a checker is slow, crashed or Byzantine, the creator waits and then issues an unattested
//! certificate: still available, and executors verify its signatures themselves. Safety never rests on the
//! attestation, only the CPU saved does.
//!
//! **How long the creator waits** depends on whether the checkers it still misses are alive. A checker that acked
//! one of our packages within the last `attest_wait_max_ms` is behind, not gone (on a saturated machine its acks
//! queue behind its own work), so the creator waits up to `attest_wait_max_ms` for it: giving up after a short wait
//! there made every one of the n executors verify the package instead of f+1 checkers, which saturated the machine
//! further (10 nodes on 2 cores: 18% of certificates unattested at a 500 ms wait). A checker not heard from for
//! that long is treated as gone, and the creator waits only `attest_wait_ms`.

use std::collections::BTreeMap;

// Owned transactions are checked as they are held, never re-encoded, so no transaction a peer sent (however large)
// can make a check fail for its size.
use cas_engine::rules::verify_owned_signatures;
use cas_engine::{Keypair, PackageId, Transaction, TxId};

use crate::committee::{Committee, MemberIndex};
use crate::limits;
use crate::messages::{
    ack_digest, verify_availability, verify_member, Ack, AckSignature, AvailabilityCert, Message,
    Package, PackageSize, PACKAGE_TXS_MAX,
};
use crate::Action;

#[derive(Clone, Debug)]
pub struct AvailabilityConfig {
    /// How long the creator waits for checked acks before certifying without attestation, when a checker it
    /// misses has not been heard from for `attest_wait_max_ms` (crashed, cut off, or new).
    pub attest_wait_ms: u64,
    /// How long it waits when every checker it misses acked one of its packages within that time (alive, behind).
    pub attest_wait_max_ms: u64,
    /// How often the creator re-sends a package to members that have not acked it.
    pub resend_ms: u64,
    /// Packages kept in memory (own and others'); the oldest go first.
    pub packages_kept: usize,
    /// Their transactions' encoded bytes kept in memory, in all ([`PackageSize`]): the window is whichever bound
    /// is reached first, so it does not grow with the size of packages.
    pub package_bytes_kept: usize,
    /// The committee epoch the acks sign ([`crate::messages::ack_digest`]).
    pub epoch: u64,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        AvailabilityConfig {
            attest_wait_ms: limits::ATTEST_WAIT_MS_DEFAULT,
            attest_wait_max_ms: limits::ATTEST_WAIT_MAX_MS_DEFAULT,
            resend_ms: limits::PACKAGE_RESEND_MS_DEFAULT,
            packages_kept: limits::PACKAGES_KEPT_DEFAULT,
            package_bytes_kept: limits::PACKAGE_BYTES_KEPT_DEFAULT,
            epoch: 0,
        }
    }
}

crate::counters! {
    /// Counters an operator (or the simulator) reads.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct AvailabilityStats {
        pub packages_created: u64,
        /// Transactions whose signatures this member verified (packages it checked, and unattested ones at execution),
        /// and the batches they were verified in (one per package).
        pub signatures_checked: u64,
        pub signature_batches: u64,
        pub certs_formed: u64,
        pub certs_attested: u64,
        /// Certificates issued unattested because the wait for checked acks ran out.
        pub certs_unattested_after_wait: u64,
        pub refused: u64,
    }
}

struct Pending {
    sequence: u64,
    size: PackageSize,
    created_ms: u64,
    resend_at_ms: u64,
    acks: BTreeMap<MemberIndex, AckSignature>,
    certified: bool,
}

/// How a member behaves when it acks: honestly, or (simulator only) attesting without checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckBehaviour {
    Honest,
    /// Byzantine: acks `checked = true` for every package without verifying anything.
    AttestWithoutChecking,
}

/// A package held, with its transactions' ids (computed once, with the package id).
struct Held {
    package: Package,
    tx_ids: Vec<TxId>,
}

pub struct Availability {
    committee: Committee,
    me: MemberIndex,
    keypair: Keypair,
    config: AvailabilityConfig,
    now_ms: u64,
    sequence: u64,
    packages: BTreeMap<PackageId, Held>,
    /// The kept packages in arrival order, with their encoded transaction bytes.
    arrival: std::collections::VecDeque<(PackageId, usize)>,
    /// The encoded transaction bytes of `packages`.
    package_bytes: usize,
    pending: BTreeMap<PackageId, Pending>,
    /// Sequences of our packages not certified yet, so certificates leave in creation order.
    uncertified: std::collections::BTreeSet<u64>,
    /// The members that check our packages, ourselves included.
    checkers: Vec<MemberIndex>,
    /// When each member last acked one of our packages (by member index), for the attestation wait.
    last_ack_ms: Vec<Option<u64>>,
    behaviour: AckBehaviour,
    pub stats: AvailabilityStats,
}

impl Availability {
    pub fn new(
        committee: Committee,
        me: MemberIndex,
        keypair: Keypair,
        config: AvailabilityConfig,
    ) -> Availability {
        let checkers = committee
            .members()
            .filter(|m| Self::is_checker(&committee, me, *m))
            .collect();
        let last_ack_ms = vec![None; committee.size()];
        Availability {
            checkers,
            last_ack_ms,
            committee,
            me,
            keypair,
            config,
            now_ms: 0,
            sequence: 0,
            packages: BTreeMap::new(),
            arrival: std::collections::VecDeque::new(),
            package_bytes: 0,
            pending: BTreeMap::new(),
            uncertified: std::collections::BTreeSet::new(),

            behaviour: AckBehaviour::Honest,
            stats: AvailabilityStats::default(),
        }
    }

    /// Simulator hook: make this member a Byzantine acker.
    pub fn set_behaviour(&mut self, behaviour: AckBehaviour) {
        self.behaviour = behaviour;
    }

    /// Whether `member` is one of the checkers of packages made by `creator`.
    pub fn is_checker(committee: &Committee, creator: MemberIndex, member: MemberIndex) -> bool {
        let size = committee.size() as u64;
        let mut stake = 0;
        for step in 0..size {
            let candidate = ((creator as u64 + step) % size) as MemberIndex;
            if candidate == member {
                return true;
            }
            stake += committee.stake(candidate);
            if stake >= committee.validity_stake() {
                return false;
            }
        }
        false
    }

    /// Puts back a package read from the disk after a restart.
    pub fn restore(&mut self, package: Package) {
        let (id, tx_ids) = package.id_and_tx_ids();
        let size = package.size();
        self.hold(id, Held { package, tx_ids }, size);
    }

    pub fn package(&self, id: &PackageId) -> Option<&Package> {
        self.packages.get(id).map(|held| &held.package)
    }

    /// A held package's transaction ids, in order.
    pub fn tx_ids(&self, id: &PackageId) -> Option<&[TxId]> {
        self.packages.get(id).map(|held| held.tx_ids.as_slice())
    }

    /// This member's own packages still held, oldest first, each with its transaction ids.
    pub fn own_packages(&self) -> impl Iterator<Item = (&Package, &[TxId])> {
        self.arrival
            .iter()
            .filter_map(|(id, _)| self.packages.get(id))
            .filter(|held| held.package.creator == self.me)
            .map(|held| (&held.package, held.tx_ids.as_slice()))
    }

    /// Holds a package new to this member and asks for it to be stored durably.
    fn keep(&mut self, id: PackageId, held: Held, size: PackageSize, actions: &mut Vec<Action>) {
        if self.packages.contains_key(&id) {
            return;
        }
        actions.push(Action::StorePackage(held.package.clone()));
        self.hold(id, held, size);
    }

    /// Holds a package (once) in the window, counting its bytes, and evicts what the window no longer holds.
    fn hold(&mut self, id: PackageId, held: Held, size: PackageSize) {
        if self.packages.insert(id, held).is_some() {
            return;
        }
        let bytes = size.bytes as usize;
        self.arrival.push_back((id, bytes));
        self.package_bytes += bytes;
        self.evict();
    }

    /// Drops the oldest packages past `packages_kept` or `package_bytes_kept`, except our own not yet certified:
    /// their submitters were promised an answer, and dropping one would leave its transactions in limbo (no
    /// certificate, no rejection). Those are bounded by the node's admission (each holds admitted transactions the
    /// node counts in flight).
    fn evict(&mut self) {
        let mut uncertified_own = Vec::new();
        while self.arrival.len() > self.config.packages_kept
            || self.package_bytes > self.config.package_bytes_kept
        {
            let Some((old, bytes)) = self.arrival.pop_front() else {
                break;
            };
            if self.pending.get(&old).is_some_and(|p| !p.certified) {
                uncertified_own.push((old, bytes));
                continue;
            }
            self.packages.remove(&old);
            self.package_bytes -= bytes;
            self.pending.remove(&old);
        }
        for entry in uncertified_own.into_iter().rev() {
            self.arrival.push_front(entry);
        }
    }

    /// Verifies every signature of a package (`ids[i]` is `txs[i]`'s id); true when all are good.
    fn check_signatures(&mut self, txs: &[Transaction], ids: &[TxId]) -> bool {
        self.stats.signatures_checked += txs.len() as u64;
        self.stats.signature_batches += 1;
        !verify_owned_signatures(txs, ids).iter().any(|v| v.is_err())
    }

    fn ack(&self, package: PackageId, size: PackageSize, checked: bool) -> Ack {
        let digest = ack_digest(self.config.epoch, &package, size, checked);
        Ack {
            package,
            checked,
            signer: self.me,
            signature: self.keypair.sign(&digest.0),
        }
    }

    /// Packs `txs` into a package and broadcasts it. `verified` says the caller (the Synchronizer) already checked
    /// every signature, which then counts as the creator's check; otherwise the creator checks them here.
    pub fn create(&mut self, txs: Vec<Transaction>, verified: bool, now_ms: u64) -> Vec<Action> {
        assert!(
            txs.len() <= PACKAGE_TXS_MAX,
            "the Synchronizer bounds packages"
        );
        self.now_ms = self.now_ms.max(now_ms);
        let mut actions = Vec::new();
        let package = Package {
            creator: self.me,
            sequence: self.sequence,
            txs,
        };
        let package_sequence = self.sequence;
        self.sequence += 1;
        self.uncertified.insert(package_sequence);
        let (id, tx_ids) = package.id_and_tx_ids();
        let package_size = package.size();
        let checked = match self.behaviour {
            AckBehaviour::Honest if verified => true,
            AckBehaviour::Honest => self.check_signatures(&package.txs, &tx_ids),
            AckBehaviour::AttestWithoutChecking => true,
        };
        self.stats.packages_created += 1;
        // Pending first: `keep` never evicts our own uncertified packages, this one included.
        self.pending.insert(
            id,
            Pending {
                sequence: package_sequence,
                size: package_size,
                created_ms: self.now_ms,
                resend_at_ms: self.now_ms + self.config.resend_ms,
                acks: BTreeMap::new(),
                certified: false,
            },
        );
        let held = Held {
            package: package.clone(),
            tx_ids,
        };
        self.keep(id, held, package_size, &mut actions);
        actions.push(Action::Broadcast(Message::Package(package)));
        let ack = self.ack(id, package_size, checked);
        self.on_ack(ack, &mut actions);
        actions
    }

    pub fn handle(&mut self, from: MemberIndex, message: Message, now_ms: u64) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut actions = Vec::new();
        match message {
            Message::Package(package) => self.on_package(from, package, &mut actions),
            Message::Ack(ack) => {
                // Liveness is credited to the member the message came from, not to the ack's signer: an ack is
                // verified only when its certificate forms.
                if ack.signer == from && self.pending.contains_key(&ack.package) {
                    if let Some(last) = self.last_ack_ms.get_mut(from as usize) {
                        *last = Some(self.now_ms);
                    }
                }
                self.on_ack(ack, &mut actions)
            }
            // The BFT's payload pool verifies certificates once, with its cache.
            Message::Cert(cert) => actions.push(Action::Certified {
                cert,
                verified: false,
            }),
            Message::PackageRequest(id) => {
                if let Some(held) = self.packages.get(&id) {
                    actions.push(Action::Send {
                        to: from,
                        message: Message::Package(held.package.clone()),
                    });
                }
            }
            _ => {}
        }
        actions
    }

    fn on_package(&mut self, from: MemberIndex, package: Package, actions: &mut Vec<Action>) {
        if package.txs.len() > PACKAGE_TXS_MAX || self.committee.key(package.creator).is_none() {
            self.stats.refused += 1;
            return;
        }
        let (id, tx_ids) = package.id_and_tx_ids();
        let size = package.size();
        let fresh = !self.packages.contains_key(&id);
        // A package answering our request (sender is not its creator) is stored but not acked.
        let ack_it = from == package.creator;
        let creator = package.creator;
        let checked = if !ack_it {
            false
        } else {
            match self.behaviour {
                AckBehaviour::AttestWithoutChecking => true,
                AckBehaviour::Honest
                    if Self::is_checker(&self.committee, creator, self.me) && fresh =>
                {
                    self.check_signatures(&package.txs, &tx_ids)
                }
                AckBehaviour::Honest => false,
            }
        };
        self.keep(id, Held { package, tx_ids }, size, actions);
        if ack_it {
            actions.push(Action::Send {
                to: creator,
                message: Message::Ack(self.ack(id, size, checked)),
            });
        }
    }

    fn on_ack(&mut self, ack: Ack, actions: &mut Vec<Action>) {
        let Some(pending) = self.pending.get_mut(&ack.package) else {
            return;
        };
        if pending.certified || self.committee.key(ack.signer).is_none() {
            return;
        }
        // Acks are verified in one batch when they reach a quorum (in `try_certify`).
        pending.acks.insert(
            ack.signer,
            AckSignature {
                signer: ack.signer,
                checked: ack.checked,
                signature: ack.signature,
            },
        );
        self.try_certify(ack.package, actions);
    }

    fn try_certify(&mut self, id: PackageId, actions: &mut Vec<Action>) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        let committee = &self.committee;
        let stake: u64 = pending.acks.keys().map(|m| committee.stake(*m)).sum();
        let checked: u64 = pending
            .acks
            .values()
            .filter(|a| a.checked)
            .map(|a| committee.stake(a.signer))
            .sum();
        let wait_ms = Self::attest_wait_ms(
            &self.config,
            &self.checkers,
            &self.last_ack_ms,
            &pending.acks,
            self.now_ms,
        );
        let waited = self.now_ms >= pending.created_ms + wait_ms;
        let all_answered = pending.acks.len() == committee.size();
        // Certificates leave in creation order: a later package waits for every earlier one of ours.
        let earlier_waiting = self
            .uncertified
            .first()
            .is_some_and(|first| *first < pending.sequence);
        if pending.certified
            || earlier_waiting
            || stake < committee.quorum_stake()
            || (checked < committee.validity_stake() && !waited && !all_answered)
        {
            return;
        }
        let cert = AvailabilityCert {
            package: id,
            creator: self.me,
            sequence: pending.sequence,
            size: pending.size,
            acks: pending.acks.values().copied().collect(),
        };
        let epoch = self.config.epoch;
        if verify_availability(&cert, committee, epoch).is_err() {
            // A forged ack is among them: keep only the acks that verify alone, and wait for more.
            self.stats.refused += 1;
            pending.acks.retain(|signer, a| {
                verify_member(
                    committee,
                    *signer,
                    &ack_digest(epoch, &id, cert.size, a.checked),
                    &a.signature,
                )
            });
            return;
        }
        pending.certified = true;
        self.uncertified.remove(&pending.sequence);
        self.stats.certs_formed += 1;
        if cert.attested(committee) {
            self.stats.certs_attested += 1;
        } else if !all_answered {
            self.stats.certs_unattested_after_wait += 1;
        }
        actions.push(Action::Broadcast(Message::Cert(cert.clone())));
        actions.push(Action::Certified {
            cert,
            verified: true,
        });
    }

    /// How long a package whose acks are `acks` waits for checked acks: long while every checker still missing is
    /// alive (acked one of our packages within `attest_wait_max_ms`), short otherwise. A checker that answered
    /// unchecked is not waited for: nothing more will come from it.
    fn attest_wait_ms(
        config: &AvailabilityConfig,
        checkers: &[MemberIndex],
        last_ack_ms: &[Option<u64>],
        acks: &BTreeMap<MemberIndex, AckSignature>,
        now_ms: u64,
    ) -> u64 {
        let alive = |m: &MemberIndex| {
            last_ack_ms
                .get(*m as usize)
                .copied()
                .flatten()
                .is_some_and(|at| now_ms.saturating_sub(at) < config.attest_wait_max_ms)
        };
        let mut missing = checkers.iter().filter(|m| !acks.contains_key(m)).peekable();
        if missing.peek().is_some() && missing.all(alive) {
            config.attest_wait_max_ms.max(config.attest_wait_ms)
        } else {
            config.attest_wait_ms
        }
    }

    /// Timers: certify without attestation after the wait, and re-send packages to members that have not acked.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut actions = Vec::new();
        // In creation order: certificates leave in the order their packages were made, so a client's later
        // transactions are never ordered before its earlier ones by this member.
        let mut due: Vec<(u64, PackageId)> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.certified)
            .map(|(id, _)| {
                let sequence = self.packages.get(id).map(|held| held.package.sequence);
                (sequence.unwrap_or(u64::MAX), *id)
            })
            .collect();
        due.sort_unstable();
        let due: Vec<PackageId> = due.into_iter().map(|(_, id)| id).collect();

        for id in due {
            self.try_certify(id, &mut actions);
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            if pending.certified || self.now_ms < pending.resend_at_ms {
                continue;
            }
            pending.resend_at_ms = self.now_ms + self.config.resend_ms;
            let missing: Vec<MemberIndex> = self
                .committee
                .members()
                .filter(|m| !pending.acks.contains_key(m))
                .collect();
            let package = self.packages[&id].package.clone();
            for member in missing {
                actions.push(Action::Send {
                    to: member,
                    message: Message::Package(package.clone()),
                });
            }
        }
        actions
    }

    /// What executing a committed certificate needs: the package and its transaction ids (asking the ackers for
    /// it when missing), and whether its signatures must be verified here (an unattested certificate).
    pub fn executable(
        &mut self,
        cert: &AvailabilityCert,
    ) -> Result<(&Package, &[TxId], bool), Vec<Action>> {
        let attested = cert.attested(&self.committee);
        match self.packages.get(&cert.package) {
            Some(held) => Ok((&held.package, &held.tx_ids, !attested)),
            None => Err(cert
                .acks
                .iter()
                .filter(|a| a.signer != self.me)
                .map(|a| Action::Send {
                    to: a.signer,
                    message: Message::PackageRequest(cert.package),
                })
                .collect()),
        }
    }

    /// Verifies a package's signatures at execution (unattested certificates), counting the work.
    pub fn verify_for_execution(&mut self, id: &PackageId) -> Option<Vec<bool>> {
        let held = self.packages.get(id)?;
        self.stats.signatures_checked += held.package.txs.len() as u64;
        self.stats.signature_batches += 1;
        let verdicts = verify_owned_signatures(&held.package.txs, &held.tx_ids);
        Some(verdicts.iter().map(|v| v.is_ok()).collect())
    }
}
