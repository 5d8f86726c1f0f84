//! The request path: one client request in, one upstream request out.
//!
//! [`handle`] composes the steps, one per line, in the order a request meets
//! them; each step is a function with a name saying what it does. Every
//! failure is a [`ProxyError`], turned into a response in one place
//! ([`ProxyError::to_response`]).

pub mod guard;
mod send;

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;

use crate::auth::inject::{self, Injection, Outgoing};
use crate::body::RequestBody;
use crate::config::Route;
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::headers::{self, CLIENT_CREDENTIAL_HEADERS, HOP_BY_HOP};
use crate::route::{match_route, upstream_path_and_query};
use crate::state::{Shared, State};

/// Serves one request: never fails, proxy errors become JSON responses.
pub async fn handle<B>(shared: &Shared, req: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let state = shared.state.load_full();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    shared.metrics.in_flight.inc();
    let mut route_label = "none";
    let result = stack(&state, shared, req, &mut route_label).await;
    let elapsed = started.elapsed();
    shared.metrics.in_flight.dec();
    let (response, error) = match result {
        Ok(resp) => (resp, None),
        Err(err) => {
            tracing::warn!(route = route_label, %method, %path, code = err.code(), "{err}");
            (err.to_response(), Some(err.code()))
        }
    };
    let status = response.status().as_u16();
    shared
        .metrics
        .observe_request(route_label, status, error, elapsed);
    tracing::info!(
        target: "modelarts_proxy::access",
        %method,
        %path,
        route = route_label,
        status,
        error = error.unwrap_or(""),
        head_ms = elapsed.as_millis() as u64,
        "request"
    );
    response
}

/// The steps of the request path, top to bottom.
async fn stack<'s, B>(
    state: &'s State,
    shared: &Shared,
    req: Request<B>,
    route_label: &mut &'s str,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    // Never an open proxy, never a DNS-rebinding or cross-site target.
    guard::check_target(&req, &state.config.server)?;
    // Which upstream: the longest matching prefix.
    let (route, rest) = find_route(state, req.uri().path())?;
    *route_label = &route.prefix;
    let rest = rest.to_owned();
    // The gateway's size limit before anything is read; the body is counted as it streams.
    let (parts, body) = req.into_parts();
    let content_length = admit_length(&parts.headers, route)?;
    let body = RequestBody::new(body.map_err(Into::into).boxed_unsync(), route.max_body);
    // The upstream URL and the headers to forward (hop-by-hop and client credentials out).
    let outgoing = rewrite(&parts, route, &rest, content_length)?;
    // Credentials, the send and 401 recovery share the gateway's deadline.
    let response = forward(state, shared, route, outgoing, body).await?;
    // The response streams back, hop-by-hop headers removed.
    Ok(stream_back(response))
}

fn find_route<'s, 'p>(state: &'s State, path: &'p str) -> Result<(&'s Route, &'p str), ProxyError> {
    match_route(&state.config.routes, path).ok_or_else(|| ProxyError::NoRoute {
        path: path.to_owned(),
        prefixes: state
            .config
            .routes
            .iter()
            .map(|r| r.prefix.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A `Content-Length` over `max_body` is refused before anything is read.
fn admit_length(headers: &HeaderMap, route: &Route) -> Result<Option<u64>, ProxyError> {
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ProxyError::BadRequest("invalid Content-Length".to_owned()))?,
        ),
    };
    if content_length.is_some_and(|len| len > route.max_body) {
        return Err(ProxyError::BodyTooLarge {
            limit: route.max_body,
            key: "max_body",
        });
    }
    Ok(content_length)
}

/// The upstream request's URL and headers: the route's base path plus the
/// rest and the query byte for byte, `Host` the upstream's authority, the
/// route's headers set.
fn rewrite(
    parts: &http::request::Parts,
    route: &Route,
    rest: &str,
    content_length: Option<u64>,
) -> Result<Outgoing, ProxyError> {
    let path_and_query =
        upstream_path_and_query(&route.upstream.base_path, rest, parts.uri.query());
    let uri = Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
    let mut headers = forward_headers(&parts.headers);
    headers.insert(
        header::HOST,
        HeaderValue::from_str(route.upstream.authority.as_str())
            .map_err(|_| ProxyError::Internal)?,
    );
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
/// `Connection` header names), no client credentials, no Host, no Expect
/// (the proxy has already read, or is streaming, the body).
fn forward_headers(src: &HeaderMap) -> HeaderMap {
    let listed = headers::connection_listed(src);
    let mut out = HeaderMap::with_capacity(src.len() + 6);
    for (name, value) in src {
        let drop = HOP_BY_HOP.contains(&name.as_str())
            || CLIENT_CREDENTIAL_HEADERS.contains(&name.as_str())
            || name == header::HOST
            || name == header::EXPECT
            || listed.contains(name);
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Injects the credential, sends, and answers a 401, all within the
/// route's `timeout` (the gateway's 40 s) until the response head.
async fn forward(
    state: &State,
    shared: &Shared,
    route: &Route,
    outgoing: Outgoing,
    body: RequestBody,
) -> Result<Response<hyper::body::Incoming>, ProxyError> {
    let deadline = tokio::time::Instant::now() + route.timeout;
    let tripped = body.tripped();
    let provider = route
        .credentials
        .as_ref()
        .and_then(|name| state.providers.get(name));
    let cx = Injection {
        route,
        deadline,
        now: (shared.clock)(),
        metrics: &state.metrics,
    };
    // Reading the client's body (to hash it, or to see whether it is empty)
    // is timed apart from waiting on the upstream, so a stalled upload is a
    // 408 and not blamed on the upstream.
    let (request, recovery) = match tokio::time::timeout_at(
        deadline,
        inject::inject(provider, outgoing, body, &cx),
    )
    .await
    {
        Ok(result) => result?,
        Err(_elapsed) => return Err(ProxyError::RequestTimeout(route.timeout)),
    };
    let send = |req| send::within(deadline, &state.client, req, &tripped, route);
    let response = send(send::chunked_if_unknown(request)).await?;
    match recovery.after(response.status(), &cx).await {
        Some(again) => send(again).await,
        None => Ok(response),
    }
}

fn stream_back(response: Response<hyper::body::Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
}
