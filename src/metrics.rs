//! Prometheus metrics, served on the admin listener at `/metrics`. Labels
//! carry route prefixes, status codes and error codes only: never a header,
//! a query or a credential.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

mod sharded;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

pub use sharded::{Counter as SlotCounter, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route prefix as configured, or `none`.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub route: String,
    /// A DESIGN §6 error code such as `upstream_timeout`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// The `[credentials.NAME]` name.
    pub credentials: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialResultLabels {
    pub credentials: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    /// `exported`, `dropped` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub route: String,
    /// `idle_timeout`, `upstream_reset` or `client_aborted`.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// An APIG error code such as `APIG.0301`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub credentials: String,
    /// `open` or `closed`.
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why a client connection was closed (see [`Metrics::connection_closed`]),
    /// or why a request was sent upstream again (see [`Metrics::resend`]).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub route: String,
    /// `connect`, `throttled` or `gateway_5xx`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub route: String,
    /// The answer's `model`, or `unknown`.
    pub model: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub route: String,
    /// The target's `scheme://authority`.
    pub upstream: String,
}

/// What [`Metrics::request_done`] records.
pub struct Done {
    pub status: u16,
    pub total: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Why the response body did not end normally, if it did not.
    pub failure: Option<&'static str>,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, SlotCounter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub upstream_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub credential_refreshes: Family<CredentialResultLabels, Counter>,
    pub credential_expiry: Family<CredentialLabels, Gauge>,
    pub credential_replays: Family<CredentialLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub request_bytes: Family<RouteLabels, SlotCounter>,
    pub response_bytes: Family<RouteLabels, SlotCounter>,
    pub stream_failures: Family<CauseLabels, Counter>,
    pub connections_open: Gauge,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub accept_errors: Counter,
    pub buffered_bytes: Gauge,
    pub buffer_budget: Gauge,
    pub max_connections: Gauge,
    pub clock_skew: Gauge<f64, AtomicU64>,
    pub gateway_errors: Family<CodeLabels, Counter>,
    pub breaker_open: Family<CredentialLabels, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub build_info: Family<BuildLabels, Gauge>,
    pub resends: Family<ReasonLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub rate_limited: Family<RouteLabels, Counter>,
    pub queue: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_up: Family<TargetLabels, Gauge>,
    pub model_tokens: Family<ModelLabels, Counter>,
    pub trace_spans: Family<SpanLabels, Counter>,
    /// The last gateway errors, for the status page.
    pub recent_gateway_errors: std::sync::Mutex<std::collections::VecDeque<GatewayErrorSeen>>,
}

/// A gateway error as the status page lists it (nothing secret: the
/// gateway's code, message and hint, and the two request ids).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GatewayErrorSeen {
    /// RFC 3339, UTC.
    pub at: String,
    pub route: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub hint: String,
    pub request_id: String,
    pub gateway_request_id: String,
}

/// How many gateway errors the status page keeps (DESIGN §13).
pub const RECENT_GATEWAY_ERRORS: usize = 20;

/// 1 ms .. ~16 s: a queue wait is bounded by queue_timeout (10 s by default).
fn queue_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// 5 ms .. ~41 s: predictions range from milliseconds to the gateway's 40 s cut.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// One route's per-request metrics, looked up once per route (when the
/// state is built) rather than by label on every request.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// The route prefix as configured, or `none`.
    pub route: String,
    ok: SlotCounter,
    duration: Histogram,
    upstream: Histogram,
    bytes_in: SlotCounter,
    bytes_out: SlotCounter,
}

/// Registers each metric as it is made.
struct Registrar(Registry);

/// `Metrics { field: registered(name, help, metric), … }`, in order.
macro_rules! registered {
    ($r:ident; $($field:ident = $name:literal, $help:literal, $metric:expr;)*) => {
        Metrics {
            $($field: $r.add($name, $help, $metric),)*
            registry: Registry::default(),
            recent_gateway_errors: std::sync::Mutex::default(),
        }
    };
}

impl Registrar {
    fn add<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registrar(Registry::with_prefix("modelarts_proxy"));
        // One line per metric: field = name, help, metric.
        let metrics = registered! { r;
            requests = "requests", "Requests answered, by route and status", Family::default();
            errors = "proxy_errors", "Responses made by the proxy itself, by route and error code", Family::default();
            upstream_latency = "upstream_response_seconds", "Time from receiving a request to the upstream response head", Family::new_with_constructor(latency_buckets as fn() -> _);
            in_flight = "requests_in_flight", "Requests being proxied now, until their response body ends", Gauge::default();
            reloads = "config_reloads", "Configuration reloads, by result", Family::default();
            credential_refreshes = "credential_refreshes", "Fetches of IAM tokens and ECS temporary keys, by result", Family::default();
            credential_expiry = "credential_expiry_timestamp_seconds", "When the current expiring credential expires (Unix time)", Family::default();
            credential_replays = "credential_replays", "Requests replayed once with a renewed token after a 401", Family::default();
            request_duration = "request_duration_seconds", "Time from receiving a request to the end of its response body", Family::new_with_constructor(latency_buckets as fn() -> _);
            request_bytes = "request_bytes", "Request body bytes received from clients", Family::default();
            response_bytes = "response_bytes", "Response body bytes sent to clients", Family::default();
            stream_failures = "stream_failures", "Response bodies that did not end normally, by cause", Family::default();
            connections_open = "connections_open", "Client connections open now, all listeners together", Gauge::default();
            connections_closed = "connections_closed", "Client connections closed, by reason", Family::default();
            accept_errors = "accept_errors", "Failed accepts on the client listeners (such as EMFILE)", Counter::default();
            buffered_bytes = "buffered_bytes", "Request-body bytes held in memory now (buffer budget in use)", Gauge::default();
            buffer_budget = "buffer_budget_bytes", "The buffer budget (server.buffer_budget)", Gauge::default();
            max_connections = "max_connections", "Client connections allowed at once, after fitting the open-file limit", Gauge::default();
            clock_skew = "clock_skew_seconds", "The gateway's clock minus this machine's, as last measured", Gauge::default();
            gateway_errors = "gateway_errors", "APIG error answers passed through, by APIG error code", Family::default();
            breaker_open = "breaker_open", "1 while a credential's signature breaker is open (its requests paused)", Family::default();
            breaker_transitions = "breaker_transitions", "Signature breaker openings and closings, by credential", Family::default();
            build_info = "build_info", "Always 1; the version label says which build this is", Family::default();
            resends = "resends", "Requests sent upstream again because the upstream did not process them (not retries), by reason", Family::default();
            retries = "retries", "Attempts tried again after a connection failure, throttling or a gateway 5xx, by route and reason", Family::default();
            rate_limited = "rate_limited", "Requests answered 429 rate_limited: no turn within queue_timeout", Family::default();
            queue = "queue_seconds", "Time requests waited for their route's rate or concurrency", Family::new_with_constructor(queue_buckets as fn() -> _);
            upstream_up = "upstream_up", "1 while a route's target is in rotation, 0 while it is ejected", Family::default();
            model_tokens = "model_tokens", "Tokens the answers of OpenAI-compatible services reported in their usage, by route, model and kind (prompt, completion)", Family::default();
            trace_spans = "trace_spans", "Sampled spans by what became of them: exported, dropped (the export queue was full) or failed (the collector refused or did not answer)", Family::default();
        };
        metrics
            .build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Metrics {
            registry: r.0,
            ..metrics
        }
    }

    /// A proxy-made error answer (counted when it is made).
    pub fn proxy_error(&self, route: &str, code: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                route: route.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// The per-request metrics of `route`.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        RouteMetrics {
            route: route.to_owned(),
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    status: 200,
                })
                .clone(),
            duration: self.request_duration.get_or_create(&labels).clone(),
            upstream: self.upstream_latency.get_or_create(&labels).clone(),
            bytes_in: self.request_bytes.get_or_create(&labels).clone(),
            bytes_out: self.response_bytes.get_or_create(&labels).clone(),
        }
    }

    /// A response head from the upstream, `after` the request arrived.
    pub fn upstream_head(&self, route: &RouteMetrics, after: Duration) {
        route.upstream.observe(after);
    }

    /// A request whose response body has ended (or failed, or was dropped).
    pub fn request_done(&self, route: &RouteMetrics, done: &Done) {
        if done.status == 200 {
            route.ok.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.route.clone(),
                    status: done.status,
                })
                .inc();
        }
        route.duration.observe(done.total);
        route.bytes_in.inc_by(done.bytes_in);
        route.bytes_out.inc_by(done.bytes_out);
        if let Some(cause) = done.failure {
            self.stream_failures
                .get_or_create(&CauseLabels {
                    route: route.route.clone(),
                    cause,
                })
                .inc();
        }
    }

    /// An attempt tried again on `route` for `reason`.
    pub fn retry(&self, route: &str, reason: &'static str) {
        self.retries
            .get_or_create(&RetryLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// The tokens an answer reported.
    pub fn model_tokens(&self, route: &str, usage: &crate::usage::Usage) {
        let model = usage.model.clone().unwrap_or_else(|| "unknown".to_owned());
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            self.model_tokens
                .get_or_create(&ModelLabels {
                    route: route.to_owned(),
                    model: model.clone(),
                    kind,
                })
                .inc_by(n);
        }
    }

    /// Whether a route's target is in rotation.
    pub fn upstream_up(&self, route: &str, upstream: &str, up: bool) {
        self.upstream_up
            .get_or_create(&TargetLabels {
                route: route.to_owned(),
                upstream: upstream.to_owned(),
            })
            .set(i64::from(up));
    }

    /// A request sent again for `reason` (see `proxy::resend`).
    pub fn resend(&self, reason: &'static str) {
        self.resends.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// An APIG error answer passed through.
    pub fn gateway_error(&self, code: &str) {
        self.gateway_errors
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Keeps `seen` among the last [`RECENT_GATEWAY_ERRORS`] gateway errors.
    pub fn remember_gateway_error(&self, seen: GatewayErrorSeen) {
        let mut recent = self
            .recent_gateway_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT_GATEWAY_ERRORS {
            recent.pop_front();
        }
        recent.push_back(seen);
    }

    /// A client connection closed for `reason`.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn credential_fetched(&self, credentials: &str, expires_at_unix: i64) {
        let labels = CredentialResultLabels {
            credentials: credentials.to_owned(),
            result: "ok".to_owned(),
        };
        self.credential_refreshes.get_or_create(&labels).inc();
        self.credential_expiry
            .get_or_create(&CredentialLabels {
                credentials: credentials.to_owned(),
            })
            .set(expires_at_unix);
    }

    pub fn credential_failed(&self, credentials: &str) {
        let labels = CredentialResultLabels {
            credentials: credentials.to_owned(),
            result: "error".to_owned(),
        };
        self.credential_refreshes.get_or_create(&labels).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
