//! Why a send got no response head: the connection could not be made, or
//! the exchange on it failed. Its text and causes read as hyper-util's
//! client errors did ("client error (Connect)" and the cause chain), so
//! logs and the proxy's 502 bodies did not change with the client.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// No connection: DNS, TCP, the egress proxy, TLS or the HTTP/2 handshake.
    Connect,
    /// The request never went out on the connection it was given.
    Canceled,
    /// The exchange failed after the request was handed to a connection.
    SendRequest,
}

/// A failed send (see the module documentation).
pub struct Error {
    kind: Kind,
    /// The connection had carried an exchange before this one.
    reused: bool,
    source: BoxError,
}

impl Error {
    pub(super) fn connect(source: impl Into<BoxError>) -> Error {
        Error {
            kind: Kind::Connect,
            reused: false,
            source: source.into(),
        }
    }

    pub(super) fn send(source: hyper::Error, reused: bool) -> Error {
        let kind = if source.is_canceled() {
            Kind::Canceled
        } else {
            Kind::SendRequest
        };
        Error {
            kind,
            reused,
            source: Box::new(source),
        }
    }

    /// No connection could be made: nothing of the request was written.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }

    /// The send failed on a connection that had carried an exchange
    /// before (a keep-alive connection the upstream may have been closing).
    pub fn reused(&self) -> bool {
        self.reused
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client error ({:?})", self.kind)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("client::Error")
            .field(&self.kind)
            .field(&self.source)
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}
