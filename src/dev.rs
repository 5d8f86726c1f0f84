//! `modelarts-proxy dev`: a stand-in ModelArts real-time service that
//! verifies AK/SK signatures the way the gateway does (±15 min clock window)
//! and echoes what it received, so the whole flow can be tried, and tested,
//! with no cloud account.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::error::{ProxyBody, full};
use crate::proxy::Clock;
use crate::secret::Secret;
use crate::signer::AkSk;
use crate::signer::verify::{VerifyError, verify};

/// The gateway rejects an `X-Sdk-Date` more than 15 minutes from its clock.
pub const DATE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// The stand-in reads bodies up to this size (above the gateway's 12 MB, so
/// the proxy's own limit is what tests see).
const STAND_IN_MAX_BODY: usize = 64 * 1024 * 1024;

/// Bodies up to this size are echoed back as text.
const ECHO_BODY_LIMIT: usize = 4096;

/// A stand-in real-time service.
pub struct StandIn {
    keys: HashMap<String, AkSk>,
    clock: Clock,
}

impl StandIn {
    /// A service that accepts signatures made with any of `keys`.
    pub fn new(keys: Vec<AkSk>, clock: Clock) -> Self {
        StandIn {
            keys: keys
                .into_iter()
                .map(|k| (k.access_key.clone(), k))
                .collect(),
            clock,
        }
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        let this = Arc::new(self);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let this = this.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.respond(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Binds `addr` and serves in the background; returns the bound address.
    pub async fn spawn(self, addr: SocketAddr) -> Result<SocketAddr, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(self.serve(listener));
        Ok(local)
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, STAND_IN_MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error_msg": format!("reading the body failed: {e}")}),
                );
            }
        };
        let lookup = |ak: &str| self.keys.get(ak).cloned();
        match verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &body,
            lookup,
            (self.clock)(),
            DATE_WINDOW,
        ) {
            Ok(_) => json(StatusCode::OK, echo(&parts, &body)),
            Err(e) => rejection(&e),
        }
    }
}

/// Headers that carry a credential; echoed as `** redacted **`, since echo
/// output gets pasted into tickets. (`Authorization` holds only a signature.)
const REDACTED_HEADERS: &[&str] = &["x-security-token", "x-auth-token", "x-apig-appcode"];

/// What the service received, as JSON.
fn echo(parts: &http::request::Parts, body: &Bytes) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let v = if REDACTED_HEADERS.contains(&name.as_str()) {
            "** redacted **".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), v.into());
            }
        }
    }
    let text = std::str::from_utf8(body)
        .ok()
        .filter(|t| t.len() <= ECHO_BODY_LIMIT);
    serde_json::json!({
        "verified": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body.len(),
        "body_sha256": hex::encode(Sha256::digest(body)),
        "body": text,
    })
}

/// The gateway's answer to a bad signature, with the reason spelled out.
fn rejection(err: &VerifyError) -> Response<ProxyBody> {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({
            "error_code": "APIG.0301",
            "error_msg": format!("Incorrect IAM authentication information: {err}"),
        }),
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A random demo key pair: `DEMO` + 16 characters, and a 40-character secret.
pub fn demo_key() -> AkSk {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";
    let random = |n: usize, alphabet: &[u8]| {
        let mut buf = vec![0u8; n];
        getrandom::fill(&mut buf).expect("the OS random source is available");
        buf.iter()
            .map(|b| alphabet[*b as usize % alphabet.len()] as char)
            .collect::<String>()
    };
    AkSk {
        access_key: format!("DEMO{}", random(16, &ALPHABET[..36])),
        secret_key: Secret::new(random(40, ALPHABET)),
        security_token: None,
    }
}
