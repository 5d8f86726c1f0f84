//! The upstream client's connections (issue 17): opened only when no
//! connection of the thread can take the request, shared while HTTP/2,
//! never raced against a checkout, and an upstream's close noticed before
//! a request is put on the connection.
//!
//! Each test runs on one thread (Tokio's current-thread test runtime), as a
//! daemon worker serves its connections, so the counts are exact.

mod common;

use common::pki::{self, tls_upstream};
use common::scripted::{ANSWER, H1Script, H2Script, h1_upstream, h2_upstream};
use common::*;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;

fn h1_config(upstream: std::net::SocketAddr) -> String {
    format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{upstream}/v1\"\n"
    )
}

/// `clients` keep-alive clients sending `each` requests one after another.
async fn waves(proxy: &Proxy, clients: usize, each: usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let url = proxy.url("/predict");
            tokio::spawn(async move {
                let client = client();
                for i in 0..each {
                    let req = match (c + i) % 2 {
                        0 => request("POST", &url).body(body("{\"x\":1}")),
                        _ => request("GET", &url).body(body("")),
                    };
                    let resp = client.request(req.unwrap()).await.expect("answered");
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!((status.as_u16(), &bytes[..]), (200, ANSWER));
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(TEST_DEADLINE, t)
            .await
            .expect("within the deadline")
            .unwrap();
    }
}

#[tokio::test]
async fn http1_clients_never_open_more_upstream_connections_than_requests_in_flight() {
    let upstream = h1_upstream(H1Script::KeepAlive).await;
    let proxy = start_proxy(&h1_config(upstream.addr)).await;
    waves(&proxy, 8, 25).await;
    let opened = upstream.connections.load(Ordering::Relaxed);
    assert!(
        opened <= 8,
        "8 clients, at most 8 requests in flight: {opened} upstream connections"
    );
    // A second wave finds them all idle: not one more is opened.
    waves(&proxy, 8, 25).await;
    assert_eq!(upstream.connections.load(Ordering::Relaxed), opened);
    assert_eq!(upstream.requests.load(Ordering::Relaxed), 400);
}

#[tokio::test]
async fn a_cold_burst_to_an_alpn_h2_upstream_shares_one_connection() {
    let pki = pki::pki(&["localhost"]);
    let upstream = tls_upstream(&pki, &[b"h2", b"http/1.1"], |req| async move {
        text_response(200, &format!("{:?}", req.version()))
    })
    .await;
    let ca = pki.ca_file("burst");
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\n\
         [[route]]\nupstream = \"https://localhost:{}/v1\"\n",
        ca.display(),
        upstream.addr.port()
    ))
    .await;
    // Twenty requests at once on a proxy that has no connection yet: the
    // first opens one and learns it speaks h2; the others wait for it.
    let burst: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(proxy.url("/").leak())))
        .collect();
    for b in burst {
        let (parts, bytes) = b.await.unwrap();
        assert_eq!((parts.status.as_u16(), &bytes[..]), (200, &b"HTTP/2.0"[..]));
    }
    assert_eq!(
        upstream.connections(),
        1,
        "20 concurrent requests, one h2 connection"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_never_given_a_request() {
    // Each upstream connection answers one request and closes. A POST is
    // not sent again when a connection fails under it; so every one of
    // these is answered only because no request goes to a closed
    // connection (or one is handed back unwritten and sent on another).
    let upstream = h1_upstream(H1Script::CloseAfterAnswer).await;
    let proxy = start_proxy(&h1_config(upstream.addr)).await;
    let client = client();
    for i in 0..10 {
        let resp = client
            .request(request("POST", &proxy.url("/")).body(body("{}")).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!((status.as_u16(), &bytes[..]), (200, ANSWER), "POST {i}");
    }
    assert_eq!(upstream.requests.load(Ordering::Relaxed), 10);
    assert_eq!(upstream.connections.load(Ordering::Relaxed), 10);
    for reason in ["closed_before_answer", "not_written"] {
        let series = format!("modelarts_proxy_resends_total{{reason=\"{reason}\"}}");
        assert_eq!(proxy.metric(&series), 0.0, "{series}");
    }
}

#[tokio::test]
async fn an_h2_upstream_recycling_its_connections_costs_one_connection_per_goaway() {
    // A GOAWAY every 25 requests (nginx's keepalive_requests, shortened):
    // 32 clients × 25 requests need 32 connections in turn. The streams a
    // GOAWAY or the connection's end turns away go through the checkout
    // and share the connection that replaces it, not one each.
    let upstream = h2_upstream(H2Script {
        goaway_every: Some(25),
        ..Default::default()
    })
    .await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[upstream_tls]\nhttp2 = \"http2\"\n[[route]]\nupstream = \"http://{}/v1\"\n",
        upstream.addr
    ))
    .await;
    waves(&proxy, 32, 25).await;
    assert_eq!(upstream.requests.load(Ordering::Relaxed), 800);
    let opened = upstream.connections.load(Ordering::Relaxed);
    assert!(
        opened <= 48,
        "800 requests, a GOAWAY every 25: {opened} connections"
    );
}
