//! The stand-in CCE Pod Identity agent: `POST` with the pod's
//! service-account token as `Authorization` (raw, no scheme) issues
//! temporary AK/SK + security token for the agency bound to the service
//! account, `{"credentials":{"accessKeyId","secretAccessKey","securityToken",
//! "expiration"}}` as the SDKs' fixtures show it (or, to try the other shape
//! the SDKs accept, `{"credential":{"access","secret","securitytoken","expires_at"}}`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Response, StatusCode, header};

use super::{HUAWEI_TIME, StandIn, credential_json, json, lock, one_of};
use crate::error::ProxyBody;
use crate::secret::Secret;

/// Where the stand-in agent answers. The real agent's path is whatever CCE
/// puts in `$HC_CONTAINER_CREDENTIALS_FULL_URI` (used as given, no path
/// appended), so any path works; this one says what it is.
pub const POD_IDENTITY_PATH: &str = "/v1/pod-identity/credentials";

/// The stand-in Pod Identity agent.
#[derive(Clone, Debug)]
pub struct StandInPodIdentity {
    /// The service-account tokens it accepts at first
    /// ([`super::StandInStats::set_pod_identity_tokens`] replaces them).
    pub tokens: Vec<Secret>,
    /// How long the temporary keys it issues are valid.
    pub lifetime: Duration,
    /// Answer in IAM's shape (`credential`, `access`…) instead of CCE's.
    pub second_shape: bool,
}

impl StandIn {
    /// Also plays CCE's Pod Identity agent on `POST` [`POD_IDENTITY_PATH`].
    pub fn with_pod_identity(mut self, pod_identity: StandInPodIdentity) -> Self {
        *lock(&self.stats.pod_identity_tokens) = pod_identity.tokens.clone();
        self.pod_identity = Some(pod_identity);
        self
    }

    /// `POST {POD_IDENTITY_PATH}` with `Authorization: <service-account token>`.
    pub(super) fn pod_identity(
        &self,
        pod_identity: &StandInPodIdentity,
        parts: &http::request::Parts,
    ) -> Response<ProxyBody> {
        let stats = &self.stats;
        stats.pod_identity_calls.fetch_add(1, Ordering::SeqCst);
        if stats.pod_identity_down.load(Ordering::SeqCst) {
            return cce_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "CCE.03500001",
                "the pod identity agent is unavailable",
            );
        }
        if parts.method != Method::POST {
            return cce_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "CCE.03400002",
                "the pod identity agent issues credentials with POST only",
            );
        }
        let Some(token) = parts.headers.get(header::AUTHORIZATION) else {
            return cce_error(
                StatusCode::FORBIDDEN,
                "CCE.03400001",
                "the request carries no service account token (Authorization)",
            );
        };
        if !one_of(token.as_bytes(), &lock(&stats.pod_identity_tokens)) {
            return cce_error(
                StatusCode::FORBIDDEN,
                "CCE.03400001",
                "the service account token is invalid or expired",
            );
        }
        let (key, expires_at) = self.issue_temporary(pod_identity.lifetime);
        let body = if pod_identity.second_shape {
            serde_json::json!({ "credential": credential_json(&key, expires_at) })
        } else {
            serde_json::json!({
                "assumedAgency": {"urn": "sts::0::assumed-agency:dev-agency/dev-pod", "id": ""},
                "audience": "service.cce.pods",
                "credentials": {
                    "accessKeyId": key.access_key,
                    "secretAccessKey": key.secret_key.expose(),
                    "securityToken": key.security_token.as_ref().map(Secret::expose),
                    "expiration": expires_at.format(HUAWEI_TIME).to_string(),
                },
                "podIdentityAssociationId": "",
                "subject": {"namespace": "default", "serviceAccount": "default"},
            })
        };
        json(StatusCode::OK, body)
    }
}

/// CCE's error body: `{"error_code","error_msg"}` (never the token).
fn cce_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(
        status,
        serde_json::json!({"error_code": code, "error_msg": message}),
    )
}
