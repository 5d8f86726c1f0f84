//! The stand-in IAM's tokens: `POST /v3/auth/tokens` with the password
//! method and a project scope issues `MII…` tokens that the service accepts
//! until they expire; what its other endpoints share (issuing and checking
//! tokens, scopes, errors).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Response, StatusCode};

use super::stats::LiveToken;
use super::{
    HUAWEI_TIME, StandIn, URL_SAFE, add, fake_id, json, lock, random_string, scrub, token_key,
    token_key_bytes,
};
use crate::error::ProxyBody;
use crate::secret::Secret;
use crate::signer::verify::constant_time_eq;

/// IAM's token endpoint.
pub const IAM_TOKENS_PATH: &str = "/v3/auth/tokens";

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

impl StandIn {
    /// `POST /v3/auth/tokens`: the password method, or `assume_role` (an
    /// agency's token, see `agency.rs`).
    pub(super) fn iam(
        &self,
        iam: &StandInIam,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
        self.stats.iam_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(refused) = self.iam_gate(parts, "tokens") {
            return refused;
        }
        if methods(body).iter().any(|m| m == "assume_role") {
            self.stats.assume_role_calls.fetch_add(1, Ordering::SeqCst);
            return self.agency_token(iam, parts, body);
        }
        self.password_token(iam, parts, body)
    }

    /// What every stand-in IAM endpoint answers first: 503 while IAM is
    /// down, 405 to anything but `POST`.
    pub(super) fn iam_gate(
        &self,
        parts: &http::request::Parts,
        what: &str,
    ) -> Option<Response<ProxyBody>> {
        if self.stats.iam_down.load(Ordering::SeqCst) {
            return Some(json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": {"code": 503, "message": "Service Unavailable"}}),
            ));
        }
        (parts.method != Method::POST).then(|| {
            iam_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("The stand-in IAM issues {what} with POST only."),
            )
        })
    }

    /// The password method, project scope.
    fn password_token(
        &self,
        iam: &StandInIam,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
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
        // The project fields are the client's text; never echo a password pasted there.
        if let Err(refused) = check_project(
            iam,
            &req.project,
            &[iam.password.expose(), req.password.expose()],
        ) {
            return refused.response();
        }
        let user = serde_json::json!({
            "id": fake_id("user", &iam.user),
            "name": iam.user,
            "domain": domain_json(&iam.domain),
            "password_expires_at": "",
        });
        let issued = self.issue_token(iam, true);
        let body = token_body(iam, &issued, "password", user, nocatalog(parts));
        token_response(&issued, body)
    }

    /// A fresh `MII…` token, valid for `iam.token_lifetime`; the service
    /// accepts it while it lives if `scoped` (to the project).
    pub(super) fn issue_token(&self, iam: &StandInIam, scoped: bool) -> Issued {
        let now = (self.clock)();
        let expires_at = add(now, iam.token_lifetime);
        let token = format!(
            "MII{}",
            random_string(iam.token_size.saturating_sub(3), URL_SAFE)
        );
        lock(&self.stats.tokens).insert(token_key(&token), LiveToken { expires_at, scoped });
        lock(&self.stats.issued_tokens).push(Secret::new(token.clone()));
        Issued {
            token,
            issued_at: now,
            expires_at,
            scoped,
        }
    }

    /// A token IAM issued that has not expired (scoped or not), else why not.
    pub(super) fn live_token(&self, token: &[u8]) -> Result<LiveToken, IamRefusal> {
        let now = (self.clock)();
        match lock(&self.stats.tokens).get(&token_key_bytes(token)) {
            Some(live) if now < live.expires_at => Ok(*live),
            Some(_) => Err(refuse(StatusCode::UNAUTHORIZED, "The token has expired.")),
            None => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            )),
        }
    }
}

/// A token just issued.
pub(super) struct Issued {
    pub(super) token: String,
    pub(super) issued_at: DateTime<Utc>,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) scoped: bool,
}

/// The `methods` of an IAM request body (empty if it has none).
pub(super) fn methods(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::from_value(v.pointer("/auth/identity/methods")?.clone()).ok())
        .unwrap_or_default()
}

/// `?nocatalog=true`: the answer leaves out the service catalog.
pub(super) fn nocatalog(parts: &http::request::Parts) -> bool {
    parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "nocatalog=true"))
}

pub(super) fn domain_json(name: &str) -> serde_json::Value {
    serde_json::json!({"id": fake_id("domain", name), "name": name})
}

/// IAM's token answer: `{"token":{expires_at, issued_at, methods, user,
/// roles, project (when scoped), catalog (unless left out)}}`.
pub(super) fn token_body(
    iam: &StandInIam,
    issued: &Issued,
    method: &str,
    user: serde_json::Value,
    nocatalog: bool,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "token": {
            "expires_at": issued.expires_at.format(HUAWEI_TIME).to_string(),
            "issued_at": issued.issued_at.format(HUAWEI_TIME).to_string(),
            "methods": [method],
            "user": user,
            "roles": [{"id": "0", "name": "op_service"}],
        }
    });
    if issued.scoped {
        body["token"]["project"] = serde_json::json!({
            "id": iam.project_id,
            "name": iam.project,
            "domain": domain_json(&iam.domain),
        });
    }
    if !nocatalog {
        body["token"]["catalog"] = serde_json::json!([]);
    }
    body
}

/// 201, the token in `X-Subject-Token`.
pub(super) fn token_response(issued: &Issued, body: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = json(StatusCode::CREATED, body);
    let mut value =
        HeaderValue::from_str(&issued.token).expect("URL-safe characters are a valid header value");
    value.set_sensitive(true);
    resp.headers_mut().insert("x-subject-token", value);
    resp
}

/// The project scope a body asks for: `Ok(None)` without `auth.scope.project`,
/// `Err` when it is there but names nothing.
pub(super) fn project_scope(body: &serde_json::Value) -> Result<Option<Scope>, ()> {
    let Some(project) = body.pointer("/auth/scope/project") else {
        return Ok(None);
    };
    let text = |k: &str| project.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    match (text("name"), text("id")) {
        (_, Some(id)) => Ok(Some(Scope::Id(id))),
        (Some(name), None) => Ok(Some(Scope::Name(name))),
        (None, None) => Err(()),
    }
}

/// 400 unless `scope` is the stand-in's project; `secrets` are scrubbed
/// from the message (the scope is the client's text).
pub(super) fn check_project(
    iam: &StandInIam,
    scope: &Scope,
    secrets: &[&str],
) -> Result<(), IamRefusal> {
    let project_ok = match scope {
        Scope::Name(n) => *n == iam.project,
        Scope::Id(id) => *id == iam.project_id,
    };
    if project_ok {
        return Ok(());
    }
    let which = match scope {
        Scope::Name(n) => format!("name {n:?}"),
        Scope::Id(id) => format!("id {id:?}"),
    };
    let message = format!(
        "The project with {which} does not exist in domain {:?}.",
        iam.domain
    );
    Err(refuse(StatusCode::BAD_REQUEST, scrub(&message, secrets)))
}

/// The password method of `POST /v3/auth/tokens`.
struct PasswordAuth {
    user: String,
    password: Secret,
    domain: String,
    project: Scope,
}

pub(super) enum Scope {
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

/// Why IAM refused a request; [`IamRefusal::response`] says it as IAM does.
pub(super) struct IamRefusal {
    status: StatusCode,
    /// Safe to show: never a credential.
    message: String,
}

pub(super) fn refuse(status: StatusCode, message: impl Into<String>) -> IamRefusal {
    IamRefusal {
        status,
        message: message.into(),
    }
}

impl IamRefusal {
    /// IAM's error body: `{"error":{"code","message","title"}}`.
    pub(super) fn response(self) -> Response<ProxyBody> {
        json(
            self.status,
            serde_json::json!({"error": {
                "code": self.status.as_u16(),
                "message": self.message,
                "title": self.status.canonical_reason().unwrap_or(""),
            }}),
        )
    }
}

/// IAM's error body for an immediate answer.
pub(super) fn iam_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    refuse(status, message).response()
}
