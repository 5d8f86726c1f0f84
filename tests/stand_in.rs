//! The stand-in itself: its IAM (`POST /v3/auth/tokens`), its ECS metadata
//! service (`GET /openstack/latest/securitykey`), its keyless identity
//! (Pod Identity, the identity provider, IAM's temporary keys, the agency),
//! and its real-time service accepting AK/SK signatures, IAM tokens and app
//! codes, refusing the rest the way API Gateway does. Time comes from a
//! clock the tests move.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use modelarts_proxy::dev::{
    ID_TOKEN_PATH, POD_IDENTITY_PATH, SECURITY_TOKENS_PATH, StandIn, StandInAgency,
    StandInFederation, StandInIam, StandInPodIdentity, StandInStats,
};
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

// ---------------------------------------------------------------------------
// Keyless identity (DESIGN §11): Pod Identity, the identity provider, IAM's
// temporary keys, the agency. Whatever they issue, the service must accept
// as the real gateway would.

const POD_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.pod-sa-TEST-token.never-log-me";
const POD_LIFETIME: Duration = Duration::from_secs(3600);
const IDP_ID: &str = "test-idp";
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.oidc-id-TEST-token.never-log-me";
const FEDERATION_LIFETIME: Duration = Duration::from_secs(3600);
const PARTNER: &str = "partner-account";
const AGENCY: &str = "modelarts-invoke";
const AGENCY_LIFETIME: Duration = Duration::from_secs(2 * 3600);

fn pod_identity(second_shape: bool) -> StandInPodIdentity {
    StandInPodIdentity {
        tokens: vec![Secret::new(POD_TOKEN)],
        lifetime: POD_LIFETIME,
        second_shape,
    }
}

/// A stand-in with IAM, Pod Identity, the identity provider and the agency.
async fn start_keyless(clock: &TestClock, second_shape: bool) -> (SocketAddr, Arc<StandInStats>) {
    let stand_in = StandIn::new(vec![key()], clock.as_clock())
        .with_iam(iam())
        .with_pod_identity(pod_identity(second_shape))
        .with_federation(StandInFederation {
            idp_id: IDP_ID.into(),
            id_tokens: vec![Secret::new(ID_TOKEN)],
            credential_lifetime: FEDERATION_LIFETIME,
        })
        .with_agency(StandInAgency {
            domain_name: PARTNER.into(),
            agency_name: AGENCY.into(),
            credential_lifetime: AGENCY_LIFETIME,
        });
    let stats = stand_in.stats();
    let addr = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (addr, stats)
}

/// A POST of `body` to `path` with `headers`.
async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body_text: String,
) -> (http::response::Parts, Bytes) {
    let mut req =
        request("POST", &url(addr, path)).header("content-type", "application/json;charset=UTF-8");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(body(body_text)).unwrap()).await
}

/// Pod Identity's request, as the SDKs send it: body `{}`, the raw token.
async fn ask_pod(addr: SocketAddr, authorization: Option<&str>) -> (http::response::Parts, Bytes) {
    let headers: Vec<_> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    post(addr, POD_IDENTITY_PATH, &headers, "{}".into()).await
}

/// Pod Identity's answer (CCE's shape) as a key and its expiry.
fn pod_key(bytes: &Bytes) -> (AkSk, String) {
    let v = json(bytes);
    let c = &v["credentials"];
    (
        AkSk {
            access_key: c["accessKeyId"].as_str().unwrap().into(),
            secret_key: Secret::new(c["secretAccessKey"].as_str().unwrap()),
            security_token: Some(Secret::new(c["securityToken"].as_str().unwrap())),
        },
        c["expiration"].as_str().unwrap().to_owned(),
    )
}

/// `POST /v3.0/OS-AUTH/id-token/tokens` with `X-Idp-Id: idp`.
async fn ask_id_token(
    addr: SocketAddr,
    idp: &str,
    id_token: &str,
    scope: Option<serde_json::Value>,
) -> (http::response::Parts, Bytes) {
    let mut auth = serde_json::json!({"id_token": {"id": id_token}});
    if let Some(project) = scope {
        auth["scope"] = serde_json::json!({ "project": project });
    }
    let text = serde_json::json!({ "auth": auth }).to_string();
    post(addr, ID_TOKEN_PATH, &[("x-idp-id", idp)], text).await
}

/// An unscoped token for the trusted id token.
async fn federated_token(addr: SocketAddr) -> String {
    let (parts, bytes) = ask_id_token(addr, IDP_ID, ID_TOKEN, None).await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    parts.headers["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `methods: ["token"]` for temporary keys, as the SDKs send it.
fn token_method(token: &str, duration: Option<serde_json::Value>) -> String {
    let mut t = serde_json::json!({ "id": token });
    if let Some(d) = duration {
        t["duration_seconds"] = d;
    }
    serde_json::json!({"auth": {"identity": {"methods": ["token"], "token": t}}}).to_string()
}

/// `methods: ["assume_role"]` naming `agency` of `domain`, with `extra`
/// in `assume_role` and `scope` (for a token) if given.
fn assume_role(
    domain: &str,
    agency: &str,
    extra: serde_json::Value,
    scope: Option<serde_json::Value>,
) -> String {
    let mut role = serde_json::json!({ "domain_name": domain, "agency_name": agency });
    for (k, v) in extra.as_object().unwrap() {
        role[k] = v.clone();
    }
    let mut auth = serde_json::json!({
        "identity": { "methods": ["assume_role"], "assume_role": role },
    });
    if let Some(project) = scope {
        auth["scope"] = serde_json::json!({ "project": project });
    }
    serde_json::json!({ "auth": auth }).to_string()
}

fn assert_iam_error(parts: &http::response::Parts, bytes: &Bytes, status: u16) -> String {
    assert_eq!(parts.status, status, "{}", String::from_utf8_lossy(bytes));
    let v = json(bytes);
    assert_eq!(v["error"]["code"], status, "{v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

fn assert_no_secret(bytes: &Bytes, secrets: &[&str]) {
    let text = String::from_utf8_lossy(bytes);
    for s in secrets {
        assert!(!text.contains(s), "{s:.12}… leaked in {text}");
    }
}

#[tokio::test]
async fn pod_identity_issues_cce_shaped_keys_the_service_accepts_with_their_security_token() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let (parts, bytes) = ask_pod(addr, Some(POD_TOKEN)).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["audience"], "service.cce.pods");
    let (temp, expiration) = pod_key(&bytes);
    assert_eq!(
        parse_huawei_time(&expiration),
        clock.now() + chrono::TimeDelta::hours(1)
    );
    assert_eq!(stats.pod_identity_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        stats.issued_credentials.lock().unwrap()[0].access_key,
        temp.access_key
    );

    let (parts, bytes) = signed_post(addr, &temp, clock.now(), true).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let (parts, bytes) = signed_post(addr, &temp, clock.now(), false).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(msg.contains("x-security-token does not match"), "{msg}");
    clock.advance(POD_LIFETIME);
    let (parts, bytes) = signed_post(addr, &temp, clock.now(), true).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(msg.contains("temporary credentials expired"), "{msg}");
}

#[tokio::test]
async fn pod_identity_refuses_missing_unknown_and_bearer_tokens_with_403_and_never_echoes_them() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let bearer = format!("Bearer {POD_TOKEN}");
    for auth in [None, Some("eyJ.forged-TEST-token.x"), Some(bearer.as_str())] {
        let (parts, bytes) = ask_pod(addr, auth).await;
        assert_eq!(
            parts.status,
            403,
            "{auth:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let v = json(&bytes);
        assert!(v["error_code"].as_str().unwrap().starts_with("CCE."), "{v}");
        assert!(
            v["error_msg"]
                .as_str()
                .unwrap()
                .contains("service account token"),
            "{v}"
        );
        assert_no_secret(&bytes, &[POD_TOKEN, "forged-TEST-token"]);
    }
    let (parts, _) = send(
        request("GET", &url(addr, POD_IDENTITY_PATH))
            .header("authorization", POD_TOKEN)
            .body(body(""))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 405);
    stats.pod_identity_down.store(true, Ordering::SeqCst);
    assert_eq!(ask_pod(addr, Some(POD_TOKEN)).await.0.status, 503);
    stats.pod_identity_down.store(false, Ordering::SeqCst);
    // Compared after trimming, as the SDKs trim the token file.
    assert_eq!(
        ask_pod(addr, Some(&format!("{POD_TOKEN}  ")))
            .await
            .0
            .status,
        200
    );
    assert_eq!(stats.pod_identity_calls.load(Ordering::SeqCst), 6);
    assert_eq!(stats.issued_credentials.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn pod_identity_second_shape_is_iams_credential_object_and_works_the_same() {
    let clock = TestClock::new();
    let (addr, _) = start_keyless(&clock, true).await;
    let (parts, bytes) = ask_pod(addr, Some(POD_TOKEN)).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(json(&bytes).get("credentials").is_none());
    let (temp, expires_at) = metadata_key(&bytes);
    assert_eq!(
        parse_huawei_time(&expires_at),
        clock.now() + chrono::TimeDelta::hours(1)
    );
    assert_eq!(
        signed_post(addr, &temp, clock.now(), true).await.0.status,
        200
    );
}

#[tokio::test]
async fn pod_identity_token_rotation_refuses_the_old_token_and_accepts_the_new() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let rotated = "eyJhbGciOiJSUzI1NiJ9.rotated-TEST-token.x";
    assert_eq!(ask_pod(addr, Some(rotated)).await.0.status, 403);
    stats.set_pod_identity_tokens(vec![Secret::new(rotated)]);
    assert_eq!(ask_pod(addr, Some(POD_TOKEN)).await.0.status, 403);
    let (parts, bytes) = ask_pod(addr, Some(rotated)).await;
    assert_eq!(parts.status, 200);
    // Keys issued before the rotation keep working until they expire.
    let (temp, _) = pod_key(&bytes);
    assert_eq!(
        signed_post(addr, &temp, clock.now(), true).await.0.status,
        200
    );
}

#[tokio::test]
async fn an_unscoped_federated_token_is_refused_by_the_service_but_buys_temporary_keys() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let (parts, bytes) = ask_id_token(addr, IDP_ID, ID_TOKEN, None).await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let token = parts.headers["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("MII") && token.len() == TOKEN_SIZE);
    let t = &json(&bytes)["token"];
    assert_eq!(t["methods"], serde_json::json!(["mapped"]));
    assert!(t.get("project").is_none(), "unscoped: {t}");
    assert_eq!(
        t["user"]["OS-FEDERATION"]["identity_provider"]["id"],
        IDP_ID
    );
    assert_eq!(
        parse_huawei_time(t["expires_at"].as_str().unwrap()),
        clock.now() + chrono::TimeDelta::hours(24)
    );
    assert_eq!(stats.last_token().unwrap().expose(), token);

    let (parts, bytes) = get_with(addr, "x-auth-token", &token).await;
    let msg = assert_gateway_401(&parts, &bytes, "APIG.0301");
    assert!(msg.contains("not scoped to a project"), "{msg}");

    // As the SDKs ask: six hours; the federation caps it at one.
    let (parts, bytes) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[],
        token_method(&token, Some(21600.into())),
    )
    .await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let (temp, expires_at) = metadata_key(&bytes);
    assert_eq!(
        parse_huawei_time(&expires_at),
        clock.now() + chrono::TimeDelta::hours(1)
    );
    assert_eq!(
        signed_post(addr, &temp, clock.now(), true).await.0.status,
        200
    );
    assert_eq!(
        signed_post(addr, &temp, clock.now(), false).await.0.status,
        401
    );
    assert_eq!(stats.id_token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.security_token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.assume_role_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_federated_token_scoped_by_name_or_id_is_accepted_and_an_unknown_project_refused() {
    let clock = TestClock::new();
    let (addr, _) = start_keyless(&clock, false).await;
    for scope in [
        serde_json::json!({"name": PROJECT}),
        serde_json::json!({"id": PROJECT_ID}),
    ] {
        let (parts, bytes) = ask_id_token(addr, IDP_ID, ID_TOKEN, Some(scope.clone())).await;
        assert_eq!(
            parts.status,
            201,
            "{scope}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(json(&bytes)["token"]["project"]["id"], PROJECT_ID);
        let token = parts.headers["x-subject-token"].to_str().unwrap();
        let (parts, bytes) = get_with(addr, "x-auth-token", token).await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(json(&bytes)["auth"], "token");
    }
    let (parts, bytes) = ask_id_token(
        addr,
        IDP_ID,
        ID_TOKEN,
        Some(serde_json::json!({"name": "eu-west-0"})),
    )
    .await;
    let msg = assert_iam_error(&parts, &bytes, 400);
    assert!(msg.contains("eu-west-0"), "{msg}");
}

#[tokio::test]
async fn id_token_exchange_refuses_wrong_idp_untrusted_tokens_and_bad_requests() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let (parts, bytes) = ask_id_token(addr, "other-idp", ID_TOKEN, None).await;
    let msg = assert_iam_error(&parts, &bytes, 404);
    assert!(msg.contains("\"other-idp\""), "{msg}");
    assert_no_secret(&bytes, &[ID_TOKEN]);

    let forged = "eyJhbGciOiJSUzI1NiJ9.forged-TEST-id-token.x";
    let (parts, bytes) = ask_id_token(addr, IDP_ID, forged, None).await;
    let msg = assert_iam_error(&parts, &bytes, 401);
    assert_eq!(json(&bytes)["error"]["title"], "Unauthorized");
    assert!(msg.contains("id_token") && msg.contains(IDP_ID), "{msg}");
    assert_no_secret(&bytes, &[forged, ID_TOKEN]);

    // A project "name" holding the id token is not echoed either.
    let (parts, bytes) = ask_id_token(
        addr,
        IDP_ID,
        ID_TOKEN,
        Some(serde_json::json!({"name": ID_TOKEN})),
    )
    .await;
    assert_iam_error(&parts, &bytes, 400);
    assert_no_secret(&bytes, &[ID_TOKEN]);

    let (parts, bytes) = post(addr, ID_TOKEN_PATH, &[], r#"{"auth":{}}"#.into()).await;
    assert!(assert_iam_error(&parts, &bytes, 400).contains("X-Idp-Id"));
    let (parts, bytes) = post(
        addr,
        ID_TOKEN_PATH,
        &[("x-idp-id", IDP_ID)],
        r#"{"auth":{}}"#.into(),
    )
    .await;
    assert_iam_error(&parts, &bytes, 400);
    let (parts, _) = get(&url(addr, ID_TOKEN_PATH)).await;
    assert_eq!(parts.status, 405);
    stats.iam_down.store(true, Ordering::SeqCst);
    assert_eq!(
        ask_id_token(addr, IDP_ID, ID_TOKEN, None).await.0.status,
        503
    );
    assert_eq!(stats.id_token_calls.load(Ordering::SeqCst), 7);
    assert_eq!(stats.tokens_issued(), 0);
}

#[tokio::test]
async fn id_token_rotation_via_set_id_tokens() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let next = "eyJhbGciOiJSUzI1NiJ9.next-TEST-id-token.x";
    assert_eq!(ask_id_token(addr, IDP_ID, next, None).await.0.status, 401);
    stats.set_id_tokens(vec![Secret::new(ID_TOKEN), Secret::new(next)]);
    assert_eq!(ask_id_token(addr, IDP_ID, next, None).await.0.status, 201);
    assert_eq!(
        ask_id_token(addr, IDP_ID, ID_TOKEN, None).await.0.status,
        201
    );
    stats.set_id_tokens(vec![Secret::new(next)]);
    assert_eq!(
        ask_id_token(addr, IDP_ID, ID_TOKEN, None).await.0.status,
        401
    );
}

#[tokio::test]
async fn security_tokens_for_a_token_check_duration_and_liveness() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let token = federated_token(addr).await;
    for bad in [
        serde_json::json!(899),
        serde_json::json!(86401),
        serde_json::json!("3600"),
    ] {
        let (parts, bytes) = post(
            addr,
            SECURITY_TOKENS_PATH,
            &[],
            token_method(&token, Some(bad.clone())),
        )
        .await;
        let msg = assert_iam_error(&parts, &bytes, 400);
        assert!(msg.contains("duration_seconds"), "{bad}: {msg}");
    }
    // Without duration_seconds: IAM's 15 minutes.
    let (parts, bytes) = post(addr, SECURITY_TOKENS_PATH, &[], token_method(&token, None)).await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let (_, expires_at) = metadata_key(&bytes);
    assert_eq!(
        parse_huawei_time(&expires_at),
        clock.now() + chrono::TimeDelta::minutes(15)
    );
    // The token in X-Auth-Token alone is enough, as IAM documents.
    let only_header =
        r#"{"auth":{"identity":{"methods":["token"],"token":{"duration_seconds":900}}}}"#;
    let (parts, _) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[("x-auth-token", &token)],
        only_header.into(),
    )
    .await;
    assert_eq!(parts.status, 201);

    let forged = format!("MII{}", "A".repeat(100));
    for body_text in [token_method(&forged, None), only_header.to_owned()] {
        let (parts, bytes) = post(addr, SECURITY_TOKENS_PATH, &[], body_text).await;
        assert_iam_error(&parts, &bytes, 401);
        assert_no_secret(&bytes, &[&forged]);
    }
    let (parts, bytes) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[],
        r#"{"auth":{"identity":{"methods":["x"]}}}"#.into(),
    )
    .await;
    assert_iam_error(&parts, &bytes, 400);
    clock.advance(TOKEN_LIFETIME);
    let (parts, bytes) = post(addr, SECURITY_TOKENS_PATH, &[], token_method(&token, None)).await;
    assert_iam_error(&parts, &bytes, 401);
    assert_no_secret(&bytes, &[&token]);
    stats.iam_down.store(true, Ordering::SeqCst);
    let (parts, _) = post(addr, SECURITY_TOKENS_PATH, &[], token_method(&token, None)).await;
    assert_eq!(parts.status, 503);
    assert_eq!(stats.security_token_calls.load(Ordering::SeqCst), 10);
    assert_eq!(stats.issued_credentials.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn assume_role_gives_the_agencys_keys_to_a_token_or_a_signature() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let base = federated_token(addr).await;
    let ask = assume_role(
        PARTNER,
        AGENCY,
        serde_json::json!({"duration_seconds": 86400}),
        None,
    );
    let (parts, bytes) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[("x-auth-token", &base)],
        ask.clone(),
    )
    .await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let (temp, expires_at) = metadata_key(&bytes);
    assert_eq!(
        parse_huawei_time(&expires_at),
        clock.now() + chrono::TimeDelta::hours(2)
    );
    assert_eq!(
        signed_post(addr, &temp, clock.now(), true).await.0.status,
        200
    );

    // Signed with an AK/SK instead (IAM's recommended way), here the static key.
    let (parts, bytes) = signed_iam_post(addr, &key(), clock.now(), &ask).await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    // And with the agency's own temporary keys, security token included.
    let (parts, bytes) = signed_iam_post(addr, &temp, clock.now(), &ask).await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let forged = AkSk {
        access_key: key().access_key,
        secret_key: Secret::new("not-the-secret-key-TEST"),
        security_token: None,
    };
    let (parts, bytes) = signed_iam_post(addr, &forged, clock.now(), &ask).await;
    assert_iam_error(&parts, &bytes, 401);
    assert_no_secret(&bytes, &[temp.security_token.as_ref().unwrap().expose()]);

    let (parts, bytes) = post(addr, SECURITY_TOKENS_PATH, &[], ask.clone()).await;
    assert_iam_error(&parts, &bytes, 401);
    let (parts, bytes) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[("x-auth-token", "MIIdead-TEST-token-never-issued")],
        ask.clone(),
    )
    .await;
    assert_iam_error(&parts, &bytes, 401);
    assert_no_secret(&bytes, &["MIIdead-TEST-token-never-issued"]);
    let other = assume_role(PARTNER, "other-agency", serde_json::json!({}), None);
    let (parts, bytes) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[("x-auth-token", &base)],
        other,
    )
    .await;
    let msg = assert_iam_error(&parts, &bytes, 403);
    assert!(
        msg.contains("agency") && msg.contains("\"other-agency\""),
        "{msg}"
    );
    let short = assume_role(
        PARTNER,
        AGENCY,
        serde_json::json!({"duration_seconds": 60}),
        None,
    );
    let (parts, _) = post(
        addr,
        SECURITY_TOKENS_PATH,
        &[("x-auth-token", &base)],
        short,
    )
    .await;
    assert_eq!(parts.status, 400);
    assert_eq!(stats.assume_role_calls.load(Ordering::SeqCst), 8);
}

/// A POST to IAM's security-token path signed with `key` (and its security token).
async fn signed_iam_post(
    addr: SocketAddr,
    key: &AkSk,
    time: DateTime<Utc>,
    payload: &str,
) -> (http::response::Parts, Bytes) {
    let host = addr.to_string();
    let mut headers = vec![
        ("content-type", "application/json;charset=UTF-8"),
        ("host", host.as_str()),
    ];
    if let Some(t) = &key.security_token {
        headers.push(("x-security-token", t.expose()));
    }
    let out = sign(
        &SignableRequest {
            method: "POST",
            path: SECURITY_TOKENS_PATH,
            query: None,
            headers: &headers,
            payload: Payload::Bytes(payload.as_bytes()),
        },
        key,
        time,
    )
    .unwrap();
    let mut req = request("POST", &url(addr, SECURITY_TOKENS_PATH));
    for (name, value) in &headers {
        req = req.header(*name, *value);
    }
    let req = req
        .header("x-sdk-date", out.date)
        .header("authorization", out.authorization)
        .body(body(payload.to_owned()))
        .unwrap();
    send(req).await
}

#[tokio::test]
async fn an_agency_token_scoped_to_the_project_is_accepted_by_the_service() {
    let clock = TestClock::new();
    let (addr, stats) = start_keyless(&clock, false).await;
    let base = token(addr).await;
    let scope = Some(serde_json::json!({"name": PROJECT}));
    let path = "/v3/auth/tokens?nocatalog=true";
    let ask = assume_role(PARTNER, AGENCY, serde_json::json!({}), scope.clone());
    let (parts, bytes) = post(addr, path, &[("x-auth-token", &base)], ask).await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&bytes));
    let t = &json(&bytes)["token"];
    assert_eq!(t["methods"], serde_json::json!(["assume_role"]));
    assert_eq!(t["project"]["name"], PROJECT);
    let agency_token = parts.headers["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let (parts, bytes) = get_with(addr, "x-auth-token", &agency_token).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));

    // The older field name, xrole_name, is understood too.
    let older = serde_json::json!({"auth": {
        "identity": {"methods": ["assume_role"],
                     "assume_role": {"domain_name": PARTNER, "xrole_name": AGENCY}},
        "scope": {"project": {"id": PROJECT_ID}},
    }});
    let (parts, _) = post(addr, path, &[("x-auth-token", &base)], older.to_string()).await;
    assert_eq!(parts.status, 201);

    // Without a project scope the token is IAM's only.
    let unscoped = assume_role(PARTNER, AGENCY, serde_json::json!({}), None);
    let (parts, _) = post(addr, path, &[("x-auth-token", &base)], unscoped).await;
    let unscoped_token = parts.headers["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let (parts, bytes) = get_with(addr, "x-auth-token", &unscoped_token).await;
    assert_gateway_401(&parts, &bytes, "APIG.0301");

    let wrong = assume_role("someone-else", AGENCY, serde_json::json!({}), scope.clone());
    let (parts, bytes) = post(addr, path, &[("x-auth-token", &base)], wrong).await;
    assert!(assert_iam_error(&parts, &bytes, 403).contains("agency"));
    let ask = assume_role(PARTNER, AGENCY, serde_json::json!({}), scope);
    let (parts, bytes) = post(addr, path, &[], ask.clone()).await;
    assert_iam_error(&parts, &bytes, 401);
    stats.revoke_all_tokens();
    let (parts, bytes) = post(addr, path, &[("x-auth-token", &base)], ask).await;
    assert_iam_error(&parts, &bytes, 401);
    assert_no_secret(&bytes, &[&base]);
    assert_eq!(stats.assume_role_calls.load(Ordering::SeqCst), 6);
    assert_eq!(
        stats.iam_calls.load(Ordering::SeqCst),
        7,
        "the password token too"
    );
}

#[tokio::test]
async fn without_their_stand_ins_the_keyless_paths_are_ordinary_service_paths() {
    let addr = StandIn::new(vec![key()], Arc::new(Utc::now))
        .with_iam(iam())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for path in [POD_IDENTITY_PATH, ID_TOKEN_PATH, SECURITY_TOKENS_PATH] {
        let (parts, bytes) = post(addr, path, &[], "{}".into()).await;
        assert_gateway_401(&parts, &bytes, "APIG.0301");
    }
}
