//! What the stand-in service streams: OpenAI-style server-sent events for a
//! streaming request, and the WebSocket echo after a handshake.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::error::ProxyBody;

/// Events the stand-in streams for a streaming request, and the pause
/// between them: enough to watch them arrive one by one.
const SSE_EVENTS: usize = 5;
const SSE_INTERVAL: Duration = Duration::from_millis(200);

/// A streaming request, as LLM services take it: `Accept:
/// text/event-stream`, or a JSON body with `"stream": true`.
pub(super) fn wants_stream(parts: &http::request::Parts, body: &Bytes) -> bool {
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    accept
        || serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|v| v.get("stream") == Some(&serde_json::Value::Bool(true)))
}

/// The model the stand-in answers as.
const DEV_MODEL: &str = "dev-model";

/// True when a streaming request asked for its usage
/// (`"stream_options":{"include_usage":true}`, as OpenAI's API takes it).
pub(super) fn usage_asked(body: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.pointer("/stream_options/include_usage") == Some(&serde_json::Value::Bool(true))
    })
}

/// A stand-in's token count for a prompt: about one per four bytes.
pub(super) fn prompt_tokens(body: &Bytes) -> u64 {
    (body.len() as u64).div_ceil(4)
}

/// OpenAI-style `chat.completion.chunk` events, [`SSE_INTERVAL`] apart;
/// when `usage` is asked for, a last event with `usage` (this many prompt
/// tokens, one completion token per event); then `data: [DONE]`.
pub(super) fn server_sent_events(usage: Option<u64>) -> Response<ProxyBody> {
    let (mut tx, events) =
        http_body_util::channel::Channel::<Bytes, crate::error::BoxError>::new(1);
    tokio::spawn(async move {
        let chunk = |choices: serde_json::Value| {
            let mut v = serde_json::json!({
                "id": "chatcmpl-dev",
                "object": "chat.completion.chunk",
                "model": DEV_MODEL,
                "choices": choices,
            });
            // Asked for usage, OpenAI's chunks say `"usage": null` until the last.
            if usage.is_some() {
                v["usage"] = serde_json::Value::Null;
            }
            v
        };
        for i in 0..SSE_EVENTS {
            let event = chunk(serde_json::json!([{
                "index": 0,
                "delta": {"content": format!("token {i} from the stand-in ")},
            }]));
            if tx
                .send_data(Bytes::from(format!("data: {event}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(SSE_INTERVAL).await;
        }
        if let Some(prompt) = usage {
            let completion = SSE_EVENTS as u64;
            let mut last = chunk(serde_json::json!([]));
            last["usage"] = serde_json::json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            });
            let _ = tx.send_data(Bytes::from(format!("data: {last}\n\n"))).await;
        }
        let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let mut resp = Response::new(events.boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Echoes text and binary messages; answers a close with a close; closes
/// itself on the text `bye`.
pub(super) async fn echo_websocket(upgrade: hyper::upgrade::OnUpgrade) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            // The stand-in's own close, to try a close from the service side.
            Message::Text(t) if t.as_str() == "bye" => {
                let _ = ws.close(None).await;
                continue;
            }
            Message::Text(_) | Message::Binary(_) => message,
            // tungstenite answers pings and closes itself.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
