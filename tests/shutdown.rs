//! Shutdown from a neighbour (DESIGN §13): `POST /quitquitquit` on the
//! admin listener, when `[server] quitquitquit = true`, starts the drain
//! SIGTERM starts; GET does nothing; off, the path does not exist. And
//! `modelarts-proxy shutdown --admin ADDR` calls it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_modelarts-proxy");

async fn admin(proxy: &Proxy, method: &str, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", proxy.admin.unwrap());
    let (parts, body) = send(request(method, &url).body(body("")).unwrap()).await;
    (
        parts.status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn quitquitquit_is_off_unless_configured_and_the_proxy_keeps_serving() {
    let up = upstream(|_req| async { text_response(200, "ok") }).await;
    let proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[route]]\nupstream = \"http://{up}/\"\n"
    ))
    .await;
    let (status, text) = admin(&proxy, "POST", "/quitquitquit").await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("quitquitquit = true"), "{text}");
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
    assert!(!proxy.task.is_finished());
}

#[tokio::test]
async fn a_post_drains_like_sigterm_and_lets_the_request_in_flight_finish() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (release, held) = tokio::sync::watch::channel(false);
    let up = held_upstream(arrived.clone(), held).await;
    let mut proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nquitquitquit = true\nshutdown_grace = \"20s\"\n[[route]]\nupstream = \"http://{up}/\"\n"
    ))
    .await;
    let in_flight = tokio::spawn({
        let url = proxy.url("/work");
        async move { get(&url).await }
    });
    eventually("the request reached the upstream", || {
        arrived.load(Ordering::SeqCst) == 1
    })
    .await;
    // GET does nothing.
    let (status, _) = admin(&proxy, "GET", "/quitquitquit").await;
    assert_eq!(status, 405);
    assert_eq!(
        admin(&proxy, "GET", "/readyz").await.0,
        200,
        "still ready after a GET"
    );
    let (status, text) = admin(&proxy, "POST", "/quitquitquit").await;
    assert_eq!(
        (status, text.as_str()),
        (200, "stopping: draining as on SIGTERM\n")
    );
    // Draining: /readyz says so while the request is still in flight.
    tokio::time::timeout(TEST_DEADLINE, async {
        while admin(&proxy, "GET", "/readyz").await.0 != 503 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("/readyz answers 503 once draining");
    assert_eq!(proxy.metric("modelarts_proxy_requests_in_flight"), 1.0);
    // The request in flight finishes; then the daemon ends.
    release.send(true).unwrap();
    let (parts, body) = in_flight.await.unwrap();
    assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"done"[..]));
    tokio::time::timeout(TEST_DEADLINE, &mut proxy.task)
        .await
        .expect("the daemon stopped after the drain")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "no new connections after the drain"
    );
}

/// Runs `modelarts-proxy shutdown --admin ADDR` (off the async threads).
async fn shutdown_command(admin: &str) -> std::process::Output {
    let admin = admin.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["shutdown", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_shutdown_command_stops_a_running_proxy() {
    let up = upstream(|_req| async { text_response(200, "ok") }).await;
    let mut proxy = start_proxy(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\nquitquitquit = true\n[[route]]\nupstream = \"http://{up}/\"\n"
    ))
    .await;
    let admin = proxy.admin.unwrap().to_string();
    let out = shutdown_command(&admin).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stopping: draining as on SIGTERM\n"
    );
    tokio::time::timeout(TEST_DEADLINE, &mut proxy.task)
        .await
        .expect("the daemon stopped")
        .unwrap();
    // Nobody there any more: the command says so and fails.
    let out = shutdown_command(&admin).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/quitquitquit"));
}
