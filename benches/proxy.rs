//! End-to-end cost of one request through the proxy, against the same
//! request sent straight to the upstream, in the same process and run.
//! The absolute numbers depend on the machine; the ratio
//! `proxy_* / direct` is what to read.
//!
//! Everything (client, proxy, upstream) runs on one current-thread tokio
//! runtime, so a measurement is the serialized CPU cost of a request on
//! loopback — client + proxy + upstream for `proxy_*`, client + upstream for
//! `direct` — with no cross-thread wake-ups to add noise.
//!
//! * `request/direct`: keep-alive client → trivial upstream.
//! * `request/proxy_none`: client → proxy route with no credentials → upstream.
//! * `request/proxy_aksk_json`: client → proxy route with AK/SK, `payload = auto`
//!   and a JSON body (so the body is buffered, hashed and signed) → upstream.
//! * `request/proxy_token`: client → proxy route with an IAM token (cached,
//!   refreshed in the background) → upstream. The body is kept for a 401 replay.
//! * `request/proxy_apikey`: client → proxy route with an app code → upstream.
//!   Retries are on (the default `retry`), as on every route above.
//! * `request/proxy_apikey_retries_off`: the same with `retry = { attempts = 1 }`:
//!   what a retry-capable path costs when nothing fails is the difference.
//! * `request/proxy_apikey_paced_fallback`: the same with `rate`, `concurrency`
//!   (never reached) and a `[[route.fallback]]`: the pacing gate and the
//!   target choice on the happy path.
//! * `request/proxy_apikey_traced`: `proxy_apikey` through a second proxy with
//!   `[telemetry]` on (`sample_ratio = 1.0`): four spans per request, encoded
//!   and posted to a collector (the trivial upstream) in batches.
//! * `request/proxy_apikey_traced_unsampled`: the same with `sample_ratio = 0.0`:
//!   the spans are made but not recorded; only the `traceparent` goes upstream.
//!   `proxy_apikey` is the same request with tracing off (no endpoint).
//!
//! All three send the same POST with a small JSON body to the same trivial
//! upstream (reads the body, answers 200 with a small JSON), so the only
//! difference is the proxy hop. The trivial upstream does not check
//! signatures; before measuring, one request is signed by the same proxy and
//! sent to the verifying stand-in (`modelarts_proxy::dev::StandIn`) to prove
//! the AK/SK route produces valid signatures.
//!
//! ```text
//! cargo bench --bench proxy
//! cargo bench --bench proxy -- --warm-up-time 1 --measurement-time 2   # quick
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::AkSk;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

const SERVICE_PATH: &str = "/v1/infers/3f2b9c1e-7a4d-4e8b-9c61-0d5e2f8a1b7c";
const JSON_BODY: &[u8] = br#"{"prompt":"Summarise this paragraph.","max_tokens":128}"#;
const UPSTREAM_REPLY: &[u8] = br#"{"result":"ok","tokens":3}"#;
const AK: &str = "BENCHAKEXAMPLE000001";
const SK: &str = "benchSecretKeyExample0000000000000000000";

type BenchClient = Client<HttpConnector, Full<Bytes>>;

/// The addresses of everything started by [`start`].
struct Servers {
    upstream: SocketAddr,
    proxy: SocketAddr,
    /// `[telemetry]` on, every trace sampled.
    traced: SocketAddr,
    /// `[telemetry]` on, none sampled.
    unsampled: SocketAddr,
}

/// A proxy from `toml`, serving in the background.
async fn serve(toml: &str) -> SocketAddr {
    // Literal secrets in the config draw warnings; irrelevant here.
    let validated = modelarts_proxy::config::load(toml, &modelarts_proxy::credentials::System)
        .unwrap_or_else(|problems| panic!("bench config rejected: {problems:?}"));
    let state = modelarts_proxy::state::State::build(validated.config)
        .unwrap_or_else(|problems| panic!("cannot build the proxy state: {problems:?}"));
    let daemon = modelarts_proxy::server::Daemon::bind(state).await.unwrap();
    let proxy = daemon.local_addrs()[0];
    tokio::spawn(daemon.run(modelarts_proxy::server::Once::new(std::future::pending())));
    proxy
}

/// A proxy with one API-key route and tracing on, exporting to `collector`.
async fn traced(upstream: SocketAddr, collector: SocketAddr, ratio: f64) -> SocketAddr {
    serve(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[telemetry]\notlp_endpoint = \"http://{collector}\"\nsample_ratio = {ratio:.1}\n\
         [[route]]\nprefix = \"/apikey\"\nupstream = \"http://{upstream}{SERVICE_PATH}\"\ncredentials = \"appcode\"\n\
         [credentials.appcode]\ntype = \"apikey\"\napp_code = \"bench-app-code\"\n"
    ))
    .await
}

/// The trivial upstream: reads the whole body, answers 200 with a small JSON.
async fn trivial_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut resp = Response::new(Full::new(Bytes::from_static(UPSTREAM_REPLY)));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn start() -> Servers {
    let upstream = trivial_upstream().await;
    let key = AkSk {
        access_key: AK.to_owned(),
        secret_key: Secret::new(SK),
        security_token: None,
    };
    let iam = modelarts_proxy::dev::StandInIam {
        user: "bench".into(),
        password: Secret::new("bench-password"),
        domain: "bench".into(),
        project: "cn-north-4".into(),
        project_id: "0a1b".into(),
        token_lifetime: std::time::Duration::from_secs(24 * 3600),
        token_size: 8192,
    };
    let stand_in = modelarts_proxy::dev::StandIn::new(vec![key], Arc::new(chrono::Utc::now))
        .with_iam(iam)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[route]]
prefix = "/none"
upstream = "http://{upstream}{SERVICE_PATH}"

[[route]]
prefix = "/aksk"
upstream = "http://{upstream}{SERVICE_PATH}"
credentials = "bench"
payload = "auto"

[[route]]
prefix = "/verify"
upstream = "http://{stand_in}{SERVICE_PATH}"
credentials = "bench"
payload = "auto"

[[route]]
prefix = "/token"
upstream = "http://{upstream}{SERVICE_PATH}"
credentials = "iam"

[[route]]
prefix = "/verify_token"
upstream = "http://{stand_in}{SERVICE_PATH}"
credentials = "iam"

[[route]]
prefix = "/apikey"
upstream = "http://{upstream}{SERVICE_PATH}"
credentials = "appcode"

[[route]]
prefix = "/apikey_retries_off"
upstream = "http://{upstream}{SERVICE_PATH}"
credentials = "appcode"
retry = {{ attempts = 1 }}

[[route]]
prefix = "/apikey_paced_fallback"
upstream = "http://{upstream}{SERVICE_PATH}"
credentials = "appcode"
rate = "1000000/s"
concurrency = 100000
[[route.fallback]]
upstream = "http://{stand_in}{SERVICE_PATH}"

[credentials.bench]
type = "aksk"
access_key = "{AK}"
secret_key = "{SK}"

[credentials.iam]
type = "token"
iam_endpoint = "http://{stand_in}"
user = "bench"
password = "bench-password"
domain = "bench"
project = "cn-north-4"

[credentials.appcode]
type = "apikey"
app_code = "bench-app-code"
"#
    );
    let proxy = serve(&toml).await;
    // The trivial upstream doubles as the collector: it reads the batch and answers 200.
    let collector = trivial_upstream().await;
    Servers {
        upstream,
        proxy,
        traced: traced(upstream, collector, 1.0).await,
        unsampled: traced(upstream, collector, 0.0).await,
    }
}

fn post(uri: &Uri) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(JSON_BODY)))
        .unwrap()
}

/// One request, start to finish: send, check the status, read the whole body.
async fn round_trip(client: &BenchClient, uri: &Uri) -> Bytes {
    let resp = client.request(post(uri)).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

fn request(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let servers = rt.block_on(start());
    let client: BenchClient = Client::builder(TokioExecutor::new()).build_http();

    let direct: Uri = format!("http://{}{SERVICE_PATH}", servers.upstream)
        .parse()
        .unwrap();
    let proxy_none: Uri = format!("http://{}/none", servers.proxy).parse().unwrap();
    let proxy_aksk: Uri = format!("http://{}/aksk", servers.proxy).parse().unwrap();
    let verify: Uri = format!("http://{}/verify", servers.proxy).parse().unwrap();
    let proxy_token: Uri = format!("http://{}/token", servers.proxy).parse().unwrap();
    let verify_token: Uri = format!("http://{}/verify_token", servers.proxy)
        .parse()
        .unwrap();
    let proxy_apikey: Uri = format!("http://{}/apikey", servers.proxy).parse().unwrap();
    let retries_off: Uri = format!("http://{}/apikey_retries_off", servers.proxy)
        .parse()
        .unwrap();
    let paced: Uri = format!("http://{}/apikey_paced_fallback", servers.proxy)
        .parse()
        .unwrap();
    let traced: Uri = format!("http://{}/apikey", servers.traced).parse().unwrap();
    let unsampled: Uri = format!("http://{}/apikey", servers.unsampled)
        .parse()
        .unwrap();

    // Not measured: the AK/SK route signs correctly (the stand-in checks the
    // signature), and every measured target answers 200.
    rt.block_on(async {
        let echo = round_trip(&client, &verify).await;
        let echo: serde_json::Value = serde_json::from_slice(&echo).unwrap();
        assert_eq!(echo["verified"], true, "{echo}");
        assert_eq!(echo["path"], SERVICE_PATH, "{echo}");
        let echo = round_trip(&client, &verify_token).await;
        let echo: serde_json::Value = serde_json::from_slice(&echo).unwrap();
        assert_eq!(echo["auth"], "token", "{echo}");
        for uri in [
            &direct,
            &proxy_none,
            &proxy_aksk,
            &proxy_token,
            &proxy_apikey,
            &retries_off,
            &paced,
            &traced,
            &unsampled,
        ] {
            assert_eq!(&round_trip(&client, uri).await[..], UPSTREAM_REPLY);
        }
    });

    let mut group = c.benchmark_group("request");
    for (name, uri) in [
        ("direct", &direct),
        ("proxy_none", &proxy_none),
        ("proxy_aksk_json", &proxy_aksk),
        ("proxy_token", &proxy_token),
        ("proxy_apikey", &proxy_apikey),
        ("proxy_apikey_retries_off", &retries_off),
        ("proxy_apikey_paced_fallback", &paced),
        ("proxy_apikey_traced", &traced),
        ("proxy_apikey_traced_unsampled", &unsampled),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(round_trip(&client, uri)));
        });
    }
    group.finish();
}

criterion_group!(benches, request);
criterion_main!(benches);
