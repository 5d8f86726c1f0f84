//! What the proxy learns from API Gateway's answers (DESIGN §9): APIG's
//! JSON errors (`{"error_code":"APIG.0301","error_msg":…,"request_id":…}`),
//! recognised and passed through unchanged with an `x-modelarts-proxy-hint`;
//! and the gateway's clock, from `Date` headers and from the `server time`
//! of a signature-expired error.

pub mod codes;
pub mod mismatch;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, NaiveDateTime, Utc};
use http::{HeaderName, HeaderValue, Response, header};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::Prefixed;
use crate::error::{BoxError, ProxyBody};

pub use codes::{HintContext, Kind};

/// The header the proxy adds to an APIG error it recognises.
pub const HINT_HEADER: HeaderName = HeaderName::from_static("x-modelarts-proxy-hint");

/// APIG error bodies are a few hundred bytes (a canonical request at most);
/// an error body larger than this is passed on without a look.
pub const MAX_INSPECTED: usize = 64 * 1024;

/// An APIG error answer, as parsed from its JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayError {
    /// `APIG.0301` or `APIGW.0301`.
    pub code: String,
    pub message: String,
    /// The gateway's own request id.
    pub request_id: Option<String>,
}

impl GatewayError {
    /// Parses an APIG error body; `None` for anything else (the service's own errors).
    pub fn parse(body: &[u8]) -> Option<GatewayError> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let code = v.get("error_code")?.as_str()?;
        let number = code
            .strip_prefix("APIG.")
            .or_else(|| code.strip_prefix("APIGW."))?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(GatewayError {
            code: code.to_owned(),
            message: v
                .get("error_msg")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned(),
            request_id: v
                .get("request_id")
                .and_then(|r| r.as_str())
                .map(str::to_owned),
        })
    }

    /// The number after `APIG.` / `APIGW.`: `0301`.
    pub fn number(&self) -> &str {
        self.code.split_once('.').map_or("", |(_, n)| n)
    }

    /// True for a signature the gateway refused (DESIGN §9 breaker): `verify
    /// aksk signature fail`, a locked AK, or an expired signature.
    pub fn is_signature_rejection(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        matches!(self.number(), "0301" | "0303")
            && (m.contains("signature") || m.contains("reach the limit"))
    }

    /// The gateway's clock from a signature-expired message:
    /// `…signature expired, signature time:20230527T000431Z,server time:20230527T020608Z`.
    pub fn server_time(&self) -> Option<DateTime<Utc>> {
        let lower = self.message.to_ascii_lowercase();
        let at = lower.find("server time")?;
        let rest = self.message[at + "server time".len()..]
            .trim_start_matches([':', ' ', '='])
            .trim_start();
        let stamp: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        NaiveDateTime::parse_from_str(&stamp, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc())
    }
}

/// The time in an HTTP `Date` header (`Tue, 01 Dec 2026 10:45:10 GMT`).
pub fn http_date(headers: &http::HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.to_utc())
}

/// The gateway's own id for a request (APIG's `X-Request-Id`, or the
/// `request_id` of its error body), kept in the response's extensions for
/// the access log.
#[derive(Clone, Debug)]
pub struct GatewayRequestId(pub String);

/// What [`inspect`] found in an answer.
#[derive(Debug, Default)]
pub struct Seen {
    pub error: Option<GatewayError>,
    /// The error code of any Huawei-style error body: APIG's, or the
    /// service's own (`ModelArts.4206`), for the retry rules.
    pub code: Option<String>,
}

/// The `error_code` of a JSON error body (`{"error_code":"ModelArts.4206"}`),
/// or its OpenAI-style form (`{"error":{"code":"ModelArts.81101"}}`).
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v
        .get("error_code")
        .or_else(|| v.get("error")?.get("code"))?;
    code.as_str().map(str::to_owned)
}

/// Looks at an upstream answer: for an error status, its body
/// (up to [`MAX_INSPECTED`] bytes, read within `wait`). An APIG error gets
/// the hint header; the body goes on unchanged either way.
pub async fn inspect<B>(
    response: Response<B>,
    wait: Duration,
    hint: impl FnOnce(&GatewayError, u16) -> Option<String>,
) -> (Response<ProxyBody>, Seen)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let mut seen = Seen::default();
    let small = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_none_or(|len| len <= MAX_INSPECTED);
    let body = body.map_err(Into::into).boxed_unsync();
    if !(parts.status.is_client_error() || parts.status.is_server_error()) || !small {
        return (Response::from_parts(parts, body), seen);
    }
    let (head, rest) = read_head(body, wait).await;
    seen.code = error_code(&head);
    if let Some(err) = GatewayError::parse(&head) {
        if let Some(line) = hint(&err, parts.status.as_u16())
            && let Ok(v) = HeaderValue::from_str(&line)
        {
            parts.headers.insert(HINT_HEADER, v);
        }
        seen.error = Some(err);
    }
    if let Some(id) = seen.error.as_ref().and_then(|e| e.request_id.clone()) {
        parts.extensions.insert(GatewayRequestId(id));
    }
    let body = match rest {
        Some(rest) => Prefixed::new(head, rest).boxed_unsync(),
        None => crate::error::full(head),
    };
    (Response::from_parts(parts, body), seen)
}

/// Reads up to [`MAX_INSPECTED`] bytes: the bytes, and what is left of the
/// body (the rest, or its failure) if it did not end within `wait`.
async fn read_head(mut body: ProxyBody, wait: Duration) -> (Bytes, Option<ProxyBody>) {
    let mut head = BytesMut::new();
    let read = async {
        while head.len() <= MAX_INSPECTED {
            match body.frame().await {
                None => return Ok(true),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        head.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(false)
    };
    let rest = match tokio::time::timeout(wait, read).await {
        Ok(Ok(true)) => None,
        Ok(Ok(false)) | Err(_) => Some(body),
        Ok(Err(e)) => Some(Failed(Some(e)).boxed_unsync()),
    };
    (head.freeze(), rest)
}

/// A body whose next frame is `0`'s error: an upstream body that failed
/// while it was being read stays failed for the client.
struct Failed(Option<BoxError>);

impl Body for Failed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::task::Poll::Ready(self.0.take().map(Err))
    }
}

#[cfg(test)]
mod tests;
