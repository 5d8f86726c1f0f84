//! IAM tokens, API keys and temporary AK/SK end to end: the proxy in front of
//! the stand-in gateway, which runs a stand-in IAM and metadata service, and
//! accepts only the tokens, app codes and temporary keys it issued.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use modelarts_proxy::auth::Provider;
use modelarts_proxy::dev::{StandIn, StandInIam, StandInStats};
use modelarts_proxy::secret::Secret;

const PASSWORD: &str = "iam-PASSWORD-never-log-me";
const APP_CODE: &str = "app-CODE-never-log-me-0123456789";

fn iam(token_lifetime: Duration) -> StandInIam {
    StandInIam {
        user: "alice".into(),
        password: Secret::new(PASSWORD),
        domain: "acme".into(),
        project: "cn-north-4".into(),
        project_id: "0a1b2c3d".into(),
        token_lifetime,
        token_size: 16 * 1024,
    }
}

/// A stand-in gateway + IAM; returns its address and its counters.
async fn gateway(
    configure: impl FnOnce(StandIn) -> StandIn,
) -> (std::net::SocketAddr, Arc<StandInStats>) {
    let stand_in = configure(StandIn::new(vec![key()], Arc::new(chrono::Utc::now)));
    let stats = stand_in.stats();
    (
        stand_in
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
        stats,
    )
}

/// `[credentials.iam]` for the stand-in IAM at `addr`, with `password`.
fn token_credentials(addr: std::net::SocketAddr, password: &str, extra: &str) -> String {
    format!(
        "[credentials.iam]\ntype = \"token\"\niam_endpoint = \"http://{addr}\"\nuser = \"alice\"\npassword = \"{password}\"\ndomain = \"acme\"\nproject = \"cn-north-4\"\n{extra}\n"
    )
}

/// A proxy with one route `/` to `{gw}{path}` with token credentials (`extra` keys added).
async fn token_proxy(gw: std::net::SocketAddr, path: &str, extra: &str) -> Proxy {
    start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}{path}\"\ncredentials = \"iam\"\n{}",
        token_credentials(gw, PASSWORD, extra)
    ))
    .await
}

fn token_provider(
    proxy: &Proxy,
) -> Arc<modelarts_proxy::auth::refresh::Refreshing<modelarts_proxy::auth::iam::Token>> {
    match &proxy.shared.state.load().providers["iam"] {
        Provider::Token { token, .. } => token.clone(),
        _ => panic!("not a token provider"),
    }
}

#[tokio::test]
async fn token_routes_send_a_large_fresh_token_the_gateway_accepts() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let proxy = token_proxy(gw, "/v1/infers/svc", "").await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(body("{\"a\":1}"))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v = json(&bytes);
    assert_eq!(v["auth"], "token");
    assert_eq!(v["body"], "{\"a\":1}");
    assert_eq!(
        stats.last_token().unwrap().expose().len(),
        16 * 1024,
        "a 16 KiB token went through"
    );
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_on_a_cold_start_make_one_iam_call() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let proxy = token_proxy(gw, "/", "").await;
    let requests: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(send(
                request("GET", &proxy.url(&format!("/r{i}")))
                    .body(body(""))
                    .unwrap(),
            ))
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap().0.status, 200);
    }
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn iam_down_at_start_gives_503_after_a_bounded_wait_then_recovers() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    stats.iam_down.store(true, Ordering::SeqCst);
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"iam\"\n{}",
        token_credentials(gw, PASSWORD, "max_wait = \"300ms\"")
    ))
    .await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
    let message = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(
            "IAM refused a token for user alice in domain acme, project cn-north-4: HTTP 503"
        ),
        "{message}"
    );
    assert!(!message.contains(PASSWORD));

    // IAM comes back; the next retry (about a second later) fills the cache.
    stats.iam_down.store(false, Ordering::SeqCst);
    token_provider(&proxy)
        .get(Duration::from_secs(15))
        .await
        .expect("recovered");
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_that_does_not_hammer_iam() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"iam\"\n{}",
        token_credentials(gw, "not-the-password", "max_wait = \"200ms\"")
    ))
    .await;
    for _ in 0..5 {
        let (parts, bytes) = get(&proxy.url("/")).await;
        assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
        let message = json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            message,
            "[credentials.iam] has no valid credential: IAM refused a token for user alice in domain acme, \
             project cn-north-4: HTTP 401: The username or password is wrong."
        );
    }
    // Five requests, one IAM call: a 401 from IAM is retried after 30 s, not per request.
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_401_renews_the_token_and_replays_the_request_once() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let proxy = token_proxy(gw, "/v1", "").await;
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
    // The gateway forgets the token (as after a password change).
    stats.revoke_all_tokens();
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(body("{\"replayed\":true}"))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        json(&bytes)["body"],
        "{\"replayed\":true}",
        "the replay carried the same body"
    );
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 2, "one renewal");
    assert_eq!(stats.rejected.load(Ordering::SeqCst), 1);
    assert!(
        proxy
            .shared
            .metrics
            .encode()
            .contains("modelarts_proxy_credential_replays_total{credentials=\"iam\"} 1")
    );
}

#[tokio::test]
async fn a_second_401_is_returned_as_it_is() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let upstream = upstream(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            text_response(
                401,
                "{\"error_code\":\"APIG.0307\",\"error_msg\":\"Token must be updated\"}",
            )
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"iam\"\n{}",
        token_credentials(gw, PASSWORD, "")
    ))
    .await;
    let (parts, bytes) = send(request("POST", &proxy.url("/")).body(body("x")).unwrap()).await;
    assert_eq!(parts.status, 401);
    assert!(
        parts.headers.get("x-modelarts-proxy-error").is_none(),
        "the upstream's own answer"
    );
    assert!(String::from_utf8_lossy(&bytes).contains("APIG.0307"));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "sent once, replayed once, never looped"
    );
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn api_key_routes_send_the_app_code() {
    let (gw, _) = gateway(|s| s.with_app_codes(vec![Secret::new(APP_CODE)])).await;
    let seen_auth = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = seen_auth.clone();
    let bearer = upstream(move |req| {
        *seen.lock().unwrap() = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        async { text_response(200, "ok") }
    })
    .await;
    let proxy = start_proxy(&format!(
        r#"
[[route]]
prefix = "/pangu"
upstream = "http://{gw}/"
credentials = "pangu"
[[route]]
prefix = "/bearer"
upstream = "http://{bearer}/"
credentials = "bearer"
[credentials.pangu]
type = "apikey"
app_code = "{APP_CODE}"
[credentials.bearer]
type = "apikey"
app_code = "{APP_CODE}"
header = "Authorization"
prefix = "Bearer "
"#
    ))
    .await;
    let (parts, bytes) = send(
        request("GET", &proxy.url("/pangu"))
            .header("x-apig-appcode", "client-value")
            .body(body(""))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["auth"], "apikey");
    let (parts, _) = send(
        request("GET", &proxy.url("/bearer"))
            .header("authorization", "Bearer client")
            .body(body(""))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(*seen_auth.lock().unwrap(), format!("Bearer {APP_CODE}"));
}

#[tokio::test]
async fn metadata_credentials_sign_requests_and_are_refreshed_before_they_expire() {
    let (gw, stats) = gateway(|s| s.with_metadata(Duration::from_secs(3))).await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/v1\"\ncredentials = \"ecs\"\n[credentials.ecs]\ntype = \"aksk\"\nsource = \"metadata\"\nmetadata_endpoint = \"http://{gw}/openstack/latest/securitykey\"\n"
    ))
    .await;
    let (parts, bytes) = send(
        request("POST", &proxy.url("/"))
            .header("content-type", "application/json")
            .body(body("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        json(&bytes)["headers"]["x-security-token"],
        "** redacted **",
        "the security token was sent"
    );

    let Provider::Temporary { creds, .. } = proxy.shared.state.load().providers["ecs"].clone()
    else {
        panic!()
    };
    let first = creds.current().unwrap();
    let mut changes = creds.subscribe();
    // Valid for 3 s: refreshed at half its lifetime, well before it expires.
    tokio::time::timeout(TEST_DEADLINE, changes.changed())
        .await
        .unwrap()
        .unwrap();
    let refreshed_at = chrono::Utc::now();
    let second = creds.current().unwrap();
    assert_ne!(second.value.key.access_key, first.value.key.access_key);
    assert!(refreshed_at < first.expires_at, "refreshed before expiry");
    assert_eq!(stats.metadata_calls.load(Ordering::SeqCst), 2);
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
}

#[tokio::test]
async fn rotated_key_files_are_picked_up_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("modelarts-proxy-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ak, sk) = (dir.join("ak"), dir.join("sk"));
    std::fs::write(&ak, format!("{AK}\n")).unwrap();
    std::fs::write(&sk, format!("{SK}\n")).unwrap();
    let new_key = modelarts_proxy::signer::AkSk {
        access_key: "AKROTATED0000000002".into(),
        secret_key: Secret::new("rotated-secret"),
        security_token: None,
    };
    let stand_in = StandIn::new(vec![key(), new_key.clone()], Arc::new(chrono::Utc::now));
    let gw = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"files\"\n[credentials.files]\ntype = \"aksk\"\naccess_key = {{ file = \"{}\" }}\nsecret_key = {{ file = \"{}\" }}\n",
        ak.display(),
        sk.display()
    ))
    .await;
    let access = |bytes: &bytes::Bytes| {
        json(bytes)["headers"]["authorization"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (_, bytes) = get(&proxy.url("/")).await;
    assert!(access(&bytes).contains(&format!("Access={AK},")));

    std::fs::write(&ak, format!("{}\n", new_key.access_key)).unwrap();
    std::fs::write(&sk, "rotated-secret\n").unwrap();
    let Provider::AkSk { keys: watched, .. } = proxy.shared.state.load().providers["files"].clone()
    else {
        panic!()
    };
    // What the 5-second poll does, without waiting for it.
    assert!(watched.check_now());
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 200);
    assert!(access(&bytes).contains("Access=AKROTATED0000000002,"));

    // A broken file keeps the working key.
    std::fs::write(&sk, "").unwrap();
    assert!(!watched.check_now());
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn readiness_waits_for_the_first_token() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    stats.iam_down.store(true, Ordering::SeqCst);
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:9901\"\n[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"iam\"\n{}",
        token_credentials(gw, PASSWORD, "")
    ))
    .await;
    let readyz = format!("http://{}/readyz", proxy.admin.unwrap());
    let (parts, bytes) = send(request("GET", &readyz).body(body("")).unwrap()).await;
    assert_eq!(parts.status, 503);
    assert!(
        String::from_utf8_lossy(&bytes).contains("[credentials.iam]"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    stats.iam_down.store(false, Ordering::SeqCst);
    token_provider(&proxy)
        .get(Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(
        send(request("GET", &readyz).body(body("")).unwrap())
            .await
            .0
            .status,
        200
    );
}

#[tokio::test]
async fn a_get_without_a_body_is_replayed_after_a_401_too() {
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let proxy = token_proxy(gw, "/v1", "").await;
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
    stats.revoke_all_tokens();
    let (parts, bytes) = get(&proxy.url("/items?page=2")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["query"], "page=2");
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_stalled_metadata_answer_is_a_failure_not_a_hang() {
    // Headers, then a body that never finishes.
    let (_keep_open, stalled) = tokio::sync::oneshot::channel::<()>();
    let stalled = Arc::new(std::sync::Mutex::new(Some(stalled)));
    let metadata = upstream(move |_| {
        let stalled = stalled.clone();
        async move {
            let (mut tx, body) = http_body_util::channel::Channel::<
                bytes::Bytes,
                modelarts_proxy::error::BoxError,
            >::new(1);
            let wait = stalled.lock().unwrap().take();
            tokio::spawn(async move {
                tx.send_data(bytes::Bytes::from_static(b"{\"credential\":"))
                    .await
                    .unwrap();
                if let Some(w) = wait {
                    let _ = w.await;
                }
            });
            http::Response::new(http_body_util::BodyExt::boxed_unsync(body))
        }
    })
    .await;
    let client = modelarts_proxy::client::build(&Default::default(), &Default::default()).unwrap();
    let endpoint: http::Uri = format!("http://{metadata}/openstack/latest/securitykey")
        .parse()
        .unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        TEST_DEADLINE,
        modelarts_proxy::auth::metadata::fetch_security_key(&endpoint, &client),
    )
    .await
    .expect("the fetch ends")
    .unwrap_err();
    assert!(
        err.message.contains("did not finish its answer within 3s"),
        "{}",
        err.message
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn fixing_the_password_file_and_reloading_fetches_a_token_at_once() {
    let dir = std::env::temp_dir().join(format!("modelarts-proxy-pwfix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "wrong\n").unwrap();
    let (gw, stats) = gateway(|s| s.with_iam(iam(Duration::from_secs(3600)))).await;
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"iam\"\n[credentials.iam]\ntype = \"token\"\niam_endpoint = \"http://{gw}\"\n\
             user = \"alice\"\npassword = {{ file = \"{}\" }}\ndomain = \"acme\"\nproject = \"cn-north-4\"\nmax_wait = \"200ms\"\n",
            password.display()
        ),
    )
    .unwrap();
    let proxy = start_proxy(&std::fs::read_to_string(&config).unwrap()).await;
    assert_eq!(get(&proxy.url("/")).await.0.status, 503);
    // IAM said no; the next attempt is 30 s away. The operator fixes the file and reloads.
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    assert!(modelarts_proxy::cli::reload(&proxy.shared, &config));
    token_provider(&proxy)
        .get(Duration::from_secs(5))
        .await
        .expect("fetched at once after the reload");
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_401_for_temporary_keys_fetches_new_ones_and_replays_a_kept_request_once() {
    let (gw, stats) = gateway(|s| s.with_metadata(Duration::from_secs(3600))).await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/v1\"\ncredentials = \"ecs\"\n[credentials.ecs]\ntype = \"aksk\"\nsource = \"metadata\"\nmetadata_endpoint = \"http://{gw}/openstack/latest/securitykey\"\n"
    ))
    .await;
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
    // The agency's keys are revoked: the gateway answers 401, the proxy asks
    // for new keys and signs the request again with them.
    stats.revoke_all_credentials();
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(stats.metadata_calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        proxy.metric("modelarts_proxy_credential_replays_total{credentials=\"ecs\"}"),
        1.0
    );
    // A body that streamed (large and unsigned) cannot go again: its 401 is
    // returned as it is, and the next requests get new keys.
    let Provider::Temporary { creds, .. } = proxy.shared.state.load().providers["ecs"].clone()
    else {
        panic!()
    };
    let mut changes = creds.subscribe();
    stats.revoke_all_credentials();
    let req = request("PUT", &proxy.url("/file"))
        .header("content-type", "application/octet-stream")
        .body(body(vec![b'x'; 2 * 1024 * 1024]))
        .unwrap();
    let (parts, _) = send(req).await;
    assert_eq!(parts.status, 401, "a streamed body is not replayed");
    tokio::time::timeout(TEST_DEADLINE, changes.changed())
        .await
        .expect("renewed")
        .unwrap();
    assert_eq!(stats.metadata_calls.load(Ordering::SeqCst), 3);
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
}

/// A metadata stand-in and a fetcher sharing a clock that tests move.
struct Metadata {
    stats: Arc<StandInStats>,
    fetcher: modelarts_proxy::auth::metadata::MetadataFetcher,
    offset: Arc<std::sync::atomic::AtomicI64>,
}

impl Metadata {
    async fn start(configure: impl FnOnce(&StandInStats)) -> Metadata {
        let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let at = offset.clone();
        let clock: modelarts_proxy::clock::Clock = Arc::new(move || {
            chrono::Utc::now() + chrono::Duration::seconds(at.load(Ordering::SeqCst))
        });
        let stand_in =
            StandIn::new(vec![key()], clock.clone()).with_metadata(Duration::from_secs(24 * 3600));
        let stats = stand_in.stats();
        configure(&stats);
        let addr = stand_in
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let fetcher = modelarts_proxy::auth::metadata::MetadataFetcher::new(
            format!("http://{addr}/openstack/latest/securitykey")
                .parse()
                .unwrap(),
            None,
            modelarts_proxy::client::build(&Default::default(), &Default::default()).unwrap(),
            clock,
        );
        Metadata {
            stats,
            fetcher,
            offset,
        }
    }

    fn advance(&self, d: Duration) {
        self.offset.fetch_add(d.as_secs() as i64, Ordering::SeqCst);
    }

    /// (session-token requests, credential requests) so far.
    fn calls(&self) -> (usize, usize) {
        (
            self.stats.metadata_session_calls.load(Ordering::SeqCst),
            self.stats.metadata_calls.load(Ordering::SeqCst),
        )
    }

    async fn fetch(&self) -> String {
        match self.fetcher.fetch_key().await {
            Ok(c) => c.value.access_key,
            Err(e) => panic!("fetch failed: {}", e.message),
        }
    }
}

#[tokio::test]
async fn a_hardened_metadata_service_gets_the_session_token_first() {
    let m = Metadata::start(|s| s.metadata_session_required.store(true, Ordering::SeqCst)).await;
    m.fetch().await;
    m.fetch().await;
    assert_eq!(
        m.calls(),
        (1, 2),
        "one session token for both credential requests"
    );

    // Through the daemon too: a route on `source = "metadata"` signs with the key.
    let (gw, stats) = gateway(|s| s.with_metadata(Duration::from_secs(3600))).await;
    stats
        .metadata_session_required
        .store(true, Ordering::SeqCst);
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/v1\"\ncredentials = \"ecs\"\n[credentials.ecs]\ntype = \"aksk\"\nsource = \"metadata\"\nmetadata_endpoint = \"http://{gw}/openstack/latest/securitykey\"\n"
    ))
    .await;
    let (parts, bytes) = get(&proxy.url("/predict")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(stats.metadata_session_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_session_tokens_the_plain_request_is_used_and_rechecked_a_day_later() {
    let m = Metadata::start(|s| s.metadata_session_unsupported.store(true, Ordering::SeqCst)).await;
    m.fetch().await;
    m.fetch().await;
    assert_eq!(m.calls(), (1, 2), "404 once, then plain requests only");
    m.advance(Duration::from_secs(24 * 3600 + 1));
    m.stats
        .metadata_session_unsupported
        .store(false, Ordering::SeqCst);
    m.stats
        .metadata_session_required
        .store(true, Ordering::SeqCst);
    m.fetch().await;
    assert_eq!(m.calls(), (2, 3), "asked again after 24 h, and used");
}

#[tokio::test]
async fn a_refused_session_token_is_replaced_once() {
    let m = Metadata::start(|s| s.metadata_session_required.store(true, Ordering::SeqCst)).await;
    m.fetch().await;
    m.stats.revoke_metadata_sessions();
    m.fetch().await;
    assert_eq!(
        m.calls(),
        (2, 3),
        "a 401, a new session token, the request again"
    );

    // A service that then stops offering tokens while refusing: an error
    // naming both steps, not a loop.
    m.stats.revoke_metadata_sessions();
    m.stats
        .metadata_session_unsupported
        .store(true, Ordering::SeqCst);
    let err = m.fetcher.fetch_key().await.unwrap_err();
    assert!(
        err.message.contains("answered HTTP 404 to the session-token request (after refusing the credential request with 401)"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn the_session_token_is_renewed_before_it_expires() {
    let m = Metadata::start(|s| s.metadata_session_required.store(true, Ordering::SeqCst)).await;
    m.fetch().await;
    // Five minutes before the 6 h token expires: still valid at the
    // service, but inside the renewal margin.
    m.advance(Duration::from_secs(6 * 3600 - 5 * 60));
    m.fetch().await;
    assert_eq!(
        m.calls(),
        (2, 2),
        "renewed ahead, so no request was refused"
    );
    m.advance(Duration::from_secs(60));
    m.fetch().await;
    assert_eq!(m.calls(), (2, 3), "the new one is kept while fresh");
}
