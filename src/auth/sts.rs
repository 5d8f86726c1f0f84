//! IAM5 STS `AssumeAgencyWithOIDC`: an agency whose trust policy names an
//! OIDC identity provider is assumed with the id token alone, as Huawei's
//! SDKs (`OidcAgencyAccessor`) and the API reference describe:
//! `POST {sts}/v5/agencies/assume-with-oidc`, unsigned, body
//! `{"provider_urn","agency_urn","agency_session_name","id_token","duration_seconds"}`
//! → 200 `{"credentials":{"access_key_id","secret_access_key","security_token","expiration"}}`.
//! The id-token file is read again at every fetch.

use crate::auth::temporary::ready;
use std::sync::Arc;

use super::aksk::AkSkCredentials;
use super::iam::call::{self, Auth, Call, IAM_TIMEOUT};
use super::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use super::temporary::{parse_credential, read_token_file};
use crate::client::HttpClient;
use crate::config::StsOidcSpec;
use crate::credentials::Sources;

pub const ASSUME_WITH_OIDC_PATH: &str = "/v5/agencies/assume-with-oidc";

/// Fetches the agency's temporary AK/SK from STS.
pub struct StsOidcFetcher {
    pub spec: StsOidcSpec,
    pub duration: std::time::Duration,
    pub project_id: Option<String>,
    pub client: HttpClient,
    pub sources: Arc<dyn Sources>,
}

impl StsOidcFetcher {
    pub async fn fetch_key(&self) -> Result<Expiring<crate::signer::AkSk>, FetchError> {
        let file = &self.spec.id_token_file;
        let what = format!("the id token file {}", file.display());
        let id_token = read_token_file(&*self.sources, file, &what)?;
        let body = serde_json::json!({
            "provider_urn": self.spec.provider_urn,
            "agency_urn": self.spec.agency_urn,
            "agency_session_name": self.spec.session_name,
            "id_token": id_token.expose(),
            "duration_seconds": self.duration.as_secs(),
        })
        .to_string();
        let url = format!(
            "{}{ASSUME_WITH_OIDC_PATH}",
            self.spec.sts_endpoint.to_string().trim_end_matches('/')
        );
        let step = format!("temporary AK/SK for agency {}", self.spec.agency_urn);
        let call = Call {
            service: "IAM STS",
            url: &url,
            step: &step,
            timeout: IAM_TIMEOUT,
            skew: None,
        };
        let answer = call::post(&self.client, &call, &[], Auth::None, body).await?;
        if !answer.status.is_success() {
            return Err(call::refused_by("IAM STS", &answer, &step));
        }
        parse_credential(&answer.body).map_err(|e| FetchError {
            message: format!("IAM STS answered for {step}, but {e}"),
            permanent: false,
        })
    }
}

impl Fetch<Arc<AkSkCredentials>> for StsOidcFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let fetched = self.fetch_key().await?;
            let origin = format!(
                "IAM STS {} (agency {})",
                self.spec.sts_endpoint, self.spec.agency_urn
            );
            Ok(ready(fetched, self.project_id.clone(), origin))
        })
    }
}
