//! OIDC federation: an IAM identity provider that trusts an OIDC id token
//! (for CCE, the cluster's projected service-account token) exchanges it
//! for an IAM token, as Huawei's SDKs do (`FederalAccessor`):
//!
//! 1. `POST {iam}/v3.0/OS-AUTH/id-token/tokens`, `X-Idp-Id: <idp id>`, body
//!    `{"auth":{"id_token":{"id":"<id token>"}}}` (with `"scope"` for a
//!    project-scoped token) → 201, the token in `X-Subject-Token`;
//! 2. for temporary AK/SK, `POST {iam}/v3.0/OS-CREDENTIAL/securitytokens`
//!    with `{"auth":{"identity":{"methods":["token"],"token":{"id","duration_seconds"}}}}`
//!    → 201 `{"credential":{…}}`.
//!
//! The id-token file is read again at every exchange (projected tokens rotate).

use crate::auth::temporary::ready;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::call::{self, Auth, Call};
use super::{ProjectScope, SkewProbe, Token};
use crate::auth::aksk::AkSkCredentials;
use crate::auth::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use crate::client::HttpClient;
use crate::config::OidcSpec;
use crate::credentials::Sources;
use crate::secret::Secret;
use crate::signer::AkSk;

pub const ID_TOKEN_PATH: &str = "/v3.0/OS-AUTH/id-token/tokens";
pub const SECURITY_TOKENS_PATH: &str = "/v3.0/OS-CREDENTIAL/securitytokens";

/// `https://iam…` + `path`.
pub fn iam_url(iam: &http::Uri, path: &str) -> String {
    format!("{}{path}", iam.to_string().trim_end_matches('/'))
}

/// `{"project":{"name"|"id": …}}`
pub fn scope_json(project: &ProjectScope) -> serde_json::Value {
    match project {
        ProjectScope::Name(name) => serde_json::json!({ "project": { "name": name } }),
        ProjectScope::Id(id) => serde_json::json!({ "project": { "id": id } }),
    }
}

/// Exchanges the id token in a file for IAM tokens and temporary keys.
#[derive(Clone)]
pub struct OidcExchange {
    pub spec: OidcSpec,
    pub client: HttpClient,
    pub sources: Arc<dyn Sources>,
    pub skew: Option<SkewProbe>,
}

impl OidcExchange {
    /// The id token, read now (never quoted in errors).
    fn id_token(&self) -> Result<Secret, FetchError> {
        let file = &self.spec.id_token_file;
        let what = format!("the id token file {}", file.display());
        crate::auth::temporary::read_token_file(&*self.sources, file, &what)
    }

    /// Step 1: an IAM token for the id token; scoped to `project` if given.
    pub async fn token(
        &self,
        project: Option<&ProjectScope>,
    ) -> Result<Expiring<Token>, FetchError> {
        let id_token = self.id_token()?;
        let mut auth = serde_json::json!({ "id_token": { "id": id_token.expose() } });
        if let Some(project) = project {
            auth["scope"] = scope_json(project);
        }
        let body = serde_json::json!({ "auth": auth }).to_string();
        let idp = HeaderValue::from_str(&self.spec.idp_id).map_err(|_| FetchError {
            message: format!(
                "the identity provider id {:?} is not a valid header value",
                self.spec.idp_id
            ),
            permanent: true,
        })?;
        let headers = [(HeaderName::from_static("x-idp-id"), idp)];
        let step = format!(
            "a token for the id token in {} (identity provider {})",
            self.spec.id_token_file.display(),
            self.spec.idp_id
        );
        let url = iam_url(&self.spec.iam_endpoint, ID_TOKEN_PATH);
        let answer = call::post(
            &self.client,
            &Call::iam(&url, &step, self.skew.as_ref()),
            &headers,
            Auth::None,
            body,
        )
        .await?;
        call::token_of(answer, &step)
    }

    /// Steps 1 and 2: temporary AK/SK valid for `duration`.
    pub async fn security_key(&self, duration: Duration) -> Result<Expiring<AkSk>, FetchError> {
        let token = self.token(None).await?;
        let token = token.value.header.to_str().unwrap_or_default();
        let body = serde_json::json!({ "auth": { "identity": {
            "methods": ["token"],
            "token": { "id": token, "duration_seconds": duration.as_secs() },
        } } })
        .to_string();
        let step = format!(
            "temporary AK/SK for the token of identity provider {}",
            self.spec.idp_id
        );
        let url = iam_url(&self.spec.iam_endpoint, SECURITY_TOKENS_PATH);
        let answer = call::post(
            &self.client,
            &Call::iam(&url, &step, self.skew.as_ref()),
            &[],
            Auth::None,
            body,
        )
        .await?;
        call::security_key_of(answer, &step)
    }
}

/// A project-scoped token for the id token.
pub struct OidcToken {
    pub exchange: OidcExchange,
    pub project: ProjectScope,
}

impl Fetch<Token> for OidcToken {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Token>, FetchError>> {
        Box::pin(self.exchange.token(Some(&self.project)))
    }
}

/// Temporary AK/SK for the id token.
pub struct OidcKey {
    pub exchange: OidcExchange,
    pub duration: Duration,
    pub project_id: Option<String>,
}

impl Fetch<Arc<AkSkCredentials>> for OidcKey {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let fetched = self.exchange.security_key(self.duration).await?;
            let origin = format!(
                "OIDC federation (identity provider {}) via IAM {}",
                self.exchange.spec.idp_id, self.exchange.spec.iam_endpoint
            );
            Ok(ready(fetched, self.project_id.clone(), origin))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_scopes() {
        let iam: http::Uri = "https://iam.cn-north-4.myhuaweicloud.com/".parse().unwrap();
        assert_eq!(
            iam_url(&iam, ID_TOKEN_PATH),
            "https://iam.cn-north-4.myhuaweicloud.com/v3.0/OS-AUTH/id-token/tokens"
        );
        assert_eq!(
            scope_json(&ProjectScope::Id("0a".into())),
            serde_json::json!({"project": {"id": "0a"}})
        );
    }
}
