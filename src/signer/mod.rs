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

use chrono::{DateTime, NaiveDateTime, Utc};
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

pub use crate::headers::{CREDENTIAL_HEADERS, X_SDK_CONTENT_SHA256, X_SDK_DATE, X_SECURITY_TOKEN};

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

/// A request as it will be sent on the wire. `Debug` hides a security token.
#[derive(Clone, Copy)]
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

impl fmt::Debug for SignableRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|&(n, v)| {
                if CREDENTIAL_HEADERS.iter().any(|c| n.eq_ignore_ascii_case(c)) {
                    (n, "** redacted **")
                } else {
                    (n, v)
                }
            })
            .collect();
        f.debug_struct("SignableRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("payload", &self.payload)
            .finish()
    }
}

/// Why a request cannot be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("no host header to sign")]
    MissingHost,
    #[error("a streamed body needs an x-sdk-content-sha256 header")]
    StreamingWithoutContentSha256,
    #[error("x-sdk-date {0:?} is not YYYYMMDDTHHMMSSZ")]
    BadDate(String),
}

/// Stage 1: the canonical request (SPEC §2.6). `Display` prints the exact
/// text that is hashed; `Debug` and [`CanonicalRequest::redacted`] hide the
/// security token it may hold.
#[derive(Clone, PartialEq, Eq)]
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
            if name.as_bytes().contains(&b'_') {
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

        /// The payload line: given text, or the body's SHA-256 (hashed straight into the text).
        enum Line<'a> {
            Text(&'a str),
            HashOf(&'a [u8]),
        }
        let payload_line = match (req.payload, content_sha256) {
            (Payload::Bytes([]), _) => Line::Text(EMPTY_SHA256),
            (_, Some(value)) => Line::Text(value),
            (Payload::Bytes(body), None) => Line::HashOf(body),
            (Payload::Sha256Hex(hex), None) => Line::Text(hex),
            (Payload::Streaming, None) => return Err(SigningError::StreamingWithoutContentSha256),
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
        match payload_line {
            Line::Text(line) => text.push_str(line),
            Line::HashOf(body) => hex_into(&Sha256::digest(body), &mut text),
        }
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

    /// The text with credential header values replaced, safe to log or show.
    pub fn redacted(&self) -> String {
        self.text
            .split('\n')
            .map(|line| match line.split_once(':') {
                Some((name, _)) if CREDENTIAL_HEADERS.contains(&name) => {
                    format!("{name}:** redacted **")
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Debug for CanonicalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CanonicalRequest")
            .field(&self.redacted())
            .finish()
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
    text: String,
}

impl StringToSign {
    /// `"SDK-HMAC-SHA256\n" + date + "\n" + hex(SHA256(canonical_request))`.
    pub fn new(canonical_request: &CanonicalRequest, date: &str) -> Self {
        let mut text = String::with_capacity(ALGORITHM.len() + date.len() + 66);
        text.push_str(ALGORITHM);
        text.push('\n');
        text.push_str(date);
        text.push('\n');
        hex_into(&Sha256::digest(canonical_request.as_str()), &mut text);
        StringToSign { text }
    }

    /// The whole text, as signed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for StringToSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Lower-case hex, appended to `out` (table lookup: `hex::encode` builds
/// its string a character at a time and was a quarter of signing time).
fn hex_into(bytes: &[u8], out: &mut String) {
    /// Every byte's two lower-case hex digits.
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut table = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = [HEX[b >> 4], HEX[b & 0xf]];
            b += 1;
        }
        table
    };
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (pair, b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair.copy_from_slice(&PAIRS[*b as usize]);
        }
        // ASCII: the validation is a fast path, and there is no unsafe here.
        out.push_str(std::str::from_utf8(&buf[..2 * chunk.len()]).expect("hex digits are ASCII"));
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
    // Integer civil-date arithmetic (H. Hinnant's days-to-civil): chrono's
    // field accessors each recompute the date, a tenth of signing time.
    let secs = time.timestamp();
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999);
    let mut s = String::with_capacity(16);
    push_digits(&mut s, year, 4);
    push_digits(&mut s, month, 2);
    push_digits(&mut s, day, 2);
    s.push('T');
    push_digits(&mut s, sod / 3600, 2);
    push_digits(&mut s, sod / 60 % 60, 2);
    push_digits(&mut s, sod % 60, 2);
    s.push('Z');
    s
}

/// Appends `value` as exactly `width` (2 or 4) zero-padded decimal digits.
/// Constant divisors: the compiler turns them into multiplications.
fn push_digits(s: &mut String, value: i64, width: u32) {
    let digit = |d: i64| char::from(b'0' + d as u8);
    if width == 4 {
        s.push(digit(value / 1000 % 10));
        s.push(digit(value / 100 % 10));
    }
    s.push(digit(value / 10 % 10));
    s.push(digit(value % 10));
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

/// An AK/SK ready to sign with: the HMAC key schedule (the SK's inner and
/// outer pad states) is computed once, not per request.
#[derive(Clone)]
pub struct SigningKey {
    access_key: String,
    mac: Hmac<Sha256>,
}

impl SigningKey {
    pub fn new(key: &AkSk) -> Self {
        SigningKey {
            access_key: key.access_key.clone(),
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(key.secret_key.expose().as_bytes())
                .expect("HMAC takes a key of any length"),
        }
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Signs `req` at `time`. Pure: no clock, no I/O.
    pub fn sign(
        &self,
        req: &SignableRequest<'_>,
        time: DateTime<Utc>,
    ) -> Result<SigningOutput, SigningError> {
        let date = match req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(X_SDK_DATE))
        {
            // A date the caller already put on the request is the one signed (the SDK parses it).
            Some((_, value)) => {
                let value = canonical::trim_header_value(value);
                parse_sdk_date(value).ok_or_else(|| SigningError::BadDate(value.to_owned()))?;
                value.to_owned()
            }
            None => format_sdk_date(time),
        };
        let canonical_request = CanonicalRequest::new(req, &date)?;
        let string_to_sign = StringToSign::new(&canonical_request, &date);
        let mut mac = self.mac.clone();
        mac.update(string_to_sign.as_str().as_bytes());
        let mut signature = String::with_capacity(64);
        hex_into(&mac.finalize().into_bytes(), &mut signature);
        let signed_headers = canonical_request.signed_headers();
        let mut authorization = String::with_capacity(
            ALGORITHM.len() + self.access_key.len() + signed_headers.len() + signature.len() + 40,
        );
        for part in [
            ALGORITHM,
            " Access=",
            &self.access_key,
            ", SignedHeaders=",
            signed_headers,
            ", Signature=",
            &signature,
        ] {
            authorization.push_str(part);
        }
        Ok(SigningOutput {
            date,
            authorization,
            signature,
            canonical_request,
            string_to_sign,
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("access_key", &self.access_key)
            .field("secret_key", &"** redacted **")
            .finish()
    }
}

/// Signs `req` with `key` at `time`. Pure: no clock, no I/O. (The proxy keeps
/// a [`SigningKey`] per credential instead, to skip the key schedule.)
pub fn sign(
    req: &SignableRequest<'_>,
    key: &AkSk,
    time: DateTime<Utc>,
) -> Result<SigningOutput, SigningError> {
    SigningKey::new(key).sign(req, time)
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
    fn debug_output_hides_the_security_token() {
        let headers = [("host", "h"), ("X-Security-Token", "sts-secret-token")];
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            payload: Payload::Bytes(b""),
        };
        let key = AkSk {
            access_key: "AK".into(),
            secret_key: Secret::new("sk-secret"),
            security_token: None,
        };
        let out = sign(
            &req,
            &key,
            Utc.with_ymd_and_hms(2024, 1, 15, 8, 9, 10).unwrap(),
        )
        .unwrap();
        assert!(
            out.canonical_request
                .to_string()
                .contains("x-security-token:sts-secret-token"),
            "Display is the exact text"
        );
        for text in [
            format!("{req:?}"),
            format!("{out:?}"),
            out.canonical_request.redacted(),
            format!("{:?}", SigningKey::new(&key)),
        ] {
            assert!(
                !text.contains("sts-secret-token") && !text.contains("sk-secret"),
                "{text}"
            );
        }
        assert!(
            out.canonical_request
                .redacted()
                .contains("x-security-token:** redacted **")
        );
    }

    #[test]
    fn a_date_already_on_the_request_is_the_one_signed() {
        let headers = [("host", "h"), ("X-Sdk-Date", "20240115T080910Z")];
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            payload: Payload::Bytes(b""),
        };
        let key = AkSk {
            access_key: "AK".into(),
            secret_key: Secret::new("sk"),
            security_token: None,
        };
        let out = sign(
            &req,
            &key,
            Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap(),
        )
        .unwrap();
        assert_eq!(out.date, "20240115T080910Z");
        assert!(
            out.string_to_sign
                .to_string()
                .starts_with("SDK-HMAC-SHA256\n20240115T080910Z\n")
        );
        assert!(
            out.canonical_request
                .to_string()
                .contains("x-sdk-date:20240115T080910Z\n")
        );
        let bad = [("host", "h"), ("x-sdk-date", "2024-01-15")];
        let req = SignableRequest {
            headers: &bad,
            ..req
        };
        assert_eq!(
            sign(&req, &key, Utc::now()).unwrap_err(),
            SigningError::BadDate("2024-01-15".into())
        );
    }

    #[test]
    fn sdk_date_round_trips() {
        let t = Utc.with_ymd_and_hms(2024, 1, 15, 8, 9, 10).unwrap();
        assert_eq!(format_sdk_date(t), "20240115T080910Z");
        assert_eq!(parse_sdk_date("20240115T080910Z"), Some(t));
    }

    #[test]
    fn sdk_date_formatting_matches_chrono_across_calendars() {
        // Leap days, century rules, month ends, the epoch, and a sweep of days.
        let mut times: Vec<i64> = vec![
            0,
            951_782_400,
            951_868_799,
            4_107_542_399,
            1_709_164_800,
            253_402_300_799,
        ];
        times.extend((0..3000).map(|i| 946_684_800 + i * 86_399 * 7));
        for t in times {
            let time = DateTime::from_timestamp(t, 0).unwrap();
            assert_eq!(
                format_sdk_date(time),
                time.format("%Y%m%dT%H%M%SZ").to_string(),
                "{t}"
            );
        }
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
