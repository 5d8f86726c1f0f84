//! Temporary AK/SK from the ECS metadata service:
//! `GET http://169.254.169.254/openstack/latest/securitykey` →
//! `{"credential":{"access","secret","securitytoken","expires_at"}}`, so a
//! sidecar on a Huawei Cloud server (with an agency) needs no key on disk.
//!
//! As Huawei's SDKs do, the session-token step comes first (DESIGN §10):
//! `PUT …/meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds`,
//! then `X-Metadata-Token` on the credential request. A service that does
//! not offer it (404/405) is asked plainly, and asked again for a session
//! token a day later; a 401 fetches a new session token once.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use super::aksk::AkSkCredentials;
use super::refresh::{BoxFuture, Expiring, Fetch, FetchError};
use crate::client::HttpClient;
use crate::clock::Clock;
use crate::error::{chain, full};
use crate::secret::Secret;
use crate::signer::AkSk;

/// The ECS metadata endpoint for temporary credentials.
pub use crate::config::DEFAULT_METADATA_ENDPOINT;

/// Where the session token is issued, on the credential endpoint's host.
pub const SESSION_TOKEN_PATH: &str = "/meta-data/latest/api/token";
pub const SESSION_TOKEN_HEADER: &str = "x-metadata-token";
pub const SESSION_TTL_HEADER: &str = "x-metadata-token-ttl-seconds";

/// The lifetime asked for (the SDKs' 6 h, the service's maximum).
pub const SESSION_TTL: Duration = Duration::from_secs(6 * 3600);

/// A session token is replaced this long before it expires.
const SESSION_RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);

/// A service that offered no session token is asked again after this long
/// (the SDKs' 24 h), in case it was hardened since.
const SESSION_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// In a 401 body: the server has no agency; a new session token cannot help.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";

/// A temporary-key answer is under 2 KB; anything much larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

/// The official SDKs give the metadata service 3 s.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// Fetches temporary AK/SK from the metadata service.
pub struct MetadataFetcher {
    pub endpoint: Uri,
    pub project_id: Option<String>,
    pub client: HttpClient,
    /// This machine's clock (session-token lifetimes are local).
    pub clock: Clock,
    pub session: Mutex<Session>,
}

/// What is known about the service's session tokens.
#[derive(Debug, Default)]
pub enum Session {
    /// Not asked yet: the next fetch asks.
    #[default]
    Unknown,
    /// A token, used until `renew_at`.
    Token {
        value: Secret,
        renew_at: DateTime<Utc>,
    },
    /// The service answered 404/405; ask again at `recheck_at`.
    Unsupported { recheck_at: DateTime<Utc> },
}

impl MetadataFetcher {
    pub fn new(
        endpoint: Uri,
        project_id: Option<String>,
        client: HttpClient,
        clock: Clock,
    ) -> Self {
        MetadataFetcher {
            endpoint,
            project_id,
            client,
            clock,
            session: Mutex::new(Session::Unknown),
        }
    }

    /// The session-token step, then the credential request; a 401 (not
    /// for a missing agency) renews the session token and asks once more.
    pub async fn fetch_key(&self) -> Result<Expiring<AkSk>, FetchError> {
        let token = self.session_token(false).await?;
        let mut answer = self
            .ask(Method::GET, &self.endpoint, token.as_ref())
            .await?;
        if answer.0 == StatusCode::UNAUTHORIZED && !contains(&answer.1, NO_AGENCY) {
            tracing::info!(
                endpoint = %self.endpoint,
                "the metadata service answered 401; fetching a new session token"
            );
            let token = self.session_token(true).await?;
            answer = self
                .ask(Method::GET, &self.endpoint, token.as_ref())
                .await?;
        }
        security_key(&self.endpoint, answer)
    }

    /// The token to send, if the service offers one. `renew`: a new one
    /// even if the current one looks valid (it was refused).
    async fn session_token(&self, renew: bool) -> Result<Option<Secret>, FetchError> {
        let now = (self.clock)();
        match &*lock(&self.session) {
            Session::Token { value, renew_at } if !renew && now < *renew_at => {
                return Ok(Some(value.clone()));
            }
            Session::Unsupported { recheck_at } if !renew && now < *recheck_at => {
                return Ok(None);
            }
            _ => {}
        }
        let url = session_url(&self.endpoint);
        let (status, body) = self.ask(Method::PUT, &url, None).await?;
        let now = (self.clock)();
        let next = match status {
            StatusCode::OK => {
                let value = std::str::from_utf8(&body)
                    .ok()
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && HeaderValue::from_str(t).is_ok())
                    .ok_or_else(|| FetchError {
                        message: format!(
                            "the metadata service at {url} answered 200 without a usable session token"
                        ),
                        permanent: false,
                    })?;
                Session::Token {
                    value: Secret::new(value),
                    renew_at: now + to_chrono(SESSION_TTL - SESSION_RENEW_BEFORE),
                }
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if !renew => {
                tracing::info!(
                    "the metadata service offers no session token (HTTP {}); asking it without one",
                    status.as_u16()
                );
                Session::Unsupported {
                    recheck_at: now + to_chrono(SESSION_RECHECK),
                }
            }
            _ => {
                return Err(FetchError {
                    message: format!(
                        "the metadata service at {url} answered HTTP {} to the session-token request{}",
                        status.as_u16(),
                        if renew {
                            " (after refusing the credential request with 401)"
                        } else {
                            ""
                        }
                    ),
                    permanent: false,
                });
            }
        };
        let token = match &next {
            Session::Token { value, .. } => Some(value.clone()),
            _ => None,
        };
        *lock(&self.session) = next;
        Ok(token)
    }

    /// One bounded request: the status and the whole (small) body.
    async fn ask(
        &self,
        method: Method,
        url: &Uri,
        token: Option<&Secret>,
    ) -> Result<(StatusCode, Bytes), FetchError> {
        let mut request = Request::builder().method(method.clone()).uri(url.clone());
        if method == Method::PUT {
            request = request.header(SESSION_TTL_HEADER, SESSION_TTL.as_secs().to_string());
        }
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| FetchError {
                message: "the session token is not a valid header value".into(),
                permanent: false,
            })?;
            value.set_sensitive(true);
            request = request.header(SESSION_TOKEN_HEADER, value);
        }
        let request = request.body(full("")).map_err(|e| FetchError {
            message: format!("invalid metadata URL: {e}"),
            permanent: true,
        })?;
        exchange(&self.client, url, request).await
    }
}

impl Fetch<std::sync::Arc<AkSkCredentials>> for MetadataFetcher {
    fn fetch(
        &self,
    ) -> BoxFuture<'_, Result<Expiring<std::sync::Arc<AkSkCredentials>>, FetchError>> {
        Box::pin(async move {
            let fetched = self.fetch_key().await?;
            let origin = format!("ECS metadata {}", self.endpoint);
            Ok(super::temporary::ready(
                fetched,
                self.project_id.clone(),
                origin,
            ))
        })
    }
}

fn lock(m: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `http://169.254.169.254/meta-data/latest/api/token` for a credential
/// endpoint on that host.
pub fn session_url(endpoint: &Uri) -> Uri {
    let mut parts = endpoint.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static(SESSION_TOKEN_PATH));
    Uri::from_parts(parts).unwrap_or_else(|_| endpoint.clone())
}

/// One plain credential request, without the session-token step (for
/// `check` and tests).
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
    let answer = exchange(client, endpoint, request).await?;
    security_key(endpoint, answer)
}

/// Sends `request` to `url`, bounded in time and size: a stalled answer
/// must not wedge the one task that keeps the credential fresh.
async fn exchange(
    client: &HttpClient,
    url: &Uri,
    request: Request<crate::error::ProxyBody>,
) -> Result<(StatusCode, Bytes), FetchError> {
    let response = match tokio::time::timeout(METADATA_TIMEOUT, client.request(request)).await {
        Err(_) => {
            return Err(FetchError {
                message: format!("the metadata service at {url} did not answer within 3s"),
                permanent: false,
            });
        }
        Ok(Err(e)) => {
            return Err(FetchError {
                message: format!("cannot reach the metadata service at {url}: {}", chain(&e)),
                permanent: false,
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let read = Limited::new(response.into_body(), MAX_ANSWER).collect();
    match tokio::time::timeout(METADATA_TIMEOUT, read).await {
        Ok(Ok(b)) => Ok((status, b.to_bytes())),
        Ok(Err(e)) => Err(FetchError {
            message: format!("reading the answer of the metadata service at {url} failed: {e}"),
            permanent: false,
        }),
        Err(_) => Err(FetchError {
            message: format!("the metadata service at {url} did not finish its answer within 3s"),
            permanent: false,
        }),
    }
}

/// The credential request's answer, or why it is not one.
fn security_key(
    endpoint: &Uri,
    (status, body): (StatusCode, Bytes),
) -> Result<Expiring<AkSk>, FetchError> {
    if !status.is_success() {
        let hint = if status == StatusCode::NOT_FOUND || contains(&body, NO_AGENCY) {
            " (does the server have an agency that grants temporary credentials?)"
        } else if status == StatusCode::UNAUTHORIZED {
            " (the session token was refused twice; does the server have an agency?)"
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
    super::temporary::parse_credential(body)
}
