//! SDK-HMAC-SHA256, exactly as Huawei's official SDK (`huaweicloudsdkcore`
//! 3.1.219, `Signer.sign()`) computes it. See `tests/data/signing/SPEC.md`.
//!
//! [`sign`] is a pure function: request description + credentials + time →
//! the `X-Sdk-Date` and `Authorization` values. Each stage of the spec is a
//! value whose `Display` prints exactly the spec's text:
//!
//! ```text
//! CanonicalRequest = METHOD "\n" CanonicalURI "\n" CanonicalQueryString "\n"
//!                    CanonicalHeaders "\n" SignedHeaders "\n" PayloadHash
//! StringToSign     = "SDK-HMAC-SHA256" "\n" X-Sdk-Date "\n" hex(SHA256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(key = SK, StringToSign))
//! Authorization    = "SDK-HMAC-SHA256 Access=" AK ", SignedHeaders=" SignedHeaders ", Signature=" Signature
//! ```

pub mod canonical;
pub mod verify;

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The algorithm name, the first token of `Authorization` and line 1 of the string to sign.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// SHA-256 of the empty string: the payload line of every empty body, even an
/// UNSIGNED-PAYLOAD one (SPEC quirk 6).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The `X-Sdk-Content-Sha256` value that tells the gateway the body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ` in UTC.
pub const X_SDK_DATE: &str = "x-sdk-date";

/// Header whose value, when present and the body non-empty, replaces the body hash.
pub const X_SDK_CONTENT_SHA256: &str = "x-sdk-content-sha256";

/// Header carrying the security token of temporary AK/SK credentials.
pub const X_SECURITY_TOKEN: &str = "x-security-token";

/// An access key / secret key pair, optionally temporary.
#[derive(Clone, Debug)]
pub struct AkSk {
    /// Sent in clear in `Access=`; not covered by the signature (SPEC quirk 13).
    pub access_key: String,
    /// The HMAC key.
    pub secret_key: Secret,
    /// Sent (and signed) as `X-Security-Token` for temporary credentials.
    pub security_token: Option<Secret>,
}

/// What the payload line is computed from (SPEC §2.6 "Payload hash").
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// The whole body. Empty means the empty-string hash, whatever the headers say.
    Bytes(&'a [u8]),
    /// A non-empty body hashed elsewhere: its lower-case hex SHA-256.
    Sha256Hex(&'a str),
    /// A non-empty body that is not hashed; `X-Sdk-Content-Sha256` must be
    /// among the headers (normally `UNSIGNED-PAYLOAD`).
    Streaming,
}

/// A request as it will be sent on the wire.
#[derive(Clone, Copy, Debug)]
pub struct SignableRequest<'a> {
    /// Upper-cased only inside the canonical request.
    pub method: &'a str,
    /// The path exactly as sent (`/v1/a%2Fb`), not decoded or normalised.
    pub path: &'a str,
    /// The raw query exactly as sent, without `?`.
    pub query: Option<&'a str>,
    /// Every header to sign, as sent. Must include `host`. Names containing
    /// `_` are skipped, as the SDK does (SPEC quirk 9).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body, or how to stand in for it.
    pub payload: Payload<'a>,
}

/// Why a request cannot be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("no host header to sign")]
    MissingHost,
    #[error("a streamed body needs an x-sdk-content-sha256 header")]
    StreamingWithoutContentSha256,
}

/// Stage 1: the canonical request (SPEC §2.6). `Display` prints the exact text that is hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRequest {
    text: String,
    uri: Range<usize>,
    query: Range<usize>,
    signed_headers: Range<usize>,
    payload_hash: Range<usize>,
}

impl CanonicalRequest {
    /// Builds the canonical request. `date` is the `X-Sdk-Date` value added
    /// when the headers carry none.
    pub fn new(req: &SignableRequest<'_>, date: &str) -> Result<Self, SigningError> {
        // Lower-cased names, Python-stripped values, names with `_` left out.
        let mut headers: Vec<(std::borrow::Cow<'_, str>, &str)> =
            Vec::with_capacity(req.headers.len() + 1);
        let mut has_host = false;
        let mut has_date = false;
        let mut content_sha256 = None;
        for &(name, value) in req.headers {
            if name.contains('_') {
                continue;
            }
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(name.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(name)
            };
            let value = canonical::trim_header_value(value);
            match &*name {
                "host" => has_host = true,
                X_SDK_DATE => has_date = true,
                X_SDK_CONTENT_SHA256 => content_sha256 = Some(value),
                _ => {}
            }
            headers.push((name, value));
        }
        if !has_host {
            return Err(SigningError::MissingHost);
        }
        if !has_date {
            headers.push((std::borrow::Cow::Borrowed(X_SDK_DATE), date));
        }
        headers.sort_by(|a, b| a.0.cmp(&b.0));

        let payload_hash: std::borrow::Cow<'_, str> = match req.payload {
            Payload::Bytes([]) => EMPTY_SHA256.into(),
            _ if content_sha256.is_some() => content_sha256.unwrap_or_default().into(),
            Payload::Bytes(body) => hex::encode(Sha256::digest(body)).into(),
            Payload::Sha256Hex(hex) => hex.into(),
            Payload::Streaming => return Err(SigningError::StreamingWithoutContentSha256),
        };

        let mut text = String::with_capacity(256 + req.path.len() + req.query.map_or(0, str::len));
        for b in req.method.bytes() {
            text.push(b.to_ascii_uppercase() as char);
        }
        text.push('\n');
        let uri_start = text.len();
        canonical::canonical_uri_into(req.path, &mut text);
        let uri = uri_start..text.len();
        text.push('\n');
        let query_start = text.len();
        if let Some(q) = req.query {
            canonical::canonical_query_into(q, &mut text);
        }
        let query = query_start..text.len();
        text.push('\n');
        for (name, value) in &headers {
            text.push_str(name);
            text.push(':');
            text.push_str(value);
            text.push('\n');
        }
        text.push('\n');
        let signed_start = text.len();
        for (i, (name, _)) in headers.iter().enumerate() {
            if i > 0 {
                text.push(';');
            }
            text.push_str(name);
        }
        let signed_headers = signed_start..text.len();
        text.push('\n');
        let payload_start = text.len();
        text.push_str(&payload_hash);
        let payload_hash = payload_start..text.len();
        Ok(CanonicalRequest {
            text,
            uri,
            query,
            signed_headers,
            payload_hash,
        })
    }

    /// The CanonicalURI line (`/v1/items/`).
    pub fn canonical_uri(&self) -> &str {
        &self.text[self.uri.clone()]
    }

    /// The CanonicalQueryString line.
    pub fn canonical_query(&self) -> &str {
        &self.text[self.query.clone()]
    }

    /// `SignedHeaders`: sorted lower-case names joined with `;`.
    pub fn signed_headers(&self) -> &str {
        &self.text[self.signed_headers.clone()]
    }

    /// The payload line: a hex SHA-256 or the `X-Sdk-Content-Sha256` value.
    pub fn payload_hash(&self) -> &str {
        &self.text[self.payload_hash.clone()]
    }

    /// The whole text, as hashed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for CanonicalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Stage 2: the string to sign (SPEC §2.7): three lines, no credential scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringToSign {
    date: String,
    canonical_request_hash: String,
}

impl StringToSign {
    /// `"SDK-HMAC-SHA256\n" + date + "\n" + hex(SHA256(canonical_request))`.
    pub fn new(canonical_request: &CanonicalRequest, date: &str) -> Self {
        StringToSign {
            date: date.to_owned(),
            canonical_request_hash: hex::encode(Sha256::digest(canonical_request.as_str())),
        }
    }
}

impl fmt::Display for StringToSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ALGORITHM}\n{}\n{}",
            self.date, self.canonical_request_hash
        )
    }
}

/// Everything signing produced: the headers to add, and each stage for debugging.
#[derive(Clone, Debug)]
pub struct SigningOutput {
    /// The `X-Sdk-Date` value (added to the wire unless the request had one).
    pub date: String,
    /// The `Authorization` value.
    pub authorization: String,
    /// Lower-case hex HMAC.
    pub signature: String,
    pub canonical_request: CanonicalRequest,
    pub string_to_sign: StringToSign,
}

/// Formats a time as `X-Sdk-Date` does: `%Y%m%dT%H%M%SZ` in UTC.
pub fn format_sdk_date(time: DateTime<Utc>) -> String {
    let mut s = String::with_capacity(16);
    let year = time.year().clamp(0, 9999) as u32;
    for (value, width) in [
        (year, 4),
        (time.month(), 2),
        (time.day(), 2),
        (u32::MAX, 0),
        (time.hour(), 2),
        (time.minute(), 2),
        (time.second().min(59), 2),
    ] {
        if width == 0 {
            s.push('T');
            continue;
        }
        let mut div = 10u32.pow(width - 1);
        while div > 0 {
            s.push(char::from(b'0' + (value / div % 10) as u8));
            div /= 10;
        }
    }
    s.push('Z');
    s
}

/// Parses a strict `YYYYMMDDTHHMMSSZ` date, the only form this crate emits or accepts.
pub fn parse_sdk_date(value: &str) -> Option<DateTime<Utc>> {
    let b = value.as_bytes();
    let strict = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !strict {
        return None;
    }
    NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// Signs `req` with `key` at `time`. Pure: no clock, no I/O.
pub fn sign(
    req: &SignableRequest<'_>,
    key: &AkSk,
    time: DateTime<Utc>,
) -> Result<SigningOutput, SigningError> {
    let date = format_sdk_date(time);
    let canonical_request = CanonicalRequest::new(req, &date)?;
    let string_to_sign = StringToSign::new(&canonical_request, &date);
    let signature = hmac_hex(
        key.secret_key.expose().as_bytes(),
        string_to_sign.to_string().as_bytes(),
    );
    let authorization = format!(
        "{ALGORITHM} Access={}, SignedHeaders={}, Signature={}",
        key.access_key,
        canonical_request.signed_headers(),
        signature
    );
    Ok(SigningOutput {
        date,
        authorization,
        signature,
        canonical_request,
        string_to_sign,
    })
}

/// The official SDK's rule for an automatic UNSIGNED-PAYLOAD (SPEC quirk 8):
/// a `Content-Type` whose raw value does not start with `application/json`
/// or `application/bson` (case-sensitive). No content type: hashed.
pub fn sdk_auto_unsigned(content_type: Option<&str>) -> bool {
    match content_type {
        None | Some("") => false,
        Some(ct) => !ct.starts_with("application/json") && !ct.starts_with("application/bson"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sdk_date_round_trips() {
        let t = Utc.with_ymd_and_hms(2024, 1, 15, 8, 9, 10).unwrap();
        assert_eq!(format_sdk_date(t), "20240115T080910Z");
        assert_eq!(parse_sdk_date("20240115T080910Z"), Some(t));
    }

    #[test]
    fn sdk_date_parse_is_strict() {
        for bad in [
            "2024011T010203Z",
            "20240115t080910z",
            "20240115T080910",
            "20241315T080910Z",
            "",
        ] {
            assert_eq!(parse_sdk_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn auto_unsigned_follows_the_sdk_prefix_rule() {
        for (ct, unsigned) in [
            (None, false),
            (Some("application/json"), false),
            (Some("application/json;charset=UTF-8"), false),
            (Some("application/json-patch+json"), false),
            (Some("application/bson"), false),
            (Some("Application/JSON"), true),
            (Some("text/json"), true),
            (Some("multipart/form-data; boundary=x"), true),
            (Some("application/octet-stream"), true),
            (Some("application/x-www-form-urlencoded"), true),
        ] {
            assert_eq!(sdk_auto_unsigned(ct), unsigned, "{ct:?}");
        }
    }
}
