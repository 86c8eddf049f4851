//! The netio thread: one OS thread running tokio's current-thread runtime, where quinn lives. Owns start-up
//! (the body reports readiness once its endpoints are bound) and shutdown (signal, then join). Never runs
//! application work: everything crosses to the rest of the node through bounded channels.

use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::NetError;

/// A running netio thread; dropping it shuts the thread down and joins it.
#[derive(Debug)]
pub(crate) struct IoThread {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl IoThread {
    /// Starts `body` on a new thread. The body sends its start-up result on `ready`, then serves until the
    /// shutdown receiver fires, then closes its endpoints and returns.
    pub(crate) fn start<T, F, Fut>(name: &str, body: F) -> Result<(IoThread, T), NetError>
    where
        T: Send + 'static,
        F: FnOnce(std_mpsc::Sender<Result<T, NetError>>, oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetError::Thread)?;
        let handle = runtime.handle().clone();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || runtime.block_on(body(ready_tx, shutdown_rx)))
            .map_err(NetError::Thread)?;
        let mut io_thread = IoThread {
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            runtime: handle,
        };
        match ready_rx.recv() {
            Ok(Ok(value)) => Ok((io_thread, value)),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                io_thread.stop();
                Err(NetError::Thread(std::io::Error::other(
                    "the netio thread ended during start-up",
                )))
            }
        }
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the netio thread panicked");
            }
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop();
    }
}
