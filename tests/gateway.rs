//! Gateway-aware behaviour (DESIGN §9) end to end: request ids, APIG error
//! bodies passed through with a hint, clock-skew correction against a
//! gateway whose clock is not ours, and the signature breaker protecting an
//! AK from APIG's five-failure lock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use modelarts_proxy::dev::StandIn;
use modelarts_proxy::state::Runtime;

/// An upstream that answers every request with `status` and an APIG error body.
async fn fake_apig(
    status: u16,
    code: &'static str,
    msg: &'static str,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let addr = upstream(move |_req| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = format!("{{\"error_code\":\"{code}\",\"error_msg\":\"{msg}\",\"request_id\":\"apig-req-0123\"}}");
            let mut r = text_response(status, &body);
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r.headers_mut().insert("x-request-id", "apig-req-0123".parse().unwrap());
            r
        }
    })
    .await;
    (addr, calls)
}

#[tokio::test]
async fn a_client_request_id_goes_upstream_and_back_and_a_missing_one_is_made() {
    let (proxy, _) = signing_proxy("").await;
    let req = request("GET", &proxy.url("/"))
        .header("x-request-id", "client-id-42")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_eq!(parts.headers["x-request-id"], "client-id-42");
    assert_eq!(
        json(&bytes)["headers"]["x-request-id"],
        "client-id-42",
        "sent upstream"
    );

    let (parts, bytes) = get(&proxy.url("/")).await;
    let made = parts.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 32);
    assert_eq!(json(&bytes)["headers"]["x-request-id"], made.as_str());
}

#[tokio::test]
async fn every_error_the_proxy_makes_carries_the_request_id() {
    let (proxy, _) = signing_proxy("").await;
    let req = request("TRACE", &proxy.url("/"))
        .header("x-request-id", "trace-me")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 405, "method_not_allowed");
    assert_eq!(parts.headers["x-request-id"], "trace-me");
    assert_eq!(json(&bytes)["error"]["request_id"], "trace-me");
}

#[tokio::test]
async fn apig_errors_pass_through_unchanged_with_a_hint_and_are_counted() {
    let (apig, _) = fake_apig(
        404,
        "APIG.0101",
        "The API does not exist or has not been published in the environment.",
    )
    .await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{apig}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 404);
    assert!(
        parts.headers.get("x-modelarts-proxy-error").is_none(),
        "the gateway's answer, not ours"
    );
    let hint = parts.headers["x-modelarts-proxy-hint"].to_str().unwrap();
    assert!(
        hint.contains(&format!("http://{apig}/v1/infers/svc")) && hint.contains("x-stage"),
        "{hint}"
    );
    assert_eq!(
        &bytes[..],
        &br#"{"error_code":"APIG.0101","error_msg":"The API does not exist or has not been published in the environment.","request_id":"apig-req-0123"}"#[..]
    );
    assert_eq!(
        parts.headers["x-request-id"], "apig-req-0123",
        "the gateway's own id is passed through"
    );
    assert_eq!(
        proxy.metric("modelarts_proxy_gateway_errors_total{code=\"APIG.0101\"}"),
        1.0
    );
}

#[tokio::test]
async fn throttling_and_app_code_errors_get_their_hints() {
    for (status, code, msg, want) in [
        (
            429,
            "APIG.0308",
            "The throttling threshold has been reached.",
            "back off",
        ),
        (
            401,
            "APIG.0303",
            "Incorrect app authentication information.",
            "app code of [credentials.key]",
        ),
        (
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: decrypt token fail",
            "IAM authentication",
        ),
    ] {
        let (apig, _) = fake_apig(status, code, msg).await;
        let proxy = start_proxy(&format!(
            "[[route]]\nupstream = \"http://{apig}/\"\ncredentials = \"key\"\n[credentials.key]\ntype = \"apikey\"\napp_code = \"app-code-for-the-test\"\n"
        ))
        .await;
        let (parts, _) = get(&proxy.url("/")).await;
        assert_eq!(parts.status.as_u16(), status);
        let hint = parts.headers["x-modelarts-proxy-hint"].to_str().unwrap();
        assert!(hint.contains(want), "{code}: {hint}");
    }
}

#[tokio::test]
async fn the_services_own_errors_get_no_hint() {
    let svc = upstream(|_req| async {
        text_response(
            500,
            "{\"error_code\":\"ModelArts.4302\",\"error_msg\":\"Gateway forwarding error\"}",
        )
    })
    .await;
    let proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{svc}/\"\n")).await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 500);
    assert!(parts.headers.get("x-modelarts-proxy-hint").is_none());
    assert!(String::from_utf8_lossy(&bytes).contains("ModelArts.4302"));
}

/// A proxy whose clock is `offset` from the stand-in's (the real clock), signing for `/`.
async fn proxy_with_clock(
    offset: chrono::Duration,
    correction: bool,
) -> (Proxy, std::net::SocketAddr) {
    let upstream = stand_in().await;
    let toml = format!(
        "[server]\nclock_skew_correction = {correction}\n[[route]]\nupstream = \"http://{upstream}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    );
    let runtime = Runtime {
        sources: Arc::new(TestSources),
        ..Runtime::with_clock(Arc::new(move || chrono::Utc::now() + offset))
    };
    let proxy = start_proxy_with(&toml, runtime).await;
    (proxy, upstream)
}

#[tokio::test]
async fn a_host_twenty_minutes_behind_gets_200s_from_the_second_request_on() {
    let (proxy, _) = proxy_with_clock(-chrono::Duration::minutes(20), true).await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(
        parts.status, 401,
        "the first request is signed with our wrong clock"
    );
    let body = String::from_utf8_lossy(&bytes);
    assert!(body.contains("signature expired"), "{body}");
    let hint = parts.headers["x-modelarts-proxy-hint"].to_str().unwrap();
    assert!(hint.contains("behind the gateway's"), "{hint}");
    let skew = proxy.metric("modelarts_proxy_clock_skew_seconds");
    assert!((1195.0..=1205.0).contains(&skew), "measured {skew}s");
    for _ in 0..3 {
        let (parts, bytes) = get(&proxy.url("/")).await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    }
}

#[tokio::test]
async fn without_correction_the_skew_is_only_measured() {
    let (proxy, _) = proxy_with_clock(-chrono::Duration::minutes(20), false).await;
    for _ in 0..2 {
        let (parts, _) = get(&proxy.url("/")).await;
        assert_eq!(parts.status, 401);
    }
    assert!(proxy.metric("modelarts_proxy_clock_skew_seconds") > 1000.0);
}

/// A proxy signing with a wrong SK read from a file, in front of a stand-in
/// that locks an AK after five failures, as APIG does.
async fn wrong_key_proxy(
    cooldown: &str,
) -> (
    Proxy,
    Arc<modelarts_proxy::dev::StandInStats>,
    std::path::PathBuf,
) {
    let stand_in = StandIn::new(vec![key()], Arc::new(chrono::Utc::now));
    let stats = stand_in.stats();
    let upstream = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "mp-breaker-{}-{}",
        std::process::id(),
        cooldown.replace(' ', "")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sk = dir.join("sk");
    std::fs::write(&sk, "the-wrong-secret\n").unwrap();
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{upstream}/v1/infers/svc\"\ncredentials = \"main\"\n[credentials.main]\ntype = \"aksk\"\naccess_key = {{ env = \"TEST_AK\" }}\nsecret_key = {{ file = \"{}\" }}\nbreaker_cooldown = \"{cooldown}\"\n",
        sk.display()
    ))
    .await;
    (proxy, stats, sk)
}

#[tokio::test]
async fn three_signature_rejections_open_the_breaker_before_apig_locks_the_key() {
    let (proxy, stats, sk) = wrong_key_proxy("5m").await;
    for _ in 0..3 {
        let (parts, _) = get(&proxy.url("/")).await;
        assert_eq!(parts.status, 401, "the gateway's own rejection");
    }
    for _ in 0..5 {
        let (parts, bytes) = get(&proxy.url("/")).await;
        assert_proxy_error(&parts, &bytes, 503, "credentials_rejected");
        let msg = json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            msg.contains("verify aksk signature fail"),
            "the gateway's message: {msg}"
        );
        assert!(!msg.contains(SK) && !msg.contains("the-wrong-secret"));
        let retry: u64 = parts.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((290..=300).contains(&retry), "{retry}");
    }
    assert_eq!(
        stats.signature_failures(AK),
        (3, false),
        "three failures: the AK is never locked"
    );
    assert_eq!(
        proxy.metric("modelarts_proxy_breaker_open{credentials=\"main\"}"),
        1.0
    );

    // The operator fixes the key file: the breaker closes at once.
    std::fs::write(&sk, format!("{SK}\n")).unwrap();
    let modelarts_proxy::auth::Provider::AkSk { keys, .. } =
        proxy.shared.state.load().providers["main"].clone()
    else {
        panic!("an AK/SK provider")
    };
    assert!(
        keys.check_now(),
        "the file change is seen (the poll would see it within 5 s)"
    );
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        proxy.metric("modelarts_proxy_breaker_open{credentials=\"main\"}"),
        0.0
    );
    assert_eq!(stats.signature_failures(AK), (0, false));
}

#[tokio::test]
async fn after_the_cooldown_one_request_probes() {
    let (proxy, stats, _) = wrong_key_proxy("300ms").await;
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/")).await.0.status, 401);
    }
    assert_eq!(get(&proxy.url("/")).await.0.status, 503);
    // Wait out the cool-down: the first request after it reaches the gateway.
    let mut status = 503;
    let started = std::time::Instant::now();
    while status == 503 {
        assert!(started.elapsed() < TEST_DEADLINE);
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = get(&proxy.url("/")).await.0.status.as_u16();
    }
    assert_eq!(
        status, 401,
        "the probe went to the gateway and was rejected"
    );
    assert_eq!(get(&proxy.url("/")).await.0.status, 503, "open again");
    assert_eq!(stats.signature_failures(AK).0, 4, "three, then one probe");
}

#[tokio::test]
async fn a_reload_closes_the_breaker() {
    let (proxy, _, sk) = wrong_key_proxy("5m").await;
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/")).await.0.status, 401);
    }
    assert_eq!(get(&proxy.url("/")).await.0.status, 503);
    std::fs::write(&sk, format!("{SK}\n")).unwrap();
    let config = sk.with_file_name("proxy.toml");
    let upstream = proxy.shared.state.load().config.routes[0].upstream.url();
    std::fs::write(
        &config,
        format!(
            "[[route]]\nupstream = \"{upstream}\"\ncredentials = \"main\"\n[credentials.main]\ntype = \"aksk\"\naccess_key = \"{AK}\"\nsecret_key = {{ file = \"{}\" }}\n",
            sk.display()
        ),
    )
    .unwrap();
    assert!(modelarts_proxy::cli::reload(&proxy.shared, &config));
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
}

/// A gateway behind something that rewrites the path (`/v1/` to `/v2/`),
/// answering with APIG's 401 and its own canonical request.
#[tokio::test]
async fn a_rejected_signature_is_explained_by_what_differs() {
    let up = upstream(|req| async move {
        let (parts, body) = req.into_parts();
        let bytes = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
        let rewritten: http::Uri = parts.uri.path().replace("/v1/", "/v2/").parse().unwrap();
        let verdict = modelarts_proxy::signer::verify::verify(
            &parts.method,
            &rewritten,
            &parts.headers,
            &bytes,
            |_| Some(key()),
            chrono::Utc::now(),
            chrono::Duration::minutes(15),
        );
        match verdict {
            Err(modelarts_proxy::signer::verify::VerifyError::SignatureMismatch {
                canonical_request,
                ..
            }) => {
                let body = serde_json::json!({
                    "error_code": "APIG.0301",
                    "error_msg": format!("Incorrect IAM authentication information: verify aksk signature fail, canonicalRequest:{}", canonical_request.replace('\n', "|")),
                    "request_id": "gw-1",
                });
                text_response(401, &body.to_string())
            }
            other => text_response(500, &format!("{other:?}")),
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{up}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let (parts, answer) = send(
        request("POST", &proxy.url("/predict"))
            .header("content-type", "application/json")
            .body(body("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 401, "{}", String::from_utf8_lossy(&answer));
    let hint = parts.headers["x-modelarts-proxy-hint"].to_str().unwrap();
    assert!(
        hint.contains(
            "the gateway saw a different path: the proxy signed \"/v1/infers/svc/predict/\", the gateway computed \"/v2/infers/svc/predict/\""
        ),
        "{hint}"
    );
}
