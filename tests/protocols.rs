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
    let err = bind_error(&sock, &format!("http://{up}/")).await;
    assert!(err.contains("another process is listening"), "{err}");

    proxy.shutdown();
    tokio::time::timeout(TEST_DEADLINE, &mut proxy.task)
        .await
        .unwrap()
        .unwrap();
    assert!(!sock.exists(), "the socket file is removed on shutdown");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Why a proxy listening on `unix:{path}` cannot bind.
async fn bind_error(path: &std::path::Path, upstream: &str) -> String {
    let v = modelarts_proxy::config::load(
        &format!(
            "[server]\nlisten = \"unix:{}\"\n[[route]]\nupstream = \"{upstream}\"\n",
            path.display()
        ),
        &TestSources,
    )
    .unwrap();
    let state = modelarts_proxy::state::State::build(v.config).unwrap();
    modelarts_proxy::server::Daemon::bind(state)
        .await
        .err()
        .expect("the bind fails")
}

#[tokio::test]
async fn a_regular_file_in_the_way_is_not_removed() {
    let dir = temp_dir("unix-file");
    let path = dir.join("not-a-socket");
    std::fs::write(&path, "precious").unwrap();
    let err = bind_error(&path, "http://127.0.0.1:9/").await;
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Expect: 100-continue` with a chunked body: the proxy lets the client
/// send (`100 Continue`), streams it upstream, and cuts it at `max_body`
/// with 413; the upstream never sees a complete request. (An oversized
/// `Content-Length` is refused before `100 Continue`: tests/hostile.rs.)
#[tokio::test]
async fn expect_100_continue_chunked_past_max_body_is_cut_with_413() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let complete = Arc::new(Mutex::new(Vec::new()));
    let record = complete.clone();
    let upstream = upstream(move |req| {
        let record = record.clone();
        async move {
            let whole = req.into_body().collect().await.is_ok();
            record.lock().unwrap().push(whole);
            text_response(200, "stored")
        }
    })
    .await;
    for payload in ["unsigned", "signed"] {
        let proxy = start_proxy(&format!(
            "[[route]]\nupstream = \"http://{upstream}/\"\nmax_body = \"4KiB\"\npayload = \"{payload}\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
        ))
        .await;
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(
                b"PUT /blob HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n\
                  Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(TEST_DEADLINE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n"),
            "{payload}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
        // 8 KiB in 1 KiB chunks, then the end: twice the route's limit.
        let mut sent = Vec::new();
        for _ in 0..8 {
            sent.extend_from_slice(b"400\r\n");
            sent.extend_from_slice(&[b'x'; 1024]);
            sent.extend_from_slice(b"\r\n");
        }
        sent.extend_from_slice(b"0\r\n\r\n");
        let _ = stream.write_all(&sent).await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(TEST_DEADLINE, async {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&reply).contains("}\n") || reply.ends_with(b"}") {
                    break;
                }
            }
        })
        .await;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(reply.starts_with("HTTP/1.1 413 "), "{payload}: {reply}");
        assert!(reply.contains("body_too_large"), "{payload}: {reply}");
    }
    let seen = complete.lock().unwrap().clone();
    assert!(
        seen.iter().all(|whole| !whole),
        "the upstream received a complete request: {seen:?}"
    );
}
