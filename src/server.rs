//! The listeners: client connections (HTTP/1.1 and h2c through hyper-util's
//! auto builder) and the admin endpoints, with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::error::{ProxyBody, full};
use crate::proxy;
use crate::state::{Shared, State};

/// A client that has not sent its request headers after this long is
/// dropped (slowloris protection; hyper-util needs a timer for it).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed `accept` (e.g. out of file descriptors), wait this long
/// before the next, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A bound daemon, ready to [`run`](Daemon::run).
pub struct Daemon {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    draining: Arc<AtomicBool>,
}

impl Daemon {
    /// Binds every listener in the config. Fails with the address that could not be bound.
    pub async fn bind(state: State) -> Result<Daemon, String> {
        let mut listeners = Vec::new();
        for addr in &state.config.server.listen {
            listeners.push(bind(*addr).await?);
        }
        let admin = match state.config.server.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Daemon {
            shared: Arc::new(Shared::new(state)),
            listeners,
            admin,
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The state every request reads; reloads swap it.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish for up to `server.shutdown_grace`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Daemon {
            shared,
            listeners,
            admin,
            draining,
        } = self;
        let (tx, mut accepted) = mpsc::channel::<TcpStream>(64);
        let mut acceptors = Vec::new();
        for listener in listeners {
            acceptors.push(tokio::spawn(accept_loop(listener, tx.clone())));
        }
        drop(tx);
        let admin_task =
            admin.map(|l| tokio::spawn(serve_admin(l, shared.clone(), draining.clone())));

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                Some(stream) = accepted.recv() => {
                    let shared = shared.clone();
                    let service = service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(proxy::handle(&shared, req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!("client connection ended with an error: {e}");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }

        draining.store(true, Ordering::Release);
        for a in &acceptors {
            a.abort();
        }
        let grace = shared.state.load().config.server.shutdown_grace;
        tracing::info!(
            connections = graceful.count(),
            "shutting down: no new connections; in-flight requests have {}",
            humantime::format_duration(grace)
        );
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections finished"),
            Err(_) => {
                tracing::warn!("shutdown grace period over; closing the remaining connections")
            }
        }
        if let Some(t) = admin_task {
            t.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<TcpStream>) {
    loop {
        match listener.accept().await {
            Ok((stream, _remote)) => {
                let _ = stream.set_nodelay(true);
                if tx.send(stream).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// `/healthz` (alive), `/readyz` (accepting traffic; 503 while draining),
/// `/metrics` (Prometheus text).
async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, draining: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let shared = shared.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp =
                    admin_response(req.uri().path(), &shared, draining.load(Ordering::Acquire));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_response(path: &str, shared: &Shared, draining: bool) -> Response<ProxyBody> {
    let (status, content_type, body): (StatusCode, &str, Bytes) = match path {
        "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" if draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"draining\n"),
        ),
        // Not ready until every IAM token / temporary key has been fetched.
        "/readyz" => match shared.state.load().readiness() {
            Ok(()) => (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n")),
            Err(reasons) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from(format!("not ready:\n{}\n", reasons.join("\n"))),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(shared.metrics.encode()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found: try /healthz, /readyz or /metrics\n"),
        ),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type).expect("static"),
    );
    resp
}
