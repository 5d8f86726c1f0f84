//! Agency assumption: a credential of this account (the base) assumes an
//! agency that another account created for it, as IAM documents:
//!
//! - a project-scoped token: `POST {iam}/v3/auth/tokens` with
//!   `{"auth":{"identity":{"methods":["assume_role"],"assume_role":{"domain_name","agency_name"}},"scope":…}}`,
//!   the base's token in `X-Auth-Token` (IAM accepts nothing else here);
//! - temporary AK/SK: `POST {iam}/v3.0/OS-CREDENTIAL/securitytokens` with
//!   `assume_role: {domain_name, agency_name, duration_seconds}`, the base's
//!   token in `X-Auth-Token`, or the request signed with the base's AK/SK.

use crate::auth::temporary::ready;
use std::sync::Arc;
use std::time::Duration;

use super::call::{self, Auth, Call};
use super::oidc::{OidcExchange, SECURITY_TOKENS_PATH, iam_url, scope_json};
use super::{ProjectScope, SkewProbe, Token};
use crate::auth::aksk::AkSkCredentials;
use crate::auth::refresh::{BoxFuture, Expiring, Fetch, FetchError, Refreshing};
use crate::auth::watched::Watched;
use crate::client::HttpClient;
use crate::config::AgencySpec;

/// How the base proves itself to IAM.
pub enum BaseCredential {
    /// A token credential: its current token.
    Token {
        token: Arc<Refreshing<Token>>,
        max_wait: Duration,
    },
    /// An OIDC AK/SK credential: a fresh unscoped token from its identity provider.
    Oidc(OidcExchange),
    /// A long-lived AK/SK: a signature.
    Keys(Arc<Watched<AkSkCredentials>>),
    /// Temporary AK/SK: a signature with the current ones.
    Temporary {
        creds: Arc<Refreshing<Arc<AkSkCredentials>>>,
        max_wait: Duration,
    },
    /// No base was started (validation prevents it): every fetch fails.
    Missing,
}

/// What the base lends a call.
enum Proof {
    Token(http::HeaderValue),
    Keys(Arc<AkSkCredentials>),
}

/// Assumes one agency.
pub struct AgencyFetcher {
    pub spec: AgencySpec,
    pub base: BaseCredential,
    pub client: HttpClient,
    pub skew: Option<SkewProbe>,
}

impl AgencyFetcher {
    fn who(&self) -> String {
        format!(
            "agency {} of account {}",
            self.spec.agency_name, self.spec.domain_name
        )
    }

    async fn proof(&self) -> Result<Proof, FetchError> {
        let base = &self.spec.base;
        let unavailable = |e: String| FetchError {
            message: format!(
                "[credentials.{base}], which assumes the {}, has no credential: {e}",
                self.who()
            ),
            permanent: false,
        };
        Ok(match &self.base {
            BaseCredential::Token { token, max_wait } => Proof::Token(
                token
                    .get(*max_wait)
                    .await
                    .map_err(unavailable)?
                    .value
                    .header
                    .clone(),
            ),
            BaseCredential::Oidc(exchange) => {
                let token = exchange.token(None).await.map_err(|e| FetchError {
                    message: format!(
                        "[credentials.{base}], which assumes the {}: {}",
                        self.who(),
                        e.message
                    ),
                    ..e
                })?;
                Proof::Token(token.value.header)
            }
            BaseCredential::Keys(keys) => Proof::Keys(keys.current()),
            BaseCredential::Temporary { creds, max_wait } => Proof::Keys(
                creds
                    .get(*max_wait)
                    .await
                    .map_err(unavailable)?
                    .value
                    .clone(),
            ),
            BaseCredential::Missing => return Err(unavailable("it is not configured".to_owned())),
        })
    }

    fn assume_role(&self, duration: Option<Duration>) -> serde_json::Value {
        let mut role = serde_json::json!({
            "domain_name": self.spec.domain_name,
            "agency_name": self.spec.agency_name,
        });
        if let Some(d) = duration {
            role["duration_seconds"] = d.as_secs().into();
        }
        serde_json::json!({ "methods": ["assume_role"], "assume_role": role })
    }

    /// A token scoped to `project` in the other account.
    pub async fn token(&self, project: &ProjectScope) -> Result<Expiring<Token>, FetchError> {
        let step = format!("a token for the {}, {}", self.who(), project.describe());
        let Proof::Token(token) = self.proof().await? else {
            return Err(FetchError {
                message: format!("IAM issues {step} only to a token, not to an AK/SK"),
                permanent: true,
            });
        };
        let body = serde_json::json!({ "auth": {
            "identity": self.assume_role(None),
            "scope": scope_json(project),
        } })
        .to_string();
        let url = iam_url(&self.spec.iam_endpoint, "/v3/auth/tokens?nocatalog=true");
        let answer = call::post(
            &self.client,
            &Call::iam(&url, &step, self.skew.as_ref()),
            &[],
            Auth::Token(&token),
            body,
        )
        .await?;
        call::token_of(answer, &step)
    }

    /// Temporary AK/SK of the agency, valid for `duration`.
    pub async fn security_key(
        &self,
        duration: Duration,
    ) -> Result<Expiring<crate::signer::AkSk>, FetchError> {
        let step = format!("temporary AK/SK for the {}", self.who());
        let proof = self.proof().await?;
        let auth = match &proof {
            Proof::Token(t) => Auth::Token(t),
            Proof::Keys(k) => Auth::Signature(k),
        };
        let body = serde_json::json!({ "auth": { "identity": self.assume_role(Some(duration)) } })
            .to_string();
        let url = iam_url(&self.spec.iam_endpoint, SECURITY_TOKENS_PATH);
        let answer = call::post(
            &self.client,
            &Call::iam(&url, &step, self.skew.as_ref()),
            &[],
            auth,
            body,
        )
        .await?;
        call::security_key_of(answer, &step)
    }
}

/// The agency's token.
pub struct AgencyToken {
    pub fetcher: AgencyFetcher,
    pub project: ProjectScope,
}

impl Fetch<Token> for AgencyToken {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Token>, FetchError>> {
        Box::pin(self.fetcher.token(&self.project))
    }
}

/// The agency's temporary AK/SK.
pub struct AgencyKey {
    pub fetcher: AgencyFetcher,
    pub duration: Duration,
    pub project_id: Option<String>,
}

impl Fetch<Arc<AkSkCredentials>> for AgencyKey {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let fetched = self.fetcher.security_key(self.duration).await?;
            let origin = format!(
                "the {} (assumed with [credentials.{}])",
                self.fetcher.who(),
                self.fetcher.spec.base
            );
            Ok(ready(fetched, self.project_id.clone(), origin))
        })
    }
}
