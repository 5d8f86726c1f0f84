//! Temporary AK/SK from CCE Pod Identity, as Huawei's SDKs ask for them:
//! `POST $HC_CONTAINER_CREDENTIALS_FULL_URI` with body `{}` and the pod's
//! projected service-account token (the file
//! `$HC_CONTAINER_AUTHORIZATION_TOKEN_FILE`, trimmed, read again at every
//! fetch because the kubelet rotates it) as `Authorization`, no scheme.
//! The answer carries the IAM agency bound to the service account's
//! credentials under `credentials` (camelCase) or `credential`.

use crate::auth::temporary::ready;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use super::aksk::AkSkCredentials;
use super::iam::call::{self, Auth, Call, service_message};
use super::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use super::temporary::{parse_credential, read_token_file};
use crate::client::HttpClient;
use crate::config::PodIdentitySpec;
use crate::credentials::Sources;

/// The SDKs give the Pod Identity endpoint 5 s to connect and 5 s to answer.
const POD_IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches the pod's temporary AK/SK.
pub struct PodIdentityFetcher {
    pub spec: PodIdentitySpec,
    pub project_id: Option<String>,
    pub client: HttpClient,
    pub sources: Arc<dyn Sources>,
}

impl PodIdentityFetcher {
    /// The token file, read now (never quoted in errors).
    fn service_account_token(&self) -> Result<HeaderValue, FetchError> {
        let file = &self.spec.token_file;
        let what = format!(
            "the service-account token file {} for CCE Pod Identity",
            file.display()
        );
        let token = read_token_file(&*self.sources, file, &what)?;
        let mut value = HeaderValue::from_str(token.expose()).map_err(|_| FetchError {
            message: format!("{what} holds characters not allowed in a header"),
            permanent: false,
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// One request to the endpoint; its answer parsed.
    pub async fn fetch_key(&self) -> Result<Expiring<crate::signer::AkSk>, FetchError> {
        let endpoint = self.spec.endpoint.to_string();
        let token = self.service_account_token()?;
        let call = Call {
            service: "CCE Pod Identity",
            url: &endpoint,
            step: "the pod's temporary AK/SK",
            timeout: POD_IDENTITY_TIMEOUT,
            skew: None,
        };
        let headers = [(header::AUTHORIZATION, token)];
        let answer = call::post(&self.client, &call, &headers, Auth::None, "{}".to_owned()).await?;
        let status = answer.status;
        if status != StatusCode::OK {
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    " (is this service account associated with an IAM agency, and is the token file the one Pod Identity projects?)"
                }
                _ => "",
            };
            return Err(FetchError {
                message: format!(
                    "CCE Pod Identity at {endpoint} answered HTTP {}: {}{hint}",
                    status.as_u16(),
                    service_message(&answer.body)
                ),
                permanent: call::will_not_heal(status),
            });
        }
        parse_credential(&answer.body).map_err(|e| FetchError {
            message: format!("CCE Pod Identity at {endpoint} answered, but {e}"),
            permanent: false,
        })
    }
}

impl Fetch<Arc<AkSkCredentials>> for PodIdentityFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let fetched = self.fetch_key().await?;
            let origin = format!("CCE Pod Identity {}", self.spec.endpoint);
            Ok(ready(fetched, self.project_id.clone(), origin))
        })
    }
}
