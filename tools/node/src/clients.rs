//! Who a client transaction's answers go to: a client of the QUIC ingest endpoint (by its connection's address) or
//! a request on the HTTP API ([`crate::api`], by its TCP peer's address). Admission and the executor answer both the
//! same way, through [`Clients::answer`]; the per-client in-flight bounds ([`crate::in_flight`]) count each
//! connection of either kind on its own.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cas_engine::client::ClientAnswer;

use crate::api::Waiters;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    Quic(SocketAddr),
    Http(SocketAddr),
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Quic(addr) => write!(f, "quic {addr}"),
            Client::Http(addr) => write!(f, "http {addr}"),
        }
    }
}

/// Delivers answers: QUIC clients' through netio's answer queues, HTTP requests' to the request waiting for its
/// transaction (by tx id; a request that gave up gets nothing, and nothing waits on it).
#[derive(Clone)]
pub struct Clients {
    netio: Arc<cas_netio::Node>,
    waiters: Arc<Waiters>,
}

impl Clients {
    pub(crate) fn new(netio: Arc<cas_netio::Node>, waiters: Arc<Waiters>) -> Clients {
        Clients { netio, waiters }
    }

    pub fn answer(&self, client: Client, answer: ClientAnswer) {
        self.answer_for(client, None, answer)
    }

    /// [`Clients::answer`] for an answer that names another transaction than the one `client` submitted
    /// (`submitted`): a `Duplicate` of a client id names the first transaction that used it.
    pub fn answer_for(
        &self,
        client: Client,
        submitted: Option<cas_engine::TxId>,
        answer: ClientAnswer,
    ) {
        match client {
            Client::Quic(addr) => {
                // A client that left, or that does not read its answers, loses them; the ledger is unaffected.
                if let Err(error) = self.netio.answer(addr, Bytes::from(answer.encode())) {
                    tracing::debug!(%addr, %error, "answer not delivered");
                }
            }
            Client::Http(_) => self.waiters.deliver_for(submitted, answer),
        }
    }
}
