//! Sending upstream with the pooled client, sending again what the
//! upstream provably did not process ([`super::resend`]), reading what the
//! gateway's answer says (APIG errors, its clock), and the one place a
//! failed exchange is classified: the client's fault (413, 408, 400) only
//! when the client's own body failed, otherwise the upstream's (502).

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use chrono::{DateTime, Utc};

use super::resend::{self, MAX_RESENDS, Resend};
use crate::auth::Provider;
use crate::auth::inject::Replay;
use crate::body::{BodyIdle, LimitExceeded, Progress};
use crate::client::MAX_RESPONSE_HEAD;
use crate::config::{Route, Upstream};
use crate::error::{ProxyBody, ProxyError, chain};
use crate::gateway::{self, HintContext, Kind, Seen, codes};
use crate::state::State;
use crate::traffic::Target;

/// One send of one request on a route: the request, the answer's head, and
/// what the gateway said in it.
pub struct Once<'a> {
    pub state: &'a State,
    pub route: &'a Route,
    /// Where this attempt goes: the route's upstream or a fallback.
    pub target: &'a Target,
    pub provider: Option<&'a Provider>,
    pub body: &'a Progress,
}

/// A send that got no answer: the error for the client, and whether no
/// connection could be made at all (refused, reset, TLS or DNS failure:
/// no byte of the request was written, so it may be tried again).
#[derive(Debug)]
pub struct Failed {
    pub error: ProxyError,
    pub connect: bool,
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Failed {
        Failed {
            error,
            connect: false,
        }
    }
}

impl Once<'_> {
    /// Sends (and sends again what the upstream did not process, from
    /// `replay`), waits for the head (the caller bounds the time), then
    /// reads what an APIG error or the `Date` header says.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        replay: Option<&Replay<'_>>,
        signed: Option<&str>,
    ) -> Result<(Response<ProxyBody>, Seen), Failed> {
        let (state, route, target) = (self.state, self.route, self.target);
        let request_id = req.headers().get(crate::request_id::X_REQUEST_ID).cloned();
        let response = self.send_until_processed(req, replay).await?;
        let received = (state.local_clock())();
        let source = target.upstream.authority.as_str();
        if let Some(date) = gateway::http_date(response.headers()) {
            state.skew.observe(date, received, source);
        }
        let idle = state.config.server.idle_timeout;
        let (response, seen) = gateway::inspect(response, idle, |err, status| {
            let cx = HintContext {
                credentials: target.credentials.as_deref(),
                kind: self.provider.map_or(Kind::None, Provider::kind),
                upstream: &target.upstream.url(),
                skew_seconds: seen_skew(state, err, received),
                signed,
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
            let text =
                |v: Option<&HeaderValue>| v.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            state
                .metrics
                .remember_gateway_error(crate::metrics::GatewayErrorSeen {
                    at: received.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    route: route.prefix.clone(),
                    status: response.status().as_u16(),
                    code: err.code.clone(),
                    message: gateway::mismatch::redact(&err.message).into_owned(),
                    hint: text(hint),
                    request_id: text(request_id.as_ref()),
                    gateway_request_id: err.request_id.clone().unwrap_or_default(),
                });
            tracing::warn!(
                route = %route.prefix,
                status = response.status().as_u16(),
                code = %err.code,
                gateway_request_id = err.request_id.as_deref().unwrap_or(""),
                hint = hint.and_then(|h| h.to_str().ok()).unwrap_or(""),
                "API Gateway error: {}",
                gateway::mismatch::redact(&err.message)
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

impl Once<'_> {
    /// Sends `req` and waits for the response head (the caller bounds the
    /// time). A send the upstream provably did not process, or an
    /// idempotent one that a reused connection dropped unanswered, goes out
    /// again from `replay` (up to [`MAX_RESENDS`] times).
    async fn send_until_processed(
        &self,
        mut req: Request<ProxyBody>,
        replay: Option<&Replay<'_>>,
    ) -> Result<Response<Incoming>, Failed> {
        let (client, route) = (&self.state.client, self.route);
        let upstream = &self.target.upstream;
        let mut resends = 0;
        let mut fresh = false;
        loop {
            let idempotent = resend::is_idempotent(req.method());
            // An Upgrade handshake goes over HTTP/1.1 (h2 has no such upgrade).
            let sent = if req.headers().contains_key(header::UPGRADE) {
                client.upgrade(req).await
            } else if fresh {
                client.request_fresh(req).await
            } else {
                client.request(req).await
            };
            let err = match sent {
                Ok(response) => {
                    return match head_size(response.headers()) {
                        size if size > MAX_RESPONSE_HEAD => {
                            Err(head_too_large(upstream, &format!("{size} bytes")).into())
                        }
                        _ => Ok(response),
                    };
                }
                Err(err) => err,
            };
            // A connect failure is no connection's ordinary life; a client's
            // failed body is not the upstream's doing.
            let why = (!err.is_connect() && !self.body.failed())
                .then(|| resend::classify(&err))
                .flatten();
            let again = why.filter(|w| w.applies(idempotent, err.reused()));
            match (again, replay) {
                (Some(why), Some(replay)) if resends < MAX_RESENDS => {
                    resends += 1;
                    // An HTTP/2 refusal or GOAWAY is resent through the pool
                    // once (its next stream waits for a free slot, or goes on
                    // the connection that replaces the one going away: one
                    // new connection for all the streams that were refused);
                    // anything else, and a second resend, on a connection of
                    // its own, not on another idle one that may be closing.
                    fresh = fresh || !why.is_h2() || resends > 1;
                    self.state.metrics.resend(why.as_str());
                    tracing::debug!(
                        route = %route.prefix,
                        reason = why.as_str(),
                        resend = resends,
                        "sending the request again: {}",
                        chain(&err)
                    );
                    req = replay.request()?;
                }
                _ => {
                    return Err(Failed {
                        error: classify_upstream_error(&err, self.body, route, upstream, why),
                        connect: err.is_connect() && !self.body.failed(),
                    });
                }
            }
        }
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

/// The bytes a response head's fields take as HTTP/1.1 writes them.
fn head_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The upstream answered with a head over [`MAX_RESPONSE_HEAD`]; `what`
/// says how large, or what the HTTP library said of it.
fn head_too_large(upstream: &Upstream, what: &dyn std::fmt::Display) -> ProxyError {
    ProxyError::UpstreamUnreachable(format!(
        "upstream {} sent a response head larger than {} KiB, the most the proxy accepts: {what}",
        upstream.authority,
        MAX_RESPONSE_HEAD / 1024,
    ))
}

/// Whose fault a failed send is, and what the client is told: the
/// client's only when its own body failed (cut at `max_body`, stalled past
/// `idle_timeout`, broken off), the upstream's otherwise, with the cause.
fn classify_upstream_error(
    err: &crate::client::Error,
    body: &Progress,
    route: &Route,
    upstream: &Upstream,
    why: Option<Resend>,
) -> ProxyError {
    if body.tripped() {
        return ProxyError::BodyTooLarge {
            limit: route.max_body,
            key: "max_body",
        };
    }
    if body.failed() {
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
            source = cause.source();
        }
        return ProxyError::BadRequest(format!(
            "the request body from the client failed: {}",
            chain(err)
        ));
    }
    let authority = upstream.authority.as_str();
    if err.is_connect() {
        return ProxyError::UpstreamUnreachable(format!(
            "cannot connect to upstream {authority}: {}",
            chain(err)
        ));
    }
    if resend::is_head_too_large(err) {
        return head_too_large(upstream, &chain(err));
    }
    if let Some(why) = why {
        return ProxyError::UpstreamUnreachable(format!(
            "upstream {authority} {}{}: {}",
            why.describe(),
            match why {
                Resend::ClosedBeforeAnswer =>
                    "; only GET, HEAD, OPTIONS, PUT and DELETE are sent again then",
                _ => "",
            },
            chain(err)
        ));
    }
    ProxyError::UpstreamUnreachable(format!(
        "upstream {authority} failed before sending a response head: {}",
        chain(err)
    ))
}
