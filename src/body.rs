//! Request-body wrappers: a byte limit counted as the body streams, and a
//! body with one already-read chunk put back in front.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::BodyExt;
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
