//! What the simulator's drivers share: the event queue under virtual time, the simulated committee and its keys,
//! and the routing of messages, ticks and certificates into one member's real `Bft` and `Availability`. It owns
//! no network, clock or fault model: the fault runner ([`super::runner`]) and the scale model ([`super::scale`])
//! each bring their own.

use std::collections::BinaryHeap;

use cas_engine::fixtures::{key, COMMITTEE_KEYS};
use cas_engine::Keypair;

use crate::availability::Availability;
use crate::bft::{Bft, Event};
use crate::committee::{Committee, MemberIndex};
use crate::messages::{AvailabilityCert, Message};
use crate::Action;

/// The stake of every simulated member (equal stakes: thresholds are member counts).
pub const MEMBER_STAKE: u64 = 100;

/// The key of simulated member `index` (the fixtures' committee keys, the same in every run).
pub fn member_keypair(index: usize) -> Keypair {
    key(COMMITTEE_KEYS, index as u32)
}

/// A committee of `members` fixture keys with equal stakes.
pub fn simulated_committee(members: usize) -> Committee {
    Committee::new(
        (0..members)
            .map(|i| (member_keypair(i).public(), MEMBER_STAKE))
            .collect(),
    )
    .expect("the simulated committee is valid")
}

struct Queued<E> {
    at: u64,
    sequence: u64,
    event: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl<E> Eq for Queued<E> {}
impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Queued<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse, so the earliest (then the first queued) comes out first.
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

/// Events in virtual time (the unit is the driver's: ms for the fault runner, µs for the scale model). Events at
/// the same instant come out in the order they were queued, which is what makes a run replay exactly.
pub struct EventQueue<E> {
    heap: BinaryHeap<Queued<E>>,
    sequence: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            sequence: 0,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn push(&mut self, at: u64, event: E) {
        self.sequence += 1;
        self.heap.push(Queued {
            at,
            sequence: self.sequence,
            event,
        });
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|q| (q.at, q.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Hands a message to the state machine it belongs to: packages, acks, certificates and package requests to
/// availability, everything else to the BFT.
pub fn route_message(
    bft: &mut Bft,
    availability: &mut Availability,
    from: MemberIndex,
    message: Message,
    now_ms: u64,
) -> Vec<Action> {
    match message {
        Message::Package(_) | Message::Ack(_) | Message::Cert(_) | Message::PackageRequest(_) => {
            availability.handle(from, message, now_ms)
        }
        _ => bft.handle(Event::Message { from, message }),
    }
}

/// One timer tick of a member: the BFT's timeouts and waits, then availability's certification and re-sends.
pub fn tick(bft: &mut Bft, availability: &mut Availability, now_ms: u64) -> Vec<Action> {
    let mut actions = bft.handle(Event::Tick { now_ms });
    actions.extend(availability.on_tick(now_ms));
    actions
}

/// A certified package reaches the member's BFT payload pool; returns what that released (a waiting proposal).
pub fn offer_payload(bft: &mut Bft, cert: AvailabilityCert, verified: bool) -> Vec<Action> {
    bft.add_payload(cert, verified);
    bft.take_deferred()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pops_in_time_then_insertion_order() {
        let mut queue = EventQueue::default();
        queue.push(5, "c");
        queue.push(1, "a");
        queue.push(5, "d");
        queue.push(1, "b");
        let order: Vec<&str> = std::iter::from_fn(|| queue.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert!(queue.is_empty());
    }
}
