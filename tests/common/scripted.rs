//! Upstreams that do on purpose what real ones do in the ordinary life of
//! their connections: an HTTP/2 server (the `h2` crate, cleartext by prior
//! knowledge) that recycles connections with GOAWAY, allows few concurrent
//! streams, ends a body with an empty DATA frame of its own or with
//! trailers, and sends big heads; and a raw HTTP/1.1 server that closes a
//! keep-alive connection after reading a request, or ends a chunked body
//! with trailers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What the HTTP/2 upstream does.
#[derive(Clone, Default)]
pub struct H2Script {
    /// A graceful GOAWAY after this many requests on a connection (nginx's
    /// `keepalive_requests`).
    pub goaway_every: Option<usize>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (nginx's `http2_max_concurrent_streams`).
    pub max_streams: Option<u32>,
    /// A response header `x-big` of this many bytes.
    pub big_header: Option<usize>,
    /// END_STREAM goes in an empty DATA frame of its own, sent only once a
    /// permit is available here (the test adds one when its client has the
    /// whole body); without it, after a yield.
    pub release: Option<Arc<Semaphore>>,
    /// End with trailers instead of an empty DATA frame.
    pub trailers: bool,
}

/// A running HTTP/2 upstream and what it saw.
pub struct H2Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Streams the proxy reset before the upstream could end them.
    pub resets: Arc<AtomicUsize>,
}

/// The body every scripted upstream answers with (its length is announced).
pub const ANSWER: &[u8] = b"{\"ok\":true}";

pub async fn h2_upstream(script: H2Script) -> H2Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = H2Upstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        requests: Arc::default(),
        resets: Arc::default(),
    };
    let (connections, requests, resets) = (
        up.connections.clone(),
        up.requests.clone(),
        up.resets.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            connections.fetch_add(1, Ordering::Relaxed);
            let (script, requests, resets) = (script.clone(), requests.clone(), resets.clone());
            tokio::spawn(serve_h2(stream, script, requests, resets));
        }
    });
    up
}

async fn serve_h2(
    stream: TcpStream,
    script: H2Script,
    requests: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
) {
    let mut builder = h2::server::Builder::new();
    if let Some(n) = script.max_streams {
        builder.max_concurrent_streams(n);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(Lingering(Some(stream))).await else {
        return;
    };
    let mut served = 0;
    while let Some(next) = conn.accept().await {
        let Ok((req, respond)) = next else { break };
        served += 1;
        requests.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(answer_h2(req, respond, script.clone(), resets.clone()));
        if script.goaway_every == Some(served) {
            conn.graceful_shutdown();
        }
    }
}

async fn answer_h2(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    script: H2Script,
    resets: Arc<AtomicUsize>,
) {
    let mut body = req.into_body();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
    }
    let mut head = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", ANSWER.len());
    if let Some(n) = script.big_header {
        head = head.header("x-big", "b".repeat(n));
    }
    let Ok(mut send) = respond.send_response(head.body(()).unwrap(), false) else {
        resets.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if send.send_data(Bytes::from_static(ANSWER), false).is_err() {
        resets.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match &script.release {
        Some(release) => release.acquire().await.unwrap().forget(),
        None => tokio::task::yield_now().await,
    }
    let ended = if script.trailers {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-usage", HeaderValue::from_static("42"));
        send.send_trailers(trailers)
    } else {
        send.send_data(Bytes::new(), true)
    };
    if ended.is_err() {
        resets.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection that closes as nginx does (`lingering_close`): its write
/// side first, then it reads what the client still sends for a moment
/// before the socket goes. Closed at once with unread bytes, the socket
/// would answer them with RST, and the client could lose the last frames
/// written to it (a GOAWAY saying which streams were not processed).
struct Lingering(Option<TcpStream>);

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                let drain = async { while let Ok(1..) = stream.read(&mut sink).await {} };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
            });
        }
    }
}

impl tokio::io::AsyncRead for Lingering {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.0.as_mut().unwrap()).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Lingering {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(self.0.as_mut().unwrap()).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.0.as_mut().unwrap()).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.0.as_mut().unwrap()).poll_shutdown(cx)
    }
}

/// What the raw HTTP/1.1 upstream does.
#[derive(Clone, Copy)]
pub enum H1Script {
    /// Answers the first request on each connection; reads the second one
    /// whole, then closes without a byte of answer (a reload closing idle
    /// keep-alive connections just as a request was written to one).
    CloseSecondRequest,
    /// Answers with a chunked body ending in trailers.
    Trailers,
    /// Answers every request, keeping the connection open.
    KeepAlive,
    /// Answers the first request on each connection (as keep-alive), then
    /// closes it: an upstream closing idle connections.
    CloseAfterAnswer,
    /// Answers with a header `x-big` of this many bytes.
    BigHead(usize),
}

/// A running raw HTTP/1.1 upstream.
pub struct H1Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Each request's head as it arrived (in lower case), in order.
    pub heads: Arc<std::sync::Mutex<Vec<String>>>,
}

pub async fn h1_upstream(script: H1Script) -> H1Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = H1Upstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        requests: Arc::default(),
        heads: Arc::default(),
    };
    let (connections, requests) = (up.connections.clone(), up.requests.clone());
    let heads = up.heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve_h1(stream, script, requests.clone(), heads.clone()));
        }
    });
    up
}

async fn serve_h1(
    mut stream: TcpStream,
    script: H1Script,
    requests: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut served = 0;
    while let Some(head) = read_request(&mut stream, &mut buf).await {
        served += 1;
        heads.lock().unwrap().push(head.clone());
        let head_only = head.starts_with("head ");
        requests.fetch_add(1, Ordering::Relaxed);
        let answer = match script {
            H1Script::CloseSecondRequest if served == 2 => return,
            H1Script::CloseSecondRequest | H1Script::KeepAlive => plain_answer(""),
            H1Script::CloseAfterAnswer => plain_answer(""),
            H1Script::BigHead(n) => plain_answer(&format!("x-big: {}\r\n", "b".repeat(n))),
            H1Script::Trailers => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ntrailer: x-usage\r\n\r\n{:x}\r\n{}\r\n0\r\nx-usage: 42\r\n\r\n",
                ANSWER.len(),
                std::str::from_utf8(ANSWER).unwrap()
            ),
        };
        let answer = match answer.find("\r\n\r\n") {
            Some(end) if head_only => &answer[..end + 4],
            _ => &answer[..],
        };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if matches!(script, H1Script::CloseAfterAnswer) {
            return;
        }
    }
}

fn plain_answer(extra_headers: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{}",
        ANSWER.len(),
        std::str::from_utf8(ANSWER).unwrap()
    )
}

/// Reads one request (head and `Content-Length` body) off `stream`,
/// keeping what follows it in `buf`; its head in lower case, `None` at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return Some(head);
            }
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
