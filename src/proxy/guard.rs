//! The checks a request head passes before anything else happens: pure
//! functions of the head and the server config, unit-tested and fuzzed
//! without sockets.
//!
//! Who may use the proxy ([`check_client`]), then what it refuses to forward
//! ([`check_head`]): a forward-proxy request, a DNS-rebinding or cross-site
//! browser request, `TRACE`, a path with dot segments, two `Host` headers,
//! ambiguous framing, and oversized headers.

use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Uri, Version, header};

use crate::config::Server;
use crate::error::ProxyError;
use crate::signer::verify::constant_time_eq;

/// `allow_clients` (the source address) and `require_header` (a shared
/// secret, compared in constant time and never echoed).
pub fn check_client(
    server: &Server,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    if let Some(ip) = peer
        && !server.client_allowed(ip)
    {
        return Err(ProxyError::ForbiddenClient(format!(
            "{ip} is not in server.allow_clients"
        )));
    }
    if let Some(required) = &server.require_header {
        let sent = headers.get_all(&required.name).iter().next_back();
        let ok = sent
            .is_some_and(|v| constant_time_eq(v.as_bytes(), required.value.expose().as_bytes()));
        if !ok {
            return Err(ProxyError::ForbiddenClient(format!(
                "this listener requires the {} header with the shared secret (server.require_header)",
                required.name
            )));
        }
    }
    Ok(())
}

/// Everything the proxy refuses to forward, in one pass over the head.
pub fn check_head<B>(req: &Request<B>, server: &Server) -> Result<(), ProxyError> {
    check_target(req, server)?;
    if req.method().as_str() == "TRACE" {
        // It would echo the request, injected credential included, to the client.
        return Err(ProxyError::MethodNotAllowed("TRACE".to_owned()));
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(ProxyError::BadRequest(
            "more than one Host header; send exactly one".to_owned(),
        ));
    }
    if has_dot_segment(req.uri().path()) {
        return Err(ProxyError::BadRequest(format!(
            "the path {:?} has a \".\" or \"..\" segment (raw or percent-encoded); a route never reaches outside its upstream path",
            req.uri().path()
        )));
    }
    check_framing(req.headers())?;
    let size = head_size(req.uri(), req.headers());
    if size > server.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: server.max_header_bytes,
        });
    }
    Ok(())
}

/// Refuses what would make the proxy a forward proxy or a DNS-rebinding target.
fn check_target<B>(req: &Request<B>, server: &Server) -> Result<(), ProxyError> {
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
    // The Host header's authority, whose host is borrowed, not copied again.
    let from_header;
    let host = match uri.authority() {
        Some(a) => Some(a.host()),
        None => match headers.get(header::HOST) {
            None => None,
            Some(h) => {
                from_header = http::uri::Authority::try_from(h.as_bytes()).map_err(|_| {
                    ProxyError::ForbiddenClient(
                        "the Host header is not a valid host[:port]".to_owned(),
                    )
                })?;
                Some(from_header.host())
            }
        },
    };
    if let Some(host) = host
        && !is_loopback_name(host)
        && !is_ip_literal(host)
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
    let host = host.trim_end_matches('.');
    let name = host.as_bytes();
    let suffix = b".localhost";
    name.eq_ignore_ascii_case(b"localhost")
        || (name.len() > suffix.len()
            && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The request target and headers in bytes, counted as HTTP/2 counts a
/// header list (name + value + 32 per field).
pub fn head_size(uri: &Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + target
}

/// One reading of the body's length only: `Content-Length` with
/// `Transfer-Encoding`, or several different `Content-Length` values, could
/// be read two ways by the next hop (request smuggling).
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding; send one".to_owned(),
            ));
        }
        if lengths.any(|v| v != first) {
            return Err(ProxyError::BadRequest(
                "Content-Length headers that disagree".to_owned(),
            ));
        }
    }
    Ok(())
}

/// True if a segment of `path`, percent-decoded, is `.` or `..` (a
/// decoded `/` or `\` also splits segments, as some servers treat them).
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'.') && !bytes.contains(&b'%') {
        return false;
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            decoded.push(h << 4 | l);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    decoded
        .split(|b| *b == b'/' || *b == b'\\')
        .any(|seg| seg == b"." || seg == b"..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
