//! Hostile clients on raw sockets: request smuggling, malformed and
//! oversized heads, slow and silent connections, forward-proxy and
//! path-traversal attempts, protocol games. Each case asserts what the
//! client got back and that nothing reached the upstream that should not.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long a timed-out connection may take to be closed (header_timeout is 1 s).
const CLOSE_GUARD: Duration = Duration::from_secs(5);

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
struct Saw {
    method: String,
    path: String,
    headers: HeaderMap,
    /// `None` when the body was cut off.
    body: Option<Bytes>,
}

/// What reached the upstream: heads as they arrive, bodies when they end.
#[derive(Default)]
struct Seen {
    heads: AtomicUsize,
    complete: AtomicUsize,
    finished: AtomicUsize,
    saw: Mutex<Vec<Saw>>,
    changed: Notify,
}

impl Seen {
    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    fn complete(&self) -> usize {
        self.complete.load(Ordering::SeqCst)
    }

    fn saw(&self) -> Vec<Saw> {
        self.saw.lock().unwrap().clone()
    }

    /// Waits until every request that reached the upstream has ended its body.
    async fn settle(&self) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.finished.load(Ordering::SeqCst) == self.heads() {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(TEST_DEADLINE, wait)
            .await
            .expect("upstream requests end within the deadline");
    }

    /// Asserts that no request head reached the upstream.
    fn assert_nothing(&self) {
        assert_eq!(self.heads(), 0, "the upstream saw: {:?}", self.saw());
    }
}

/// An upstream that records every request and answers 200 with its path.
async fn counting_upstream(seen: Arc<Seen>) -> SocketAddr {
    upstream(move |req| {
        let seen = seen.clone();
        async move {
            seen.heads.fetch_add(1, Ordering::SeqCst);
            let (parts, incoming) = req.into_parts();
            let body = incoming.collect().await.ok().map(|b| b.to_bytes());
            if body.is_some() {
                seen.complete.fetch_add(1, Ordering::SeqCst);
            }
            let path = parts
                .uri
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_owned();
            seen.saw.lock().unwrap().push(Saw {
                method: parts.method.to_string(),
                path: path.clone(),
                headers: parts.headers,
                body,
            });
            seen.finished.fetch_add(1, Ordering::SeqCst);
            seen.changed.notify_waiters();
            text_response(200, &path)
        }
    })
    .await
}

/// A proxy with one unauthenticated route `/` in front of a counting upstream.
async fn hostile_proxy(server: &str) -> (Proxy, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let up = counting_upstream(seen.clone()).await;
    let proxy = start_proxy(&format!(
        "{server}\n[[route]]\nprefix = \"/\"\nupstream = \"http://{up}/\"\n"
    ))
    .await;
    (proxy, seen)
}

/// One HTTP/1 response as read off the wire.
#[derive(Debug, Default)]
struct Reply {
    /// Empty when the connection closed before a response head arrived.
    status_line: String,
    /// Names lowercased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Asserts a proxy-made JSON error on a raw reply.
fn assert_raw_proxy_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status(), status, "{reply:?} {}", reply.text());
    assert_eq!(
        reply.header("x-modelarts-proxy-error"),
        Some(code),
        "{reply:?}"
    );
    let v = json(&Bytes::from(reply.body.clone()));
    assert_eq!(v["error"]["code"], code, "{v}");
}

/// Asserts hyper's own bare answer to a malformed head: the status, no
/// proxy error header, and the connection closed after it.
async fn assert_bare(conn: &mut Conn, reply: &Reply, status_line: &str) {
    assert_eq!(reply.status_line, status_line, "{reply:?}");
    assert_eq!(reply.header("x-modelarts-proxy-error"), None, "{reply:?}");
    assert!(
        conn.closes().await,
        "the connection stays open after {status_line}"
    );
}

/// Parses one complete response at the start of `buf`: the reply and its length.
fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
    let end = head_end + 4 + len;
    if buf.len() < end {
        return None;
    }
    let body = buf[head_end + 4..end].to_vec();
    Some((
        Reply {
            status_line,
            headers,
            body,
        },
        end,
    ))
}

/// A raw client connection to the proxy.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Writes bytes; a server that has already closed may refuse them.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads more; 0 on EOF or a reset.
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next response, or an empty [`Reply`] if the connection closes first.
    async fn reply(&mut self) -> Reply {
        let read = async {
            loop {
                if let Some((reply, used)) = parse_reply(&self.buf) {
                    self.buf.drain(..used);
                    return reply;
                }
                if self.fill().await == 0 {
                    return Reply::default();
                }
            }
        };
        tokio::time::timeout(TEST_DEADLINE, read)
            .await
            .expect("a response or a close within the deadline")
    }

    /// True if the server closes within [`CLOSE_GUARD`]; whatever it sends first is kept.
    async fn closes(&mut self) -> bool {
        let read = async { while self.fill().await > 0 {} };
        tokio::time::timeout(CLOSE_GUARD, read).await.is_ok()
    }
}

/// Opens a connection, writes `bytes`, and reads the first response.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Conn, Reply) {
    let mut conn = Conn::open(addr).await;
    conn.send(bytes).await;
    let reply = conn.reply().await;
    (conn, reply)
}

// 1. hyper follows RFC 9112 §6.3: Transfer-Encoding overrides
// Content-Length, the Content-Length is dropped and the connection is closed
// after the response. The upstream gets one reading only, so nothing can be
// smuggled behind it.
#[tokio::test]
async fn content_length_with_transfer_encoding_reaches_the_upstream_one_way_only() {
    let (proxy, seen) = hostile_proxy("").await;
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
    ] {
        // Read as Content-Length: 5, the rest would be a second, smuggled request.
        let head = format!(
            "POST /smuggle HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        );
        let before = seen.saw().len();
        let (mut conn, reply) = exchange(proxy.addr, head.as_bytes()).await;
        seen.settle().await;
        assert_eq!(reply.status(), 200, "{framing:?}: {reply:?}");
        assert!(
            conn.closes().await,
            "{framing:?}: the connection is closed after the answer"
        );
        let saw = seen.saw();
        assert_eq!(
            saw.len(),
            before + 1,
            "{framing:?}: one request only: {saw:?}"
        );
        let last = saw.last().unwrap();
        assert_eq!(last.path, "/smuggle");
        assert!(last.headers.get("content-length").is_none(), "{last:?}");
        assert_eq!(last.body.as_deref(), Some(&b"hello"[..]));
    }
}

// 2.
#[tokio::test]
async fn two_different_content_lengths_are_400_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (mut conn, reply) = exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert_bare(&mut conn, &reply, "HTTP/1.1 400 Bad Request").await;
    seen.assert_nothing();
}

#[tokio::test]
async fn two_identical_content_lengths_are_forwarded_once_with_one_content_length() {
    let (proxy, seen) = hostile_proxy("").await;
    let (_conn, reply) = exchange(
        proxy.addr,
        b"POST /twice HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(reply.status_line, "HTTP/1.1 200 OK", "{}", reply.text());
    seen.settle().await;
    let saw = seen.saw();
    assert_eq!(saw.len(), 1, "{saw:?}");
    let lengths: Vec<_> = saw[0].headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["5"]);
    assert_eq!(saw[0].body.as_deref(), Some(&b"hello"[..]));
    assert_eq!(saw[0].path, "/twice");
}

// 3.
#[tokio::test]
async fn a_bad_chunk_size_never_gives_the_upstream_a_complete_request() {
    let (proxy, seen) = hostile_proxy("").await;
    let (mut conn, reply) = exchange(
        proxy.addr,
        b"POST /chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    // The proxy answers: the body failed while it streamed to the upstream.
    assert_raw_proxy_error(&reply, 400, "bad_request");
    assert!(
        conn.closes().await,
        "the connection stays open after a bad chunk"
    );
    seen.settle().await;
    assert_eq!(seen.complete(), 0, "the upstream saw: {:?}", seen.saw());
}

// 4.
#[tokio::test]
async fn a_40_kib_header_gets_the_proxys_431_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let head = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let (_conn, reply) = exchange(proxy.addr, head.as_bytes()).await;
    assert_raw_proxy_error(&reply, 431, "headers_too_large");
    seen.assert_nothing();
}

#[tokio::test]
async fn a_200_kib_header_gets_hypers_431_or_a_close_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let head = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let (mut conn, reply) = exchange(proxy.addr, head.as_bytes()).await;
    if !reply.status_line.is_empty() {
        assert_eq!(
            reply.status_line, "HTTP/1.1 431 Request Header Fields Too Large",
            "{reply:?}"
        );
        assert_eq!(reply.header("x-modelarts-proxy-error"), None);
    }
    assert!(conn.closes().await);
    seen.assert_nothing();
}

// 5.
#[tokio::test]
async fn too_many_header_lines_get_hypers_431_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let mut head = String::from("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..150 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let (mut conn, reply) = exchange(proxy.addr, head.as_bytes()).await;
    assert_bare(
        &mut conn,
        &reply,
        "HTTP/1.1 431 Request Header Fields Too Large",
    )
    .await;
    seen.assert_nothing();
    // hyper answered itself; the proxy still counts it.
    eventually("counted as header_too_large", || {
        proxy.metric("modelarts_proxy_connections_closed_total{reason=\"header_too_large\"}") == 1.0
    })
    .await;
}

// 6.
#[tokio::test]
async fn slowloris_partial_head_is_closed_after_header_timeout_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("[server]\nheader_timeout = \"1s\"").await;
    let start = Instant::now();
    let mut conn = Conn::open(proxy.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        .await;
    assert!(
        conn.closes().await,
        "a partial head held the connection open"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "closed before the header timeout: {:?}",
        start.elapsed()
    );
    assert!(
        conn.buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&conn.buf)
    );
    seen.assert_nothing();
}

// 7.
#[tokio::test]
async fn a_silent_connection_is_closed_after_header_timeout() {
    let (proxy, seen) = hostile_proxy("[server]\nheader_timeout = \"1s\"").await;
    let start = Instant::now();
    let mut conn = Conn::open(proxy.addr).await;
    assert!(conn.closes().await, "a silent connection was held open");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(conn.buf.is_empty(), "{:?}", conn.buf);
    seen.assert_nothing();
}

#[tokio::test]
async fn an_h2c_preface_then_silence_is_closed_after_header_timeout() {
    let (proxy, seen) = hostile_proxy("[server]\nheader_timeout = \"1s\"").await;
    let mut conn = Conn::open(proxy.addr).await;
    conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    // The server may send its SETTINGS and a GOAWAY first; then it must close.
    assert!(
        conn.closes().await,
        "a preface-only h2 connection was held open"
    );
    assert!(
        !conn.buf.starts_with(b"HTTP/1"),
        "{:?}",
        String::from_utf8_lossy(&conn.buf)
    );
    seen.assert_nothing();
}

// 8.
#[tokio::test]
async fn absolute_form_for_another_host_and_connect_are_403_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (_c, reply) = exchange(
        proxy.addr,
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert_raw_proxy_error(&reply, 403, "forbidden_client");
    let (_c, reply) = exchange(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_raw_proxy_error(&reply, 403, "forbidden_client");
    seen.assert_nothing();
}

// 9.
#[tokio::test]
async fn dot_segments_raw_and_percent_encoded_are_400_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    for path in ["/../x", "/%2e%2e/x", "/%2E%2E/x", "/a/./b", "/a/%2e/b"] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let (_c, reply) = exchange(proxy.addr, head.as_bytes()).await;
        assert_raw_proxy_error(&reply, 400, "bad_request");
    }
    seen.assert_nothing();
}

// 10.
#[tokio::test]
async fn an_obs_folded_header_is_400_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (mut conn, reply) = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: one\r\n two\r\n\r\n",
    )
    .await;
    assert_bare(&mut conn, &reply, "HTTP/1.1 400 Bad Request").await;
    seen.assert_nothing();
    // hyper answered itself; the proxy still counts it.
    eventually("counted as bad_request", || {
        proxy.metric("modelarts_proxy_connections_closed_total{reason=\"bad_request\"}") == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_bare_cr_in_a_header_value_is_400_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (mut conn, reply) = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: one\rX-Injected: two\r\n\r\n",
    )
    .await;
    assert_bare(&mut conn, &reply, "HTTP/1.1 400 Bad Request").await;
    seen.assert_nothing();
}

// 11.
#[tokio::test]
async fn an_http_0_9_request_is_refused_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (mut conn, reply) = exchange(proxy.addr, b"GET /\r\n\r\n").await;
    assert_bare(&mut conn, &reply, "HTTP/1.1 400 Bad Request").await;
    seen.assert_nothing();
}

// 12.
#[tokio::test]
async fn two_pipelined_requests_get_two_responses_in_order() {
    let (proxy, seen) = hostile_proxy("").await;
    let mut conn = Conn::open(proxy.addr).await;
    conn.send(
        b"GET /one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /two HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    let first = conn.reply().await;
    let second = conn.reply().await;
    assert_eq!(first.status_line, "HTTP/1.1 200 OK", "{first:?}");
    assert_eq!(first.text(), "/one");
    assert_eq!(second.status_line, "HTTP/1.1 200 OK", "{second:?}");
    assert_eq!(second.text(), "/two");
    seen.settle().await;
    let paths: Vec<_> = seen.saw().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/one", "/two"]);
}

// 13.
#[tokio::test]
async fn an_h2c_upgrade_is_answered_as_http_1_1_and_the_upgrade_headers_stay_behind() {
    let (proxy, seen) = hostile_proxy("").await;
    let (_c, reply) = exchange(
        proxy.addr,
        b"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status_line, "HTTP/1.1 200 OK", "{reply:?}");
    assert_eq!(reply.text(), "/up");
    assert_eq!(reply.header("upgrade"), None);
    seen.settle().await;
    let saw = seen.saw();
    assert_eq!(saw.len(), 1);
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !saw[0].headers.contains_key(name),
            "{name} reached the upstream: {:?}",
            saw[0].headers
        );
    }
}

// 14.
#[tokio::test]
async fn h2c_prior_knowledge_reaches_the_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let req = request("GET", &proxy.url("/h2")).body(body("")).unwrap();
    let resp = tokio::time::timeout(TEST_DEADLINE, h2c_client().request(req))
        .await
        .expect("within the deadline")
        .expect("h2c request succeeds");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "/h2");
    seen.settle().await;
    let saw = seen.saw();
    assert_eq!(saw.len(), 1);
    assert_eq!(
        (saw[0].method.as_str(), saw[0].path.as_str()),
        ("GET", "/h2")
    );
}

// 15.
#[tokio::test]
async fn client_credential_headers_never_reach_the_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let names = [
        "authorization",
        "x-auth-token",
        "x-sdk-date",
        "x-security-token",
        "x-apig-appcode",
        "x-sdk-content-sha256",
    ];
    let mut req = request("POST", &proxy.url("/creds")).header("x-keep", "yes");
    for name in names {
        req = req.header(name, "client-supplied-credential");
    }
    let (parts, bytes) = send(req.body(body("{}")).unwrap()).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    seen.settle().await;
    let saw = seen.saw();
    assert_eq!(saw.len(), 1);
    assert_eq!(saw[0].headers["x-keep"], "yes");
    for name in names {
        assert!(
            !saw[0].headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
}

// 16.
#[tokio::test]
async fn expect_100_continue_over_12_mib_is_413_without_100_continue_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        12 * 1024 * 1024 + 1
    );
    let (_c, reply) = exchange(proxy.addr, head.as_bytes()).await;
    // The first response on the wire is the refusal, not `100 Continue`.
    assert_raw_proxy_error(&reply, 413, "body_too_large");
    seen.assert_nothing();
}

// 17.
#[tokio::test]
async fn two_host_headers_are_400_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (_c, reply) = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.2\r\n\r\n",
    )
    .await;
    assert_raw_proxy_error(&reply, 400, "bad_request");
    seen.assert_nothing();
}

#[tokio::test]
async fn trace_is_405_with_allow_and_nothing_goes_upstream() {
    let (proxy, seen) = hostile_proxy("").await;
    let (_c, reply) = exchange(
        proxy.addr,
        b"TRACE / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Echo: me\r\n\r\n",
    )
    .await;
    assert_raw_proxy_error(&reply, 405, "method_not_allowed");
    assert_eq!(
        reply.header("allow"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
    );
    seen.assert_nothing();
}

// 18.
#[tokio::test]
async fn require_header_refuses_without_the_secret_and_never_forwards_it() {
    let (proxy, seen) = hostile_proxy(
        "[server]\nrequire_header = { name = \"X-Proxy-Key\", value = \"k-123456\" }",
    )
    .await;
    let (parts, bytes) = get(&proxy.url("/keyed")).await;
    assert_proxy_error(&parts, &bytes, 403, "forbidden_client");
    assert!(!String::from_utf8_lossy(&bytes).contains("k-123456"));
    let wrong = request("GET", &proxy.url("/keyed"))
        .header("x-proxy-key", "k-654321")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(wrong).await;
    assert_proxy_error(&parts, &bytes, 403, "forbidden_client");
    seen.assert_nothing();

    let right = request("GET", &proxy.url("/keyed"))
        .header("x-proxy-key", "k-123456")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(right).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    seen.settle().await;
    let saw = seen.saw();
    assert_eq!(saw.len(), 1);
    assert!(
        !saw[0].headers.contains_key("x-proxy-key"),
        "{:?}",
        saw[0].headers
    );
}

#[tokio::test]
async fn allow_clients_without_loopback_refuses_127_0_0_1() {
    let (proxy, seen) = hostile_proxy("[server]\nallow_clients = [\"10.0.0.0/8\"]").await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_proxy_error(&parts, &bytes, 403, "forbidden_client");
    seen.assert_nothing();
}
