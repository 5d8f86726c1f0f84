//! Checking a received request's SDK-HMAC-SHA256 signature, the way the
//! gateway does: read `SignedHeaders` from `Authorization`, take those headers
//! from the request as received, recompute, compare, and check the clock.
//!
//! Used by `modelarts-proxy dev` and by the tests' stand-in upstream.

use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Uri};

use super::{ALGORITHM, AkSk, Payload, SignableRequest, SigningOutput, X_SDK_DATE};

/// The three fields of an `Authorization: SDK-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedAuthorization<'a> {
    pub access: &'a str,
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

/// Why a signature was rejected; the message is safe to show a client.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no Authorization header")]
    MissingAuthorization,
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    #[error("unknown access key {0:?}")]
    UnknownAccessKey(String),
    #[error("signed header {0:?} is missing from the request")]
    MissingSignedHeader(String),
    #[error("signed header {0:?} appears more than once")]
    RepeatedSignedHeader(String),
    #[error("signed header {0:?} is not valid UTF-8")]
    NonUtf8Header(String),
    #[error("{0} must be a signed header")]
    MustBeSigned(&'static str),
    #[error("x-sdk-date {0:?} is not YYYYMMDDTHHMMSSZ")]
    BadDate(String),
    #[error("x-sdk-date is {skew_secs}s away from the server clock (limit {limit_secs}s)")]
    DateOutOfWindow { skew_secs: i64, limit_secs: i64 },
    #[error("x-security-token does not match the credentials")]
    SecurityTokenMismatch,
    #[error(
        "signature mismatch; the server computed canonical request {canonical_request:?} and string to sign {string_to_sign:?}"
    )]
    SignatureMismatch {
        canonical_request: String,
        string_to_sign: String,
    },
}

/// Splits `SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<ParsedAuthorization<'_>, VerifyError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(VerifyError::MalformedAuthorization(
            "it does not start with \"SDK-HMAC-SHA256 \"",
        ))?;
    let mut access = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in rest.split(", ") {
        let (k, v) = field
            .split_once('=')
            .ok_or(VerifyError::MalformedAuthorization("a field has no '='"))?;
        let slot = match k {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(VerifyError::MalformedAuthorization("unknown field")),
        };
        if slot.replace(v).is_some() {
            return Err(VerifyError::MalformedAuthorization("a field appears twice"));
        }
    }
    match (access, signed_headers, signature) {
        (Some(access), Some(signed_headers), Some(signature)) => Ok(ParsedAuthorization {
            access,
            signed_headers,
            signature,
        }),
        _ => Err(VerifyError::MalformedAuthorization(
            "it needs Access, SignedHeaders and Signature",
        )),
    }
}

/// Verifies a received request. `lookup` maps an access key to its credentials;
/// `window` is how far `X-Sdk-Date` may be from `now` (the gateway allows 15 min).
/// On success returns the recomputed signing output.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    lookup: impl Fn(&str) -> Option<AkSk>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Result<SigningOutput, VerifyError> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(VerifyError::MissingAuthorization)?
        .to_str()
        .map_err(|_| VerifyError::MalformedAuthorization("it is not ASCII"))?;
    let auth = parse_authorization(auth)?;
    let key =
        lookup(auth.access).ok_or_else(|| VerifyError::UnknownAccessKey(auth.access.to_owned()))?;

    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in auth.signed_headers.split(';') {
        // HTTP/2 carries the host in `:authority` (hyper puts it in the URI), not in a header.
        if name == "host"
            && !headers.contains_key(http::header::HOST)
            && let Some(authority) = uri.authority()
        {
            signed.push((name, authority.as_str()));
            continue;
        }
        let mut values = headers.get_all(name).iter();
        let value = values
            .next()
            .ok_or_else(|| VerifyError::MissingSignedHeader(name.to_owned()))?;
        if values.next().is_some() {
            return Err(VerifyError::RepeatedSignedHeader(name.to_owned()));
        }
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| VerifyError::NonUtf8Header(name.to_owned()))?;
        signed.push((name, value));
    }
    let date = signed
        .iter()
        .find(|(n, _)| *n == X_SDK_DATE)
        .ok_or(VerifyError::MustBeSigned("x-sdk-date"))?
        .1;
    if !signed.iter().any(|(n, _)| *n == "host") {
        return Err(VerifyError::MustBeSigned("host"));
    }
    let time = super::parse_sdk_date(date).ok_or_else(|| VerifyError::BadDate(date.to_owned()))?;
    let skew = (now - time).num_seconds();
    if skew.abs() > window.num_seconds() {
        return Err(VerifyError::DateOutOfWindow {
            skew_secs: skew,
            limit_secs: window.num_seconds(),
        });
    }
    if let Some(token) = &key.security_token {
        let sent = signed
            .iter()
            .find(|(n, _)| *n == super::X_SECURITY_TOKEN)
            .map(|(_, v)| *v);
        if sent != Some(token.expose()) {
            return Err(VerifyError::SecurityTokenMismatch);
        }
    }

    let req = SignableRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers: &signed,
        payload: Payload::Bytes(body),
    };
    let out = super::sign(&req, &key, time).map_err(|_| VerifyError::MustBeSigned("host"))?;
    if !constant_time_eq(out.signature.as_bytes(), auth.signature.as_bytes()) {
        return Err(VerifyError::SignatureMismatch {
            canonical_request: out.canonical_request.redacted(),
            string_to_sign: out.string_to_sign.to_string(),
        });
    }
    Ok(out)
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sdk_authorization_format() {
        let a = parse_authorization(
            "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature=abcd",
        )
        .unwrap();
        assert_eq!(
            a,
            ParsedAuthorization {
                access: "AK1",
                signed_headers: "host;x-sdk-date",
                signature: "abcd"
            }
        );
    }

    #[test]
    fn rejects_malformed_authorization() {
        for bad in [
            "",
            "SDK-HMAC-SHA256",
            "Bearer x",
            "SDK-HMAC-SHA256 Access=A",
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature=s, Access=B",
            "SDK-HMAC-SHA256 Access=A,SignedHeaders=host,Signature=s",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
    }
}
