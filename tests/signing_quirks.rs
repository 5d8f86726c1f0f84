//! One case per quirk of `tests/data/signing/SPEC.md` §0, from
//! `tests/data/signing/quirks.json` (signed by Huawei's official Python SDK,
//! `huaweicloudsdkcore` 3.1.219, through `gen_quirks.py`). Each test signs its
//! case and checks every stage against the SDK: canonical URI, canonical
//! query, payload line, canonical request, signed headers, string to sign,
//! signature, Authorization. Hermetic: the SDK's values are in the JSON.

use base64::Engine;
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::{
    self, AkSk, Payload, SignableRequest, SigningOutput, UNSIGNED_PAYLOAD, canonical,
};
use serde_json::Value;

const QUIRKS: &str = include_str!("data/signing/quirks.json");

fn case(id: &str) -> Value {
    let all: Value = serde_json::from_str(QUIRKS).expect("quirks.json parses");
    all["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id}"))
        .clone()
}

fn text<'a>(c: &'a Value, field: &str) -> &'a str {
    c[field]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {field} is not a string", c["id"]))
}

fn body(c: &Value) -> Vec<u8> {
    match c.get("body_b64").and_then(Value::as_str) {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("base64 body"),
        None => text(c, "body").as_bytes().to_vec(),
    }
}

/// The headers the SDK signed, built the way a caller of `signer::sign` must:
/// the case's headers, `X-Security-Token` for temporary credentials, the
/// automatic UNSIGNED-PAYLOAD decided by `signer::sdk_auto_unsigned`, and
/// `Host` from the authority unless the case sets one.
fn headers(c: &Value) -> Vec<(String, String)> {
    let id = text(c, "id");
    let mut headers: Vec<(String, String)> = c["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    if let Some(token) = c["security_token"].as_str() {
        headers.push(("X-Security-Token".into(), token.into()));
    }
    // The SDK looks at the exact key `Content-Type` (SPEC §2.2).
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "Content-Type")
        .map(|(_, v)| v.as_str());
    let auto = signer::sdk_auto_unsigned(content_type);
    assert_eq!(
        auto,
        c["sdk_auto_unsigned"].as_bool().unwrap(),
        "{id}: sdk_auto_unsigned({content_type:?})"
    );
    if auto {
        headers.retain(|(k, _)| k != "X-Sdk-Content-Sha256");
        headers.push(("X-Sdk-Content-Sha256".into(), UNSIGNED_PAYLOAD.into()));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        headers.push(("Host".into(), text(c, "host").into()));
    }
    headers
}

fn sign_with(c: &Value, query: Option<&str>, payload: Payload<'_>) -> SigningOutput {
    let headers = headers(c);
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let req = SignableRequest {
        method: text(c, "method"),
        path: text(c, "path"),
        query,
        headers: &header_refs,
        payload,
    };
    let key = AkSk {
        access_key: text(c, "ak").into(),
        secret_key: Secret::new(text(c, "sk")),
        security_token: None,
    };
    let time = signer::parse_sdk_date(text(c, "sdk_date")).expect("sdk_date");
    signer::sign(&req, &key, time).expect("signs")
}

fn assert_matches_sdk(c: &Value, out: &SigningOutput, how: &str) {
    let id = text(c, "id");
    let cr = &out.canonical_request;
    assert_eq!(
        cr.canonical_uri(),
        text(c, "canonical_uri"),
        "{id} ({how}): canonical URI"
    );
    assert_eq!(
        cr.canonical_query(),
        text(c, "canonical_query"),
        "{id} ({how}): canonical query"
    );
    assert_eq!(
        cr.payload_hash(),
        text(c, "payload_hash"),
        "{id} ({how}): payload line"
    );
    assert_eq!(
        cr.signed_headers(),
        text(c, "signed_headers"),
        "{id} ({how}): signed headers"
    );
    assert_eq!(
        cr.to_string(),
        text(c, "canonical_request"),
        "{id} ({how}): canonical request"
    );
    assert_eq!(
        out.string_to_sign.to_string(),
        text(c, "string_to_sign"),
        "{id} ({how}): string to sign"
    );
    assert_eq!(
        out.signature,
        text(c, "signature"),
        "{id} ({how}): signature"
    );
    assert_eq!(
        out.authorization,
        text(c, "authorization"),
        "{id} ({how}): authorization"
    );
    assert_eq!(out.date, text(c, "sdk_date"), "{id} ({how}): x-sdk-date");
}

/// Signs case `id` and checks every stage against the SDK. A non-empty body
/// is also signed as `Payload::Streaming` (when `X-Sdk-Content-Sha256` is
/// present) or `Payload::Sha256Hex` (otherwise): same result expected.
fn check(id: &str) -> SigningOutput {
    let c = case(id);
    let query = c["query"].as_str();

    // The decoded pairs the SDK was given are what the signer parses.
    let parsed: Vec<Value> = canonical::parse_query(query.unwrap_or(""))
        .into_iter()
        .map(|(k, v)| Value::from(vec![k.into_owned(), v.into_owned()]))
        .collect();
    assert_eq!(
        Value::from(parsed),
        c["query_params"],
        "{id}: parsed query params"
    );

    let body = body(&c);
    assert_eq!(
        body.len() as u64,
        c["body_len"].as_u64().unwrap(),
        "{id}: body length"
    );
    let out = sign_with(&c, query, Payload::Bytes(&body));
    assert_matches_sdk(&c, &out, "Payload::Bytes");

    if !body.is_empty() {
        let has_content_sha256 = headers(&c)
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-sdk-content-sha256"));
        let (payload, how) = if has_content_sha256 {
            (Payload::Streaming, "Payload::Streaming")
        } else {
            (
                Payload::Sha256Hex(text(&c, "body_sha256")),
                "Payload::Sha256Hex",
            )
        };
        assert_matches_sdk(&c, &sign_with(&c, query, payload), how);
    }
    out
}

/// Guards against a case being added to quirks.json without a test here.
#[test]
fn every_case_has_a_test() {
    let all: Value = serde_json::from_str(QUIRKS).unwrap();
    let ids: Vec<&str> = all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, all["count"].as_u64().unwrap());
    let this_file = include_str!("signing_quirks.rs");
    for id in ids {
        let test_name = format!("fn {}()", id.replace('-', "_"));
        assert!(this_file.contains(&test_name), "case {id} has no test");
        let call = format!("check(\"{id}\")");
        assert!(this_file.contains(&call), "case {id} is never checked");
    }
}

// Quirk 1: the canonical URI always ends in `/`.

#[test]
fn canonical_uri_gets_a_trailing_slash() {
    check("canonical-uri-gets-a-trailing-slash");
}

// Quirk 2: the path is decoded once, split on `/`, re-encoded per segment.

#[test]
fn unicode_path_segment_literal() {
    check("unicode-path-segment-literal");
}

#[test]
fn unicode_path_segment_percent_encoded() {
    let encoded = check("unicode-path-segment-percent-encoded");
    let literal = check("unicode-path-segment-literal");
    assert_eq!(encoded.signature, literal.signature);
}

#[test]
fn lowercase_percent_escapes_in_path_are_uppercased() {
    check("lowercase-percent-escapes-in-path-are-uppercased");
}

#[test]
fn percent_2f_in_path_becomes_a_separator() {
    check("percent-2f-in-path-becomes-a-separator");
}

#[test]
fn double_slashes_and_dot_segments_are_kept() {
    check("double-slashes-and-dot-segments-are-kept");
}

#[test]
fn plus_in_path_is_encoded() {
    check("plus-in-path-is-encoded");
}

#[test]
fn reserved_characters_in_path_are_encoded() {
    check("reserved-characters-in-path-are-encoded");
}

// Quirk 3: the query is sorted on decoded keys, then decoded values.

#[test]
fn repeated_keys_sort_by_value_as_strings() {
    check("repeated-keys-sort-by-value-as-strings");
}

#[test]
fn query_sorts_on_decoded_keys() {
    check("query-sorts-on-decoded-keys");
}

#[test]
fn upper_case_keys_sort_before_lower_case() {
    check("upper-case-keys-sort-before-lower-case");
}

#[test]
fn key_sorts_before_longer_keys_it_prefixes() {
    check("key-sorts-before-longer-keys-it-prefixes");
}

// Quirk 4: `+` is a literal plus; query encoding.

#[test]
fn literal_plus_in_query_is_signed_as_2b() {
    check("literal-plus-in-query-is-signed-as-2b");
}

#[test]
fn percent_20_space_in_query() {
    check("percent-20-space-in-query");
}

#[test]
fn reserved_characters_in_query_values_percent_encoded() {
    check("reserved-characters-in-query-values-percent-encoded");
}

#[test]
fn reserved_characters_in_query_values_raw() {
    check("reserved-characters-in-query-values-raw");
}

#[test]
fn unicode_and_tilde_in_query() {
    check("unicode-and-tilde-in-query");
}

// Quirk 5: every pair gets an `=`; empty keys are dropped by the parse rule.

#[test]
fn key_without_equals_is_signed_with_empty_value() {
    check("key-without-equals-is-signed-with-empty-value");
}

#[test]
fn empty_value_keeps_its_equals() {
    check("empty-value-keeps-its-equals");
}

#[test]
fn empty_key_parts_are_dropped() {
    check("empty-key-parts-are-dropped");
}

// Quirk 6: an empty body always hashes the empty string.

#[test]
fn empty_body_with_unsigned_payload_hashes_the_empty_string() {
    check("empty-body-with-unsigned-payload-hashes-the-empty-string");
}

#[test]
fn empty_body_with_auto_unsigned_hashes_the_empty_string() {
    check("empty-body-with-auto-unsigned-hashes-the-empty-string");
}

// Quirk 7: X-Sdk-Content-Sha256 is the payload line, verbatim.

#[test]
fn content_sha256_header_is_used_verbatim() {
    check("content-sha256-header-is-used-verbatim");
}

#[test]
fn content_sha256_mixed_case_hex_is_kept() {
    check("content-sha256-mixed-case-hex-is-kept");
}

#[test]
fn content_sha256_value_is_not_checked() {
    check("content-sha256-value-is-not-checked");
}

// Quirk 8: the SDK's automatic UNSIGNED-PAYLOAD (decided here by
// `signer::sdk_auto_unsigned`, checked against the SDK in `headers`).

#[test]
fn auto_unsigned_for_text_json() {
    check("auto-unsigned-for-text-json");
}

#[test]
fn auto_unsigned_for_multipart_form_data() {
    check("auto-unsigned-for-multipart-form-data");
}

#[test]
fn auto_unsigned_for_octet_stream() {
    check("auto-unsigned-for-octet-stream");
}

#[test]
fn auto_unsigned_for_form_urlencoded() {
    check("auto-unsigned-for-form-urlencoded");
}

#[test]
fn auto_unsigned_for_upper_case_application_json() {
    check("auto-unsigned-for-upper-case-application-json");
}

#[test]
fn json_patch_content_type_is_hashed() {
    check("json-patch-content-type-is-hashed");
}

#[test]
fn bson_content_type_is_hashed() {
    check("bson-content-type-is-hashed");
}

// Quirk 9: every header is signed except names containing `_`.

#[test]
fn header_names_with_underscore_are_not_signed() {
    check("header-names-with-underscore-are-not-signed");
}

#[test]
fn every_other_header_is_signed() {
    check("every-other-header-is-signed");
}

#[test]
fn security_token_header_is_signed() {
    check("security-token-header-is-signed");
}

// Quirk 10: header values are trimmed at both ends only, like `str.strip()`.

#[test]
fn header_values_trimmed_at_both_ends_only() {
    check("header-values-trimmed-at-both-ends-only");
}

#[test]
fn non_ascii_whitespace_trimmed_like_python_strip() {
    check("non-ascii-whitespace-trimmed-like-python-strip");
}

#[test]
fn header_value_case_and_non_ascii_kept() {
    check("header-value-case-and-non-ascii-kept");
}

// Quirk 11: the canonical headers block ends with a blank line.

#[test]
fn canonical_headers_end_with_a_blank_line() {
    let out = check("canonical-headers-end-with-a-blank-line");
    assert!(
        out.canonical_request
            .as_str()
            .contains("\nx-sdk-date:20240115T080910Z\n\nhost;x-a;x-sdk-date\n")
    );
}

// Quirk 12: Host is the authority verbatim, port included.

#[test]
fn host_with_explicit_port() {
    check("host-with-explicit-port");
}

#[test]
fn host_with_default_port_is_kept() {
    check("host-with-default-port-is-kept");
}

#[test]
fn explicit_host_header_wins_and_keeps_its_case() {
    check("explicit-host-header-wins-and-keeps-its-case");
}

// Quirk 13: no credential scope; the AK is not signed.

#[test]
fn access_key_is_not_covered_by_the_signature() {
    let other_ak = check("access-key-is-not-covered-by-the-signature");
    let base = check("canonical-uri-gets-a-trailing-slash");
    assert_ne!(other_ak.authorization, base.authorization);
    assert_eq!(other_ak.signature, base.signature);
}

#[test]
fn string_to_sign_has_no_credential_scope() {
    let out = check("string-to-sign-has-no-credential-scope");
    assert_eq!(out.string_to_sign.to_string().lines().count(), 3);
}

// Quirk 14: the SDK sends the canonical query; signing it gives the same result.

#[test]
fn wire_query_signs_like_the_raw_query() {
    check("wire-query-signs-like-the-raw-query");
    let c = case("wire-query-signs-like-the-raw-query");
    let (wire_path, wire_query) = text(&c, "wire_uri").split_once('?').expect("wire query");
    assert_eq!(wire_path, text(&c, "path"));
    assert_matches_sdk(
        &c,
        &sign_with(&c, Some(wire_query), Payload::Bytes(b"")),
        "wire query",
    );
}

// Method and bodies.

#[test]
fn lowercase_method_is_upper_cased() {
    check("lowercase-method-is-upper-cased");
}

#[test]
fn binary_body_is_hashed_as_bytes() {
    check("binary-body-is-hashed-as-bytes");
}

#[test]
fn json_body_over_1kib_is_hashed() {
    let out = check("json-body-over-1kib-is-hashed");
    assert!(body(&case("json-body-over-1kib-is-hashed")).len() > 1024);
    assert_ne!(out.canonical_request.payload_hash(), UNSIGNED_PAYLOAD);
}
