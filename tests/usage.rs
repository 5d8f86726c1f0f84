//! Model usage (DESIGN §13): the tokens an OpenAI-compatible answer
//! reports, JSON or streamed, are counted per route and model without
//! holding any event back; `stream_usage = true` asks a streaming request
//! for its usage before it is signed.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use modelarts_proxy::error::BoxError;

const EVENTS: [&str; 4] = [
    "data: {\"id\":\"1\",\"model\":\"qwen3-32b\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"1\",\"model\":\"qwen3-32b\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"id\":\"1\",\"model\":\"qwen3-32b\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n",
    "data: [DONE]\n\n",
];

fn tokens(proxy: &Proxy, model: &str, kind: &str) -> f64 {
    proxy.metric(&format!(
        "modelarts_proxy_model_tokens_total{{route=\"/\",model=\"{model}\",kind=\"{kind}\"}}"
    ))
}

#[tokio::test]
async fn a_streamed_answer_is_counted_and_each_event_arrives_before_the_next_is_sent() {
    // The upstream sends the next event only when the client has the last.
    let (next_tx, next_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let next_rx = Arc::new(tokio::sync::Mutex::new(next_rx));
    let up = upstream(move |_req| {
        let next_rx = next_rx.clone();
        async move {
            let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
            tokio::spawn(async move {
                for event in EVENTS {
                    let _ = tx.send_data(Bytes::from_static(event.as_bytes())).await;
                    if next_rx.lock().await.recv().await.is_none() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body.boxed_unsync())
                .unwrap()
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{up}/v1\"\n"
    ))
    .await;
    let resp = client()
        .request(
            request("POST", &proxy.url("/chat/completions"))
                .body(body("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    for event in EVENTS {
        let mut got = Vec::new();
        while got.len() < event.len() {
            let frame = tokio::time::timeout(TEST_DEADLINE, body.frame())
                .await
                .expect("the event arrives before the next is sent")
                .unwrap()
                .unwrap();
            got.extend_from_slice(&frame.into_data().unwrap());
        }
        assert_eq!(String::from_utf8(got).unwrap(), event);
        let _ = next_tx.send(());
    }
    assert!(body.frame().await.is_none());
    eventually("the answer is logged", || {
        proxy.metric("modelarts_proxy_requests_in_flight") == 0.0
    })
    .await;
    assert_eq!(tokens(&proxy, "qwen3-32b", "prompt"), 12.0);
    assert_eq!(tokens(&proxy, "qwen3-32b", "completion"), 34.0);
}

#[tokio::test]
async fn a_json_answer_is_counted_and_passes_unchanged() {
    let answer = r#"{"id":"x","model":"deepseek-v3","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
    let up = upstream(move |_req| async move {
        Response::builder()
            .header("content-type", "application/json")
            .body(body(answer))
            .unwrap()
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{up}/v1\"\n"
    ))
    .await;
    for _ in 0..2 {
        let (parts, bytes) = get(&proxy.url("/chat/completions")).await;
        assert_eq!(
            (parts.status.as_u16(), &bytes[..]),
            (200, answer.as_bytes())
        );
    }
    eventually("both answers logged", || {
        proxy.metric("modelarts_proxy_requests_in_flight") == 0.0
    })
    .await;
    assert_eq!(tokens(&proxy, "deepseek-v3", "prompt"), 10.0);
    assert_eq!(tokens(&proxy, "deepseek-v3", "completion"), 14.0);
}

#[tokio::test]
async fn stream_usage_asks_a_streaming_request_for_its_usage_before_signing() {
    let seen: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
    let log = seen.clone();
    let up = upstream(move |req| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let declared: usize = parts.headers["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(declared, bytes.len());
            let ok = signature_ok(&parts, &bytes);
            log.lock()
                .unwrap()
                .push((ok, String::from_utf8_lossy(&bytes).into_owned()));
            text_response(200, "ok")
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{up}/v1\"\ncredentials = \"test\"\nstream_usage = true\n{TEST_CREDENTIALS}"
    ))
    .await;
    for request_body in [
        r#"{"model":"m","stream":true,"messages":[]}"#,
        r#"{"model":"m","messages":[]}"#,
    ] {
        let (parts, _) = send(
            request("POST", &proxy.url("/chat/completions"))
                .header("content-type", "application/json")
                .body(body(request_body))
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, 200);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                true,
                r#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#.to_owned()
            ),
            (true, r#"{"model":"m","messages":[]}"#.to_owned()),
        ]
    );
}
