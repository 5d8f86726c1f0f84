//! OpenTelemetry traces (DESIGN §13): one server span per request, with
//! child spans for the credential, each upstream attempt and the response
//! body; an incoming W3C `traceparent` is continued and each attempt sends
//! its own upstream (never signed). Spans leave through [`export`]'s
//! bounded queue. Off (no endpoint), nothing here runs: the request path
//! holds `None`.

pub mod export;

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};

use crate::client::HttpClient;
use crate::config::telemetry::Telemetry as Config;
use crate::metrics::Metrics;

/// Tracing, on: the tracer and what exports its spans.
pub struct Telemetry {
    pub config: Config,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Stops the export task once it has exported what is queued.
    control: tokio::sync::mpsc::Sender<export::Control>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces_url", &self.config.traces_url)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts the export task (needs a Tokio runtime).
    pub fn start(config: &Config, client: HttpClient, metrics: Arc<Metrics>) -> Arc<Telemetry> {
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let exporter = export::Exporter {
            client,
            url: config.traces_url.clone(),
            resource: (&resource).into(),
        };
        let (queue, control) =
            export::Queue::start(exporter, config.max_queue, config.max_batch, metrics);
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .with_span_processor(queue)
            .build();
        let tracer = provider.tracer("modelarts-proxy");
        Arc::new(Telemetry {
            config: config.clone(),
            provider,
            tracer,
            control,
        })
    }

    /// Exports what is queued and stops, waiting up to 3 s for the collector.
    pub async fn shutdown(self: Arc<Self>) {
        let (done, exported) = tokio::sync::oneshot::channel();
        if self.control.send(export::Control::Stop(done)).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), exported).await;
        }
        // The provider then finds the task gone and returns at once.
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }

    /// The server span of a request, continuing the client's trace.
    pub fn request(&self, method: &str, path: &str, headers: &HeaderMap) -> RequestTrace {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let mut span = self
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        // An unsampled trace only passes its context on: no attributes, no child spans.
        let sampled = span.is_recording();
        if sampled {
            span.set_attribute(KeyValue::new("http.request.method", method.to_owned()));
            span.set_attribute(KeyValue::new("url.path", path.to_owned()));
        }
        RequestTrace {
            tracer: self.tracer.clone(),
            server: parent.with_span(span),
            body: None,
            sampled,
        }
    }
}

/// One request's spans.
#[derive(Clone)]
pub struct RequestTrace {
    tracer: SdkTracer,
    server: Context,
    body: Option<Context>,
    /// Recorded and exported; otherwise only the context goes upstream.
    sampled: bool,
}

impl RequestTrace {
    fn child(&self, name: &'static str, kind: SpanKind, attributes: Vec<KeyValue>) -> Span {
        self.tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.server)
    }

    /// Names the server span after its route (`POST /v1/infers`).
    pub fn route(&self, method: &str, route: &str) {
        if !self.sampled {
            return;
        }
        let span = self.server.span();
        span.update_name(Cow::Owned(format!("{method} {route}")));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        span.set_attribute(KeyValue::new("modelarts_proxy.route", route.to_owned()));
    }

    /// The wait for a credential and the signature; ends when dropped.
    pub fn credential(&self, name: Option<&str>) -> Option<Span> {
        if !self.sampled {
            return None;
        }
        let attributes = name
            .map(|n| vec![KeyValue::new("modelarts_proxy.credentials", n.to_owned())])
            .unwrap_or_default();
        Some(self.child("credential", SpanKind::Internal, attributes))
    }

    /// Attempt number `attempt` to `uri`; its `traceparent` goes into `headers`.
    pub fn attempt(
        &self,
        attempt: u32,
        method: &str,
        uri: &http::Uri,
        headers: &mut HeaderMap,
    ) -> Attempt {
        let attributes = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("server.address", uri.host().unwrap_or_default().to_owned()),
            // Without the query: it is the client's data, not for a collector.
            KeyValue::new(
                "url.full",
                format!(
                    "{}://{}{}",
                    uri.scheme_str().unwrap_or("http"),
                    uri.authority().map_or("", |a| a.as_str()),
                    uri.path()
                ),
            ),
            KeyValue::new("http.request.resend_count", i64::from(attempt) - 1),
        ];
        let span = self.child("upstream", SpanKind::Client, attributes);
        let cx = self.server.with_span(span);
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
        Attempt(Some(cx))
    }

    /// The response head was sent: the body's span starts.
    pub fn body_started(&mut self) {
        if !self.sampled {
            return;
        }
        let span = self.child("response body", SpanKind::Internal, Vec::new());
        self.body = Some(self.server.with_span(span));
    }

    /// The request ended: its status, outcome and ids; every span ends.
    pub fn finish(&mut self, end: &Finished<'_>) {
        if let Some(body) = self.body.take() {
            body.span()
                .set_attribute(KeyValue::new("modelarts_proxy.outcome", end.outcome));
            body.span().end();
        }
        let span = self.server.span();
        if !self.sampled {
            span.end();
            return;
        }
        let mut attributes = vec![
            KeyValue::new("http.response.status_code", i64::from(end.status)),
            KeyValue::new("modelarts_proxy.attempts", i64::from(end.attempts)),
            KeyValue::new("modelarts_proxy.request_id", end.request_id.to_owned()),
            KeyValue::new("modelarts_proxy.outcome", end.outcome),
        ];
        if let Some(id) = end.gateway_request_id {
            attributes.push(KeyValue::new(
                "modelarts_proxy.gateway_request_id",
                id.to_owned(),
            ));
        }
        if let Some(code) = end.error {
            attributes.push(KeyValue::new("error.type", code));
        }
        for a in attributes {
            span.set_attribute(a);
        }
        if end.status >= 500 || end.error.is_some() {
            span.set_status(Status::error(end.error.unwrap_or("server error")));
        }
        span.end();
    }
}

/// What a finished request's span records.
pub struct Finished<'a> {
    pub status: u16,
    pub attempts: u32,
    pub request_id: &'a str,
    pub gateway_request_id: Option<&'a str>,
    pub outcome: &'static str,
    pub error: Option<&'static str>,
}

/// An upstream attempt's span (none when unsampled); ends when dropped.
pub struct Attempt(Option<Context>);

impl Attempt {
    /// The upstream's answer (or none: `status` 0).
    pub fn answered(&self, status: u16) {
        let Some(cx) = &self.0 else {
            return;
        };
        let span = cx.span();
        if status > 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if status == 0 || status >= 500 {
            span.set_status(Status::error(if status == 0 {
                "no answer"
            } else {
                "server error"
            }));
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
