//! Sending upstream with the pooled client, reading what the gateway's
//! answer says (APIG errors, its clock), and the one place a failed
//! exchange is classified: the client's fault (413, 408, 400) or the
//! upstream's (502).

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use chrono::{DateTime, Utc};

use crate::auth::Provider;
use crate::body::{BodyIdle, LimitExceeded, Progress};
use crate::client::HttpClient;
use crate::config::Route;
use crate::error::{ProxyBody, ProxyError, chain};
use crate::gateway::{self, HintContext, Kind, Seen, codes};
use crate::state::State;

/// One send of one request on a route: the request, the answer's head, and
/// what the gateway said in it.
pub struct Once<'a> {
    pub state: &'a State,
    pub route: &'a Route,
    pub provider: Option<&'a Provider>,
    pub body: &'a Progress,
}

impl Once<'_> {
    /// Sends, waits for the head (the caller bounds the time), then reads
    /// what an APIG error or the `Date` header says.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<(Response<ProxyBody>, Seen), ProxyError> {
        let (state, route) = (self.state, self.route);
        let response = send(&state.client, req, self.body, route).await?;
        let received = (state.local_clock())();
        let source = route.upstream.authority.as_str();
        if let Some(date) = gateway::http_date(response.headers()) {
            state.skew.observe(date, received, source);
        }
        let idle = state.config.server.idle_timeout;
        let (response, seen) = gateway::inspect(response, idle, |err, status| {
            let cx = HintContext {
                credentials: route.credentials.as_deref(),
                kind: self.provider.map_or(Kind::None, Provider::kind),
                upstream: &route.upstream.url(),
                skew_seconds: seen_skew(state, err, received),
            };
            codes::hint(err, status, &cx)
        })
        .await;
        // A signature-expired message's server time is newer and finer than `Date`.
        if let Some(t) = seen.error.as_ref().and_then(|e| e.server_time()) {
            state.skew.observe(t, received, source);
        }
        if let Some(err) = &seen.error {
            state.metrics.gateway_error(&err.code);
            let hint = response.headers().get(gateway::HINT_HEADER);
            tracing::warn!(
                route = %route.prefix,
                status = response.status().as_u16(),
                code = %err.code,
                gateway_request_id = err.request_id.as_deref().unwrap_or(""),
                hint = hint.and_then(|h| h.to_str().ok()).unwrap_or(""),
                "API Gateway error: {}",
                err.message
            );
        }
        Ok((response, seen))
    }
}

/// The skew to quote in a hint: from the error's own `server time` when it
/// has one (it is newer than any measurement), else the last one.
fn seen_skew(state: &State, err: &gateway::GatewayError, received: DateTime<Utc>) -> Option<i64> {
    match err.server_time() {
        Some(t) => Some((t - received).num_seconds()),
        None => state.skew.offset().map(|d| d.num_seconds()),
    }
}

/// Sends `req` and waits for the response head (the caller bounds the time).
async fn send(
    client: &HttpClient,
    req: Request<ProxyBody>,
    body: &Progress,
    route: &Route,
) -> Result<Response<Incoming>, ProxyError> {
    // An Upgrade handshake goes over HTTP/1.1 (h2 has no such upgrade).
    let sent = if req.headers().contains_key(header::UPGRADE) {
        client.upgrade(req).await
    } else {
        client.request(req).await
    };
    sent.map_err(|e| classify_upstream_error(&e, body, route))
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
