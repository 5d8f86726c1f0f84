//! Prometheus metrics, served on the admin listener at `/metrics`. Labels
//! carry route prefixes, status codes and error codes only: never a header,
//! a query or a credential.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
pub struct CauseLabels {
    pub route: String,
    /// `idle_timeout`, `upstream_reset` or `client_aborted`.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why a client connection was closed (see [`Metrics::connection_closed`]).
    pub reason: &'static str,
}

/// What [`Metrics::request_done`] records.
pub struct Done<'a> {
    pub route: &'a str,
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
    pub requests: Family<RequestLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub upstream_latency: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub credential_refreshes: Family<CredentialResultLabels, Counter>,
    pub credential_expiry: Family<CredentialLabels, Gauge>,
    pub credential_replays: Family<CredentialLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub request_bytes: Family<RouteLabels, Counter>,
    pub response_bytes: Family<RouteLabels, Counter>,
    pub stream_failures: Family<CauseLabels, Counter>,
    pub connections_open: Gauge,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub accept_errors: Counter,
    pub buffered_bytes: Gauge,
    pub buffer_budget: Gauge,
    pub max_connections: Gauge,
}

/// 5 ms .. ~41 s: predictions range from milliseconds to the gateway's 40 s cut.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelarts_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "proxy_errors",
            "Responses made by the proxy itself, by route and error code",
            errors.clone(),
        );
        let upstream_latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        registry.register(
            "upstream_response_seconds",
            "Time from receiving a request to the upstream's response head",
            upstream_latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being proxied now, until their response body ends",
            in_flight.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        let credential_refreshes = Family::<CredentialResultLabels, Counter>::default();
        registry.register(
            "credential_refreshes",
            "Fetches of expiring credentials (IAM tokens, ECS temporary keys), by result",
            credential_refreshes.clone(),
        );
        let credential_expiry = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the current expiring credential expires (Unix time)",
            credential_expiry.clone(),
        );
        let credential_replays = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "credential_replays",
            "Requests replayed once with a renewed token after the upstream answered 401",
            credential_replays.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the end of its response body",
            request_duration.clone(),
        );
        let request_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "request_bytes",
            "Request body bytes received from clients",
            request_bytes.clone(),
        );
        let response_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients",
            response_bytes.clone(),
        );
        let stream_failures = Family::<CauseLabels, Counter>::default();
        registry.register(
            "stream_failures",
            "Response bodies that did not end normally, by cause (idle_timeout, upstream_reset, client_aborted)",
            stream_failures.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now, all listeners together",
            connections_open.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections closed, by reason (client, header_timeout, idle, pressure, drain, bad_request, header_too_large, io_error)",
            connections_closed.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Failed accepts on the client listeners (such as EMFILE)",
            accept_errors.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "buffered_bytes",
            "Request-body bytes held in memory now (the buffer budget in use)",
            buffered_bytes.clone(),
        );
        let buffer_budget = Gauge::default();
        registry.register(
            "buffer_budget_bytes",
            "The buffer budget (server.buffer_budget)",
            buffer_budget.clone(),
        );
        let max_connections = Gauge::default();
        registry.register(
            "max_connections",
            "Client connections allowed at once (server.max_connections, after fitting the open-file limit)",
            max_connections.clone(),
        );
        Metrics {
            registry,
            request_duration,
            request_bytes,
            response_bytes,
            stream_failures,
            connections_open,
            connections_closed,
            accept_errors,
            buffered_bytes,
            buffer_budget,
            max_connections,
            requests,
            errors,
            upstream_latency,
            in_flight,
            reloads,
            credential_refreshes,
            credential_expiry,
            credential_replays,
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

    /// A response head from the upstream, `after` the request arrived.
    pub fn upstream_head(&self, route: &str, after: Duration) {
        self.upstream_latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(after.as_secs_f64());
    }

    /// A request whose response body has ended (or failed, or was dropped).
    pub fn request_done(&self, done: &Done<'_>) {
        self.requests
            .get_or_create(&RequestLabels {
                route: done.route.to_owned(),
                status: done.status,
            })
            .inc();
        let route = RouteLabels {
            route: done.route.to_owned(),
        };
        self.request_duration
            .get_or_create(&route)
            .observe(done.total.as_secs_f64());
        self.request_bytes
            .get_or_create(&route)
            .inc_by(done.bytes_in);
        self.response_bytes
            .get_or_create(&route)
            .inc_by(done.bytes_out);
        if let Some(cause) = done.failure {
            self.stream_failures
                .get_or_create(&CauseLabels {
                    route: route.route,
                    cause,
                })
                .inc();
        }
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
