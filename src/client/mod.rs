//! The one shared, pooled upstream client: hyper-util's legacy `Client` over
//! rustls, with system (or Mozilla) roots plus an optional CA file, HTTP/2
//! when the upstream offers it by ALPN, and the egress proxy rules under TLS.

mod egress;
mod tls;
mod uses;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::crypto::CryptoProvider;

pub use egress::{EgressError, Rules, Way};
pub use uses::reused;

use crate::config::{Egress, Http2, UpstreamTls};
use crate::error::ProxyBody;

type Pool = Client<uses::Counting<HttpsConnector<egress::Connector>>, ProxyBody>;

/// The upstream client: cheap to clone; its clones share the connection
/// pools (IAM, metadata and proxied requests share them). There is one set
/// of pools per worker thread, plus one for every other thread, so an
/// upstream connection's task runs on the worker whose requests use it
/// (see [`crate::worker`]).
#[derive(Clone)]
pub struct HttpClient {
    /// Per worker, then one for the rest.
    pools: Arc<[Pools]>,
    rules: Arc<Rules>,
    /// `[upstream_tls] http2 = "http2"`: the main pool speaks nothing else.
    http2_only: bool,
}

/// One thread's connection pools.
struct Pools {
    /// Every ordinary request: h2 or HTTP/1.1 as `[upstream_tls] http2` says.
    pool: Pool,
    /// The same, but never pooled: a request sent again because the
    /// upstream did not process it goes out on a fresh connection
    /// (DESIGN §12), not on another one that may be closing too.
    fresh: Pool,
    /// WebSocket handshakes: HTTP/1.1 only (an upgrade has no h2 form here).
    upgrades: Pool,
}

impl HttpClient {
    /// This thread's pools.
    fn here(&self) -> &Pools {
        let rest = self.pools.len() - 1;
        let i = crate::worker::current().filter(|&i| i < rest);
        &self.pools[i.unwrap_or(rest)]
    }

    /// Sends `req` (absolute URI), adding `Proxy-Authorization` when it goes
    /// to an egress proxy in absolute form.
    pub fn request(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.send(req, false)
    }

    /// As [`request`](Self::request), on a connection of its own.
    pub fn request_fresh(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.send(req, true)
    }

    fn send(&self, mut req: Request<ProxyBody>, fresh: bool) -> ResponseFuture {
        // HTTP/2 carries the authority in `:authority`, and servers such as
        // nginx refuse a request that also has a Host header. hyper fills in
        // Host for HTTP/1.1 connections from the URI (without a default
        // port); so a Host equal to that is left to hyper, and works on
        // either. A Host that differs (an upstream written with its default
        // port, signed verbatim) is kept, and then only HTTP/1.1 is offered.
        // A plain http:// upstream is only ever spoken to in HTTP/1.1 (no
        // ALPN) unless `http2 = "http2"`, so its Host is kept as it is.
        let plain_h1 = req.uri().scheme() == Some(&http::uri::Scheme::HTTP) && !self.http2_only;
        if !plain_h1 {
            match req.headers().get(header::HOST) {
                None => {}
                Some(host) if self.http2_only || is_implied_host(host.as_bytes(), req.uri()) => {
                    req.headers_mut().remove(header::HOST);
                }
                Some(_) => return self.here().upgrades.request(self.authorize(req)),
            }
        }
        let pools = self.here();
        let pool = if fresh { &pools.fresh } else { &pools.pool };
        pool.request(self.authorize(req))
    }

    /// Sends an `Upgrade` handshake over HTTP/1.1.
    pub fn upgrade(&self, req: Request<ProxyBody>) -> ResponseFuture {
        self.here().upgrades.request(self.authorize(req))
    }

    /// How `dst` is reached (for logs and `check`).
    pub fn way<'a>(&'a self, dst: &http::Uri) -> Way<'a> {
        self.rules.way(dst)
    }

    fn authorize(&self, mut req: Request<ProxyBody>) -> Request<ProxyBody> {
        if let Some(auth) = self.rules.forward_authorization(req.uri()) {
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

/// Idle pooled connections are closed after this long. APIG's front end
/// keeps idle connections for about 60 s; closing ours first avoids sending
/// a request on a connection the gateway is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

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

/// Builds the client with one set of pools. Fails with a message naming
/// the CA file when it cannot be read or holds no certificate.
pub fn build(tls: &UpstreamTls, egress: &Egress) -> Result<HttpClient, String> {
    build_for_workers(tls, egress, 0)
}

/// Builds the client with a set of pools for each of `workers` worker
/// threads and one for every other thread.
pub fn build_for_workers(
    tls: &UpstreamTls,
    egress: &Egress,
    workers: usize,
) -> Result<HttpClient, String> {
    let config = tls::client_config(tls)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let rules = Arc::new(Rules::new(egress));
    let connector = egress::Connector::new(http.clone(), rules.clone());
    let pools = (0..=workers)
        .map(|_| Pools {
            pool: main_pool(tls, &config, &connector, true),
            fresh: main_pool(tls, &config, &connector, false),
            upgrades: upgrade_pool(&config, &http, &rules),
        })
        .collect();
    Ok(HttpClient {
        pools,
        rules,
        http2_only: tls.http2 == Http2::Http2,
    })
}

fn main_pool(
    tls: &UpstreamTls,
    config: &rustls::ClientConfig,
    connector: &egress::Connector,
    pooled: bool,
) -> Pool {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.clone())
        .https_or_http();
    let https = match tls.http2 {
        Http2::Auto => https
            .enable_all_versions()
            .wrap_connector(connector.clone()),
        Http2::Http1 => https.enable_http1().wrap_connector(connector.clone()),
        Http2::Http2 => https.enable_http2().wrap_connector(connector.clone()),
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .http1_max_buf_size(UPSTREAM_READ_BUFFER)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(H2_PING_INTERVAL)
        .http2_keep_alive_timeout(H2_PING_TIMEOUT)
        .http2_adaptive_window(true)
        .http2_max_header_list_size(H2_MAX_HEADER_LIST)
        .http2_initial_max_send_streams(H2_INITIAL_MAX_SEND_STREAMS)
        .http2_max_concurrent_reset_streams(H2_MAX_CONCURRENT_RESET_STREAMS)
        .http2_max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        .http2_only(tls.http2 == Http2::Http2);
    if !pooled {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(uses::Counting(https))
}

fn upgrade_pool(config: &rustls::ClientConfig, http: &HttpConnector, rules: &Arc<Rules>) -> Pool {
    Client::builder(TokioExecutor::new())
        .http1_max_buf_size(UPSTREAM_READ_BUFFER)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(uses::Counting(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config.clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(egress::Connector::tunnelling(http.clone(), rules.clone())),
        ))
}

/// True when `host` is the Host hyper writes for an HTTP/1.1 request to
/// `uri`: the host, and the port unless it is the scheme's default.
fn is_implied_host(host: &[u8], uri: &http::Uri) -> bool {
    let name = uri.host().unwrap_or_default().as_bytes();
    let default = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let Some(rest) = host.strip_prefix(name) else {
        return false;
    };
    match uri.port_u16() {
        Some(port) if Some(port) != default => rest
            .strip_prefix(b":")
            .and_then(|p| std::str::from_utf8(p).ok())
            .is_some_and(|p| !p.starts_with('0') && p.parse() == Ok(port)),
        _ => rest.is_empty(),
    }
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
