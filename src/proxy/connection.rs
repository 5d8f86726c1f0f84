//! One client connection as the request path sees it: who is on the other
//! end, and whether a request is in flight, so the server can close it when
//! it idles (header timeout, connection pressure) or drains.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Shared by the server's connection task and every request on it.
#[derive(Debug)]
pub struct Connection {
    peer: Option<SocketAddr>,
    /// `peer` as the access log writes it (`local` without one), made once
    /// per connection rather than per request.
    client: Box<str>,
    opened: Instant,
    in_flight: AtomicUsize,
    served: AtomicU64,
    /// When the connection last had no request in flight: nanoseconds after `opened`.
    idle_since: AtomicU64,
    /// A WebSocket spliced onto this connection after its handshake.
    tunnel: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Connection {
    pub fn new(peer: Option<SocketAddr>) -> Self {
        Connection {
            peer,
            client: peer.map_or_else(|| "local".into(), |p| p.to_string().into()),
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            tunnel: std::sync::Mutex::new(None),
        }
    }

    /// The client's address (`None` for a Unix socket or an in-process caller).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client as the access log names it: its address, or `local`.
    pub fn client_label(&self) -> &str {
        &self.client
    }

    /// Requests whose response body has ended on this connection.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Hands the connection to a spliced WebSocket (see `proxy::upgrade`).
    pub(crate) fn set_tunnel(&self, task: tokio::task::JoinHandle<()>) {
        *self
            .tunnel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// The spliced WebSocket, once HTTP is over on this connection.
    pub fn take_tunnel(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.tunnel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// True when no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Called once per request, when its response body ends or is dropped.
    pub(crate) fn request_finished(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let nanos = self.opened.elapsed().as_nanos() as u64;
            self.idle_since.store(nanos, Ordering::Release);
        }
    }

    /// Resolves once the connection has had no request in flight for `idle`
    /// (counting from when it opened, or from the end of its last response).
    ///
    /// Nothing wakes it when a request starts or ends (that would cost a
    /// wake-up and a timer per request): it looks when a timer it set fires.
    /// A busy connection is looked at again after `idle`, since it cannot
    /// have been idle for `idle` any sooner; an idle one at the moment it
    /// will have been idle for `idle`, and then only if no request came
    /// and went in between.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            if !self.is_idle() {
                tokio::time::sleep(idle).await;
                continue;
            }
            let since = self.idle_since.load(Ordering::Acquire);
            let deadline = self.opened + Duration::from_nanos(since) + idle;
            tokio::time::sleep_until(deadline).await;
            if self.is_idle() && self.idle_since.load(Ordering::Acquire) == since {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_idle_from_the_start() {
        let c = Connection::new(None);
        let start = Instant::now();
        c.idle_for(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_comes_and_goes_while_the_timer_runs_restarts_the_count() {
        let c = std::sync::Arc::new(Connection::new(None));
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            c2.request_started();
            tokio::time::sleep(Duration::from_secs(5)).await;
            c2.request_finished();
        });
        let start = Instant::now();
        c.idle_for(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(55));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_response() {
        let c = std::sync::Arc::new(Connection::new(None));
        c.request_started();
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            c2.request_finished();
        });
        let start = Instant::now();
        c.idle_for(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(130));
        assert_eq!(c.requests_served(), 1);
    }
}
