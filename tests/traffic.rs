//! Traffic the gateway accepts (DESIGN §12): retries of what may be tried
//! again, each attempt signed anew; pacing by rate and concurrency with a
//! bounded queue; failover between targets, with ejection; the retry budget.
//! Real time, with short waits; each bound a test checks is a lower bound
//! (it cannot be met early) or a deadline far above it.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::BodyExt;

/// One scripted answer: status, extra headers, body.
#[derive(Clone)]
struct Answer(u16, Vec<(&'static str, &'static str)>, &'static str);

fn ok() -> Answer {
    Answer(200, vec![], "{\"ok\":true}")
}

fn throttled() -> Answer {
    Answer(
        429,
        vec![],
        r#"{"error_code":"APIG.0308","error_msg":"The request is throttled","request_id":"r1"}"#,
    )
}

/// What the scripted upstream saw of each attempt.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    sdk_date: Option<String>,
    request_id: Option<String>,
    /// The signature checked out (None: unsigned request).
    signature_ok: Option<bool>,
    body_len: usize,
}

/// An upstream answering each request with the next scripted answer (the
/// last repeats), checking AK/SK signatures, recording every attempt.
async fn scripted(answers: Vec<Answer>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let answers = Arc::new(answers);
    let addr = upstream(move |req| {
        let (log, answers) = (log.clone(), answers.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let header = |n: &str| parts.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
            let signature_ok = parts
                .headers
                .contains_key("authorization")
                .then(|| signature_ok(&parts, &bytes));
            let n = {
                let mut log = log.lock().unwrap();
                log.push(Seen {
                    method: parts.method.to_string(),
                    sdk_date: header("x-sdk-date"),
                    request_id: header("x-request-id"),
                    signature_ok,
                    body_len: bytes.len(),
                });
                log.len() - 1
            };
            let Answer(status, headers, body) = answers[n.min(answers.len() - 1)].clone();
            let mut r = Response::builder().status(status);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.header("content-type", "application/json")
                .body(common::body(body))
                .unwrap()
        }
    })
    .await;
    (addr, seen)
}

fn attempts(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    seen.lock().unwrap().clone()
}

/// A proxy with one AK/SK route to `upstream` and `extra` route keys.
async fn signing_route(upstream: SocketAddr, extra: &str) -> Proxy {
    start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{upstream}/v1\"\ncredentials = \"test\"\n{extra}\n{TEST_CREDENTIALS}"
    ))
    .await
}

async fn post_json(proxy: &Proxy, body: &str) -> (http::response::Parts, Bytes) {
    send(
        request("POST", &proxy.url("/infer"))
            .header("content-type", "application/json")
            .body(common::body(body.to_owned()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_throttled_request_is_signed_anew_and_sent_again_until_it_passes() {
    // Retry-After: 1 makes each wait a whole second, so each date differs.
    let mut again = throttled();
    again.1.push(("retry-after", "1"));
    let (up, seen) = scripted(vec![again.clone(), again, ok()]).await;
    let proxy = signing_route(up, "").await;
    let (parts, bytes) = post_json(&proxy, "{\"x\":1}").await;
    assert_eq!(
        (parts.status.as_u16(), &bytes[..]),
        (200, &b"{\"ok\":true}"[..])
    );
    let tries = attempts(&seen);
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(
        tries.iter().all(|t| t.signature_ok == Some(true)),
        "{tries:?}"
    );
    assert!(tries.iter().all(|t| t.body_len == 7));
    // A new X-Sdk-Date each time, one request id.
    let dates: std::collections::HashSet<_> = tries.iter().map(|t| t.sdk_date.clone()).collect();
    assert_eq!(dates.len(), 3, "{tries:?}");
    let ids: std::collections::HashSet<_> = tries.iter().map(|t| t.request_id.clone()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        proxy.metric("modelarts_proxy_retries_total{route=\"/\",reason=\"throttled\"}"),
        2.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_over_the_backoff() {
    let mut first = throttled();
    first.1.push(("retry-after", "1"));
    let (up, seen) = scripted(vec![first, ok()]).await;
    let proxy = signing_route(up, "retry = { backoff = \"8s\", max_backoff = \"8s\" }").await;
    let t = Instant::now();
    let (parts, _) = post_json(&proxy, "{}").await;
    let took = t.elapsed();
    assert_eq!(parts.status, 200);
    assert_eq!(attempts(&seen).len(), 2);
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        took < Duration::from_secs(4),
        "waited the backoff, not Retry-After: {took:?}"
    );
}

#[tokio::test]
async fn when_every_attempt_fails_the_last_answer_passes_through_unchanged() {
    let last = Answer(
        503,
        vec![("x-from", "upstream")],
        r#"{"error_code":"ModelArts.4206","error_msg":"the service is busy, third time"}"#,
    );
    let (up, seen) = scripted(vec![throttled(), throttled(), last]).await;
    let proxy = signing_route(up, "retry = { backoff = \"10ms\", max_backoff = \"10ms\" }").await;
    let (parts, bytes) = post_json(&proxy, "{}").await;
    assert_eq!(parts.status, 503);
    assert_eq!(parts.headers["x-from"], "upstream");
    assert!(!parts.headers.contains_key("x-modelarts-proxy-error"));
    assert_eq!(
        &bytes[..],
        br#"{"error_code":"ModelArts.4206","error_msg":"the service is busy, third time"}"#
    );
    assert_eq!(attempts(&seen).len(), 3);
}

#[tokio::test]
async fn a_post_is_not_tried_again_after_a_gateway_503_but_a_get_is() {
    let (up, seen) = scripted(vec![Answer(503, vec![], "busy"), ok()]).await;
    let proxy = signing_route(up, "retry = { backoff = \"10ms\" }").await;
    let (parts, _) = post_json(&proxy, "{}").await;
    assert_eq!(parts.status, 503);
    assert_eq!(attempts(&seen).len(), 1);
    let (up, seen) = scripted(vec![Answer(503, vec![], "busy"), ok()]).await;
    let proxy = signing_route(up, "retry = { backoff = \"10ms\" }").await;
    let (parts, _) = get(&proxy.url("/x")).await;
    assert_eq!(parts.status, 200);
    let tries = attempts(&seen);
    assert_eq!(
        tries.iter().map(|t| t.method.as_str()).collect::<Vec<_>>(),
        ["GET", "GET"]
    );
}

#[tokio::test]
async fn a_large_unsigned_upload_is_never_tried_again() {
    let (up, seen) = scripted(vec![throttled(), ok()]).await;
    let proxy = signing_route(up, "payload = \"unsigned\"\nretry = { backoff = \"10ms\" }").await;
    let big = vec![b'x'; 2 * 1024 * 1024];
    let (parts, _) = send(
        request("POST", &proxy.url("/upload"))
            .header("content-type", "application/octet-stream")
            .body(common::body(big))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 429);
    let tries = attempts(&seen);
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].body_len, 2 * 1024 * 1024);
}

#[tokio::test]
async fn retries_off_with_one_attempt() {
    let (up, seen) = scripted(vec![throttled(), ok()]).await;
    let proxy = signing_route(up, "retry = { attempts = 1 }").await;
    let (parts, _) = post_json(&proxy, "{}").await;
    assert_eq!(parts.status, 429);
    assert_eq!(attempts(&seen).len(), 1);
}

#[tokio::test]
async fn the_deadline_is_never_passed_waiting_to_retry() {
    let (up, seen) = scripted(vec![Answer(503, vec![], "busy")]).await;
    let proxy = signing_route(
        up,
        "timeout = \"1s\"\nretry = { attempts = 10, backoff = \"400ms\", max_backoff = \"400ms\" }",
    )
    .await;
    let t = Instant::now();
    let (parts, _) = get(&proxy.url("/x")).await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(parts.status, 503, "the last answer, not a timeout");
    let n = attempts(&seen).len();
    assert!((2..=5).contains(&n), "waits of 200–400 ms within 1 s: {n}");
}

/// A port with nothing listening (bound, then closed).
async fn refused() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[tokio::test]
async fn a_refused_connection_fails_over_to_the_fallback_and_five_in_a_row_eject_the_target() {
    let dead = refused().await;
    let (up, seen) = scripted(vec![ok()]).await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{dead}/v1\"\ncredentials = \"test\"\nretry = {{ attempts = 1, backoff = \"10ms\" }}\n[[route.fallback]]\nupstream = \"http://{up}/v2\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let dead_up = format!("modelarts_proxy_upstream_up{{route=\"/\",upstream=\"http://{dead}\"}}");
    assert_eq!(proxy.metric(&dead_up), 1.0);
    for _ in 0..7 {
        let (parts, _) = post_json(&proxy, "{\"a\":1}").await;
        assert_eq!(parts.status, 200);
    }
    let tries = attempts(&seen);
    assert_eq!(tries.len(), 7);
    assert!(
        tries.iter().all(|t| t.signature_ok == Some(true)),
        "signed for the fallback"
    );
    // Five failures in a row took the dead target out: two requests went
    // straight to the fallback.
    assert_eq!(proxy.metric(&dead_up), 0.0);
    assert_eq!(
        proxy.metric("modelarts_proxy_retries_total{route=\"/\",reason=\"connect\"}"),
        5.0
    );
}

#[tokio::test]
async fn a_failing_gateway_gets_no_more_retries_than_the_budget() {
    let (up, seen) = scripted(vec![Answer(503, vec![], "down")]).await;
    let proxy = signing_route(
        up,
        "retry = { attempts = 2, backoff = \"1ms\", max_backoff = \"1ms\" }",
    )
    .await;
    let client = client();
    for _ in 0..150 {
        let r = client
            .request(
                request("GET", &proxy.url("/x"))
                    .body(common::body(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let _ = r.into_body().collect().await;
    }
    // 100 + 20% of 150 requests in the window.
    assert_eq!(
        proxy.metric("modelarts_proxy_retries_total{route=\"/\",reason=\"gateway_5xx\"}"),
        130.0
    );
    assert_eq!(attempts(&seen).len(), 280);
}

#[tokio::test]
async fn a_rate_paces_requests_and_past_queue_timeout_they_get_429() {
    let (up, seen) = scripted(vec![ok()]).await;
    let proxy = signing_route(up, "rate = \"10/s\"\nburst = 1\nqueue_timeout = \"250ms\"").await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let url = proxy.url("/x");
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let (parts, bytes) = task.await.unwrap();
        if parts.status == 429 {
            assert_proxy_error(&parts, &bytes, 429, "rate_limited");
            assert!(parts.headers.contains_key("retry-after"));
        }
        statuses.push(parts.status.as_u16());
    }
    statuses.sort();
    // Turns at 0, 100, 200 ms; the next two are past 250 ms.
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(attempts(&seen).len(), 3);
    assert_eq!(
        proxy.metric("modelarts_proxy_rate_limited_total{route=\"/\"}"),
        2.0
    );
}

#[tokio::test]
async fn concurrency_keeps_one_request_upstream_at_a_time() {
    // The upstream notes how many requests it holds at once.
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (a, m) = (active.clone(), most.clone());
    let up = upstream(move |_req| {
        let (a, m) = (a.clone(), m.clone());
        async move {
            let now = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            m.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            a.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            text_response(200, "done")
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{up}/\"\nconcurrency = 1\nqueue_timeout = \"30s\""
    ))
    .await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        tasks.push(tokio::spawn(get_owned(proxy.url(&format!("/{i}")))));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0.status, 200);
    }
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(proxy.metric("modelarts_proxy_queue_seconds_count{route=\"/\"}") >= 6.0);
}

async fn get_owned(url: String) -> (http::response::Parts, Bytes) {
    get(&url).await
}

#[tokio::test]
async fn after_the_gateway_throttles_the_route_slows_down_by_itself() {
    let (up, seen) = scripted(vec![throttled(), ok()]).await;
    let proxy = signing_route(up, "rate = \"20/s\"\nburst = 1\nretry = { attempts = 1 }").await;
    let (parts, _) = get(&proxy.url("/x")).await;
    assert_eq!(parts.status, 429);
    // Now 10/s: ten more take at least 9 intervals of 100 ms (at 20/s, 450 ms).
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = proxy.url("/x");
        tasks.push(tokio::spawn(async move { get(&url).await.0.status }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(850),
        "paced: {:?}",
        t.elapsed()
    );
    assert_eq!(attempts(&seen).len(), 11);
}

#[test]
fn every_traffic_key_error_is_reported_at_once_with_its_key_path() {
    let errs = modelarts_proxy::config::load(
        r#"
[[route]]
upstream = "https://a.example.com/v1"
retry = { attempts = 0, backoff = "2s", max_backoff = "1s", tries = 3 }
rate = "fast"
concurrency = 0
queue_timeout = "soon"
fallback_on_throttle = "yes"
[[route.fallback]]
upstream = "ftp://b.example.com"
credentials = "nope"
[[route]]
prefix = "/b"
upstream = "https://c.example.com/v1"
burst = 5
"#,
        &TestSources,
    )
    .expect_err("rejected");
    let paths: Vec<&str> = errs.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "route[0].retry.attempts",
        "route[0].retry.max_backoff",
        "route[0].retry.tries",
        "route[0].rate",
        "route[0].concurrency",
        "route[0].queue_timeout",
        "route[0].fallback_on_throttle",
        "route[0].fallback[0].upstream",
        "route[0].fallback[0].credentials",
        "route[1].burst",
    ] {
        assert!(paths.contains(&want), "{want} missing from {errs:#?}");
    }
}

#[tokio::test]
async fn throttling_stays_on_its_target_unless_fallback_on_throttle() {
    for (on_throttle, primary_tries, fallback_tries) in [(false, 2, 0), (true, 1, 1)] {
        let (primary, p_seen) = scripted(vec![throttled(), ok()]).await;
        let (fallback, f_seen) = scripted(vec![ok()]).await;
        let proxy = start_proxy(&format!(
            "[[route]]\nupstream = \"http://{primary}/v1\"\ncredentials = \"test\"\nretry = {{ backoff = \"10ms\" }}\nfallback_on_throttle = {on_throttle}\n[[route.fallback]]\nupstream = \"http://{fallback}/v1\"\n{TEST_CREDENTIALS}"
        ))
        .await;
        let (parts, _) = post_json(&proxy, "{}").await;
        assert_eq!(parts.status, 200);
        assert_eq!(
            (attempts(&p_seen).len(), attempts(&f_seen).len()),
            (primary_tries, fallback_tries),
            "fallback_on_throttle = {on_throttle}"
        );
    }
}

/// GETs `path` on `proxy` twice on one client connection (both must be 200)
/// and returns the heads the fallback upstream saw: the second request
/// meets the connection that answered the first closing, and is resent.
async fn two_gets_to_a_fallback(
    config: &str,
    fallback: &common::scripted::H1Upstream,
) -> Vec<String> {
    let proxy = start_proxy(config).await;
    let client = client();
    for _ in 0..2 {
        let req = request("GET", &proxy.url("/x"))
            .body(common::body(""))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    let heads = fallback.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(heads[1], heads[2], "resent as it was sent");
    heads
}

#[tokio::test]
async fn a_fallback_with_other_credentials_never_carries_the_first_targets() {
    use common::scripted::{H1Script, h1_upstream};
    let apikey = "[credentials.key]\ntype = \"apikey\"\napp_code = \"first-targets-app-code\"\n";
    let route = |first: &str, dead: SocketAddr, second: &str, up: SocketAddr| {
        format!(
            "[[route]]\nupstream = \"http://{dead}/v1\"\ncredentials = \"{first}\"\nretry = {{ attempts = 1 }}\n[[route.fallback]]\nupstream = \"http://{up}/v2\"\ncredentials = \"{second}\"\n{apikey}{TEST_CREDENTIALS}"
        )
    };
    // An API key first, AK/SK on the fallback (resent there too).
    let up = h1_upstream(H1Script::CloseSecondRequest).await;
    let heads = two_gets_to_a_fallback(&route("key", refused().await, "test", up.addr), &up).await;
    for head in &heads {
        assert!(head.starts_with("get /v2/x "), "{head}");
        assert!(head.contains(&format!("host: {}", up.addr)), "{head}");
        assert!(head.contains("authorization: sdk-hmac-sha256"), "{head}");
        assert!(!head.contains("x-apig-appcode"), "{head}");
        assert!(!head.contains("first-targets-app-code"), "{head}");
    }
    // AK/SK first, an API key on the fallback.
    let up = h1_upstream(H1Script::CloseSecondRequest).await;
    let heads = two_gets_to_a_fallback(&route("test", refused().await, "key", up.addr), &up).await;
    for head in &heads {
        assert!(
            head.contains("x-apig-appcode: first-targets-app-code"),
            "{head}"
        );
        for signed in ["authorization", "x-sdk-date"] {
            assert!(!head.contains(signed), "{signed} in {head}");
        }
    }
}
