//! Credentials without secrets end to end (DESIGN §11): the proxy in front of
//! the stand-in gateway, which also plays CCE Pod Identity and IAM's
//! id-token, security-token and agency endpoints, checks what they receive
//! and issues random credentials that only it accepts.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use modelarts_proxy::auth::Provider;
use modelarts_proxy::dev::{
    POD_IDENTITY_PATH, StandIn, StandInAgency, StandInFederation, StandInIam, StandInPodIdentity,
    StandInStats,
};
use modelarts_proxy::secret::Secret;

const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.pod-SA-token-never-log-me.sig";
const SA_TOKEN_2: &str = "eyJhbGciOiJSUzI1NiJ9.rotated-SA-token-never-log-me.sig";
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.oidc-ID-token-never-log-me.sig";
const IDP: &str = "cluster-idp";
const HOUR: Duration = Duration::from_secs(3600);

fn iam() -> StandInIam {
    StandInIam {
        user: "alice".into(),
        password: Secret::new("iam-PASSWORD-never-log-me"),
        domain: "acme".into(),
        project: "cn-north-4".into(),
        project_id: "0a1b2c3d".into(),
        token_lifetime: HOUR,
        token_size: 4096,
    }
}

fn pod_identity(lifetime: Duration, second_shape: bool) -> StandInPodIdentity {
    StandInPodIdentity {
        tokens: vec![Secret::new(SA_TOKEN)],
        lifetime,
        second_shape,
    }
}

fn federation(lifetime: Duration) -> StandInFederation {
    StandInFederation {
        idp_id: IDP.into(),
        id_tokens: vec![Secret::new(ID_TOKEN)],
        credential_lifetime: lifetime,
    }
}

fn agency() -> StandInAgency {
    StandInAgency {
        domain_name: "partner".into(),
        agency_name: "modelarts-invoke".into(),
        credential_lifetime: HOUR,
    }
}

/// A stand-in gateway with IAM, Pod Identity, federation and an agency.
async fn gateway(
    configure: impl FnOnce(StandIn) -> StandIn,
) -> (std::net::SocketAddr, Arc<StandInStats>) {
    let stand_in = configure(StandIn::new(vec![key()], Arc::new(chrono::Utc::now)).with_iam(iam()));
    let stats = stand_in.stats();
    let addr = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (addr, stats)
}

/// A private directory for token files.
fn files(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "modelarts-proxy-identity-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    // Written whole under another name, then renamed: as the kubelet swaps
    // a projected token, a reader never sees half of it.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{text}\n")).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A proxy with one route `/` to the stand-in service, `[credentials.c]` = `table`.
async fn proxy(gw: std::net::SocketAddr, table: &str) -> Proxy {
    start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"c\"\n[credentials.c]\n{table}\n"
    ))
    .await
}

fn pod_table(gw: std::net::SocketAddr, token_file: &Path, extra: &str) -> String {
    format!(
        "type = \"aksk\"\nsource = \"pod_identity\"\nendpoint = \"http://{gw}{POD_IDENTITY_PATH}\"\ntoken_file = \"{}\"\n{extra}",
        token_file.display()
    )
}

fn oidc_table(gw: std::net::SocketAddr, kind: &str, id_token_file: &Path) -> String {
    let project = if kind == "token" {
        "project = \"cn-north-4\"\n"
    } else {
        ""
    };
    format!(
        "type = \"{kind}\"\nsource = \"oidc\"\nidp_id = \"{IDP}\"\nid_token_file = \"{}\"\niam_endpoint = \"http://{gw}\"\n{project}",
        id_token_file.display()
    )
}

async fn post(proxy: &Proxy) -> (http::response::Parts, bytes::Bytes) {
    let req = request("POST", &proxy.url("/predict"))
        .header("content-type", "application/json")
        .body(body("{\"prompt\":\"hello\"}"))
        .unwrap();
    send(req).await
}

async fn ok(proxy: &Proxy) -> serde_json::Value {
    let (parts, bytes) = post(proxy).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    json(&bytes)
}

fn temporary(
    proxy: &Proxy,
) -> Arc<
    modelarts_proxy::auth::refresh::Refreshing<Arc<modelarts_proxy::auth::aksk::AkSkCredentials>>,
> {
    match &proxy.shared.state.load().providers["c"] {
        Provider::Temporary { creds, .. } => creds.clone(),
        _ => panic!("not temporary AK/SK"),
    }
}

#[tokio::test]
async fn pod_identity_signs_with_the_pods_temporary_keys_in_either_shape() {
    for second_shape in [false, true] {
        let (gw, stats) = gateway(|s| s.with_pod_identity(pod_identity(HOUR, second_shape))).await;
        let dir = files(&format!("pod-{second_shape}"));
        let token_file = dir.join("token");
        write(&token_file, SA_TOKEN);
        let proxy = proxy(gw, &pod_table(gw, &token_file, "")).await;
        let echoed = ok(&proxy).await;
        assert_eq!(echoed["auth"], "aksk", "{echoed}");
        assert_eq!(echoed["headers"]["x-security-token"], "** redacted **");
        let issued = stats
            .issued_credentials
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        let authorization = echoed["headers"]["authorization"].as_str().unwrap();
        assert!(
            authorization.contains(&format!("Access={},", issued.access_key)),
            "signed with the issued key: {echoed}"
        );
        ok(&proxy).await;
        assert_eq!(stats.pod_identity_calls.load(Ordering::SeqCst), 1, "cached");
    }
}

#[tokio::test]
async fn a_rotated_token_file_and_expiring_keys_lose_no_request() {
    // Keys live 3 s: refreshed every ~1.5 s while requests keep flowing.
    let (gw, stats) =
        gateway(|s| s.with_pod_identity(pod_identity(Duration::from_secs(3), false))).await;
    let dir = files("rotation");
    let token_file = dir.join("token");
    write(&token_file, SA_TOKEN);
    let proxy = proxy(gw, &pod_table(gw, &token_file, "refresh_margin = \"1s\"")).await;
    ok(&proxy).await;
    // The kubelet rotates the token; Pod Identity then refuses the old one.
    write(&token_file, SA_TOKEN_2);
    stats.set_pod_identity_tokens(vec![Secret::new(SA_TOKEN_2)]);
    let before = stats.pod_identity_calls.load(Ordering::SeqCst);
    let first_key = temporary(&proxy)
        .current()
        .unwrap()
        .value
        .key
        .access_key
        .clone();
    let mut sent = 0;
    // Until two more keys were issued with the new token (each a refresh ahead of expiry).
    loop {
        ok(&proxy).await;
        sent += 1;
        let now = temporary(&proxy).current().unwrap();
        if stats.pod_identity_calls.load(Ordering::SeqCst) >= before + 2
            && now.value.key.access_key != first_key
            && temporary(&proxy).last_error().is_none()
        {
            break;
        }
        assert!(sent < 100_000, "no refresh after the rotation");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        stats.rejected.load(Ordering::SeqCst),
        0,
        "no request was refused"
    );
}

#[tokio::test]
async fn a_gateway_401_fetches_new_keys_once_for_every_request() {
    let (gw, stats) = gateway(|s| s.with_pod_identity(pod_identity(HOUR, false))).await;
    let dir = files("revoked");
    let token_file = dir.join("token");
    write(&token_file, SA_TOKEN);
    let proxy = Arc::new(proxy(gw, &pod_table(gw, &token_file, "")).await);
    ok(&proxy).await;
    stats.revoke_all_credentials();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move { ok(&proxy).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        stats.pod_identity_calls.load(Ordering::SeqCst),
        2,
        "one re-fetch for all eight requests"
    );
}

#[tokio::test]
async fn pod_identity_failures_say_what_to_fix_and_never_the_token() {
    let (gw, _stats) = gateway(|s| s.with_pod_identity(pod_identity(HOUR, false))).await;
    let dir = files("failures");
    // A token Pod Identity does not know: its 403 and message.
    let wrong = dir.join("wrong");
    write(&wrong, "not-the-pods-token-never-log-me");
    let refused = proxy(gw, &pod_table(gw, &wrong, "max_wait = \"5s\"")).await;
    let (parts, bytes) = post(&refused).await;
    assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(&format!(
            "CCE Pod Identity at http://{gw}{POD_IDENTITY_PATH} answered HTTP 403"
        )),
        "{text}"
    );
    assert!(
        text.contains("is this service account associated with an IAM agency"),
        "{text}"
    );
    assert!(!text.contains("never-log-me"), "{text}");
    // No token file (the projected volume is missing).
    let missing = dir.join("missing");
    let proxy = proxy(gw, &pod_table(gw, &missing, "max_wait = \"5s\"")).await;
    let (parts, bytes) = post(&proxy).await;
    assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(&format!(
            "cannot read the service-account token file {} for CCE Pod Identity",
            missing.display()
        )),
        "{text}"
    );
    // The file appears: the watch retries at once, the next request works.
    write(&missing, SA_TOKEN);
    let c = temporary(&proxy);
    eventually("the new token file is used", || c.is_ready()).await;
    ok(&proxy).await;
}

#[tokio::test]
async fn oidc_gives_temporary_keys_and_project_tokens() {
    let (gw, stats) = gateway(|s| s.with_federation(federation(HOUR))).await;
    let dir = files("oidc");
    let id_token_file = dir.join("id-token");
    write(&id_token_file, ID_TOKEN);
    let keys = proxy(gw, &oidc_table(gw, "aksk", &id_token_file)).await;
    let echoed = ok(&keys).await;
    assert_eq!(echoed["auth"], "aksk", "{echoed}");
    assert_eq!(stats.id_token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.security_token_calls.load(Ordering::SeqCst), 1);
    let tokens = proxy(gw, &oidc_table(gw, "token", &id_token_file)).await;
    let echoed = ok(&tokens).await;
    assert_eq!(echoed["auth"], "token", "{echoed}");
    assert_eq!(stats.id_token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_untrusted_id_token_is_iams_401_with_its_message() {
    let (gw, _stats) = gateway(|s| s.with_federation(federation(HOUR))).await;
    let dir = files("untrusted");
    let id_token_file = dir.join("id-token");
    write(&id_token_file, "eyJ.untrusted-never-log-me.sig");
    let proxy = proxy(
        gw,
        &format!(
            "{}max_wait = \"5s\"\n",
            oidc_table(gw, "aksk", &id_token_file)
        ),
    )
    .await;
    let (parts, bytes) = post(&proxy).await;
    assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("IAM refused a token for the id token in"),
        "{text}"
    );
    assert!(
        text.contains(&format!("(identity provider {IDP}): HTTP 401: ")),
        "{text}"
    );
    assert!(!text.contains("never-log-me"), "{text}");
}

#[tokio::test]
async fn an_agency_is_assumed_with_a_token_or_a_signature() {
    let (gw, stats) = gateway(|s| {
        s.with_federation(federation(HOUR))
            .with_pod_identity(pod_identity(HOUR, false))
            .with_agency(agency())
    })
    .await;
    let dir = files("agency");
    let id_token_file = dir.join("id-token");
    write(&id_token_file, ID_TOKEN);
    let sa_file = dir.join("sa-token");
    write(&sa_file, SA_TOKEN);
    // A Pod Identity base has no IAM of its own: the agency names it.
    let agency = |kind: &str, base: &str| {
        let project = if kind == "token" {
            "project = \"cn-north-4\"\n"
        } else {
            ""
        };
        let iam = if base == "pod" {
            format!("iam_endpoint = \"http://{gw}\"\n")
        } else {
            String::new()
        };
        format!(
            "[credentials.c]\ntype = \"{kind}\"\nsource = \"assume_agency\"\nbase = \"{base}\"\ndomain_name = \"partner\"\nagency_name = \"modelarts-invoke\"\n{project}{iam}"
        )
    };
    let bases = format!(
        "[credentials.fed]\n{}\n[credentials.pod]\n{}\n",
        oidc_table(gw, "aksk", &id_token_file),
        pod_table(gw, &sa_file, "")
    );
    for (kind, base, auth) in [
        ("token", "fed", "token"),
        ("aksk", "fed", "aksk"),
        ("aksk", "pod", "aksk"),
    ] {
        let proxy = start_proxy(&format!(
            "[[route]]\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"c\"\n{}{bases}",
            agency(kind, base)
        ))
        .await;
        let echoed = ok(&proxy).await;
        assert_eq!(echoed["auth"], auth, "{kind} with {base}: {echoed}");
    }
    assert_eq!(stats.assume_role_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_agency_the_partner_did_not_create_is_refused_with_iams_words() {
    let (gw, _stats) = gateway(|s| s.with_federation(federation(HOUR)).with_agency(agency())).await;
    let dir = files("no-agency");
    let id_token_file = dir.join("id-token");
    write(&id_token_file, ID_TOKEN);
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"c\"\n\
         [credentials.c]\ntype = \"aksk\"\nsource = \"assume_agency\"\nbase = \"fed\"\ndomain_name = \"partner\"\nagency_name = \"no-such-agency\"\nmax_wait = \"5s\"\n\
         [credentials.fed]\n{}",
        oidc_table(gw, "aksk", &id_token_file)
    ))
    .await;
    let (parts, bytes) = post(&proxy).await;
    assert_proxy_error(&parts, &bytes, 503, "credentials_unavailable");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(
            "IAM refused temporary AK/SK for the agency no-such-agency of account partner: HTTP 403"
        ),
        "{text}"
    );
}

/// The binary with no config and no key: `run --upstream URL` in a pod that
/// CCE set up for Pod Identity (the two variables) serves signed requests,
/// and logs which source `auto` chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_no_credentials_configured_uses_pod_identity() {
    use common::process::*;
    let (gw, stats) = gateway(|s| s.with_pod_identity(pod_identity(HOUR, false))).await;
    let dir = files("auto");
    let token_file = dir.join("token");
    write(&token_file, SA_TOKEN);
    let mut run = cmd(&dir);
    run.env(
        "HC_CONTAINER_CREDENTIALS_FULL_URI",
        format!("http://{gw}{POD_IDENTITY_PATH}"),
    )
    .env("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
    .args([
        "run",
        "--upstream",
        &format!("http://{gw}/v1/infers/svc"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let (mut child, _out, err) = spawn(run);
    let (listen, logs) = tokio::task::spawn_blocking(move || {
        let mut logs = Vec::new();
        let listen = wait_for(&err, "listening on http://", &mut logs);
        wait_for(&err, "route / -> ", &mut logs);
        (listen, logs)
    })
    .await
    .unwrap();
    let (parts, bytes) = get(&format!("http://{}/", addr(&listen))).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(stats.pod_identity_calls.load(Ordering::SeqCst), 1);
    assert!(terminate(&mut child).success());
    let logs = logs.join("\n");
    assert!(
        logs.contains("(auto: CCE Pod Identity (HC_CONTAINER_CREDENTIALS_FULL_URI))"),
        "{logs}"
    );
}

/// `check --online` names the source, the AK's first 4 characters and the
/// expiry; `token` prints an OIDC credential's project token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_and_token_show_keyless_credentials() {
    use common::process::*;
    let (gw, stats) = gateway(|s| {
        s.with_pod_identity(pod_identity(HOUR, false))
            .with_federation(federation(HOUR))
    })
    .await;
    let dir = files("check");
    let (sa_file, id_file) = (dir.join("sa"), dir.join("id"));
    write(&sa_file, SA_TOKEN);
    write(&id_file, ID_TOKEN);
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"c\"\n[[route]]\nprefix = \"/t\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"t\"\n\
             [credentials.c]\n{}\n[credentials.t]\n{}",
            pod_table(gw, &sa_file, ""),
            oidc_table(gw, "token", &id_file)
        ),
    )
    .unwrap();
    // Blocking on the child is fine: the stand-in serves from the other worker thread.
    let out = cmd(&dir)
        .args(["check", "--online", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued = stats
        .issued_credentials
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    let prefix: String = issued.access_key.chars().take(4).collect();
    assert!(
        stdout.contains(&format!(
            "online: [credentials.c]: ok, temporary AK/SK {prefix}… valid until "
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "(from temporary AK/SK from CCE Pod Identity http://{gw}"
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&issued.access_key),
        "only the first 4 characters: {stdout}"
    );
    assert!(
        stdout.contains("online: [credentials.t]: ok, IAM token valid until "),
        "{stdout}"
    );

    let out = cmd(&dir)
        .args(["token", "--credentials", "t", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.starts_with("MII"), "{printed}");
}

/// Every keyless flow, its failures and its refreshes at trace level: no
/// service-account token, id token, IAM token, temporary SK or security
/// token appears in the logs or in any answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keyless_secret_reaches_the_logs_even_at_trace_level() {
    use common::process::*;
    let (gw, stats) = gateway(|s| {
        s.with_pod_identity(pod_identity(Duration::from_secs(3), false))
            .with_federation(federation(HOUR))
            .with_agency(agency())
    })
    .await;
    let dir = files("leak");
    let (sa_file, id_file, bad_file) = (dir.join("sa"), dir.join("id"), dir.join("bad"));
    write(&sa_file, SA_TOKEN);
    write(&id_file, ID_TOKEN);
    write(&bad_file, "eyJ.bad-token-never-log-me.sig");
    let config = dir.join("proxy.toml");
    let route = |prefix: &str, creds: &str| {
        format!(
            "[[route]]\nprefix = \"{prefix}\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"{creds}\"\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "{}{}{}{}{}{}\
             [credentials.pod]\n{}\n[credentials.fed]\n{}\n[credentials.tok]\n{}\n\
             [credentials.partner]\ntype = \"aksk\"\nsource = \"assume_agency\"\nbase = \"tok\"\ndomain_name = \"partner\"\nagency_name = \"modelarts-invoke\"\n\
             [credentials.badpod]\n{}\n[credentials.badfed]\n{}max_wait = \"2s\"\n",
            route("/pod", "pod"),
            route("/fed", "fed"),
            route("/tok", "tok"),
            route("/partner", "partner"),
            route("/badpod", "badpod"),
            route("/badfed", "badfed"),
            pod_table(gw, &sa_file, "refresh_margin = \"1s\""),
            oidc_table(gw, "aksk", &id_file),
            oidc_table(gw, "token", &id_file),
            pod_table(gw, &bad_file, "max_wait = \"2s\""),
            oidc_table(gw, "aksk", &bad_file),
        ),
    )
    .unwrap();
    let mut run = cmd(&dir);
    run.env("RUST_LOG", "trace")
        .args(["run", "-c"])
        .arg(&config);
    let (mut child, _out, err) = spawn(run);
    let (listen, err, mut logs) = tokio::task::spawn_blocking(move || {
        let mut logs = Vec::new();
        let listen = wait_for(&err, "listening on http://", &mut logs);
        (listen, err, logs)
    })
    .await
    .unwrap();
    let proxy = addr(&listen);
    let mut answers = Vec::new();
    for (path, want) in [
        ("/pod", 200),
        ("/fed", 200),
        ("/tok", 200),
        ("/partner", 200),
        ("/badpod", 503),
        ("/badfed", 503),
    ] {
        let (parts, bytes) = get(&format!("http://{proxy}{path}")).await;
        assert_eq!(
            parts.status.as_u16(),
            want,
            "{path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        answers.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    // A refresh or two of the 3-second Pod Identity keys happens at trace level too.
    let calls = stats.pod_identity_calls.load(Ordering::SeqCst);
    while stats.pod_identity_calls.load(Ordering::SeqCst) < calls + 2 {
        let (parts, _) = get(&format!("http://{proxy}/pod")).await;
        assert_eq!(parts.status, 200);
        tokio::task::yield_now().await;
    }
    assert!(terminate(&mut child).success());
    logs.extend(err.iter());
    let text = format!("{}\n{}", logs.join("\n"), answers.join("\n"));
    let mut secrets: Vec<String> = vec![
        SA_TOKEN.into(),
        ID_TOKEN.into(),
        "bad-token-never-log-me".into(),
    ];
    for k in stats.issued_credentials.lock().unwrap().iter() {
        secrets.push(k.secret_key.expose().to_owned());
        secrets.push(k.security_token.as_ref().unwrap().expose().to_owned());
    }
    for t in stats.issued_tokens.lock().unwrap().iter() {
        // Tokens are long; any 40 characters of one would be a leak.
        secrets.push(t.expose().chars().skip(8).take(40).collect());
    }
    assert!(
        secrets.len() > 8,
        "the flows issued credentials: {}",
        secrets.len()
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into the logs or an answer"
        );
    }
    assert!(
        text.contains("TRACE") || text.contains("trace"),
        "the logs are at trace level"
    );
}

const STS_AK: &str = "STSAKEXAMPLE0000001";
const STS_SK: &str = "sts-SK-never-log-me";
const STS_TOKEN: &str = "sts-SECURITY-token-never-log-me";

/// IAM5 STS as its API reference describes it, checking what it receives,
/// and a service that accepts only its key with its security token.
async fn sts_and_service() -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = upstream(move |req| {
        let log = log.clone();
        async move {
            use http_body_util::BodyExt;
            let (parts, incoming) = req.into_parts();
            let bytes = incoming.collect().await.unwrap().to_bytes();
            if parts.uri.path() == "/v5/agencies/assume-with-oidc" {
                let asked: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let unsigned = !parts.headers.contains_key("authorization");
                log.lock().unwrap().push(asked.clone());
                if !unsigned || parts.method != "POST" || asked["id_token"] != ID_TOKEN {
                    return text_response(400, r#"{"error_code":"STS.0001","error_msg":"invalid request"}"#);
                }
                let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S%.3fZ");
                let answer = serde_json::json!({
                    "source_identity": "x",
                    "assumed_agency": {"urn": "sts::01:assumed-agency:a/s", "id": "i"},
                    "credentials": {"access_key_id": STS_AK, "secret_access_key": STS_SK, "security_token": STS_TOKEN, "expiration": expires.to_string()},
                });
                return text_response(200, &answer.to_string());
            }
            let key = modelarts_proxy::signer::AkSk {
                access_key: STS_AK.into(),
                secret_key: Secret::new(STS_SK),
                security_token: Some(Secret::new(STS_TOKEN)),
            };
            let signed = modelarts_proxy::signer::verify::verify(
                &parts.method,
                &parts.uri,
                &parts.headers,
                &bytes,
                |ak| (ak == STS_AK).then(|| key.clone()),
                chrono::Utc::now(),
                chrono::Duration::minutes(15),
            )
            .is_ok();
            let token_ok = parts.headers.get("x-security-token").is_some_and(|t| t == STS_TOKEN);
            if signed && token_ok {
                text_response(200, "signed with the agency's keys")
            } else {
                text_response(401, r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information"}"#)
            }
        }
    })
    .await;
    (addr, seen)
}

#[tokio::test]
async fn sts_assumes_an_agency_with_the_id_token_alone() {
    let (sts, seen) = sts_and_service().await;
    let dir = files("sts");
    let id_token_file = dir.join("id-token");
    write(&id_token_file, ID_TOKEN);
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{sts}/v1/infers/svc\"\ncredentials = \"c\"\n[credentials.c]\ntype = \"aksk\"\nsource = \"assume_agency_with_oidc\"\n\
         sts_endpoint = \"http://{sts}\"\nprovider_urn = \"iam::01:oidcProvider:cluster\"\nagency_urn = \"iam::01:agency:invoke\"\nid_token_file = \"{}\"\nduration = \"2h\"\n",
        id_token_file.display()
    ))
    .await;
    let (parts, bytes) = post(&proxy).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let asked = seen.lock().unwrap()[0].clone();
    assert_eq!(asked["provider_urn"], "iam::01:oidcProvider:cluster");
    assert_eq!(asked["agency_urn"], "iam::01:agency:invoke");
    assert_eq!(asked["agency_session_name"], "modelarts-proxy");
    assert_eq!(asked["duration_seconds"], 7200);
}

#[tokio::test]
async fn an_outage_of_pod_identity_keeps_the_keys_it_gave() {
    let (gw, stats) = gateway(|s| s.with_pod_identity(pod_identity(HOUR, false))).await;
    let dir = files("outage");
    let token_file = dir.join("token");
    write(&token_file, SA_TOKEN);
    let proxy = proxy(gw, &pod_table(gw, &token_file, "")).await;
    ok(&proxy).await;
    stats.pod_identity_down.store(true, Ordering::SeqCst);
    let c = temporary(&proxy);
    let mut changes = c.subscribe();
    c.retry_now();
    tokio::time::timeout(TEST_DEADLINE, changes.changed())
        .await
        .unwrap()
        .unwrap();
    let error = c.last_error().expect("the refresh failed");
    assert!(
        error.message.contains("answered HTTP 503"),
        "{}",
        error.message
    );
    ok(&proxy).await;
    assert_eq!(stats.pod_identity_calls.load(Ordering::SeqCst), 2);
}

/// `type = "app"`: an APIG App's AppKey and AppSecret sign as an AK/SK does.
#[tokio::test]
async fn an_app_signs_with_its_app_key_and_secret() {
    let (gw, _stats) = gateway(|s| s).await;
    let proxy = proxy(
        gw,
        "type = \"app\"\napp_key = { env = \"TEST_AK\" }\napp_secret = { env = \"TEST_SK\" }",
    )
    .await;
    let echoed = ok(&proxy).await;
    assert_eq!(echoed["auth"], "aksk", "{echoed}");
    assert!(
        echoed["headers"]["authorization"]
            .as_str()
            .unwrap()
            .contains(&format!("Access={AK},"))
    );
}

/// A signature the gateway rejected is not mended by new keys: the request
/// is not replayed with them (one send), though new keys are asked for.
#[tokio::test]
async fn a_rejected_signature_is_not_replayed_with_new_keys() {
    let (gw, _stats) = gateway(|s| s.with_pod_identity(pod_identity(HOUR, false))).await;
    let sends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sends.clone();
    let rejecting = upstream(move |_req| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            text_response(
                401,
                r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail","request_id":"r1"}"#,
            )
        }
    })
    .await;
    let dir = files("rejected");
    let token_file = dir.join("token");
    write(&token_file, SA_TOKEN);
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{rejecting}/v1\"\ncredentials = \"c\"\n[credentials.c]\n{}\n",
        pod_table(gw, &token_file, "")
    ))
    .await;
    let (parts, _) = post(&proxy).await;
    assert_eq!(parts.status, 401);
    assert_eq!(sends.load(Ordering::SeqCst), 1, "not replayed");
}

/// An agency assumed with an unchanged long-lived AK/SK keeps its keys
/// through a reload: no new call to IAM (which is down), no failed request.
#[tokio::test]
async fn a_reload_keeps_an_agency_whose_key_did_not_change() {
    let (gw, stats) = gateway(|s| s.with_agency(agency())).await;
    let dir = files("agency-reload");
    write(&dir.join("ak"), AK);
    write(&dir.join("sk"), SK);
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"c\"\n\
             [credentials.c]\ntype = \"aksk\"\nsource = \"assume_agency\"\nbase = \"key\"\ndomain_name = \"partner\"\n\
             agency_name = \"modelarts-invoke\"\niam_endpoint = \"http://{gw}\"\nmax_wait = \"2s\"\n\
             [credentials.key]\ntype = \"aksk\"\naccess_key = {{ file = \"{}\" }}\nsecret_key = {{ file = \"{}\" }}\n",
            dir.join("ak").display(),
            dir.join("sk").display()
        ),
    )
    .unwrap();
    let proxy = start_proxy(&std::fs::read_to_string(&config).unwrap()).await;
    ok(&proxy).await;
    assert_eq!(stats.assume_role_calls.load(Ordering::SeqCst), 1);
    stats.iam_down.store(true, Ordering::SeqCst);
    assert!(modelarts_proxy::cli::reload(&proxy.shared, &config));
    ok(&proxy).await;
    assert_eq!(
        stats.assume_role_calls.load(Ordering::SeqCst),
        1,
        "kept, not fetched again"
    );
}
