//! Sending upstream: the pooled client under the request's deadline, and
//! the one place a failed exchange is classified (whose fault it was).

use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::client::HttpClient;
use crate::config::Route;
use crate::error::{ProxyBody, ProxyError, chain};

/// Sends `req`; no response head by `deadline` is a 504.
pub async fn within(
    deadline: Instant,
    client: &HttpClient,
    req: Request<ProxyBody>,
    tripped: &AtomicBool,
    route: &Route,
) -> Result<Response<Incoming>, ProxyError> {
    match tokio::time::timeout_at(deadline, client.request(req)).await {
        Ok(result) => result.map_err(|e| classify_upstream_error(&e, tripped, route)),
        Err(_elapsed) => Err(ProxyError::UpstreamTimeout(route.timeout)),
    }
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
    tripped: &AtomicBool,
    route: &Route,
) -> ProxyError {
    if tripped.load(Ordering::Acquire) {
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
    // The client's own body failing (disconnect mid-upload) is not the upstream's fault.
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
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
