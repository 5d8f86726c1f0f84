//! The idle lists: one per thread (a worker's, or any other thread's), so
//! a checkout takes no lock and touches no other thread's memory. Each
//! destination keeps every connection its thread opened to it; a checkout
//! takes the newest one that can take a request now (an idle HTTP/1.1
//! connection, an open HTTP/2 one). Nothing is handed back after an
//! exchange: an HTTP/1.1 connection is ready again when hyper has read the
//! whole answer, and its task, which reads the socket all along, marks it
//! closed as soon as the upstream closes it, so a closed connection is
//! never chosen. Connections are opened only when none is ready, and while
//! the protocol of a destination is not known yet, or it is HTTP/2, only
//! one at a time: the others wait for it instead of racing it.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::Either;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use tokio::sync::watch;

use super::connect::{Opened, Sender};
use crate::error::ProxyBody;

/// Which connections: ordinary ones (HTTP/2 or HTTP/1.1 as configured), or
/// HTTP/1.1 ones that can be upgraded (tunnelled through an egress proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Main,
    Http1,
}

/// One client's lists on one thread.
struct Lists {
    client: Weak<()>,
    id: u64,
    dests: Vec<Dest>,
}

struct Dest {
    mode: Mode,
    https: bool,
    authority: Authority,
    /// The `Host` an HTTP/1.1 request gets when it has none.
    host: HeaderValue,
    /// Learnt from the first connection: HTTP/2 connections are shared.
    h2: Option<bool>,
    /// A connection being opened that the others wait for.
    opening: Option<watch::Receiver<()>>,
    conns: Vec<Conn>,
}

struct Conn {
    sender: Sender,
    proxied: bool,
    /// Requests sent on it so far.
    uses: u64,
    /// [`tick`] of its last request.
    used: u64,
}

thread_local! {
    static LISTS: RefCell<Vec<Lists>> = const { RefCell::new(Vec::new()) };
}

/// What to do when no connection could take the request.
pub(super) enum Next {
    /// Another request is opening the connection this one should share.
    Wait(watch::Receiver<()>),
    /// Open one; the sender, when set, wakes those waiting for it (dropped
    /// when the connection is in the list, or the attempt failed).
    Open(Option<watch::Sender<()>>),
}

/// A request handed to a connection.
pub(super) struct Dispatched<F> {
    pub sending: F,
    /// The connection had carried a request before.
    pub reused: bool,
    /// The connection speaks HTTP/2.
    pub h2: bool,
    /// The absolute URI the request had before it was put in origin form,
    /// and whether a `Host` was added, to undo both ([`restore`]) if the
    /// connection hands the request back unwritten.
    pub undo: Option<(Uri, bool)>,
}

pub(super) type Sent = Result<Response<Incoming>, TrySendError<Request<ProxyBody>>>;

/// Hands `req` to a connection: to `opened`, just made (it joins the list
/// when pooled; a connection of the request's own is used once), or else
/// to a ready one from the list. Without one, the request comes back with
/// what to do: wait for a connection being opened (only when `may_wait`),
/// or open one.
// The request comes back by value when no connection takes it, as hyper's
// `try_send_request` hands it back: moving it costs less than boxing it.
#[allow(clippy::result_large_err)]
pub(super) fn dispatch(
    client: &Arc<()>,
    id: u64,
    mode: Mode,
    mut req: Request<ProxyBody>,
    opened: Option<(Opened, bool)>,
    may_wait: bool,
) -> Result<Dispatched<impl Future<Output = Sent> + Send + 'static>, (Request<ProxyBody>, Next)> {
    let now = tick();
    LISTS.with_borrow_mut(|lists| {
        let dest = dest(lists, client, id, mode, req.uri());
        let mut own;
        let conn = match opened {
            Some((opened, pooled)) => {
                dest.h2 = Some(opened.sender.is_h2());
                own = Conn {
                    sender: opened.sender,
                    proxied: opened.proxied,
                    uses: 0,
                    used: now,
                };
                if pooled {
                    dest.conns.push(own);
                    dest.conns.last_mut().expect("just pushed")
                } else {
                    &mut own
                }
            }
            None => {
                // Closed connections go, and idle ones unused for too long:
                // the gateway closes its idle connections after about 60 s.
                dest.conns.retain(|c| c.keep(now));
                match dest.conns.iter().rposition(|c| c.sender.is_ready()) {
                    Some(i) => &mut dest.conns[i],
                    None => return Err((req, dest.next(may_wait))),
                }
            }
        };
        let reused = conn.uses > 0;
        let h2 = conn.sender.is_h2();
        conn.uses += 1;
        conn.used = now;
        let undo = match &conn.sender {
            Sender::H1(_) => Some(http1_form(&mut req, conn.proxied, &dest.host)),
            Sender::H2(_) => None,
        };
        let sending = match &mut conn.sender {
            Sender::H1(s) => Either::Left(s.try_send_request(req)),
            Sender::H2(s) => Either::Right(s.try_send_request(req)),
        };
        Ok(Dispatched {
            sending,
            reused,
            h2,
            undo,
        })
    })
}

impl Conn {
    /// Not closed, and not idle for too long.
    fn keep(&self, now: u64) -> bool {
        let stale = now.saturating_sub(self.used) >= IDLE_TICKS;
        let idle_too_long = stale && self.sender.is_ready();
        !self.sender.is_closed() && !idle_too_long
    }
}

impl Dest {
    /// No connection is ready: wait for one being opened that this request
    /// can share (HTTP/2, or a protocol not known yet), or open one.
    fn next(&mut self, may_wait: bool) -> Next {
        if self.h2 == Some(false) {
            return Next::Open(None);
        }
        if let Some(opening) = &self.opening
            && opening.has_changed().is_ok()
        {
            if may_wait {
                return Next::Wait(opening.clone());
            }
            return Next::Open(None);
        }
        let (tx, rx) = watch::channel(());
        self.opening = Some(rx);
        Next::Open(Some(tx))
    }
}

/// This thread's destination for `uri` in `mode`, made when new.
fn dest<'a>(
    lists: &'a mut Vec<Lists>,
    client: &Arc<()>,
    id: u64,
    mode: Mode,
    uri: &Uri,
) -> &'a mut Dest {
    let l = match lists.iter().position(|l| l.id == id) {
        Some(l) => l,
        None => {
            // A client that is gone leaves its lists (and connections) with
            // the next client this thread sees.
            lists.retain(|l| l.client.strong_count() > 0);
            lists.push(Lists {
                client: Arc::downgrade(client),
                id,
                dests: Vec::new(),
            });
            lists.len() - 1
        }
    };
    let dests = &mut lists[l].dests;
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let authority = uri.authority();
    let d = dests
        .iter()
        .position(|d| d.mode == mode && d.https == https && Some(&d.authority) == authority);
    let d = match d {
        Some(d) => d,
        None => {
            dests.push(Dest {
                mode,
                https,
                authority: authority
                    .cloned()
                    .unwrap_or_else(|| Authority::from_static("")),
                host: host_of(uri),
                h2: (mode == Mode::Http1).then_some(false),
                opening: None,
                conns: Vec::new(),
            });
            dests.len() - 1
        }
    };
    &mut dests[d]
}

/// The `Host` hyper-util wrote for `uri`: the host, and the port unless it
/// is the scheme's default.
fn host_of(uri: &Uri) -> HeaderValue {
    let host = uri.host().unwrap_or_default();
    let value = match super::written_port(uri) {
        Some(port) => HeaderValue::try_from(format!("{host}:{port}")),
        None => HeaderValue::try_from(host),
    };
    value.unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Gives `req`, handed back unwritten, the form it had before
/// [`http1_form`] (`undo`, from [`Dispatched::undo`]): its absolute URI, and
/// no `Host` if one was added.
pub(super) fn restore(req: &mut Request<ProxyBody>, undo: Option<(Uri, bool)>) {
    if let Some((uri, host_added)) = undo {
        *req.uri_mut() = uri;
        if host_added {
            req.headers_mut().remove(header::HOST);
        }
    }
}

/// Puts `req` in HTTP/1.1's form: a `Host` if it has none, and the
/// origin-form target (`/path?query`), or the absolute form for an egress
/// proxy. Returns what [`Dispatched::undo`] restores.
fn http1_form(req: &mut Request<ProxyBody>, proxied: bool, host: &HeaderValue) -> (Uri, bool) {
    let added = match req.headers_mut().entry(header::HOST) {
        http::header::Entry::Vacant(e) => {
            e.insert(host.clone());
            true
        }
        http::header::Entry::Occupied(_) => false,
    };
    let origin = if proxied {
        req.uri().clone()
    } else {
        match req.uri().path_and_query() {
            Some(path) if path.as_str() != "/" => {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = Some(path.clone());
                Uri::from_parts(parts).unwrap_or_default()
            }
            _ => Uri::default(),
        }
    };
    (std::mem::replace(req.uri_mut(), origin), added)
}

/// A connection unused for this many ticks of [`tick`] is closed (45 to
/// 50 s: APIG's front end closes idle connections after about 60 s, and
/// closing first avoids a request on a connection the gateway is closing).
const IDLE_TICKS: u64 = 10;
const TICK: Duration = Duration::from_secs(5);

/// A coarse clock: [`TICK`]s since the first client was built, read with
/// one atomic load instead of a clock read per checkout.
static TICKS: AtomicU64 = AtomicU64::new(0);

fn tick() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Starts [`tick`]'s thread, once per process (when a client is built).
pub(super) fn start_clock() {
    static TICKER: OnceLock<()> = OnceLock::new();
    TICKER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("pool-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    TICKS.fetch_add(1, Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("idle upstream connections are not aged: cannot start a thread: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_leaves_out_the_schemes_default_port() {
        for (uri, host) in [
            ("https://infer.example.com/v1", "infer.example.com"),
            ("https://infer.example.com:443/v1", "infer.example.com"),
            (
                "https://infer.example.com:8443/v1",
                "infer.example.com:8443",
            ),
            ("http://127.0.0.1:80/", "127.0.0.1"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("http://[::1]:9000/", "[::1]:9000"),
        ] {
            assert_eq!(host_of(&uri.parse().unwrap()), host, "{uri}");
        }
    }

    fn req(uri: &str, host: Option<&str>) -> Request<ProxyBody> {
        let mut req = Request::new(crate::error::empty());
        *req.uri_mut() = uri.parse().unwrap();
        if let Some(host) = host {
            req.headers_mut()
                .insert(header::HOST, host.parse().unwrap());
        }
        req
    }

    #[test]
    fn http1_gets_the_origin_form_and_a_host_and_both_can_be_undone() {
        let host = HeaderValue::from_static("infer.example.com");
        let mut r = req("https://infer.example.com/v1/infer?a=1", None);
        let (before, added) = http1_form(&mut r, false, &host);
        assert_eq!(r.uri(), "/v1/infer?a=1");
        assert_eq!(r.headers()[header::HOST], "infer.example.com");
        assert_eq!(before, "https://infer.example.com/v1/infer?a=1");
        assert!(added);
        restore(&mut r, Some((before, added)));
        assert_eq!(r.uri(), "https://infer.example.com/v1/infer?a=1");
        assert!(
            !r.headers().contains_key(header::HOST),
            "the added Host goes"
        );

        let mut r = req("https://infer.example.com/", Some("signed.example.com"));
        let (before, added) = http1_form(&mut r, false, &host);
        assert_eq!(r.uri(), "/");
        assert_eq!(r.headers()[header::HOST], "signed.example.com");
        assert!(!added, "a Host the request has is kept");
        restore(&mut r, Some((before, added)));
        assert_eq!(r.headers()[header::HOST], "signed.example.com");
    }

    #[test]
    fn a_request_through_an_egress_proxy_keeps_the_absolute_form() {
        let host = HeaderValue::from_static("infer.example.com");
        let mut r = req("http://infer.example.com/v1?a=1", None);
        http1_form(&mut r, true, &host);
        assert_eq!(r.uri(), "http://infer.example.com/v1?a=1");
    }
}
