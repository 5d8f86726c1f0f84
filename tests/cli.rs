//! The binary as users run it: exit codes, `check`, `run` flags, `dev`, and
//! a full run at trace level whose logs and responses must never contain a
//! secret.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;

use common::process::*;
use common::*;
const TOKEN: &str = "sts-TOKEN-Qw8-never-log-me";
const PASSWORD: &str = "iam-PASSWORD-never-log-me";
const APP_CODE: &str = "app-CODE-never-log-me-0123456789";
const PROXY_KEY: &str = "proxy-KEY-shared-never-log-me";

/// Writes `dir/{name}.toml`: one route to `{iam}{path}` with token credentials
/// for alice at the stand-in IAM `iam`, her password in `TEST_PASSWORD`.
fn token_config(
    dir: &std::path::Path,
    name: &str,
    iam: std::net::SocketAddr,
    path: &str,
) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[[route]]\nupstream = \"http://{iam}{path}\"\ncredentials = \"iam\"\n[credentials.iam]\ntype = \"token\"\n\
             iam_endpoint = \"http://{iam}\"\nuser = \"alice\"\npassword = {{ env = \"TEST_PASSWORD\" }}\ndomain = \"acme\"\nproject = \"cn-north-4\"\n"
        ),
    )
    .unwrap();
    config
}

/// The stand-in IAM's user alice (domain acme, project cn-north-4).
fn iam() -> modelarts_proxy::dev::StandInIam {
    modelarts_proxy::dev::StandInIam {
        user: "alice".into(),
        password: modelarts_proxy::secret::Secret::new(PASSWORD),
        domain: "acme".into(),
        project: "cn-north-4".into(),
        project_id: "0a1b2c3d".into(),
        token_lifetime: std::time::Duration::from_secs(3600),
        token_size: 8192,
    }
}

#[test]
fn check_reports_every_error_with_its_key_path_and_exits_78() {
    let dir = temp_dir("check-bad");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"0.0.0.0:8080\"\ntimeout = \"forever\"\n[[route]]\nupstream = \"https://h/\"\ncredentials = \"nope\"\n",
    )
    .unwrap();
    let out = cmd(&dir)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "error: route[0].credentials: no [credentials.nope] table",
        "error: server.listen: 0.0.0.0:8080 is not a loopback address",
        "error: server.timeout: invalid duration \"forever\"",
        "3 error(s) in ",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_accepts_a_good_config_and_summarises_routes() {
    let dir = temp_dir("check-good");
    let config = dir.join("good.toml");
    std::fs::write(
        &config,
        format!("[[route]]\nupstream = \"https://h.example.com/v1/infers/x\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"),
    )
    .unwrap();
    let out = cmd(&dir)
        .env("TEST_AK", AK)
        .env("TEST_SK", SK)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("route / -> https://h.example.com/v1/infers/x ([credentials.test] AK/SK from config keys, payload auto)"), "{stdout}");
    assert!(!stdout.contains(SK));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_64_and_config_errors_78() {
    let dir = temp_dir("usage");
    let out = cmd(&dir).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("run needs a config file (-c FILE) or an upstream (--upstream URL)")
    );
    let out = cmd(&dir).args(["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));

    let out = cmd(&dir)
        .args([
            "run",
            "--upstream",
            "https://h/",
            "--listen",
            "0.0.0.0:8080",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: --listen: 0.0.0.0:8080 is not a loopback address"),
        "{stderr}"
    );
    // No key is not an error: `--auth aksk` is source = "auto", which ends
    // at the ECS metadata service (tests/identity.rs runs the chain).
    assert!(!stderr.contains("HUAWEICLOUD_SDK_AK"), "{stderr}");

    // --auth token names each environment variable that is missing.
    let out = cmd(&dir)
        .env("HUAWEICLOUD_IAM_USER", "alice")
        .args(["run", "--auth", "token", "--upstream", "https://h/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "error: --auth: set HUAWEICLOUD_IAM_DOMAIN",
        "error: --auth: environment variable HUAWEICLOUD_IAM_PASSWORD is not set",
        "error: --auth: set HUAWEICLOUD_SDK_IAM_ENDPOINT (or HUAWEICLOUD_SDK_REGION)",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `NAME='value'` lines of a dev `--env-file`, as a map.
fn env_file(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

/// The `http://ADDR` after `label` in the dev banner.
fn banner_addr(out: &mpsc::Receiver<String>, label: &str, seen: &mut Vec<String>) -> String {
    let line = wait_for(out, label, seen);
    line.split("http://")
        .nth(1)
        .unwrap()
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_the_whole_flow_with_no_cloud_account() {
    let dir = temp_dir("dev");
    let envs = dir.join("dev.env");
    let mut c = cmd(&dir);
    c.args([
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--env-file",
    ])
    .arg(&envs);
    let (mut child, out, _err) = spawn(c);
    let (addr, admin) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let addr = banner_addr(&out, "proxy:", &mut seen);
        let admin = banner_addr(&out, "admin:", &mut seen);
        (addr, admin)
    })
    .await
    .unwrap();
    let req = request("POST", &format!("http://{addr}/"))
        .header("content-type", "application/json")
        .body(body("{\"prompt\":\"hello\"}"))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["verified"], true);
    assert_eq!(
        &get(&format!("http://{admin}/healthz")).await.1[..],
        b"ok\n"
    );

    // Server-sent events, one by one, through the proxy.
    let req = request("POST", &format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body("{\"stream\":true}"))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = resp.into_body();
    let mut frames = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut events).await {
        if frame.unwrap().into_data().is_ok() {
            frames += 1;
        }
    }
    assert!(
        frames >= 7,
        "five events, the usage (stream_usage asked for it) and [DONE], each in its own frame: {frames}"
    );
    // The usage the stand-in reported is counted for the model.
    let (_, metrics) = get(&format!("http://{admin}/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            "modelarts_proxy_model_tokens_total{route=\"/\",model=\"dev-model\",kind=\"completion\"} 5"
        ),
        "{metrics}"
    );

    // The env file: secrets, owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&envs).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let vars = env_file(&envs);
    for name in [
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "APIG_APP_CODE",
        "HUAWEICLOUD_IAM_USER",
        "HUAWEICLOUD_IAM_PASSWORD",
        "HUAWEICLOUD_IAM_DOMAIN",
        "HUAWEICLOUD_IAM_PROJECT",
        "HUAWEICLOUD_SDK_IAM_ENDPOINT",
        "MODELARTS_DEV_SERVICE_URL",
    ] {
        assert!(
            vars.get(name).is_some_and(|v| !v.is_empty()),
            "no {name} in {vars:?}"
        );
    }
    let service = vars["MODELARTS_DEV_SERVICE_URL"].clone();
    let with_env = |c: &mut Command| {
        for (k, v) in &vars {
            c.env(k, v);
        }
    };

    // sign: its curl command, run as printed, is accepted by the stand-in.
    let mut sign = cmd(&dir);
    with_env(&mut sign);
    let out = sign
        .args(["sign", "-X", "POST", "-d", "{\"a\":1}", &service])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curl = String::from_utf8(out.stdout).unwrap();
    let answer = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    let answer = String::from_utf8_lossy(&answer.stdout);
    assert!(answer.contains("\"verified\":true"), "{curl}\n{answer}");

    // token: a token from the stand-in IAM.
    let mut token = cmd(&dir);
    with_env(&mut token);
    let out = token.arg("token").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("MII"));

    // check --online, with a config naming the stand-in.
    let config = dir.join("dev.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\nupstream = \"{service}\"\ncredentials = \"demo\"\n[credentials.demo]\ntype = \"aksk\"\nsource = \"env\"\n"
        ),
    )
    .unwrap();
    let mut check = cmd(&dir);
    with_env(&mut check);
    let out = check
        .args(["check", "--online", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // run: a second proxy from the environment alone.
    let mut run = cmd(&dir);
    with_env(&mut run);
    run.args(["run", "--upstream", &service, "--listen", "127.0.0.1:0"]);
    let (mut second, _out, err) = spawn(run);
    let line = tokio::task::spawn_blocking(move || {
        wait_for(&err, "listening on http://", &mut Vec::new())
    })
    .await
    .unwrap();
    let second_addr = line.split("http://").nth(1).unwrap().trim().to_owned();
    let (parts, bytes) = get(&format!("http://{second_addr}/")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(terminate(&mut second).success());
    assert!(terminate(&mut child).success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_responses_even_at_trace_level() {
    let dir = temp_dir("leak");
    let stand_in =
        modelarts_proxy::dev::StandIn::new(vec![key()], std::sync::Arc::new(chrono::Utc::now))
            .with_iam(iam())
            .with_app_codes(vec![modelarts_proxy::secret::Secret::new(APP_CODE)]);
    let stats = stand_in.stats();
    let upstream = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let sk_file = dir.join("sk");
    std::fs::write(&sk_file, format!("{SK}\n")).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
require_header = {{ name = "X-Proxy-Key", value = {{ env = "TEST_PROXY_KEY" }} }}
[[route]]
prefix = "/"
upstream = "http://{upstream}/v1/infers/svc"
credentials = "main"
[[route]]
prefix = "/down"
upstream = "http://{closed}/"
credentials = "main"
[[route]]
prefix = "/small"
upstream = "http://{upstream}/"
credentials = "main"
max_body = "16B"
[[route]]
prefix = "/wrong"
upstream = "http://{upstream}/"
credentials = "literal"
[credentials.main]
type = "aksk"
access_key = {{ env = "TEST_AK" }}
secret_key = {{ file = "{}" }}
security_token = {{ env = "TEST_TOKEN" }}
[[route]]
prefix = "/tok"
upstream = "http://{upstream}/"
credentials = "iam"
[[route]]
prefix = "/key"
upstream = "http://{upstream}/"
credentials = "appcode"
[credentials.iam]
type = "token"
iam_endpoint = "http://{upstream}"
user = "alice"
password = {{ env = "TEST_PASSWORD" }}
domain = "acme"
project = "cn-north-4"
[credentials.appcode]
type = "apikey"
app_code = {{ env = "TEST_APP_CODE" }}
[credentials.literal]
type = "aksk"
access_key = "{AK}"
secret_key = "{SK}-but-wrong"
security_token = {{ env = "TEST_TOKEN" }}
"#,
            sk_file.display()
        ),
    )
    .unwrap();
    let mut c = cmd(&dir);
    c.env("TEST_AK", AK)
        .env("TEST_TOKEN", TOKEN)
        .env("TEST_PASSWORD", PASSWORD)
        .env("TEST_APP_CODE", APP_CODE)
        .env("TEST_PROXY_KEY", PROXY_KEY)
        .env("RUST_LOG", "trace")
        .args(["run", "-c"])
        .arg(&config);
    let (mut child, _out, err) = spawn(c);
    let (listen, admin, err, mut logs) = tokio::task::spawn_blocking(move || {
        let mut logs = Vec::new();
        let listen = wait_for(&err, "listening on http://", &mut logs);
        let admin = wait_for(&err, "admin endpoints on http://", &mut logs);
        (listen, admin, err, logs)
    })
    .await
    .unwrap();
    let (proxy, admin) = (addr(&listen), addr(&admin));

    let mut bodies = Vec::new();
    let cases = [
        ("POST", "/predict", "application/json", 200),
        ("PUT", "/file", "application/octet-stream", 200),
        ("GET", "/down", "", 502),
        ("POST", "/small", "application/json", 413),
        ("GET", "/wrong", "", 401),
        ("POST", "/tok", "application/json", 200),
        ("GET", "/key", "", 200),
        ("GET", "/no-proxy-key", "", 403),
    ];
    for (method, path, ct, want) in cases {
        let mut req = request(method, &format!("http://{proxy}{path}"))
            .header("authorization", format!("Bearer {SK}"));
        if want != 403 {
            req = req.header("x-proxy-key", PROXY_KEY);
        }
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let (parts, bytes) =
            send(req.body(body("{\"input\":\"0123456789abcdef\"}")).unwrap()).await;
        assert_eq!(
            parts.status.as_u16(),
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        bodies.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let echoed = serde_json::from_str::<serde_json::Value>(&bodies[0]).unwrap();
    assert_eq!(
        echoed["headers"]["x-security-token"], "** redacted **",
        "the token was sent (and the stand-in redacts it)"
    );
    bodies.push(
        String::from_utf8_lossy(&get(&format!("http://{admin}/metrics")).await.1).into_owned(),
    );

    assert!(
        terminate(&mut child).success(),
        "the daemon exits 0 on SIGTERM"
    );
    logs.extend(err.iter());
    let logs = logs.join("\n");
    assert!(
        logs.contains("modelarts_proxy::access"),
        "access log lines are written"
    );
    assert!(
        logs.contains("TRACE"),
        "trace-level logging was on, so the search below means something"
    );
    let iam_token = stats.last_token().expect("IAM issued a token");
    for secret in [SK, TOKEN, PASSWORD, APP_CODE, PROXY_KEY, iam_token.expose()] {
        assert!(!logs.contains(secret), "a secret reached the logs");
        for b in &bodies {
            assert!(!b.contains(secret), "a secret reached a response body: {b}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_sends_one_signed_request_per_route_and_reports_the_verdict() {
    let dir = temp_dir("online");
    let upstream = stand_in().await;
    let config = dir.join("online.toml");
    std::fs::write(
        &config,
        format!("[[route]]\nupstream = \"http://{upstream}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"),
    )
    .unwrap();
    // Blocking on the child is fine: the stand-in serves from the other worker thread.
    let check = |sk: &str| {
        cmd(&dir)
            .env("TEST_AK", AK)
            .env("TEST_SK", sk)
            .args(["check", "--online", "-c"])
            .arg(&config)
            .output()
            .unwrap()
    };

    let out = check(SK);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("online: route /: ok, the upstream answered HTTP 200"),
        "{stdout}"
    );

    let out = check("a-wrong-secret");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("online: route /: FAILED, HTTP 401") && stderr.contains("APIG.0301"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_a_valid_token_and_explains_a_wrong_password() {
    let dir = temp_dir("token");
    let stand_in =
        modelarts_proxy::dev::StandIn::new(vec![key()], std::sync::Arc::new(chrono::Utc::now))
            .with_iam(iam());
    let stats = stand_in.stats();
    let iam_addr = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = token_config(&dir, "token", iam_addr, "/");
    // Blocking on the child is fine: the stand-in serves from the other worker thread.
    let out = cmd(&dir)
        .env("TEST_PASSWORD", PASSWORD)
        .args(["token", "-c"])
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
    assert_eq!(printed.trim_end(), stats.last_token().unwrap().expose());
    assert_eq!(printed.trim_end().len(), 8192);

    let out = cmd(&dir)
        .env("TEST_PASSWORD", "wrong")
        .args(["token", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: IAM refused a token for user alice in domain acme, project cn-north-4: HTTP 401: The username or password is wrong."),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong\n") && !stderr.contains(PASSWORD));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_fetches_a_token_and_reports_the_exact_failure() {
    let dir = temp_dir("online-token");
    let stand_in =
        modelarts_proxy::dev::StandIn::new(vec![key()], std::sync::Arc::new(chrono::Utc::now))
            .with_iam(iam());
    let gw = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = token_config(&dir, "online", gw, "/v1/infers/svc");
    // Blocking on the child is fine: the stand-in serves from the other worker thread.
    let check = |password: &str| {
        cmd(&dir)
            .env("TEST_PASSWORD", password)
            .args(["check", "--online", "-c"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check(PASSWORD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("online: [credentials.iam]: ok, IAM token valid until "),
        "{stdout}"
    );
    assert!(
        stdout.contains("online: route /: ok, the upstream answered HTTP 200"),
        "{stdout}"
    );

    let started = std::time::Instant::now();
    let out = check("wrong-password");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "online: [credentials.iam]: FAILED: IAM refused a token for user alice in domain acme, project cn-north-4: \
             HTTP 401: The username or password is wrong."
        ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "reported without waiting out max_wait"
    );
    assert!(!stderr.contains("wrong-password"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends `signal` (e.g. "-INT") to the child.
fn signal(child: &Child, signal: &str) {
    Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

#[test]
fn max_connections_is_lowered_to_fit_a_small_open_file_limit() {
    let dir = temp_dir("nofile");
    let mut c = Command::new("sh");
    c.env_clear()
        .env("HOME", &dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "-c",
            &format!(
                "ulimit -n 200 && exec {BIN} run --auth none --upstream http://127.0.0.1:9/ --listen 127.0.0.1:0"
            ),
        ]);
    let (mut child, _out, err) = spawn(c);
    let mut seen = Vec::new();
    // (200 - 64 reserved) / 2: each client connection may need an upstream one.
    let line = wait_for(&err, "server.max_connections lowered", &mut seen);
    assert!(line.contains("from 4096 to 68"), "{line}");
    wait_for(&err, "listening on http://", &mut seen);
    assert!(terminate(&mut child).success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once_with_status_0() {
    let dir = temp_dir("second-signal");
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = arrived.clone();
    let hanging = upstream(move |_req| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { std::future::pending().await }
    })
    .await;
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"120s\"\ntimeout = \"120s\"\n[[route]]\nupstream = \"http://{hanging}/\"\n"
        ),
    )
    .unwrap();
    let mut c = cmd(&dir);
    c.args(["run", "-c", config.to_str().unwrap()]);
    let (mut child, _out, err) = spawn(c);
    let mut seen = Vec::new();
    let line = wait_for(&err, "listening on http://", &mut seen);
    let addr = line.split("http://").nth(1).unwrap().trim().to_owned();
    let in_flight = tokio::spawn(
        client().request(
            request("GET", &format!("http://{addr}/slow"))
                .body(body(""))
                .unwrap(),
        ),
    );
    eventually("the request reached the upstream", || {
        arrived.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    signal(&child, "-TERM");
    let (err, mut seen) = tokio::task::spawn_blocking(move || {
        wait_for(&err, "draining", &mut seen);
        (err, seen)
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "exited without waiting out the 120 s grace"
    );
    while let Ok(line) = err.try_recv() {
        seen.push(line);
    }
    assert!(
        seen.iter().any(|l| l.contains("second stop signal")),
        "{}",
        seen.join("\n")
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut request's connection closed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An upstream that answers with the path it was asked for.
async fn path_echo() -> std::net::SocketAddr {
    upstream(|req| async move { text_response(200, req.uri().path()) }).await
}

fn one_route(dir: &std::path::Path, listen: &str, upstream: &str) -> PathBuf {
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = {listen}\n[[route]]\nupstream = \"{upstream}\"\n"),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_the_config_file_when_it_changes() {
    let dir = temp_dir("watch");
    let up = path_echo().await;
    let config = one_route(&dir, "\"127.0.0.1:0\"", &format!("http://{up}/one"));
    let mut c = cmd(&dir);
    c.args(["run", "--watch", "-c", config.to_str().unwrap()]);
    let (mut child, _out, err) = spawn(c);
    let mut seen = Vec::new();
    let line = wait_for(&err, "listening on http://", &mut seen);
    let addr = line.split("http://").nth(1).unwrap().trim().to_owned();
    assert_eq!(&get(&format!("http://{addr}/")).await.1[..], b"/one");
    one_route(&dir, "\"127.0.0.1:0\"", &format!("http://{up}/two"));
    let (err, mut seen) = tokio::task::spawn_blocking(move || {
        wait_for(&err, "reloaded", &mut seen);
        (err, seen)
    })
    .await
    .unwrap();
    assert_eq!(&get(&format!("http://{addr}/")).await.1[..], b"/two");
    // A broken edit keeps the working config.
    std::fs::write(&config, "[[route]]\nupstream = \"nope\"\n").unwrap();
    let err = tokio::task::spawn_blocking(move || {
        wait_for(&err, "keeps serving", &mut seen);
        err
    })
    .await
    .unwrap();
    assert_eq!(&get(&format!("http://{addr}/")).await.1[..], b"/two");
    drop(err);
    assert!(terminate(&mut child).success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_warns_that_listen_addresses_change_only_on_restart() {
    let dir = temp_dir("sighup");
    let up = path_echo().await;
    let config = one_route(&dir, "\"127.0.0.1:0\"", &format!("http://{up}/one"));
    let mut c = cmd(&dir);
    c.args(["run", "-c", config.to_str().unwrap()]);
    let (mut child, _out, err) = spawn(c);
    let mut seen = Vec::new();
    let line = wait_for(&err, "listening on http://", &mut seen);
    let addr = line.split("http://").nth(1).unwrap().trim().to_owned();
    one_route(
        &dir,
        "[\"127.0.0.1:0\", \"[::1]:0\"]",
        &format!("http://{up}/two"),
    );
    signal(&child, "-HUP");
    let (warned, err, mut seen) = tokio::task::spawn_blocking(move || {
        let warned = wait_for(&err, "listen addresses change only on restart", &mut seen);
        wait_for(&err, "reloaded", &mut seen);
        (warned, err, seen)
    })
    .await
    .unwrap();
    assert!(warned.contains("WARN"), "{warned}");
    assert_eq!(&get(&format!("http://{addr}/")).await.1[..], b"/two");
    seen.clear();
    drop(err);
    assert!(terminate(&mut child).success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_from_the_environment_alone_and_probes_itself() {
    let dir = temp_dir("container");
    let up = path_echo().await;
    let mut c = cmd(&dir);
    c.env("MODELARTS_PROXY_UPSTREAM", format!("http://{up}/x"))
        .env("MODELARTS_PROXY_AUTH", "none")
        .env("MODELARTS_PROXY_LISTEN", "127.0.0.1:0")
        .env("MODELARTS_PROXY_ADMIN_LISTEN", "127.0.0.1:0")
        .arg("run");
    let (mut child, _out, err) = spawn(c);
    let (listen, admin) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let listen = wait_for(&err, "listening on http://", &mut seen);
        let admin = wait_for(&err, "admin endpoints on http://", &mut seen);
        (listen, admin)
    })
    .await
    .unwrap();
    assert_eq!(
        &get(&format!("http://{}/", addr(&listen))).await.1[..],
        b"/x"
    );
    let probe = |url: String| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || cmd(&dir).args(["probe", &url]).output().unwrap())
    };
    let ok = probe(format!("http://{}/healthz", addr(&admin)))
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let down = probe(format!("http://{closed}/healthz")).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(terminate(&mut child).success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn token_without_a_config_names_the_missing_variables_not_a_flag() {
    let dir = temp_dir("token-env");
    let out = cmd(&dir)
        .env("HUAWEICLOUD_IAM_USER", "alice")
        .arg("token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("--auth"),
        "token has no --auth flag:\n{stderr}"
    );
    for want in [
        "error: set HUAWEICLOUD_IAM_DOMAIN",
        "error: environment variable HUAWEICLOUD_IAM_PASSWORD is not set",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_proxy_passwords_never_reach_logs_even_at_trace_level() {
    use base64::Engine;
    const EGRESS_PASSWORD: &str = "egress-PASS-never-log-me";
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{EGRESS_PASSWORD}"))
    );
    let dir = temp_dir("egress-leak");
    let pki = common::pki::pki(&["service.test"]);
    let tls = common::pki::tls_upstream(&pki, &[b"h2", b"http/1.1"], |_req| async {
        text_response(200, "tls via tunnel")
    })
    .await;
    let plain = stand_in().await;
    let tunnel = common::egress::egress_proxy(tls.addr, Some(basic.clone())).await;
    let forward = common::egress::egress_proxy(plain, Some(basic.clone())).await;
    let ca = pki.ca_file("egress-leak");
    let config = dir.join("egress.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream_tls]\nca_file = \"{}\"\n\
             [[route]]\nprefix = \"/tls\"\nupstream = \"https://service.test:{}/\"\n\
             [[route]]\nprefix = \"/plain\"\nupstream = \"http://plain.test:{}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}",
            ca.display(),
            tls.addr.port(),
            plain.port()
        ),
    )
    .unwrap();
    let with_env = |mut c: Command| {
        c.env("TEST_AK", AK)
            .env("TEST_SK", SK)
            .env("RUST_LOG", "trace")
            .env(
                "HTTPS_PROXY",
                format!("http://alice:{EGRESS_PASSWORD}@{}", tunnel.addr),
            )
            .env(
                "http_proxy",
                format!("http://alice:{EGRESS_PASSWORD}@{}", forward.addr),
            );
        c
    };
    let mut check = with_env(cmd(&dir));
    let checked = check.args(["check", "-c"]).arg(&config).output().unwrap();
    let mut output = String::from_utf8_lossy(&checked.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success(), "{output}");
    assert!(
        output.contains(&format!(
            "egress: https via {} with basic auth",
            tunnel.addr
        )),
        "{output}"
    );
    assert!(output.contains("traces: off"), "{output}");

    let mut run = with_env(cmd(&dir));
    run.args(["run", "-c"]).arg(&config);
    let (mut child, _out, err) = spawn(run);
    let (listen, err, mut logs) = tokio::task::spawn_blocking(move || {
        let mut logs = Vec::new();
        let listen = wait_for(&err, "listening on http://", &mut logs);
        (listen, err, logs)
    })
    .await
    .unwrap();
    let proxy = listen.split("http://").nth(1).unwrap().trim().to_owned();
    let (parts, bytes) = get(&format!("http://{proxy}/tls/x")).await;
    assert_eq!(
        (parts.status.as_u16(), &bytes[..]),
        (200, &b"tls via tunnel"[..])
    );
    let (parts, bytes) = get(&format!("http://{proxy}/plain/predict")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(!String::from_utf8_lossy(&bytes).contains(&basic[6..]));
    assert_eq!(tunnel.seen()[0].method, "CONNECT");
    assert_eq!(forward.seen()[0].method, "GET");

    assert!(terminate(&mut child).success());
    logs.extend(err.iter());
    let logs = logs.join("\n") + &output;
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(
        logs.contains("egress: https via"),
        "the egress line is logged"
    );
    for secret in [EGRESS_PASSWORD, &basic[6..]] {
        assert!(
            !logs.contains(secret),
            "the egress password reached the logs"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_says_where_traces_go() {
    let dir = temp_dir("check-traces");
    let config = token_config(&dir, "traces", "127.0.0.1:9".parse().unwrap(), "/v1");
    let out = cmd(&dir)
        .env("TEST_PASSWORD", PASSWORD)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "traces: to http://127.0.0.1:4318/v1/traces (sample ratio 1, service modelarts-proxy)"
        ),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
