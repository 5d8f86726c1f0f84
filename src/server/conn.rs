//! The connection guard, the first layer of the request path: a capped
//! number of client connections, each closed when it idles (no request in
//! flight for `header_timeout`, sooner under connection pressure), when the
//! daemon drains, or at once when a drain is cut short.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::Server;
use crate::proxy::{self, Connection};
use crate::state::Shared;

/// Under connection pressure (an acceptor waiting for a free slot), a
/// connection with no request in flight for this long is closed to make
/// room: a flood of silent connections cannot lock real clients out.
pub const PRESSURE_IDLE: Duration = Duration::from_secs(1);

/// After a connection is told to close, it may take this long (once no
/// request is in flight) to flush its last bytes before it is dropped.
pub const LINGER: Duration = Duration::from_secs(1);

/// An h2 client that does not answer a keep-alive ping within this long is gone.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams one h2 connection may have open at once (the common SETTINGS default).
const H2_MAX_STREAMS: u32 = 100;

/// h2 flow-control windows: what one stream, and one connection, may have
/// sent us unread. Small, because unread bytes are held in memory; ample on
/// a local link.
const H2_STREAM_WINDOW: u32 = 128 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// Response bytes h2 buffers per stream before the body waits for the client.
const H2_MAX_SEND_BUF: usize = 128 * 1024;

/// Where the daemon is in its life; every connection task watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Finish what is in flight, then close.
    Draining,
    /// Close now.
    Cut,
}

/// What every connection task shares.
pub struct Guard {
    pub shared: Arc<Shared>,
    /// One permit per open client connection.
    pub slots: Arc<Semaphore>,
    pub max: usize,
    /// Acceptors waiting for a free slot now (> 0: under pressure).
    pub pressure: watch::Sender<usize>,
    pub phase: watch::Sender<Phase>,
}

/// hyper's builder for one connection, from the current `[server]`.
fn builder(server: &Server) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper answers 431 itself past this; the proxy answers first, as JSON,
    // past max_header_bytes.
    let hyper_header_limit = (2 * server.max_header_bytes).max(8192);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout)
        .max_buf_size(hyper_header_limit);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(server.header_timeout)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_header_list_size(u32::try_from(hyper_header_limit).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF);
    b
}

/// Serves one client connection until it ends or is closed; the slot is
/// given back when it returns.
pub async fn serve<I>(
    stream: I,
    peer: Option<SocketAddr>,
    slot: OwnedSemaphorePermit,
    guard: Arc<Guard>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics = guard.shared.metrics.clone();
    metrics.connections_open.inc();
    let info = Arc::new(Connection::new(peer));
    let server = guard.shared.state.load().config.server.clone();
    let service = {
        let (shared, info) = (guard.shared.clone(), info.clone());
        service_fn(move |req: hyper::Request<Incoming>| {
            let (shared, info) = (shared.clone(), info.clone());
            // hyper moves the service's future into place; the request's
            // own state (kilobytes: the attempts, the send, the signing) is
            // made on the heap once instead of being copied there.
            async move { Ok::<_, Infallible>(Box::pin(proxy::handle(&shared, &info, req)).await) }
        })
    };
    let builder = builder(&server);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut phase = guard.phase.subscribe();
    let mut pressure = guard.pressure.subscribe();
    let mut closing: Option<&'static str> = None;
    let reason = loop {
        tokio::select! {
            result = conn.as_mut() => break closing.unwrap_or_else(|| ended(result, peer)),
            () = info.idle_for(server.header_timeout), if closing.is_none() => {
                closing = Some(if info.requests_served() == 0 { "header_timeout" } else { "idle" });
                conn.as_mut().graceful_shutdown();
            }
            () = idle_under_pressure(&mut pressure, &info), if closing.is_none() => {
                closing = Some("pressure");
                conn.as_mut().graceful_shutdown();
            }
            // Told to close and nothing in flight: a moment to flush, then drop.
            () = info.idle_for(LINGER), if closing.is_some() => break closing.unwrap_or("idle"),
            now = next_phase(&mut phase) => match now {
                Phase::Serving => {}
                Phase::Draining => {
                    closing = closing.or(Some("drain"));
                    conn.as_mut().graceful_shutdown();
                }
                Phase::Cut => break "drain_cut",
            },
        }
    };
    let reason = match info.take_tunnel() {
        Some(tunnel) => spliced(tunnel, &mut phase).await,
        None => reason,
    };
    metrics.connection_closed(reason);
    metrics.connections_open.dec();
    drop(slot);
}

/// A WebSocket spliced onto the connection keeps its slot until it ends;
/// a drain lets it run through the grace period, a cut closes it.
async fn spliced(
    mut tunnel: tokio::task::JoinHandle<()>,
    phase: &mut watch::Receiver<Phase>,
) -> &'static str {
    loop {
        tokio::select! {
            _ = &mut tunnel => return "websocket",
            now = next_phase(phase) => if now == Phase::Cut {
                tunnel.abort();
                return "drain_cut";
            },
        }
    }
}

/// Why a connection that hyper finished on its own ended.
fn ended(
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    peer: Option<SocketAddr>,
) -> &'static str {
    let Err(e) = result else {
        return "client";
    };
    let reason = match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_parse_too_large() => "header_too_large",
        Some(h) if h.is_parse() || h.is_parse_status() => "bad_request",
        Some(h) if h.is_timeout() => "header_timeout",
        Some(h) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => "client",
        _ => "io_error",
    };
    let peer = peer.map_or_else(|| "unix socket".to_owned(), |p| p.to_string());
    if matches!(reason, "bad_request" | "header_too_large") {
        // hyper has already answered the malformed request (400 / 431) itself.
        tracing::info!(%peer, reason, "malformed request refused by the HTTP parser: {e}");
    } else {
        tracing::debug!(%peer, reason, "client connection ended: {e}");
    }
    reason
}

/// The next phase change; `Cut` if the daemon is gone.
async fn next_phase(phase: &mut watch::Receiver<Phase>) -> Phase {
    match phase.changed().await {
        Ok(()) => *phase.borrow_and_update(),
        Err(_) => Phase::Cut,
    }
}

/// Resolves when the connection has been idle for [`PRESSURE_IDLE`] while
/// an acceptor is waiting for a free slot.
async fn idle_under_pressure(pressure: &mut watch::Receiver<usize>, info: &Connection) {
    loop {
        if pressure.wait_for(|waiting| *waiting > 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = info.idle_for(PRESSURE_IDLE) => return,
            _ = pressure.wait_for(|waiting| *waiting == 0) => {}
        }
    }
}
