//! The end of the request path: the response body streams back under an
//! idle timer, and when it ends (or fails, or the client goes away) one
//! access-log line and the request's metrics are written, with the outcome.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::connection::Connection;
use crate::body::{IdleTimer, Progress};
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::gateway::GatewayRequestId;
use crate::metrics::{Done, Metrics, RouteMetrics};
use crate::request_id::X_REQUEST_ID;
use crate::telemetry::{Finished, RequestTrace};
use crate::usage::Scanner;

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// The client went away before the body ended.
    ClientAborted,
    /// The upstream's body failed (reset, closed early).
    UpstreamReset,
    /// The upstream sent nothing for `idle_timeout`; the stream was cut.
    IdleTimeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientAborted => "client_aborted",
            Outcome::UpstreamReset => "upstream_reset",
            Outcome::IdleTimeout => "idle_timeout",
        }
    }
}

/// The response went silent for `after` (`idle_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no byte of its response body for {}", humantime::format_duration(*.after))]
pub struct ResponseIdle {
    pub after: Duration,
}

/// One request from arrival to the end of its response body.
pub struct Exchange {
    metrics: Arc<Metrics>,
    conn: Arc<Connection>,
    started: Instant,
    method: Method,
    /// The request's target, for its path in the log (the query is not logged).
    uri: http::Uri,
    /// `None` until a route matched.
    route: Option<Arc<RouteMetrics>>,
    status: u16,
    error: Option<&'static str>,
    head_after: Duration,
    request_body: Option<Arc<Progress>>,
    bytes_out: u64,
    request_id: HeaderValue,
    /// The gateway's own id (APIG's `X-Request-Id`, or its error body's
    /// `request_id`), when it sent one.
    gateway_request_id: Option<String>,
    /// Attempts made upstream (retries and failovers included, resends not).
    attempts: u32,
    /// The target that answered (`scheme://authority`).
    upstream: Option<Arc<str>>,
    /// The request's pacing turn: its concurrency slot is held until the
    /// response body ends.
    turn: Option<crate::traffic::pace::Turn>,
    /// Reads the model's usage from a JSON or event-stream answer.
    usage: Option<Scanner>,
    /// The request's spans, when tracing is on.
    trace: Option<RequestTrace>,
    finished: bool,
}

impl Exchange {
    /// Starts the record; the request counts as in flight until [`finish`](Self::finish).
    pub fn begin(
        metrics: Arc<Metrics>,
        conn: Arc<Connection>,
        method: &Method,
        uri: &http::Uri,
        request_id: HeaderValue,
    ) -> Self {
        metrics.in_flight.inc();
        conn.request_started();
        Exchange {
            metrics,
            conn,
            started: Instant::now(),
            method: method.clone(),
            uri: uri.clone(),
            route: None,
            status: 0,
            error: None,
            head_after: Duration::ZERO,
            request_body: None,
            bytes_out: 0,
            request_id,
            gateway_request_id: None,
            attempts: 0,
            upstream: None,
            turn: None,
            usage: None,
            trace: None,
            finished: false,
        }
    }

    /// Traces this request (its server span started from the client's headers).
    pub fn trace_with(&mut self, trace: RequestTrace) {
        self.trace = Some(trace);
    }

    /// The request's spans, when it is traced.
    pub fn trace(&self) -> Option<&RequestTrace> {
        self.trace.as_ref()
    }

    /// This request's id (the client's, or a new one).
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    pub fn set_route(&mut self, route: Arc<RouteMetrics>) {
        self.route = Some(route);
    }

    /// The route prefix, or `none` when no route matched.
    fn route_name(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.route.as_str())
    }

    /// The matched route's metrics, or those of `none`.
    fn route_metrics(&mut self) -> Arc<RouteMetrics> {
        self.route
            .get_or_insert_with(|| Arc::new(self.metrics.route("none")))
            .clone()
    }

    /// An attempt went to `upstream`.
    pub fn attempted(&mut self, upstream: &Arc<str>) {
        self.attempts += 1;
        if self.upstream.as_ref() != Some(upstream) {
            self.upstream = Some(upstream.clone());
        }
    }

    /// Holds the request's pacing turn until the response body ends.
    pub fn hold(&mut self, turn: crate::traffic::pace::Turn) {
        self.turn = Some(turn);
    }

    pub fn set_request_body(&mut self, progress: Arc<Progress>) {
        self.request_body = Some(progress);
    }

    /// The response to send: the upstream's (body under the idle timer) or
    /// the proxy's own JSON error. Either way the body carries this record.
    pub fn respond(
        mut self,
        result: Result<Response<ProxyBody>, ProxyError>,
        idle: Duration,
    ) -> Response<ProxyBody> {
        self.head_after = self.started.elapsed();
        let mut response = match result {
            Ok(response) => {
                let route = self.route_metrics();
                self.metrics.upstream_head(&route, self.head_after);
                response
            }
            Err(err) => {
                let id = self.request_id.to_str().unwrap_or_default();
                tracing::warn!(route = self.route_name(), method = %self.method, path = %self.uri.path(), code = err.code(), request_id = id, "{err}");
                self.metrics.proxy_error(self.route_name(), err.code());
                self.error = Some(err.code());
                err.to_response(id)
            }
        };
        // The upstream's own id (APIG sends one) goes back as it is and is
        // logged beside ours; otherwise the client gets ours.
        match response.headers().get(&X_REQUEST_ID) {
            Some(theirs) => self.gateway_request_id = theirs.to_str().ok().map(str::to_owned),
            None => {
                response
                    .headers_mut()
                    .insert(X_REQUEST_ID, self.request_id.clone());
            }
        }
        if let Some(GatewayRequestId(id)) = response.extensions_mut().remove() {
            self.gateway_request_id.get_or_insert(id);
        }
        self.status = response.status().as_u16();
        if self.error.is_none() {
            let content_type = response.headers().get(http::header::CONTENT_TYPE);
            self.usage = Scanner::for_content_type(content_type.and_then(|v| v.to_str().ok()));
        }
        if let Some(trace) = &mut self.trace {
            trace.body_started();
        }
        let expected = framed_length(&self.method, &response);
        let (parts, body) = response.into_parts();
        let body = ResponseBody {
            inner: body,
            idle: IdleTimer::new(idle),
            expected,
            framed_end: false,
            exchange: self,
        };
        Response::from_parts(parts, BodyExt::boxed_unsync(body))
    }

    fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let total = self.started.elapsed();
        let bytes_in = self.request_body.as_ref().map_or(0, |p| p.bytes());
        let failure = (outcome != Outcome::Complete).then(|| outcome.as_str());
        self.metrics.in_flight.dec();
        let route = self.route_metrics();
        self.metrics.request_done(
            &route,
            &Done {
                status: self.status,
                total,
                bytes_in,
                bytes_out: self.bytes_out,
                failure,
            },
        );
        self.conn.request_finished();
        self.turn = None;
        let usage = self.usage.take().and_then(Scanner::finish);
        if let Some(u) = &usage {
            self.metrics.model_tokens(self.route_name(), u);
        }
        let usage = usage.unwrap_or_default();
        if let Some(mut trace) = self.trace.take() {
            trace.finish(&Finished {
                status: self.status,
                attempts: self.attempts,
                request_id: self.request_id.to_str().unwrap_or_default(),
                gateway_request_id: self.gateway_request_id.as_deref(),
                outcome: outcome.as_str(),
                error: self.error,
            });
        }
        tracing::info!(
            target: "modelarts_proxy::access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            gateway_request_id = self.gateway_request_id.as_deref().unwrap_or(""),
            method = %self.method,
            path = %self.uri.path(),
            route = self.route_name(),
            status = self.status,
            error = self.error.unwrap_or(""),
            outcome = outcome.as_str(),
            bytes_in,
            bytes_out = self.bytes_out,
            attempts = self.attempts,
            model = usage.model.as_deref().unwrap_or(""),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            upstream = self.upstream.as_deref().unwrap_or(""),
            head_ms = self.head_after.as_millis() as u64,
            total_ms = total.as_millis() as u64,
            client = self.conn.client_label(),
            "request"
        );
    }
}

impl Drop for Exchange {
    /// A response that was never sent to the end: the client went away.
    fn drop(&mut self) {
        self.finish(Outcome::ClientAborted);
    }
}

/// The body length the response's `Content-Length` announces, when it
/// announces one (a HEAD answer, 1xx, 204 and 304 carry no body).
fn framed_length<B>(method: &Method, response: &Response<B>) -> Option<u64> {
    let status = response.status().as_u16();
    if *method == Method::HEAD || status < 200 || status == 204 || status == 304 {
        return None;
    }
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A response body that is cut when it moves no byte for `idle`, and that
/// finishes its [`Exchange`] when it ends.
///
/// It has ended when the upstream's framing says so, whoever stops reading
/// first: hyper stops polling once `Content-Length` bytes are written, or
/// after trailers, before an HTTP/2 upstream's END_STREAM (which may come
/// in an empty DATA frame of its own) has been read.
struct ResponseBody {
    inner: ProxyBody,
    idle: IdleTimer,
    /// The announced `Content-Length`, if any.
    expected: Option<u64>,
    /// The last byte the upstream announced, or its trailers, went through.
    framed_end: bool,
    exchange: Exchange,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if !this.idle.expired(cx) {
                    return Poll::Pending;
                }
                let err = ResponseIdle {
                    after: this.idle.after(),
                };
                tracing::warn!(route = this.exchange.route_name(), path = %this.exchange.uri.path(), "{err}; the stream is cut");
                this.exchange.finish(Outcome::IdleTimeout);
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.reset();
                if let Some(data) = frame.data_ref() {
                    this.exchange.bytes_out += data.len() as u64;
                    if let Some(scanner) = &mut this.exchange.usage {
                        scanner.feed(data);
                    }
                    this.framed_end |= this.expected == Some(this.exchange.bytes_out);
                } else if frame.is_trailers() {
                    // Trailers are the last frame of a body.
                    this.framed_end = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(route = this.exchange.route_name(), path = %this.exchange.uri.path(), "the upstream's response body failed: {}", crate::error::chain(&*e));
                this.exchange.finish(Outcome::UpstreamReset);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.exchange.finish(Outcome::Complete);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is complete (HEAD, a full
        // Content-Length, trailers written) without polling it to the end.
        let ended = self.inner.is_end_stream();
        if ended || self.framed_end {
            self.exchange.finish(Outcome::Complete);
        }
        if self.framed_end && !ended {
            // Read the upstream's END_STREAM rather than reset a stream
            // that is complete (h2 counts such resets as abuse).
            drain(
                std::mem::replace(&mut self.inner, crate::error::empty()),
                self.idle.after(),
            );
        }
    }
}

/// Reads what is left of a body whose data is all delivered, so that its
/// HTTP/2 stream ends as the upstream framed it: at once when the end has
/// already arrived (the usual case), else on a task bounded by `idle`.
fn drain(mut body: ProxyBody, idle: Duration) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(None | Some(Err(_))) => return,
            Poll::Pending => break,
        }
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let rest = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(idle, rest).await;
        });
    }
}
