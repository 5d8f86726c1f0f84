//! Sending upstream with the pooled client, and the one place a failed
//! exchange is classified: the client's fault (413, 408, 400) or the
//! upstream's (502).

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use crate::body::{BodyIdle, LimitExceeded, Progress};
use crate::client::HttpClient;
use crate::config::Route;
use crate::error::{ProxyBody, ProxyError, chain};

/// Sends `req` and waits for the response head (the caller bounds the time).
pub async fn send(
    client: &HttpClient,
    req: Request<ProxyBody>,
    body: &Progress,
    route: &Route,
) -> Result<Response<Incoming>, ProxyError> {
    client
        .request(req)
        .await
        .map_err(|e| classify_upstream_error(&e, body, route))
}

/// hyper writes no body at all for a GET/HEAD whose length it does not
/// know; saying "chunked" explicitly makes it send what was signed.
pub fn chunked_if_unknown(mut req: Request<ProxyBody>) -> Request<ProxyBody> {
    let body = req.body();
    if !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    req
}

fn classify_upstream_error(
    err: &hyper_util::client::legacy::Error,
    body: &Progress,
    route: &Route,
) -> ProxyError {
    if body.tripped() {
        return ProxyError::BodyTooLarge {
            limit: route.max_body,
            key: "max_body",
        };
    }
    let upstream = route.upstream.authority.as_str();
    if err.is_connect() {
        return ProxyError::UpstreamUnreachable(format!(
            "cannot connect to upstream {upstream}: {}",
            chain(err)
        ));
    }
    // The client's own body failing (stalled, too large, disconnected
    // mid-upload) is not the upstream's fault.
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(idle) = cause.downcast_ref::<BodyIdle>() {
            return ProxyError::RequestIdle(idle.after);
        }
        if cause.downcast_ref::<LimitExceeded>().is_some() {
            return ProxyError::BodyTooLarge {
                limit: route.max_body,
                key: "max_body",
            };
        }
        if let Some(h) = cause.downcast_ref::<hyper::Error>()
            && h.is_user()
        {
            return ProxyError::BadRequest(format!(
                "the request body from the client failed: {}",
                chain(err)
            ));
        }
        source = cause.source();
    }
    ProxyError::UpstreamUnreachable(format!(
        "upstream {upstream} failed before sending a response head: {}",
        chain(err)
    ))
}
