//! Temporary AK/SK from CCE Pod Identity, as Huawei's SDKs ask for them:
//! `POST $HC_CONTAINER_CREDENTIALS_FULL_URI` with body `{}` and the pod's
//! projected service-account token (the file
//! `$HC_CONTAINER_AUTHORIZATION_TOKEN_FILE`, trimmed, read again at every
//! fetch because the kubelet rotates it) as `Authorization`, no scheme.
//! The answer carries the IAM agency bound to the service account's
//! credentials under `credentials` (camelCase) or `credential`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use super::aksk::AkSkCredentials;
use super::iam::call::service_message;
use super::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use super::temporary::parse_credential;
use crate::client::HttpClient;
use crate::config::PodIdentitySpec;
use crate::credentials::Sources;
use crate::error::{chain, full};

/// The SDKs give the Pod Identity endpoint 5 s to connect and 5 s to answer.
const POD_IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer is well under 2 KB.
const MAX_ANSWER: usize = 64 * 1024;

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
        let text = self.sources.read_file(file).map_err(|e| FetchError {
            message: format!(
                "cannot read the service-account token file {} for CCE Pod Identity: {e}",
                file.display()
            ),
            permanent: false,
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(FetchError {
                message: format!(
                    "the service-account token file {} for CCE Pod Identity is empty",
                    file.display()
                ),
                permanent: false,
            });
        }
        let mut value = HeaderValue::from_str(text).map_err(|_| FetchError {
            message: format!(
                "the service-account token file {} holds characters not allowed in a header",
                file.display()
            ),
            permanent: false,
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// One request to the endpoint; its answer parsed.
    pub async fn fetch_key(&self) -> Result<Expiring<crate::signer::AkSk>, FetchError> {
        let endpoint = &self.spec.endpoint;
        let token = self.service_account_token()?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json;charset=utf-8")
            .header(header::AUTHORIZATION, token)
            .body(full("{}"))
            .map_err(|e| FetchError {
                message: format!("invalid Pod Identity endpoint {endpoint}: {e}"),
                permanent: true,
            })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| FetchError {
                message: format!("cannot reach CCE Pod Identity at {endpoint}: {}", chain(&e)),
                permanent: false,
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| FetchError {
                    message: format!(
                        "reading the answer of CCE Pod Identity at {endpoint} failed: {e}"
                    ),
                    permanent: false,
                })?
                .to_bytes();
            Ok::<_, FetchError>((status, body))
        };
        let (status, body) = tokio::time::timeout(POD_IDENTITY_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError {
                message: format!(
                    "CCE Pod Identity at {endpoint} did not answer within {}s",
                    POD_IDENTITY_TIMEOUT.as_secs()
                ),
                permanent: false,
            })??;
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
                    service_message(&body)
                ),
                permanent: status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS,
            });
        }
        parse_credential(&body).map_err(|e| FetchError {
            message: format!("CCE Pod Identity at {endpoint} answered, but {e}"),
            permanent: false,
        })
    }
}

impl Fetch<Arc<AkSkCredentials>> for PodIdentityFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let c = self.fetch_key().await?;
            Ok(Expiring {
                value: Arc::new(AkSkCredentials::new(
                    c.value,
                    self.project_id.clone(),
                    format!("CCE Pod Identity {}", self.spec.endpoint),
                )),
                expires_at: c.expires_at,
            })
        })
    }
}
