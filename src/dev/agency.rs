//! The stand-in IAM's one agency (another account's, trusting this one):
//! `methods: ["assume_role"]` with `assume_role: {domain_name, agency_name}`
//! gives a token on `POST /v3/auth/tokens` (here) or temporary AK/SK on
//! `/v3.0/OS-CREDENTIAL/securitytokens` (`security_tokens.rs`), to a
//! caller proving itself with a live token in `X-Auth-Token`.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::iam::{
    IamRefusal, StandInIam, check_project, domain_json, iam_error, nocatalog, project_scope,
    refuse, token_body, token_response,
};
use super::{StandIn, fake_id, shown};
use crate::error::ProxyBody;

/// The stand-in IAM's one agency.
#[derive(Clone, Debug)]
pub struct StandInAgency {
    /// The account that created the agency.
    pub domain_name: String,
    pub agency_name: String,
    /// The longest temporary AK/SK it gives, whatever `duration_seconds` asks.
    pub credential_lifetime: Duration,
}

impl StandIn {
    /// Also plays one IAM agency: `assume_role` on `/v3/auth/tokens` and on
    /// `/v3.0/OS-CREDENTIAL/securitytokens`. Only together with [`StandIn::with_iam`].
    pub fn with_agency(mut self, agency: StandInAgency) -> Self {
        self.agency = Some(agency);
        self
    }

    /// `POST /v3/auth/tokens`, `assume_role`: a token of the agency, scoped
    /// to the project when asked (the only kind the service accepts).
    pub(super) fn agency_token(
        &self,
        iam: &StandInIam,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid");
        };
        let Some(caller) = parts.headers.get("x-auth-token") else {
            return iam_error(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            );
        };
        if let Err(refused) = self.live_token(caller.as_bytes()) {
            return refused.response();
        }
        let agency = match self.assumed_agency(&request) {
            Ok(agency) => agency,
            Err(refused) => return refused.response(),
        };
        let Ok(scope) = project_scope(&request) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid");
        };
        if let Some(scope) = &scope
            && let Err(refused) = check_project(iam, scope, &[])
        {
            return refused.response();
        }
        let issued = self.issue_token(iam, scope.is_some());
        let name = format!("{}/{}", agency.domain_name, agency.agency_name);
        let user = serde_json::json!({
            "id": fake_id("agency", &name),
            "name": name,
            "domain": domain_json(&agency.domain_name),
        });
        let body = token_body(iam, &issued, "assume_role", user, nocatalog(parts));
        token_response(&issued, body)
    }

    /// The configured agency, if `auth.identity.assume_role` names it
    /// (`domain_name`, or `domain_id`; `agency_name`, or the older
    /// `xrole_name`), else IAM's refusal (400 when the names are missing,
    /// 403 when they are not this agency's).
    pub(super) fn assumed_agency(
        &self,
        request: &serde_json::Value,
    ) -> Result<&StandInAgency, IamRefusal> {
        let Some(role) = request.pointer("/auth/identity/assume_role") else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request body is invalid: auth.identity.assume_role is required",
            ));
        };
        let text = |k: &str| role.get(k).and_then(|v| v.as_str());
        let agency_name = text("agency_name").or_else(|| text("xrole_name"));
        let domain = text("domain_name")
            .map(|n| (n, false))
            .or_else(|| text("domain_id").map(|i| (i, true)));
        let (Some(agency_name), Some((domain, by_id))) = (agency_name, domain) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request body is invalid: assume_role needs agency_name and domain_name or domain_id",
            ));
        };
        let matches = |a: &StandInAgency| {
            let domain_ok = if by_id {
                domain == fake_id("domain", &a.domain_name)
            } else {
                domain == a.domain_name
            };
            domain_ok && agency_name == a.agency_name
        };
        match &self.agency {
            Some(agency) if matches(agency) => Ok(agency),
            _ => Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "The agency {} of domain {} does not exist or does not trust this account.",
                    shown(agency_name),
                    shown(domain)
                ),
            )),
        }
    }
}
