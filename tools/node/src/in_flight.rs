//! Client transactions admitted on this node and not yet handed to execution: whom each one's answers go to, and
//! how many each client and the whole node have in flight. Admission asks it first: a client over its share, or a
//! node over its whole, is answered `Overloaded` (with a retry-after) before any signature is checked, so a
//! client's answers waiting in netio stay within its answer queue and the node's backlog within what it can commit
//! in a few seconds. Entries never handed to execution (a package lost before certification) expire, so a leak
//! can never close admission for good. Never touches the network or the disk.

use std::collections::{HashMap, VecDeque};

use cas_engine::fasthash::FastMap;
use cas_engine::TxId;

use crate::clients::Client;

/// Transactions one client connection may have in flight on this node: each gets two answers (accepted, final),
/// which must fit the client's answer queue in netio with room for the answers to its refused submissions.
pub const IN_FLIGHT_PER_CLIENT_MAX: usize = cas_netio::limits::ANSWER_QUEUE_MAX / 4;
/// Transactions the node has in flight from all clients, unless its config says otherwise (`admission_in_flight_max`):
/// a few seconds of what a node commits on a small machine.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 20_000;
/// An admitted transaction not handed to execution after this long is forgotten (no answer will be sent for it).
pub const IN_FLIGHT_EXPIRY_MS: u64 = 120_000;
/// What an `Overloaded` answer tells the client to wait before submitting again.
pub const OVERLOADED_RETRY_AFTER_MS: u64 = 100;

const _: () =
    assert!(IN_FLIGHT_PER_CLIENT_MAX > 0 && IN_FLIGHT_PER_CLIENT_MAX <= IN_FLIGHT_MAX_DEFAULT);
const _: () = assert!(2 * IN_FLIGHT_PER_CLIENT_MAX < cas_netio::limits::ANSWER_QUEUE_MAX);

pub(crate) struct InFlight {
    /// The node's bound (see [`IN_FLIGHT_MAX_DEFAULT`]).
    max: usize,
    /// Each transaction's client and when it was admitted.
    by_tx: FastMap<TxId, (Client, u64)>,
    by_client: HashMap<Client, usize>,
    /// Admission order with times, for expiry; entries already removed are skipped when reached.
    order: VecDeque<(u64, TxId)>,
    /// Clients answered `Overloaded`, and until when everything they send is refused too: a refusal covers the
    /// whole retry-after, so a client's later transactions (which may spend the refused one's outputs) are never
    /// admitted ahead of it; the client sends them again, in order, after the pause.
    refused_until_ms: HashMap<Client, u64>,
}

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight {
            max: max.max(1),
            by_tx: FastMap::default(),
            by_client: HashMap::new(),
            order: VecDeque::new(),
            refused_until_ms: HashMap::new(),
        }
    }

    /// Whether a new transaction from `client` may be admitted now. When not, the client is refused everything
    /// for [`OVERLOADED_RETRY_AFTER_MS`] (see [`InFlight::refuse`]).
    pub fn admits(&mut self, client: &Client, now_ms: u64) -> bool {
        if self
            .refused_until_ms
            .get(client)
            .is_some_and(|until| now_ms < *until)
        {
            return false;
        }
        let admits = self.by_tx.len() < self.max
            && self.by_client.get(client).copied().unwrap_or(0) < IN_FLIGHT_PER_CLIENT_MAX;
        if !admits {
            self.refuse(*client, now_ms);
        }
        admits
    }

    /// Refuses everything from `client` for the retry-after (also when the Synchronizer's queue was full).
    pub fn refuse(&mut self, client: Client, now_ms: u64) {
        self.refused_until_ms
            .insert(client, now_ms + OVERLOADED_RETRY_AFTER_MS);
    }

    pub fn len(&self) -> usize {
        self.by_tx.len()
    }

    pub fn insert(&mut self, id: TxId, client: Client, now_ms: u64) {
        if let Some((previous, _)) = self.by_tx.insert(id, (client, now_ms)) {
            self.release(previous);
        }
        *self.by_client.entry(client).or_default() += 1;
        self.order.push_back((now_ms, id));
    }

    /// Where `id`'s answers go, while it is in flight.
    pub fn client_of(&self, id: &TxId) -> Option<Client> {
        self.by_tx.get(id).map(|(client, _)| *client)
    }

    /// Takes `id` out of flight (handed to execution), returning its client.
    /// Takes a transaction out (handed to execution); returns its client and when it was admitted.
    pub fn remove(&mut self, id: &TxId) -> Option<(Client, u64)> {
        let (client, admitted_ms) = self.by_tx.remove(id)?;
        self.release(client);
        Some((client, admitted_ms))
    }

    /// Forgets what was admitted before `now_ms - IN_FLIGHT_EXPIRY_MS` and is still here; drops the order's entries
    /// of transactions already gone. Returns those that expired.
    pub fn expire(&mut self, now_ms: u64) -> Vec<TxId> {
        let mut expired = Vec::new();
        while let Some(&(admitted_ms, id)) = self.order.front() {
            let gone = !self.by_tx.contains_key(&id);
            if !gone && admitted_ms + IN_FLIGHT_EXPIRY_MS > now_ms {
                break;
            }
            self.order.pop_front();
            if !gone {
                self.remove(&id);
                expired.push(id);
            }
        }
        self.refused_until_ms.retain(|_, until| *until > now_ms);
        // Removals out of admission order leave stale entries behind the front: compact once they dominate.
        if self.order.len() > 2 * self.by_tx.len() + 1_024 {
            let by_tx = &self.by_tx;
            self.order.retain(|(_, id)| by_tx.contains_key(id));
        }
        expired
    }

    fn release(&mut self, client: Client) {
        if let Some(count) = self.by_client.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.by_client.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> TxId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        cas_engine::Hash32(bytes)
    }

    #[test]
    fn a_client_over_its_share_is_refused_and_admitted_again_once_answered() {
        let (a, b) = (
            Client::Quic("127.0.0.1:1".parse().unwrap()),
            Client::Http("127.0.0.1:1".parse().unwrap()),
        );
        let mut in_flight = InFlight::new(IN_FLIGHT_MAX_DEFAULT);
        for n in 0..IN_FLIGHT_PER_CLIENT_MAX as u32 {
            assert!(in_flight.admits(&a, 0));
            in_flight.insert(id(n), a, 0);
        }
        assert!(!in_flight.admits(&a, 0), "a is at its share");
        assert!(in_flight.admits(&b, 0), "b is not held back by a");
        assert_eq!(in_flight.remove(&id(3)), Some((a, 0)));
        // Room again, but a refusal covers its whole retry-after: nothing of a's overtakes the refused one.
        assert!(!in_flight.admits(&a, OVERLOADED_RETRY_AFTER_MS - 1));
        assert!(in_flight.admits(&a, OVERLOADED_RETRY_AFTER_MS));
        assert_eq!(in_flight.client_of(&id(4)), Some(a));
        assert_eq!(in_flight.remove(&id(3)), None, "removed once");
    }

    #[test]
    fn what_is_never_executed_expires_and_the_order_stays_bounded() {
        let a = Client::Quic("127.0.0.1:1".parse().unwrap());
        let mut in_flight = InFlight::new(IN_FLIGHT_MAX_DEFAULT);
        for n in 0..10 {
            in_flight.insert(id(n), a, u64::from(n));
        }
        for n in 0..5 {
            in_flight.remove(&id(n * 2));
        }
        assert_eq!(
            in_flight.expire(IN_FLIGHT_EXPIRY_MS + 4),
            vec![id(1), id(3)],
            "ids 1 and 3"
        );
        assert_eq!(in_flight.len(), 3);
        assert_eq!(in_flight.client_of(&id(1)), None);
        assert_eq!(in_flight.client_of(&id(5)), Some(a));
        // Many admitted and answered out of order: the order queue does not keep them all.
        for n in 100..20_000 {
            in_flight.insert(id(n), a, 10);
            in_flight.remove(&id(n));
        }
        in_flight.expire(11);
        assert!(in_flight.order.len() <= 2 * in_flight.len() + 1_024);
    }
}
