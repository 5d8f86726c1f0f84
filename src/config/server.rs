//! `[server]`: where the proxy listens, and the bounds that keep it standing
//! under any traffic (DESIGN §4, §8): body size and time (the gateway's
//! limits), connections, memory, and who may use it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Value;

use super::credentials::{resolve_now, secret_source};
use super::walk::{Report, Section, check_keys, type_name};
use crate::credentials::Sources;
use crate::secret::Secret;

/// Where the daemon listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The gateway rejects bodies over 12 MB (APIG "API Request Signing Guide").
pub const DEFAULT_MAX_BODY: u64 = 12 * 1024 * 1024;
/// The gateway cuts a request off after 40 s without a response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);
/// How long in-flight requests may finish after SIGTERM: Kubernetes' default
/// `terminationGracePeriodSeconds`, so long predictions can finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Client connections open at once, all listeners together (DESIGN §8).
/// Lowered at start to fit the open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// From accept (or the end of the previous response) to a complete request
/// head: a slow or silent client holds a connection no longer than this.
/// nginx's `client_header_timeout` is 60 s; 30 s is hyper's own default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A body that moves no byte for this long is dead; longer than the
/// gateway's 40 s so a slow prediction's first byte is never cut.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request-body bytes held in memory at once: five 12 MiB signed uploads,
/// or sixty-four 1 MiB token-mode replay copies, in a 128 MiB container.
pub const DEFAULT_BUFFER_BUDGET: u64 = 64 * 1024 * 1024;
/// How long a request waits for room in the buffer budget before 503.
pub const DEFAULT_BUFFER_WAIT: Duration = Duration::from_secs(5);
/// Request header bytes (names, values, and 32 per field as HTTP/2 counts
/// them) above which the proxy answers 431 itself. nginx allows 32 KiB
/// (`large_client_header_buffers 4 8k`), Envoy 60 KiB. hyper's own bound is
/// set at twice this.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// The keys of `[server]`.
pub const KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "allow_remote",
    "max_body",
    "timeout",
    "shutdown_grace",
    "max_connections",
    "header_timeout",
    "idle_timeout",
    "buffer_budget",
    "buffer_wait",
    "allow_clients",
    "require_header",
    "shutdown_delay",
    "max_header_bytes",
    "clock_skew_correction",
    "unix_mode",
    "workers",
    "quitquitquit",
];

/// The file mode of a `unix:` listener's socket: owner and group.
pub const DEFAULT_UNIX_MODE: u32 = 0o660;

/// Where a listener listens: a TCP address, or a Unix socket path
/// (`unix:/run/modelarts-proxy/proxy.sock`, DESIGN §10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(Listen::Unix(path.into())),
            Some(_) => Err(format!(
                "{text:?}: a Unix socket needs an absolute path, e.g. \"unix:/run/modelarts-proxy/proxy.sock\""
            )),
            None => text.parse().map(Listen::Tcp).map_err(|_| {
                format!(
                    "invalid address {text:?}; write IP:PORT, e.g. \"127.0.0.1:8080\", or unix:/path"
                )
            }),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub listen: Vec<Listen>,
    pub admin_listen: Option<SocketAddr>,
    pub allow_remote: bool,
    pub max_body: u64,
    pub timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub buffer_budget: u64,
    pub buffer_wait: Duration,
    /// Source addresses allowed; `None` allows every source.
    pub allow_clients: Option<Vec<IpNet>>,
    /// A shared secret every request must carry; never forwarded.
    pub require_header: Option<RequireHeader>,
    pub shutdown_delay: Duration,
    pub max_header_bytes: usize,
    /// Sign with the gateway's clock when ours is measured to differ (DESIGN §9).
    pub clock_skew_correction: bool,
    /// File mode of `unix:` listeners' sockets.
    pub unix_mode: u32,
    /// Worker threads, each a single-threaded runtime serving whole
    /// connections; `None`: one per CPU this process may use.
    pub workers: Option<usize>,
    /// `POST /quitquitquit` on the admin listener starts the drain (DESIGN §13).
    pub quitquitquit: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec![DEFAULT_LISTEN.parse().expect("valid default")],
            admin_listen: None,
            allow_remote: false,
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
            buffer_wait: DEFAULT_BUFFER_WAIT,
            allow_clients: None,
            require_header: None,
            shutdown_delay: Duration::ZERO,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            clock_skew_correction: true,
            unix_mode: DEFAULT_UNIX_MODE,
            workers: None,
            quitquitquit: false,
        }
    }
}

/// The most worker threads `server.workers` may ask for.
pub const MAX_WORKERS: usize = 256;

impl Server {
    /// The worker threads to run: `workers`, or one per CPU this process
    /// may use (its affinity mask and cgroup CPU quota, as
    /// `std::thread::available_parallelism` reads them).
    pub fn worker_threads(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(MAX_WORKERS)
        })
    }

    /// True when `peer` may use the proxy (`allow_clients`).
    pub fn client_allowed(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow_clients
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&peer)))
    }
}

/// `require_header = { name = "X-Proxy-Key", value = { env = "PROXY_KEY" } }`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequireHeader {
    pub name: HeaderName,
    pub value: Secret,
}

pub(super) fn server(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Server {
    check_keys(report, s.table, &s.path, KEYS);
    let d = Server::default();
    let allow_remote = s.bool(report, "allow_remote").unwrap_or(false);
    let listen = listen(report, s, allow_remote).unwrap_or(d.listen);
    // The admin listener serves health and metrics only, no credentials, so it
    // may bind beyond loopback (kubelet probes come from the node) without
    // allow_remote, which would also open the proxy listener's guards.
    let admin_listen = s
        .str(report, "admin_listen")
        .and_then(|a| address(report, &s.key_path("admin_listen"), a, true));
    let max_body = s.size(report, "max_body").unwrap_or(d.max_body);
    if max_body > DEFAULT_MAX_BODY {
        report.warn(
            s.key_path("max_body"),
            "is above the gateway's 12 MiB limit; APIG will reject such bodies",
        );
    }
    let server = Server {
        listen,
        admin_listen,
        allow_remote,
        max_body,
        timeout: s.duration(report, "timeout").unwrap_or(d.timeout),
        shutdown_grace: s
            .duration(report, "shutdown_grace")
            .unwrap_or(d.shutdown_grace),
        max_connections: s
            .integer(report, "max_connections", 1, 1 << 20)
            .map_or(d.max_connections, |n| n as usize),
        header_timeout: s
            .duration(report, "header_timeout")
            .unwrap_or(d.header_timeout),
        idle_timeout: s.duration(report, "idle_timeout").unwrap_or(d.idle_timeout),
        buffer_budget: s.size(report, "buffer_budget").unwrap_or(d.buffer_budget),
        buffer_wait: s
            .duration_or_zero(report, "buffer_wait")
            .unwrap_or(d.buffer_wait),
        allow_clients: allow_clients(report, s),
        require_header: require_header(report, s, sources),
        shutdown_delay: s
            .duration_or_zero(report, "shutdown_delay")
            .unwrap_or(d.shutdown_delay),
        max_header_bytes: max_header_bytes(report, s).unwrap_or(d.max_header_bytes),
        clock_skew_correction: s
            .bool(report, "clock_skew_correction")
            .unwrap_or(d.clock_skew_correction),
        unix_mode: unix_mode(report, s).unwrap_or(d.unix_mode),
        workers: s
            .integer(report, "workers", 1, MAX_WORKERS as i64)
            .map(|n| n as usize),
        // Off by default: whoever reaches the admin port could stop the proxy.
        quitquitquit: s.bool(report, "quitquitquit").unwrap_or(false),
    };
    if server.allow_remote && server.allow_clients.is_none() && server.require_header.is_none() {
        report.warn(
            s.key_path("allow_remote"),
            "is true with neither allow_clients nor require_header: anyone who can reach the \
             listener can spend your credentials",
        );
    }
    if server.buffer_budget < server.max_body {
        report.warn(
            s.key_path("buffer_budget"),
            "is smaller than max_body: a signed body larger than the budget is refused with 503",
        );
    }
    server
}

fn listen(report: &mut Report, s: &Section<'_>, allow_remote: bool) -> Option<Vec<Listen>> {
    let path = s.key_path("listen");
    match s.get("listen")? {
        Value::String(a) => Some(
            listener(report, &path, a, allow_remote)
                .into_iter()
                .collect(),
        ),
        Value::Array(items) if items.is_empty() => {
            report.error(path, "needs at least one address");
            Some(Vec::new())
        }
        Value::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let path = format!("{path}[{i}]");
                    match v {
                        Value::String(a) => listener(report, &path, a, allow_remote),
                        other => {
                            report.error(
                                path,
                                format!("expected an address string, found {}", type_name(other)),
                            );
                            None
                        }
                    }
                })
                .collect(),
        ),
        other => {
            report.error(
                path,
                format!(
                    "expected an address or a list of addresses, found {}",
                    type_name(other)
                ),
            );
            Some(Vec::new())
        }
    }
}

/// A `listen` entry: a Unix socket path, or a TCP address (see [`address`]).
fn listener(report: &mut Report, path: &str, text: &str, allow_remote: bool) -> Option<Listen> {
    if text.starts_with("unix:") {
        return match text.parse::<Listen>() {
            Ok(l) => Some(l),
            Err(e) => {
                report.error(path, e);
                None
            }
        };
    }
    address(report, path, text, allow_remote).map(Listen::Tcp)
}

/// `unix_mode = "0660"`: an octal file mode.
fn unix_mode(report: &mut Report, s: &Section<'_>) -> Option<u32> {
    let text = s.str(report, "unix_mode")?;
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Some(mode),
        _ => {
            report.error(
                s.key_path("unix_mode"),
                format!("{text:?} is not an octal file mode such as \"0660\""),
            );
            None
        }
    }
}

/// Parses a listen address; a non-loopback one needs `allow_remote = true`.
pub fn address(
    report: &mut Report,
    path: &str,
    text: &str,
    allow_remote: bool,
) -> Option<SocketAddr> {
    let Ok(addr) = text.parse::<SocketAddr>() else {
        report.error(
            path,
            format!("invalid address {text:?}; write IP:PORT, e.g. \"127.0.0.1:8080\""),
        );
        return None;
    };
    if !addr.ip().is_loopback() && !allow_remote {
        report.error(
            path,
            format!(
                "{addr} is not a loopback address; anyone who can reach it could use your \
                 credentials. Set server.allow_remote = true if that is intended"
            ),
        );
        return None;
    }
    Some(addr)
}

/// `["10.0.0.0/8", "192.168.1.7"]`: CIDRs, or single addresses.
fn allow_clients(report: &mut Report, s: &Section<'_>) -> Option<Vec<IpNet>> {
    let path = s.key_path("allow_clients");
    let items = match s.get("allow_clients")? {
        Value::Array(items) => items,
        other => {
            report.error(
                path,
                format!(
                    "expected a list of CIDRs such as [\"10.0.0.0/8\"], found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    if items.is_empty() {
        report.error(
            &path,
            "is empty, which would refuse every client; remove it to allow every source",
        );
        return None;
    }
    let mut nets = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let parsed = match item {
            Value::String(t) => t
                .parse::<IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{t:?} is not a CIDR such as \"10.0.0.0/8\" or an address")),
            other => Err(format!(
                "expected a CIDR string, found {}",
                type_name(other)
            )),
        };
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(e) => report.error(item_path, e),
        }
    }
    Some(nets)
}

fn require_header(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<RequireHeader> {
    let t = s.table(report, "require_header")?;
    check_keys(report, t.table, &t.path, &["name", "value"]);
    let name = t.require(report, "name", |r| t.str(r, "name"));
    let name = name.and_then(|n| match HeaderName::from_bytes(n.as_bytes()) {
        Ok(h)
            if !matches!(
                h.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) =>
        {
            Some(h)
        }
        _ => {
            report.error(
                t.key_path("name"),
                format!("{n:?} cannot carry the shared secret"),
            );
            None
        }
    });
    let source = t.require(report, "value", |r| secret_source(r, &t, "value"))?;
    let value = resolve_now(report, &t, "value", &source, sources)?;
    Some(RequireHeader { name: name?, value })
}

fn max_header_bytes(report: &mut Report, s: &Section<'_>) -> Option<usize> {
    let n = s.size(report, "max_header_bytes")?;
    // hyper reads a request head into a buffer of at least 8 KiB.
    if !(4096..=1024 * 1024).contains(&n) {
        report.error(
            s.key_path("max_header_bytes"),
            "must be between 4KiB and 1MiB",
        );
        return None;
    }
    Some(n as usize)
}
