//! The verifying real-time service: AK/SK signatures (the ±15 min window,
//! temporary keys with their security token, the AK lock-out), IAM tokens
//! and app codes, refused the way API Gateway does; accepted requests are
//! echoed, or answered with a stream.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use super::stream::{echo_websocket, prompt_tokens, server_sent_events, usage_asked, wants_stream};
use super::{HUAWEI_TIME, StandIn, json, lock, random_string, scrub, token_key_bytes};
use crate::error::{ProxyBody, full};
use crate::signer::verify::{constant_time_eq, parse_authorization, verify};

/// The gateway rejects an `X-Sdk-Date` more than 15 minutes from its clock.
pub const DATE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// APIG locks an AK after this many failed signature checks in a row…
pub const AK_LOCK_AFTER: u32 = 5;
/// …for this long, for every application that uses it.
pub const AK_LOCK_FOR: chrono::Duration = chrono::Duration::minutes(5);

/// Bodies up to this size are echoed back as text.
const ECHO_BODY_LIMIT: usize = 4096;

impl StandIn {
    /// Any other path: the real-time service. Accepts a valid AK/SK
    /// signature, an unexpired token from the stand-in IAM, or an app code.
    pub(super) fn service(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Response<ProxyBody> {
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
    pub(super) fn websocket(
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

    pub(super) fn check_aksk(
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
        let live = lock(&self.stats.tokens)
            .get(&token_key_bytes(token.as_bytes()))
            .copied();
        let refuse = |code, reason: String| Refusal {
            credential: "X-Auth-Token",
            code,
            reason,
        };
        match live {
            Some(t) if now >= t.expires_at => Err(refuse(
                "APIG.0307",
                format!("the token expired at {}", t.expires_at.format(HUAWEI_TIME)),
            )),
            Some(t) if !t.scoped => Err(refuse(
                "APIG.0301",
                "the token is not scoped to a project (unscoped tokens are for IAM only)".into(),
            )),
            Some(_) => Ok(()),
            None => Err(refuse(
                "APIG.0301",
                "the token is not one the stand-in IAM issued, or it was revoked".into(),
            )),
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
pub(super) struct Refusal {
    /// The header that carried it.
    credential: &'static str,
    /// The gateway's error code.
    code: &'static str,
    /// Safe to show: never the credential itself.
    pub(super) reason: String,
}

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

/// Echo output gets pasted into tickets: credential headers are shown as `** redacted **`.
const REDACTED_HEADERS: &[&str] = crate::headers::CREDENTIAL_HEADERS;

/// What the service received, as JSON.
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

/// The credentials a request carries in headers (to scrub from what is
/// answered); shorter ones would garble a message, and appear in no reason.
pub(super) fn sent_credentials(parts: &http::request::Parts) -> Vec<&str> {
    REDACTED_HEADERS
        .iter()
        .flat_map(|h| parts.headers.get_all(*h))
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.len() >= 8)
        .collect()
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
    let message = scrub(&format!("{summary}: {reason}"), &sent_credentials(parts));
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({
            "error_code": code,
            "error_msg": message,
            "request_id": random_string(32, b"0123456789abcdef"),
        }),
    )
}
