//! The stand-in itself: its IAM (`POST /v3/auth/tokens`), its ECS metadata
//! service (`GET /openstack/latest/securitykey`), and its real-time service
//! accepting AK/SK signatures, IAM tokens and app codes, refusing the rest
//! the way API Gateway does. Time comes from a clock the tests move.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use modelarts_proxy::dev::{StandIn, StandInIam, StandInStats};
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::{AkSk, Payload, SignableRequest, sign};

const USER: &str = "alice";
const PASSWORD: &str = "pw-TEST-iam-Kx8#never-log-me";
const DOMAIN: &str = "acme";
const PROJECT: &str = "cn-north-4";
const PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const TOKEN_SIZE: usize = 4096;
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const APP_CODE: &str = "appcode-TEST-3f9a0c7e5b1d4a2f8e6c-never-log-me";
const METADATA_LIFETIME: Duration = Duration::from_secs(3600);

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new() -> Self {
        TestClock(Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(2024, 1, 15, 8, 0, 0).unwrap(),
        )))
    }

    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap();
        *t += chrono::TimeDelta::from_std(by).unwrap();
    }

    fn as_clock(&self) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
        let this = self.clone();
        Arc::new(move || this.now())
    }
}

fn iam() -> StandInIam {
    StandInIam {
        user: USER.into(),
        password: Secret::new(PASSWORD),
        domain: DOMAIN.into(),
        project: PROJECT.into(),
        project_id: PROJECT_ID.into(),
        token_lifetime: TOKEN_LIFETIME,
        token_size: TOKEN_SIZE,
    }
}

/// A stand-in with the test key, IAM, the app code and the metadata service.
async fn start(clock: &TestClock) -> (SocketAddr, Arc<StandInStats>) {
    let stand_in = StandIn::new(vec![key()], clock.as_clock())
        .with_iam(iam())
        .with_app_codes(vec![Secret::new(APP_CODE)])
        .with_metadata(METADATA_LIFETIME);
    let stats = stand_in.stats();
    let addr = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (addr, stats)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn password_body(user: &str, password: &str, domain: &str, scope: serde_json::Value) -> String {
    serde_json::json!({"auth": {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "password": password, "domain": {"name": domain}}},
        },
        "scope": {"project": scope},
    }})
    .to_string()
}

async fn ask_iam(addr: SocketAddr, body_text: String) -> (http::response::Parts, Bytes) {
    send(
        request("POST", &url(addr, "/v3/auth/tokens?nocatalog=true"))
            .header("content-type", "application/json;charset=utf8")
            .body(body(body_text))
            .unwrap(),
    )
    .await
}

/// A token from the stand-in IAM, scoped to the project by name.
async fn token(addr: SocketAddr) -> String {
    let (parts, bytes) = ask_iam(
        addr,
        password_body(USER, PASSWORD, DOMAIN, serde_json::json!({"name": PROJECT})),
    )
    .await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    parts.headers["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `GET /predict` to the service with one extra header.
async fn get_with(addr: SocketAddr, name: &str, value: &str) -> (http::response::Parts, Bytes) {
    send(
        request("GET", &url(addr, "/v1/infers/svc/predict"))
            .header(name, value)
            .body(body(""))
            .unwrap(),
    )
    .await
}

/// A POST signed with `key` at `time`, sending its security token if it has one.
async fn signed_post(
    addr: SocketAddr,
    key: &AkSk,
    time: DateTime<Utc>,
    send_token: bool,
) -> (http::response::Parts, Bytes) {
    let host = addr.to_string();
    let payload = br#"{"instances":[1]}"#;
    let mut headers = vec![
        ("content-type", "application/json"),
        ("host", host.as_str()),
    ];
    if send_token && let Some(t) = &key.security_token {
        headers.push(("x-security-token", t.expose()));
    }
    let out = sign(
        &SignableRequest {
            method: "POST",
            path: "/v1/infers/svc",
            query: None,
            headers: &headers,
            payload: Payload::Bytes(payload),
        },
        key,
        time,
    )
    .unwrap();
    let mut req = request("POST", &url(addr, "/v1/infers/svc"));
    for (name, value) in &headers {
        req = req.header(*name, *value);
    }
    let req = req
        .header("x-sdk-date", out.date)
        .header("authorization", out.authorization)
        .body(body(&payload[..]))
        .unwrap();
    send(req).await
}

/// Asserts a gateway-style 401 and returns its `error_msg`.
fn assert_gateway_401(parts: &http::response::Parts, bytes: &Bytes, code: &str) -> String {
    assert_eq!(parts.status, 401, "{}", String::from_utf8_lossy(bytes));
    let v = json(bytes);
    assert_eq!(v["error_code"], code, "{v}");
    v["error_msg"].as_str().unwrap().to_owned()
}

fn metadata_key(bytes: &Bytes) -> (AkSk, String) {
    let v = json(bytes);
    let c = &v["credential"];
    (
        AkSk {
            access_key: c["access"].as_str().unwrap().into(),
            secret_key: Secret::new(c["secret"].as_str().unwrap()),
            security_token: Some(Secret::new(c["securitytoken"].as_str().unwrap())),
        },
        c["expires_at"].as_str().unwrap().to_owned(),
    )
}

/// `2020-01-04T09:05:22.701000Z`: exactly six fractional digits and a `Z`.
fn parse_huawei_time(text: &str) -> DateTime<Utc> {
    assert_eq!(text.len(), 27, "{text}");
    assert_eq!(&text[19..20], ".", "{text}");
    assert!(text[20..26].bytes().all(|b| b.is_ascii_digit()), "{text}");
    assert!(text.ends_with('Z'), "{text}");
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.6fZ")
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .and_utc()
}

#[tokio::test]
async fn iam_issues_a_201_with_a_subject_token_of_the_configured_size() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let (parts, bytes) = ask_iam(
        addr,
        password_body(USER, PASSWORD, DOMAIN, serde_json::json!({"name": PROJECT})),
    )
    .await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let token = parts.headers["x-subject-token"].to_str().unwrap();
    assert_eq!(token.len(), TOKEN_SIZE);
    assert!(token.starts_with("MII"), "{}", &token[..10]);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "URL-safe characters only"
    );

    let v = json(&bytes);
    let t = &v["token"];
    let expires_at = parse_huawei_time(t["expires_at"].as_str().unwrap());
    let issued_at = parse_huawei_time(t["issued_at"].as_str().unwrap());
    assert_eq!(issued_at, clock.now());
    assert_eq!(expires_at, clock.now() + chrono::TimeDelta::hours(24));
    assert_eq!(t["methods"][0], "password");
    assert_eq!(t["project"]["name"], PROJECT);
    assert_eq!(t["project"]["id"], PROJECT_ID);
    assert_eq!(t["project"]["domain"]["name"], DOMAIN);
    assert_eq!(t["user"]["name"], USER);
    assert_eq!(t["user"]["domain"]["name"], DOMAIN);
    assert!(t.get("catalog").is_none(), "nocatalog=true: no catalog");

    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.tokens_issued(), 1);
    assert_eq!(stats.last_token().unwrap().expose(), token);

    // Without ?nocatalog=true the (empty) catalog comes back, and each token is new.
    let (parts, bytes) = send(
        request("POST", &url(addr, "/v3/auth/tokens"))
            .body(body(password_body(
                USER,
                PASSWORD,
                DOMAIN,
                serde_json::json!({"name": PROJECT}),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 201);
    assert!(json(&bytes)["token"]["catalog"].is_array());
    assert_ne!(parts.headers["x-subject-token"].to_str().unwrap(), token);
    assert_eq!(stats.tokens_issued(), 2);
}

#[tokio::test]
async fn iam_rejects_a_wrong_user_password_or_domain_with_its_own_message() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let wrong_password = "wrong-pw-Qz3-also-never-echoed";
    for (user, password, domain) in [
        (USER, wrong_password, DOMAIN),
        ("mallory", PASSWORD, DOMAIN),
        (USER, PASSWORD, "other-domain"),
    ] {
        let (parts, bytes) = ask_iam(
            addr,
            password_body(user, password, domain, serde_json::json!({"name": PROJECT})),
        )
        .await;
        assert_eq!(parts.status, 401);
        assert!(parts.headers.get("x-subject-token").is_none());
        assert_eq!(
            json(&bytes),
            serde_json::json!({"error": {
                "code": 401,
                "message": "The username or password is wrong.",
                "title": "Unauthorized",
            }})
        );
    }
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 3);
    assert_eq!(stats.tokens_issued(), 0);
}

#[tokio::test]
async fn iam_rejects_a_malformed_body_with_400() {
    let clock = TestClock::new();
    let (addr, _) = start(&clock).await;
    let no_scope = serde_json::json!({"auth": {"identity": {
        "methods": ["password"],
        "password": {"user": {"name": USER, "password": PASSWORD, "domain": {"name": DOMAIN}}},
    }}})
    .to_string();
    let wrong_method = password_body(USER, PASSWORD, DOMAIN, serde_json::json!({"name": PROJECT}))
        .replace(r#"["password"]"#, r#"["token"]"#);
    for bad in [
        "not json".to_owned(),
        "{}".to_owned(),
        no_scope,
        wrong_method,
        password_body(USER, PASSWORD, DOMAIN, serde_json::json!({})),
    ] {
        let (parts, bytes) = ask_iam(addr, bad.clone()).await;
        assert_eq!(parts.status, 400, "{bad}");
        assert_eq!(
            json(&bytes),
            serde_json::json!({"error": {
                "code": 400,
                "message": "The request body is invalid",
                "title": "Bad Request",
            }}),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn iam_accepts_scope_by_project_id_and_refuses_an_unknown_project() {
    let clock = TestClock::new();
    let (addr, _) = start(&clock).await;
    let (parts, bytes) = ask_iam(
        addr,
        password_body(
            USER,
            PASSWORD,
            DOMAIN,
            serde_json::json!({"id": PROJECT_ID}),
        ),
    )
    .await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["token"]["project"]["name"], PROJECT);

    for scope in [
        serde_json::json!({"name": "ap-southeast-1"}),
        serde_json::json!({"id": "ffffffffffffffffffffffffffffffff"}),
    ] {
        let (parts, bytes) = ask_iam(addr, password_body(USER, PASSWORD, DOMAIN, scope)).await;
        assert_eq!(parts.status, 400);
        assert!(parts.headers.get("x-subject-token").is_none());
        let message = json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("does not exist"), "{message}");
    }
}

#[tokio::test]
async fn iam_answers_503_while_down_and_still_counts_the_calls() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    stats.iam_down.store(true, Ordering::SeqCst);
    let good = password_body(USER, PASSWORD, DOMAIN, serde_json::json!({"name": PROJECT}));
    let (parts, bytes) = ask_iam(addr, good.clone()).await;
    assert_eq!(parts.status, 503);
    assert_eq!(
        json(&bytes),
        serde_json::json!({"error": {"code": 503, "message": "Service Unavailable"}})
    );
    assert!(parts.headers.get("x-subject-token").is_none());
    assert_eq!(stats.tokens_issued(), 0);

    stats.iam_down.store(false, Ordering::SeqCst);
    let (parts, _) = ask_iam(addr, good).await;
    assert_eq!(parts.status, 201);
    assert_eq!(stats.iam_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_iam_token_is_accepted_until_it_expires_then_refused_with_apig_0307() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let token = token(addr).await;

    let (parts, bytes) = get_with(addr, "x-auth-token", &token).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v = json(&bytes);
    assert_eq!(v["verified"], "token");
    assert_eq!(v["auth"], "token");
    assert_eq!(v["headers"]["x-auth-token"], "** redacted **");
    assert_eq!(v["path"], "/v1/infers/svc/predict");

    // One second before expiry: still good. At expiry: refused.
    clock.advance(TOKEN_LIFETIME - Duration::from_secs(1));
    let (parts, _) = get_with(addr, "x-auth-token", &token).await;
    assert_eq!(parts.status, 200);
    clock.advance(Duration::from_secs(1));
    let (parts, bytes) = get_with(addr, "x-auth-token", &token).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0307");
    assert!(msg.starts_with("Token must be updated"), "{msg}");
    assert!(
        msg.contains("X-Auth-Token") && msg.contains("expired at 2024-01-16T08:00:00.000000Z"),
        "{msg}"
    );

    assert_eq!(stats.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(stats.rejected.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_and_revoked_tokens_are_refused_with_apig_0301() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let forged = format!("MII{}", "A".repeat(TOKEN_SIZE - 3));
    let (parts, bytes) = get_with(addr, "x-auth-token", &forged).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(
        msg.contains("X-Auth-Token") && msg.contains("not one the stand-in IAM issued"),
        "{msg}"
    );

    let token = token(addr).await;
    assert_eq!(get_with(addr, "x-auth-token", &token).await.0.status, 200);
    stats.revoke_all_tokens();
    let (parts, bytes) = get_with(addr, "x-auth-token", &token).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(msg.contains("revoked"), "{msg}");
}

#[tokio::test]
async fn app_codes_are_accepted_and_wrong_ones_refused_with_apig_0303() {
    let clock = TestClock::new();
    let (addr, _) = start(&clock).await;
    let (parts, bytes) = get_with(addr, "x-apig-appcode", APP_CODE).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v = json(&bytes);
    assert_eq!(v["verified"], "apikey");
    assert_eq!(v["auth"], "apikey");
    assert_eq!(v["headers"]["x-apig-appcode"], "** redacted **");

    let wrong = format!("{APP_CODE}x");
    let (parts, bytes) = get_with(addr, "x-apig-appcode", &wrong).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0303");
    assert!(
        msg.starts_with("Incorrect app authentication information: X-Apig-AppCode"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_request_with_no_credential_is_refused_naming_all_three_headers() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let (parts, bytes) = get_with(addr, "accept", "application/json").await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert_eq!(
        msg,
        "Incorrect IAM authentication information: no Authorization, X-Auth-Token or X-Apig-AppCode"
    );
    assert!(
        json(&bytes)["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    );
    assert_eq!(stats.rejected.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn static_aksk_echoes_keep_verified_true_and_say_auth_aksk() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let (parts, bytes) = signed_post(addr, &key(), clock.now(), false).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v = json(&bytes);
    assert_eq!(v["verified"], true);
    assert_eq!(v["auth"], "aksk");
    assert_eq!(v["body"], r#"{"instances":[1]}"#);

    // Outside the 15-minute window: the signature's own reason, as before.
    clock.advance(Duration::from_secs(16 * 60));
    let (parts, bytes) = signed_post(
        addr,
        &key(),
        clock.now() - chrono::TimeDelta::minutes(16),
        false,
    )
    .await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(
        msg.starts_with(
            "Incorrect IAM authentication information: calc ak sk signature fail:signature expired"
        ),
        "{msg}"
    );
    assert_eq!(stats.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_valid_credential_is_enough_and_failures_list_every_reason() {
    let clock = TestClock::new();
    let (addr, _) = start(&clock).await;
    // A bad token next to a good app code: accepted by the app code.
    let (parts, bytes) = send(
        request("GET", &url(addr, "/"))
            .header("x-auth-token", "MIIforged-token-value")
            .header("x-apig-appcode", APP_CODE)
            .body(body(""))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["auth"], "apikey");

    // Everything wrong: the first credential's code, every credential's reason.
    let (parts, bytes) = send(
        request("GET", &url(addr, "/"))
            .header("authorization", "Bearer nonsense")
            .header("x-auth-token", "MIIforged-token-value")
            .header("x-apig-appcode", "wrong-app-code-value")
            .body(body(""))
            .unwrap(),
    )
    .await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    for part in [
        "Authorization: malformed",
        "X-Auth-Token: ",
        "X-Apig-AppCode: ",
    ] {
        assert!(msg.contains(part), "{part:?} in {msg}");
    }
}

#[tokio::test]
async fn metadata_credentials_sign_requests_until_they_expire() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let (parts, bytes) = get(&url(addr, "/openstack/latest/securitykey")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let (temp, expires_at) = metadata_key(&bytes);
    assert_eq!(
        parse_huawei_time(&expires_at),
        clock.now() + chrono::TimeDelta::hours(1)
    );
    assert_eq!(stats.metadata_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        stats.issued_credentials.lock().unwrap()[0].access_key,
        temp.access_key
    );

    let (parts, bytes) = signed_post(addr, &temp, clock.now(), true).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v = json(&bytes);
    assert_eq!(v["verified"], true);
    assert_eq!(v["auth"], "aksk");
    assert_eq!(v["headers"]["x-security-token"], "** redacted **");

    // The security token is part of the credential.
    let (parts, bytes) = signed_post(addr, &temp, clock.now(), false).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(msg.contains("x-security-token does not match"), "{msg}");

    // Signed at the (moved) current time, so only the expiry can fail it.
    clock.advance(METADATA_LIFETIME);
    let (parts, bytes) = signed_post(addr, &temp, clock.now(), true).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(msg.contains("temporary credentials expired"), "{msg}");
    assert!(msg.contains(&temp.access_key), "{msg}");
}

#[tokio::test]
async fn metadata_issues_fresh_credentials_each_call_and_answers_503_while_down() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let get = || async { get(&url(addr, "/openstack/latest/securitykey")).await };
    let (a, _) = metadata_key(&get().await.1);
    let (b, _) = metadata_key(&get().await.1);
    assert_ne!(a.access_key, b.access_key);
    assert_ne!(a.secret_key.expose(), b.secret_key.expose());
    assert_eq!(a.access_key.len(), 20);
    assert_eq!(a.secret_key.expose().len(), 40);

    stats.metadata_down.store(true, Ordering::SeqCst);
    let (parts, _) = get().await;
    assert_eq!(parts.status, 503);
    assert_eq!(stats.metadata_calls.load(Ordering::SeqCst), 3);
    assert_eq!(stats.issued_credentials.lock().unwrap().len(), 2);

    // Both earlier credentials still work.
    for k in [&a, &b] {
        assert_eq!(signed_post(addr, k, clock.now(), true).await.0.status, 200);
    }
}

#[tokio::test]
async fn without_iam_or_metadata_their_paths_are_ordinary_service_paths() {
    let addr = StandIn::new(vec![key()], Arc::new(Utc::now))
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for (method, path) in [
        ("POST", "/v3/auth/tokens"),
        ("GET", "/openstack/latest/securitykey"),
    ] {
        let (parts, bytes) = send(request(method, &url(addr, path)).body(body("")).unwrap()).await;
        assert_gateway_401(&parts, &bytes, "APIG.0301");
    }
}

#[tokio::test]
async fn echoes_and_errors_never_contain_the_token_app_code_or_password() {
    let clock = TestClock::new();
    let (addr, _) = start(&clock).await;
    let token = token(addr).await;
    let mut seen: Vec<String> = Vec::new();
    let mut record = |(parts, bytes): (http::response::Parts, Bytes)| {
        let mut text = format!("{parts:?}\n");
        for (name, value) in &parts.headers {
            if name != "x-subject-token" {
                text.push_str(&format!(
                    "{name}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
        }
        text.push_str(&String::from_utf8_lossy(&bytes));
        seen.push(text);
    };

    // IAM: wrong password, unknown project, malformed body.
    record(
        ask_iam(
            addr,
            password_body(
                USER,
                "wrong-pw-Qz3-also-never-echoed",
                DOMAIN,
                serde_json::json!({"name": PROJECT}),
            ),
        )
        .await,
    );
    record(
        ask_iam(
            addr,
            password_body(
                USER,
                PASSWORD,
                DOMAIN,
                serde_json::json!({"name": PASSWORD}),
            ),
        )
        .await,
    );
    record(ask_iam(addr, format!("{{\"password\":\"{PASSWORD}\"")).await);

    // The service: accepted and refused token and app code.
    record(get_with(addr, "x-auth-token", &token).await);
    record(get_with(addr, "x-apig-appcode", APP_CODE).await);
    record(get_with(addr, "x-apig-appcode", &format!("{APP_CODE}x")).await);
    // Expired token, alone; then signed into an AK/SK request whose signature
    // fails, next to a wrong app code: the mismatch message quotes the canonical request.
    clock.advance(TOKEN_LIFETIME);
    record(get_with(addr, "x-auth-token", &token).await);
    let host = addr.to_string();
    let headers = [
        ("host", host.as_str()),
        ("x-auth-token", token.as_str()),
        ("x-apig-appcode", APP_CODE),
    ];
    let out = sign(
        &SignableRequest {
            method: "GET",
            path: "/other",
            query: None,
            headers: &headers,
            payload: Payload::Bytes(b""),
        },
        &key(),
        clock.now(),
    )
    .unwrap();
    record(
        send(
            request("GET", &url(addr, "/different-path"))
                .header("x-auth-token", &token)
                .header("x-apig-appcode", "not-the-app-code")
                .header("x-sdk-date", out.date.as_str())
                .header("authorization", out.authorization.as_str())
                .body(body(""))
                .unwrap(),
        )
        .await,
    );

    let expired = &seen[seen.len() - 2];
    assert!(expired.contains("APIG.0307"), "{expired}");
    let mismatch = seen.last().unwrap();
    assert!(
        mismatch.contains("verify aksk signature fail")
            && mismatch.contains("x-auth-token:** redacted **"),
        "{mismatch}"
    );
    for text in &seen {
        for secret in [
            token.as_str(),
            &token[..64],
            APP_CODE,
            PASSWORD,
            "wrong-pw-Qz3-also-never-echoed",
            SK,
        ] {
            assert!(!text.contains(secret), "{secret:.12}… leaked in {text}");
        }
    }
}

#[tokio::test]
async fn metadata_session_tokens_are_issued_for_a_ttl_checked_and_expire() {
    let clock = TestClock::new();
    let (addr, stats) = start(&clock).await;
    let key_url = url(addr, "/openstack/latest/securitykey");
    let session = |ttl: Option<&str>| {
        let mut req = request("PUT", &url(addr, "/meta-data/latest/api/token"));
        if let Some(ttl) = ttl {
            req = req.header("x-metadata-token-ttl-seconds", ttl);
        }
        send(req.body(body("")).unwrap())
    };
    let with_token = |token: String| {
        send(
            request("GET", &key_url)
                .header("x-metadata-token", token)
                .body(body(""))
                .unwrap(),
        )
    };
    for bad in [None, Some("0"), Some("21601"), Some("six hours")] {
        assert_eq!(session(bad).await.0.status, 400, "{bad:?}");
    }
    let (parts, token) = session(Some("60")).await;
    assert_eq!(parts.status, 200);
    let token = String::from_utf8(token.to_vec()).unwrap();

    // Optional by default, required when hardened.
    assert_eq!(get(&key_url).await.0.status, 200);
    stats
        .metadata_session_required
        .store(true, Ordering::SeqCst);
    assert_eq!(get(&key_url).await.0.status, 401);
    assert_eq!(with_token(token.clone()).await.0.status, 200);
    assert_eq!(with_token("forged".into()).await.0.status, 401);
    clock.advance(Duration::from_secs(61));
    assert_eq!(with_token(token).await.0.status, 401, "expired");

    stats
        .metadata_session_unsupported
        .store(true, Ordering::SeqCst);
    assert_eq!(session(Some("60")).await.0.status, 404);
    assert_eq!(stats.metadata_session_calls.load(Ordering::SeqCst), 6);
}
