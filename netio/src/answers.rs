//! The node's side of the answer path on the ingest endpoint: per client connection, a bounded queue that
//! `Node::answer` fills without waiting, and a writer that sends it in order on one node -> client stream opened
//! lazily. Owns the registry of connected clients; never interprets an answer and never waits on a slow client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use cas_engine::PublicKey;
use tokio::sync::mpsc;

use crate::error::SendError;
use crate::frame::{take_batch, write_frames, Class};
use crate::limits::{ANSWER_QUEUE_BYTES_MAX, ANSWER_QUEUE_MAX, CLIENT_ANSWER_PAYLOAD_BYTES_MAX};
use crate::node::close_code;

/// What `Node::answer` needs to reach one client connection.
struct ClientLink {
    connection: quinn::Connection,
    answers: mpsc::Sender<Bytes>,
    /// Payload bytes in `answers`, the queue's second bound ([`ANSWER_QUEUE_BYTES_MAX`]).
    queued_bytes: Arc<AtomicUsize>,
}

/// The connected clients, by the address their connection was accepted from (the `Origin::Client` address).
#[derive(Default)]
pub(crate) struct Clients {
    links: RwLock<HashMap<SocketAddr, ClientLink>>,
    /// Answers refused because a client's queue was full (each such client is disconnected).
    pub(crate) refused_full: AtomicU64,
    /// Answers written to a client's answer stream.
    pub(crate) sent: AtomicU64,
}

/// The writing half of one client's answer queue; runs on the netio thread for as long as the connection.
pub(crate) struct AnswerWriter {
    connection: quinn::Connection,
    answers: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    activity: Arc<Activity>,
}

/// When a client connection last did something (a frame received, answers written): its idle bound
/// (`IngestLimits::idle_timeout_ms`) counts from there. One relaxed store per event; the watchdog polls it.
#[derive(Debug)]
pub(crate) struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis().min(u64::MAX as u128) as u64
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Completes once nothing has happened for `idle_ms`.
    pub(crate) async fn idle(&self, idle_ms: u64) {
        loop {
            let due = self.last_ms.load(Ordering::Relaxed).saturating_add(idle_ms);
            let now = self.now_ms();
            if now >= due {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(due - now)).await;
        }
    }
}

impl Clients {
    /// Makes `connection` the one answers to `remote` go to. A previous connection from the same address (only
    /// possible after it migrated away) is closed: answers must never go to the wrong one.
    pub(crate) fn register(
        &self,
        remote: SocketAddr,
        connection: quinn::Connection,
        activity: Arc<Activity>,
    ) -> AnswerWriter {
        let (answers_tx, answers_rx) = mpsc::channel(ANSWER_QUEUE_MAX);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let link = ClientLink {
            connection: connection.clone(),
            answers: answers_tx,
            queued_bytes: queued_bytes.clone(),
        };
        let old = self
            .links
            .write()
            .expect("clients lock")
            .insert(remote, link);
        if let Some(old) = old {
            tracing::info!(%remote, "a newer client connection from the same address replaces the old one");
            old.connection.close(
                close_code::REPLACED.into(),
                b"replaced by a newer connection from this address",
            );
        }
        AnswerWriter {
            connection,
            answers: answers_rx,
            queued_bytes,
            activity,
        }
    }

    /// Forgets `remote` if it is still the connection `stable_id` (not a newer one from the same address); its
    /// queued answers are dropped with it.
    pub(crate) fn deregister(&self, remote: SocketAddr, stable_id: usize) -> bool {
        let mut links = self.links.write().expect("clients lock");
        if links
            .get(&remote)
            .is_some_and(|link| link.connection.stable_id() == stable_id)
        {
            links.remove(&remote);
            return true;
        }
        false
    }

    pub(crate) fn connected(&self) -> usize {
        self.links.read().expect("clients lock").len()
    }

    /// Queues `payload` for `client` without waiting. A full queue refuses it and disconnects the client (the
    /// policy of [`ANSWER_QUEUE_MAX`]).
    pub(crate) fn answer(&self, client: SocketAddr, payload: Bytes) -> Result<(), SendError> {
        let len = payload.len();
        let max = CLIENT_ANSWER_PAYLOAD_BYTES_MAX;
        if len > max {
            return Err(SendError::Oversize {
                class: Class::ClientAnswer,
                len,
                max,
            });
        }
        let full_connection = {
            let links = self.links.read().expect("clients lock");
            let link = links.get(&client).ok_or(SendError::UnknownClient(client))?;
            let queued_bytes = link.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
            let outcome = if queued_bytes > ANSWER_QUEUE_BYTES_MAX {
                Err(None)
            } else {
                link.answers.try_send(payload).map_err(Some)
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(Some(mpsc::error::TrySendError::Closed(_))) => {
                    // The writer ended with the connection; deregistering is a moment behind.
                    link.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    return Err(SendError::UnknownClient(client));
                }
                Err(None | Some(mpsc::error::TrySendError::Full(_))) => {
                    link.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    link.connection.clone()
                }
            }
        };
        self.refused_full.fetch_add(1, Ordering::Relaxed);
        // Closed before it is forgotten: forgetting ends its writer, which would otherwise close it first with a
        // less useful reason. A second close (a racing call) changes nothing.
        full_connection.close(
            close_code::SLOW_CLIENT.into(),
            b"answer queue full: the client does not read its answers",
        );
        if self.deregister(client, full_connection.stable_id()) {
            tracing::warn!(%client, "answer queue full: the client does not read its answers; disconnected it");
        }
        Err(SendError::QueueFull {
            peer: PublicKey::default(),
            class: Class::ClientAnswer,
        })
    }
}

impl AnswerWriter {
    /// Writes answers in order until the queue closes (the client was forgotten) or a write fails; returns why it
    /// stopped. The stream is opened with the first answer, so a client that is never answered costs none. When
    /// the queue closes, what it held is written, then the stream is finished and the client's acknowledgement
    /// awaited, so a connection closed right after (a refused client, `Node` drains it) still delivers it all.
    pub(crate) async fn run(mut self, sent: &AtomicU64) -> String {
        let mut stream: Option<quinn::SendStream> = None;
        let mut batch = Vec::new();
        loop {
            take_batch(&mut self.answers, &mut batch, Bytes::len).await;
            if batch.is_empty() {
                break;
            }
            let bytes: usize = batch.iter().map(Bytes::len).sum();
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            let send = match &mut stream {
                Some(send) => send,
                None => match self.connection.open_uni().await {
                    Ok(send) => stream.insert(send),
                    Err(error) => return format!("opening the answer stream: {error}"),
                },
            };
            let count = batch.len() as u64;
            let frames = batch
                .drain(..)
                .map(|payload| (Class::ClientAnswer, payload));
            if let Err(error) = write_frames(send, frames).await {
                return format!("writing an answer: {error}");
            }
            sent.fetch_add(count, Ordering::Relaxed);
            self.activity.touch();
        }
        if let Some(mut send) = stream {
            // Fails at once on a connection already closed; otherwise waits for the client to have it all.
            if send.finish().is_ok() {
                let _ = send.stopped().await;
            }
        }
        "the client was forgotten".to_string()
    }
}
