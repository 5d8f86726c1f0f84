//! Request bodies as the request path reads them: the client's body counted
//! against `max_body` and cut when it stalls ([`RequestBody`]), read whole
//! within the buffer budget ([`buffer`]), and peeked to learn whether a
//! streamed body is empty ([`peek_empty`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};
use tokio::time::{Instant, Sleep};

use crate::budget::{Budget, Overloaded, Reservation};
use crate::error::{BoxError, ProxyBody, ProxyError};

/// The body went past its limit; the stream is cut there.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeded {limit} bytes")]
pub struct LimitExceeded {
    pub limit: u64,
}

/// The client sent no byte of its body for `after` (`idle_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("the client sent no byte of its request body for {}", humantime::format_duration(*.after))]
pub struct BodyIdle {
    pub after: Duration,
}

/// An idle timer for a body: it runs only while the body is waiting, and
/// every frame resets it (one `Sleep`, reset rather than reallocated).
pub struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub fn new(after: Duration) -> Self {
        IdleTimer {
            after,
            sleep: None,
            armed: false,
        }
    }

    /// The body is waiting: starts the timer if a frame came since it last
    /// ran, and says whether `after` has passed with no frame.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // The clock is read only when the timer starts, not at every wait.
        if !self.armed {
            let deadline = Instant::now() + self.after;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// A frame arrived.
    pub fn reset(&mut self) {
        self.armed = false;
    }

    pub fn after(&self) -> Duration {
        self.after
    }
}

/// What the request path can learn about a body while something else reads it.
#[derive(Debug, Default)]
pub struct Progress {
    bytes: AtomicU64,
    /// The last poll found the client had sent nothing new.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
    /// Cut at `max_body` by us (so a failed upstream send is a 413).
    tripped: AtomicBool,
    /// The client's body failed: cut (`max_body`, `idle_timeout`) or broken
    /// off by the client. Only then is a failed send the client's fault.
    failed: AtomicBool,
}

impl Progress {
    /// Data bytes received from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True while the body is unfinished and stalled on the client (so a
    /// deadline that passes now is the client's fault, a 408).
    pub fn waiting_on_client(&self) -> bool {
        !self.done.load(Ordering::Acquire) && self.waiting_on_client.load(Ordering::Acquire)
    }

    /// True once the body went past `max_body`.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// True once the client's body failed (too large, stalled, or broken
    /// off): a send that fails after that is the client's doing.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn fail(&self) {
        self.done.store(true, Ordering::Release);
        self.failed.store(true, Ordering::Release);
    }
}

/// The client's request body: counted against `max_body` as it streams (a
/// chunked upload is never completed upstream past it), and failed with
/// [`BodyIdle`] when the client sends nothing for `idle_timeout`.
pub struct RequestBody {
    inner: ProxyBody,
    remaining: u64,
    limit: u64,
    idle: IdleTimer,
    progress: Arc<Progress>,
}

impl RequestBody {
    pub fn new(inner: ProxyBody, limit: u64, idle: Duration) -> Self {
        RequestBody {
            inner,
            remaining: limit,
            limit,
            idle: IdleTimer::new(idle),
            progress: Arc::default(),
        }
    }

    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn boxed(self) -> ProxyBody {
        BodyExt::boxed_unsync(self)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                this.progress
                    .waiting_on_client
                    .store(true, Ordering::Release);
                if this.idle.expired(cx) {
                    this.progress.fail();
                    let after = this.idle.after();
                    return Poll::Ready(Some(Err(Box::new(BodyIdle { after }))));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                this.idle.reset();
                let progress = &this.progress;
                progress.waiting_on_client.store(false, Ordering::Release);
                match frame {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let n = data.len() as u64;
                            progress.bytes.fetch_add(n, Ordering::Relaxed);
                            if n > this.remaining {
                                this.remaining = 0;
                                progress.tripped.store(true, Ordering::Release);
                                progress.fail();
                                let limit = this.limit;
                                return Poll::Ready(Some(Err(Box::new(LimitExceeded { limit }))));
                            }
                            this.remaining -= n;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        progress.fail();
                        Poll::Ready(Some(Err(e)))
                    }
                    None => {
                        progress.done.store(true, Ordering::Release);
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A failure reading the client's body, as the client's error.
pub fn read_error(err: &BoxError, limit: u64) -> ProxyError {
    if err.downcast_ref::<LimitExceeded>().is_some() {
        ProxyError::BodyTooLarge {
            limit,
            key: "max_body",
        }
    } else if let Some(idle) = err.downcast_ref::<BodyIdle>() {
        ProxyError::RequestIdle(idle.after)
    } else {
        ProxyError::BadRequest(format!("reading the request body failed: {err}"))
    }
}

/// The first step reserved for a body of unknown length; the reservation
/// then doubles as the body grows (up to `max_body`).
const FIRST_STEP: u64 = 64 * 1024;

/// A body read whole: its frames as they arrived (no copy), its length, its
/// SHA-256 when asked for, and the budget it holds until dropped.
pub struct Buffered {
    chunks: Vec<Bytes>,
    len: u64,
    sha256: Option<String>,
    _reservation: Reservation,
}

impl Buffered {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lower-case hex SHA-256 of the body, when it was hashed.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// The bytes, joined (for a look at a small body).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            chunks => Bytes::from(chunks.concat()),
        }
    }

    /// The same body rewritten to `bytes` (hashed again if it was hashed),
    /// holding the same budget reservation (a rewrite adds a few bytes).
    pub fn rewritten(self, bytes: Bytes) -> Buffered {
        let sha256 = self
            .sha256
            .as_ref()
            .map(|_| hex::encode(Sha256::digest(&bytes)));
        Buffered {
            len: bytes.len() as u64,
            chunks: vec![bytes],
            sha256,
            _reservation: self._reservation,
        }
    }

    /// A body that sends these bytes; the memory (and its budget) is kept
    /// until every such body and the `Arc` itself are dropped.
    pub fn body(self: &Arc<Self>) -> ProxyBody {
        BodyExt::boxed_unsync(BufferedBody {
            buffered: self.clone(),
            next: 0,
        })
    }
}

/// How to pay for a body about to be buffered.
pub enum Reserve<'a> {
    /// Reserve from `budget`, waiting up to `wait` each time room is needed.
    Wait { budget: &'a Budget, wait: Duration },
    /// Already reserved (a token-mode replay copy that got room at once).
    Held(Reservation),
}

/// Reads the whole body into memory within the buffer budget. A known
/// length is reserved before any byte is read; a chunked body is reserved
/// step by step as it arrives (overshooting by at most one frame, which
/// hyper already holds). `hash` computes the SHA-256 while reading.
pub async fn buffer(
    body: RequestBody,
    expected: Option<u64>,
    reserve: Reserve<'_>,
    hash: bool,
) -> Result<Buffered, ProxyError> {
    let limit = body.limit();
    buffer_stream(body, limit, expected, reserve, hash).await
}

/// As [`buffer`], for a client body already wrapped (peeked) on its way;
/// `limit` is its `max_body`, for the error when it was cut.
pub async fn buffer_stream<B>(
    mut body: B,
    limit: u64,
    expected: Option<u64>,
    reserve: Reserve<'_>,
    hash: bool,
) -> Result<Buffered, ProxyError>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let (mut reservation, budget) = match reserve {
        Reserve::Held(r) => (r, None),
        Reserve::Wait { budget, wait } => {
            let first = expected.unwrap_or(FIRST_STEP.min(limit));
            let r = budget
                .reserve(first, Instant::now() + wait)
                .await
                .map_err(|o| overloaded(o, budget))?;
            (r, Some((budget, wait)))
        }
    };
    let mut chunks = Vec::new();
    let mut len = 0u64;
    let mut hasher = hash.then(Sha256::new);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_error(&e, limit))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if len > reservation.bytes()
            && let Some((budget, wait)) = budget
        {
            let step = (len - reservation.bytes()).max(reservation.bytes());
            let step = step.min(limit.saturating_sub(reservation.bytes()).max(1));
            reservation
                .grow(step, Instant::now() + wait)
                .await
                .map_err(|o| overloaded(o, budget))?;
        }
        if let Some(h) = &mut hasher {
            h.update(&data);
        }
        chunks.push(data);
    }
    let sha256 = hasher.map(|h| hex::encode(h.finalize()));
    Ok(Buffered {
        chunks,
        len,
        sha256,
        _reservation: reservation,
    })
}

fn overloaded(o: Overloaded, budget: &Budget) -> ProxyError {
    ProxyError::Overloaded {
        wanted: o.wanted,
        budget: budget.total(),
        never_fits: o.never_fits,
    }
}

/// The frames of a [`Buffered`] body, sent again without copying.
struct BufferedBody {
    buffered: Arc<Buffered>,
    next: usize,
}

impl Body for BufferedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let next = self.next;
        let chunk = self.buffered.chunks.get(next).cloned();
        self.next += 1;
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.buffered.chunks.len()
    }

    fn size_hint(&self) -> SizeHint {
        let sent: u64 = self.buffered.chunks[..self.next.min(self.buffered.chunks.len())]
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        SizeHint::with_exact(self.buffered.len - sent)
    }
}

/// `first`, then the rest of `inner`.
pub struct Prefixed<B> {
    first: Option<Bytes>,
    inner: B,
}

impl<B> Prefixed<B> {
    pub fn new(first: Bytes, inner: B) -> Self {
        Prefixed {
            first: Some(first),
            inner,
        }
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.first.as_ref().map_or(0, |b| b.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

/// The body to stream on, and whether it is empty. With no
/// `Content-Length`, the first chunk is awaited (and put back in front).
pub async fn peek_empty(
    mut body: RequestBody,
    content_length: Option<u64>,
) -> Result<(ProxyBody, bool), ProxyError> {
    let empty = || {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    if content_length == Some(0) || body.is_end_stream() {
        return Ok((empty(), true));
    }
    if content_length.is_some() {
        return Ok((body.boxed(), false));
    }
    let limit = body.limit();
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
            Some(Err(e)) => return Err(read_error(&e, limit)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
