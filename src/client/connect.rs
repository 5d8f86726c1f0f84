//! Opening one upstream connection: TCP (or the egress proxy), TLS with
//! ALPN, then hyper's HTTP/1.1 or HTTP/2 handshake on it; the connection's
//! own task is spawned on the thread that opened it (a worker's, so the
//! requests that use it and the connection share a thread).

use http::Uri;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::error::Error;
use super::{
    H2_INITIAL_MAX_SEND_STREAMS, H2_MAX_CONCURRENT_RESET_STREAMS, H2_MAX_HEADER_LIST,
    H2_MAX_LOCAL_ERROR_RESETS, H2_PING_INTERVAL, H2_PING_TIMEOUT, UPSTREAM_READ_BUFFER, egress,
};
use crate::error::ProxyBody;

pub(super) type Https = HttpsConnector<egress::Connector>;

/// One connection's request handle.
pub(super) enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

impl Sender {
    /// Can take a request now: an idle HTTP/1.1 connection, or an open
    /// HTTP/2 one (whose streams multiplex).
    pub(super) fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub(super) fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }
}

/// A new connection, ready for its first request.
pub(super) struct Opened {
    pub sender: Sender,
    /// Reached through an egress proxy in absolute form.
    pub proxied: bool,
}

/// How connections of one kind are opened.
pub(super) struct Opener {
    pub https: Https,
    /// HTTP/1.1 only, its connections able to hand over to an upgrade.
    pub upgrades: bool,
    /// HTTP/2 whatever ALPN says (`[upstream_tls] http2 = "http2"`, which
    /// also covers plain `http://` upstreams by prior knowledge).
    pub http2_only: bool,
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
}

impl Opener {
    pub(super) fn new(https: Https, upgrades: bool, http2_only: bool) -> Opener {
        let mut h1 = http1::Builder::new();
        h1.max_buf_size(UPSTREAM_READ_BUFFER);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .adaptive_window(true)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .initial_max_send_streams(H2_INITIAL_MAX_SEND_STREAMS)
            .max_concurrent_reset_streams(H2_MAX_CONCURRENT_RESET_STREAMS)
            .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS));
        Opener {
            https,
            upgrades,
            http2_only,
            h1,
            h2,
        }
    }

    /// Connects to `dst`'s authority and shakes hands; the connection's
    /// task runs until the upstream closes it or every handle is dropped.
    pub(super) async fn open(&self, dst: &Uri) -> Result<Opened, Error> {
        let io = self
            .https
            .clone()
            .call(dst.clone())
            .await
            .map_err(Error::connect)?;
        let connected = io.connected();
        let proxied = connected.is_proxied();
        if !self.upgrades && (self.http2_only || connected.is_negotiated_h2()) {
            let (sender, conn) = self.h2.handshake(io).await.map_err(Error::connect)?;
            drive(conn, "HTTP/2");
            return Ok(Opened {
                sender: Sender::H2(sender),
                proxied,
            });
        }
        let (mut sender, conn) = self.h1.handshake(io).await.map_err(Error::connect)?;
        if self.upgrades {
            drive(conn.with_upgrades(), "HTTP/1.1");
        } else {
            drive(conn, "HTTP/1.1");
        }
        // hyper's dispatcher takes a request once its task has run once.
        sender.ready().await.map_err(Error::connect)?;
        Ok(Opened {
            sender: Sender::H1(sender),
            proxied,
        })
    }
}

/// Runs a connection's task (on this thread's runtime) until the upstream
/// closes it or every handle to it is dropped.
fn drive(conn: impl Future<Output = hyper::Result<()>> + Send + 'static, protocol: &'static str) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream {protocol} connection ended: {e}");
        }
    });
}
