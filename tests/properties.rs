//! Property tests (proptest): the canonicalisation rules of SPEC §0 for any
//! path and query, and sign-then-verify round trips whatever the header
//! order and case, while changing anything signed breaks the signature.

use chrono::{DateTime, Duration, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::canonical::{canonical_query_into, canonical_uri_into, quote_into};
use modelarts_proxy::signer::verify::verify;
use modelarts_proxy::signer::{AkSk, Payload, SignableRequest, sign};
use proptest::prelude::*;

fn canonical_uri(path: &str) -> String {
    let mut out = String::new();
    canonical_uri_into(path, &mut out);
    out
}

fn canonical_query(raw: &str) -> String {
    let mut out = String::new();
    canonical_query_into(raw, &mut out);
    out
}

fn quote(s: &str) -> String {
    let mut out = String::new();
    quote_into(s, &mut out);
    out
}

/// A path segment: any characters but `/` and `%` (kept literal).
fn segment() -> impl Strategy<Value = String> {
    "[^/%]{0,12}"
}

/// A query key or value: anything but the separators `&`, `=`, `%`.
fn query_text() -> impl Strategy<Value = String> {
    "[^&=%]{0,10}"
}

proptest! {
    /// Quirk 1 and 2: ends in `/`, and only unreserved characters, `/` and
    /// upper-case escapes remain.
    #[test]
    fn the_canonical_uri_ends_in_a_slash_and_is_fully_encoded(segs in prop::collection::vec(segment(), 0..6)) {
        let path = format!("/{}", segs.join("/"));
        let uri = canonical_uri(&path);
        prop_assert!(uri.ends_with('/'));
        let bytes = uri.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                prop_assert!(bytes[i + 1..i + 3].iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)), "{uri}");
                i += 3;
            } else {
                prop_assert!(b.is_ascii_alphanumeric() || b"-_.~/".contains(&b), "{uri}");
                i += 1;
            }
        }
    }

    /// Quirk 2: the path is decoded once, so the raw and the percent-encoded
    /// forms of the same segments sign alike.
    #[test]
    fn a_path_and_its_percent_encoded_form_sign_alike(segs in prop::collection::vec(segment(), 1..6)) {
        let raw = format!("/{}", segs.join("/"));
        let encoded = format!("/{}", segs.iter().map(|s| quote(s)).collect::<Vec<_>>().join("/"));
        prop_assert_eq!(canonical_uri(&raw), canonical_uri(&encoded));
    }

    /// Quirk 2: `%2F` is a separator.
    #[test]
    fn an_encoded_slash_splits_like_a_slash(a in "[a-z0-9]{1,8}", b in "[a-z0-9]{1,8}") {
        prop_assert_eq!(canonical_uri(&format!("/{a}%2F{b}")), canonical_uri(&format!("/{a}/{b}")));
    }

    /// Quirk 3: the canonical query does not depend on the order of the pairs,
    /// and is its own canonical form.
    #[test]
    fn the_canonical_query_ignores_pair_order(
        pairs in prop::collection::vec((query_text(), query_text()), 0..6),
        seed in any::<u64>(),
    ) {
        let raw: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut shuffled = raw.clone();
        let n = shuffled.len();
        for i in (1..n).rev() {
            shuffled.swap(i, (seed as usize).wrapping_mul(31).wrapping_add(i) % (i + 1));
        }
        let a = canonical_query(&raw.join("&"));
        prop_assert_eq!(&a, &canonical_query(&shuffled.join("&")));
        prop_assert_eq!(&a, &canonical_query(&a));
    }

    /// Quirk 3 and 4: encoded and raw forms of keys and values sign alike,
    /// and `+` is a literal plus.
    #[test]
    fn encoded_and_raw_query_text_sign_alike(k in query_text(), v in query_text()) {
        prop_assume!(!k.is_empty());
        let raw = canonical_query(&format!("{k}={v}"));
        let encoded = canonical_query(&format!("{}={}", quote(&k), quote(&v)));
        prop_assert_eq!(&raw, &encoded);
        if v.contains('+') {
            prop_assert!(raw.contains("%2B"));
        }
    }
}

const SK: &str = "sk-property-test";

fn key() -> AkSk {
    AkSk {
        access_key: "AKPROPERTY".into(),
        secret_key: Secret::new(SK),
        security_token: None,
    }
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// A header name the SDK signs (no `_`) and that is not one the signer owns.
fn header_name() -> impl Strategy<Value = String> {
    "x-[a-z][a-z0-9-]{0,10}"
}

fn header_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,20}[!-~])?"
}

/// Mixed case, chosen by `mask`.
fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips_whatever_the_header_order_and_case(
        headers in prop::collection::btree_map(header_name(), header_value(), 0..6),
        path in prop::collection::vec("[a-z0-9]{1,6}", 0..4),
        query in prop::collection::vec(("[a-z]{1,4}", "[a-z0-9]{0,4}"), 0..4),
        body in prop::collection::vec(any::<u8>(), 0..64),
        mask in any::<u64>(),
        reverse in any::<bool>(),
    ) {
        let path = format!("/{}", path.join("/"));
        let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let mut pairs: Vec<(String, String)> = vec![("host".into(), "h.example.com:443".into())];
        pairs.extend(headers.iter().map(|(k, v)| (recase(k, mask), v.clone())));
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let req = SignableRequest {
            method: "POST",
            path: &path,
            query: (!query.is_empty()).then_some(query.as_str()),
            headers: &borrowed,
            payload: Payload::Bytes(&body),
        };
        let out = sign(&req, &key(), at()).unwrap();

        // What the gateway receives: the same headers, in another order.
        let mut received = HeaderMap::new();
        let mut order: Vec<&(String, String)> = pairs.iter().collect();
        if reverse {
            order.reverse();
        }
        for (k, v) in order {
            received.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        received.insert("x-sdk-date", out.date.parse().unwrap());
        received.insert("authorization", out.authorization.parse().unwrap());
        let uri: Uri = if query.is_empty() { path.parse().unwrap() } else { format!("{path}?{query}").parse().unwrap() };
        let lookup = |ak: &str| (ak == "AKPROPERTY").then(key);
        let verified = verify(&Method::POST, &uri, &received, &body, lookup, at(), Duration::minutes(15));
        prop_assert!(verified.is_ok(), "{:?}", verified.err());

        // Any change to a signed header breaks it.
        if let Some((name, value)) = headers.iter().next() {
            let mut tampered = received.clone();
            tampered.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), format!("{value}x").parse().unwrap());
            prop_assert!(verify(&Method::POST, &uri, &tampered, &body, lookup, at(), Duration::minutes(15)).is_err());
        }
        // And so does a changed body.
        let mut other = body.clone();
        other.push(b'!');
        prop_assert!(verify(&Method::POST, &uri, &received, &other, lookup, at(), Duration::minutes(15)).is_err());
    }
}
