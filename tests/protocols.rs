//! Protocol reach (DESIGN §10): Unix-socket listeners, WebSocket, egress
//! through an HTTP proxy, HTTP/2 to the upstream, and `Expect: 100-continue`.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-protocols-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One GET over a Unix socket.
async fn get_unix(path: &Path, uri: &str) -> (http::StatusCode, Bytes) {
    let stream = UnixStream::connect(path).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = request("GET", uri)
        .header("host", "localhost")
        .body(body(""))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_unix_socket_listener_serves_with_its_mode_and_is_removed_on_shutdown() {
    let dir = temp_dir("unix");
    let sock = dir.join("proxy.sock");
    // A stale socket file, as a crash leaves one: replaced at start.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let up = upstream(|req| async move { text_response(200, req.uri().path()) }).await;
    let mut proxy = start_proxy_as_configured(&format!(
        "[server]\nlisten = [\"unix:{}\"]\nunix_mode = \"0600\"\n[[route]]\nupstream = \"http://{up}/base\"\n",
        sock.display()
    ))
    .await;
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (status, bytes) = get_unix(&sock, "/x").await;
    assert_eq!((status.as_u16(), &bytes[..]), (200, &b"/base/x"[..]));

    // A second proxy may not take a live socket.
    let v = modelarts_proxy::config::load(
        &format!(
            "[server]\nlisten = \"unix:{}\"\n[[route]]\nupstream = \"http://{up}/\"\n",
            sock.display()
        ),
        &TestSources,
    )
    .unwrap();
    let state = modelarts_proxy::state::State::build(v.config).unwrap();
    let err = modelarts_proxy::server::Daemon::bind(state)
        .await
        .err()
        .unwrap();
    assert!(err.contains("another process is listening"), "{err}");

    proxy.shutdown();
    tokio::time::timeout(TEST_DEADLINE, &mut proxy.task)
        .await
        .unwrap()
        .unwrap();
    assert!(!sock.exists(), "the socket file is removed on shutdown");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_regular_file_in_the_way_is_not_removed() {
    let dir = temp_dir("unix-file");
    let path = dir.join("not-a-socket");
    std::fs::write(&path, "precious").unwrap();
    let v = modelarts_proxy::config::load(
        &format!(
            "[server]\nlisten = \"unix:{}\"\n[[route]]\nupstream = \"http://127.0.0.1:9/\"\n",
            path.display()
        ),
        &TestSources,
    )
    .unwrap();
    let state = modelarts_proxy::state::State::build(v.config).unwrap();
    let err = modelarts_proxy::server::Daemon::bind(state)
        .await
        .err()
        .unwrap();
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    std::fs::remove_dir_all(&dir).unwrap();
}
