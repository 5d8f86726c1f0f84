//! The signer's canonicalisation (path, query, header values) and a whole
//! signature, on arbitrary input: never a panic, and the rules that must
//! hold for any input (SPEC §0): the canonical URI ends in `/` and contains
//! only unreserved characters, `/` and upper-case `%XX`; a canonical query
//! is canonical already; trimming is idempotent; signing is deterministic
//! and verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::canonical::{
    canonical_query_into, canonical_uri_into, trim_header_value,
};
use modelarts_proxy::signer::{AkSk, Payload, SignableRequest, sign};

fn unreserved_or_escape(uri: &str) -> bool {
    let b = uri.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => i += 1,
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if !(hex(b[i + 1]) && hex(b[i + 2])) {
                    return false;
                }
                i += 3;
            }
            _ => return false,
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Split the input into a path, a query and a header value.
    let mut parts = text.splitn(3, '\u{1}');
    let path = format!("/{}", parts.next().unwrap_or(""));
    let query = parts.next().unwrap_or("");
    let value = parts.next().unwrap_or("");

    let mut uri = String::new();
    canonical_uri_into(&path, &mut uri);
    assert!(uri.ends_with('/'), "{path:?} -> {uri:?}");
    assert!(unreserved_or_escape(&uri), "{path:?} -> {uri:?}");

    let mut q = String::new();
    canonical_query_into(query, &mut q);
    let mut again = String::new();
    canonical_query_into(&q, &mut again);
    assert_eq!(
        q, again,
        "the canonical query of {query:?} is not canonical"
    );

    let trimmed = trim_header_value(value);
    assert_eq!(trim_header_value(trimmed), trimmed);

    let key = AkSk {
        access_key: "AKFUZZ".into(),
        secret_key: Secret::new("sk-fuzz"),
        security_token: None,
    };
    let headers = [("host", "h.example.com"), ("x-fuzz", value)];
    let req = SignableRequest {
        method: "POST",
        path: &path,
        query: Some(query),
        headers: &headers,
        payload: Payload::Bytes(data),
    };
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    if let Ok(a) = sign(&req, &key, now) {
        let b = sign(&req, &key, now).unwrap();
        assert_eq!(a.authorization, b.authorization);
    }
});
