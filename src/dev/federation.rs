//! The stand-in IAM's identity provider: `POST /v3.0/OS-AUTH/id-token/tokens`
//! with `X-Idp-Id` and `{"auth":{"id_token":{"id":"…"}}}` (optionally
//! `"scope":{"project":…}`) issues an IAM token for a trusted id token:
//! project-scoped when asked, which the service accepts, else unscoped,
//! which only IAM's own calls accept (security tokens, agencies).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::iam::{
    StandInIam, check_project, domain_json, iam_error, project_scope, token_body, token_response,
};
use super::{StandIn, fake_id, lock, one_of, shown};
use crate::error::ProxyBody;
use crate::secret::Secret;

/// IAM's endpoint that exchanges an OpenID Connect id token for a token.
pub const ID_TOKEN_PATH: &str = "/v3.0/OS-AUTH/id-token/tokens";

/// The header naming the identity provider.
const IDP_HEADER: &str = "x-idp-id";

/// The stand-in IAM's one identity provider (needs [`StandIn::with_iam`]
/// for the project its tokens may be scoped to).
#[derive(Clone, Debug)]
pub struct StandInFederation {
    /// The identity provider's id, expected in `X-Idp-Id`.
    pub idp_id: String,
    /// The id tokens it trusts at first ([`super::StandInStats::set_id_tokens`]
    /// replaces them).
    pub id_tokens: Vec<Secret>,
    /// The longest temporary AK/SK that `methods: ["token"]` issues on
    /// `/v3.0/OS-CREDENTIAL/securitytokens`, whatever `duration_seconds` asks.
    pub credential_lifetime: Duration,
}

impl StandIn {
    /// Also plays an IAM identity provider on [`ID_TOKEN_PATH`], and IAM's
    /// temporary AK/SK for a token on `/v3.0/OS-CREDENTIAL/securitytokens`.
    /// Only together with [`StandIn::with_iam`].
    pub fn with_federation(mut self, federation: StandInFederation) -> Self {
        *lock(&self.stats.id_tokens) = federation.id_tokens.clone();
        self.federation = Some(federation);
        self
    }

    /// `POST /v3.0/OS-AUTH/id-token/tokens`.
    pub(super) fn id_token(
        &self,
        iam: &StandInIam,
        federation: &StandInFederation,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
        self.stats.id_token_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(refused) = self.iam_gate(parts, "tokens for id tokens") {
            return refused;
        }
        let Some(idp) = parts.headers.get(IDP_HEADER) else {
            return iam_error(StatusCode::BAD_REQUEST, "The X-Idp-Id header is required.");
        };
        if idp.as_bytes() != federation.idp_id.as_bytes() {
            let idp = shown(&String::from_utf8_lossy(idp.as_bytes()));
            return iam_error(
                StatusCode::NOT_FOUND,
                &format!("Could not find identity provider: {idp}."),
            );
        }
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid");
        };
        let Some(id_token) = request
            .pointer("/auth/id_token/id")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
        else {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "The request body is invalid: auth.id_token.id is required",
            );
        };
        let Ok(scope) = project_scope(&request) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid");
        };
        if !one_of(id_token.as_bytes(), &lock(&self.stats.id_tokens)) {
            let message = format!(
                "The id_token is invalid, expired, or not trusted by identity provider {}.",
                shown(&federation.idp_id)
            );
            return iam_error(StatusCode::UNAUTHORIZED, &message);
        }
        if let Some(scope) = &scope
            && let Err(refused) = check_project(iam, scope, &[id_token])
        {
            return refused.response();
        }
        let issued = self.issue_token(iam, scope.is_some());
        let user = serde_json::json!({
            "id": fake_id("federated-user", &federation.idp_id),
            "name": format!("{}-user", federation.idp_id),
            "domain": domain_json(&iam.domain),
            "OS-FEDERATION": {
                "identity_provider": {"id": federation.idp_id},
                "protocol": {"id": "oidc"},
                "groups": [],
            },
        });
        // The SDKs' and IAM's documents call the method of these tokens "mapped".
        token_response(&issued, token_body(iam, &issued, "mapped", user, false))
    }
}
