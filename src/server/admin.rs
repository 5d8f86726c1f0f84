//! The admin listener: `/healthz` (alive), `/readyz` (ready for traffic;
//! 503 while draining or until every expiring credential is fetched),
//! `/metrics` (Prometheus text), and with `[server] quitquitquit = true`,
//! `POST /quitquitquit` (the drain SIGTERM starts, for a Job's main
//! container to stop its sidecar). It holds no credentials.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::error::{ProxyBody, full};
use crate::state::Shared;

/// Probes and scrapers open a handful of connections; more wait.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A probe that sends nothing is dropped after this long.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed `accept`, wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    quit: Arc<Notify>,
) {
    let slots = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let (shared, draining, quit) = (shared.clone(), draining.clone(), quit.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let draining = draining.load(Ordering::Acquire);
                let resp = match req.uri().path() {
                    "/quitquitquit" => quitquitquit(req.method(), &shared, draining, &quit),
                    path => response(path, &shared, draining),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

/// `POST /quitquitquit`: starts the drain (once; later calls say it is under
/// way). Anything but POST does nothing; off, the path does not exist.
fn quitquitquit(
    method: &Method,
    shared: &Shared,
    draining: bool,
    quit: &Notify,
) -> Response<ProxyBody> {
    let (status, text) = if !shared.state.load().config.server.quitquitquit {
        (
            StatusCode::NOT_FOUND,
            "not found: /quitquitquit is off ([server] quitquitquit = true turns it on)\n",
        )
    } else if method != Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /quitquitquit stops the proxy (as SIGTERM does); nothing was done\n",
        )
    } else if draining {
        (StatusCode::OK, "already stopping\n")
    } else {
        tracing::info!("POST /quitquitquit received");
        quit.notify_one();
        (StatusCode::OK, "stopping: draining as on SIGTERM\n")
    };
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    }
    resp
}

fn response(path: &str, shared: &Shared, draining: bool) -> Response<ProxyBody> {
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
        "/status.json" => (
            StatusCode::OK,
            "application/json",
            Bytes::from(super::status::json(shared, draining).to_string()),
        ),
        "/" => {
            let page = super::status::html(&super::status::json(shared, draining));
            let mut resp = Response::new(full(page));
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(super::status::CSP),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            return resp;
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found: try /, /status.json, /healthz, /readyz or /metrics\n"),
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
