//! The status page (DESIGN §13): `/status.json` and `/` on the admin
//! listener, under several states (a credential failing, a breaker open, a
//! target ejected, after gateway errors), never showing a secret.

mod common;

use common::*;

const PASSWORD: &str = "pw-STATUS-never-show-me";

/// Admin GET: status, headers, body.
async fn admin_get(proxy: &Proxy, path: &str) -> (http::response::Parts, String) {
    let (parts, body) = get(&format!("http://{}{path}", proxy.admin.unwrap())).await;
    (parts, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_status_shows_routes_credentials_breakers_and_gateway_errors_and_no_secret() {
    // A gateway that rejects every signature, as APIG does.
    let gw = upstream(|_req| async {
        text_response(
            401,
            r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail","request_id":"gw-req-7"}"#,
        )
    })
    .await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n\
         [[route]]\nprefix = \"/sig\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"test\"\nrate = \"50/s\"\n\
         [[route]]\nprefix = \"/two\"\nupstream = \"http://{dead}/v1\"\nretry = {{ attempts = 1, backoff = \"1ms\" }}\n\
         [[route.fallback]]\nupstream = \"http://{gw}/v2\"\n\
         {TEST_CREDENTIALS}\
         [credentials.iam]\ntype = \"token\"\niam_endpoint = \"http://{dead}\"\nuser = \"alice\"\npassword = \"{PASSWORD}\"\ndomain = \"acme\"\nproject = \"cn-north-4\"\n"
    ))
    .await;
    // Three rejected signatures open the breaker; five refused connections eject a target.
    for _ in 0..3 {
        let (parts, _) = send(
            request("POST", &proxy.url("/sig/x"))
                .header("x-request-id", "ours-123")
                .header("content-type", "application/json")
                .body(body("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, 401);
    }
    for _ in 0..5 {
        get(&proxy.url("/two/x")).await;
    }
    eventually("the IAM fetch failed once", || {
        proxy
            .shared
            .state
            .load()
            .readiness()
            .is_err_and(|r| r.iter().any(|r| r.contains("iam")))
    })
    .await;

    let (parts, text) = admin_get(&proxy, "/status.json").await;
    assert_eq!(parts.status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ready"], false, "{v:#}");
    let routes = v["routes"].as_array().unwrap();
    let sig = routes.iter().find(|r| r["prefix"] == "/sig").unwrap();
    assert_eq!(sig["rate_per_second"], 50.0);
    let two = routes.iter().find(|r| r["prefix"] == "/two").unwrap();
    assert_eq!(two["targets"][0]["up"], false, "ejected: {two:#}");
    assert_eq!(two["targets"][1]["up"], true);
    let creds = v["credentials"].as_array().unwrap();
    let test = creds.iter().find(|c| c["name"] == "test").unwrap();
    assert_eq!(
        (test["kind"].as_str(), test["ak_prefix"].as_str()),
        (Some("aksk"), Some("AKTE"))
    );
    assert_eq!(test["breaker_open"], true, "{test:#}");
    let iam = creds.iter().find(|c| c["name"] == "iam").unwrap();
    assert_eq!(iam["state"], "failing", "{iam:#}");
    assert!(iam["last_error"].as_str().is_some_and(|e| !e.is_empty()));
    // Three from /sig, five from /two's fallback (the same gateway), newest first.
    let errors = v["gateway_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 8);
    assert_eq!(errors[0]["route"], "/two");
    let sig_error = &errors[7];
    assert_eq!(sig_error["route"], "/sig");
    assert_eq!(sig_error["code"], "APIG.0301");
    assert_eq!(sig_error["request_id"], "ours-123");
    assert_eq!(sig_error["gateway_request_id"], "gw-req-7");
    assert!(
        sig_error["hint"]
            .as_str()
            .is_some_and(|h| h.contains("signature"))
    );

    let (parts, page) = admin_get(&proxy, "/").await;
    assert_eq!(parts.status, 200);
    assert!(
        parts.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        parts.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    for shown in [
        "/sig",
        "/two",
        "ejected",
        "AKTE…",
        "APIG.0301",
        "gw-req-7",
        "ours-123",
        "not ready",
        "open",
    ] {
        assert!(page.contains(shown), "{shown} missing from the page");
    }
    assert!(!page.contains("<script"), "no script");
    for secret in [SK, PASSWORD, AK] {
        assert!(!text.contains(secret), "{secret} in status.json");
        assert!(!page.contains(secret), "{secret} in the page");
    }
}
