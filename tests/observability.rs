//! What an operator sees: every metric DESIGN §9 names, with values that
//! follow the traffic, and JSON access logs (`--log-format json`) written
//! when each response body ends, read back line by line.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use modelarts_proxy::dev::{StandIn, StandInIam};
use modelarts_proxy::secret::Secret;

const BIN: &str = env!("CARGO_BIN_EXE_modelarts-proxy");

#[tokio::test]
async fn every_design_metric_is_exported_and_follows_the_traffic() {
    let lifetime = Duration::from_secs(3600);
    let stand_in = StandIn::new(vec![key()], Arc::new(chrono::Utc::now)).with_iam(StandInIam {
        user: "alice".into(),
        password: Secret::new("pw-observability"),
        domain: "acme".into(),
        project: "cn-north-4".into(),
        project_id: "0a1b".into(),
        token_lifetime: lifetime,
        token_size: 1024,
    });
    let gw = stand_in
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let proxy = start_proxy(&format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
[[route]]
prefix = "/"
upstream = "http://{gw}/v1/infers/svc"
credentials = "test"
[[route]]
prefix = "/tok"
upstream = "http://{gw}/v1/infers/svc"
credentials = "iam"
[credentials.iam]
type = "token"
iam_endpoint = "http://{gw}"
user = "alice"
password = "pw-observability"
domain = "acme"
project = "cn-north-4"
{TEST_CREDENTIALS}"#
    ))
    .await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(body("{\"input\":\"0123456789\"}"))
        .unwrap();
    let (parts, answer) = send(req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(get(&proxy.url("/tok")).await.0.status, 200);
    assert_eq!(get(&proxy.url("/../x")).await.0.status, 400);

    let text = String::from_utf8(
        get(&format!("http://{}/metrics", proxy.admin.unwrap()))
            .await
            .1
            .to_vec(),
    )
    .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("modelarts_proxy_requests_total{route=\"/\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("modelarts_proxy_requests_total{route=\"/tok\",status=\"200\"}"),
        1.0
    );
    // Refused before routing: counted under route "none".
    assert_eq!(
        value("modelarts_proxy_proxy_errors_total{route=\"none\",code=\"bad_request\"}"),
        1.0
    );
    assert_eq!(value("modelarts_proxy_requests_in_flight"), 0.0);
    assert!(value("modelarts_proxy_connections_open") <= 1.0);
    assert_eq!(value("modelarts_proxy_buffered_bytes"), 0.0);
    assert!(
        value("modelarts_proxy_clock_skew_seconds").abs() < 5.0,
        "measured from the stand-in's Date"
    );
    assert_eq!(
        value("modelarts_proxy_request_bytes_total{route=\"/\"}"),
        22.0
    );
    assert!(value("modelarts_proxy_response_bytes_total{route=\"/\"}") >= answer.len() as f64);
    assert_eq!(
        value("modelarts_proxy_request_duration_seconds_count{route=\"/\"}"),
        1.0
    );
    assert_eq!(
        value("modelarts_proxy_upstream_response_seconds_count{route=\"/\"}"),
        1.0
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&format!(
            "modelarts_proxy_build_info{{version=\"{version}\"}}"
        )),
        1.0
    );
    // The token fetch: one good refresh, and when the token expires.
    assert_eq!(
        value("modelarts_proxy_credential_refreshes_total{credentials=\"iam\",result=\"ok\"}"),
        1.0
    );
    let expiry = value("modelarts_proxy_credential_expiry_timestamp_seconds{credentials=\"iam\"}");
    let expected = (chrono::Utc::now() + lifetime).timestamp() as f64;
    assert!((expiry - expected).abs() < 60.0, "{expiry} vs {expected}");
    // A gateway error, counted by its code.
    let bad = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"bad\"\n[credentials.bad]\ntype = \"aksk\"\naccess_key = \"{AK}\"\nsecret_key = \"not-the-secret\"\n"
    ))
    .await;
    assert_eq!(get(&bad.url("/")).await.0.status, 401);
    assert_eq!(
        bad.metric("modelarts_proxy_gateway_errors_total{code=\"APIG.0301\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_logs_have_every_field_and_are_written_when_the_body_ends() {
    let apig = upstream(|req| async move {
        if req.uri().path() == "/denied" {
            let mut r = text_response(
                401,
                r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: decrypt token fail","request_id":"apig-json-id"}"#,
            );
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r
        } else {
            text_response(200, "fine")
        }
    })
    .await;
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--log-format",
            "json",
            "run",
            "--auth",
            "none",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--upstream")
        .arg(format!("http://{apig}/"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let next = |lines: &mut Vec<serde_json::Value>| {
        let line = rx.recv_timeout(TEST_DEADLINE).expect("a log line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        lines.push(v.clone());
        v
    };
    let addr = loop {
        let v = next(&mut lines);
        if let Some(rest) = v["fields"]["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("listening on http://"))
        {
            break rest.to_owned();
        }
    };
    let ok = request("POST", &format!("http://{addr}/ok"))
        .header("x-request-id", "json-1")
        .body(body("12345"))
        .unwrap();
    assert_eq!(send(ok).await.0.status, 200);
    assert_eq!(
        get(&format!("http://{addr}/denied?secret=query"))
            .await
            .0
            .status,
        401
    );
    let access: Vec<serde_json::Value> = std::iter::from_fn(|| Some(next(&mut lines)))
        .filter(|v| v["target"] == "modelarts_proxy::access")
        .take(2)
        .collect();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let first = &access[0]["fields"];
    assert_eq!(first["message"], "request");
    for (field, want) in [
        ("method", serde_json::json!("POST")),
        ("path", serde_json::json!("/ok")),
        ("route", serde_json::json!("/")),
        ("status", serde_json::json!(200)),
        ("outcome", serde_json::json!("complete")),
        ("bytes_in", serde_json::json!(5)),
        ("bytes_out", serde_json::json!(4)),
        ("request_id", serde_json::json!("json-1")),
        ("error", serde_json::json!("")),
    ] {
        assert_eq!(first[field], want, "{field} in {first}");
    }
    for field in ["head_ms", "total_ms"] {
        assert!(first[field].is_u64(), "{field} in {first}");
    }
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let second = &access[1]["fields"];
    assert_eq!(second["status"], 401);
    assert_eq!(second["path"], "/denied", "never the query");
    assert_eq!(second["gateway_request_id"], "apig-json-id");
    assert_eq!(second["request_id"].as_str().unwrap().len(), 32);
    // The gateway error is logged too, with its code and hint, as JSON.
    let warned = lines.iter().any(|v| {
        v["level"] == "WARN"
            && v["fields"]["code"] == "APIG.0301"
            && v["fields"]["gateway_request_id"] == "apig-json-id"
    });
    assert!(warned, "{lines:#?}");
    assert!(!lines.iter().any(|v| v.to_string().contains("secret=query")));
}
