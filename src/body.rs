//! Request bodies: the client's body as the request path reads it (a byte
//! limit counted as it streams), reading it whole, and finding out whether a
//! streamed body is empty.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use http_body_util::{BodyExt, Empty};

use crate::error::{BoxError, ProxyBody, ProxyError};

/// The body went past its limit; the stream is cut there.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeded {limit} bytes")]
pub struct LimitExceeded {
    pub limit: u64,
}

/// Counts data bytes and fails the stream at the first byte over `limit`,
/// so a chunked upload is never completed upstream. `tripped` lets the
/// caller tell "cut by us" from other failures after the fact.
pub struct Limited<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    tripped: Arc<AtomicBool>,
}

impl<B> Limited<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        Limited {
            inner,
            remaining: limit,
            limit,
            tripped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the limit has been hit.
    pub fn tripped(&self) -> Arc<AtomicBool> {
        self.tripped.clone()
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.remaining = 0;
                        this.tripped.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(LimitExceeded {
                            limit: this.limit,
                        }))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

/// The client's request body as the request path sees it: cut at the
/// route's `max_body`.
pub struct RequestBody {
    inner: Limited<ProxyBody>,
}

impl RequestBody {
    pub fn new(body: ProxyBody, limit: u64) -> Self {
        RequestBody {
            inner: Limited::new(body, limit),
        }
    }

    /// Set once the limit has been hit (the upstream request then fails).
    pub fn tripped(&self) -> Arc<AtomicBool> {
        self.inner.tripped()
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
        Pin::new(&mut self.inner).poll_frame(cx)
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
    } else {
        ProxyError::BadRequest(format!("reading the request body failed: {err}"))
    }
}

/// Reads the whole body.
pub async fn collect(body: RequestBody, limit: u64) -> Result<Bytes, ProxyError> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| read_error(&e, limit))
}

/// The body to stream on, and whether it is empty. With no
/// `Content-Length`, the first chunk is awaited (and put back in front).
pub async fn peek_empty(
    mut body: RequestBody,
    content_length: Option<u64>,
    limit: u64,
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
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-memory body of several data frames.
    pub struct Chunks(pub VecDeque<Bytes>);

    impl Chunks {
        pub fn of(parts: &[&'static str]) -> Self {
            Chunks(
                parts
                    .iter()
                    .map(|p| Bytes::from_static(p.as_bytes()))
                    .collect(),
            )
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    #[tokio::test]
    async fn limit_passes_a_body_of_exactly_the_limit() {
        let body = Limited::new(Chunks::of(&["abc", "de"]), 5);
        let tripped = body.tripped();
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcde");
        assert!(!tripped.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn limit_cuts_the_stream_one_byte_over() {
        let body = Limited::new(Chunks::of(&["abc", "def"]), 5);
        let tripped = body.tripped();
        let err = body.collect().await.unwrap_err();
        assert!(err.downcast_ref::<LimitExceeded>().is_some());
        assert!(tripped.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn prefixed_puts_the_first_chunk_back() {
        let body = Prefixed::new(Bytes::from_static(b"first-"), Chunks::of(&["rest"]));
        assert!(!body.is_end_stream());
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"first-rest");
    }
}
