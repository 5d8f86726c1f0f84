//! WebSocket through the proxy (DESIGN §10), with a real client and server
//! (tokio-tungstenite): the handshake carries the route's credential (the
//! stand-in verifies the AK/SK signature, token or app code on it), frames
//! are copied both ways, either side may close, a refused handshake comes
//! back with the upstream's status, `max_body`/`timeout` do not apply to
//! the open connection and `idle_timeout` does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use modelarts_proxy::dev::{StandIn, StandInIam};
use modelarts_proxy::secret::Secret;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = WebSocketStream<TcpStream>;

const APP_CODE: &str = "ws-app-CODE-0123456789abcdef";
const PASSWORD: &str = "ws-iam-PASSWORD";

/// The stand-in with the test key, IAM and an app code.
async fn stand_in_all() -> std::net::SocketAddr {
    StandIn::new(vec![key()], Arc::new(chrono::Utc::now))
        .with_iam(StandInIam {
            user: "alice".into(),
            password: Secret::new(PASSWORD),
            domain: "acme".into(),
            project: "cn-north-4".into(),
            project_id: "0a1b2c3d".into(),
            token_lifetime: Duration::from_secs(3600),
            token_size: 4096,
        })
        .with_app_codes(vec![Secret::new(APP_CODE)])
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Routes `/sig` (AK/SK), `/tok` (IAM token), `/key` (app code) and
/// `/wrong` (a wrong SK) to the stand-in; `server` goes in `[server]`.
async fn proxy_for(gw: std::net::SocketAddr, server: &str, route_extra: &str) -> Proxy {
    start_proxy(&format!(
        "[server]\n{server}\n\
         [[route]]\nprefix = \"/sig\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"test\"\n{route_extra}\n\
         [[route]]\nprefix = \"/tok\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"iam\"\n{route_extra}\n\
         [[route]]\nprefix = \"/key\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"key\"\n{route_extra}\n\
         [[route]]\nprefix = \"/wrong\"\nupstream = \"http://{gw}/v1/infers/svc\"\ncredentials = \"wrong\"\n\
         {TEST_CREDENTIALS}\
         [credentials.iam]\ntype = \"token\"\niam_endpoint = \"http://{gw}\"\nuser = \"alice\"\npassword = \"{PASSWORD}\"\ndomain = \"acme\"\nproject = \"cn-north-4\"\n\
         [credentials.key]\ntype = \"apikey\"\napp_code = \"{APP_CODE}\"\n\
         [credentials.wrong]\ntype = \"aksk\"\naccess_key = \"{AK}\"\nsecret_key = \"not-the-secret\"\n"
    ))
    .await
}

async fn connect(proxy: &Proxy, path: &str) -> Result<Ws, WsError> {
    let url = format!("ws://{}{path}", proxy.addr);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::timeout(TEST_DEADLINE, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("handshake in time")
        .map(|(ws, _response)| ws)
}

/// The next data or close message (pings and pongs skipped).
async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        let m = tokio::time::timeout(TEST_DEADLINE, ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn frames_flow_both_ways_with_the_credential_on_the_handshake() {
    let gw = stand_in_all().await;
    // max_body and timeout are tiny: they bound the handshake, not the open connection.
    let proxy = proxy_for(gw, "", "max_body = \"1KiB\"\ntimeout = \"2s\"").await;
    for path in ["/sig/ws?room=1", "/tok/ws", "/key/ws"] {
        let mut ws = connect(&proxy, path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text("hello")), "{path}");
        let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(
            next(&mut ws).await,
            Some(Message::binary(big)),
            "{path}: 200 KiB over a 1 KiB max_body"
        );
        // The client closes; the service answers the close, and the stream ends.
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();
        match next(&mut ws).await {
            Some(Message::Close(_)) | None => {}
            other => panic!("{path}: expected the close answered, got {other:?}"),
        }
        assert!(next(&mut ws).await.is_none(), "{path}: the connection ends");
    }
    eventually("three spliced connections closed", || {
        proxy.metric("modelarts_proxy_connections_closed_total{reason=\"websocket\"}") == 3.0
    })
    .await;
}

#[tokio::test]
async fn the_service_closing_ends_the_client_connection() {
    let gw = stand_in_all().await;
    let proxy = proxy_for(gw, "", "").await;
    let mut ws = connect(&proxy, "/sig/ws").await.unwrap();
    ws.send(Message::text("bye")).await.unwrap();
    assert!(
        matches!(next(&mut ws).await, Some(Message::Close(_))),
        "the service's close frame arrives"
    );
    assert!(next(&mut ws).await.is_none());
}

#[tokio::test]
async fn a_refused_handshake_comes_back_with_the_upstreams_status_and_body() {
    let gw = stand_in_all().await;
    let proxy = proxy_for(gw, "", "").await;
    match connect(&proxy, "/wrong/ws").await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("APIG.0301"), "{body}");
            assert!(response.headers().contains_key("x-modelarts-proxy-hint"));
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    // The connection is still an HTTP connection: ordinary requests work.
    assert_eq!(get(&proxy.url("/sig/predict")).await.0.status, 200);
}

#[tokio::test]
async fn a_silent_websocket_is_closed_after_idle_timeout_and_traffic_keeps_it_open() {
    let gw = stand_in_all().await;
    let proxy = proxy_for(gw, "idle_timeout = \"400ms\"", "timeout = \"300ms\"").await;
    let mut ws = connect(&proxy, "/key/ws").await.unwrap();
    // Messages every 100 ms for over a second: past `timeout`, never idle.
    for i in 0..12 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text(format!("m{i}"))));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: the proxy closes both sides.
    assert!(next(&mut ws).await.is_none(), "closed for idling");
    eventually("the splice closed", || {
        proxy.metric("modelarts_proxy_connections_closed_total{reason=\"websocket\"}") == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_wss_upstream_offering_h2_is_reached_over_http1_for_the_upgrade() {
    let pki = pki::pki(&["localhost"]);
    let upstream = pki::tls_upstream(&pki, &[b"h2", b"http/1.1"], |mut req| async move {
        if req.version() != http::Version::HTTP_11 {
            return text_response(426, "websocket needs HTTP/1.1");
        }
        let key = req.headers()["sec-websocket-key"].clone();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(on.await.unwrap());
            let mut ws = WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() {
                    let reply = format!("tls:{}", m.to_text().unwrap());
                    ws.send(Message::text(reply)).await.unwrap();
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        http::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(body(""))
            .unwrap()
    })
    .await;
    let ca = pki.ca_file("wss");
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\n[[route]]\nupstream = \"https://localhost:{}/\"\n",
        ca.display(),
        upstream.addr.port()
    ))
    .await;
    let mut ws = connect(&proxy, "/ws").await.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("tls:over tls")));
}

#[tokio::test]
async fn a_drain_lets_an_open_websocket_run_and_a_second_signal_closes_it() {
    let gw = stand_in_all().await;
    let mut proxy = start_proxy_with_signals(&format!(
        "[server]\nshutdown_grace = \"60s\"\n[[route]]\nupstream = \"http://{gw}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    let mut ws = connect(&proxy, "/ws").await.unwrap();
    let signals = proxy.signals.take().unwrap();
    signals.send(()).await.unwrap();
    for i in 0..3 {
        ws.send(Message::text(format!("draining {i}")))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Some(Message::text(format!("draining {i}")))
        );
    }
    assert!(
        !proxy.task.is_finished(),
        "the open WebSocket holds the drain"
    );
    signals.send(()).await.unwrap();
    assert!(
        next(&mut ws).await.is_none(),
        "cut: the WebSocket is closed"
    );
    tokio::time::timeout(TEST_DEADLINE, &mut proxy.task)
        .await
        .expect("the daemon ends")
        .unwrap();
}

#[tokio::test]
async fn a_handshake_the_first_target_cannot_take_fails_over_and_the_socket_works() {
    let gw = stand_in_all().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(&format!(
        "[[route]]\nprefix = \"/sig\"\nupstream = \"http://{dead}/v1/infers/svc\"\ncredentials = \"test\"\nretry = {{ backoff = \"10ms\" }}\n\
         [[route.fallback]]\nupstream = \"http://{gw}/v1/infers/svc\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    // Refused, then signed for the fallback and upgraded there.
    let mut ws = connect(&proxy, "/sig/ws").await.unwrap();
    ws.send(Message::text("over there")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("over there")));
    assert_eq!(
        proxy.metric("modelarts_proxy_retries_total{route=\"/sig\",reason=\"connect\"}"),
        1.0
    );
}
