//! Per-peer bookkeeping: the counters the metrics layer will read (bytes, messages, RTT, reconnects, refusals)
//! and the capped exponential backoff between connection attempts. Plain data and atomics; no IO.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cas_engine::PublicKey;

use crate::limits::{BACKOFF_INITIAL_MS, BACKOFF_MAX_MS};

/// Counters of one peer, updated by the netio thread and read from anywhere.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Sessions established after the first one.
    pub reconnects: AtomicU64,
    /// Failed dials or refused handshakes.
    pub connect_failures: AtomicU64,
    /// Messages refused by a full outgoing queue (the sender was told).
    pub queue_full: AtomicU64,
    /// Messages taken from the queue whose write failed because the connection was lost.
    pub lost_on_disconnect: AtomicU64,
    /// Connections closed because the peer sent a bad frame.
    pub bad_frames: AtomicU64,
    /// Last sampled round-trip time in microseconds (0 before the first sample).
    pub rtt_us: AtomicU64,
    sessions: AtomicU64,
    connected: AtomicBool,
}

impl PeerCounters {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a new session; every session after the first is a reconnect.
    pub(crate) fn session_started(&self) {
        if self.sessions.fetch_add(1, Ordering::Relaxed) > 0 {
            Self::add(&self.reconnects, 1);
        }
        self.connected.store(true, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    pub fn snapshot(&self, key: PublicKey) -> PeerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerStats {
            key,
            connected: self.connected.load(Ordering::Relaxed),
            bytes_sent: load(&self.bytes_sent),
            bytes_received: load(&self.bytes_received),
            messages_sent: load(&self.messages_sent),
            messages_received: load(&self.messages_received),
            reconnects: load(&self.reconnects),
            connect_failures: load(&self.connect_failures),
            queue_full: load(&self.queue_full),
            lost_on_disconnect: load(&self.lost_on_disconnect),
            bad_frames: load(&self.bad_frames),
            rtt: Duration::from_micros(load(&self.rtt_us)),
        }
    }
}

/// A copy of one peer's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub key: PublicKey,
    pub connected: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub queue_full: u64,
    pub lost_on_disconnect: u64,
    pub bad_frames: u64,
    pub rtt: Duration,
}

/// Capped exponential backoff: 50 ms, 100 ms, ... up to [`BACKOFF_MAX_MS`]; reset by a successful session.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next_ms: BACKOFF_INITIAL_MS,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt; doubles the one after, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(BACKOFF_MAX_MS);
        debug_assert!(delay <= BACKOFF_MAX_MS);
        Duration::from_millis(delay)
    }

    pub fn reset(&mut self) {
        self.next_ms = BACKOFF_INITIAL_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..10)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(50));
    }

    #[test]
    fn reconnects_count_sessions_after_the_first() {
        let counters = PeerCounters::default();
        let key = PublicKey([1; 32]);
        assert_eq!(counters.snapshot(key).reconnects, 0);
        counters.session_started();
        assert!(counters.snapshot(key).connected);
        assert_eq!(counters.snapshot(key).reconnects, 0);
        counters.session_ended();
        counters.session_started();
        assert_eq!(counters.snapshot(key).reconnects, 1);
    }
}
