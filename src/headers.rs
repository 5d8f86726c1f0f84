//! Header names and lists the proxy treats specially, in one place every
//! other module reads them from, and the rules for hop-by-hop headers.

use http::{HeaderMap, HeaderName, header};

/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ` in UTC.
pub const X_SDK_DATE: &str = "x-sdk-date";
/// Header whose value, when present and the body non-empty, replaces the body hash.
pub const X_SDK_CONTENT_SHA256: &str = "x-sdk-content-sha256";
/// Header carrying the security token of temporary AK/SK credentials.
pub const X_SECURITY_TOKEN: &str = "x-security-token";
/// Header carrying an IAM token.
pub const X_AUTH_TOKEN: &str = "x-auth-token";
/// APIG's API-key header.
pub const X_APIG_APPCODE: &str = "x-apig-appcode";
/// Sent and signed when a credential names a project.
pub const X_PROJECT_ID: &str = "x-project-id";

/// Headers whose values are credentials: hidden wherever a request is shown
/// (`Debug`, the canonical request's redacted form, the stand-in's echo).
/// `Authorization` holds only a signature.
pub const CREDENTIAL_HEADERS: &[&str] = &[X_SECURITY_TOKEN, X_AUTH_TOKEN, X_APIG_APPCODE];

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Client headers that carry or shape credentials: removed so a client can
/// never confuse the signature or smuggle its own credential (DESIGN §6).
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    X_AUTH_TOKEN,
    X_SDK_DATE,
    X_SECURITY_TOKEN,
    X_APIG_APPCODE,
    X_SDK_CONTENT_SHA256,
];

/// Typed forms of the names above, for `HeaderMap` access.
pub mod name {
    use http::HeaderName;

    pub const X_SDK_DATE: HeaderName = HeaderName::from_static(super::X_SDK_DATE);
    pub const X_SDK_CONTENT_SHA256: HeaderName =
        HeaderName::from_static(super::X_SDK_CONTENT_SHA256);
    pub const X_SECURITY_TOKEN: HeaderName = HeaderName::from_static(super::X_SECURITY_TOKEN);
    pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static(super::X_AUTH_TOKEN);
    pub const X_PROJECT_ID: HeaderName = HeaderName::from_static(super::X_PROJECT_ID);
}

/// Headers a route may not set: the client credential headers the proxy
/// strips, the hop-by-hop headers, and the framing it controls.
pub fn is_reserved(name: &str) -> bool {
    matches!(name, "host" | "content-length")
        || CLIENT_CREDENTIAL_HEADERS.contains(&name)
        || HOP_BY_HOP.contains(&name)
}

/// The headers a `Connection` header names: hop-by-hop as well (RFC 9110 §7.6.1).
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// True when a comma-separated header (`Connection`, `Upgrade`) lists
/// `token`, in any case.
pub fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP/1.1 WebSocket handshake's headers: `Connection: upgrade` and
/// `Upgrade: websocket`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, http::header::CONNECTION, "upgrade")
        && has_token(headers, http::header::UPGRADE, "websocket")
}

/// Removes hop-by-hop headers, and those `Connection` names, in place.
/// One pass over the headers (a response has a handful, and seldom any of
/// these), instead of a lookup per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_response_loses_its_hop_by_hop_headers_and_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-trace", HeaderValue::from_static("kept"));
        h.insert("x-private", HeaderValue::from_static("dropped"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-trace"]);
        // None of them: nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert("x-private", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }
}
