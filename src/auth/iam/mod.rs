//! IAM tokens: `POST {iam}/v3/auth/tokens?nocatalog=true` with the password
//! method and a project scope. The token is the `X-Subject-Token` header of a
//! 201; `token.expires_at` in the body says when it expires (24 h).
//!
//! The other IAM flows (DESIGN §11) are beside it: [`oidc`] (an id token an
//! identity provider trusts) and [`agency`] (an agency in another account),
//! all through [`call`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::HeaderValue;

use super::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use crate::client::HttpClient;
use crate::clock::{Clock, Skew};
use crate::credentials::Sources;

pub mod agency;
pub mod call;
pub mod oidc;

pub use crate::config::{ProjectScope, TokenRequest};
use call::{Auth, Call};

/// `{iam}/v3/auth/tokens?nocatalog=true`
fn token_url(request: &TokenRequest) -> String {
    format!(
        "{}/v3/auth/tokens?nocatalog=true",
        request.iam_endpoint.to_string().trim_end_matches('/')
    )
}

/// The password-method, project-scoped request body.
fn token_body(request: &TokenRequest, password: &str) -> String {
    let scope = match &request.project {
        ProjectScope::Name(name) => serde_json::json!({ "project": { "name": name } }),
        ProjectScope::Id(id) => serde_json::json!({ "project": { "id": id } }),
    };
    serde_json::json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": { "user": {
                    "name": request.user,
                    "password": password,
                    "domain": { "name": request.domain },
                } },
            },
            "scope": scope,
        }
    })
    .to_string()
}
/// A token as the proxy sends it: a ready header value, marked sensitive.
#[derive(Clone)]
pub struct Token {
    pub header: HeaderValue,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(** redacted **)")
    }
}

/// Fetches tokens from IAM.
pub struct IamFetcher {
    pub request: TokenRequest,
    pub client: HttpClient,
    pub sources: Arc<dyn Sources>,
    /// IAM's `Date` is measured against this machine's clock.
    pub skew: Option<SkewProbe>,
}

/// Where to report the offset of a service's clock (its `Date` header).
#[derive(Clone)]
pub struct SkewProbe {
    pub skew: Arc<Skew>,
    /// This machine's clock, uncorrected.
    pub local: Clock,
}

impl SkewProbe {
    /// Reports the `Date` of an answer that just arrived from `source`.
    pub fn observe(&self, headers: &http::HeaderMap, source: &str) {
        if let Some(remote) = crate::gateway::http_date(headers) {
            self.skew.observe(remote, (self.local)(), source);
        }
    }
}

impl Fetch<Token> for IamFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Token>, FetchError>> {
        Box::pin(fetch_token(
            &self.request,
            &self.client,
            &*self.sources,
            self.skew.as_ref(),
        ))
    }
}

/// Asks IAM for one token. Errors name the user, domain and project, and
/// what IAM said; never the password.
pub async fn fetch_token(
    request: &TokenRequest,
    client: &HttpClient,
    sources: &dyn Sources,
    skew: Option<&SkewProbe>,
) -> Result<Expiring<Token>, FetchError> {
    let step = format!("a token for {}", request.describe());
    // Read at every fetch, so a rotated password file is picked up.
    let password = request.password.resolve(sources).map_err(|e| FetchError {
        message: format!(
            "cannot read the IAM password for {}: {e}",
            request.describe()
        ),
        permanent: true,
    })?;
    let url = token_url(request);
    let body = token_body(request, password.expose());
    let call = Call::iam(&url, &step, skew);
    let answer = call::post(client, &call, &[], Auth::None, body).await?;
    call::token_of(answer, &step)
}

/// `token.expires_at` from IAM's body, with or without fractional seconds
/// (`2020-01-04T09:05:22.701000Z`).
pub fn parse_expires_at(body: &[u8]) -> Result<DateTime<Utc>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("its body is not JSON ({e})"))?;
    let text = v["token"]["expires_at"]
        .as_str()
        .ok_or("its body has no token.expires_at")?;
    parse_time(text)
}

/// An RFC 3339 UTC time as Huawei writes it, fraction optional.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .or_else(|_| {
            // Some services omit the offset: `2020-01-04T09:05:22.701000`.
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|_| format!("expires_at {text:?} is not an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::SecretSource;

    #[test]
    fn expires_at_parses_with_and_without_fractional_seconds() {
        let with =
            parse_expires_at(br#"{"token":{"expires_at":"2020-01-04T09:05:22.701000Z"}}"#).unwrap();
        assert_eq!(with.to_rfc3339(), "2020-01-04T09:05:22.701+00:00");
        let without =
            parse_expires_at(br#"{"token":{"expires_at":"2020-01-04T09:05:22Z"}}"#).unwrap();
        assert_eq!(without.to_rfc3339(), "2020-01-04T09:05:22+00:00");
        assert_eq!(
            parse_time("2020-01-08T03:50:07.574000")
                .unwrap()
                .to_rfc3339(),
            "2020-01-08T03:50:07.574+00:00"
        );
        assert!(
            parse_expires_at(br#"{"token":{}}"#)
                .unwrap_err()
                .contains("no token.expires_at")
        );
        assert!(
            parse_expires_at(b"<html>")
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn the_request_body_has_the_password_method_and_a_project_scope() {
        let mut r = TokenRequest {
            iam_endpoint: "https://iam.cn-north-4.myhuaweicloud.com/".parse().unwrap(),
            user: "alice".into(),
            password: SecretSource::Env("P".into()),
            domain: "acme".into(),
            project: ProjectScope::Name("cn-north-4".into()),
        };
        assert_eq!(
            token_url(&r),
            "https://iam.cn-north-4.myhuaweicloud.com/v3/auth/tokens?nocatalog=true"
        );
        let v: serde_json::Value = serde_json::from_str(&token_body(&r, "pw")).unwrap();
        assert_eq!(v["auth"]["identity"]["methods"][0], "password");
        assert_eq!(v["auth"]["identity"]["password"]["user"]["name"], "alice");
        assert_eq!(v["auth"]["identity"]["password"]["user"]["password"], "pw");
        assert_eq!(
            v["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "acme"
        );
        assert_eq!(v["auth"]["scope"]["project"]["name"], "cn-north-4");
        r.project = ProjectScope::Id("0a1b".into());
        let v: serde_json::Value = serde_json::from_str(&token_body(&r, "pw")).unwrap();
        assert_eq!(v["auth"]["scope"]["project"]["id"], "0a1b");
        assert_eq!(r.describe(), "user alice in domain acme, project id 0a1b");
    }
}
