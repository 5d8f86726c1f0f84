//! Bounded by construction (DESIGN §8): the buffer budget, the connection
//! cap, idle timers on bodies, and a drain that a second signal cuts short.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use modelarts_proxy::error::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A body that says when it is dropped (its connection released).
struct NotifyOnDrop(Body, Option<tokio::sync::oneshot::Sender<()>>);

impl http_body::Body for NotifyOnDrop {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
}

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.1.take() {
            let _ = tx.send(());
        }
    }
}

/// An upstream that reads each body and answers with its length; counts requests.
async fn length_upstream(seen: Arc<AtomicUsize>) -> std::net::SocketAddr {
    upstream(move |req| {
        let seen = seen.clone();
        async move {
            let len = req
                .into_body()
                .collect()
                .await
                .map_or(0, |b| b.to_bytes().len());
            seen.fetch_add(1, Ordering::SeqCst);
            text_response(200, &len.to_string())
        }
    })
    .await
}

fn route_to(upstream: std::net::SocketAddr, server: &str) -> String {
    format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n{server}\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\npayload = \"signed\"\n{TEST_CREDENTIALS}"
    )
}

/// A body of `len` bytes sent with Content-Length: `first` bytes now, the
/// rest when the returned sender is told to go on.
fn held_body(len: usize, first: usize) -> (Body, tokio::sync::oneshot::Sender<()>) {
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = tx.send_data(Bytes::from(vec![b'a'; first])).await;
        let _ = wait.await;
        let _ = tx.send_data(Bytes::from(vec![b'b'; len - first])).await;
    });
    (body.boxed_unsync(), go)
}

#[tokio::test]
async fn signed_uploads_beyond_the_buffer_budget_get_503_overloaded_and_nothing_goes_upstream() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = length_upstream(seen.clone()).await;
    let proxy = start_proxy(&route_to(
        upstream,
        "buffer_budget = \"1MiB\"\nbuffer_wait = \"200ms\"",
    ))
    .await;
    // A holds 700 KiB of the 1 MiB budget: reserved from its Content-Length
    // before a byte is read, kept while the client is still sending.
    const A: usize = 700 * 1024;
    let (body_a, go_a) = held_body(A, 1024);
    let req_a = request("POST", &proxy.url("/a"))
        .header("content-type", "application/json")
        .header("content-length", A)
        .body(body_a)
        .unwrap();
    let a = tokio::spawn(send(req_a));
    eventually(
        "A's reservation shows in modelarts_proxy_buffered_bytes",
        || proxy.metric("modelarts_proxy_buffered_bytes") == A as f64,
    )
    .await;

    // B does not fit: after buffer_wait, 503 overloaded with Retry-After.
    let req_b = request("POST", &proxy.url("/b"))
        .header("content-type", "application/json")
        .body(body(vec![b'c'; 600 * 1024]))
        .unwrap();
    let (parts, bytes) = send(req_b).await;
    assert_proxy_error(&parts, &bytes, 503, "overloaded");
    assert_eq!(parts.headers["retry-after"], "2");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing went upstream");

    // A finishes; its budget comes back; B fits now.
    go_a.send(()).unwrap();
    let (parts, bytes) = a.await.unwrap();
    assert_eq!(
        (parts.status.as_u16(), &bytes[..]),
        (200, A.to_string().as_bytes())
    );
    eventually("the budget is all back", || {
        proxy.metric("modelarts_proxy_buffered_bytes") == 0.0
    })
    .await;
    let req_b = request("POST", &proxy.url("/b"))
        .header("content-type", "application/json")
        .body(body(vec![b'c'; 600 * 1024]))
        .unwrap();
    let (parts, _) = send(req_b).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        proxy.metric("modelarts_proxy_proxy_errors_total{route=\"/\",code=\"overloaded\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_signed_body_larger_than_the_whole_budget_is_refused_at_once() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = length_upstream(seen.clone()).await;
    let proxy = start_proxy(&route_to(
        upstream,
        "buffer_budget = \"1MiB\"\nbuffer_wait = \"30s\"",
    ))
    .await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(body(vec![b'x'; 2 * 1024 * 1024]))
        .unwrap();
    let (parts, bytes) = tokio::time::timeout(Duration::from_secs(10), send(req))
        .await
        .expect("answered without waiting out buffer_wait");
    assert_proxy_error(&parts, &bytes, 503, "overloaded");
    assert!(
        parts.headers.get("retry-after").is_none(),
        "retrying cannot help"
    );
    assert!(
        json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("buffer_budget")
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unsigned_uploads_stream_past_a_full_budget() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = length_upstream(seen.clone()).await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nbuffer_budget = \"64KiB\"\nbuffer_wait = \"100ms\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    // 2 MiB of octet-stream: UNSIGNED-PAYLOAD, never held, so the budget is irrelevant.
    let req = request("PUT", &proxy.url("/"))
        .header("content-type", "application/octet-stream")
        .body(body(vec![b'z'; 2 * 1024 * 1024]))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_eq!((parts.status.as_u16(), &bytes[..]), (200, &b"2097152"[..]));
    assert_eq!(proxy.metric("modelarts_proxy_buffered_bytes"), 0.0);
}

#[tokio::test]
async fn at_max_connections_idle_connections_make_room_for_real_clients() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = length_upstream(seen.clone()).await;
    // header_timeout is long: without eviction under pressure, the request
    // below would wait 60 s for a slot.
    let proxy = start_proxy(&route_to(
        upstream,
        "max_connections = 4\nheader_timeout = \"60s\"",
    ))
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    eventually("four connections open", || {
        proxy.metric("modelarts_proxy_connections_open") == 4.0
    })
    .await;
    let (parts, _) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 200);
    assert!(proxy.metric("modelarts_proxy_connections_closed_total{reason=\"pressure\"}") >= 1.0);
    assert!(proxy.metric("modelarts_proxy_connections_open") <= 4.0);
    assert_eq!(proxy.metric("modelarts_proxy_max_connections"), 4.0);
}

#[tokio::test]
async fn a_stalled_unsigned_upload_is_the_clients_408_not_the_upstreams_504() {
    let upstream = upstream(|req| async move {
        let _ = req.into_body().collect().await;
        text_response(200, "read it all")
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\ntimeout = \"1s\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let (mut tx, stalled) = Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        let _ = tx
            .send_data(Bytes::from_static(b"some bytes, then nothing"))
            .await;
        std::future::pending::<()>().await;
        drop(tx);
    });
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/octet-stream")
        .body(stalled.boxed_unsync())
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 408, "request_timeout");
}

#[tokio::test]
async fn an_upload_that_moves_no_byte_for_idle_timeout_is_408() {
    let upstream = upstream(|req| async move {
        let _ = req.into_body().collect().await;
        text_response(200, "read it all")
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\ntimeout = \"60s\"\nidle_timeout = \"500ms\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let (mut tx, stalled) = Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        let _ = tx.send_data(Bytes::from_static(b"{\"partial\":")).await;
        std::future::pending::<()>().await;
        drop(tx);
    });
    // JSON: the proxy buffers it to sign it, so the stall happens while it reads.
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(stalled.boxed_unsync())
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 408, "request_timeout");
    assert!(
        json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idle_timeout")
    );
}

#[tokio::test]
async fn a_response_that_stalls_after_its_head_is_cut_and_counted() {
    let (gone_tx, sender_gone) = tokio::sync::oneshot::channel::<()>();
    let gone_tx = Arc::new(std::sync::Mutex::new(Some(gone_tx)));
    let upstream = upstream(move |_req| {
        let gone = gone_tx.lock().unwrap().take();
        async move {
            let (mut tx, events) = Channel::<Bytes, BoxError>::new(1);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"data: first\n\n")).await;
                // Then stall, holding the stream open.
                std::future::pending::<()>().await;
                drop(tx);
            });
            let events = NotifyOnDrop(events.boxed_unsync(), gone);
            let mut r = http::Response::new(events.boxed_unsync());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nidle_timeout = \"500ms\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let resp = client()
        .request(
            request("GET", &proxy.url("/events"))
                .body(body(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    let rest = tokio::time::timeout(TEST_DEADLINE, body.collect())
        .await
        .unwrap();
    assert!(rest.is_err(), "the client sees a truncated stream");
    tokio::time::timeout(TEST_DEADLINE, sender_gone)
        .await
        .expect("the upstream's stream was released")
        .unwrap();
    assert_eq!(
        proxy.metric("modelarts_proxy_stream_failures_total{route=\"/\",cause=\"idle_timeout\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_slow_reader_of_a_large_response_holds_little_in_the_proxy() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let upstream = upstream(move |_req| {
        let counter = counter.clone();
        async move {
            let (mut tx, stream) = Channel::<Bytes, BoxError>::new(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'r'; CHUNK]);
                for _ in 0..TOTAL / CHUNK {
                    if tx.send_data(chunk.clone()).await.is_err() {
                        return;
                    }
                    counter.fetch_add(CHUNK, Ordering::SeqCst);
                }
            });
            http::Response::new(stream.boxed_unsync())
        }
    })
    .await;
    let proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{upstream}/\"\n")).await;
    let resp = client()
        .request(request("GET", &proxy.url("/big")).body(body("")).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut received = 0usize;
    let mut worst_lead = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
        }
        worst_lead = worst_lead.max(sent.load(Ordering::SeqCst).saturating_sub(received));
        // A slow reader: the upstream must wait for it, not the proxy's memory.
        if received % (4 * 1024 * 1024) < CHUNK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(received, TOTAL);
    // Socket buffers on both hops plus hyper's buffers; never the 100 MB.
    assert!(
        worst_lead < 24 * 1024 * 1024,
        "the upstream got {worst_lead} bytes ahead"
    );
}

#[tokio::test]
async fn a_client_that_aborts_mid_upload_cancels_the_upstream_request() {
    let (saw_tx, saw) = tokio::sync::oneshot::channel::<bool>();
    let saw_tx = Arc::new(std::sync::Mutex::new(Some(saw_tx)));
    let upstream = upstream(move |req| {
        let saw_tx = saw_tx.clone();
        async move {
            let complete = req.into_body().collect().await.is_ok();
            if let Some(tx) = saw_tx.lock().unwrap().take() {
                let _ = tx.send(complete);
            }
            text_response(200, "done")
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // Over 1 MiB, so it streams (a smaller body is read whole first, to be
    // sent again if the upstream does not process it, and never starts).
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 5000000\r\n\r\nfirst part of the body",
        )
        .await
        .unwrap();
    drop(stream);
    let complete = tokio::time::timeout(TEST_DEADLINE, saw)
        .await
        .expect("the upstream request ended")
        .unwrap();
    assert!(!complete, "the upstream never got a complete body");
    // Answered (to nobody) as the client's failure, not the upstream's.
    eventually(
        "the aborted upload is counted as the client's error",
        || {
            proxy.metric("modelarts_proxy_proxy_errors_total{route=\"/\",code=\"bad_request\"}")
                == 1.0
        },
    )
    .await;
}

#[tokio::test]
async fn an_upstream_reset_mid_response_is_counted_as_a_failure_not_a_plain_200() {
    // A raw upstream: a head promising 100 bytes, 3 of them, then a close.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                    .await;
            });
        }
    });
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let resp = client()
        .request(request("GET", &proxy.url("/")).body(body("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the head had already arrived");
    assert!(
        resp.into_body().collect().await.is_err(),
        "the client sees the cut"
    );
    eventually("the reset is counted", || {
        proxy.metric("modelarts_proxy_stream_failures_total{route=\"/\",cause=\"upstream_reset\"}")
            == 1.0
    })
    .await;
}

/// An upstream that never answers, and counts the requests it got.
async fn hanging_upstream(arrived: Arc<AtomicUsize>) -> std::net::SocketAddr {
    upstream(move |_req| {
        arrived.fetch_add(1, Ordering::SeqCst);
        async { std::future::pending().await }
    })
    .await
}

#[tokio::test]
async fn a_second_stop_signal_cuts_the_drain_short() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let upstream = hanging_upstream(arrived.clone()).await;
    let mut proxy = start_proxy_with_signals(&format!(
        "[server]\nshutdown_grace = \"60s\"\ntimeout = \"60s\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let in_flight =
        tokio::spawn(client().request(request("GET", &proxy.url("/slow")).body(body("")).unwrap()));
    eventually("the request is in flight", || {
        arrived.load(Ordering::SeqCst) == 1
    })
    .await;
    let signals = proxy.signals.take().unwrap();
    signals.send(()).await.unwrap();
    // Draining: the in-flight request would have 60 s.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut proxy.task)
            .await
            .is_err(),
        "still draining after the first signal"
    );
    signals.send(()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
        .await
        .expect("the second signal ends the daemon at once")
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "the cut request's connection was closed");
}

#[tokio::test]
async fn idle_keep_alive_and_h2_connections_do_not_hold_the_drain() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = length_upstream(seen).await;
    let mut proxy = start_proxy_with_signals(&format!(
        "[server]\nshutdown_grace = \"60s\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    // One request on each, then both connections sit idle (kept alive by the pools).
    let h1 = client();
    let h2 = h2c_client();
    for c in [&h1, &h2] {
        let resp = c
            .request(request("GET", &proxy.url("/")).body(body("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await.unwrap();
    }
    proxy.signals.take().unwrap().send(()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("idle connections closed at the start of the drain, not after 60 s")
        .unwrap();
    drop((h1, h2));
}

#[tokio::test]
async fn shutdown_delay_keeps_serving_with_readyz_503() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = length_upstream(seen).await;
    let mut proxy = start_proxy_with_signals(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_delay = \"60s\"\n[[route]]\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let admin = format!("http://{}/readyz", proxy.admin.unwrap());
    assert_eq!(get(&admin).await.0.status, 200);
    let signals = proxy.signals.take().unwrap();
    signals.send(()).await.unwrap();
    let mut ready = 200;
    for _ in 0..100 {
        ready = get(&admin).await.0.status.as_u16();
        if ready == 503 {
            break;
        }
    }
    assert_eq!(ready, 503, "/readyz answers 503 during shutdown_delay");
    let (parts, _) = get(&proxy.url("/still-serving")).await;
    assert_eq!(
        parts.status, 200,
        "new requests are still served during the delay"
    );
    assert!(!proxy.task.is_finished());
    signals.send(()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
        .await
        .expect("a second signal ends the delay at once")
        .unwrap();
}
