//! The upstream client: every connection is opened by [`connect`] (TCP or
//! the egress proxy, rustls with ALPN and the custom CA, hyper's HTTP/1.1
//! or HTTP/2 handshake) and kept in the idle lists of the thread that
//! opened it ([`pool`]): a worker's requests check out its own connections
//! without a lock, and both run on that worker.

mod connect;
mod egress;
mod error;
mod pool;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;

pub use egress::{EgressError, Rules, Way};
pub use error::Error;

use crate::config::{Egress, Http2, UpstreamTls};
use crate::error::ProxyBody;
use connect::Opener;
use pool::{Mode, Next};

/// The upstream client: cheap to clone; its clones share the connections
/// (IAM, metadata and proxied requests share them). A connection belongs to
/// the thread that opened it: there is one set of idle lists per worker
/// thread (and per other thread), so an upstream connection's task runs on
/// the worker whose requests use it (see [`crate::worker`]).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Which idle lists are this client's on every thread; they are let go
    /// once this is gone.
    id: u64,
    alive: Arc<()>,
    /// Every ordinary request: h2 or HTTP/1.1 as `[upstream_tls] http2` says.
    main: Opener,
    /// WebSocket handshakes, and requests whose `Host` only HTTP/1.1 can
    /// carry: HTTP/1.1, tunnelled through an egress proxy.
    http1: Opener,
    rules: Arc<Rules>,
    /// `[upstream_tls] http2 = "http2"`: the main connections speak nothing else.
    http2_only: bool,
}

/// What a send gives: the response head, or why there is none.
pub type ResponseResult = Result<Response<Incoming>, Error>;

impl HttpClient {
    /// Sends `req` (absolute URI), adding `Proxy-Authorization` when it goes
    /// to an egress proxy in absolute form.
    pub async fn request(&self, req: Request<ProxyBody>) -> ResponseResult {
        self.send(req, false).await
    }

    /// As [`request`](Self::request), on a connection of its own.
    pub async fn request_fresh(&self, req: Request<ProxyBody>) -> ResponseResult {
        self.send(req, true).await
    }

    async fn send(&self, mut req: Request<ProxyBody>, fresh: bool) -> ResponseResult {
        // HTTP/2 carries the authority in `:authority`, and servers such as
        // nginx refuse a request that also has a Host header. An HTTP/1.1
        // request gets its Host from the URI (without a default port) when
        // it has none; so a Host equal to that is left out, and works on
        // either. A Host that differs (an upstream written with its default
        // port, signed verbatim) is kept, and then only HTTP/1.1 is offered.
        // A plain http:// upstream is only ever spoken to in HTTP/1.1 (no
        // ALPN) unless `http2 = "http2"`, so its Host is kept as it is.
        let plain_h1 =
            req.uri().scheme() == Some(&http::uri::Scheme::HTTP) && !self.inner.http2_only;
        if !plain_h1 {
            match req.headers().get(header::HOST) {
                None => {}
                Some(host)
                    if self.inner.http2_only || is_implied_host(host.as_bytes(), req.uri()) =>
                {
                    req.headers_mut().remove(header::HOST);
                }
                Some(_) => return self.exchange(Mode::Http1, self.authorize(req), fresh).await,
            }
        }
        self.exchange(Mode::Main, self.authorize(req), fresh).await
    }

    /// Sends an `Upgrade` handshake over HTTP/1.1.
    pub async fn upgrade(&self, req: Request<ProxyBody>) -> ResponseResult {
        self.exchange(Mode::Http1, self.authorize(req), false).await
    }

    /// One exchange: on a ready connection of this thread's, or on one
    /// opened for it (`fresh`: always, and then used for this request
    /// alone). A request that a reused connection handed back unwritten
    /// (it was closing) goes once more: over HTTP/1.1 on a new connection
    /// (not another idle one that may be closing too); over HTTP/2 through
    /// the checkout, so that the streams of a connection going away share
    /// the one that replaces it.
    async fn exchange(
        &self,
        mode: Mode,
        mut req: Request<ProxyBody>,
        fresh: bool,
    ) -> ResponseResult {
        let inner = &*self.inner;
        let opener = match mode {
            Mode::Main => &inner.main,
            Mode::Http1 => &inner.http1,
        };
        // `Some(pooled)`: open a connection first (pooled or the request's own).
        let mut open_first = fresh.then_some(false);
        let (mut may_wait, mut handed_back) = (true, false);
        loop {
            let mut opened = match open_first.take() {
                Some(pooled) => Some((Box::pin(opener.open(req.uri())).await?, pooled)),
                None => None,
            };
            // Wakes the requests waiting for this connection once it is listed.
            let mut waking = None;
            let dispatched = loop {
                match pool::dispatch(&inner.alive, inner.id, mode, req, opened.take(), may_wait) {
                    Ok(dispatched) => break dispatched,
                    Err((back, Next::Wait(mut opening))) => {
                        // Woken when the connection is in the list (or the
                        // attempt failed: then this request opens its own).
                        let _ = opening.changed().await;
                        may_wait = false;
                        req = back;
                    }
                    Err((back, Next::Open(wake))) => {
                        waking = wake;
                        opened = Some((Box::pin(opener.open(back.uri())).await?, true));
                        req = back;
                    }
                }
            };
            drop(waking);
            match dispatched.sending.await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(mut back) if dispatched.reused && !handed_back => {
                        pool::restore(&mut back, dispatched.undo);
                        tracing::trace!(
                            "an idle upstream connection closed under a request; sending it on a new one"
                        );
                        req = back;
                        open_first = (!dispatched.h2).then_some(true);
                        handed_back = true;
                    }
                    _ => return Err(Error::send(e.into_error(), dispatched.reused)),
                },
            }
        }
    }

    /// How `dst` is reached (for logs and `check`).
    pub fn way<'a>(&'a self, dst: &http::Uri) -> Way<'a> {
        self.inner.rules.way(dst)
    }

    fn authorize(&self, mut req: Request<ProxyBody>) -> Request<ProxyBody> {
        if let Some(auth) = self.inner.rules.forward_authorization(req.uri()) {
            req.headers_mut()
                .insert(header::PROXY_AUTHORIZATION, auth.clone());
        }
        req
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// Response heads up to this size are accepted over HTTP/1.1 and HTTP/2
/// alike (DESIGN §12): gateways and inference front ends add cookies, CORS
/// and tracing headers, and 24 KB heads are seen in the field. A larger
/// head is a 502 that names this size.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What one HTTP/1.1 upstream connection reads ahead of a client that is
/// slow to take it (hyper's default is about 400 KiB): memory per streaming
/// response. hyper parses a head only when it fits in this buffer, so it is
/// the head limit plus room for the status line and the first body bytes.
const UPSTREAM_READ_BUFFER: usize = MAX_RESPONSE_HEAD + 8 * 1024;

/// HTTP/2's header-list size counts 32 bytes per field on top of names and
/// values (RFC 9113 §6.5.2); this leaves room for 256 fields around a
/// [`MAX_RESPONSE_HEAD`] head. h2's default (16 KiB) failed real heads with
/// PROTOCOL_ERROR.
const H2_MAX_HEADER_LIST: u32 = (MAX_RESPONSE_HEAD + 256 * 32) as u32;

/// Streams opened before the upstream's SETTINGS arrive: RFC 9113 §6.5.2's
/// recommended minimum for what a server allows (h2's default too). A server
/// that allows fewer (nginx `http2_max_concurrent_streams 4`) refuses the
/// rest with REFUSED_STREAM, which is resent (nothing was processed); a
/// lower guess would slow every new connection to a server allowing more.
const H2_INITIAL_MAX_SEND_STREAMS: usize = 100;

/// Streams the proxy reset (a client that went away mid-response) whose
/// late frames are still recognised and dropped: past this many, frames for
/// a forgotten stream would be a connection error for every stream on it.
/// h2's default of 10 is too few when a burst of clients cancels at once
/// (cancelled LLM streams); each costs a few words for 30 s.
const H2_MAX_CONCURRENT_RESET_STREAMS: usize = 256;

/// Streams on one connection that the proxy may reset because of an error
/// before h2 calls the upstream abusive and closes the connection (h2's
/// default, kept on purpose: a complete response is never reset, so only
/// real failures count, and a connection producing this many is broken).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// TCP connect attempts give up after this long (the request `timeout`
/// still bounds the whole exchange).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An idle h2 connection is pinged this often, and dropped when a ping goes
/// unanswered for [`H2_PING_TIMEOUT`], so a dead path is found before a
/// request is sent on it.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the client (its connections belong to the thread that opens
/// them, so it needs no count of workers). Fails with a message naming the
/// CA file when it cannot be read or holds no certificate.
pub fn build(tls: &UpstreamTls, egress: &Egress) -> Result<HttpClient, String> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    pool::start_clock();
    let config = tls::client_config(tls)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let rules = Arc::new(Rules::new(egress));
    let tls_connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.clone())
        .https_or_http();
    let direct = egress::Connector::new(http.clone(), rules.clone());
    let main = match tls.http2 {
        Http2::Auto => tls_connector.enable_all_versions().wrap_connector(direct),
        Http2::Http1 => tls_connector.enable_http1().wrap_connector(direct),
        Http2::Http2 => tls_connector.enable_http2().wrap_connector(direct),
    };
    let http1 = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(egress::Connector::tunnelling(http, rules.clone()));
    let http2_only = tls.http2 == Http2::Http2;
    Ok(HttpClient {
        inner: Arc::new(Inner {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            main: Opener::new(main, false, http2_only),
            http1: Opener::new(http1, true, false),
            rules,
            http2_only,
        }),
    })
}

/// True when `host` is the Host hyper writes for an HTTP/1.1 request to
/// `uri`: the host, and the port unless it is the scheme's default.
fn is_implied_host(host: &[u8], uri: &http::Uri) -> bool {
    let name = uri.host().unwrap_or_default().as_bytes();
    let Some(rest) = host.strip_prefix(name) else {
        return false;
    };
    match written_port(uri) {
        Some(port) => rest
            .strip_prefix(b":")
            .and_then(|p| std::str::from_utf8(p).ok())
            .is_some_and(|p| !p.starts_with('0') && p.parse() == Ok(port)),
        None => rest.is_empty(),
    }
}

/// The port a `Host` for `uri` carries: its port, unless it is the
/// scheme's default.
fn written_port(uri: &http::Uri) -> Option<u16> {
    let default = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    uri.port_u16().filter(|&port| Some(port) != default)
}

/// Keeps `CryptoProvider` in the public signature stable for callers that
/// want to reuse the same provider (tests building TLS servers).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::is_implied_host;

    #[test]
    fn the_implied_host_is_the_authority_as_written_unless_it_has_a_default_port() {
        for (uri, host) in [
            ("https://Infer.Example.com/v1", "Infer.Example.com"),
            (
                "https://infer.example.com:8443/v1",
                "infer.example.com:8443",
            ),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("http://[::1]:9000/", "[::1]:9000"),
            ("https://infer.example.com:443/", "infer.example.com"),
            ("http://infer.example.com:80/", "infer.example.com"),
        ] {
            assert!(
                is_implied_host(host.as_bytes(), &uri.parse().unwrap()),
                "{uri}"
            );
        }
        for (uri, host) in [
            ("https://infer.example.com:443/", "infer.example.com:443"),
            ("https://infer.example.com:8443/", "infer.example.com"),
            ("https://infer.example.com:8443/", "infer.example.com:08443"),
            ("https://infer.example.com:8443/", "infer.example.com:844"),
            ("https://infer.example.com/", "infer.example.co"),
            ("https://infer.example.com/", "other.example.com"),
        ] {
            assert!(
                !is_implied_host(host.as_bytes(), &uri.parse().unwrap()),
                "{uri} {host}"
            );
        }
    }
}
