//! The stand-in IAM's temporary AK/SK: `POST /v3.0/OS-CREDENTIAL/securitytokens`
//! with `methods: ["token"]` (for a live token, given in `token.id` or in
//! `X-Auth-Token`) or `methods: ["assume_role"]` (for the agency, to a caller
//! with a live token in `X-Auth-Token` or an AK/SK signature). Answers 201
//! `{"credential":{"access","secret","securitytoken","expires_at"}}`; the
//! service accepts the keys, with their security token, until they expire.

use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};

use super::iam::{IamRefusal, iam_error, methods, refuse};
use super::service::sent_credentials;
use super::{StandIn, credential_json, json, scrub};
use crate::error::ProxyBody;

/// IAM's endpoint for temporary AK/SK + security token.
pub const SECURITY_TOKENS_PATH: &str = "/v3.0/OS-CREDENTIAL/securitytokens";

/// IAM issues temporary keys for 15 minutes to 24 hours.
const DURATION_SECONDS: RangeInclusive<u64> = 900..=86_400;

/// Without `duration_seconds`, IAM issues them for 15 minutes.
const DEFAULT_DURATION_SECONDS: u64 = 900;

/// `methods: ["token"]` without a federation caps nothing below IAM's own 24 h.
const TOKEN_METHOD_CAP: Duration = Duration::from_secs(86_400);

impl StandIn {
    /// `POST /v3.0/OS-CREDENTIAL/securitytokens`.
    pub(super) fn security_tokens(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
        self.stats
            .security_token_calls
            .fetch_add(1, Ordering::SeqCst);
        if let Some(refused) = self.iam_gate(parts, "temporary access keys") {
            return refused;
        }
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid");
        };
        let methods = methods(body);
        let outcome = if methods.iter().any(|m| m == "assume_role") {
            self.stats.assume_role_calls.fetch_add(1, Ordering::SeqCst);
            self.agency_security_key(parts, body, &request)
        } else if methods.iter().any(|m| m == "token") {
            self.token_security_key(parts, &request)
        } else {
            Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request body is invalid: methods must be [\"token\"] or [\"assume_role\"]",
            ))
        };
        outcome.unwrap_or_else(IamRefusal::response)
    }

    /// `methods: ["token"]`: keys for the live token in `token.id` (and in
    /// `X-Auth-Token` when that is sent too), for at most the federation's
    /// credential lifetime.
    fn token_security_key(
        &self,
        parts: &http::request::Parts,
        request: &serde_json::Value,
    ) -> Result<Response<ProxyBody>, IamRefusal> {
        let in_header = parts.headers.get("x-auth-token");
        let in_body = request
            .pointer("/auth/identity/token/id")
            .and_then(|v| v.as_str());
        if in_header.is_none() && in_body.is_none() {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            ));
        }
        if let Some(token) = in_header {
            self.live_token(token.as_bytes())?;
        }
        if let Some(token) = in_body {
            self.live_token(token.as_bytes())?;
        }
        let asked = duration_seconds(request.pointer("/auth/identity/token/duration_seconds"))?;
        let cap = self
            .federation
            .as_ref()
            .map_or(TOKEN_METHOD_CAP, |f| f.credential_lifetime);
        Ok(self.created(asked.min(cap)))
    }

    /// `methods: ["assume_role"]`: the agency's keys, to a caller with a
    /// live token or a valid signature, for at most the agency's credential
    /// lifetime.
    fn agency_security_key(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
        request: &serde_json::Value,
    ) -> Result<Response<ProxyBody>, IamRefusal> {
        if let Some(token) = parts.headers.get("x-auth-token") {
            self.live_token(token.as_bytes())?;
        } else if parts.headers.contains_key(header::AUTHORIZATION) {
            self.check_aksk(parts, body, (self.clock)())
                .map_err(|refusal| {
                    let message = format!("The signature is invalid: {}", refusal.reason);
                    let message = scrub(&message, &sent_credentials(parts));
                    refuse(StatusCode::UNAUTHORIZED, message)
                })?;
        } else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            ));
        }
        let agency = self.assumed_agency(request)?;
        let asked =
            duration_seconds(request.pointer("/auth/identity/assume_role/duration_seconds"))?;
        Ok(self.created(asked.min(agency.credential_lifetime)))
    }

    /// 201 with fresh keys valid for `lifetime`.
    fn created(&self, lifetime: Duration) -> Response<ProxyBody> {
        let (key, expires_at) = self.issue_temporary(lifetime);
        json(
            StatusCode::CREATED,
            serde_json::json!({ "credential": credential_json(&key, expires_at) }),
        )
    }
}

/// `duration_seconds`: 900 when absent; 400 unless an integer from 900 to 86400.
fn duration_seconds(value: Option<&serde_json::Value>) -> Result<Duration, IamRefusal> {
    let seconds = match value {
        None => Some(DEFAULT_DURATION_SECONDS),
        Some(v) => v.as_u64().filter(|s| DURATION_SECONDS.contains(s)),
    };
    seconds.map(Duration::from_secs).ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "Invalid duration_seconds: it must be an integer from 900 to 86400.",
        )
    })
}
