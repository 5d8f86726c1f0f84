//! The stand-in IAM: `POST /v3/auth/tokens` with the password method and a
//! project scope issues `MII…` tokens that the service accepts until they expire.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};

use super::{
    HUAWEI_TIME, StandIn, URL_SAFE, add, fake_id, json, lock, random_string, scrub, token_key,
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
    /// `POST /v3/auth/tokens`, password method, project scope.
    pub(super) fn iam(
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
