//! Egress through a corporate HTTP proxy (DESIGN §10): HTTPS upstreams by a
//! `CONNECT` tunnel with TLS end to end, plain HTTP in absolute form, basic
//! auth from `[upstream_proxy]` or `HTTPS_PROXY`, IAM on the same path, and
//! loopback always direct. The upstreams are named `*.test`, which the
//! daemon cannot resolve: only the egress proxy (which sends everything to
//! its one origin) makes them reachable.

mod common;

use std::sync::Arc;

use common::egress::{EgressProxy, egress_proxy};
use common::pki::{self, tls_upstream};
use common::*;

const APP_CODE: &str = "appcode-Egress-7f3a";

/// Basic credentials as `Proxy-Authorization` carries them.
fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// An HTTPS upstream for `service.test` echoing the app code it received.
async fn service_test() -> (pki::TestPki, pki::TlsUpstream) {
    let pki = pki::pki(&["service.test"]);
    let upstream = tls_upstream(&pki, &[b"h2", b"http/1.1"], |req| async move {
        let code = req
            .headers()
            .get("x-apig-appcode")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let leaked = req.headers().contains_key("proxy-authorization");
        text_response(
            200,
            &format!(
                "{:?} {} code={code} proxy-auth={leaked}",
                req.version(),
                req.uri()
            ),
        )
    })
    .await;
    (pki, upstream)
}

fn apikey_route(upstream: &str) -> String {
    format!(
        "[[route]]\nupstream = \"{upstream}\"\ncredentials = \"key\"\n\
         [credentials.key]\ntype = \"apikey\"\napp_code = \"{APP_CODE}\"\n"
    )
}

fn runtime_with_env(env: Vec<(&'static str, String)>) -> modelarts_proxy::state::Runtime {
    modelarts_proxy::state::Runtime {
        sources: Arc::new(EnvSources(env)),
        ..Default::default()
    }
}

async fn body_of(proxy: &Proxy, path: &str) -> (u16, String) {
    let (parts, bytes) = get(&proxy.url(path)).await;
    (
        parts.status.as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn targets(egress: &EgressProxy) -> Vec<(String, String, Option<String>)> {
    egress
        .seen()
        .into_iter()
        .map(|s| (s.method, s.target, s.authorization))
        .collect()
}

#[tokio::test]
async fn https_upstreams_are_tunnelled_with_connect_and_tls_stays_end_to_end() {
    let (pki, upstream) = service_test().await;
    let egress = egress_proxy(upstream.addr, None).await;
    let ca = pki.ca_file("egress-connect");
    let port = upstream.addr.port();
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\n\
         [upstream_proxy]\nurl = \"http://{}\"\n{}",
        ca.display(),
        egress.addr,
        apikey_route(&format!("https://service.test:{port}/v1/infers/svc"))
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(
            body_of(&proxy, "/predict").await,
            (
                200,
                format!(
                    "HTTP/2.0 https://service.test:{port}/v1/infers/svc/predict code={APP_CODE} proxy-auth=false"
                )
            )
        );
    }
    assert_eq!(
        targets(&egress),
        [("CONNECT".into(), format!("service.test:{port}"), None)],
        "one tunnel, reused (h2 by ALPN inside it: the certificate was verified for service.test)"
    );
}

#[tokio::test]
async fn https_proxy_credentials_are_sent_on_connect_and_a_407_is_explained() {
    let (pki, upstream) = service_test().await;
    let ca = pki.ca_file("egress-auth");
    let password = "pw@Corp-9q!";
    let egress = egress_proxy(upstream.addr, Some(basic("alice", password))).await;
    let config = format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\n{}",
        ca.display(),
        apikey_route(&format!(
            "https://service.test:{}/v1/infers/svc",
            upstream.addr.port()
        ))
    );
    let proxy_url = |pass: &str| format!("http://alice:{pass}@{}", egress.addr);
    let good = start_proxy_with(
        &config,
        runtime_with_env(vec![("https_proxy", proxy_url("pw%40Corp-9q!"))]),
    )
    .await;
    let (status, text) = body_of(&good, "/x").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        egress.seen()[0].authorization.as_deref(),
        Some(basic("alice", password).as_str())
    );

    let bad = start_proxy_with(
        &config,
        runtime_with_env(vec![("HTTPS_PROXY", proxy_url("wrong-Pass-3"))]),
    )
    .await;
    let (parts, bytes) = get(&bad.url("/x")).await;
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    let message = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("through egress proxy {}", egress.addr))
            && message.contains("407"),
        "{message}"
    );
    assert!(
        !message.contains("wrong-Pass-3") && !message.contains("pw@Corp"),
        "{message}"
    );
}

#[tokio::test]
async fn http_upstreams_go_in_absolute_form_with_proxy_authorization() {
    let stand_in = stand_in().await;
    let egress = egress_proxy(stand_in, Some(basic("svc", "hunter2-Egress"))).await;
    let port = stand_in.port();
    let proxy = start_proxy_with(
        &format!(
            "[upstream_proxy]\nurl = \"http://{}\"\nusername = \"svc\"\npassword = {{ env = \"PROXY_PASSWORD\" }}\n\
             [[route]]\nupstream = \"http://plain.test:{port}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}",
            egress.addr
        ),
        runtime_with_env(vec![("PROXY_PASSWORD", "hunter2-Egress".into())]),
    )
    .await;
    let (parts, bytes) = send(
        request("POST", &proxy.url("/predict"))
            .header("content-type", "application/json")
            .body(body("{\"a\":1}"))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let echoed = json(&bytes);
    assert_eq!(
        echoed["headers"]["host"],
        format!("plain.test:{port}"),
        "signed for the name, not the proxy"
    );
    assert_eq!(
        targets(&egress),
        [(
            "POST".into(),
            format!("http://plain.test:{port}/v1/infers/svc/predict"),
            Some(basic("svc", "hunter2-Egress"))
        )]
    );
}

#[tokio::test]
async fn iam_tokens_are_fetched_through_the_same_proxy() {
    let stand_in = modelarts_proxy::dev::StandIn::new(vec![key()], Arc::new(chrono::Utc::now))
        .with_iam(modelarts_proxy::dev::StandInIam {
            user: "alice".into(),
            password: modelarts_proxy::secret::Secret::new("iam-Pass-1"),
            domain: "acme".into(),
            project: "cn-north-4".into(),
            project_id: "0a1b2c3d".into(),
            token_lifetime: std::time::Duration::from_secs(3600),
            token_size: 1024,
        })
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let egress = egress_proxy(stand_in, None).await;
    let port = stand_in.port();
    let proxy = start_proxy_with(
        &format!(
            "[[route]]\nupstream = \"http://service.test:{port}/v1/infers/svc\"\ncredentials = \"iam\"\n\
             [credentials.iam]\ntype = \"token\"\niam_endpoint = \"http://iam.test:{port}\"\n\
             user = \"alice\"\npassword = \"iam-Pass-1\"\ndomain = \"acme\"\nproject = \"cn-north-4\"\n"
        ),
        runtime_with_env(vec![("HTTP_PROXY", format!("http://{}", egress.addr))]),
    )
    .await;
    let (status, text) = body_of(&proxy, "/predict").await;
    assert_eq!(status, 200, "{text}");
    let seen = targets(&egress);
    assert_eq!(
        seen[0].1,
        format!("http://iam.test:{port}/v3/auth/tokens?nocatalog=true")
    );
    assert_eq!(
        seen.last().unwrap().1,
        format!("http://service.test:{port}/v1/infers/svc/predict")
    );
}

#[tokio::test]
async fn loopback_upstreams_and_no_proxy_hosts_are_reached_directly() {
    let stand_in = stand_in().await;
    let egress = egress_proxy(stand_in, None).await;
    let proxy = start_proxy_with(
        &format!(
            "[[route]]\nupstream = \"http://{stand_in}/v1/infers/svc\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
        ),
        runtime_with_env(vec![
            ("HTTPS_PROXY", format!("http://{}", egress.addr)),
            ("HTTP_PROXY", format!("http://{}", egress.addr)),
        ]),
    )
    .await;
    assert_eq!(body_of(&proxy, "/predict").await.0, 200);
    assert!(egress.seen().is_empty(), "{:?}", egress.seen());

    // A NO_PROXY name is connected to directly: it does not resolve here, so
    // the attempt fails at name resolution, and the proxy sees nothing.
    let proxy = start_proxy_with(
        "[[route]]\nupstream = \"http://direct.test:1/\"\n",
        runtime_with_env(vec![
            ("HTTP_PROXY", format!("http://{}", egress.addr)),
            ("NO_PROXY", ".test".into()),
        ]),
    )
    .await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    assert!(egress.seen().is_empty(), "{:?}", egress.seen());
}

#[tokio::test]
async fn a_websocket_to_a_plain_http_upstream_is_tunnelled_not_sent_in_absolute_form() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let stand_in = stand_in().await;
    let egress = egress_proxy(stand_in, None).await;
    let port = stand_in.port();
    let proxy = start_proxy_with(
        &format!(
            "[[route]]\nupstream = \"http://ws.test:{port}/v1\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
        ),
        runtime_with_env(vec![("HTTP_PROXY", format!("http://{}", egress.addr))]),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/chat", proxy.addr), tcp)
        .await
        .unwrap();
    ws.send(Message::text("via the tunnel")).await.unwrap();
    let echoed = tokio::time::timeout(TEST_DEADLINE, ws.next())
        .await
        .unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("via the tunnel"));
    assert_eq!(
        targets(&egress),
        [("CONNECT".into(), format!("ws.test:{port}"), None)]
    );
}
