//! Test harness: in-process proxies, stand-in and programmable upstreams, and
//! clients, all on 127.0.0.1:0. No fixed ports, no sleeps.
#![allow(dead_code)]

pub mod egress;
pub mod pki;
pub mod process;
pub mod scripted;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelarts_proxy::config;
use modelarts_proxy::credentials::Sources;
use modelarts_proxy::dev::StandIn;
use modelarts_proxy::error::BoxError;
use modelarts_proxy::secret::Secret;
use modelarts_proxy::server::{Daemon, Once};
use modelarts_proxy::signer::AkSk;
use modelarts_proxy::state::{Shared, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The test key pair. The SK is distinctive so leak tests can search for it.
pub const AK: &str = "AKTESTEXAMPLE000001";
pub const SK: &str = "sk-TEST-secret-Zq9!xV7/never-log-me";

pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A guard on a failure path: a test that hangs fails after this instead.
pub const TEST_DEADLINE: Duration = Duration::from_secs(20);

pub fn key() -> AkSk {
    AkSk {
        access_key: AK.into(),
        secret_key: Secret::new(SK),
        security_token: None,
    }
}

/// Environment for config secrets: `TEST_AK` / `TEST_SK`.
pub struct TestSources;

impl Sources for TestSources {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "TEST_AK" => Some(AK.into()),
            "TEST_SK" => Some(SK.into()),
            _ => None,
        }
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn home_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// `[credentials.test]` for configs: the test key from the environment.
pub const TEST_CREDENTIALS: &str = r#"
[credentials.test]
type = "aksk"
access_key = { env = "TEST_AK" }
secret_key = { env = "TEST_SK" }
"#;

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    /// Each message is one stop signal (the first drains, a second cuts).
    pub signals: Option<tokio::sync::mpsc::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers graceful shutdown; the task ends when connections drain.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a proxy from config text; `listen` is forced to 127.0.0.1:0.
pub async fn start_proxy(toml: &str) -> Proxy {
    start_proxy_with(toml, test_runtime()).await
}

/// [`TestSources`] plus some environment variables (e.g. `HTTPS_PROXY`).
pub struct EnvSources(pub Vec<(&'static str, String)>);

impl Sources for EnvSources {
    fn env(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| TestSources.env(name))
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        TestSources.read_file(path)
    }
    fn home_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// A runtime whose secrets come from [`TestSources`] (also when re-read).
pub fn test_runtime() -> modelarts_proxy::state::Runtime {
    modelarts_proxy::state::Runtime {
        sources: Arc::new(TestSources),
        ..Default::default()
    }
}

/// As [`start_proxy`], with a given runtime (e.g. a clock of its own).
pub async fn start_proxy_with(toml: &str, runtime: modelarts_proxy::state::Runtime) -> Proxy {
    let (daemon, stop) = bound(toml, runtime, true).await;
    let (tx, stopped) = oneshot::channel();
    let task = tokio::spawn(daemon.run(Once::new(async {
        let _ = stopped.await;
    })));
    Proxy {
        stop: Some(tx),
        task,
        ..stop
    }
}

/// As [`start_proxy`], stopped by messages on [`Proxy::signals`] (like
/// SIGTERM: the first drains, a second cuts the drain short).
pub async fn start_proxy_with_signals(toml: &str) -> Proxy {
    let (daemon, proxy) = bound(toml, test_runtime(), true).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(daemon.run(rx));
    Proxy {
        signals: Some(tx),
        task,
        ..proxy
    }
}

/// As [`start_proxy`], listening where the config says (e.g. a Unix socket
/// in a temporary directory); `addr` is the first TCP listener, if any.
pub async fn start_proxy_as_configured(toml: &str) -> Proxy {
    let (daemon, stop) = bound(toml, test_runtime(), false).await;
    let (tx, stopped) = oneshot::channel();
    let task = tokio::spawn(daemon.run(Once::new(async {
        let _ = stopped.await;
    })));
    Proxy {
        stop: Some(tx),
        task,
        ..stop
    }
}

/// A bound daemon and its (not yet running) handle; `loopback_port_0`
/// replaces the configured listeners with 127.0.0.1:0.
async fn bound(
    toml: &str,
    runtime: modelarts_proxy::state::Runtime,
    loopback_port_0: bool,
) -> (Daemon, Proxy) {
    let mut v = config::load(toml, runtime.sources.as_ref())
        .unwrap_or_else(|e| panic!("test config invalid: {e:#?}"));
    if loopback_port_0 {
        v.config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    }
    if v.config.server.admin_listen.is_some() {
        v.config.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    }
    // `server.workers`, when a test sets it, runs the daemon on worker
    // threads as `run` does; otherwise it serves on the test's runtime.
    let workers = v.config.server.workers.unwrap_or(0);
    let state = State::build_with(v.config, runtime, None).expect("state builds");
    let daemon = Daemon::bind(state)
        .await
        .expect("binds")
        .on_workers(workers);
    let proxy = Proxy {
        addr: daemon
            .local_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()),
        admin: daemon.admin_addr(),
        shared: daemon.shared(),
        stop: None,
        signals: None,
        task: tokio::spawn(async {}),
    };
    (daemon, proxy)
}

impl Proxy {
    /// One value from the Prometheus text, e.g.
    /// `metric("modelarts_proxy_stream_failures_total{route=\"/\",cause=\"idle_timeout\"}")`;
    /// 0 when the series does not exist yet.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.shared.metrics.encode();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

/// Polls `cond` until it holds; panics after [`TEST_DEADLINE`]. For state
/// that changes on another task (a connection accepted, a gauge moved):
/// correctness never depends on how long the polls wait.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An upstream that holds each request until `release` says go, counting
/// arrivals.
pub async fn held_upstream(
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    release: tokio::sync::watch::Receiver<bool>,
) -> SocketAddr {
    upstream(move |_req| {
        arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut release = release.clone();
        async move {
            let _ = release.wait_for(|go| *go).await;
            text_response(200, "done")
        }
    })
    .await
}

/// True when the request's AK/SK signature, made with [`key`], checks out
/// over `body` (as the gateway checks it, within 15 minutes).
pub fn signature_ok(parts: &http::request::Parts, body: &[u8]) -> bool {
    modelarts_proxy::signer::verify::verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
        |_| Some(key()),
        chrono::Utc::now(),
        chrono::Duration::minutes(15),
    )
    .is_ok()
}

/// A stand-in ModelArts service that verifies signatures made with [`key`].
pub async fn stand_in() -> SocketAddr {
    StandIn::new(vec![key()], Arc::new(chrono::Utc::now))
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A proxy with one signing route `/` in front of a fresh stand-in, plus `extra` config.
pub async fn signing_proxy(route_extra: &str) -> (Proxy, SocketAddr) {
    let upstream = stand_in().await;
    let toml = format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}/v1/infers/svc\"\ncredentials = \"test\"\n{route_extra}\n{TEST_CREDENTIALS}"
    );
    (start_proxy(&toml).await, upstream)
}

/// An upstream whose every request is handled by `handler`.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

pub fn body(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A received body as a test [`Body`] (for passing it on).
pub fn boxed(incoming: Incoming) -> Body {
    incoming.map_err(BoxError::from).boxed_unsync()
}

pub fn text_response(status: u16, text: &str) -> Response<Body> {
    let mut r = Response::new(body(text.to_owned()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

/// An HTTP/1.1 client (no pooling surprises: one per call site is fine).
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (HTTP/2 prior knowledge) client.
pub fn h2c_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request and collects the response.
pub async fn send(req: Request<Body>) -> (http::response::Parts, Bytes) {
    let resp = tokio::time::timeout(TEST_DEADLINE, client().request(req))
        .await
        .expect("response within the test deadline")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts, bytes)
}

/// A GET with no body, sent and collected.
pub async fn get(url: &str) -> (http::response::Parts, Bytes) {
    send(request("GET", url).body(body("")).unwrap()).await
}

pub fn request(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

pub fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Writes raw bytes to `addr` and reads the response until the server closes
/// or the head and `Content-Length` body have arrived.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len = text[..head_end].lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                if len.is_some_and(|l| buf.len() >= head_end + 4 + l) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(TEST_DEADLINE, read)
        .await
        .expect("raw response within the deadline");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Asserts a proxy-made error: status, `x-modelarts-proxy-error`, JSON code.
pub fn assert_proxy_error(parts: &http::response::Parts, body: &Bytes, status: u16, code: &str) {
    assert_eq!(
        parts.status.as_u16(),
        status,
        "body: {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(parts.headers["x-modelarts-proxy-error"], code);
    let v = json(body);
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}
