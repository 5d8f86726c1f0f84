//! Off the request path: finished spans go into a bounded queue with a
//! `try_send` (a full queue drops the span and counts it, it never waits);
//! one task batches them and posts each batch to the collector as OTLP/HTTP
//! protobuf (`POST {endpoint}/v1/traces`) with the proxy's own client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::BodyExt;
use opentelemetry::Context;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use prost::Message as _;
use tokio::sync::mpsc;

use crate::client::HttpClient;
use crate::error::full;
use crate::metrics::{Metrics, SpanLabels};

/// A collector has this long to take a batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A batch leaves when it is full or this long after the last one.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// Posts encoded batches.
pub struct Exporter {
    pub client: HttpClient,
    pub url: Uri,
    pub resource: ResourceAttributesWithSchema,
}

impl Exporter {
    /// One batch to the collector; `Err` says why it did not take it.
    async fn export(&self, batch: Vec<SpanData>) -> Result<(), String> {
        let resource_spans = group_spans_by_resource_and_scope(batch, &self.resource);
        let body = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        let request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(full(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::error::chain(&e))?;
            let status = response.status();
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        };
        tokio::time::timeout(EXPORT_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {}s", EXPORT_TIMEOUT.as_secs()))?
    }
}

pub enum Control {
    Flush(std::sync::mpsc::SyncSender<()>),
    Shutdown(std::sync::mpsc::SyncSender<()>),
    /// The daemon stops: export everything queued, then end.
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// The span processor: a bounded queue and the task that empties it.
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::Sender<Control>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Starts the export task on the current runtime; the sender stops it.
    pub fn start(
        exporter: Exporter,
        max_queue: usize,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Sender<Control>) {
        let (spans, rx) = mpsc::channel(max_queue);
        let (control, control_rx) = mpsc::channel(4);
        let counts = metrics.clone();
        tokio::spawn(export_loop(exporter, rx, control_rx, max_batch, counts));
        let queue = Queue {
            spans,
            control: control.clone(),
            metrics,
        };
        (queue, control)
    }

    fn count(&self, outcome: &'static str, n: u64) {
        count(&self.metrics, outcome, n);
    }

    /// Asks the task to flush (and maybe stop). From inside a runtime it
    /// does not wait (the task may need this very thread); elsewhere it
    /// waits up to `timeout`.
    fn ask(
        &self,
        make: fn(std::sync::mpsc::SyncSender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.control
            .try_send(make(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Ok(());
        }
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

fn count(metrics: &Metrics, outcome: &'static str, n: u64) {
    metrics
        .trace_spans
        .get_or_create(&SpanLabels { outcome })
        .inc_by(n);
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.count("dropped", 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }
}

/// Batches spans and exports them, one batch at a time.
async fn export_loop(
    exporter: Exporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::Receiver<Control>,
    max_batch: usize,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(max_batch);
    let mut tick = tokio::time::interval(EXPORT_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    let mut flush = async |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match exporter.export(std::mem::take(batch)).await {
            Ok(()) => count(&metrics, "exported", n),
            Err(e) => {
                count(&metrics, "failed", n);
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(collector = %exporter.url, "exporting spans failed: {e} (counted in modelarts_proxy_trace_spans_total{{outcome=\"failed\"}}; warned once)");
                }
            }
        }
    };
    loop {
        let room = max_batch - batch.len();
        tokio::select! {
            n = spans.recv_many(&mut batch, room) => {
                if n == 0 {
                    flush(&mut batch).await;
                    return;
                }
                if batch.len() >= max_batch {
                    flush(&mut batch).await;
                }
            }
            _ = tick.tick() => flush(&mut batch).await,
            Some(asked) = control.recv() => {
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                    if batch.len() >= max_batch {
                        flush(&mut batch).await;
                    }
                }
                flush(&mut batch).await;
                match asked {
                    Control::Flush(done) => { let _ = done.send(()); }
                    Control::Shutdown(done) => { let _ = done.send(()); return; }
                    Control::Stop(done) => { let _ = done.send(()); return; }
                }
            }
        }
    }
}
