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

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
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
use crate::signer::verify::{constant_time_eq, parse_authorization, verify};

/// The gateway rejects an `X-Sdk-Date` more than 15 minutes from its clock.
pub const DATE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// APIG locks an AK after this many failed signature checks in a row…
pub const AK_LOCK_AFTER: u32 = 5;
/// …for this long, for every application that uses it.
pub const AK_LOCK_FOR: chrono::Duration = chrono::Duration::minutes(5);

/// IAM's token endpoint.
pub const IAM_TOKENS_PATH: &str = "/v3/auth/tokens";

/// The ECS metadata service's session-token endpoint.
pub const METADATA_SESSION_PATH: &str = crate::auth::metadata::SESSION_TOKEN_PATH;

/// The ECS metadata service's temporary-credentials endpoint.
pub const METADATA_SECURITYKEY_PATH: &str = "/openstack/latest/securitykey";

/// The stand-in reads bodies up to this size (above the gateway's 12 MB, so
/// the proxy's own limit is what tests see).
const STAND_IN_MAX_BODY: usize = 64 * 1024 * 1024;

/// Bodies up to this size are echoed back as text.
const ECHO_BODY_LIMIT: usize = 4096;

/// IAM's and the metadata service's time format: UTC, microseconds, `Z`.
const HUAWEI_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Letters and digits; the first 36 are upper case and digits.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";

/// URL-safe base64 characters (64: a byte modulo 64 is unbiased).
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The stand-in IAM's one user and one project.
#[derive(Clone, Debug)]
pub struct StandInIam {
    pub user: String,
    pub password: Secret,
    /// The account (domain) name.
    pub domain: String,
    /// The project name a token may be scoped to (e.g. `cn-north-4`).
    pub project: String,
    /// The same project, by id.
    pub project_id: String,
    /// How long an issued token is valid (IAM: 24 h).
    pub token_lifetime: Duration,
    /// Total length of an issued token, `MII` included (IAM's are several KB).
    pub token_size: usize,
}

/// Counters, switches and hooks shared with a running stand-in; get them
/// with [`StandIn::stats`] before spawning.
#[derive(Default)]
pub struct StandInStats {
    /// Requests to `POST /v3/auth/tokens` (any outcome, also while down).
    pub iam_calls: AtomicUsize,
    /// Requests to `/openstack/latest/securitykey` (any outcome, also while down).
    pub metadata_calls: AtomicUsize,
    /// While true, IAM answers 503.
    pub iam_down: AtomicBool,
    /// While true, the metadata service answers 503.
    pub metadata_down: AtomicBool,
    /// `PUT /meta-data/latest/api/token` requests (any outcome).
    pub metadata_session_calls: AtomicUsize,
    /// While true, a credential request without a valid `X-Metadata-Token`
    /// is refused with 401 (a hardened server).
    pub metadata_session_required: AtomicBool,
    /// While true, the session-token path answers 404 (an older service).
    pub metadata_session_unsupported: AtomicBool,
    /// Live metadata session tokens → expiry.
    sessions: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Service requests answered 200 (any credential).
    pub accepted: AtomicUsize,
    /// Service requests answered 401.
    pub rejected: AtomicUsize,
    /// Every token IAM issued, oldest first (also after expiry or revocation).
    pub issued_tokens: Mutex<Vec<Secret>>,
    /// Every temporary credential the metadata service issued, oldest first.
    pub issued_credentials: Mutex<Vec<AkSk>>,
    /// Live tokens: SHA-256 (hex) of the token → expiry.
    tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Temporary credentials: access key → (credentials, expiry).
    temporary: Mutex<HashMap<String, (AkSk, DateTime<Utc>)>>,
    /// Failed signature checks in a row, and the lock they caused, per access key.
    signature_failures: Mutex<HashMap<String, Failures>>,
}

impl StandInStats {
    /// Forgets every issued token: the service answers them with APIG.0301
    /// from now on (as after a password change).
    pub fn revoke_all_tokens(&self) {
        lock(&self.tokens).clear();
    }

    /// Forgets every metadata session token (their requests get 401).
    pub fn revoke_metadata_sessions(&self) {
        lock(&self.sessions).clear();
    }

    /// Forgets every temporary credential (as if the agency were removed).
    pub fn revoke_all_credentials(&self) {
        lock(&self.temporary).clear();
    }

    /// Failed signature checks in a row for `access_key`, and whether it is locked now.
    pub fn signature_failures(&self, access_key: &str) -> (u32, bool) {
        let failures = lock(&self.signature_failures);
        match failures.get(access_key) {
            Some((n, until)) => (*n, until.is_some_and(|u| u > Utc::now())),
            None => (0, false),
        }
    }

    /// How many tokens IAM has issued.
    pub fn tokens_issued(&self) -> usize {
        lock(&self.issued_tokens).len()
    }

    /// The most recently issued token, if any.
    pub fn last_token(&self) -> Option<Secret> {
        lock(&self.issued_tokens).last().cloned()
    }
}

impl std::fmt::Debug for StandInStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandInStats")
            .field("iam_calls", &self.iam_calls)
            .field("metadata_calls", &self.metadata_calls)
            .field("iam_down", &self.iam_down)
            .field("metadata_down", &self.metadata_down)
            .field("accepted", &self.accepted)
            .field("rejected", &self.rejected)
            .field("tokens_issued", &self.tokens_issued())
            .field("credentials_issued", &lock(&self.issued_credentials).len())
            .finish()
    }
}

/// Failed signature checks in a row, and until when they locked the AK.
type Failures = (u32, Option<DateTime<Utc>>);

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

    /// `POST /v3/auth/tokens`, password method, project scope.
    fn iam(
        &self,
        iam: &StandInIam,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
        self.stats.iam_calls.fetch_add(1, Ordering::SeqCst);
        if self.stats.iam_down.load(Ordering::SeqCst) {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": {"code": 503, "message": "Service Unavailable"}}),
            );
        }
        if parts.method != Method::POST {
            return iam_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "The stand-in IAM issues tokens with POST only.",
            );
        }
        let Some(req) = PasswordAuth::parse(body) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid");
        };
        let credentials_ok = req.user == iam.user
            && constant_time_eq(
                req.password.expose().as_bytes(),
                iam.password.expose().as_bytes(),
            )
            && req.domain == iam.domain;
        if !credentials_ok {
            return iam_error(
                StatusCode::UNAUTHORIZED,
                "The username or password is wrong.",
            );
        }
        let project_ok = match &req.project {
            Scope::Name(n) => *n == iam.project,
            Scope::Id(id) => *id == iam.project_id,
        };
        if !project_ok {
            let which = match &req.project {
                Scope::Name(n) => format!("name {n:?}"),
                Scope::Id(id) => format!("id {id:?}"),
            };
            let message = format!(
                "The project with {which} does not exist in domain {:?}.",
                iam.domain
            );
            // The project fields are the client's text; never echo a password pasted there.
            let message = scrub(&message, &[iam.password.expose(), req.password.expose()]);
            return iam_error(StatusCode::BAD_REQUEST, &message);
        }

        let now = (self.clock)();
        let expires_at = add(now, iam.token_lifetime);
        let token = format!(
            "MII{}",
            random_string(iam.token_size.saturating_sub(3), URL_SAFE)
        );
        lock(&self.stats.tokens).insert(token_key(&token), expires_at);
        lock(&self.stats.issued_tokens).push(Secret::new(token.clone()));

        let domain = serde_json::json!({"id": fake_id("domain", &iam.domain), "name": iam.domain});
        let mut body = serde_json::json!({
            "token": {
                "expires_at": expires_at.format(HUAWEI_TIME).to_string(),
                "issued_at": now.format(HUAWEI_TIME).to_string(),
                "methods": ["password"],
                "project": {"id": iam.project_id, "name": iam.project, "domain": domain},
                "user": {
                    "id": fake_id("user", &iam.user),
                    "name": iam.user,
                    "domain": domain,
                    "password_expires_at": "",
                },
                "roles": [{"id": "0", "name": "op_service"}],
            }
        });
        let nocatalog = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "nocatalog=true"));
        if !nocatalog {
            body["token"]["catalog"] = serde_json::json!([]);
        }
        let mut resp = json(StatusCode::CREATED, body);
        let mut value =
            HeaderValue::from_str(&token).expect("URL-safe characters are a valid header value");
        value.set_sensitive(true);
        resp.headers_mut().insert("x-subject-token", value);
        resp
    }

    /// `GET /openstack/latest/securitykey`: fresh temporary credentials.
    fn metadata(&self, lifetime: Duration, parts: &http::request::Parts) -> Response<ProxyBody> {
        self.stats.metadata_calls.fetch_add(1, Ordering::SeqCst);
        if self.stats.metadata_down.load(Ordering::SeqCst) {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": {"code": 503, "message": "Service Unavailable"}}),
            );
        }
        if parts.method != Method::GET {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": {"code": 405, "message": "Method Not Allowed"}}),
            );
        }
        if let Some(refused) = self.check_session(parts) {
            return refused;
        }
        let expires_at = add((self.clock)(), lifetime);
        let key = AkSk {
            access_key: random_string(20, &ALPHANUMERIC[..36]),
            secret_key: Secret::new(random_string(40, ALPHANUMERIC)),
            security_token: Some(Secret::new(format!(
                "gQpjbi1ub3J0aC00{}",
                random_string(600, URL_SAFE)
            ))),
        };
        let body = serde_json::json!({
            "credential": {
                "access": key.access_key,
                "secret": key.secret_key.expose(),
                "securitytoken": key.security_token.as_ref().map(Secret::expose),
                "expires_at": expires_at.format(HUAWEI_TIME).to_string(),
            }
        });
        lock(&self.stats.temporary).insert(key.access_key.clone(), (key.clone(), expires_at));
        lock(&self.stats.issued_credentials).push(key);
        json(StatusCode::OK, body)
    }

    /// `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds`
    /// (1 to 21600): a session token for the credential request.
    fn metadata_session(&self, parts: &http::request::Parts) -> Response<ProxyBody> {
        use crate::auth::metadata::SESSION_TTL_HEADER;
        let stats = &self.stats;
        stats.metadata_session_calls.fetch_add(1, Ordering::SeqCst);
        let error = |status: StatusCode, message: &str| {
            json(
                status,
                serde_json::json!({"error": {"code": status.as_u16(), "message": message}}),
            )
        };
        if stats.metadata_session_unsupported.load(Ordering::SeqCst) {
            return error(StatusCode::NOT_FOUND, "Not Found");
        }
        if parts.method != Method::PUT {
            return error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        let ttl = parts
            .headers
            .get(SESSION_TTL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|t| (1..=21600).contains(t));
        let Some(ttl) = ttl else {
            return error(
                StatusCode::BAD_REQUEST,
                "X-Metadata-Token-Ttl-Seconds must be an integer from 1 to 21600",
            );
        };
        let token = random_string(56, URL_SAFE);
        let expires_at = add((self.clock)(), Duration::from_secs(ttl));
        lock(&stats.sessions).insert(token.clone(), expires_at);
        let mut resp = Response::new(full(token));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }

    /// A credential request's `X-Metadata-Token`: refused (401) when it is
    /// unknown or expired, or missing while sessions are required.
    fn check_session(&self, parts: &http::request::Parts) -> Option<Response<ProxyBody>> {
        use crate::auth::metadata::SESSION_TOKEN_HEADER;
        let refuse = |message: &str| {
            Some(json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": {"code": 401, "message": message}}),
            ))
        };
        match parts.headers.get(SESSION_TOKEN_HEADER) {
            None if self.stats.metadata_session_required.load(Ordering::SeqCst) => {
                refuse("X-Metadata-Token is required")
            }
            None => None,
            Some(token) => {
                let now = (self.clock)();
                let sessions = lock(&self.stats.sessions);
                match token.to_str().ok().and_then(|t| sessions.get(t)) {
                    Some(expires_at) if *expires_at > now => None,
                    Some(_) => refuse("the metadata token has expired"),
                    None => refuse("the metadata token is not valid"),
                }
            }
        }
    }

    /// Any other path: the real-time service. Accepts a valid AK/SK
    /// signature, an unexpired token from the stand-in IAM, or an app code.
    fn service(&self, parts: &http::request::Parts, body: &Bytes) -> Response<ProxyBody> {
        match self.authenticate(parts, body) {
            Ok(_) if wants_stream(parts, body) => {
                self.stats.accepted.fetch_add(1, Ordering::SeqCst);
                server_sent_events(usage_asked(body).then(|| prompt_tokens(body)))
            }
            Ok(auth) => {
                self.stats.accepted.fetch_add(1, Ordering::SeqCst);
                json(StatusCode::OK, echo(parts, body, auth))
            }
            Err(refusals) => {
                self.stats.rejected.fetch_add(1, Ordering::SeqCst);
                rejection(parts, &refusals)
            }
        }
    }

    /// A WebSocket handshake: the credential is checked as for any request;
    /// then `101`, and every message is echoed until the client closes.
    fn websocket(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
        upgrade: hyper::upgrade::OnUpgrade,
    ) -> Response<ProxyBody> {
        if let Err(refusals) = self.authenticate(parts, body) {
            self.stats.rejected.fetch_add(1, Ordering::SeqCst);
            return rejection(parts, &refusals);
        }
        let Some(key) = parts.headers.get("sec-websocket-key") else {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error_msg": "a WebSocket handshake needs Sec-WebSocket-Key"}),
            );
        };
        self.stats.accepted.fetch_add(1, Ordering::SeqCst);
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        tokio::spawn(echo_websocket(upgrade));
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        resp
    }

    /// The credential the request carries, or why each one it carries is refused.
    fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Auth, Vec<Refusal>> {
        let now = (self.clock)();
        let headers = &parts.headers;
        let mut refusals = Vec::new();
        let mut accepted = None;
        if headers.contains_key(header::AUTHORIZATION) {
            match self.check_aksk(parts, body, now) {
                Ok(()) => accepted = Some(Auth::AkSk),
                Err(r) => refusals.push(r),
            }
        }
        if accepted.is_none()
            && let Some(token) = headers.get("x-auth-token")
        {
            match self.check_token(token, now) {
                Ok(()) => accepted = Some(Auth::Token),
                Err(r) => refusals.push(r),
            }
        }
        if accepted.is_none()
            && let Some(code) = headers.get("x-apig-appcode")
        {
            let valid = self
                .app_codes
                .iter()
                .any(|c| constant_time_eq(c.expose().as_bytes(), code.as_bytes()));
            if valid {
                accepted = Some(Auth::ApiKey);
            } else {
                refusals.push(Refusal {
                    credential: "X-Apig-AppCode",
                    code: "APIG.0303",
                    reason: "the app code is not one of this API's app codes".into(),
                });
            }
        }
        accepted.ok_or(refusals)
    }

    fn check_aksk(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let refuse = |reason: String| Refusal {
            credential: "Authorization",
            code: "APIG.0301",
            reason,
        };
        // An expired temporary key is refused as such, whatever its signature.
        let access = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_authorization(v).ok())
            .map(|a| a.access.to_owned());
        if let Some(access) = &access
            && !self.keys.contains_key(access)
            && let Some((_, expires_at)) = lock(&self.stats.temporary).get(access)
            && now >= *expires_at
        {
            return Err(refuse(format!(
                "temporary credentials expired (access key {access} expired at {})",
                expires_at.format(HUAWEI_TIME)
            )));
        }
        let lookup = |ak: &str| {
            self.keys
                .get(ak)
                .cloned()
                .or_else(|| lock(&self.stats.temporary).get(ak).map(|(k, _)| k.clone()))
        };
        // A locked AK is refused whatever it sends, as the gateway does.
        if let Some(access) = &access
            && let Some((_, Some(until))) = lock(&self.stats.signature_failures).get(access)
            && *until > now
        {
            return Err(refuse(
                "AK access failed to reach the limit,forbidden.".to_owned(),
            ));
        }
        let verdict = verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            body,
            lookup,
            now,
            DATE_WINDOW,
        );
        if let Some(access) = &access {
            self.count_signature(access, verdict.is_ok(), now);
        }
        verdict.map(|_| ()).map_err(|e| refuse(apig_message(&e)))
    }

    /// Counts failed signature checks in a row per AK; the fifth locks it.
    fn count_signature(&self, access: &str, ok: bool, now: DateTime<Utc>) {
        let mut failures = lock(&self.stats.signature_failures);
        let entry = failures.entry(access.to_owned()).or_insert((0, None));
        if ok {
            *entry = (0, None);
        } else {
            entry.0 += 1;
            if entry.0 >= AK_LOCK_AFTER {
                entry.1 = Some(now + AK_LOCK_FOR);
            }
        }
    }

    fn check_token(&self, token: &HeaderValue, now: DateTime<Utc>) -> Result<(), Refusal> {
        let expires_at = lock(&self.stats.tokens)
            .get(&token_key_bytes(token.as_bytes()))
            .copied();
        match expires_at {
            Some(t) if now < t => Ok(()),
            Some(t) => Err(Refusal {
                credential: "X-Auth-Token",
                code: "APIG.0307",
                reason: format!("the token expired at {}", t.format(HUAWEI_TIME)),
            }),
            None => Err(Refusal {
                credential: "X-Auth-Token",
                code: "APIG.0301",
                reason: "the token is not one the stand-in IAM issued, or it was revoked".into(),
            }),
        }
    }
}

/// How the service authenticated a request.
#[derive(Clone, Copy)]
enum Auth {
    AkSk,
    Token,
    ApiKey,
}

/// Why one credential on a request was refused.
struct Refusal {
    /// The header that carried it.
    credential: &'static str,
    /// The gateway's error code.
    code: &'static str,
    /// Safe to show: never the credential itself.
    reason: String,
}

/// The password method of `POST /v3/auth/tokens`.
struct PasswordAuth {
    user: String,
    password: Secret,
    domain: String,
    project: Scope,
}

enum Scope {
    Name(String),
    Id(String),
}

impl PasswordAuth {
    /// `None` for anything IAM would call an invalid body. (Owned strings:
    /// a password with a `"` or `\\` arrives escaped and cannot be borrowed.)
    fn parse(body: &[u8]) -> Option<PasswordAuth> {
        #[derive(serde::Deserialize)]
        struct Root {
            auth: AuthBody,
        }
        #[derive(serde::Deserialize)]
        struct AuthBody {
            identity: Identity,
            scope: ScopeBody,
        }
        #[derive(serde::Deserialize)]
        struct Identity {
            methods: Vec<String>,
            password: PasswordBody,
        }
        #[derive(serde::Deserialize)]
        struct PasswordBody {
            user: User,
        }
        #[derive(serde::Deserialize)]
        struct User {
            name: String,
            password: String,
            domain: Named,
        }
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct ScopeBody {
            project: Project,
        }
        #[derive(serde::Deserialize)]
        struct Project {
            name: Option<String>,
            id: Option<String>,
        }
        let Root { auth } = serde_json::from_slice(body).ok()?;
        if !auth.identity.methods.iter().any(|m| m == "password") {
            return None;
        }
        let project = match (auth.scope.project.name, auth.scope.project.id) {
            (_, Some(id)) => Scope::Id(id),
            (Some(name), None) => Scope::Name(name),
            (None, None) => return None,
        };
        let user = auth.identity.password.user;
        Some(PasswordAuth {
            user: user.name,
            password: Secret::new(user.password),
            domain: user.domain.name,
            project,
        })
    }
}

/// IAM's error body: `{"error":{"code","message","title"}}`.
/// A signature verdict in API Gateway's words (its IAM-authentication
/// error texts, as Huawei documents them).
fn apig_message(e: &crate::signer::verify::VerifyError) -> String {
    use crate::signer::verify::VerifyError as V;
    match e {
        V::SignatureMismatch {
            canonical_request, ..
        } => format!(
            "verify aksk signature fail,canonicalRequest:{}",
            canonical_request.replace('\n', "|")
        ),
        V::UnknownAccessKey(ak) => format!("Get secretKey failed,ak:{ak},err:ak not exist"),
        V::DateOutOfWindow { .. } => "calc ak sk signature fail:signature expired".to_owned(),
        other => other.to_string(),
    }
}

fn iam_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(
        status,
        serde_json::json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "title": status.canonical_reason().unwrap_or(""),
        }}),
    )
}

/// Echo output gets pasted into tickets: credential headers are shown as `** redacted **`.
const REDACTED_HEADERS: &[&str] = crate::headers::CREDENTIAL_HEADERS;

/// What the service received, as JSON.
/// Events the stand-in streams for a streaming request, and the pause
/// between them: enough to watch them arrive one by one.
const SSE_EVENTS: usize = 5;
const SSE_INTERVAL: Duration = Duration::from_millis(200);

/// A streaming request, as LLM services take it: `Accept:
/// text/event-stream`, or a JSON body with `"stream": true`.
fn wants_stream(parts: &http::request::Parts, body: &Bytes) -> bool {
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    accept
        || serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|v| v.get("stream") == Some(&serde_json::Value::Bool(true)))
}

/// The model the stand-in answers as.
const DEV_MODEL: &str = "dev-model";

/// True when a streaming request asked for its usage
/// (`"stream_options":{"include_usage":true}`, as OpenAI's API takes it).
fn usage_asked(body: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.pointer("/stream_options/include_usage") == Some(&serde_json::Value::Bool(true))
    })
}

/// A stand-in's token count for a prompt: about one per four bytes.
fn prompt_tokens(body: &Bytes) -> u64 {
    (body.len() as u64).div_ceil(4)
}

/// OpenAI-style `chat.completion.chunk` events, [`SSE_INTERVAL`] apart;
/// when `usage` is asked for, a last event with `usage` (this many prompt
/// tokens, one completion token per event); then `data: [DONE]`.
fn server_sent_events(usage: Option<u64>) -> Response<ProxyBody> {
    let (mut tx, events) =
        http_body_util::channel::Channel::<Bytes, crate::error::BoxError>::new(1);
    tokio::spawn(async move {
        let chunk = |choices: serde_json::Value| {
            let mut v = serde_json::json!({
                "id": "chatcmpl-dev",
                "object": "chat.completion.chunk",
                "model": DEV_MODEL,
                "choices": choices,
            });
            // Asked for usage, OpenAI's chunks say `"usage": null` until the last.
            if usage.is_some() {
                v["usage"] = serde_json::Value::Null;
            }
            v
        };
        for i in 0..SSE_EVENTS {
            let event = chunk(serde_json::json!([{
                "index": 0,
                "delta": {"content": format!("token {i} from the stand-in ")},
            }]));
            if tx
                .send_data(Bytes::from(format!("data: {event}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(SSE_INTERVAL).await;
        }
        if let Some(prompt) = usage {
            let completion = SSE_EVENTS as u64;
            let mut last = chunk(serde_json::json!([]));
            last["usage"] = serde_json::json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            });
            let _ = tx.send_data(Bytes::from(format!("data: {last}\n\n"))).await;
        }
        let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let mut resp = Response::new(events.boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn echo(parts: &http::request::Parts, body: &Bytes, auth: Auth) -> serde_json::Value {
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
    let (verified, auth) = match auth {
        Auth::AkSk => (serde_json::Value::Bool(true), "aksk"),
        Auth::Token => ("token".into(), "token"),
        Auth::ApiKey => ("apikey".into(), "apikey"),
    };
    serde_json::json!({
        "verified": verified,
        "auth": auth,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body.len(),
        "body_sha256": hex::encode(Sha256::digest(body)),
        "body": text,
    })
}

/// The gateway's 401: the first refused credential's code, and every reason.
fn rejection(parts: &http::request::Parts, refusals: &[Refusal]) -> Response<ProxyBody> {
    let (code, reason) = match refusals {
        [] => (
            "APIG.0301",
            "no Authorization, X-Auth-Token or X-Apig-AppCode".to_owned(),
        ),
        // One credential: its reason alone (the AK/SK text is what it always was).
        [one] if one.credential == "Authorization" => (one.code, one.reason.clone()),
        [one] => (one.code, format!("{}: {}", one.credential, one.reason)),
        [first, ..] => (
            first.code,
            refusals
                .iter()
                .map(|r| format!("{}: {}", r.credential, r.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let summary = match code {
        "APIG.0307" => "Token must be updated",
        "APIG.0303" => "Incorrect app authentication information",
        _ => "Incorrect IAM authentication information",
    };
    // Belt and braces: no credential the client sent may come back.
    let sent: Vec<&str> = REDACTED_HEADERS
        .iter()
        .flat_map(|h| parts.headers.get_all(*h))
        .filter_map(|v| v.to_str().ok())
        // Shorter ones would garble the message, and appear in no reason.
        .filter(|v| v.len() >= 8)
        .collect();
    let message = scrub(&format!("{summary}: {reason}"), &sent);
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({
            "error_code": code,
            "error_msg": message,
            "request_id": random_string(32, b"0123456789abcdef"),
        }),
    )
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
/// Echoes text and binary messages; answers a close with a close; closes
/// itself on the text `bye`.
async fn echo_websocket(upgrade: hyper::upgrade::OnUpgrade) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            // The stand-in's own close, to try a close from the service side.
            Message::Text(t) if t.as_str() == "bye" => {
                let _ = ws.close(None).await;
                continue;
            }
            Message::Text(_) | Message::Binary(_) => message,
            // tungstenite answers pings and closes itself.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

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
