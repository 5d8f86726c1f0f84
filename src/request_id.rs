//! Request ids (DESIGN §9): the client's `X-Request-Id` when it is a sane
//! token, else a new one. It goes upstream, comes back to the client, and is
//! in the access log and in every error body the proxy makes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header, as APIG and most proxies spell it.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id longer than this is replaced (APIG's own are 32 characters).
const MAX_CLIENT_ID: usize = 128;

/// The id for a request: the client's, if it is 1..=128 visible ASCII
/// characters, else a new one.
pub fn for_request(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| is_sane(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_id)
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.iter().all(|b| b.is_ascii_graphic())
}

/// 32 lower-case hex digits, like APIG's: a random per-process prefix and
/// a counter, so ids are unique without a system call per request.
pub fn new_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:016x}{n:016x}")).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
            for_request(&h)
        };
        assert_eq!(with(b"req-123_abc"), "req-123_abc");
        let long = [b'a'; 129];
        for bad in [&b"has space"[..], &long[..], b"\xe4\xb8\xad"] {
            let id = with(bad);
            assert_ne!(id.as_bytes(), bad);
            assert_eq!(id.len(), 32);
        }
        let a = for_request(&HeaderMap::new());
        let b = for_request(&HeaderMap::new());
        assert_ne!(a, b, "every new id is different");
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
