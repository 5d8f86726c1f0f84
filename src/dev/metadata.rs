//! The stand-in ECS metadata service: `GET /openstack/latest/securitykey`
//! issues temporary AK/SK + security token, after the optional session-token
//! step (`PUT /meta-data/latest/api/token`, then `X-Metadata-Token`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::{StandIn, URL_SAFE, add, credential_json, json, lock, random_string};
use crate::error::{ProxyBody, full};

/// The ECS metadata service's session-token endpoint.
pub const METADATA_SESSION_PATH: &str = crate::auth::metadata::SESSION_TOKEN_PATH;

/// The ECS metadata service's temporary-credentials endpoint.
pub const METADATA_SECURITYKEY_PATH: &str = "/openstack/latest/securitykey";

impl StandIn {
    /// `GET /openstack/latest/securitykey`: fresh temporary credentials.
    pub(super) fn metadata(
        &self,
        lifetime: Duration,
        parts: &http::request::Parts,
    ) -> Response<ProxyBody> {
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
        let (key, expires_at) = self.issue_temporary(lifetime);
        let body = serde_json::json!({ "credential": credential_json(&key, expires_at) });
        json(StatusCode::OK, body)
    }

    /// `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds`
    /// (1 to 21600): a session token for the credential request.
    pub(super) fn metadata_session(&self, parts: &http::request::Parts) -> Response<ProxyBody> {
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
}
