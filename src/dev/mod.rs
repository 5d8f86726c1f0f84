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
//!   unsupported;
//! - CCE Pod Identity ([`StandIn::with_pod_identity`]): temporary AK/SK for
//!   a service-account token;
//! - an IAM identity provider ([`StandIn::with_federation`]): IAM tokens for
//!   an id token, and temporary AK/SK for any live token
//!   (`/v3.0/OS-CREDENTIAL/securitytokens`);
//! - an IAM agency ([`StandIn::with_agency`]): `assume_role`, for a token
//!   (`/v3/auth/tokens`) or for temporary AK/SK.
//!
//! Whatever it issues is random, and the service accepts it as the real
//! gateway would: temporary keys only with their `X-Security-Token`, tokens
//! only while live and only when scoped to the project.
//!
//! Time (token and temporary-key expiry, the signature window) comes only
//! from the injected clock, so tests can move it.
//!
//! This file holds the stand-in and its dispatch; each role it plays has its
//! own file: `service.rs` (the verifying real-time service), `stream.rs`
//! (what the service streams), `iam.rs` (tokens), `federation.rs` (id
//! tokens), `security_tokens.rs` (IAM's temporary AK/SK), `agency.rs`,
//! `pod_identity.rs`, `metadata.rs`, and `stats.rs` (the counters and
//! switches tests share with it).

mod agency;
mod federation;
mod iam;
mod metadata;
mod pod_identity;
mod security_tokens;
mod service;
mod stats;
mod stream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
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
use crate::signer::verify::constant_time_eq;

pub use agency::StandInAgency;
pub use federation::{ID_TOKEN_PATH, StandInFederation};
pub use iam::{IAM_TOKENS_PATH, StandInIam};
pub use metadata::{METADATA_SECURITYKEY_PATH, METADATA_SESSION_PATH};
pub use pod_identity::{POD_IDENTITY_PATH, StandInPodIdentity};
pub use security_tokens::SECURITY_TOKENS_PATH;
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
    pod_identity: Option<StandInPodIdentity>,
    federation: Option<StandInFederation>,
    agency: Option<StandInAgency>,
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
            pod_identity: None,
            federation: None,
            agency: None,
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
        if let Some(resp) = self.play(&parts, &body) {
            return resp;
        }
        match websocket {
            Some(upgrade) => self.websocket(&parts, &body, upgrade),
            None => self.service(&parts, &body),
        }
    }

    /// The answer of the role that owns the request's path, if one does
    /// (each only when configured; otherwise the path is the service's).
    fn play(&self, parts: &http::request::Parts, body: &Bytes) -> Option<Response<ProxyBody>> {
        let iam = self.iam.as_ref();
        Some(match parts.uri.path() {
            IAM_TOKENS_PATH => self.iam(iam?, parts, body),
            ID_TOKEN_PATH => self.id_token(iam?, self.federation.as_ref()?, parts, body),
            SECURITY_TOKENS_PATH
                if iam.is_some() && (self.federation.is_some() || self.agency.is_some()) =>
            {
                self.security_tokens(parts, body)
            }
            POD_IDENTITY_PATH => self.pod_identity(self.pod_identity.as_ref()?, parts),
            METADATA_SECURITYKEY_PATH => self.metadata(self.metadata?, parts),
            METADATA_SESSION_PATH => {
                self.metadata?;
                self.metadata_session(parts)
            }
            _ => return None,
        })
    }

    /// Fresh temporary AK/SK + security token, valid for `lifetime`, which
    /// the service accepts (with the token) until they expire.
    fn issue_temporary(&self, lifetime: Duration) -> (AkSk, DateTime<Utc>) {
        let expires_at = add((self.clock)(), lifetime);
        let key = AkSk {
            access_key: random_string(20, &ALPHANUMERIC[..36]),
            secret_key: Secret::new(random_string(40, ALPHANUMERIC)),
            security_token: Some(Secret::new(format!(
                "gQpjbi1ub3J0aC00{}",
                random_string(600, URL_SAFE)
            ))),
        };
        lock(&self.stats.temporary).insert(key.access_key.clone(), (key.clone(), expires_at));
        lock(&self.stats.issued_credentials).push(key.clone());
        (key, expires_at)
    }
}

/// Temporary keys as IAM and the metadata service write them:
/// `{"access","secret","securitytoken","expires_at"}`.
fn credential_json(key: &AkSk, expires_at: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "access": key.access_key,
        "secret": key.secret_key.expose(),
        "securitytoken": key.security_token.as_ref().map(Secret::expose),
        "expires_at": expires_at.format(HUAWEI_TIME).to_string(),
    })
}

/// A name the client sent, quoted for an error message when it looks like
/// a name (so a secret pasted in its place is never echoed).
fn shown(name: &str) -> String {
    let plain = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        format!("{name:?}")
    } else {
        "(not shown)".to_owned()
    }
}

/// Constant time in the tokens' contents: whether `given`, trimmed, is
/// one of `accepted`, trimmed.
fn one_of(given: &[u8], accepted: &[Secret]) -> bool {
    let given = given.trim_ascii();
    !given.is_empty()
        && accepted.iter().fold(false, |found, a| {
            found | constant_time_eq(given, a.expose().as_bytes().trim_ascii())
        })
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
