//! An upstream's ordinary connection life is never an error (DESIGN §12,
//! first bullet): connections recycled with GOAWAY, refused streams, keep-
//! alive connections closed under a request, END_STREAM in an empty frame
//! of its own, trailers and big heads all reach the client as the answers
//! they are, every response is logged `complete`, and what does fail is
//! blamed on whoever failed.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::scripted::{ANSWER, H1Script, H2Script, h1_upstream, h2_upstream};
use common::*;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

/// A proxy speaking HTTP/2 (prior knowledge) to `upstream`, with metrics.
async fn h2_proxy(upstream: std::net::SocketAddr) -> Proxy {
    start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[upstream_tls]\nhttp2 = \"http2\"\n[[route]]\nupstream = \"http://{upstream}/v1\"\n"
    ))
    .await
}

/// A proxy speaking HTTP/1.1 to `upstream`.
async fn h1_proxy(upstream: std::net::SocketAddr) -> Proxy {
    start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{upstream}/v1\"\n"
    ))
    .await
}

/// `clients` keep-alive clients each sending `each` requests, POST with a
/// small JSON body and GET in turn; returns every answer that was not a 200
/// with its body, and how many were 200.
async fn load(proxy: &Proxy, clients: usize, each: usize) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = proxy.url("/predict");
        tasks.push(tokio::spawn(async move {
            let client = client();
            let (mut ok, mut bad) = (0, Vec::new());
            for i in 0..each {
                let req = if (c + i) % 2 == 0 {
                    request("POST", &url)
                        .header("content-type", "application/json")
                        .body(body(format!("{{\"client\":{c},\"i\":{i}}}")))
                } else {
                    request("GET", &url).body(body(""))
                };
                let resp = client.request(req.unwrap()).await.expect("answered");
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                if status == 200 && bytes == ANSWER {
                    ok += 1;
                } else {
                    bad.push(format!("{status} {}", String::from_utf8_lossy(&bytes)));
                }
            }
            (ok, bad)
        }));
    }
    let mut all = (0, Vec::new());
    for t in tasks {
        let (ok, bad) = tokio::time::timeout(TEST_DEADLINE, t)
            .await
            .expect("load within the deadline")
            .unwrap();
        all.0 += ok;
        all.1.extend(bad);
    }
    all
}

/// Every response body ended as the upstream framed it: none counted as a
/// stream failure of any cause.
fn assert_all_complete(proxy: &Proxy) {
    for cause in ["client_aborted", "upstream_reset", "idle_timeout"] {
        let series =
            format!("modelarts_proxy_stream_failures_total{{route=\"/\",cause=\"{cause}\"}}");
        assert_eq!(proxy.metric(&series), 0.0, "{series}");
    }
}

fn resends(proxy: &Proxy, reason: &str) -> f64 {
    proxy.metric(&format!(
        "modelarts_proxy_resends_total{{reason=\"{reason}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_recycling_its_connections_with_goaway_loses_no_request() {
    let upstream = h2_upstream(H2Script {
        goaway_every: Some(25),
        ..Default::default()
    })
    .await;
    let proxy = h2_proxy(upstream.addr).await;
    let (ok, bad) = load(&proxy, 32, 25).await;
    assert_eq!((ok, bad.len()), (800, 0), "{bad:?}");
    assert!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 20,
        "the upstream recycled its connections"
    );
    assert_all_complete(&proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_past_the_upstreams_limit_are_resent_and_never_blamed_on_the_client() {
    // Four streams at once: the first connection meets 32 streams before
    // its SETTINGS are read.
    let upstream = h2_upstream(H2Script {
        max_streams: Some(4),
        ..Default::default()
    })
    .await;
    let proxy = h2_proxy(upstream.addr).await;
    let (ok, bad) = load(&proxy, 32, 25).await;
    assert_eq!((ok, bad.len()), (800, 0), "{bad:?}");
    assert_eq!(
        proxy.metric("modelarts_proxy_proxy_errors_total{route=\"/\",code=\"bad_request\"}"),
        0.0
    );
    assert_all_complete(&proxy);
}

#[tokio::test]
async fn end_stream_in_an_empty_frame_of_its_own_is_complete_and_the_stream_is_never_reset() {
    // The upstream sends its last DATA frame, and END_STREAM only once the
    // client has the whole body: by then the proxy's server has stopped
    // reading the response (its Content-Length is reached).
    let release = Arc::new(Semaphore::new(0));
    let upstream = h2_upstream(H2Script {
        release: Some(release.clone()),
        ..Default::default()
    })
    .await;
    let proxy = h2_proxy(upstream.addr).await;
    let client = client();
    for _ in 0..20 {
        let resp = client
            .request(
                request("GET", &proxy.url("/stream"))
                    .body(body(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while got.len() < ANSWER.len() {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(&frame.into_data().unwrap());
        }
        assert_eq!(got, ANSWER);
        release.add_permits(1);
    }
    eventually("every response logged", || {
        proxy.metric("modelarts_proxy_requests_in_flight") == 0.0
    })
    .await;
    assert_all_complete(&proxy);
    eventually("the upstream ended all 20 streams", || {
        release.available_permits() == 0
    })
    .await;
    assert_eq!(
        upstream.resets.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "streams reset by the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_an_empty_final_frame_never_turns_into_resets_or_502s() {
    // A streaming front end (nginx with proxy_buffering off) ends every
    // body with an empty DATA frame; h2 closes a connection whose client
    // resets more than 1,024 streams, so the count matters.
    let upstream = h2_upstream(H2Script::default()).await;
    let proxy = h2_proxy(upstream.addr).await;
    let (ok, bad) = load(&proxy, 32, 40).await;
    assert_eq!((ok, bad.len()), (1280, 0), "{bad:?}");
    eventually("every response logged", || {
        proxy.metric("modelarts_proxy_requests_in_flight") == 0.0
    })
    .await;
    assert_all_complete(&proxy);
    assert_eq!(
        upstream.resets.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn trailers_end_a_response_over_http2_and_http1() {
    let h2 = h2_upstream(H2Script {
        trailers: true,
        ..Default::default()
    })
    .await;
    let h1 = h1_upstream(H1Script::Trailers).await;
    for proxy in [h2_proxy(h2.addr).await, h1_proxy(h1.addr).await] {
        for _ in 0..5 {
            let (parts, bytes) = get(&proxy.url("/")).await;
            assert_eq!((parts.status.as_u16(), &bytes[..]), (200, ANSWER));
        }
        eventually("every response logged", || {
            proxy.metric("modelarts_proxy_requests_in_flight") == 0.0
        })
        .await;
        assert_all_complete(&proxy);
    }
}

#[tokio::test]
async fn a_keep_alive_connection_closed_under_an_idempotent_request_is_resent_once() {
    let upstream = h1_upstream(H1Script::CloseSecondRequest).await;
    let proxy = h1_proxy(upstream.addr).await;
    let client = client();
    for method in ["GET", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "GET"] {
        let resp = client
            .request(request(method, &proxy.url("/")).body(body("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let _ = resp.into_body().collect().await;
    }
    // Every second request met the pooled connection that had answered
    // the one before; it went out again on a fresh connection (used once,
    // not pooled), and the next request opened a new pooled one.
    assert_eq!(resends(&proxy, "closed_before_answer"), 3.0);
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    assert_eq!(resends(&proxy, "refused_stream"), 0.0);
}

#[tokio::test]
async fn a_post_on_a_closed_keep_alive_connection_is_the_upstreams_502_not_resent() {
    let upstream = h1_upstream(H1Script::CloseSecondRequest).await;
    let proxy = h1_proxy(upstream.addr).await;
    let client = client();
    let post = || {
        request("POST", &proxy.url("/"))
            .header("content-type", "application/json")
            .body(body("{\"a\":1}"))
            .unwrap()
    };
    let first = client.request(post()).await.unwrap();
    assert_eq!(first.status(), 200);
    let _ = first.into_body().collect().await;
    let resp = client.request(post()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    let message = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("before answering"), "{message}");
    assert_eq!(resends(&proxy, "closed_before_answer"), 0.0);
    // The upstream saw it once: a POST is never sent twice.
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_meet_closed_keep_alive_connections_without_an_error() {
    let upstream = h1_upstream(H1Script::CloseSecondRequest).await;
    let proxy = h1_proxy(upstream.addr).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = proxy.url("/");
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..10 {
                let resp = client
                    .request(request("GET", &url).body(body("")).unwrap())
                    .await
                    .unwrap();
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(resends(&proxy, "closed_before_answer") > 0.0);
    assert_all_complete(&proxy);
}

#[tokio::test]
async fn a_24_kb_response_head_passes_over_http2_and_http1() {
    let h2 = h2_upstream(H2Script {
        big_header: Some(24 * 1024),
        ..Default::default()
    })
    .await;
    let h1 = h1_upstream(H1Script::BigHead(60 * 1024)).await;
    for (proxy, size) in [
        (h2_proxy(h2.addr).await, 24 * 1024),
        (h1_proxy(h1.addr).await, 60 * 1024),
    ] {
        let (parts, bytes) = get(&proxy.url("/")).await;
        assert_eq!((parts.status.as_u16(), &bytes[..]), (200, ANSWER));
        assert_eq!(parts.headers["x-big"].len(), size);
    }
}

#[tokio::test]
async fn a_response_head_over_64_kib_is_a_502_that_names_the_size() {
    let h1 = h1_upstream(H1Script::BigHead(100 * 1024)).await;
    let proxy = h1_proxy(h1.addr).await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    let message = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("response head larger than 64 KiB"),
        "{message}"
    );
}

#[tokio::test]
async fn a_stalled_unsigned_upload_that_streams_is_the_clients_408_not_a_400() {
    let upstream = upstream(|req| async move {
        let _ = req.into_body().collect().await;
        text_response(200, "read it all")
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\ntimeout = \"60s\"\nidle_timeout = \"300ms\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\npayload = \"unsigned\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let (mut tx, stalled) = http_body_util::channel::Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        let _ = tx
            .send_data(Bytes::from_static(b"some bytes, then nothing"))
            .await;
        std::future::pending::<()>().await;
        drop(tx);
    });
    // Chunked, so the proxy streams it upstream as it arrives.
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(stalled.boxed_unsync())
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 408, "request_timeout");
    let message = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("idle_timeout"), "{message}");
}

use modelarts_proxy::error::BoxError;

#[tokio::test]
async fn a_resent_request_is_the_one_first_sent_signature_and_trace_context_and_all() {
    let upstream = h1_upstream(H1Script::CloseSecondRequest).await;
    let collector = common::upstream(|_| async { text_response(200, "") }).await;
    let proxy = start_proxy(&format!(
        "[telemetry]\notlp_endpoint = \"http://{collector}\"\n[[route]]\nupstream = \"http://{}/v1\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}",
        upstream.addr
    ))
    .await;
    let client = client();
    for _ in 0..2 {
        let req = request("GET", &proxy.url("/predict"))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(body(""))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    // The second request met the closed connection and went out again.
    let heads = upstream.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    let resent = &heads[2];
    assert_eq!(&heads[1], resent, "sent again as it was first sent");
    for field in [
        "authorization: sdk-hmac-sha256 access=",
        "x-sdk-date: ",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-",
    ] {
        assert!(resent.contains(field), "{field} in {resent}");
    }
    assert_ne!(
        heads[0].lines().find(|l| l.starts_with("traceparent")),
        resent.lines().find(|l| l.starts_with("traceparent")),
        "each request has an upstream span of its own"
    );
}
