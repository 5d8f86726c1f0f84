//! The upstream's ordinary connection life (DESIGN §12, first bullet): which
//! failed sends go out again. Not retries: the upstream provably did not
//! process the request (HTTP/2 REFUSED_STREAM, a stream above a GOAWAY's
//! last stream id, a request never written), or it closed a reused
//! keep-alive connection before any byte of the answer to an idempotent
//! request (as nginx's `proxy_next_upstream error` does). Any method for
//! the first kind, whatever `retry` says, never counted against a budget.

use http::Method;

/// Why a request was sent again; the label of `modelarts_proxy_resends_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resend {
    /// HTTP/2 `REFUSED_STREAM`: the server refused the stream unprocessed
    /// (RFC 9113 §8.7), typically past its concurrent-streams limit.
    RefusedStream,
    /// A GOAWAY's last stream id was below this stream's: not processed.
    GoAway,
    /// The connection closed before any byte of the request was written.
    NotWritten,
    /// A reused keep-alive connection closed before any byte of the answer
    /// (an upstream reload or idle close racing the request).
    ClosedBeforeAnswer,
}

impl Resend {
    pub fn as_str(self) -> &'static str {
        match self {
            Resend::RefusedStream => "refused_stream",
            Resend::GoAway => "goaway",
            Resend::NotWritten => "not_written",
            Resend::ClosedBeforeAnswer => "closed_before_answer",
        }
    }

    /// What the client is told when the resends did not help either.
    pub fn describe(self) -> &'static str {
        match self {
            Resend::RefusedStream => {
                "refused the request unprocessed (HTTP/2 REFUSED_STREAM: more concurrent streams than it allows)"
            }
            Resend::GoAway => "closed its connection (HTTP/2 GOAWAY) before processing the request",
            Resend::NotWritten => "closed the connection before the request could be written",
            Resend::ClosedBeforeAnswer => {
                "closed a keep-alive connection before answering (as on a reload)"
            }
        }
    }
}

/// Sends of one request beyond the first for these reasons, at most: a
/// GOAWAY or refusal can meet the resend too (a second recycled connection,
/// a still-full stream limit), but a request is never sent forever.
pub const MAX_RESENDS: u32 = 3;

/// Methods whose repetition the upstream must tolerate (RFC 9110 §9.2.2),
/// as DESIGN §12 lists them.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Why a send failed before any response head, when the cause is one of
/// the connection's ordinary life (see [`Resend`]).
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Option<Resend> {
    let mut closed = false;
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            if h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(Resend::RefusedStream);
            }
            // h2 fails with a remote GOAWAY only the streams above its last
            // stream id, and the streams not yet opened.
            if h2.is_go_away() && h2.is_remote() {
                return Some(Resend::GoAway);
            }
            closed |= h2.is_io();
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_canceled() || is_dispatch_gone(hyper) {
                return Some(Resend::NotWritten);
            }
            closed |= hyper.is_incomplete_message();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            closed |= matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            );
        }
        source = cause.source();
    }
    closed.then_some(Resend::ClosedBeforeAnswer)
}

impl Resend {
    /// An HTTP/2 stream's refusal or GOAWAY: the connection's other streams
    /// (or its successor) can take the request.
    pub fn is_h2(self) -> bool {
        matches!(self, Resend::RefusedStream | Resend::GoAway)
    }

    /// Whether a request that failed this way goes out again: always when
    /// the upstream provably did not process it; when a connection closed
    /// unanswered, only for an idempotent request on a reused connection
    /// (a fresh one failing so is the upstream failing, not its life).
    pub fn applies(self, idempotent: bool, reused: bool) -> bool {
        match self {
            Resend::ClosedBeforeAnswer => idempotent && reused,
            Resend::RefusedStream | Resend::GoAway | Resend::NotWritten => true,
        }
    }
}

/// hyper's "dispatch task is gone": the request was still queued for a
/// connection that shut down (an HTTP/2 connection ending after a GOAWAY
/// drops the requests it had not yet opened a stream for, including those
/// waiting for a free stream under the server's limit). hyper has no
/// accessor for this kind, so its fixed message identifies it.
fn is_dispatch_gone(err: &hyper::Error) -> bool {
    err.is_user() && err.to_string().starts_with("dispatch task is gone")
}

/// True when a failed send means the upstream's response head was larger
/// than the proxy accepts: hyper's HTTP/1.1 "message head is too large", or
/// h2 refusing a header block over the advertised list size (which it
/// reports as its own PROTOCOL_ERROR on the stream).
pub fn is_head_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            return true;
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.is_reset()
            && h2.is_library()
            && h2.reason() == Some(h2::Reason::PROTOCOL_ERROR)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(Box<dyn std::error::Error + Send + Sync>);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("send failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn io(kind: std::io::ErrorKind) -> Wrapped {
        Wrapped(Box::new(std::io::Error::new(kind, "x")))
    }

    #[test]
    fn a_refusal_h2_made_up_itself_is_not_the_servers() {
        // REFUSED_STREAM from a frame the server sent is resent (tests/
        // connection_life.rs); a bare reason is not a frame from anyone.
        let refused = Wrapped(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(classify(&refused), None);
    }

    #[test]
    fn a_closed_connection_is_resent_only_for_idempotent_methods_on_reused_connections() {
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let why = classify(&io(kind));
            assert_eq!(why, Some(Resend::ClosedBeforeAnswer));
            let why = why.unwrap();
            assert!(why.applies(true, true));
            assert!(!why.applies(false, true), "POST");
            assert!(!why.applies(true, false), "fresh");
        }
        assert_eq!(classify(&io(std::io::ErrorKind::TimedOut)), None);
    }

    #[test]
    fn idempotent_methods_are_designs_list() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }
}
