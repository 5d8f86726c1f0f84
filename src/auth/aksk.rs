//! AK/SK credentials at run time, and the one place a request is decorated
//! with an SDK-HMAC-SHA256 signature: the proxy does it to every AK/SK
//! request, `modelarts-proxy sign` to the one it prints.

use chrono::{DateTime, Utc};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{PayloadMode, ResolvedKey};
use crate::headers::name::{X_PROJECT_ID, X_SDK_CONTENT_SHA256, X_SDK_DATE, X_SECURITY_TOKEN};
use crate::signer::{self, AkSk, Payload, SignableRequest, SigningKey, SigningOutput};

/// A long-lived or temporary AK/SK ready to sign with.
#[derive(Clone, Debug)]
pub struct AkSkCredentials {
    pub key: AkSk,
    /// The same key with its HMAC key schedule precomputed.
    pub signing_key: SigningKey,
    /// Sent and signed as `X-Project-Id` when set.
    pub project_id: Option<String>,
    pub origin: String,
}

impl AkSkCredentials {
    pub fn new(key: AkSk, project_id: Option<String>, origin: impl Into<String>) -> Self {
        AkSkCredentials {
            signing_key: SigningKey::new(&key),
            key,
            project_id,
            origin: origin.into(),
        }
    }
}

impl From<&ResolvedKey> for AkSkCredentials {
    fn from(r: &ResolvedKey) -> Self {
        AkSkCredentials::new(r.key.clone(), r.project_id.clone(), r.origin.clone())
    }
}

/// True when the body goes as `UNSIGNED-PAYLOAD` (streamed, not hashed):
/// the route's choice, or for `auto` the official SDK's rule on the content type.
pub fn is_unsigned(mode: PayloadMode, content_type: Option<&str>) -> bool {
    match mode {
        PayloadMode::Signed => false,
        PayloadMode::Unsigned => true,
        PayloadMode::Auto => signer::sdk_auto_unsigned(content_type),
    }
}

/// How the body enters the signature.
#[derive(Clone, Copy, Debug)]
pub enum BodyHash<'a> {
    /// The whole body (hashed here; empty means the empty-string hash).
    Bytes(&'a [u8]),
    /// A non-empty body already hashed while it was read: lower-case hex SHA-256.
    Sha256Hex(&'a str),
    /// A body that streams unhashed (`X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`).
    /// An empty one is still signed with the empty-string hash (SPEC quirk 6).
    Unsigned { empty: bool },
}

/// Why a request cannot be signed as it stands.
#[derive(Debug, thiserror::Error)]
pub enum DecorateError {
    /// A signed header sent twice could be read two ways upstream.
    #[error("header {0} appears more than once; it is signed, so send it once")]
    Repeated(HeaderName),
    #[error("header {0} is not valid UTF-8")]
    NotUtf8(HeaderName),
    #[error("header {0} has an invalid value")]
    InvalidValue(HeaderName),
    /// A credential that cannot go in a header (a bad token or key file).
    #[error("the {0} has characters not allowed in a header")]
    Credential(&'static str),
    #[error(transparent)]
    Signer(#[from] signer::SigningError),
}

/// The request line the signature covers, exactly as sent.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Adds what AK/SK signing puts on a request (`X-Security-Token`,
/// `X-Project-Id`, `X-Sdk-Content-Sha256` for an unsigned body, `X-Sdk-Date`,
/// `Authorization`) and signs it.
///
/// What is signed (DESIGN §6): `host`, `x-sdk-date`, and each header that
/// the proxy sets or that changes the meaning of the request
/// (`content-type`, `x-sdk-content-sha256`, `x-security-token`,
/// `x-project-id`, and `also_sign`: the route's headers); not arbitrary
/// client headers. Signed values are trimmed on the wire as the signer
/// trims them, so the wire carries what is signed.
pub fn decorate(
    creds: &AkSkCredentials,
    target: Target<'_>,
    headers: &mut HeaderMap,
    body: BodyHash<'_>,
    also_sign: &[&HeaderName],
    now: DateTime<Utc>,
) -> Result<SigningOutput, DecorateError> {
    if let Some(token) = &creds.key.security_token {
        let mut value = HeaderValue::from_str(token.expose())
            .map_err(|_| DecorateError::Credential("security token"))?;
        value.set_sensitive(true);
        headers.insert(X_SECURITY_TOKEN, value);
    }
    if let Some(project) = &creds.project_id {
        let value =
            HeaderValue::from_str(project).map_err(|_| DecorateError::Credential("project id"))?;
        headers.insert(X_PROJECT_ID, value);
    }
    if matches!(body, BodyHash::Unsigned { .. }) {
        headers.insert(
            X_SDK_CONTENT_SHA256,
            HeaderValue::from_static(signer::UNSIGNED_PAYLOAD),
        );
    }

    let mut names: Vec<&HeaderName> = vec![&header::HOST];
    let own = [
        &header::CONTENT_TYPE,
        &X_SDK_CONTENT_SHA256,
        &X_SECURITY_TOKEN,
        &X_PROJECT_ID,
        &X_SDK_DATE,
    ];
    for name in own.into_iter().chain(also_sign.iter().copied()) {
        if headers.contains_key(name) && !names.contains(&name) {
            names.push(name);
        }
    }
    trim_signed_values(headers, &names)?;
    let mut pairs = Vec::with_capacity(names.len());
    for name in &names {
        if let Some(v) = single_value(headers, name)? {
            pairs.push((name.as_str(), v));
        }
    }
    let payload = match body {
        BodyHash::Bytes(bytes) => Payload::Bytes(bytes),
        BodyHash::Sha256Hex(hex) => Payload::Sha256Hex(hex),
        BodyHash::Unsigned { empty: true } => Payload::Bytes(&[]),
        BodyHash::Unsigned { empty: false } => Payload::Streaming,
    };
    let signable = SignableRequest {
        method: target.method,
        path: target.path,
        query: target.query,
        headers: &pairs,
        payload,
    };
    let output = creds.signing_key.sign(&signable, now)?;
    let date =
        HeaderValue::from_str(&output.date).map_err(|_| DecorateError::InvalidValue(X_SDK_DATE))?;
    let authorization = HeaderValue::from_str(&output.authorization)
        .map_err(|_| DecorateError::Credential("access key"))?;
    headers.insert(X_SDK_DATE, date);
    headers.insert(header::AUTHORIZATION, authorization);
    Ok(output)
}

/// The wire must carry what is signed: values trimmed as the signer trims them.
fn trim_signed_values(headers: &mut HeaderMap, names: &[&HeaderName]) -> Result<(), DecorateError> {
    for &name in names {
        if let Some(v) = single_value(headers, name)? {
            let trimmed = signer::canonical::trim_header_value(v);
            if trimmed.len() != v.len() {
                let value = HeaderValue::from_str(trimmed)
                    .map_err(|_| DecorateError::InvalidValue(name.clone()))?;
                headers.insert(name.clone(), value);
            }
        }
    }
    Ok(())
}

/// A signed header's single value as text.
pub fn single_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, DecorateError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DecorateError::Repeated(name.clone()));
    }
    std::str::from_utf8(first.as_bytes())
        .map(Some)
        .map_err(|_| DecorateError::NotUtf8(name.clone()))
}
