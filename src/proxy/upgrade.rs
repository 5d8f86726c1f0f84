//! WebSocket (DESIGN §10): the handshake is an ordinary request on the
//! request path (routed, credential injected, signed as sent, within the
//! route's `timeout`), sent over HTTP/1.1 with its `Upgrade` headers kept.
//! When the upstream answers `101 Switching Protocols`, the two connections
//! are spliced and bytes are copied both ways until either side closes or
//! nothing moves for `idle_timeout`; `max_body` and `timeout` do not apply.
//! Any other answer goes back to the client as it came (a refused
//! handshake keeps its status and body).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::Connection;
use crate::error::ProxyBody;
use crate::headers;

/// A client's WebSocket handshake, taken off its request.
pub struct Upgrade {
    client: OnUpgrade,
    protocol: HeaderValue,
}

/// The client's upgrade, when `req` is an HTTP/1.1 `GET` with `Upgrade:
/// websocket` and `Connection: upgrade` on a connection that can upgrade.
pub fn take<B>(req: &mut Request<B>) -> Option<Upgrade> {
    let wants = req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && headers::is_websocket_upgrade(req.headers())
        && req.extensions().get::<OnUpgrade>().is_some();
    if !wants {
        return None;
    }
    Some(Upgrade {
        protocol: HeaderValue::from_static("websocket"),
        client: hyper::upgrade::on(req),
    })
}

/// Where the spliced connection is logged from.
pub struct Labels {
    pub route: String,
    pub request_id: HeaderValue,
}

impl Upgrade {
    /// Puts the handshake's hop-by-hop headers back on the upstream request.
    pub fn request_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// The response for the client. On a 101 the splice starts (owned by
    /// `conn`, so the connection slot is held and a drain can cut it);
    /// anything else is streamed back as usual.
    pub fn finish(
        self,
        mut response: Response<ProxyBody>,
        conn: &Connection,
        idle: Duration,
        labels: Labels,
    ) -> Response<ProxyBody> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(response.headers_mut());
            return response;
        }
        let upstream = hyper::upgrade::on(&mut response);
        let (connection, upgrade) = {
            let h = response.headers();
            (
                h.get(header::CONNECTION).cloned(),
                h.get(header::UPGRADE).cloned(),
            )
        };
        headers::strip_hop_by_hop(response.headers_mut());
        let h = response.headers_mut();
        h.insert(
            header::CONNECTION,
            connection.unwrap_or(HeaderValue::from_static("upgrade")),
        );
        h.insert(header::UPGRADE, upgrade.unwrap_or(self.protocol));
        let client = self.client;
        conn.set_tunnel(tokio::spawn(async move {
            let started = Instant::now();
            match splice(client, upstream, idle).await {
                Ok(s) => tracing::info!(
                    target: "modelarts_proxy::access",
                    route = %labels.route,
                    request_id = labels.request_id.to_str().unwrap_or(""),
                    bytes_from_client = s.from_client,
                    bytes_from_upstream = s.from_upstream,
                    duration_ms = started.elapsed().as_millis() as u64,
                    ended = s.ended,
                    "websocket closed"
                ),
                Err(e) => tracing::info!(
                    target: "modelarts_proxy::access",
                    route = %labels.route,
                    request_id = labels.request_id.to_str().unwrap_or(""),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "websocket ended: {e}"
                ),
            }
        }));
        response
    }
}

/// What one spliced connection carried, and why it ended.
#[derive(Debug)]
pub struct Spliced {
    pub from_client: u64,
    pub from_upstream: u64,
    /// `closed` (either side closed) or `idle_timeout`.
    pub ended: &'static str,
}

/// Copies both ways until both directions end or neither moves a byte
/// for `idle`.
pub async fn splice(client: OnUpgrade, upstream: OnUpgrade, idle: Duration) -> io::Result<Spliced> {
    let (client, upstream) = tokio::try_join!(client, upstream).map_err(io::Error::other)?;
    let activity = Arc::new(Activity::new());
    let mut client = Watched::new(TokioIo::new(client), activity.clone(), CLIENT);
    let mut upstream = Watched::new(TokioIo::new(upstream), activity.clone(), UPSTREAM);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let last = activity.last();
        tokio::select! {
            done = &mut copy => {
                let (from_client, from_upstream) = done?;
                return Ok(Spliced { from_client, from_upstream, ended: "closed" });
            }
            () = tokio::time::sleep_until(activity.at(last) + idle) => {
                if activity.last() == last {
                    return Ok(Spliced {
                        from_client: activity.bytes(CLIENT),
                        from_upstream: activity.bytes(UPSTREAM),
                        ended: "idle_timeout",
                    });
                }
            }
        }
    }
}

const CLIENT: usize = 0;
const UPSTREAM: usize = 1;

/// When a byte last moved (nanoseconds after `start`), and how many were
/// read from each side.
struct Activity {
    start: Instant,
    last: AtomicU64,
    read: [AtomicU64; 2],
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            read: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn touch(&self, side: usize, n: u64) {
        self.read[side].fetch_add(n, Ordering::Relaxed);
        let nanos = self.start.elapsed().as_nanos() as u64;
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn bytes(&self, side: usize) -> u64 {
        self.read[side].load(Ordering::Relaxed)
    }

    fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }
}

/// One side of the splice, stamping [`Activity`] on every read.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
    side: usize,
}

impl<T> Watched<T> {
    fn new(io: T, activity: Arc<Activity>, side: usize) -> Self {
        Watched { io, activity, side }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.activity.touch(self.side, n);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(connection: &str, upgrade: &str) -> Request<()> {
        let mut req = Request::get("/ws")
            .header(header::CONNECTION, connection)
            .header(header::UPGRADE, upgrade)
            .body(())
            .unwrap();
        // hyper's server attaches an `OnUpgrade` to requests on connections
        // that can upgrade; `take` only checks that one is there (this one,
        // made outside hyper, is never fulfilled).
        let on = hyper::upgrade::on(Request::new(()));
        req.extensions_mut().insert(on);
        req
    }

    #[test]
    fn only_a_websocket_get_on_an_upgradable_connection_is_taken() {
        assert!(take(&mut handshake("keep-alive, Upgrade", "WebSocket")).is_some());
        assert!(take(&mut handshake("keep-alive", "websocket")).is_none());
        assert!(take(&mut handshake("upgrade", "h2c")).is_none());
        let mut post = handshake("upgrade", "websocket");
        *post.method_mut() = Method::POST;
        assert!(take(&mut post).is_none());
        let mut no_upgrade = Request::get("/ws")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(
            take(&mut no_upgrade).is_none(),
            "not from an upgradable connection"
        );
    }
}
