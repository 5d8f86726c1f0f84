//! The listeners and the daemon's life: bind (fitting the connection cap
//! to the open-file limit), accept under the cap, serve, and on a stop
//! signal keep serving for `shutdown_delay`, then drain for up to
//! `shutdown_grace`; a second stop cuts the drain short.

pub mod admin;
pub mod conn;
pub mod limits;
pub mod listener;
pub mod signals;
pub mod status;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::state::{Shared, State};
use conn::{Guard, Phase};
use limits::AcceptErrors;
use listener::{Listener, Stream};
pub use signals::{Once, OsSignals, Signals};
pub use workers::Workers;

/// After a failed `accept` (e.g. out of file descriptors), wait this long
/// before the next, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A bound daemon, ready to [`run`](Daemon::run).
pub struct Daemon {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    admin: Option<TcpListener>,
    max_connections: usize,
    /// Worker threads to serve connections on; 0: the runtime `run` is called on.
    workers: usize,
}

impl Daemon {
    /// Binds every listener in the config. Fails with the address that could
    /// not be bound. Raises the open-file limit, and lowers
    /// `server.max_connections` (with a warning) to what fits in it.
    pub async fn bind(state: State) -> Result<Daemon, String> {
        let mut listeners = Vec::new();
        let unix_mode = state.config.server.unix_mode;
        for listen in &state.config.server.listen {
            listeners.push(Listener::bind(listen, unix_mode).await?);
        }
        let admin = match state.config.server.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let configured = state.config.server.max_connections;
        let fd_limit = limits::raise_fd_limit();
        let max_connections = limits::fit_connections(configured, fd_limit);
        if max_connections < configured {
            tracing::warn!(
                "server.max_connections lowered from {configured} to {max_connections} to fit the \
                 open-file limit of {} (each client connection may need an upstream one); raise \
                 the limit (ulimit -n, LimitNOFILE=) to allow more",
                fd_limit.unwrap_or_default()
            );
        }
        state.metrics.max_connections.set(max_connections as i64);
        Ok(Daemon {
            shared: Arc::new(Shared::new(state)),
            listeners,
            admin,
            max_connections,
            workers: 0,
        })
    }

    /// Serves client connections on `n` worker threads, each a
    /// single-threaded runtime of its own (see [`Workers`]), instead of on
    /// the runtime that calls [`run`](Daemon::run).
    pub fn on_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The TCP addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(Listener::tcp_addr)
            .collect()
    }

    /// Every listener, as `http://ADDR` or `unix:/path`.
    pub fn listening(&self) -> Vec<String> {
        self.listeners.iter().map(Listener::describe).collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The client connections allowed at once, after fitting the open-file limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The state every request reads; reloads swap it.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until the first stop, then: `/readyz` answers 503 and serving
    /// goes on for `shutdown_delay`; then no new connections, idle ones are
    /// closed, in-flight requests have `shutdown_grace` to finish. A second
    /// stop at any point closes every connection at once.
    pub async fn run(self, mut signals: impl Signals) {
        let max = self.max_connections;
        let guard = Arc::new(Guard {
            shared: self.shared.clone(),
            slots: Arc::new(Semaphore::new(max)),
            max,
            pressure: watch::channel(0).0,
            phase: watch::channel(Phase::Serving).0,
        });
        let draining = Arc::new(AtomicBool::new(false));
        let workers = match self.workers {
            0 => None,
            n => match Workers::start(n) {
                Ok(w) => Some(Arc::new(w)),
                Err(e) => {
                    tracing::warn!("cannot start {n} worker threads ({e}); serving on one");
                    None
                }
            },
        };
        let acceptors: Vec<_> = self
            .listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(l, guard.clone(), workers.clone())))
            .collect();
        let quit = Arc::new(tokio::sync::Notify::new());
        let admin = self.admin.map(|l| {
            tokio::spawn(admin::serve(
                l,
                self.shared.clone(),
                draining.clone(),
                quit.clone(),
            ))
        });

        // The first stop: a signal, or POST /quitquitquit on the admin listener.
        tokio::select! {
            () = signals.next() => {}
            () = quit.notified() => {}
        }
        draining.store(true, Ordering::Release);
        let server = self.shared.state.load().config.server.clone();
        let cut = if server.shutdown_delay.is_zero() {
            false
        } else {
            tracing::info!(
                "stopping: /readyz answers 503; still serving for {} (shutdown_delay)",
                humantime::format_duration(server.shutdown_delay)
            );
            tokio::select! {
                () = tokio::time::sleep(server.shutdown_delay) => false,
                () = signals.next() => true,
            }
        };
        for a in &acceptors {
            a.abort();
        }
        if cut {
            tracing::warn!("second stop signal: closing every connection now");
            guard.phase.send_replace(Phase::Cut);
        } else {
            drain(&guard, server.shutdown_grace, &mut signals).await;
        }
        if let Some(t) = admin {
            t.abort();
        }
        // An aborted task's future (and the acceptor's share of the
        // workers) is dropped before its handle resolves.
        for a in acceptors {
            let _ = a.await;
        }
        if let Some(workers) = workers.and_then(Arc::into_inner) {
            // Joining the threads blocks: off the async thread.
            let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
        }
        // The last spans go to the collector before the process ends.
        if let Some(telemetry) = self.shared.state.load().telemetry.clone() {
            telemetry.shutdown().await;
        }
    }
}

/// Lets in-flight requests finish for up to `grace` (idle connections close
/// at once); a second stop, or the end of the grace period, cuts the rest.
async fn drain(guard: &Guard, grace: Duration, signals: &mut impl Signals) {
    let open = guard.max - guard.slots.available_permits();
    tracing::info!(
        connections = open,
        "draining: no new connections; idle ones close now, in-flight requests have {}",
        humantime::format_duration(grace)
    );
    guard.phase.send_replace(Phase::Draining);
    let all_closed = guard.slots.acquire_many(guard.max as u32);
    tokio::select! {
        _ = all_closed => {
            tracing::info!("all connections finished");
            return;
        }
        () = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
        () = signals.next() => {
            tracing::warn!("second stop signal during the drain: closing the remaining connections now");
        }
    }
    let open = guard.max - guard.slots.available_permits();
    let in_flight = guard.shared.metrics.in_flight.get();
    tracing::warn!(connections = open, requests = in_flight, "cut short");
    guard.phase.send_replace(Phase::Cut);
}

/// Serves an accepted connection: on the least loaded worker thread, or
/// here. A socket moves to a worker unregistered (as a std socket) and is
/// registered with that worker's runtime there.
fn hand_off(
    stream: Stream,
    slot: OwnedSemaphorePermit,
    guard: Arc<Guard>,
    workers: Option<&Workers>,
) {
    let Some(workers) = workers else {
        match stream {
            Stream::Tcp(s, peer) => tokio::spawn(conn::serve(s, Some(peer), slot, guard)),
            // A Unix socket's clients are whoever its file mode lets in.
            Stream::Unix(s) => tokio::spawn(conn::serve(s, None, slot, guard)),
        };
        return;
    };
    let moved = match stream {
        Stream::Tcp(s, peer) => s.into_std().map(|s| Moved::Tcp(s, peer)),
        Stream::Unix(s) => s.into_std().map(Moved::Unix),
    };
    let moved = match moved {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("cannot hand an accepted connection to a worker: {e}");
            return;
        }
    };
    workers.serve(move || async move {
        match moved {
            Moved::Tcp(s, peer) => match tokio::net::TcpStream::from_std(s) {
                Ok(s) => conn::serve(s, Some(peer), slot, guard).await,
                Err(e) => tracing::warn!("a worker cannot take an accepted connection: {e}"),
            },
            Moved::Unix(s) => match tokio::net::UnixStream::from_std(s) {
                Ok(s) => conn::serve(s, None, slot, guard).await,
                Err(e) => tracing::warn!("a worker cannot take an accepted connection: {e}"),
            },
        }
    });
}

/// An accepted connection on its way to a worker.
enum Moved {
    Tcp(std::net::TcpStream, SocketAddr),
    Unix(std::os::unix::net::UnixStream),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Accepts while a connection slot is free; at `max_connections`, stops
/// accepting (connections wait in the kernel's backlog) and signals
/// pressure, so idle connections make room.
async fn accept_loop(listener: Listener, guard: Arc<Guard>, workers: Option<Arc<Workers>>) {
    let mut errors = AcceptErrors::default();
    let mut at_limit_logged = false;
    loop {
        let slot = match guard.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !std::mem::replace(&mut at_limit_logged, true) {
                    tracing::warn!(
                        max_connections = guard.max,
                        "at max_connections: not accepting until a connection closes; idle \
                         connections are closed after {}s",
                        conn::PRESSURE_IDLE.as_secs()
                    );
                }
                guard.pressure.send_modify(|waiting| *waiting += 1);
                let slot = guard.slots.clone().acquire_owned().await;
                guard.pressure.send_modify(|waiting| *waiting -= 1);
                match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                }
            }
        };
        match listener.accept().await {
            Ok(stream) => {
                if let Some(line) = errors.succeeded() {
                    tracing::warn!("{line}");
                }
                if guard.slots.available_permits() > guard.max / 10 {
                    at_limit_logged = false;
                }
                hand_off(stream, slot, guard.clone(), workers.as_deref());
            }
            Err(e) => {
                guard.shared.metrics.accept_errors.inc();
                if let Some(line) = errors.failed(&e) {
                    tracing::warn!("{line}");
                }
                drop(slot);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
