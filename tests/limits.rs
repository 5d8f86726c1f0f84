//! The gateway's limits enforced locally, failures turned into clear errors,
//! and the daemon's lifecycle (admin endpoints, reload, graceful shutdown).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use tokio::sync::{Mutex, oneshot};

const MIB12: usize = 12 * 1024 * 1024;

/// Counts requests whose body arrived complete vs. cut off.
#[derive(Default)]
struct Seen {
    complete: AtomicUsize,
    incomplete: AtomicUsize,
}

async fn counting_upstream(seen: Arc<Seen>) -> std::net::SocketAddr {
    upstream(move |req| {
        let seen = seen.clone();
        async move {
            match req.into_body().collect().await {
                Ok(b) => {
                    seen.complete.fetch_add(1, Ordering::SeqCst);
                    text_response(200, &b.to_bytes().len().to_string())
                }
                Err(_) => {
                    seen.incomplete.fetch_add(1, Ordering::SeqCst);
                    text_response(400, "incomplete")
                }
            }
        }
    })
    .await
}

/// Sends `len` bytes as a chunked body (no Content-Length), 64 KiB at a time.
fn chunked(len: usize) -> Body {
    let (mut tx, body) = Channel::<Bytes, modelarts_proxy::error::BoxError>::new(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if tx.send_data(chunk.slice(..n)).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    body.boxed_unsync()
}

async fn limit_proxy(seen: Arc<Seen>) -> Proxy {
    let upstream = counting_upstream(seen).await;
    start_proxy(&format!(
        "[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await
}

#[tokio::test]
async fn exactly_12_mib_is_accepted_with_content_length_signed_and_unsigned() {
    let (proxy, _) = signing_proxy("").await;
    for ct in ["application/json", "application/octet-stream"] {
        let req = request("POST", &proxy.url("/"))
            .header("content-type", ct)
            .body(body(vec![b'7'; MIB12]))
            .unwrap();
        let (parts, bytes) = send(req).await;
        assert_eq!(
            parts.status,
            200,
            "{ct}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(json(&bytes)["body_bytes"], MIB12, "{ct}");
    }
}

#[tokio::test]
async fn exactly_12_mib_is_accepted_chunked_signed_and_unsigned() {
    let (proxy, _) = signing_proxy("").await;
    for ct in ["application/json", "application/octet-stream"] {
        let req = request("POST", &proxy.url("/"))
            .header("content-type", ct)
            .body(chunked(MIB12))
            .unwrap();
        let (parts, bytes) = send(req).await;
        assert_eq!(
            parts.status,
            200,
            "{ct}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(json(&bytes)["body_bytes"], MIB12, "{ct}");
    }
}

#[tokio::test]
async fn content_length_one_byte_over_12_mib_gets_413_before_anything_is_sent() {
    let seen = Arc::new(Seen::default());
    let proxy = limit_proxy(seen.clone()).await;
    for ct in ["application/json", "application/octet-stream"] {
        let req = request("POST", &proxy.url("/"))
            .header("content-type", ct)
            .body(body(vec![b'7'; MIB12 + 1]))
            .unwrap();
        let (parts, bytes) = send(req).await;
        assert_proxy_error(&parts, &bytes, 413, "body_too_large");
    }
    assert_eq!(
        seen.complete.load(Ordering::SeqCst) + seen.incomplete.load(Ordering::SeqCst),
        0
    );
    let msg = json(
        &send(
            request("POST", &proxy.url("/"))
                .body(body(vec![0; MIB12 + 1]))
                .unwrap(),
        )
        .await
        .1,
    )["error"]["message"]
        .clone();
    assert_eq!(
        msg,
        "request body is larger than max_body (12 MiB); Huawei API Gateway rejects bodies over 12 MB"
    );
}

#[tokio::test]
async fn oversized_chunked_json_gets_413_and_the_upstream_sees_nothing() {
    let seen = Arc::new(Seen::default());
    let proxy = limit_proxy(seen.clone()).await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(chunked(MIB12 + 1))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 413, "body_too_large");
    assert_eq!(
        seen.complete.load(Ordering::SeqCst) + seen.incomplete.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn oversized_chunked_stream_is_cut_and_the_upstream_never_gets_a_complete_request() {
    let seen = Arc::new(Seen::default());
    let proxy = limit_proxy(seen.clone()).await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/octet-stream")
        .body(chunked(MIB12 + 1))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 413, "body_too_large");
    assert_eq!(
        seen.complete.load(Ordering::SeqCst),
        0,
        "the upstream received a complete request"
    );
}

#[tokio::test]
async fn max_body_can_be_lowered_per_route() {
    let seen = Arc::new(Seen::default());
    let upstream = counting_upstream(seen.clone()).await;
    let proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{upstream}/\"\nmax_body = \"1KiB\"\npayload = \"unsigned\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}")).await;
    // A chunked body over the limit, streamed unsigned: cut at the route's limit.
    let (parts, bytes) = send(
        request("POST", &proxy.url("/"))
            .body(chunked(4096))
            .unwrap(),
    )
    .await;
    assert_proxy_error(&parts, &bytes, 413, "body_too_large");
    assert!(
        json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(1 KiB)")
    );
    let (parts, _) = send(
        request("POST", &proxy.url("/"))
            .body(body(vec![0; 1024]))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    let (parts, bytes) = send(
        request("POST", &proxy.url("/"))
            .body(body(vec![0; 1025]))
            .unwrap(),
    )
    .await;
    assert_proxy_error(&parts, &bytes, 413, "body_too_large");
    assert!(
        json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(1 KiB)")
    );
}

#[tokio::test]
async fn a_slow_upstream_gets_504_after_the_configured_timeout() {
    // The upstream never answers (it waits on a channel nobody fires).
    let (_never_tx, never) = oneshot::channel::<()>();
    let never = Arc::new(Mutex::new(Some(never)));
    let upstream = upstream(move |_| {
        let never = never.clone();
        async move {
            if let Some(rx) = never.lock().await.take() {
                let _ = rx.await;
            }
            std::future::pending::<()>().await;
            unreachable!()
        }
    })
    .await;
    let proxy = start_proxy(&format!("[server]\ntimeout = \"300ms\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}")).await;
    let (parts, bytes) = send(
        request("POST", &proxy.url("/"))
            .header("content-type", "application/json")
            .body(body("{}"))
            .unwrap(),
    )
    .await;
    assert_proxy_error(&parts, &bytes, 504, "upstream_timeout");
    assert_eq!(
        json(&bytes)["error"]["message"],
        "no response head from the upstream within 300ms (timeout)"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_and_the_proxy_keeps_serving() {
    // A port that was bound and released: connections are refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let live = stand_in().await;
    let toml = format!(
        "[[route]]\nprefix = \"/down\"\nupstream = \"http://{closed}/\"\ncredentials = \"test\"\n[[route]]\nprefix = \"/up\"\nupstream = \"http://{live}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    );
    let proxy = start_proxy(&toml).await;
    let (parts, bytes) = get(&proxy.url("/down")).await;
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    let msg = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.starts_with(&format!("cannot connect to upstream {closed}")),
        "{msg}"
    );
    assert_eq!(get(&proxy.url("/up")).await.0.status, 200);
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let upstream = stand_in().await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:9901\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let admin = proxy.admin.unwrap();
    get(&proxy.url("/")).await;
    send(
        request("POST", &proxy.url("/"))
            .body(body(vec![0; MIB12 + 1]))
            .unwrap(),
    )
    .await;
    let (parts, bytes) = get(&format!("http://{admin}/healthz")).await;
    assert_eq!((parts.status.as_u16(), &bytes[..]), (200, &b"ok\n"[..]));
    let (parts, _) = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(parts.status, 200);
    let (_, bytes) = get(&format!("http://{admin}/metrics")).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("modelarts_proxy_requests_total{route=\"/\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("modelarts_proxy_proxy_errors_total{route=\"/\",code=\"body_too_large\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("modelarts_proxy_upstream_response_seconds_count{route=\"/\"} 1"),
        "{text}"
    );
    assert!(!text.contains(SK));
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let (answer_tx, answer) = oneshot::channel::<()>();
    let (arrived_tx, arrived) = oneshot::channel::<()>();
    let gates = Arc::new(Mutex::new(Some((arrived_tx, answer))));
    let upstream = upstream(move |_| {
        let gates = gates.clone();
        async move {
            let (arrived_tx, answer) = gates.lock().await.take().unwrap();
            arrived_tx.send(()).unwrap();
            answer.await.unwrap();
            text_response(200, "finished")
        }
    })
    .await;
    let mut proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{upstream}/\"\n")).await;
    let in_flight = tokio::spawn(send(
        request("GET", &proxy.url("/")).body(body("")).unwrap(),
    ));
    arrived.await.unwrap();
    proxy.shutdown();
    answer_tx.send(()).unwrap();
    let (parts, bytes) = in_flight.await.unwrap();
    assert_eq!((parts.status.as_u16(), &bytes[..]), (200, &b"finished"[..]));
    tokio::time::timeout(TEST_DEADLINE, proxy.task)
        .await
        .expect("drains")
        .unwrap();
}

#[tokio::test]
async fn reload_swaps_a_good_config_and_keeps_the_old_one_on_error() {
    let dir = std::env::temp_dir().join(format!("modelarts-proxy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    let a = upstream(|_| async { text_response(200, "a") }).await;
    let b = upstream(|_| async { text_response(200, "b") }).await;
    std::fs::write(&path, format!("[[route]]\nupstream = \"http://{a}/\"\n")).unwrap();
    let proxy = start_proxy(&std::fs::read_to_string(&path).unwrap()).await;
    let get = || async { get(&proxy.url("/")).await.1 };
    assert_eq!(&get().await[..], b"a");

    std::fs::write(&path, format!("[[route]]\nupstream = \"http://{b}/\"\n")).unwrap();
    assert!(modelarts_proxy::cli::reload(&proxy.shared, &path));
    assert_eq!(&get().await[..], b"b");

    std::fs::write(&path, "[[route]]\nupstream = \"ftp://broken\"\n").unwrap();
    assert!(!modelarts_proxy::cli::reload(&proxy.shared, &path));
    assert_eq!(&get().await[..], b"b", "a bad reload keeps the old config");
    let metrics = proxy.shared.metrics.encode();
    assert!(
        metrics.contains("modelarts_proxy_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelarts_proxy_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_client_that_stalls_mid_upload_gets_408_and_the_upstream_sees_nothing() {
    let seen = Arc::new(Seen::default());
    let upstream = counting_upstream(seen.clone()).await;
    let proxy = start_proxy(&format!(
        "[server]\ntimeout = \"300ms\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    // Promises 10 bytes of JSON, sends 4, then waits: the body must be read to be hashed.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\"";
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        TEST_DEADLINE,
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        resp.contains("x-modelarts-proxy-error: request_timeout"),
        "{resp}"
    );
    assert!(
        resp.contains("the client did not send its request body within 300ms"),
        "{resp}"
    );
    assert_eq!(
        seen.complete.load(Ordering::SeqCst) + seen.incomplete.load(Ordering::SeqCst),
        0
    );
}
