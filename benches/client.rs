//! The upstream client's own cost per request: a checkout, the hand-over to
//! the connection and the answer, against a trivial upstream on loopback,
//! for the proxy's client and for hyper-util's legacy pooled client (what
//! the proxy used before issue 17) in the same run. Both send the same GET
//! and read the same small answer from the same server, so the difference
//! is the clients'. Everything runs on one current-thread runtime, as a
//! daemon worker does.
//!
//! ```text
//! cargo bench --bench client
//! cargo bench --bench client -- --warm-up-time 1 --measurement-time 3   # quick
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelarts_proxy::client::HttpClient;
use modelarts_proxy::config::{Egress, Http2, UpstreamTls};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// HTTP/1.1 and HTTP/2 (prior knowledge) on one port; every request gets
/// the same small JSON.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn ours(http2: Http2) -> HttpClient {
    let tls = UpstreamTls {
        http2,
        ..UpstreamTls::default()
    };
    modelarts_proxy::client::build(&tls, &Egress::default()).unwrap()
}

fn legacy(http2: bool) -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(http)
}

fn client(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(upstream());
    let uri: http::Uri = format!("http://{addr}/v1/infer").parse().unwrap();
    let mut group = c.benchmark_group("client");
    for (name, http2) in [("h1", Http2::Auto), ("h2", Http2::Http2)] {
        let client = ours(http2);
        group.bench_function(format!("ours_{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = Request::get(uri.clone())
                        .body(modelarts_proxy::error::empty())
                        .unwrap();
                    let resp = client.request(req).await.unwrap();
                    resp.into_body().collect().await.unwrap()
                })
            })
        });
        let old = legacy(http2 == Http2::Http2);
        group.bench_function(format!("legacy_{name}"), |b| {
            b.iter(|| run_legacy(&rt, &old, &uri))
        });
    }
    group.finish();
}

fn run_legacy(
    rt: &Runtime,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: &http::Uri,
) -> http_body_util::Collected<Bytes> {
    rt.block_on(async {
        let req = Request::get(uri.clone()).body(Full::default()).unwrap();
        let resp = client.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap()
    })
}

criterion_group!(benches, client);
criterion_main!(benches);
