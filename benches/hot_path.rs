//! The per-request work the request path does besides HTTP: writing the
//! access-log line and recording the request's metrics. Each is measured
//! beside what it replaced in the same run, so a regression (or a change
//! back) shows as a ratio:
//!
//! * `access_log/fast_text` (`logfmt::Text`, what `run` writes when stderr
//!   is not a terminal) against `access_log/default_full` (tracing-
//!   subscriber's own format, the same bytes).
//! * `metrics/request` (the per-route handles and lock-free slots of one
//!   request: upstream latency, count, duration, bytes) against
//!   `metrics/by_label` (the same through prometheus-client families
//!   looked up by label, with its mutex histograms).
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use modelarts_proxy::metrics::{Done, Metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

fn access_line() {
    tracing::info!(
        target: "modelarts_proxy::access",
        request_id = "af359e831884111900000000000c6e04",
        gateway_request_id = "",
        method = %http::Method::POST,
        path = %"/v1/infers/3f2b9c1e-7a4d-4e8b-9c61-0d5e2f8a1b7c",
        route = "/infer",
        status = 200u16,
        error = "",
        outcome = "complete",
        bytes_in = 1014u64,
        bytes_out = 15u64,
        head_ms = 0u64,
        total_ms = 0u64,
        client = "127.0.0.1:58134",
        "request"
    );
}

fn access_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("access_log");
    let fast = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_ansi(false)
        .event_format(modelarts_proxy::logfmt::Text)
        .finish();
    tracing::subscriber::with_default(fast, || {
        g.bench_function("fast_text", |b| b.iter(access_line));
    });
    let full = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(full, || {
        g.bench_function("default_full", |b| b.iter(access_line));
    });
    g.finish();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Status {
    route: String,
    status: u16,
}

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let m = Metrics::new();
    let route = m.route("/infer");
    let done = Done {
        status: 200,
        total: Duration::from_micros(730),
        bytes_in: 1014,
        bytes_out: 15,
        failure: None,
    };
    g.bench_function("request", |b| {
        b.iter(|| {
            m.upstream_head(&route, Duration::from_micros(610));
            m.request_done(&route, &done);
        })
    });
    let buckets = || Histogram::new(exponential_buckets(0.005, 2.0, 14));
    let latency: Family<Route, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(buckets);
    let duration: Family<Route, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(buckets);
    let requests: Family<Status, Counter> = Family::default();
    let bytes_in: Family<Route, Counter> = Family::default();
    let bytes_out: Family<Route, Counter> = Family::default();
    g.bench_function("by_label", |b| {
        b.iter(|| {
            let label = || Route {
                route: "/infer".to_owned(),
            };
            latency.get_or_create(&label()).observe(0.000_610);
            requests
                .get_or_create(&Status {
                    route: "/infer".to_owned(),
                    status: 200,
                })
                .inc();
            duration.get_or_create(&label()).observe(0.000_730);
            bytes_in.get_or_create(&label()).inc_by(1014);
            bytes_out.get_or_create(&label()).inc_by(15);
        })
    });
    g.finish();
}

/// Reading `usage` from a streamed LLM answer: 200 content events of
/// ~150 bytes and a last one with the usage, fed in the chunks they came
/// in, against the same chunks only counted (what every body costs).
fn usage(c: &mut Criterion) {
    let mut events: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("data: {{\"id\":\"c1\",\"model\":\"qwen3-32b\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token number {i} of the answer\"}}}}]}}\n\n").into_bytes())
        .collect();
    events.push(b"data: {\"id\":\"c1\",\"model\":\"qwen3-32b\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":200}}\n\ndata: [DONE]\n\n".to_vec());
    let mut g = c.benchmark_group("usage");
    g.bench_function("sse_201_events_scanned", |b| {
        b.iter(|| {
            let mut s =
                modelarts_proxy::usage::Scanner::for_content_type(Some("text/event-stream"))
                    .unwrap();
            for e in &events {
                s.feed(std::hint::black_box(e));
            }
            assert_eq!(s.finish().unwrap().completion_tokens, 200);
        })
    });
    g.bench_function("sse_201_events_counted_only", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in &events {
                n += std::hint::black_box(e).len() as u64;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, access_log, metrics, usage);
criterion_main!(benches);
