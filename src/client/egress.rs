//! The connector under TLS: straight to the destination, or through an
//! egress HTTP proxy, by hyper-util's `Matcher` (the `NO_PROXY` rules) and
//! `Tunnel` (`CONNECT`). `https://` destinations are tunnelled, so TLS stays
//! end to end; `http://` ones are sent to the proxy in absolute form.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::{Egress, EgressProxy};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Which way one destination is reached.
#[derive(Debug, PartialEq, Eq)]
pub enum Way<'a> {
    Direct,
    /// `CONNECT` through `proxy`, then TLS to the destination.
    Tunnel(&'a Uri),
    /// Absolute-form requests to `proxy`.
    Forward(&'a Uri),
}

/// The compiled egress rules, shared by every connection.
pub struct Rules {
    matcher: Matcher,
    https: Option<Proxy>,
    http: Option<Proxy>,
}

struct Proxy {
    url: Uri,
    /// `Basic …`, marked sensitive (never printed by `http`'s `Debug`).
    authorization: Option<HeaderValue>,
}

impl Proxy {
    fn new(p: &EgressProxy) -> Proxy {
        let authorization = p.username.as_ref().map(|user| {
            let pass = p.password.as_ref().map(|s| s.expose()).unwrap_or("");
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                .expect("base64 is a valid header value");
            value.set_sensitive(true);
            value
        });
        Proxy {
            url: p.url.clone(),
            authorization,
        }
    }
}

impl Rules {
    pub fn new(egress: &Egress) -> Rules {
        let https = egress.https.as_ref().map(Proxy::new);
        let http = egress.http.as_ref().map(Proxy::new);
        let mut builder = Matcher::builder().no(egress.no_proxy.as_str());
        if let Some(p) = &https {
            builder = builder.https(p.url.to_string());
        }
        if let Some(p) = &http {
            builder = builder.http(p.url.to_string());
        }
        Rules {
            matcher: builder.build(),
            https,
            http,
        }
    }

    /// How `dst` is reached. Loopback and link-local hosts are always
    /// direct: a proxy elsewhere would reach its own.
    pub fn way(&self, dst: &Uri) -> Way<'_> {
        if dst.host().is_none_or(always_direct) || self.matcher.intercept(dst).is_none() {
            return Way::Direct;
        }
        match (dst.scheme_str(), &self.https, &self.http) {
            (Some("https"), Some(p), _) => Way::Tunnel(&p.url),
            (Some("http"), _, Some(p)) => Way::Forward(&p.url),
            _ => Way::Direct,
        }
    }

    /// The `Proxy-Authorization` an absolute-form request to `dst` carries.
    pub fn forward_authorization(&self, dst: &Uri) -> Option<&HeaderValue> {
        match self.way(dst) {
            Way::Forward(_) => self.http.as_ref()?.authorization.as_ref(),
            _ => None,
        }
    }

    fn tunnel_authorization(&self, dst: &Uri) -> Option<&HeaderValue> {
        let proxy = match dst.scheme_str() {
            Some("http") => self.http.as_ref(),
            _ => self.https.as_ref(),
        };
        proxy?.authorization.as_ref()
    }
}

/// `dst` with its scheme's default port written out.
fn with_port(dst: &Uri) -> Uri {
    if dst.port().is_some() {
        return dst.clone();
    }
    let port = if dst.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    let host = dst.host().unwrap_or_default();
    format!("{}://{host}:{port}/", dst.scheme_str().unwrap_or("https"))
        .parse()
        .unwrap_or_else(|_| dst.clone())
}

fn always_direct(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// The connector: a `Service<Uri>` for `hyper_rustls::HttpsConnector`.
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    rules: Arc<Rules>,
    /// Tunnel `http://` destinations too (WebSocket handshakes: proxies
    /// do not forward an `Upgrade` in absolute form).
    tunnel_http: bool,
}

impl Connector {
    pub fn new(direct: HttpConnector, rules: Arc<Rules>) -> Connector {
        Connector {
            direct,
            rules,
            tunnel_http: false,
        }
    }

    /// As [`Connector::new`], tunnelling `http://` destinations as well.
    pub fn tunnelling(direct: HttpConnector, rules: Arc<Rules>) -> Connector {
        Connector {
            direct,
            rules,
            tunnel_http: true,
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // HttpConnector is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut direct = self.direct.clone();
        let way = match self.rules.way(&dst) {
            Way::Forward(proxy) if self.tunnel_http => Way::Tunnel(proxy),
            way => way,
        };
        match way {
            Way::Direct => Box::pin(async move {
                let io = direct.call(dst).await?;
                Ok(Stream::new(io, false))
            }),
            Way::Tunnel(proxy) => {
                let proxy = proxy.clone();
                let mut tunnel = Tunnel::new(proxy.clone(), direct);
                if let Some(auth) = self.rules.tunnel_authorization(&dst) {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    // The tunnel assumes 443 when the URI has no port.
                    let target = with_port(&dst);
                    std::future::poll_fn(|cx| tunnel.poll_ready(cx))
                        .await
                        .map_err(|e| EgressError::new(&proxy, &dst, e))?;
                    let io = tunnel
                        .call(target)
                        .await
                        .map_err(|e| EgressError::new(&proxy, &dst, e))?;
                    Ok(Stream::new(io, false))
                })
            }
            Way::Forward(proxy) => {
                let proxy = proxy.clone();
                Box::pin(async move {
                    let io = direct
                        .call(proxy.clone())
                        .await
                        .map_err(|e| EgressError::new(&proxy, &dst, e))?;
                    Ok(Stream::new(io, true))
                })
            }
        }
    }
}

/// A connection failure through the egress proxy, naming the proxy (never
/// its credentials) and, for a refused tunnel, what to check.
#[derive(Debug)]
pub struct EgressError {
    message: String,
    source: BoxError,
}

impl EgressError {
    fn new(proxy: &Uri, dst: &Uri, source: impl Into<BoxError>) -> EgressError {
        let source = source.into();
        let authority = proxy.authority().map(|a| a.as_str()).unwrap_or("?");
        let target = dst.authority().map(|a| a.as_str()).unwrap_or("?");
        let mut message = format!("through egress proxy {authority} to {target}");
        if source.to_string().contains("authorization required") {
            message.push_str(
                " (the proxy answered 407: check upstream_proxy.username/password \
                 or the user:password in HTTPS_PROXY)",
            );
        }
        EgressError { message, source }
    }
}

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for EgressError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// A TCP connection, to the destination or the proxy; `proxied` tells
/// hyper to send absolute-form request targets.
pub struct Stream {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Stream {
    fn new(io: TokioIo<TcpStream>, proxied: bool) -> Stream {
        Stream { io, proxied }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Stream {
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

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn proxy(url: &str) -> EgressProxy {
        EgressProxy {
            url: url.parse().unwrap(),
            username: Some("alice".into()),
            password: Some(Secret::new("s3cret")),
        }
    }

    fn rules(no_proxy: &str) -> Rules {
        Rules::new(&Egress {
            https: Some(proxy("http://proxy.corp:3128/")),
            http: Some(proxy("http://proxy.corp:3128/")),
            no_proxy: no_proxy.into(),
            origin: "test",
        })
    }

    fn way(r: &Rules, dst: &str) -> String {
        match r.way(&dst.parse().unwrap()) {
            Way::Direct => "direct".into(),
            Way::Tunnel(p) => format!("tunnel {p}"),
            Way::Forward(p) => format!("forward {p}"),
        }
    }

    #[test]
    fn https_tunnels_http_forwards_and_no_proxy_goes_direct() {
        let r = rules("internal.example.com, 10.0.0.0/8");
        assert_eq!(
            way(&r, "https://infer.example.com/v1"),
            "tunnel http://proxy.corp:3128/"
        );
        assert_eq!(
            way(&r, "http://infer.example.com/v1"),
            "forward http://proxy.corp:3128/"
        );
        assert_eq!(way(&r, "https://a.internal.example.com/"), "direct");
        assert_eq!(way(&r, "https://10.1.2.3/"), "direct");
    }

    #[test]
    fn loopback_and_link_local_are_always_direct() {
        let r = rules("");
        for dst in [
            "http://127.0.0.1:8080/",
            "https://localhost/",
            "http://[::1]:1/",
            "http://169.254.169.254/openstack/latest/securitykey",
            "http://[fe80::1]/",
        ] {
            assert_eq!(way(&r, dst), "direct", "{dst}");
        }
        assert_eq!(
            way(&r, "http://169.255.0.1/"),
            "forward http://proxy.corp:3128/"
        );
    }

    #[test]
    fn basic_authorization_is_sensitive_and_only_for_forwarded_requests() {
        let r = rules("");
        let auth = r
            .forward_authorization(&"http://infer.example.com/".parse().unwrap())
            .unwrap();
        assert_eq!(auth, "Basic YWxpY2U6czNjcmV0");
        assert!(auth.is_sensitive());
        assert!(!format!("{auth:?}").contains("YWxp"));
        assert!(
            r.forward_authorization(&"https://infer.example.com/".parse().unwrap())
                .is_none()
        );
        assert!(
            r.forward_authorization(&"http://127.0.0.1/".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn no_proxy_configured_is_direct_everywhere() {
        let r = Rules::new(&Egress::default());
        assert_eq!(way(&r, "https://infer.example.com/"), "direct");
    }
}
