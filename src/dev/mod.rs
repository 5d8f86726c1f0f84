//! `modelarts-proxy dev`: a stand-in ModelArts real-time service that
//! verifies AK/SK signatures the way the gateway does (±15 min clock window)
//! and echoes what it received, so the whole flow can be tried, and tested,
//! with no cloud account.
//!
//! It can also play, on the same address:
//! - IAM ([`StandIn::with_iam`]): `POST /v3/auth/tokens` with the password
//!   method issues `MII…` tokens that the service then accepts in `X-Auth-Token`;
//! - APIG app authentication ([`StandIn::with_app_codes`]): `X-Apig-AppCode`;
//! - the ECS metadata service ([`StandIn::with_metadata`]):
//!   `GET /openstack/latest/securitykey` issues temporary AK/SK + security token,
//!   after the optional session-token step (`PUT /meta-data/latest/api/token`,
//!   then `X-Metadata-Token`), which [`StandInStats`] can make required or
//!   unsupported.
//!
//! Time (token and temporary-key expiry, the signature window) comes only
//! from the injected clock, so tests can move it.
//!
//! This file holds the stand-in and its dispatch; each role it plays has its
//! own file: `service.rs` (the verifying real-time service), `stream.rs`
//! (what the service streams), `iam.rs`, `metadata.rs`, and `stats.rs`
//! (the counters and switches tests share with it).

mod iam;
mod metadata;
mod service;
mod stats;
mod stream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::error::{ProxyBody, full};
use crate::secret::Secret;
use crate::signer::AkSk;

pub use iam::{IAM_TOKENS_PATH, StandInIam};
pub use metadata::{METADATA_SECURITYKEY_PATH, METADATA_SESSION_PATH};
pub use service::{AK_LOCK_AFTER, AK_LOCK_FOR, DATE_WINDOW};
pub use stats::StandInStats;

/// The stand-in reads bodies up to this size (above the gateway's 12 MB, so
/// the proxy's own limit is what tests see).
const STAND_IN_MAX_BODY: usize = 64 * 1024 * 1024;

/// IAM's and the metadata service's time format: UTC, microseconds, `Z`.
const HUAWEI_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Letters and digits; the first 36 are upper case and digits.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";

/// URL-safe base64 characters (64: a byte modulo 64 is unbiased).
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stand-in real-time service.
pub struct StandIn {
    keys: HashMap<String, AkSk>,
    clock: Clock,
    iam: Option<StandInIam>,
    app_codes: Vec<Secret>,
    metadata: Option<Duration>,
    stats: Arc<StandInStats>,
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
            iam: None,
            app_codes: Vec::new(),
            metadata: None,
            stats: Arc::default(),
        }
    }

    /// Also plays IAM on `POST /v3/auth/tokens`; the service accepts the
    /// tokens it issues (in `X-Auth-Token`) until they expire.
    pub fn with_iam(mut self, iam: StandInIam) -> Self {
        self.iam = Some(iam);
        self
    }

    /// The service also accepts any of `codes` in `X-Apig-AppCode`.
    pub fn with_app_codes(mut self, codes: Vec<Secret>) -> Self {
        self.app_codes = codes;
        self
    }

    /// Also plays the ECS metadata service on `GET /openstack/latest/securitykey`:
    /// each call issues fresh temporary AK/SK + security token, valid for
    /// `lifetime`, which the service accepts until they expire.
    pub fn with_metadata(mut self, lifetime: Duration) -> Self {
        self.metadata = Some(lifetime);
        self
    }

    /// Counters, switches and hooks, shared with the running stand-in.
    pub fn stats(&self) -> Arc<StandInStats> {
        self.stats.clone()
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
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
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

    async fn respond(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let websocket = crate::headers::is_websocket_upgrade(req.headers())
            .then(|| hyper::upgrade::on(&mut req));
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
        match (parts.uri.path(), &self.iam, self.metadata) {
            (IAM_TOKENS_PATH, Some(iam), _) => self.iam(iam, &parts, &body),
            (METADATA_SECURITYKEY_PATH, _, Some(lifetime)) => self.metadata(lifetime, &parts),
            (METADATA_SESSION_PATH, _, Some(_)) => self.metadata_session(&parts),
            _ => match websocket {
                Some(upgrade) => self.websocket(&parts, &body, upgrade),
                None => self.service(&parts, &body),
            },
        }
    }
}

/// `text` with each of `secrets` replaced.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s, "** redacted **");
    }
    text
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

/// `time + d`, saturating.
fn add(time: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| time.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Tokens are remembered by hash, so nothing in memory prints them.
fn token_key(token: &str) -> String {
    token_key_bytes(token.as_bytes())
}

fn token_key_bytes(token: &[u8]) -> String {
    hex::encode(Sha256::digest(token))
}

/// A stable 32-hex-digit id for a name, as IAM's ids look.
fn fake_id(kind: &str, name: &str) -> String {
    hex::encode(&Sha256::digest(format!("{kind}:{name}"))[..16])
}

/// `n` random characters from `alphabet` (at most 256 characters long).
fn random_string(n: usize, alphabet: &[u8]) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    buf.iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

/// `n` random letters and digits (demo passwords, app codes, ids).
pub fn random_text(n: usize) -> String {
    random_string(n, ALPHANUMERIC)
}

/// A random demo key pair: `DEMO` + 16 characters, and a 40-character secret.
pub fn demo_key() -> AkSk {
    AkSk {
        access_key: format!("DEMO{}", random_string(16, &ALPHANUMERIC[..36])),
        secret_key: Secret::new(random_string(40, ALPHANUMERIC)),
        security_token: None,
    }
}
