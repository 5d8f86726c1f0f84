//! The request path: one client request in, one upstream request out.
//!
//! [`handle`] composes the steps, one per line, in the order a request meets
//! them; each step is a function that says what it does. The connection
//! guard before them (limits, header timeout, idle close) lives in
//! `server`. Every failure is a [`ProxyError`], turned into a response in
//! one place ([`ProxyError::to_response`]), and every request, answered by
//! the upstream or by the proxy, ends in one access-log line written when
//! its response body ends ([`observe`]).

pub mod connection;
mod forward;
pub mod guard;
pub mod observe;
mod resend;
mod send;
pub mod upgrade;

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;

use crate::auth::inject::Outgoing;
use crate::body::RequestBody;
use crate::config::{Route, Server};
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::headers::{self, CLIENT_CREDENTIAL_HEADERS, HOP_BY_HOP};
use crate::request_id;
use crate::route::match_route;
use crate::state::{Shared, State};
pub use connection::Connection;
use observe::Exchange;

/// Serves one request: never fails; proxy errors become JSON responses.
pub async fn handle<B>(
    shared: &Shared,
    conn: &Arc<Connection>,
    req: Request<B>,
) -> Response<ProxyBody>
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let state = shared.state.load_full();
    // The access-log record: written, with the metrics, when the response body ends.
    let mut exchange = Exchange::begin(
        shared.metrics.clone(),
        conn.clone(),
        req.method(),
        req.uri(),
        request_id::for_request(req.headers()),
    );
    if let Some(telemetry) = &state.telemetry {
        let path = req.uri().path();
        exchange.trace_with(telemetry.request(req.method().as_str(), path, req.headers()));
    }
    let result = stack(&state, conn, req, &mut exchange).await;
    exchange.respond(result, state.config.server.idle_timeout)
}

/// The steps of the request path, top to bottom.
async fn stack<B>(
    state: &State,
    conn: &Connection,
    mut req: Request<B>,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let server = &state.config.server;
    // Who may use the proxy: allowed source addresses, and the shared secret when one is set.
    guard::check_client(server, conn.peer().map(|p| p.ip()), req.headers())?;
    // Never an open proxy or a DNS-rebinding target; nothing the upstream could read two ways.
    guard::check_head(&req, server)?;
    // Which upstream: the longest matching prefix.
    let (route, prefix_len) = find_route(state, req.uri().path())?;
    if let Some(metrics) = state.route_metrics.get(&route.prefix) {
        exchange.set_route(metrics.clone());
    }
    if let Some(trace) = exchange.trace() {
        trace.route(req.method().as_str(), &route.prefix);
    }
    // A WebSocket handshake keeps its Upgrade headers; after a 101 the connection is spliced.
    let websocket = upgrade::take(&mut req);
    // The gateway's size limit before any byte is read; the body is counted and idle-timed as it streams.
    let (parts, body, content_length) = admit(req, route, server)?;
    exchange.set_request_body(body.progress());
    // The upstream URL and the headers to forward (hop-by-hop, client credentials and the shared secret out).
    let rest = &parts.uri.path()[prefix_len..];
    let mut outgoing = rewrite(&parts, route, rest, content_length, server)?;
    // The request id goes upstream (not signed: a gateway may replace it).
    outgoing
        .headers
        .insert(request_id::X_REQUEST_ID, exchange.request_id().clone());
    if let Some(ws) = &websocket {
        ws.request_headers(&mut outgoing.headers);
    }
    // Pacing, then attempts (credentials, the send with its resends, 401 recovery, retries and
    // failover), within the gateway's deadline until the response head.
    let rest = forward::Rest {
        path: rest,
        query: parts.uri.query(),
    };
    let response = forward::forward(state, route, outgoing, rest, body, exchange).await?;
    // The response streams back without its hop-by-hop headers (its idle timer is set by `respond`);
    // after a 101 the WebSocket is spliced, idle-timed, owned by the connection.
    Ok(match websocket {
        Some(ws) => ws.finish(
            response,
            conn,
            server.idle_timeout,
            upgrade::Labels {
                route: route.prefix.clone(),
                request_id: exchange.request_id().clone(),
            },
        ),
        None => stream_back(response),
    })
}

/// The route for `path`, and the length of the part of `path` its prefix
/// matched (the rest goes under the upstream's base path).
fn find_route<'s>(state: &'s State, path: &str) -> Result<(&'s Route, usize), ProxyError> {
    match match_route(&state.config.routes, path) {
        Some((route, rest)) => Ok((route, path.len() - rest.len())),
        None => Err(ProxyError::NoRoute {
            path: path.to_owned(),
            prefixes: state
                .config
                .routes
                .iter()
                .map(|r| r.prefix.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A `Content-Length` over `max_body` is refused before anything is read;
/// the body that is let in is cut at `max_body` and at `idle_timeout`.
fn admit<B>(
    req: Request<B>,
    route: &Route,
    server: &Server,
) -> Result<(http::request::Parts, RequestBody, Option<u64>), ProxyError>
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let content_length = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ProxyError::BadRequest("invalid Content-Length".to_owned()))?,
        ),
    };
    if content_length.is_some_and(|len| len > route.max_body) {
        return Err(ProxyError::BodyTooLarge {
            limit: route.max_body,
            key: "max_body",
        });
    }
    let (parts, body) = req.into_parts();
    let body = RequestBody::new(
        body.map_err(Into::into).boxed_unsync(),
        route.max_body,
        server.idle_timeout,
    );
    Ok((parts, body, content_length))
}

/// The upstream request's URL and headers: the route's base path plus the
/// rest and the query byte for byte, `Host` the upstream's authority, the
/// route's headers set.
fn rewrite(
    parts: &http::request::Parts,
    route: &Route,
    rest: &str,
    content_length: Option<u64>,
    server: &Server,
) -> Result<Outgoing, ProxyError> {
    let uri = forward::target_uri(
        &route.upstream,
        &forward::Rest {
            path: rest,
            query: parts.uri.query(),
        },
    )?;
    let secret = server.require_header.as_ref().map(|r| &r.name);
    let mut headers = forward_headers(&parts.headers, secret);
    headers.insert(
        header::HOST,
        HeaderValue::from_str(route.upstream.authority.as_str())
            .map_err(|_| ProxyError::Internal)?,
    );
    if let Some(len) = content_length {
        // Repeated identical values (allowed by `check_head`) go on as one.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    for (name, value) in &route.headers {
        headers.insert(name.clone(), value.clone());
    }
    Ok(Outgoing {
        method: parts.method.clone(),
        uri,
        headers,
        content_length,
    })
}

/// Copies the headers to forward: no hop-by-hop headers (nor those the
/// `Connection` header names), no client credentials, no shared secret, no
/// Host, no Expect (the proxy has already read, or is streaming, the body).
fn forward_headers(src: &HeaderMap, secret: Option<&HeaderName>) -> HeaderMap {
    let listed = headers::connection_listed(src);
    let mut out = HeaderMap::with_capacity(src.len() + 6);
    for (name, value) in src {
        let drop = HOP_BY_HOP.contains(&name.as_str())
            || CLIENT_CREDENTIAL_HEADERS.contains(&name.as_str())
            || name == header::HOST
            || name == header::EXPECT
            || Some(name) == secret
            || listed.contains(name);
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn stream_back(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    headers::strip_hop_by_hop(response.headers_mut());
    response
}
