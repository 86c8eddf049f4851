//! The client side of the ingest endpoint, for wallets, load generators and business APIs: no node key, checks
//! the node's key, and sends client transactions on one stream through a bounded queue (a full queue blocks
//! `submit`: back-pressure to the client, never a drop). Receives the node's answers on the one node -> client
//! stream into a bounded inbox (full: reading stops, flow control holds the node back), in batches: every answer
//! that one read brought in moves to the client's thread together ([`IngestClient::recv_answers`]). Runs on a netio
//! thread of its own, or one shared by the clients connected together ([`IngestClient::connect_all`]).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cas_engine::PublicKey;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{FrameError, NetError, SendError};
use crate::frame::{take_batch, write_frames, Class, FrameReader};
use crate::identity;
use crate::limits::{
    CLIENT_ANSWER_INBOX_MAX, CLIENT_BATCH_TXS_MAX, CLIENT_QUEUE_MAX, CONNECT_TIMEOUT_MS,
    FLUSH_WAIT_MS, SHUTDOWN_WAIT_MS,
};
use crate::node::close_code;
use crate::thread::IoThread;

/// A connection to one node's ingest endpoint. Dropping it closes at once; [`IngestClient::finish`] first waits
/// until the node has read everything queued. Answers arrive in the order the node queued them, through
/// [`IngestClient::recv_answer`] and [`IngestClient::try_recv_answer`]; read them while submitting, since a
/// client that leaves [`CLIENT_ANSWER_INBOX_MAX`] answers unread stalls its answer stream and, once the node's
/// queue for it is full too, is disconnected by the node (see `limits::ANSWER_QUEUE_MAX`).
pub struct IngestClient {
    /// Submissions waiting for the writer: each one or several frames, sent together.
    queue: Option<mpsc::Sender<Vec<(Class, Bytes)>>>,
    /// Answers received, in the batches the reader cut them in, bounded by `inbox_room`'s permits: the reader
    /// takes one per answer, the client gives a batch's back as it takes the batch out of the channel (into
    /// `Inbox::taken`, at most one batch). A std channel so a plain thread can wait with a timeout even after the
    /// netio thread has ended.
    inbox: Mutex<Inbox>,
    inbox_room: Arc<Semaphore>,
    /// Why the connection ended, once it has.
    lost: Arc<Mutex<Option<String>>>,
    node_addr: SocketAddr,
    local_addr: SocketAddr,
    /// Dropped (with the client) to close the connection at once.
    close: Option<oneshot::Sender<()>>,
    /// Disconnected when the connection's task has ended.
    ended: Mutex<std_mpsc::Receiver<()>>,
    /// The netio thread, shared by the clients [`IngestClient::connect_all`] made together: held, never read, so
    /// it stops with the last of them.
    _io: Arc<IoThread>,
}

impl IngestClient {
    /// Connects to the ingest endpoint at `addr`, which must present `node_key`, on a netio thread of its own.
    pub fn connect(addr: SocketAddr, node_key: PublicKey) -> Result<IngestClient, NetError> {
        let mut clients = Self::connect_all(&[(addr, node_key)])?;
        Ok(clients.pop().expect("one client per target"))
    }

    /// Connects to every `(address, node key)` in `targets`, all on one netio thread, so a client of many nodes
    /// (a load generator) pays for one thread's wake-ups instead of one per connection. Connections to distinct
    /// nodes share one UDP endpoint; the same target repeated gets another endpoint per repeat (a node tells its
    /// clients apart by address). Connections are made one after another; the first that fails fails the call.
    pub fn connect_all(targets: &[(SocketAddr, PublicKey)]) -> Result<Vec<IngestClient>, NetError> {
        let endpoints: Arc<Mutex<Vec<quinn::Endpoint>>> = Arc::default();
        let kept = endpoints.clone();
        let (io, ()) = IoThread::start("cas-netio-client", move |ready, shutdown| async move {
            let _ = ready.send(Ok(()));
            let _ = shutdown.await;
            // Each client closed its connection when dropped or finished; give the close frames time to leave.
            let endpoints = std::mem::take(&mut *kept.lock().expect("endpoints lock"));
            let idle = all_idle(&endpoints);
            let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_WAIT_MS), idle).await;
        })?;
        let io = Arc::new(io);
        let mut clients = Vec::with_capacity(targets.len());
        for (index, (addr, node_key)) in targets.iter().enumerate() {
            let repeat = targets[..index].iter().filter(|(a, _)| a == addr).count();
            let mut endpoints = endpoints.lock().expect("endpoints lock");
            if repeat == endpoints.len() {
                let bind: SocketAddr = if addr.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                // Inside the runtime's context: quinn spawns the endpoint's driver on it.
                let _context = io.runtime.enter();
                let endpoint = identity::endpoint(bind, None)
                    .map_err(|source| NetError::Bind { addr: bind, source })?;
                endpoints.push(endpoint);
            }
            let endpoint = endpoints[repeat].clone();
            drop(endpoints);
            clients.push(Self::open(&io, endpoint, *addr, *node_key)?);
        }
        Ok(clients)
    }

    /// Opens one connection on `endpoint`, whose task runs on `io`'s thread.
    fn open(
        io: &Arc<IoThread>,
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        node_key: PublicKey,
    ) -> Result<IngestClient, NetError> {
        let local_addr = endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: (Ipv4Addr::UNSPECIFIED, 0).into(),
            source,
        })?;
        let config = identity::ingest_client_config(node_key)?;
        let (queue_tx, queue_rx) = mpsc::channel::<Vec<(Class, Bytes)>>(CLIENT_QUEUE_MAX);
        let (inbox_tx, inbox_rx) = std_mpsc::channel::<Arrived>();
        let inbox_room = Arc::new(Semaphore::new(CLIENT_ANSWER_INBOX_MAX));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let (close_tx, close_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), NetError>>();
        let (ended_tx, ended_rx) = std_mpsc::channel::<()>();
        let task = Connection {
            addr,
            queue: queue_rx,
            inbox: inbox_tx,
            room: inbox_room.clone(),
            lost: lost.clone(),
        };
        io.runtime.spawn(async move {
            // Inside the runtime: quinn spawns the connection's driver on it.
            let connecting = endpoint
                .connect_with(config, addr, identity::SERVER_NAME)
                .map_err(|error| error.to_string());
            task.run(connecting, ready_tx, close_rx).await;
            drop(ended_tx);
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(NetError::Connect {
                    addr,
                    reason: "the netio thread ended".to_string(),
                })
            }
        }
        Ok(IngestClient {
            queue: Some(queue_tx),
            inbox: Mutex::new(Inbox {
                batches: inbox_rx,
                taken: VecDeque::new(),
            }),
            inbox_room,
            lost,
            node_addr: addr,
            local_addr,
            close: Some(close_tx),
            ended: Mutex::new(ended_rx),
            _io: io.clone(),
        })
    }

    /// The next answer from the node, waiting up to `timeout` (from a plain thread, not inside a runtime):
    /// `Ok(None)` if none came in time. Once the connection has ended and every answer received before is
    /// taken, [`NetError::ConnectionLost`] with the reason (e.g. the node's close reason).
    pub fn recv_answer(&self, timeout: Duration) -> Result<Option<Bytes>, NetError> {
        let mut inbox = self.inbox.lock().expect("inbox lock");
        self.refill(&mut inbox, Some(timeout))?;
        Ok(inbox.taken.pop_front().map(|(_, answer)| answer))
    }

    /// The next answer if one has arrived: `Ok(None)` if none has; [`NetError::ConnectionLost`] as for
    /// [`IngestClient::recv_answer`].
    pub fn try_recv_answer(&self) -> Result<Option<Bytes>, NetError> {
        let mut inbox = self.inbox.lock().expect("inbox lock");
        self.refill(&mut inbox, None)?;
        Ok(inbox.taken.pop_front().map(|(_, answer)| answer))
    }

    /// Every answer that has arrived, in order, waiting up to `timeout` for the first: empty if none came in time;
    /// [`NetError::ConnectionLost`] as for [`IngestClient::recv_answer`]. For a client that reads answers in bulk
    /// (a load generator): one wake and one lock per batch the netio thread handed over, not per answer.
    pub fn recv_answers(&self, timeout: Duration) -> Result<Vec<Bytes>, NetError> {
        Ok(self
            .recv_answers_timed(timeout)?
            .into_iter()
            .map(|(_, answer)| answer)
            .collect())
    }

    /// [`IngestClient::recv_answers`], each answer with when the netio thread read it off the stream: a client
    /// that measures latency can poll rarely (fewer wakes) without its pauses counting as latency.
    pub fn recv_answers_timed(&self, timeout: Duration) -> Result<Vec<(Instant, Bytes)>, NetError> {
        let mut inbox = self.inbox.lock().expect("inbox lock");
        self.refill(&mut inbox, Some(timeout))?;
        // What else has arrived comes along.
        while inbox.taken.len() < CLIENT_ANSWER_INBOX_MAX {
            let Ok(batch) = inbox.batches.try_recv() else {
                break;
            };
            self.take(&mut inbox, batch);
        }
        Ok(inbox.taken.drain(..).collect())
    }

    /// When `taken` is empty, moves the next batch into it, waiting up to `timeout` for one (`None`: not at all);
    /// `taken` stays empty if none came. [`NetError::ConnectionLost`] once the connection has ended and nothing is
    /// left.
    fn refill(&self, inbox: &mut Inbox, timeout: Option<Duration>) -> Result<(), NetError> {
        if !inbox.taken.is_empty() {
            return Ok(());
        }
        let batch = match timeout {
            Some(timeout) => inbox
                .batches
                .recv_timeout(timeout)
                .map_err(|error| match error {
                    std_mpsc::RecvTimeoutError::Timeout => None,
                    std_mpsc::RecvTimeoutError::Disconnected => Some(self.lost_error()),
                }),
            None => inbox.batches.try_recv().map_err(|error| match error {
                std_mpsc::TryRecvError::Empty => None,
                std_mpsc::TryRecvError::Disconnected => Some(self.lost_error()),
            }),
        };
        match batch {
            Ok(batch) => self.take(inbox, batch),
            Err(None) => {}
            Err(Some(lost)) => return Err(lost),
        }
        Ok(())
    }

    /// Moves a batch out of the channel into `taken`: room for as many answers in the inbox again.
    fn take(&self, inbox: &mut Inbox, (arrived, batch): Arrived) {
        self.inbox_room.add_permits(batch.len());
        inbox
            .taken
            .extend(batch.into_iter().map(|answer| (arrived, answer)));
    }

    fn lost_error(&self) -> NetError {
        let reason = self.lost.lock().expect("lost lock").clone();
        NetError::ConnectionLost {
            addr: self.node_addr,
            reason: reason.unwrap_or_else(|| "the connection ended".to_string()),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn check(class: Class, payload: &Bytes) -> Result<(), SendError> {
        debug_assert!(Class::FROM_CLIENTS.contains(&class));
        let max = class.payload_bytes_max();
        if payload.len() > max {
            return Err(SendError::Oversize {
                class,
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Queues a transaction, waiting while the queue is full (from a plain thread, not inside a runtime).
    pub fn submit(&self, payload: Bytes) -> Result<(), SendError> {
        self.submit_class(Class::ClientTx, payload)
    }

    /// Queues a mining request ([`Class::Mining`]), waiting while the queue is full.
    pub fn submit_mining(&self, payload: Bytes) -> Result<(), SendError> {
        self.submit_class(Class::Mining, payload)
    }

    fn submit_class(&self, class: Class, payload: Bytes) -> Result<(), SendError> {
        Self::check(class, &payload)?;
        let queue = self.queue.as_ref().ok_or(SendError::Closed)?;
        queue
            .blocking_send(vec![(class, payload)])
            .map_err(|_| SendError::Closed)
    }

    /// Queues several transactions to leave together (one wake of the netio thread, one stream write), waiting
    /// while the queue is full (from a plain thread). At most [`CLIENT_BATCH_TXS_MAX`] go in one queue entry;
    /// more are split. All are checked before any is queued.
    pub fn submit_batch(&self, payloads: Vec<Bytes>) -> Result<(), SendError> {
        for payload in &payloads {
            Self::check(Class::ClientTx, payload)?;
        }
        let queue = self.queue.as_ref().ok_or(SendError::Closed)?;
        let mut frames = payloads
            .into_iter()
            .map(|payload| (Class::ClientTx, payload));
        loop {
            let entry: Vec<(Class, Bytes)> = frames.by_ref().take(CLIENT_BATCH_TXS_MAX).collect();
            if entry.is_empty() {
                return Ok(());
            }
            queue.blocking_send(entry).map_err(|_| SendError::Closed)?;
        }
    }

    /// Queues a transaction if there is room.
    pub fn try_submit(&self, payload: Bytes) -> Result<(), SendError> {
        Self::check(Class::ClientTx, &payload)?;
        let queue = self.queue.as_ref().ok_or(SendError::Closed)?;
        queue
            .try_send(vec![(Class::ClientTx, payload)])
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull {
                    peer: PublicKey::default(),
                    class: Class::ClientTx,
                },
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// Sends everything queued, waits until the node has read it (or the connection is lost), then closes.
    pub fn finish(mut self) {
        self.queue = None;
        let _ = self.ended.lock().expect("ended lock").recv();
    }
}

impl Drop for IngestClient {
    fn drop(&mut self) {
        // Close at once (the task answers the signal), before the netio thread may stop with the last client.
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let ended = self.ended.lock().expect("ended lock");
        let _ = ended.recv_timeout(Duration::from_millis(SHUTDOWN_WAIT_MS));
    }
}

/// One connection's task on the shared netio thread: connects, then writes the client's queue to its stream and
/// reads the node's answers into the inbox until the client finishes or closes, or the connection ends.
struct Connection {
    addr: SocketAddr,
    queue: mpsc::Receiver<Vec<(Class, Bytes)>>,
    inbox: std_mpsc::Sender<Arrived>,
    room: Arc<Semaphore>,
    lost: Arc<Mutex<Option<String>>>,
}

/// The client's end of its answer inbox.
struct Inbox {
    batches: std_mpsc::Receiver<Arrived>,
    /// Answers out of the channel not returned yet (at most one batch between calls), with their arrival.
    taken: VecDeque<(Instant, Bytes)>,
}

/// A batch of answers as the reader cut it, with when its first answer was read off the stream.
type Arrived = (Instant, Vec<Bytes>);

/// Answers the reader hands over in one batch at most: every whole frame one read brought in, up to this.
const ANSWER_BATCH_MAX: usize = 1024;
const _: () = assert!(ANSWER_BATCH_MAX <= CLIENT_ANSWER_INBOX_MAX);

impl Connection {
    async fn run(
        self,
        connecting: Result<quinn::Connecting, String>,
        ready: std_mpsc::Sender<Result<(), NetError>>,
        close: oneshot::Receiver<()>,
    ) {
        let Connection {
            addr,
            mut queue,
            inbox,
            room,
            lost,
        } = self;
        let connect = |reason: String| NetError::Connect { addr, reason };
        let connection = match connecting {
            Ok(connecting) => {
                let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
                match tokio::time::timeout(timeout, connecting).await {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => return drop(ready.send(Err(connect(error.to_string())))),
                    Err(_) => return drop(ready.send(Err(connect("handshake timed out".into())))),
                }
            }
            Err(reason) => return drop(ready.send(Err(connect(reason)))),
        };
        let mut send = match connection.open_uni().await {
            Ok(send) => send,
            Err(error) => return drop(ready.send(Err(connect(error.to_string())))),
        };
        let _ = ready.send(Ok(()));
        // The reader only borrows the inbox's sender: it is dropped below, after the queue and the reason, so a
        // receiver that sees the inbox end finds `submit` closed and the reason recorded.
        let reader = async {
            read_answers(connection.clone(), &inbox, room, lost.clone()).await;
            // A reader that stops has closed the connection or seen it end: `closed()` below fires.
            std::future::pending::<()>().await
        };
        let writer = async {
            // What the client queued while the last write went out leaves in one write.
            let mut batch = Vec::new();
            loop {
                take_batch(&mut queue, &mut batch, |frames: &Vec<(Class, Bytes)>| {
                    frames.iter().map(|(_, payload)| payload.len()).sum()
                })
                .await;
                if batch.is_empty() {
                    break;
                }
                if let Err(error) = write_frames(&mut send, batch.drain(..).flatten()).await {
                    // The node stopped reading (it refused a frame) or the connection is gone. Either way the
                    // connection's end says why, and answers the node still sends before it closes are received
                    // meanwhile; `submit` waits, then answers `Closed`.
                    tracing::warn!(%addr, %error, "ingest stream refused or lost");
                    return std::future::pending::<()>().await;
                }
            }
            // The queue closed: finish the stream and wait until the node has read it all.
            let _ = send.finish();
            let flush = Duration::from_millis(FLUSH_WAIT_MS);
            let _ = tokio::time::timeout(flush, send.stopped()).await;
        };
        let end = tokio::select! {
            () = writer => "the client finished".to_string(),
            _ = close => "the client closed".to_string(),
            error = connection.closed() => error.to_string(),
            () = reader => unreachable!("the reader never completes"),
        };
        note_lost(&lost, end);
        // `submit` answers `Closed` from now on, then receivers see the inbox end.
        drop(queue);
        drop(inbox);
        connection.close(close_code::SHUTDOWN.into(), b"client done");
    }
}

/// Waits until every endpoint has no connection left (their close frames sent).
async fn all_idle(endpoints: &[quinn::Endpoint]) {
    for endpoint in endpoints {
        endpoint.wait_idle().await;
    }
}

/// Records the first reason the connection ended; later ones are consequences.
fn note_lost(lost: &Mutex<Option<String>>, reason: String) {
    lost.lock().expect("lost lock").get_or_insert(reason);
}

/// Reads the node's answer stream into the inbox, waiting for room when it is full: each answer read and every
/// whole one already buffered behind it go as one batch (one send, one wake of the client). Any frame but a
/// [`Class::ClientAnswer`] within its limit, or a second answer stream, closes the connection as a bad frame.
async fn read_answers(
    connection: quinn::Connection,
    inbox: &std_mpsc::Sender<Arrived>,
    room: Arc<Semaphore>,
    lost: Arc<Mutex<Option<String>>>,
) {
    let refuse = |error: FrameError| {
        let reason = error.to_string();
        tracing::warn!(node = %connection.remote_address(), %reason, "closing the ingest connection: bad frame");
        note_lost(&lost, format!("refused a frame from the node: {reason}"));
        connection.close(close_code::BAD_FRAME.into(), reason.as_bytes());
    };
    let mut frames = match connection.accept_uni().await {
        Ok(recv) => FrameReader::new(recv),
        Err(error) => return note_lost(&lost, error.to_string()),
    };
    let check = |class: Class| match class {
        Class::ClientAnswer => Ok(()),
        class => Err(FrameError::WrongLane {
            class,
            lane: "answer stream from the node",
        }),
    };
    let read = async {
        loop {
            let mut batch = match frames.next(None, check).await {
                Ok(Some((_, answer))) => vec![answer],
                // The node ends its answer stream only right before it closes the connection (after sending
                // what it owed, e.g. when it refused a frame of ours): the close says why.
                Ok(None) => return,
                Err(FrameError::Read(reason)) => {
                    // The connection's own error says why (e.g. the node's close reason); the read's does not.
                    let why = connection.close_reason().map(|error| error.to_string());
                    return note_lost(&lost, why.unwrap_or(reason));
                }
                Err(error) => return refuse(error),
            };
            let arrived = Instant::now();
            let mut bad = None;
            while batch.len() < ANSWER_BATCH_MAX {
                match frames.next_buffered(check) {
                    Some(Ok((_, answer))) => batch.push(answer),
                    Some(Err(error)) => {
                        bad = Some(error);
                        break;
                    }
                    None => break,
                }
            }
            let Ok(permits) = room.acquire_many(batch.len() as u32).await else {
                return;
            };
            permits.forget();
            if inbox.send((arrived, batch)).is_err() {
                return; // The client is gone.
            }
            // The answers before a bad frame are delivered, as they would be one by one.
            if let Some(error) = bad {
                return refuse(error);
            }
        }
    };
    // A second stream from the node breaks the protocol; the connection ending is the reader's to notice.
    let second_stream = async {
        if connection.accept_uni().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = read => {}
        () = second_stream => refuse(FrameError::WrongLane {
            class: Class::ClientAnswer,
            lane: "second answer stream (one per connection)",
        }),
    }
}
