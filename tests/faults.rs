//! Faults of the services the proxy depends on: an IAM that refuses
//! connections, hangs, answers 500s, garbage or an already-expired token;
//! an upstream that refuses. Each gets a clear 503/502 naming the cause, and
//! the proxy keeps serving every other route.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

/// A fake IAM whose every answer is made by `answer`; counts calls.
async fn fake_iam<F>(calls: Arc<AtomicUsize>, answer: F) -> std::net::SocketAddr
where
    F: Fn() -> Option<http::Response<Body>> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    upstream(move |_req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move {
            match answer() {
                Some(r) => r,
                // Hang: never answer.
                None => std::future::pending().await,
            }
        }
    })
    .await
}

fn token_answer(expires_at: &str, body: Option<&str>) -> http::Response<Body> {
    let text = body.map_or_else(
        || format!("{{\"token\":{{\"expires_at\":\"{expires_at}\"}}}}"),
        str::to_owned,
    );
    let mut r = http::Response::new(common::body(text));
    *r.status_mut() = http::StatusCode::CREATED;
    r.headers_mut()
        .insert("x-subject-token", "MIIfake-token".parse().unwrap());
    r
}

/// A proxy with a token route `/t` through `iam` and a plain route `/plain`.
async fn proxy_with_iam(iam: std::net::SocketAddr) -> Proxy {
    let plain = upstream(|_req| async { text_response(200, "plain ok") }).await;
    start_proxy(&format!(
        r#"
[[route]]
prefix = "/t"
upstream = "http://{plain}/"
credentials = "iam"
[[route]]
prefix = "/plain"
upstream = "http://{plain}/"
[credentials.iam]
type = "token"
iam_endpoint = "http://{iam}"
user = "alice"
password = "pw-fault-test"
domain = "acme"
project = "cn-north-4"
max_wait = "500ms"
"#
    ))
    .await
}

/// The token route is 503 `credentials_unavailable` with `cause` in the
/// message; the plain route still works.
async fn assert_unavailable_and_others_served(proxy: &Proxy, cause: &str) {
    let (parts, bytes) = get(&proxy.url("/t")).await;
    assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
    let message = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(cause),
        "{message:?} should mention {cause:?}"
    );
    assert!(!message.contains("pw-fault-test"), "{message}");
    let (parts, bytes) = get(&proxy.url("/plain")).await;
    assert_eq!((parts.status.as_u16(), &bytes[..]), (200, &b"plain ok"[..]));
}

#[tokio::test]
async fn iam_refusing_connections_is_a_503_naming_it() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let iam = closed.local_addr().unwrap();
    drop(closed);
    let proxy = proxy_with_iam(iam).await;
    assert_unavailable_and_others_served(&proxy, "cannot reach IAM").await;
}

#[tokio::test]
async fn iam_that_hangs_is_a_503_after_max_wait() {
    let calls = Arc::new(AtomicUsize::new(0));
    let iam = fake_iam(calls.clone(), || None).await;
    let proxy = proxy_with_iam(iam).await;
    let started = std::time::Instant::now();
    assert_unavailable_and_others_served(&proxy, "no valid credential yet").await;
    assert!(started.elapsed() < TEST_DEADLINE);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call, still waiting");
}

#[tokio::test]
async fn iam_answering_500_is_a_503_quoting_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let iam = fake_iam(calls.clone(), || {
        Some(text_response(
            500,
            "{\"error\":{\"message\":\"IAM is on fire\"}}",
        ))
    })
    .await;
    let proxy = proxy_with_iam(iam).await;
    assert_unavailable_and_others_served(&proxy, "HTTP 500").await;
}

#[tokio::test]
async fn iam_answering_garbage_is_a_503_saying_so() {
    let calls = Arc::new(AtomicUsize::new(0));
    let iam = fake_iam(calls.clone(), || {
        Some(token_answer("", Some("<html>not json")))
    })
    .await;
    let proxy = proxy_with_iam(iam).await;
    assert_unavailable_and_others_served(&proxy, "not JSON").await;
}

#[tokio::test]
async fn an_already_expired_token_is_refused_not_used() {
    let calls = Arc::new(AtomicUsize::new(0));
    let iam = fake_iam(calls.clone(), || {
        Some(token_answer("2001-01-01T00:00:00.000000Z", None))
    })
    .await;
    let proxy = proxy_with_iam(iam).await;
    assert_unavailable_and_others_served(&proxy, "not in the future").await;
}
