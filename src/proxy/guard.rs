//! The checks a request head passes before anything else happens: pure
//! functions of the head and the server config, unit-tested and fuzzed
//! without sockets.

use http::{HeaderMap, Method, Request, Uri, Version, header};

use crate::config::Server;
use crate::error::ProxyError;

/// Refuses what would make the proxy a forward proxy or a DNS-rebinding target.
pub fn check_target<B>(req: &Request<B>, server: &Server) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ForbiddenClient(
            "CONNECT is refused: modelarts-proxy is a reverse proxy for its configured routes, not a forward proxy"
                .to_owned(),
        ));
    }
    // HTTP/1 absolute-form (`GET http://host/ HTTP/1.1`) is how clients talk
    // to a forward proxy; HTTP/2 always carries an authority.
    let absolute = req.version() < Version::HTTP_2 && req.uri().authority().is_some();
    if let Some(authority) = req.uri().authority().filter(|_| absolute)
        && !is_loopback_name(authority.host())
    {
        return Err(ProxyError::ForbiddenClient(format!(
            "absolute-form request for {authority} refused: modelarts-proxy is not a forward proxy; \
             send requests to the proxy itself, e.g. http://127.0.0.1:8080/..."
        )));
    }
    if !server.allow_remote {
        check_browser_and_host(req.uri(), req.headers())?;
    }
    Ok(())
}

/// With `allow_remote = false` the proxy serves this machine's programs, not
/// web pages: a page could otherwise make the browser spend the user's
/// credentials (a cross-site "simple" request, or DNS rebinding).
fn check_browser_and_host(uri: &Uri, headers: &HeaderMap) -> Result<(), ProxyError> {
    let host = match uri.authority() {
        Some(a) => Some(a.host().to_owned()),
        None => match headers.get(header::HOST) {
            None => None,
            Some(h) => Some(
                h.to_str()
                    .ok()
                    .and_then(|h| h.parse::<http::uri::Authority>().ok())
                    .map(|a| a.host().to_owned())
                    .ok_or_else(|| {
                        ProxyError::ForbiddenClient(
                            "the Host header is not a valid host[:port]".to_owned(),
                        )
                    })?,
            ),
        },
    };
    if let Some(host) = host
        && !is_loopback_name(&host)
        && !is_ip_literal(&host)
    {
        return Err(ProxyError::ForbiddenClient(format!(
            "Host {host:?} is refused: with server.allow_remote = false only localhost and IP \
             addresses are accepted, which protects against DNS rebinding"
        )));
    }
    // A browser names the page's origin on cross-origin requests; only pages
    // served from this machine may use the proxy.
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(invalid)"));
    let loopback_origin = origin.is_some_and(|o| {
        o.parse::<Uri>()
            .ok()
            .and_then(|u| u.host().map(is_loopback_name))
            .unwrap_or(false)
    });
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if (origin.is_some() || cross_site) && !loopback_origin {
        return Err(ProxyError::ForbiddenClient(format!(
            "cross-site browser request refused (Origin {}): web pages may not use the proxy's \
             credentials; pages served from localhost may",
            origin.unwrap_or("absent")
        )));
    }
    Ok(())
}

fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
