//! One bounded call to IAM, shared by every IAM flow (password, id token,
//! security tokens, agencies): a JSON `POST`, its answer read whole within
//! a time and size limit, and IAM's own words when it refuses.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};

use super::{SkewProbe, Token, parse_expires_at};
use crate::auth::aksk::{AkSkCredentials, BodyHash, Target, decorate};
use crate::auth::refresh::{Expiring, FetchError};
use crate::auth::temporary::parse_credential;
use crate::client::HttpClient;
use crate::error::{chain, full};
use crate::signer::AkSk;

/// One IAM call gives up after this long (IAM answers in well under a second).
pub const IAM_TIMEOUT: Duration = Duration::from_secs(20);

/// A token answer with `nocatalog=true` is a few KB; the catalog can add
/// hundreds. Anything larger is not a token answer.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Services' error bodies are quoted into messages up to this many characters.
const MAX_ERROR_TEXT: usize = 300;

/// How a call proves who is asking.
pub enum Auth<'a> {
    /// Nothing beyond the body (a password, an id token, a token in the body).
    None,
    /// A token in `X-Auth-Token`.
    Token(&'a HeaderValue),
    /// An SDK-HMAC-SHA256 signature (with `X-Security-Token` for temporary keys).
    Signature(&'a AkSkCredentials),
}

/// What IAM answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where a call goes and what it is for, for errors (never a secret).
pub struct Call<'a> {
    /// `IAM`, `CCE Pod Identity`, `IAM STS`.
    pub service: &'a str,
    pub url: &'a str,
    /// What is asked: `a token for user alice …`.
    pub step: &'a str,
    /// For the whole exchange, answer included.
    pub timeout: Duration,
    /// Where to report the service's clock.
    pub skew: Option<&'a SkewProbe>,
}

impl Call<'_> {
    /// An IAM call with IAM's time limit.
    pub fn iam<'a>(url: &'a str, step: &'a str, skew: Option<&'a SkewProbe>) -> Call<'a> {
        Call {
            service: "IAM",
            url,
            step,
            timeout: IAM_TIMEOUT,
            skew,
        }
    }
}

/// `POST` a JSON `body` with `extra` headers, bounded in time and size.
pub async fn post(
    client: &HttpClient,
    call: &Call<'_>,
    extra: &[(HeaderName, HeaderValue)],
    auth: Auth<'_>,
    body: String,
) -> Result<Answer, FetchError> {
    let Call {
        service,
        url,
        step,
        timeout,
        skew,
    } = *call;
    let request = build(url, extra, auth, body).map_err(|e| FetchError {
        message: format!("cannot ask {service} at {url} for {step}: {e}"),
        permanent: true,
    })?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| FetchError {
            message: format!("cannot reach {service} at {url}: {}", chain(&e)),
            permanent: false,
        })?;
        if let Some(probe) = skew {
            probe.observe(response.headers(), service);
        }
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| FetchError {
                message: format!("reading the answer of {service} at {url} failed: {e}"),
                permanent: false,
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError {
            message: format!(
                "{service} at {url} did not answer within {}s (for {step})",
                timeout.as_secs()
            ),
            permanent: false,
        })?
}

fn build(
    url: &str,
    extra: &[(HeaderName, HeaderValue)],
    auth: Auth<'_>,
    body: String,
) -> Result<Request<crate::error::ProxyBody>, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL ({e})"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf8"),
    );
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    match auth {
        Auth::None => {}
        Auth::Token(token) => {
            headers.insert(crate::headers::name::X_AUTH_TOKEN, token.clone());
        }
        Auth::Signature(base) => {
            // As the SDKs sign IAM calls: no X-Project-Id.
            let unscoped;
            let creds = if base.project_id.is_some() {
                unscoped = AkSkCredentials::new(base.key.clone(), None, base.origin.clone());
                &unscoped
            } else {
                base
            };
            let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            headers.insert(
                header::HOST,
                HeaderValue::from_str(host).map_err(|_| "invalid host".to_owned())?,
            );
            let target = Target {
                method: "POST",
                path: uri.path(),
                query: uri.query(),
            };
            let now = chrono::Utc::now();
            decorate(
                creds,
                target,
                &mut headers,
                BodyHash::Bytes(body.as_bytes()),
                &[],
                now,
            )
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        }
    }
    let mut request = Request::builder().method(Method::POST).uri(uri);
    if let Some(h) = request.headers_mut() {
        *h = headers;
    }
    request.body(full(body)).map_err(|e| e.to_string())
}

/// IAM said no: its status and message.
pub fn refused(answer: &Answer, step: &str) -> FetchError {
    refused_by("IAM", answer, step)
}

/// `service` said no to `step`: its status and its own message.
pub fn refused_by(service: &str, answer: &Answer, step: &str) -> FetchError {
    FetchError {
        message: format!(
            "{service} refused {step}: HTTP {}: {}",
            answer.status.as_u16(),
            service_message(&answer.body)
        ),
        permanent: will_not_heal(answer.status),
    }
}

/// 4xx other than 429 will not heal by retrying: such failures are retried slowly.
pub fn will_not_heal(status: StatusCode) -> bool {
    status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS
}

/// A token answer: 201, the token in `X-Subject-Token`, `token.expires_at`.
pub fn token_of(answer: Answer, step: &str) -> Result<Expiring<Token>, FetchError> {
    // IAM answers 201; the SDKs take any success that carries the token.
    if !answer.status.is_success() {
        return Err(refused(&answer, step));
    }
    let Some(mut header) = answer.headers.get("x-subject-token").cloned() else {
        return Err(FetchError {
            message: format!(
                "IAM answered {} for {step} but sent no X-Subject-Token header",
                answer.status.as_u16()
            ),
            permanent: false,
        });
    };
    header.set_sensitive(true);
    let expires_at = parse_expires_at(&answer.body).map_err(|e| FetchError {
        message: format!("IAM answered {} for {step} but {e}", answer.status.as_u16()),
        permanent: false,
    })?;
    Ok(Expiring {
        value: Token { header },
        expires_at,
    })
}

/// A temporary-key answer: 201 `{"credential":{access, secret, securitytoken, expires_at}}`.
pub fn security_key_of(answer: Answer, step: &str) -> Result<Expiring<AkSk>, FetchError> {
    if !answer.status.is_success() {
        return Err(refused(&answer, step));
    }
    parse_credential(&answer.body).map_err(|e| FetchError {
        message: format!("IAM answered {} for {step} but {e}", answer.status.as_u16()),
        permanent: false,
    })
}

/// What a service said: `error.message`, `error_msg` or `message` from its
/// JSON, else the start of the body. Bounded.
pub fn service_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["error_msg"].as_str())
            .or_else(|| v["message"].as_str())
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text: String = text.chars().take(MAX_ERROR_TEXT).collect();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_calls_are_signed_without_the_project() {
        let key = crate::signer::AkSk {
            access_key: "AKBASE".into(),
            secret_key: crate::secret::Secret::new("sk"),
            security_token: Some(crate::secret::Secret::new("st")),
        };
        let creds = AkSkCredentials::new(key, Some("proj".into()), "test");
        let request = build(
            "https://iam.example/v3.0/OS-CREDENTIAL/securitytokens",
            &[],
            Auth::Signature(&creds),
            "{}".into(),
        )
        .unwrap();
        let headers = request.headers();
        assert!(!headers.contains_key("x-project-id"), "{headers:?}");
        assert!(
            headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("SDK-HMAC-SHA256 Access=AKBASE,")
        );
        assert!(headers["x-security-token"].is_sensitive());
        assert_eq!(headers["host"], "iam.example");
    }

    #[test]
    fn service_messages_are_quoted_briefly() {
        assert_eq!(
            service_message(
                br#"{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}"#
            ),
            "The username or password is wrong."
        );
        assert_eq!(
            service_message(br#"{"error_code":"CCE.03400001","error_msg":"token expired"}"#),
            "token expired"
        );
        assert_eq!(service_message(b""), "(empty body)");
        assert_eq!(service_message(&[b'x'; 1000]).len(), MAX_ERROR_TEXT);
    }
}
