//! Credential injection and 401 recovery: what each kind of credential adds
//! to an outgoing request, and what it does when the upstream rejects it.
//!
//! | credential | on the request | on a 401 |
//! |---|---|---|
//! | AK/SK | a signature over what is sent (the body buffered and hashed, or streamed unsigned) | passed back |
//! | ECS temporary AK/SK | the same, with `X-Security-Token` | new keys fetched for the next requests |
//! | IAM token | `X-Auth-Token` | token renewed; a kept body is replayed once |
//! | API key | its header | passed back |
//!
//! Whatever the credential, a request whose body is held whole (none, a
//! signed payload, or a small body kept within the buffer budget) comes
//! with a [`Replay`]: how to make it again, for a 401 replay and the
//! resends of DESIGN §12. It holds no copy of the request: the attempt's
//! [`Head`] (the template every attempt starts from, with this attempt's
//! target and trace context), the credential it carried, and the body. A
//! resend is the same request again (an AK/SK one signed with the same
//! date is the same signature); a replay carries the renewed credential.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::Provider;
use super::aksk::{self, AkSkCredentials, BodyHash, DecorateError, Target};
use super::breaker::{Breaker, Ticket};
use super::iam::Token;
use super::refresh::{Expiring, Refreshing};
use crate::body::{self, Buffered, RequestBody, Reserve};
use crate::budget::Budget;
use crate::config::Route;
use crate::error::{BoxError, ProxyBody, ProxyError};
use crate::gateway::GatewayError;
use crate::headers::name::X_AUTH_TOKEN;
use crate::metrics::{CredentialLabels, Metrics};
use crate::signer::CanonicalRequest;

/// Bodies up to this size are kept in memory (within the buffer budget) so
/// that the request can be sent again: once with a renewed token after a
/// 401, or when the upstream provably did not process it (DESIGN §12).
pub const REPLAY_BODY_LIMIT: u64 = 1024 * 1024;

/// The upstream request being built: everything but the body.
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The client's `Content-Length`, already checked against `max_body`.
    pub content_length: Option<u64>,
}

impl Outgoing {
    fn into_request(self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// One attempt's request before its credential: the template every
/// attempt starts from (which never carries a credential), and what this
/// attempt changes in it. Borrowed, not copied: made into an [`Outgoing`]
/// once per send.
pub struct Head<'t> {
    pub template: &'t Outgoing,
    /// A target other than the route's own: its URL and `Host`.
    pub target: Option<(Uri, HeaderValue)>,
    /// Headers this attempt adds (its trace context). Empty, it holds no
    /// allocation.
    pub added: HeaderMap,
}

impl<'t> Head<'t> {
    pub fn new(template: &'t Outgoing) -> Head<'t> {
        Head {
            template,
            target: None,
            added: HeaderMap::new(),
        }
    }

    /// The request to decorate: a copy of the template with this
    /// attempt's changes.
    fn outgoing(&self) -> Outgoing {
        let mut out = self.template.clone();
        if let Some((uri, host)) = &self.target {
            out.uri = uri.clone();
            out.headers.insert(header::HOST, host.clone());
        }
        for (name, value) in &self.added {
            out.headers.insert(name.clone(), value.clone());
        }
        out
    }
}

/// What injection needs to know about the request it decorates.
pub struct Injection<'a> {
    pub route: &'a Route,
    /// The request's deadline: waiting for a first credential ends before it.
    pub deadline: Instant,
    /// The signing time.
    pub now: DateTime<Utc>,
    pub metrics: &'a Metrics,
    /// Every body byte held in memory is reserved here first.
    pub budget: &'a Budget,
    /// How long a signed body may wait for room in the budget.
    pub buffer_wait: Duration,
}

impl Injection<'_> {
    /// A wait of at most `max`, ending before the request's deadline (so a
    /// missing credential is a 503, not a timeout).
    fn wait(&self, max: Duration) -> Duration {
        max.min(self.deadline.saturating_duration_since(Instant::now()))
    }
}

/// What was used, so that the answer can be acted on: a rejection (401)
/// renews a credential; a signature's verdict goes to its breaker.
pub struct Recovery<'t> {
    kind: Used,
    /// An AK/SK request the signature breaker let through.
    pass: Option<Pass>,
    /// How to send the request again, when its body is held whole.
    replay: Option<Replay<'t>>,
    /// The canonical request an AK/SK signature covers, to explain a
    /// gateway's rejection (DESIGN §13).
    signed: Option<CanonicalRequest>,
}

enum Used {
    Nothing,
    /// An IAM token was sent.
    Token {
        token: Arc<Refreshing<Token>>,
        used: Arc<Expiring<Token>>,
        max_wait: Duration,
    },
    /// A temporary AK/SK was sent.
    TemporaryKey {
        creds: Arc<Refreshing<Arc<AkSkCredentials>>>,
        used: Arc<Expiring<Arc<AkSkCredentials>>>,
        max_wait: Duration,
    },
}

/// A request the signature breaker let through. Dropped without a verdict
/// (the upstream never answered), a probe gives its turn back.
struct Pass {
    breaker: Arc<Breaker>,
    ticket: Ticket,
    judged: bool,
}

impl Pass {
    fn judge(mut self, gateway: Option<&GatewayError>) {
        self.judged = true;
        match gateway.filter(|e| e.is_signature_rejection()) {
            Some(e) => self.breaker.rejected(self.ticket, &e.message),
            None => self.breaker.accepted(),
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.judged && self.ticket == Ticket::Probe {
            self.breaker.probe_abandoned();
        }
    }
}

/// Lets an AK/SK request through the breaker, or says why not.
fn admit(breaker: &Arc<Breaker>, cx: &Injection<'_>) -> Result<Pass, ProxyError> {
    match breaker.admit() {
        Ok(ticket) => Ok(Pass {
            breaker: breaker.clone(),
            ticket,
            judged: false,
        }),
        Err(held) => Err(ProxyError::CredentialsRejected {
            credentials: cx.route.credentials.clone().unwrap_or_default(),
            remaining: held.remaining,
            last: held.last,
        }),
    }
}

/// The credential a request carried, to put on it again.
enum Carried {
    Nothing,
    /// An AK/SK signature made with these keys at this time: made again,
    /// it is the same.
    AkSk {
        creds: Arc<AkSkCredentials>,
        now: DateTime<Utc>,
    },
    /// A token or an API key.
    Header(HeaderName, HeaderValue),
}

impl Carried {
    /// Puts the credential on `out` (sent with `payload`); for AK/SK, the
    /// canonical request the signature covers.
    fn apply(
        &self,
        out: &mut Outgoing,
        payload: &Payload,
        route: &Route,
    ) -> Result<Option<CanonicalRequest>, ProxyError> {
        match self {
            Carried::Nothing => Ok(None),
            Carried::AkSk { creds, now } => sign_aksk(out, payload, creds, route, *now).map(Some),
            Carried::Header(name, value) => {
                out.headers.insert(name.clone(), value.clone());
                Ok(None)
            }
        }
    }
}

/// A request that can be sent again: its head, the credential it carried
/// and its body held whole (`None`: no body).
pub struct Replay<'t> {
    head: Head<'t>,
    route: &'t Route,
    carried: Carried,
    body: Option<Arc<Buffered>>,
}

impl Replay<'_> {
    /// The request once more, with the credential it carried.
    pub fn request(&self) -> Result<Request<ProxyBody>, ProxyError> {
        let mut out = self.head.outgoing();
        let payload = Payload::Kept(self.body.clone());
        self.carried.apply(&mut out, &payload, self.route)?;
        let body = match &self.body {
            Some(body) => body.body(),
            None => crate::error::empty(),
        };
        Ok(out.into_request(body))
    }
}

/// The request body as the attempts send it: held whole, so that it can
/// be sent any number of times (none, a signed payload, or a small body
/// kept within the buffer budget); or streaming from the client, once.
pub enum Payload {
    /// `None`: no body.
    Kept(Option<Arc<Buffered>>),
    Streamed(Option<ProxyBody>),
}

impl Payload {
    /// True when another attempt can send the body again.
    pub fn resendable(&self) -> bool {
        matches!(self, Payload::Kept(_))
    }

    /// The body for one attempt.
    fn take(&mut self) -> Result<ProxyBody, ProxyError> {
        match self {
            Payload::Kept(None) => Ok(crate::error::empty()),
            Payload::Kept(Some(b)) => Ok(b.body()),
            // A second attempt is never made with a streamed body.
            Payload::Streamed(body) => body.take().ok_or(ProxyError::Internal),
        }
    }

    fn kept(&self) -> Option<Option<Arc<Buffered>>> {
        match self {
            Payload::Kept(b) => Some(b.clone()),
            Payload::Streamed(_) => None,
        }
    }
}

/// Reads what has to be read of the body before the first attempt: all of
/// it, hashed, when `signs` (an AK/SK target) and the payload is signed;
/// whether it is empty when it is sent unsigned (an empty body is signed
/// with the empty-string hash, SPEC quirk 6); and a small body is kept.
pub async fn prepare(
    signs: bool,
    out: &mut Outgoing,
    body: RequestBody,
    cx: &Injection<'_>,
) -> Result<Payload, ProxyError> {
    let payload = read(signs, out, body, cx).await?;
    Ok(match payload {
        Payload::Kept(Some(b)) if cx.route.stream_usage => stream_usage(out, b),
        other => other,
    })
}

/// `stream_usage`: a streaming JSON request asks for its usage; its new
/// length goes in `Content-Length` (and into the signature, made after).
fn stream_usage(out: &mut Outgoing, body: Arc<Buffered>) -> Payload {
    let json = out
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let Some(rewritten) = json
        .then(|| crate::usage::stream_options::include_usage(&body.to_bytes()))
        .flatten()
    else {
        return Payload::Kept(Some(body));
    };
    let owned = match Arc::try_unwrap(body) {
        Ok(owned) => owned,
        Err(shared) => return Payload::Kept(Some(shared)),
    };
    out.content_length = Some(rewritten.len() as u64);
    out.headers.insert(
        header::CONTENT_LENGTH,
        http::HeaderValue::from(rewritten.len()),
    );
    Payload::Kept(Some(Arc::new(owned.rewritten(Bytes::from(rewritten)))))
}

async fn read(
    signs: bool,
    out: &Outgoing,
    body: RequestBody,
    cx: &Injection<'_>,
) -> Result<Payload, ProxyError> {
    let limit = body.limit();
    if !signs {
        return keep(out, body, limit, cx).await;
    }
    let content_type =
        aksk::single_value(&out.headers, &header::CONTENT_TYPE).map_err(decorate_error)?;
    if aksk::is_unsigned(cx.route.payload, content_type) {
        let (body, empty) = body::peek_empty(body, out.content_length).await?;
        if empty {
            return Ok(Payload::Kept(None));
        }
        return keep(out, body, limit, cx).await;
    }
    let reserve = Reserve::Wait {
        budget: cx.budget,
        wait: cx.buffer_wait,
    };
    let buffered = body::buffer(body, out.content_length, reserve, true).await?;
    Ok(Payload::Kept(Some(Arc::new(buffered))))
}

/// Adds the credential of `provider` to the request `head` makes and
/// returns the request to send with `payload`, with what a 401 (or a
/// resend) will need.
pub async fn inject<'t>(
    provider: Option<&Provider>,
    head: Head<'t>,
    payload: &mut Payload,
    cx: &Injection<'t>,
) -> Result<(Request<ProxyBody>, Recovery<'t>), ProxyError> {
    let unavailable = ProxyError::CredentialsUnavailable;
    let mut recovery = Recovery {
        kind: Used::Nothing,
        pass: None,
        replay: None,
        signed: None,
    };
    let carried = match provider {
        None => Carried::Nothing,
        Some(Provider::AkSk { keys, breaker }) => {
            recovery.pass = Some(admit(breaker, cx)?);
            Carried::AkSk {
                creds: keys.current(),
                now: cx.now,
            }
        }
        Some(Provider::Temporary {
            creds,
            max_wait,
            breaker,
            ..
        }) => {
            recovery.pass = Some(admit(breaker, cx)?);
            let used = creds.get(cx.wait(*max_wait)).await.map_err(unavailable)?;
            let keys = used.value.clone();
            recovery.kind = Used::TemporaryKey {
                creds: creds.clone(),
                used,
                max_wait: *max_wait,
            };
            Carried::AkSk {
                creds: keys,
                now: cx.now,
            }
        }
        Some(Provider::Token {
            token, max_wait, ..
        }) => {
            let used = token.get(cx.wait(*max_wait)).await.map_err(unavailable)?;
            let value = used.value.header.clone();
            recovery.kind = Used::Token {
                token: token.clone(),
                used,
                max_wait: *max_wait,
            };
            Carried::Header(X_AUTH_TOKEN, value)
        }
        Some(Provider::ApiKey(key)) => {
            let key = key.current();
            Carried::Header(key.header.clone(), key.value.clone())
        }
    };
    let mut out = head.outgoing();
    recovery.signed = carried.apply(&mut out, payload, cx.route)?;
    recovery.replay = payload.kept().map(|body| Replay {
        head,
        route: cx.route,
        carried,
        body,
    });
    let body = payload.take()?;
    Ok((out.into_request(body), recovery))
}

fn count_replay(cx: &Injection<'_>) {
    if let Some(name) = &cx.route.credentials {
        cx.metrics
            .credential_replays
            .get_or_create(&CredentialLabels {
                credentials: name.clone(),
            })
            .inc();
    }
}

/// Signs `out` with `creds` for `payload`: its SHA-256 when it was read
/// whole for signing, else UNSIGNED-PAYLOAD (the empty-string hash for no
/// body at all).
fn sign_aksk(
    out: &mut Outgoing,
    payload: &Payload,
    creds: &AkSkCredentials,
    route: &Route,
    now: DateTime<Utc>,
) -> Result<CanonicalRequest, ProxyError> {
    let content_type =
        aksk::single_value(&out.headers, &header::CONTENT_TYPE).map_err(decorate_error)?;
    let unsigned = aksk::is_unsigned(route.payload, content_type);
    let hash = match payload {
        Payload::Kept(None) if unsigned => BodyHash::Unsigned { empty: true },
        Payload::Kept(None) => BodyHash::Bytes(&[]),
        Payload::Kept(Some(b)) if unsigned => BodyHash::Unsigned {
            empty: b.is_empty(),
        },
        Payload::Kept(Some(b)) => match b.sha256() {
            Some(hex) if !b.is_empty() => BodyHash::Sha256Hex(hex),
            Some(_) => BodyHash::Bytes(&[]),
            // Kept without a hash: prepared for a target that does not sign.
            None => return Err(ProxyError::Internal),
        },
        Payload::Streamed(_) => BodyHash::Unsigned { empty: false },
    };
    let route_headers: Vec<_> = route.headers.iter().map(|(n, _)| n).collect();
    let target = Target {
        method: out.method.as_str(),
        path: out.uri.path(),
        query: out.uri.query(),
    };
    aksk::decorate(creds, target, &mut out.headers, hash, &route_headers, now)
        .map(|signed| signed.canonical_request)
        .map_err(decorate_error)
}

fn decorate_error(e: DecorateError) -> ProxyError {
    match e {
        DecorateError::Repeated(_) | DecorateError::NotUtf8(_) | DecorateError::InvalidValue(_) => {
            ProxyError::BadRequest(e.to_string())
        }
        DecorateError::Credential(_) => ProxyError::CredentialsUnavailable(e.to_string()),
        DecorateError::Signer(_) => ProxyError::Internal,
    }
}

/// A small (or no) body is read and kept so that the request can be sent
/// again; a large one streams through, and so does a small one when the
/// buffer budget has no room for it right now (the request goes on; only
/// the second chance is given up).
async fn keep<B>(
    out: &Outgoing,
    body: B,
    limit: u64,
    cx: &Injection<'_>,
) -> Result<Payload, ProxyError>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin + Send + 'static,
{
    if out.content_length == Some(0) || body.is_end_stream() {
        return Ok(Payload::Kept(None));
    }
    let size = match out.content_length {
        Some(len) => Some(len),
        None => body.size_hint().upper(),
    };
    let reservation = size
        .filter(|&n| n <= REPLAY_BODY_LIMIT)
        .and_then(|n| cx.budget.try_reserve(n));
    let Some(reservation) = reservation else {
        return Ok(Payload::Streamed(Some(BodyExt::boxed_unsync(body))));
    };
    let reserve = Reserve::Held(reservation);
    let buffered = body::buffer_stream(body, limit, out.content_length, reserve, false).await?;
    Ok(Payload::Kept(Some(Arc::new(buffered))))
}

impl<'t> Recovery<'t> {
    /// How to send the request again, when it can be.
    pub fn replay(&self) -> Option<&Replay<'t>> {
        self.replay.as_ref()
    }

    /// The canonical request the AK/SK signature covers.
    pub fn signed(&self) -> Option<&str> {
        self.signed.as_ref().map(CanonicalRequest::as_str)
    }

    /// Answers the upstream's `status`. On a 401 the credential is renewed
    /// (one fetch however many requests saw it); for a kept body this
    /// returns the request to send once more with the new credential, and
    /// its replay (for that send's resends). When the new credential cannot
    /// be put on the request, the 401 stands. A second 401 is returned as
    /// it is: nothing loops.
    pub async fn after(
        self,
        status: StatusCode,
        gateway: Option<&GatewayError>,
        cx: &Injection<'_>,
    ) -> Option<(Replay<'t>, Request<ProxyBody>)> {
        if let Some(pass) = self.pass {
            pass.judge(gateway);
        }
        if status != StatusCode::UNAUTHORIZED {
            return None;
        }
        match (self.kind, self.replay) {
            (Used::Nothing, _) => None,
            // Temporary AK/SK rejected (revoked, or the agency changed): new
            // ones (one fetch for every request that saw the old), and a kept
            // request signed with them and sent once more.
            // New keys cannot mend a signature the gateway rejected (a
            // request rewritten on the way, a clock): asked for, not waited on.
            (Used::TemporaryKey { creds, used, .. }, None) => {
                creds.request_renewal(&used);
                None
            }
            // (An AK locked after failures is mended: new keys have a new AK.)
            (Used::TemporaryKey { creds, used, .. }, Some(_))
                if gateway.is_some_and(|e| {
                    e.is_signature_rejection()
                        && e.message.to_ascii_lowercase().contains("signature")
                }) =>
            {
                creds.request_renewal(&used);
                None
            }
            (
                Used::TemporaryKey {
                    creds,
                    used,
                    max_wait,
                },
                Some(mut replay),
            ) => {
                let fresh = creds.renew(&used, cx.wait(max_wait)).await.ok()?;
                replay.carried = Carried::AkSk {
                    creds: fresh.value.clone(),
                    now: cx.now,
                };
                let request = replay.request().ok()?;
                tracing::info!(credentials = %creds.label(), "upstream answered 401; new temporary keys fetched, request replayed once");
                count_replay(cx);
                Some((replay, request))
            }
            (Used::Token { token, used, .. }, None) => {
                token.request_renewal(&used);
                None
            }
            (
                Used::Token {
                    token,
                    used,
                    max_wait,
                },
                Some(mut replay),
            ) => {
                let fresh = token.renew(&used, cx.wait(max_wait)).await.ok()?;
                replay.carried = Carried::Header(X_AUTH_TOKEN, fresh.value.header.clone());
                let request = replay.request().ok()?;
                tracing::info!(credentials = %token.label(), "upstream answered 401; token renewed, request replayed once");
                count_replay(cx);
                Some((replay, request))
            }
        }
    }
}
