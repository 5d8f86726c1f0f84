//! A corporate egress proxy on loopback: `CONNECT` tunnels and absolute-form
//! requests, every one recorded, optionally requiring `Proxy-Authorization`.
//! Whatever host a request names, it is sent to `origin` (the proxy does the
//! name resolution, as a real one does: the daemon cannot resolve `*.test`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::{Body, body, client};

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// `host:port` for CONNECT, the absolute URI otherwise.
    pub target: String,
    pub authorization: Option<String>,
}

pub struct EgressProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EgressProxy {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts the proxy; `require`: the exact `Proxy-Authorization` it wants
/// (else 407).
pub async fn egress_proxy(origin: SocketAddr, require: Option<String>) -> EgressProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let require = Arc::new(require);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (log, require) = (log.clone(), require.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (log, require) = (log.clone(), require.clone());
                    async move { Ok::<_, Infallible>(handle(req, origin, &log, &require).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    EgressProxy { addr, seen }
}

async fn handle(
    mut req: Request<Incoming>,
    origin: SocketAddr,
    log: &Mutex<Vec<Seen>>,
    require: &Option<String>,
) -> Response<Body> {
    let authorization = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    log.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        authorization: authorization.clone(),
    });
    if require.is_some() && authorization != *require {
        return Response::builder()
            .status(407)
            .header(header::PROXY_AUTHENTICATE, "Basic realm=\"corp\"")
            .body(body("proxy authentication required"))
            .unwrap();
    }
    if req.method() == http::Method::CONNECT {
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let mut client_side = TokioIo::new(upgraded);
            let Ok(mut server_side) = TcpStream::connect(origin).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client_side, &mut server_side).await;
        });
        return Response::new(body(""));
    }
    // Absolute form: forward to the origin, as a caching proxy would.
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = format!("http://{origin}{path}").parse().unwrap();
    req.headers_mut().remove(header::PROXY_AUTHORIZATION);
    let (parts, incoming) = req.into_parts();
    let forwarded = Request::from_parts(parts, super::boxed(incoming));
    match client().request(forwarded).await {
        Ok(resp) => resp.map(super::boxed),
        Err(e) => Response::builder()
            .status(502)
            .body(body(format!("test proxy: {e}")))
            .unwrap(),
    }
}
