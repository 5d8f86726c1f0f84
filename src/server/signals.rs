//! What stops the daemon: the first stop drains, a second one during the
//! drain exits at once (DESIGN §8). The binary uses SIGTERM / SIGINT;
//! tests and embedders pass a future or a channel.

use std::future::Future;

use tokio::sync::mpsc;

/// A source of stop requests.
pub trait Signals: Send {
    /// Resolves at the next stop request; pending forever once there are no more.
    fn next(&mut self) -> impl Future<Output = ()> + Send;
}

/// One stop: when the future completes. No second stop ever comes.
pub struct Once<F>(Option<F>);

impl<F> Once<F> {
    pub fn new(stop: F) -> Self {
        Once(Some(stop))
    }
}

impl<F: Future<Output = ()> + Send> Signals for Once<F> {
    async fn next(&mut self) {
        match self.0.take() {
            Some(stop) => stop.await,
            None => std::future::pending().await,
        }
    }
}

/// Each message is a stop; a closed channel sends no more.
impl Signals for mpsc::Receiver<()> {
    async fn next(&mut self) {
        if self.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C). Both are registered when this is made, so
/// a signal that arrives between two [`Signals::next`] calls is not lost.
pub struct OsSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl OsSignals {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            OsSignals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        OsSignals {}
    }
}

impl Default for OsSignals {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl Signals for OsSignals {
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            () = recv(&mut self.int) => tracing::info!("SIGINT received"),
            () = recv(&mut self.term) => tracing::info!("SIGTERM received"),
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
