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

/// SIGTERM and SIGINT (Ctrl-C).
pub struct OsSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl OsSignals {
    pub fn new() -> Self {
        OsSignals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }
}

impl Default for OsSignals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals for OsSignals {
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                () = term => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
