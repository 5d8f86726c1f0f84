//! The errors the proxy itself answers with, and the one place they become
//! responses: JSON `{"error":{"code":…,"message":…}}` with an
//! `x-modelarts-proxy-error` header, so they are never mistaken for the
//! service's own (DESIGN §6).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Any error a body or connection can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of everything the proxy sends and receives.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Marks a response as made by the proxy; the value is the error code.
pub const ERROR_HEADER: &str = "x-modelarts-proxy-error";

/// Why the proxy answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "request body is larger than {key} ({}); Huawei API Gateway rejects bodies over 12 MB",
        size(*limit)
    )]
    BodyTooLarge { limit: u64, key: &'static str },
    #[error("no response head from the upstream within {} (timeout)", humantime::format_duration(*.0))]
    UpstreamTimeout(Duration),
    #[error(
        "the client did not send its request body within {} (timeout)",
        humantime::format_duration(*.0)
    )]
    RequestTimeout(Duration),
    #[error(
        "the client sent no byte of its request body for {} (idle_timeout)",
        humantime::format_duration(*.0)
    )]
    RequestIdle(Duration),
    #[error("{0}")]
    UpstreamUnreachable(String),
    #[error("{0}")]
    CredentialsUnavailable(String),
    #[error(
        "requests with [credentials.{credentials}] are held back{}: the gateway rejected its signature 3 times in a row, and API Gateway locks an AK for 5 minutes after 5; fix the key (a reload or a change of its files resumes at once). The gateway said: {last}",
        held_for(*remaining)
    )]
    CredentialsRejected {
        credentials: String,
        remaining: Duration,
        last: String,
    },
    #[error("no route for {path}; configured prefixes: {prefixes}")]
    NoRoute { path: String, prefixes: String },
    #[error("{0}")]
    ForbiddenClient(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", overloaded_message(*wanted, *budget, *never_fits))]
    Overloaded {
        wanted: u64,
        budget: u64,
        never_fits: bool,
    },
    #[error("{0} is not allowed: the proxy does not forward it with your credentials")]
    MethodNotAllowed(String),
    #[error("the request headers are {size} bytes, more than server.max_header_bytes ({limit})")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error(
        "route {route} is over its {limit}: the request waited {} (queue_timeout) without its turn; the proxy paces it so the gateway does not throttle",
        humantime::format_duration(*waited)
    )]
    RateLimited {
        route: String,
        /// `rate (20/s)`, `concurrency (16)`, or the slowed-down rate.
        limit: String,
        waited: Duration,
        /// When a turn is likely, for `Retry-After`.
        retry_after: Duration,
    },
    #[error("internal error")]
    Internal,
}

impl ProxyError {
    /// The stable machine-readable code, also sent in `x-modelarts-proxy-error`.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::RequestTimeout(_) => "request_timeout",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::CredentialsUnavailable(_) => "credentials_unavailable",
            ProxyError::CredentialsRejected { .. } => "credentials_rejected",
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::ForbiddenClient(_) => "forbidden_client",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::RequestIdle(_) => "request_timeout",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::Internal => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::CredentialsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::CredentialsRejected { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::ForbiddenClient(_) => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestIdle(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response the client sees: `{"error":{"code","message","request_id"}}`.
    pub fn to_response(&self, request_id: &str) -> Response<ProxyBody> {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string(), "request_id": request_id }
        });
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            // Room in the budget comes back as soon as the requests ahead finish.
            ProxyError::Overloaded {
                never_fits: false, ..
            } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(OVERLOADED_RETRY_AFTER),
                );
            }
            ProxyError::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            }
            // The cool-down's end, or a probe's turn (when one is out now).
            ProxyError::CredentialsRejected { remaining, .. } => {
                let secs = remaining.as_secs().max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ProxyError::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        resp
    }
}

/// Seconds a client is told to wait after 503 `overloaded`: buffered
/// uploads finish in well under this on a local link.
const OVERLOADED_RETRY_AFTER: &str = "2";

/// The `Allow` header of a 405: every method but TRACE (and CONNECT,
/// which is refused earlier as a forward-proxy request).
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A byte size for people: `12 MiB`, `64 KiB`, `1.5 MiB`, `700 B`.
pub fn size(bytes: u64) -> String {
    for (unit, name) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= unit {
            let whole = bytes / unit;
            return if bytes.is_multiple_of(unit) {
                format!("{whole} {name}")
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

fn held_for(remaining: Duration) -> String {
    if remaining.is_zero() {
        " while a probe request is out".to_owned()
    } else {
        format!(
            " for {}",
            humantime::format_duration(Duration::from_secs(remaining.as_secs().max(1)))
        )
    }
}

fn overloaded_message(wanted: u64, budget: u64, never_fits: bool) -> String {
    if never_fits {
        format!(
            "the request body ({}) is larger than the whole buffer budget (server.buffer_budget = {}); \
             raise the budget or send the body unsigned",
            size(wanted),
            size(budget)
        )
    } else {
        format!(
            "the proxy is holding as many request bodies as its buffer budget allows ({}); retry shortly",
            size(budget)
        )
    }
}

/// A body with no bytes.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A complete body from bytes.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Renders an error and its causes as `outer: inner: innermost`, skipping
/// causes whose text the outer message already contains.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_json_with_the_proxy_error_header() {
        let err = ProxyError::BodyTooLarge {
            limit: 12 * 1024 * 1024,
            key: "max_body",
        };
        let resp = err.to_response("0123abcd");
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.headers()[ERROR_HEADER], "body_too_large");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "body_too_large");
        assert_eq!(v["error"]["request_id"], "0123abcd");
        assert_eq!(
            v["error"]["message"],
            "request body is larger than max_body (12 MiB); Huawei API Gateway rejects bodies over 12 MB"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(12 * 1024 * 1024), "12 MiB");
        assert_eq!(size(64 * 1024), "64 KiB");
        assert_eq!(size(1536 * 1024), "1.5 MiB");
        assert_eq!(size(700), "700 B");
    }

    #[test]
    fn every_code_has_its_status() {
        let cases = [
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(40)),
                504,
                "upstream_timeout",
            ),
            (
                ProxyError::UpstreamUnreachable("x".into()),
                502,
                "upstream_unreachable",
            ),
            (
                ProxyError::CredentialsUnavailable("x".into()),
                503,
                "credentials_unavailable",
            ),
            (
                ProxyError::NoRoute {
                    path: "/x".into(),
                    prefixes: "/v1".into(),
                },
                404,
                "no_route",
            ),
            (
                ProxyError::ForbiddenClient("x".into()),
                403,
                "forbidden_client",
            ),
            (ProxyError::BadRequest("x".into()), 400, "bad_request"),
            (ProxyError::Internal, 500, "internal_error"),
        ];
        for (err, status, code) in cases {
            assert_eq!((err.status().as_u16(), err.code()), (status, code));
        }
        assert_eq!(
            ProxyError::UpstreamTimeout(Duration::from_secs(40)).to_string(),
            "no response head from the upstream within 40s (timeout)"
        );
    }
}
