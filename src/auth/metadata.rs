//! Temporary AK/SK from the ECS metadata service:
//! `GET http://169.254.169.254/openstack/latest/securitykey` →
//! `{"credential":{"access","secret","securitytoken","expires_at"}}`, so a
//! sidecar on a Huawei Cloud server (with an agency) needs no key on disk.

use std::time::Duration;

use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Limited};

use super::aksk::AkSkCredentials;
use super::iam::parse_time;
use super::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use crate::client::HttpClient;
use crate::error::{chain, full};
use crate::secret::Secret;
use crate::signer::AkSk;

/// The ECS metadata endpoint for temporary credentials.
pub use crate::config::DEFAULT_METADATA_ENDPOINT;

/// A temporary-key answer is under 2 KB; anything much larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

/// The official SDKs give the metadata service 3 s.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// Fetches temporary AK/SK from the metadata service.
pub struct MetadataFetcher {
    pub endpoint: Uri,
    pub project_id: Option<String>,
    pub client: HttpClient,
}

impl Fetch<std::sync::Arc<AkSkCredentials>> for MetadataFetcher {
    fn fetch(
        &self,
    ) -> BoxFuture<'_, Result<Expiring<std::sync::Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let c = fetch_security_key(&self.endpoint, &self.client).await?;
            Ok(Expiring {
                value: std::sync::Arc::new(AkSkCredentials::new(
                    c.value,
                    self.project_id.clone(),
                    format!("ECS metadata {}", self.endpoint),
                )),
                expires_at: c.expires_at,
            })
        })
    }
}

/// One call to the metadata service.
pub async fn fetch_security_key(
    endpoint: &Uri,
    client: &HttpClient,
) -> Result<Expiring<AkSk>, FetchError> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(endpoint.clone())
        .body(full(""))
        .map_err(|e| FetchError {
            message: format!("invalid metadata URL: {e}"),
            permanent: true,
        })?;
    let response = match tokio::time::timeout(METADATA_TIMEOUT, client.request(request)).await {
        Err(_) => {
            return Err(FetchError {
                message: format!("the metadata service at {endpoint} did not answer within 3s"),
                permanent: false,
            });
        }
        Ok(Err(e)) => {
            return Err(FetchError {
                message: format!(
                    "cannot reach the metadata service at {endpoint}: {}",
                    chain(&e)
                ),
                permanent: false,
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    // The body is bounded in time and size too: a stalled answer must not
    // wedge the one task that keeps the credential fresh.
    let read = Limited::new(response.into_body(), MAX_ANSWER).collect();
    let body = match tokio::time::timeout(METADATA_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Err(FetchError {
                message: format!(
                    "reading the answer of the metadata service at {endpoint} failed: {e}"
                ),
                permanent: false,
            });
        }
        Err(_) => {
            return Err(FetchError {
                message: format!(
                    "the metadata service at {endpoint} did not finish its answer within 3s"
                ),
                permanent: false,
            });
        }
    };
    if !status.is_success() {
        let hint =
            if status == http::StatusCode::NOT_FOUND || status == http::StatusCode::UNAUTHORIZED {
                " (does the server have an agency that grants temporary credentials?)"
            } else {
                ""
            };
        return Err(FetchError {
            message: format!(
                "the metadata service at {endpoint} answered HTTP {}{hint}",
                status.as_u16()
            ),
            permanent: false,
        });
    }
    parse_security_key(&body).map_err(|e| FetchError {
        message: format!("the metadata service at {endpoint} answered, but {e}"),
        permanent: false,
    })
}

/// Parses `{"credential":{"access","secret","securitytoken","expires_at"}}`.
pub fn parse_security_key(body: &[u8]) -> Result<Expiring<AkSk>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("its body is not JSON ({e})"))?;
    let c = &v["credential"];
    let field = |name: &str| {
        c[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("its body has no credential.{name}"))
    };
    let (access, secret, token, expires_at) = (
        field("access")?,
        field("secret")?,
        field("securitytoken")?,
        field("expires_at")?,
    );
    Ok(Expiring {
        value: AkSk {
            access_key: access.to_owned(),
            secret_key: Secret::new(secret),
            security_token: Some(Secret::new(token)),
        },
        expires_at: parse_time(expires_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_metadata_answer() {
        let c = parse_security_key(
            br#"{"credential":{"access":"TMPAK","secret":"tmp-sk","securitytoken":"tok","expires_at":"2020-01-08T03:50:07.574000Z"}}"#,
        )
        .unwrap();
        assert_eq!(c.value.access_key, "TMPAK");
        assert_eq!(c.value.secret_key.expose(), "tmp-sk");
        assert_eq!(c.value.security_token.unwrap().expose(), "tok");
        assert_eq!(c.expires_at.to_rfc3339(), "2020-01-08T03:50:07.574+00:00");
        assert_eq!(
            parse_security_key(br#"{"credential":{"access":"A"}}"#).unwrap_err(),
            "its body has no credential.secret"
        );
    }
}
