//! The client side of the ingest endpoint, for wallets, load generators and business APIs: no node key, checks
//! the node's key, and sends client transactions on one stream through a bounded queue (a full queue blocks
//! `submit`: back-pressure to the client, never a drop). Runs its own netio thread.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use cas_engine::PublicKey;
use tokio::sync::mpsc;

use crate::error::{NetError, SendError};
use crate::frame::{write_frame, Class};
use crate::identity;
use crate::limits::{CLIENT_QUEUE_MAX, CONNECT_TIMEOUT_MS, FLUSH_WAIT_MS, SHUTDOWN_WAIT_MS};
use crate::thread::IoThread;

/// A connection to one node's ingest endpoint. Dropping it closes at once; [`IngestClient::finish`] first waits
/// until the node has read everything queued.
pub struct IngestClient {
    queue: Option<mpsc::Sender<Bytes>>,
    local_addr: SocketAddr,
    io: IoThread,
}

impl IngestClient {
    /// Connects to the ingest endpoint at `addr`, which must present `node_key`.
    pub fn connect(addr: SocketAddr, node_key: PublicKey) -> Result<IngestClient, NetError> {
        let config = identity::ingest_client_config(node_key)?;
        let (queue_tx, mut queue_rx) = mpsc::channel::<Bytes>(CLIENT_QUEUE_MAX);
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let (io, local_addr) =
            IoThread::start("cas-netio-client", move |ready, shutdown| async move {
                let endpoint = match quinn::Endpoint::client(bind) {
                    Ok(endpoint) => endpoint,
                    Err(source) => {
                        let _ = ready.send(Err(NetError::Bind { addr: bind, source }));
                        return;
                    }
                };
                let connect = |reason: String| NetError::Connect { addr, reason };
                let connection = match endpoint.connect_with(config, addr, identity::SERVER_NAME) {
                    Ok(connecting) => {
                        let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
                        match tokio::time::timeout(timeout, connecting).await {
                            Ok(Ok(connection)) => connection,
                            Ok(Err(error)) => {
                                return drop(ready.send(Err(connect(error.to_string()))))
                            }
                            Err(_) => {
                                return drop(ready.send(Err(connect("handshake timed out".into()))))
                            }
                        }
                    }
                    Err(error) => return drop(ready.send(Err(connect(error.to_string())))),
                };
                let mut send = match connection.open_uni().await {
                    Ok(send) => send,
                    Err(error) => return drop(ready.send(Err(connect(error.to_string())))),
                };
                let local_addr = endpoint
                    .local_addr()
                    .expect("a bound endpoint has an address");
                let _ = ready.send(Ok(local_addr));
                let writer = async {
                    while let Some(payload) = queue_rx.recv().await {
                        if let Err(error) = write_frame(&mut send, Class::ClientTx, payload).await {
                            tracing::warn!(%addr, %error, "ingest connection lost");
                            return;
                        }
                    }
                    // The queue closed: finish the stream and wait until the node has read it all.
                    let _ = send.finish();
                    let flush = Duration::from_millis(FLUSH_WAIT_MS);
                    let _ = tokio::time::timeout(flush, send.stopped()).await;
                };
                tokio::select! {
                    () = writer => {}
                    _ = shutdown => {}
                }
                connection.close(0u32.into(), b"client done");
                let _ = tokio::time::timeout(
                    Duration::from_millis(SHUTDOWN_WAIT_MS),
                    endpoint.wait_idle(),
                )
                .await;
            })?;
        Ok(IngestClient {
            queue: Some(queue_tx),
            local_addr,
            io,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn check(payload: &Bytes) -> Result<(), SendError> {
        let max = Class::ClientTx.payload_bytes_max();
        if payload.len() > max {
            return Err(SendError::Oversize {
                class: Class::ClientTx,
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Queues a transaction, waiting while the queue is full (from a plain thread, not inside a runtime).
    pub fn submit(&self, payload: Bytes) -> Result<(), SendError> {
        Self::check(&payload)?;
        let queue = self.queue.as_ref().ok_or(SendError::Closed)?;
        queue.blocking_send(payload).map_err(|_| SendError::Closed)
    }

    /// Queues a transaction if there is room.
    pub fn try_submit(&self, payload: Bytes) -> Result<(), SendError> {
        Self::check(&payload)?;
        let queue = self.queue.as_ref().ok_or(SendError::Closed)?;
        queue.try_send(payload).map_err(|error| match error {
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
        self.io.join_body();
    }
}
