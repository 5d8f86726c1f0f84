//! The request path: one client request in, one upstream request out.
//!
//! ```text
//! check target (CONNECT, absolute-form, DNS rebinding)
//!   → route (longest prefix)
//!   → Content-Length over max_body? 413 before reading anything
//!   → [timeout until the response head]
//!       rewrite headers (hop-by-hop and client credentials out, Host and route headers in)
//!       → inject credentials (AK/SK: buffer or stream the body, sign what goes on the wire)
//!       → pooled client
//!   → stream the response back
//! ```
//! Every failure is a [`ProxyError`], turned into a response in one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Empty};

use crate::auth::{self, Provider};
use crate::body::{LimitExceeded, Limited, Prefixed};
use crate::client::HttpClient;
use crate::config::walk::Problem;
use crate::config::{AkSkCredentials, Config, Credentials, PayloadMode, Route, Server};
use crate::credentials::{Sources, System};
use crate::error::{BoxError, ProxyBody, ProxyError, chain};
use crate::metrics::Metrics;
use crate::route::{match_route, upstream_path_and_query};
use crate::signer::{self, Payload, SignableRequest};

/// A clock, injected so tests can sign "at" a given time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Everything a request needs, swapped whole on reload.
pub struct State {
    pub config: Config,
    pub client: HttpClient,
    /// One per `[credentials.NAME]`.
    pub providers: HashMap<String, Provider>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// What outlives a reload: metrics, the clock, and where secrets are read from.
#[derive(Clone)]
pub struct Runtime {
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub sources: Arc<dyn Sources>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(Utc::now),
            sources: Arc::new(System),
        }
    }
}

impl State {
    /// Builds the runtime state for a validated config (needs a Tokio runtime:
    /// expiring credentials start fetching at once).
    pub fn build(config: Config) -> Result<State, Vec<Problem>> {
        Self::build_with(config, Runtime::default(), None)
    }

    /// As [`State::build`], keeping `runtime`, and reusing from `previous` the
    /// expiring credentials whose configuration did not change (a reload does
    /// not cost an IAM call).
    pub fn build_with(
        config: Config,
        runtime: Runtime,
        previous: Option<&State>,
    ) -> Result<State, Vec<Problem>> {
        let client = crate::client::build(&config.upstream_tls).map_err(|message| {
            vec![Problem {
                path: "upstream_tls.ca_file".to_owned(),
                message,
            }]
        })?;
        let cx = auth::Context {
            client: client.clone(),
            sources: runtime.sources.clone(),
            clock: runtime.clock.clone(),
            metrics: runtime.metrics.clone(),
        };
        let mut providers = HashMap::new();
        for (name, spec) in &config.credentials {
            let reusable = previous
                .filter(|p| p.config.upstream_tls == config.upstream_tls)
                .and_then(|p| {
                    let same = match (p.config.credentials.get(name)?, spec) {
                        (Credentials::Token(a), Credentials::Token(b)) => a == b,
                        (Credentials::Metadata(a), Credentials::Metadata(b)) => a == b,
                        _ => false,
                    };
                    same.then(|| p.providers.get(name).cloned()).flatten()
                });
            if let Some(kept) = &reusable {
                kept.retry_if_failing();
            }
            let provider = reusable.unwrap_or_else(|| Provider::start(name, spec, &cx));
            providers.insert(name.clone(), provider);
        }
        Ok(State {
            config,
            client,
            providers,
            metrics: runtime.metrics,
            clock: runtime.clock,
        })
    }

    /// What survives a reload of this state.
    pub fn runtime(&self, sources: Arc<dyn Sources>) -> Runtime {
        Runtime {
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            sources,
        }
    }

    /// Ready when every expiring credential has been fetched. The reasons otherwise.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let reasons: Vec<String> = self
            .providers
            .iter()
            .filter_map(|(name, p)| {
                p.not_ready_reason()
                    .map(|r| format!("[credentials.{name}]: {r}"))
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// Shared by every connection.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            metrics: state.metrics.clone(),
            clock: state.clock.clone(),
            state: ArcSwap::from_pointee(state),
        }
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Client headers that carry or shape credentials: removed so a client can
/// never confuse the signature or smuggle its own credential (DESIGN §6).
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "x-auth-token",
    "x-sdk-date",
    "x-security-token",
    "x-apig-appcode",
    "x-sdk-content-sha256",
];

const X_PROJECT_ID: HeaderName = HeaderName::from_static("x-project-id");
const X_SDK_DATE: HeaderName = HeaderName::from_static(signer::X_SDK_DATE);
const X_SDK_CONTENT_SHA256: HeaderName = HeaderName::from_static(signer::X_SDK_CONTENT_SHA256);
const X_SECURITY_TOKEN: HeaderName = HeaderName::from_static(signer::X_SECURITY_TOKEN);

/// Serves one request: never fails, proxy errors become JSON responses.
pub async fn handle<B>(shared: &Shared, req: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let state = shared.state.load_full();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    shared.metrics.in_flight.inc();

    let mut route_label = "none";
    let result = match check_target(&req, &state.config.server) {
        Err(e) => Err(e),
        Ok(()) => match match_route(&state.config.routes, req.uri().path()) {
            None => Err(ProxyError::NoRoute {
                path: path.clone(),
                prefixes: state
                    .config
                    .routes
                    .iter()
                    .map(|r| r.prefix.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Some((route, rest)) => {
                route_label = &route.prefix;
                let rest = rest.to_owned();
                forward(&state, route, &rest, req, (shared.clock)()).await
            }
        },
    };

    let elapsed = started.elapsed();
    shared.metrics.in_flight.dec();
    let (response, error) = match result {
        Ok(resp) => (resp, None),
        Err(err) => {
            let resp = err.to_response();
            tracing::warn!(route = route_label, %method, %path, code = err.code(), "{err}");
            (resp, Some(err.code()))
        }
    };
    let status = response.status().as_u16();
    shared
        .metrics
        .observe_request(route_label, status, error, elapsed);
    tracing::info!(
        target: "modelarts_proxy::access",
        %method,
        %path,
        route = route_label,
        status,
        error = error.unwrap_or(""),
        head_ms = elapsed.as_millis() as u64,
        "request"
    );
    response
}

/// Refuses what would make the proxy a forward proxy or a DNS-rebinding target.
fn check_target<B>(req: &Request<B>, server: &Server) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ForbiddenClient(
            "CONNECT is refused: modelarts-proxy is a reverse proxy for its configured routes, not a forward proxy"
                .to_owned(),
        ));
    }
    // HTTP/1 absolute-form (`GET http://host/ HTTP/1.1`) is how clients talk
    // to a forward proxy; HTTP/2 always carries an authority.
    let absolute = req.version() < Version::HTTP_2 && req.uri().authority().is_some();
    if let Some(authority) = req.uri().authority().filter(|_| absolute)
        && !is_loopback_name(authority.host())
    {
        return Err(ProxyError::ForbiddenClient(format!(
            "absolute-form request for {authority} refused: modelarts-proxy is not a forward proxy; \
             send requests to the proxy itself, e.g. http://127.0.0.1:8080/..."
        )));
    }
    if !server.allow_remote {
        check_browser_and_host(req.uri(), req.headers())?;
    }
    Ok(())
}

/// With `allow_remote = false` the proxy serves this machine's programs, not
/// web pages: a page could otherwise make the browser spend the user's
/// credentials (a cross-site "simple" request, or DNS rebinding).
fn check_browser_and_host(uri: &Uri, headers: &HeaderMap) -> Result<(), ProxyError> {
    let host = match uri.authority() {
        Some(a) => Some(a.host().to_owned()),
        None => match headers.get(header::HOST) {
            None => None,
            Some(h) => Some(
                h.to_str()
                    .ok()
                    .and_then(|h| h.parse::<http::uri::Authority>().ok())
                    .map(|a| a.host().to_owned())
                    .ok_or_else(|| {
                        ProxyError::ForbiddenClient(
                            "the Host header is not a valid host[:port]".to_owned(),
                        )
                    })?,
            ),
        },
    };
    if let Some(host) = host
        && !is_loopback_name(&host)
        && !is_ip_literal(&host)
    {
        return Err(ProxyError::ForbiddenClient(format!(
            "Host {host:?} is refused: with server.allow_remote = false only localhost and IP \
             addresses are accepted, which protects against DNS rebinding"
        )));
    }
    // A browser names the page's origin on cross-origin requests; only pages
    // served from this machine may use the proxy.
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(invalid)"));
    let loopback_origin = origin.is_some_and(|o| {
        o.parse::<Uri>()
            .ok()
            .and_then(|u| u.host().map(is_loopback_name))
            .unwrap_or(false)
    });
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if (origin.is_some() || cross_site) && !loopback_origin {
        return Err(ProxyError::ForbiddenClient(format!(
            "cross-site browser request refused (Origin {}): web pages may not use the proxy's \
             credentials; pages served from localhost may",
            origin.unwrap_or("absent")
        )));
    }
    Ok(())
}

fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn forward<B>(
    state: &State,
    route: &Route,
    rest: &str,
    req: Request<B>,
    now: DateTime<Utc>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let too_large = || ProxyError::BodyTooLarge {
        limit: route.max_body,
        key: "max_body",
    };
    let content_length = content_length(&parts.headers)?;
    if content_length.is_some_and(|len| len > route.max_body) {
        return Err(too_large());
    }
    let body = Limited::new(body, route.max_body);
    let tripped = body.tripped();

    // One deadline for the whole exchange, as the gateway has. Reading the
    // client's body (to hash it, or to see whether it is empty) is timed
    // apart from waiting on the upstream, so a stalled upload is a 408 and not
    // blamed on the upstream.
    let deadline = tokio::time::Instant::now() + route.timeout;
    let provider = route
        .credentials
        .as_ref()
        .and_then(|name| state.providers.get(name));
    let prepare = async {
        let path_and_query =
            upstream_path_and_query(&route.upstream.base_path, rest, parts.uri.query());
        let uri = Uri::builder()
            .scheme(route.upstream.scheme.clone())
            .authority(route.upstream.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
        let mut headers = forward_headers(&parts.headers);
        headers.insert(
            header::HOST,
            HeaderValue::from_str(route.upstream.authority.as_str())
                .map_err(|_| ProxyError::Internal)?,
        );
        for (name, value) in &route.headers {
            headers.insert(name.clone(), value.clone());
        }
        // Waiting for a first credential is bounded by its max_wait and by
        // this request's deadline (so it ends as a 503, not a 408).
        let wait = |max: Duration| {
            max.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
        };
        let unavailable = ProxyError::CredentialsUnavailable;
        let prepared = Prepared {
            method: &parts.method,
            uri: &uri,
            content_length,
        };
        let mut replay = None;
        let mut used_token = None;
        let mut used_temporary = None;
        let body = match provider {
            None => body.boxed_unsync(),
            Some(Provider::AkSk(keys)) => {
                sign_aksk(prepared, &mut headers, body, route, &keys.current(), now).await?
            }
            Some(Provider::Metadata { creds, max_wait }) => {
                let creds = creds.get(wait(*max_wait)).await.map_err(unavailable)?;
                used_temporary = Some(creds.clone());
                sign_aksk(prepared, &mut headers, body, route, &creds.value, now).await?
            }
            Some(Provider::Token {
                token, max_wait, ..
            }) => {
                let current = token.get(wait(*max_wait)).await.map_err(unavailable)?;
                headers.insert(X_AUTH_TOKEN, current.value.header.clone());
                used_token = Some(current.clone());
                // A small (or no) body is kept so that a 401 can be answered
                // by one replay with a renewed token; a large one streams through.
                let small = content_length.map_or_else(
                    || {
                        body.is_end_stream()
                            || body
                                .size_hint()
                                .upper()
                                .is_some_and(|u| u <= REPLAY_BODY_LIMIT)
                    },
                    |len| len <= REPLAY_BODY_LIMIT,
                );
                if small {
                    let bytes = body
                        .collect()
                        .await
                        .map_err(|e| body_error(&e, route))?
                        .to_bytes();
                    replay = Some(Replay {
                        bytes: bytes.clone(),
                        headers: headers.clone(),
                        token: current,
                        max_wait: *max_wait,
                    });
                    crate::error::full(bytes)
                } else {
                    body.boxed_unsync()
                }
            }
            Some(Provider::ApiKey(key)) => {
                let key = key.current();
                headers.insert(key.header.clone(), key.value.clone());
                body.boxed_unsync()
            }
        };
        // hyper writes no body at all for a GET/HEAD whose length it does not
        // know; saying "chunked" explicitly makes it send what was signed.
        if !body.is_end_stream()
            && body.size_hint().exact().is_none()
            && !headers.contains_key(header::CONTENT_LENGTH)
        {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.headers_mut() = headers;
        Ok::<_, ProxyError>((upstream_req, replay, used_token, used_temporary))
    };
    let (upstream_req, replay, used_token, used_temporary) =
        match tokio::time::timeout_at(deadline, prepare).await {
            Ok(result) => result?,
            Err(_elapsed) => return Err(ProxyError::RequestTimeout(route.timeout)),
        };
    let uri = upstream_req.uri().clone();
    let send = |req| async {
        match tokio::time::timeout_at(deadline, state.client.request(req)).await {
            Ok(result) => result.map_err(|e| classify_upstream_error(&e, &tripped, route)),
            Err(_elapsed) => Err(ProxyError::UpstreamTimeout(route.timeout)),
        }
    };
    let mut response = send(upstream_req).await?;
    // Temporary AK/SK rejected (revoked, or the agency changed): ask for new
    // ones so the next requests use them. Same single flight and backoff as tokens.
    if response.status() == http::StatusCode::UNAUTHORIZED
        && let (Some(used), Some(Provider::Metadata { creds, .. })) = (&used_temporary, provider)
    {
        creds.request_renewal(used);
    }
    if response.status() == http::StatusCode::UNAUTHORIZED
        && let Some(Provider::Token { token, .. }) = provider
    {
        // The token was rejected: renew it (one IAM call however many
        // requests saw the 401) and replay once if the body was kept.
        // A second 401 is returned as it is; nothing loops.
        match replay {
            Some(replay) => {
                let wait = replay
                    .max_wait
                    .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                if let Ok(fresh) = token.renew(&replay.token, wait).await {
                    let mut headers = replay.headers;
                    headers.insert(X_AUTH_TOKEN, fresh.value.header.clone());
                    let mut again = Request::new(crate::error::full(replay.bytes));
                    *again.method_mut() = parts.method.clone();
                    *again.uri_mut() = uri;
                    *again.headers_mut() = headers;
                    tracing::info!(credentials = %token.label(), "upstream answered 401; token renewed, request replayed once");
                    if let Some(name) = &route.credentials {
                        state
                            .metrics
                            .credential_replays
                            .get_or_create(&crate::metrics::CredentialLabels {
                                credentials: name.clone(),
                            })
                            .inc();
                    }
                    response = send(again).await?;
                }
            }
            None => {
                if let Some(used) = &used_token {
                    token.request_renewal(used);
                }
            }
        }
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed_unsync(),
    ))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ProxyError::BadRequest("invalid Content-Length".to_owned())),
    }
}

/// Copies the headers to forward: no hop-by-hop headers (nor those the
/// `Connection` header names), no client credentials, no Host, no Expect
/// (the proxy has already read, or is streaming, the body).
fn forward_headers(src: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(src);
    let mut out = HeaderMap::with_capacity(src.len() + 6);
    for (name, value) in src {
        let drop = HOP_BY_HOP.contains(&name.as_str())
            || CLIENT_CREDENTIAL_HEADERS.contains(&name.as_str())
            || name == header::HOST
            || name == header::EXPECT
            || listed.contains(name);
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The headers a `Connection` header names: hop-by-hop as well (RFC 9110 §7.6.1).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

fn classify_upstream_error(
    err: &hyper_util::client::legacy::Error,
    tripped: &AtomicBool,
    route: &Route,
) -> ProxyError {
    if tripped.load(Ordering::Acquire) {
        return ProxyError::BodyTooLarge {
            limit: route.max_body,
            key: "max_body",
        };
    }
    let upstream = route.upstream.authority.as_str();
    if err.is_connect() {
        return ProxyError::UpstreamUnreachable(format!(
            "cannot connect to upstream {upstream}: {}",
            chain(err)
        ));
    }
    // The client's own body failing (disconnect mid-upload) is not the upstream's fault.
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h) = cause.downcast_ref::<hyper::Error>()
            && h.is_user()
        {
            return ProxyError::BadRequest(format!(
                "the request body from the client failed: {}",
                chain(err)
            ));
        }
        source = cause.source();
    }
    ProxyError::UpstreamUnreachable(format!(
        "upstream {upstream} failed before sending a response head: {}",
        chain(err)
    ))
}

/// Token-mode bodies up to this size are kept in memory so that a 401 can be
/// answered by renewing the token and replaying the request once.
const REPLAY_BODY_LIMIT: u64 = 1024 * 1024;

const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// What a token-mode request needs to be sent again.
struct Replay {
    bytes: Bytes,
    headers: HeaderMap,
    token: Arc<crate::auth::refresh::Expiring<crate::auth::iam::Token>>,
    max_wait: Duration,
}

/// The parts of the outgoing request the signer needs besides headers.
struct Prepared<'a> {
    method: &'a Method,
    uri: &'a Uri,
    content_length: Option<u64>,
}

/// Adds the AK/SK signature over exactly what goes on the wire, and returns
/// the body to send: buffered (signed payload) or streamed (UNSIGNED-PAYLOAD).
async fn sign_aksk<B>(
    req: Prepared<'_>,
    headers: &mut HeaderMap,
    body: Limited<B>,
    route: &Route,
    creds: &AkSkCredentials,
    now: DateTime<Utc>,
) -> Result<ProxyBody, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let unavailable = |what: &str| {
        ProxyError::CredentialsUnavailable(format!(
            "the {what} has characters not allowed in a header"
        ))
    };
    if let Some(token) = &creds.key.security_token {
        let value =
            HeaderValue::from_str(token.expose()).map_err(|_| unavailable("security token"))?;
        headers.insert(X_SECURITY_TOKEN, value);
    }
    if let Some(project) = &creds.project_id {
        headers.insert(
            X_PROJECT_ID,
            HeaderValue::from_str(project).map_err(|_| unavailable("project id"))?,
        );
    }

    let unsigned = match route.payload {
        PayloadMode::Signed => false,
        PayloadMode::Unsigned => true,
        PayloadMode::Auto => {
            signer::sdk_auto_unsigned(single_value(headers, &header::CONTENT_TYPE)?)
        }
    };
    let (out_body, buffered) = if unsigned {
        headers.insert(
            X_SDK_CONTENT_SHA256,
            HeaderValue::from_static(signer::UNSIGNED_PAYLOAD),
        );
        let (body, empty) = stream_body(body, req.content_length, route).await?;
        (body, empty.then(Bytes::new))
    } else {
        let bytes = body
            .collect()
            .await
            .map_err(|e| body_error(&e, route))?
            .to_bytes();
        (crate::error::full(bytes.clone()), Some(bytes))
    };

    // What is signed (DESIGN §6): host, x-sdk-date, and each header the proxy
    // sets or that changes the meaning of the request; not arbitrary client headers.
    let mut names: Vec<HeaderName> = vec![header::HOST];
    for name in [
        header::CONTENT_TYPE,
        X_SDK_CONTENT_SHA256,
        X_SECURITY_TOKEN,
        X_PROJECT_ID,
    ]
    .into_iter()
    .chain(route.headers.iter().map(|(n, _)| n.clone()))
    {
        if headers.contains_key(&name) && !names.contains(&name) {
            names.push(name);
        }
    }
    // The wire must carry what is signed: values trimmed as the signer trims them.
    for name in &names {
        if let Some(v) = single_value(headers, name)?
            && signer::canonical::trim_header_value(v).len() != v.len()
        {
            let trimmed =
                HeaderValue::from_str(signer::canonical::trim_header_value(v)).map_err(|_| {
                    ProxyError::BadRequest(format!("header {name} has an invalid value"))
                })?;
            headers.insert(name.clone(), trimmed);
        }
    }
    let output = {
        let mut pairs = Vec::with_capacity(names.len());
        for name in &names {
            if let Some(v) = single_value(headers, name)? {
                pairs.push((name.as_str(), v));
            }
        }
        let payload = match &buffered {
            Some(bytes) => Payload::Bytes(bytes),
            None => Payload::Streaming,
        };
        let signable = SignableRequest {
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &pairs,
            payload,
        };
        creds
            .signing_key
            .sign(&signable, now)
            .map_err(|_| ProxyError::Internal)?
    };
    headers.insert(
        X_SDK_DATE,
        HeaderValue::from_str(&output.date).map_err(|_| ProxyError::Internal)?,
    );
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&output.authorization).map_err(|_| unavailable("access key"))?,
    );
    Ok(out_body)
}

/// Streams an unsigned body, first finding out whether it is empty: an empty
/// body is signed with the empty-string hash even under UNSIGNED-PAYLOAD
/// (SPEC quirk 6). With no Content-Length, the first chunk is awaited.
async fn stream_body<B>(
    mut body: Limited<B>,
    content_length: Option<u64>,
    route: &Route,
) -> Result<(ProxyBody, bool), ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let empty = || {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    if content_length == Some(0) || body.is_end_stream() {
        return Ok((empty(), true));
    }
    if content_length.is_some() {
        return Ok((body.boxed_unsync(), false));
    }
    loop {
        match body.frame().await {
            None => return Ok((empty(), true)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Ok((Prefixed::new(data, body).boxed_unsync(), false));
                }
            }
            Some(Err(e)) => return Err(body_error(&e, route)),
        }
    }
}

fn body_error(err: &BoxError, route: &Route) -> ProxyError {
    if err.downcast_ref::<LimitExceeded>().is_some() {
        ProxyError::BodyTooLarge {
            limit: route.max_body,
            key: "max_body",
        }
    } else {
        ProxyError::BadRequest(format!("reading the request body failed: {err}"))
    }
}

/// A signed header's single value as text: a repeated signed header could be
/// read two ways upstream, so it is refused.
fn single_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProxyError::BadRequest(format!(
            "header {name} appears more than once; it is signed, so send it once"
        )));
    }
    std::str::from_utf8(first.as_bytes())
        .map(Some)
        .map_err(|_| ProxyError::BadRequest(format!("header {name} is not valid UTF-8")))
}
