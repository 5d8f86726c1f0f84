//! OpenTelemetry traces (DESIGN §13): an in-process OTLP/HTTP receiver
//! decodes what the proxy exports; the spans' kinds and parentage, the
//! `traceparent` continued from the client and sent upstream (unsigned),
//! sampling, and a collector that never answers slowing nothing.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

type Spans = Arc<Mutex<Vec<Span>>>;
/// Each request an upstream saw: its `traceparent`, whether its signature
/// holds, its `Authorization`.
type Seen = Arc<Mutex<Vec<(Option<String>, bool, String)>>>;

/// An OTLP/HTTP receiver: every span it is sent, decoded.
async fn receiver() -> (std::net::SocketAddr, Spans) {
    let spans: Spans = Arc::default();
    let seen = spans.clone();
    let addr = upstream(move |req| {
        let seen = seen.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(bytes).unwrap();
            let mut seen = seen.lock().unwrap();
            for rs in export.resource_spans {
                let service = rs.resource.as_ref().unwrap().attributes.iter().any(|a| {
                    a.key == "service.name"
                        && matches!(&a.value.as_ref().unwrap().value, Some(Value::StringValue(s)) if s == "modelarts-proxy")
                });
                assert!(service, "the resource names the service");
                for ss in rs.scope_spans {
                    seen.extend(ss.spans);
                }
            }
            text_response(200, "")
        }
    })
    .await;
    (addr, spans)
}

/// An upstream that records each request's `traceparent` and whether its
/// signature holds.
async fn recording_upstream() -> (std::net::SocketAddr, Seen) {
    let log: Seen = Arc::default();
    let seen = log.clone();
    let addr = upstream(move |req| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let traceparent = parts
                .headers
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned());
            let authorization = parts
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push((traceparent, signature_ok(&parts, &bytes), authorization));
            text_response(200, "ok")
        }
    })
    .await;
    (addr, log)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.clone())
}

async fn traced_proxy(upstream: std::net::SocketAddr, telemetry: &str) -> Proxy {
    start_proxy(&format!(
        "[telemetry]\n{telemetry}\n[[route]]\nprefix = \"/v1\"\nupstream = \"http://{upstream}/v1\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await
}

#[tokio::test]
async fn a_request_is_a_server_span_continuing_the_clients_trace() {
    let (collector, spans) = receiver().await;
    let (up, seen) = recording_upstream().await;
    let proxy = traced_proxy(up, &format!("otlp_endpoint = \"http://{collector}\"")).await;
    let req = request("POST", &proxy.url("/v1/predict?user=alice"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .header("x-request-id", "req-123")
        .body(body("{\"a\":1}"))
        .unwrap();
    let (parts, _) = send(req).await;
    assert_eq!(parts.status, 200);
    eventually("the server span arrives", || {
        spans.lock().unwrap().iter().any(|s| s.kind == 2)
    })
    .await;
    eventually("its four spans arrive", || spans.lock().unwrap().len() >= 4).await;
    let spans = spans.lock().unwrap().clone();
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(
        hex(&server.trace_id),
        TRACE_ID,
        "the client's trace goes on"
    );
    assert_eq!(
        hex(&server.parent_span_id),
        CLIENT_SPAN,
        "under the client's span"
    );
    assert_eq!(server.name, "POST /v1");
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(
        attribute(server, "modelarts_proxy.route"),
        Some(Value::StringValue("/v1".into()))
    );
    assert_eq!(
        attribute(server, "modelarts_proxy.attempts"),
        Some(Value::IntValue(1))
    );
    assert_eq!(
        attribute(server, "modelarts_proxy.request_id"),
        Some(Value::StringValue("req-123".into()))
    );
    for (name, kind) in [("credential", 1), ("upstream", 3), ("response body", 1)] {
        let child = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"));
        assert_eq!(child.kind, kind, "{name}");
        assert_eq!(
            child.parent_span_id, server.span_id,
            "{name} is the server span's child"
        );
        assert_eq!(hex(&child.trace_id), TRACE_ID);
    }
    // The upstream got the attempt's own span as its parent, and the
    // signature (which does not cover traceparent) holds.
    let attempt = spans.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(
        attribute(attempt, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(
        attribute(attempt, "url.full"),
        Some(Value::StringValue(format!("http://{up}/v1/predict"))),
        "the query stays out of the trace"
    );
    let (traceparent, signed, authorization) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        traceparent.as_deref(),
        Some(format!("00-{TRACE_ID}-{}-01", hex(&attempt.span_id)).as_str())
    );
    assert!(signed, "the signature holds");
    assert!(!authorization.contains("traceparent"), "{authorization}");
    eventually("exports are counted", || {
        proxy.metric("modelarts_proxy_trace_spans_total{outcome=\"exported\"}") >= 4.0
    })
    .await;
}

#[tokio::test]
async fn sampling_follows_the_client_and_the_ratio() {
    let (collector, spans) = receiver().await;
    let (up, seen) = recording_upstream().await;
    let proxy = traced_proxy(
        up,
        &format!("otlp_endpoint = \"http://{collector}\"\nsample_ratio = 0.0"),
    )
    .await;
    // Not sampled here (ratio 0): nothing exported, but a trace still goes upstream.
    let (parts, _) = get(&proxy.url("/v1/a")).await;
    assert_eq!(parts.status, 200);
    // The client sampled its trace: followed (parent-based).
    let req = request("GET", &proxy.url("/v1/b"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .body(body(""))
        .unwrap();
    assert_eq!(send(req).await.0.status, 200);
    eventually("the sampled trace arrives", || {
        spans.lock().unwrap().iter().any(|s| s.kind == 2)
    })
    .await;
    let traces: Vec<String> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| hex(&s.trace_id))
        .collect();
    assert!(
        traces.iter().all(|t| t == TRACE_ID),
        "only the client's sampled trace: {traces:?}"
    );
    let seen = seen.lock().unwrap();
    let unsampled = seen[0].0.as_deref().expect("a traceparent all the same");
    assert!(unsampled.ends_with("-00"), "{unsampled}");
}

/// A collector that takes the connection and never answers: requests go
/// on at full speed; spans beyond the small queue are dropped and counted.
#[tokio::test]
async fn a_dead_collector_slows_nothing_and_drops_are_counted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let (up, _) = recording_upstream().await;
    let runtime = modelarts_proxy::state::Runtime {
        sources: Arc::new(EnvSources(vec![("OTEL_BSP_MAX_QUEUE_SIZE", "8".into())])),
        ..Default::default()
    };
    let proxy = start_proxy_with(
        &format!(
            "[telemetry]\notlp_endpoint = \"http://{collector}\"\n[[route]]\nprefix = \"/v1\"\nupstream = \"http://{up}/v1\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
        ),
        runtime,
    )
    .await;
    for _ in 0..40 {
        let (parts, _) = get(&proxy.url("/v1/x")).await;
        assert_eq!(parts.status, 200);
    }
    let dropped = proxy.metric("modelarts_proxy_trace_spans_total{outcome=\"dropped\"}");
    assert!(
        dropped > 0.0,
        "160 spans into a queue of 8 with the export stuck: {dropped}"
    );
}

#[tokio::test]
async fn with_no_endpoint_nothing_is_traced_and_the_clients_traceparent_passes() {
    let (up, seen) = recording_upstream().await;
    let proxy = start_proxy(&format!(
        "[[route]]\nprefix = \"/v1\"\nupstream = \"http://{up}/v1\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    assert!(proxy.shared.state.load().telemetry.is_none());
    let client = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let req = request("GET", &proxy.url("/v1/x"))
        .header("traceparent", &client)
        .body(body(""))
        .unwrap();
    assert_eq!(send(req).await.0.status, 200);
    assert_eq!(seen.lock().unwrap()[0].0.as_deref(), Some(client.as_str()));
}

/// Stopping exports what is queued first: the spans of the last request
/// reach the collector before the daemon's task ends.
#[tokio::test]
async fn stopping_exports_the_last_spans() {
    let (collector, spans) = receiver().await;
    let (up, _) = recording_upstream().await;
    let mut proxy = traced_proxy(up, &format!("otlp_endpoint = \"http://{collector}\"")).await;
    let (parts, _) = get(&proxy.url("/v1/last")).await;
    assert_eq!(parts.status, 200);
    proxy.shutdown();
    tokio::time::timeout(TEST_DEADLINE, &mut proxy.task)
        .await
        .unwrap()
        .unwrap();
    let spans = spans.lock().unwrap();
    assert!(
        spans.iter().any(|s| s.kind == 2),
        "the server span was exported before the daemon stopped: {spans:#?}"
    );
}
