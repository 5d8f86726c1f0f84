//! Whether a pooled connection is being reused: an idempotent request sent
//! on a keep-alive connection that had carried an exchange before, and
//! that closed before any byte of this answer, is sent again (DESIGN §12).
//!
//! The connector is wrapped so that every connection, above TLS, counts
//! its exchanges in its own I/O: a write that follows a completed read
//! starts a new request after an answer. The count travels as the connection's "extra"
//! to every failed send on it, so the verdict never races the task that
//! read the previous answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

/// How many requests a connection began after reading an answer.
#[derive(Clone, Debug, Default)]
pub struct Uses(Arc<AtomicU64>);

/// True when the send failed on a connection that had carried an
/// exchange before.
pub fn reused(err: &hyper_util::client::legacy::Error) -> bool {
    let Some(info) = err.connect_info() else {
        return false;
    };
    let mut extensions = http::Extensions::new();
    info.get_extras(&mut extensions);
    extensions
        .get::<Uses>()
        .is_some_and(|uses| uses.0.load(Ordering::Relaxed) > 0)
}

/// A connector whose connections count their exchanges.
#[derive(Clone, Debug)]
pub struct Counting<C>(pub C);

impl<C> Service<Uri> for Counting<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = Counted<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            Ok(Counted {
                io: connecting.await?,
                uses: Uses::default(),
                answered: false,
            })
        })
    }
}

/// A connection that counts its exchanges (see [`Counting`]).
pub struct Counted<T> {
    io: T,
    uses: Uses,
    /// A read completed since the last write.
    answered: bool,
}

impl<T> Counted<T> {
    fn writing(&mut self) {
        if std::mem::take(&mut self.answered) {
            self.uses.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A read that completes brought bytes of an answer (or the end of
        // the connection, after which nothing more is written); an idle
        // connection's watch reads stay pending.
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) {
            this.answered = true;
        }
        read
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writing();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writing();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
