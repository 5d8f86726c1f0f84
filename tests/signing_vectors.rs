//! Every case of `tests/data/signing/vectors.json` (made with Huawei's
//! official Python SDK), checked stage by stage: canonical request, string to
//! sign, signature, Authorization. One test per case, so a failure names both.

use base64::Engine;
use chrono::{DateTime, Utc};
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::{self, AkSk, Payload, SignableRequest, UNSIGNED_PAYLOAD};
use serde_json::Value;

const VECTORS: &str = include_str!("data/signing/vectors.json");

fn vector(id: &str) -> Value {
    let all: Value = serde_json::from_str(VECTORS).expect("vectors.json parses");
    all["vectors"]
        .as_array()
        .expect("vectors array")
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no vector {id}"))
        .clone()
}

fn body(v: &Value) -> Vec<u8> {
    if let Some(b) = v.get("body").and_then(Value::as_str) {
        return b.as_bytes().to_vec();
    }
    if let Some(b) = v.get("body_b64").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("base64 body");
    }
    if let Some(r) = v.get("body_repeat") {
        let pattern = r["pattern"].as_str().expect("pattern");
        return pattern
            .repeat(r["times"].as_u64().expect("times") as usize)
            .into_bytes();
    }
    Vec::new()
}

/// Splits `https://host[:port]/path?query` without any normalisation: the
/// signer must see the authority, path and query exactly as written.
fn split_url(url: &str) -> (&str, &str, Option<&str>) {
    let rest = url.split_once("://").expect("scheme").1;
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    match path_query.split_once('?') {
        Some((p, q)) => (authority, p, Some(q)),
        None => (authority, path_query, None),
    }
}

fn check(id: &str) {
    let v = vector(id);
    let (authority, path, query) = split_url(v["url"].as_str().unwrap());
    assert_eq!(authority, v["host"].as_str().unwrap(), "{id}: host");
    let mut headers: Vec<(String, String)> = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        headers.push(("Host".into(), authority.into()));
    }
    if v["unsigned_payload"].as_bool().unwrap() {
        headers.push(("X-Sdk-Content-Sha256".into(), UNSIGNED_PAYLOAD.into()));
    }
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = body(&v);
    assert_eq!(
        body.len() as u64,
        v["body_len"].as_u64().unwrap(),
        "{id}: body length"
    );
    let req = SignableRequest {
        method: v["method"].as_str().unwrap(),
        path,
        query,
        headers: &header_refs,
        payload: Payload::Bytes(&body),
    };
    let key = AkSk {
        access_key: v["ak"].as_str().unwrap().into(),
        secret_key: Secret::new(v["sk"].as_str().unwrap()),
        security_token: None,
    };
    let time: DateTime<Utc> =
        signer::parse_sdk_date(v["sdk_date"].as_str().unwrap()).expect("sdk_date");
    let out = signer::sign(&req, &key, time).expect("signs");

    assert_eq!(
        out.canonical_request.to_string(),
        v["canonical_request"].as_str().unwrap(),
        "{id}: canonical request"
    );
    assert_eq!(
        out.canonical_request.signed_headers(),
        v["signed_headers"].as_str().unwrap(),
        "{id}: signed headers"
    );
    assert_eq!(
        out.string_to_sign.to_string(),
        v["string_to_sign"].as_str().unwrap(),
        "{id}: string to sign"
    );
    assert_eq!(
        out.signature,
        v["signature"].as_str().unwrap(),
        "{id}: signature"
    );
    assert_eq!(
        out.authorization,
        v["authorization"].as_str().unwrap(),
        "{id}: authorization"
    );
    assert_eq!(
        out.date,
        v["final_headers"]["X-Sdk-Date"].as_str().unwrap(),
        "{id}: x-sdk-date"
    );
}

/// Guards against a vector being added to the file without a test here.
#[test]
fn every_vector_has_a_test() {
    let all: Value = serde_json::from_str(VECTORS).unwrap();
    let ids: Vec<&str> = all["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, all["count"].as_u64().unwrap());
    let this_file = include_str!("signing_vectors.rs");
    for id in ids {
        let test_name = format!("fn {}()", id.replace('-', "_"));
        assert!(this_file.contains(&test_name), "vector {id} has no test");
    }
}

#[test]
fn pub_01_get_simple() {
    check("pub-01-get-simple");
}

#[test]
fn pub_02_get_query_two_params() {
    check("pub-02-get-query-two-params");
}

#[test]
fn pub_03_get_query_unsorted() {
    check("pub-03-get-query-unsorted");
}

#[test]
fn pub_04_get_repeated_keys() {
    check("pub-04-get-repeated-keys");
}

#[test]
fn pub_05_get_path_no_trailing_slash() {
    check("pub-05-get-path-no-trailing-slash");
}

#[test]
fn pub_06_get_path_trailing_slash() {
    check("pub-06-get-path-trailing-slash");
}

#[test]
fn pub_07_get_root() {
    check("pub-07-get-root");
}

#[test]
fn pub_08_post_json() {
    check("pub-08-post-json");
}

#[test]
fn pub_09_post_json_charset() {
    check("pub-09-post-json-charset");
}

#[test]
fn pub_10_put_json_x_stage() {
    check("pub-10-put-json-x-stage");
}

#[test]
fn pub_11_delete_query() {
    check("pub-11-delete-query");
}

#[test]
fn pub_12_delete_json_body() {
    check("pub-12-delete-json-body");
}

#[test]
fn pub_13_patch_json() {
    check("pub-13-patch-json");
}

#[test]
fn pub_14_head() {
    check("pub-14-head");
}

#[test]
fn pub_15_post_json_unsigned() {
    check("pub-15-post-json-unsigned");
}

#[test]
fn pub_16_put_octet_unsigned() {
    check("pub-16-put-octet-unsigned");
}

#[test]
fn pub_17_get_percent_encoded_path() {
    check("pub-17-get-percent-encoded-path");
}

#[test]
fn pub_18_get_unreserved_path_chars() {
    check("pub-18-get-unreserved-path-chars");
}

#[test]
fn pub_19_post_json_with_query() {
    check("pub-19-post-json-with-query");
}

#[test]
fn pub_20_get_project_id_header() {
    check("pub-20-get-project-id-header");
}

#[test]
fn pub_21_post_custom_headers() {
    check("pub-21-post-custom-headers");
}

#[test]
fn pub_22_get_json_content_type_empty_body() {
    check("pub-22-get-json-content-type-empty-body");
}
