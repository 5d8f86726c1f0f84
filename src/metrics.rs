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
        // 5 ms .. ~41 s: predictions range from milliseconds to the gateway's 40 s cut.
        let upstream_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "upstream_response_seconds",
            "Time from receiving a request to the upstream's response head",
            upstream_latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being proxied now",
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
        Metrics {
            registry,
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

    pub fn observe_request(
        &self,
        route: &str,
        status: u16,
        error: Option<&str>,
        head_after: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        match error {
            Some(code) => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        route: route.to_owned(),
                        code: code.to_owned(),
                    })
                    .inc();
            }
            None => {
                self.upstream_latency
                    .get_or_create(&RouteLabels {
                        route: route.to_owned(),
                    })
                    .observe(head_after.as_secs_f64());
            }
        }
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
