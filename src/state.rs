//! The runtime state every request reads: the validated config, the pooled
//! client and one credential provider per `[credentials.NAME]`, swapped whole
//! on reload (build, then swap).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{self, Provider};
use crate::budget::Budget;
use crate::client::HttpClient;
use crate::clock::{self, Clock, Skew};
use crate::config::walk::Problem;
use crate::config::{Config, Credentials};
use crate::credentials::{Sources, System};
use crate::metrics::{Metrics, RouteMetrics};
use crate::telemetry::Telemetry;
use crate::traffic::RouteTraffic;

/// Everything a request needs, swapped whole on reload.
pub struct State {
    pub config: Config,
    pub client: HttpClient,
    /// One per `[credentials.NAME]`.
    pub providers: HashMap<String, Provider>,
    pub metrics: Arc<Metrics>,
    /// The time to sign with and to judge expiry by: this machine's clock,
    /// corrected by the measured skew while `clock_skew_correction` is on.
    pub clock: Clock,
    /// The gateway's clock minus ours, as last measured.
    pub skew: Arc<Skew>,
    /// Request-body bytes held in memory (DESIGN §8).
    pub budget: Budget,
    /// Each route's request metrics, by prefix.
    pub route_metrics: HashMap<String, Arc<RouteMetrics>>,
    /// Each route's targets and their health, retry budget and pacer, by prefix.
    pub traffic: HashMap<String, Arc<RouteTraffic>>,
    /// Traces, when `[telemetry]` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) says where.
    pub telemetry: Option<Arc<Telemetry>>,
    runtime: Runtime,
}

/// What outlives a reload: metrics, this machine's clock, the measured
/// skew, and where secrets are read from.
#[derive(Clone)]
pub struct Runtime {
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub sources: Arc<dyn Sources>,
    pub skew: Arc<Skew>,
}

impl Runtime {
    /// A runtime around this clock, with fresh metrics.
    pub fn with_clock(clock: Clock) -> Self {
        let metrics = Arc::new(Metrics::new());
        Runtime {
            skew: Arc::new(Skew::new(metrics.clock_skew.clone())),
            metrics,
            clock,
            sources: Arc::new(System),
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::with_clock(clock::system())
    }
}

impl State {
    /// Builds the runtime state for a validated config (needs a Tokio runtime:
    /// expiring credentials start fetching at once).
    pub fn build(config: Config) -> Result<State, Vec<Problem>> {
        Self::build_with(config, Runtime::default(), None)
    }

    /// As [`State::build`], keeping `runtime`, and reusing from `previous` the
    /// expiring credentials whose configuration did not change (a reload does
    /// not cost an IAM call).
    pub fn build_with(
        config: Config,
        runtime: Runtime,
        previous: Option<&State>,
    ) -> Result<State, Vec<Problem>> {
        let client =
            crate::client::build(&config.upstream_tls, &config.egress).map_err(ca_problem)?;
        let clock = if config.server.clock_skew_correction {
            runtime.skew.corrected(runtime.clock.clone())
        } else {
            runtime.clock.clone()
        };
        // Credential endpoints on the pod's node (Pod Identity) are never
        // reached through an egress proxy: the request carries the pod's token.
        let direct = match config.egress == crate::config::Egress::default() {
            true => client.clone(),
            false => crate::client::build(&config.upstream_tls, &Default::default())
                .map_err(ca_problem)?,
        };
        let cx = auth::Context {
            client: client.clone(),
            direct,
            sources: runtime.sources.clone(),
            clock: clock.clone(),
            metrics: runtime.metrics.clone(),
            skew: runtime.skew.clone(),
            local_clock: runtime.clock.clone(),
        };
        let providers = start_providers(&config, &cx, previous);
        // Reservations held by requests in flight stay with the budget they
        // came from; a reload that resizes the budget starts a new one.
        let total = config.server.buffer_budget;
        let budget = match previous {
            Some(p) if p.budget.total() == total => p.budget.clone(),
            _ => Budget::new(total, runtime.metrics.buffered_bytes.clone()),
        };
        runtime.metrics.buffer_budget.set(total as i64);
        let route_metrics = config
            .routes
            .iter()
            .map(|r| (r.prefix.clone(), Arc::new(runtime.metrics.route(&r.prefix))))
            .collect();
        let traffic = config
            .routes
            .iter()
            .map(|r| {
                let t = RouteTraffic::new(r, &runtime.metrics);
                (r.prefix.clone(), Arc::new(t))
            })
            .collect();
        let telemetry = telemetry(&config, &client, &runtime, previous);
        Ok(State {
            route_metrics,
            traffic,
            telemetry,
            config,
            client,
            providers,
            metrics: runtime.metrics.clone(),
            clock,
            skew: runtime.skew.clone(),
            budget,
            runtime,
        })
    }

    /// This machine's clock, uncorrected: what the skew is measured against.
    pub fn local_clock(&self) -> &Clock {
        &self.runtime.clock
    }

    /// What survives a reload of this state.
    pub fn runtime(&self, sources: Arc<dyn Sources>) -> Runtime {
        Runtime {
            sources,
            ..self.runtime.clone()
        }
    }

    /// Ready when every expiring credential has been fetched. The reasons otherwise.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let reasons: Vec<String> = self
            .providers
            .iter()
            .filter_map(|(name, p)| {
                p.not_ready_reason()
                    .map(|r| format!("[credentials.{name}]: {r}"))
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// Shared by every connection.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            metrics: state.metrics.clone(),
            clock: state.clock.clone(),
            state: ArcSwap::from_pointee(state),
        }
    }
}

/// True when `[credentials.{name}]` is the same long-lived AK/SK in the
/// previous state and in `now` (its provider is restarted by a reload, but an
/// agency it assumes keeps its keys).
fn same_fixed_key(
    previous: &State,
    now: &std::collections::BTreeMap<String, Credentials>,
    name: &str,
) -> bool {
    match (previous.config.credentials.get(name), now.get(name)) {
        (Some(Credentials::AkSk(a)), Some(Credentials::AkSk(b))) => {
            a.source == b.source
                && a.current.project_id == b.current.project_id
                && a.current.key.access_key == b.current.key.access_key
                && a.current.key.secret_key.expose() == b.current.key.secret_key.expose()
        }
        _ => false,
    }
}

fn ca_problem(message: String) -> Vec<Problem> {
    vec![Problem {
        path: "upstream_tls.ca_file".to_owned(),
        message,
    }]
}

/// One provider per `[credentials.NAME]`: kept from `previous` when its
/// table did not change (no new fetch), started otherwise, bases first.
fn start_providers(
    config: &Config,
    cx: &auth::Context,
    previous: Option<&State>,
) -> HashMap<String, Provider> {
    let mut providers = HashMap::new();
    let mut kept = std::collections::HashSet::new();
    // An agency's base starts first: the agency asks it for its credential.
    let mut order: Vec<(&String, &Credentials)> = config.credentials.iter().collect();
    order.sort_by_key(|(_, spec)| spec.is_assumed());
    for (name, spec) in order {
        let reusable = previous
            .filter(|p| p.config.upstream_tls == config.upstream_tls)
            .filter(|p| {
                p.config.server.clock_skew_correction == config.server.clock_skew_correction
            })
            .filter(|p| {
                spec.assumed_with().is_none_or(|base| {
                    kept.contains(base) || same_fixed_key(p, &config.credentials, base)
                })
            })
            .and_then(|p| {
                let same = match (p.config.credentials.get(name)?, spec) {
                    (Credentials::Token(a), Credentials::Token(b)) => a == b,
                    (Credentials::Temporary(a), Credentials::Temporary(b)) => a == b,
                    _ => false,
                };
                same.then(|| p.providers.get(name).cloned()).flatten()
            });
        if let Some(kept) = &reusable {
            kept.retry_if_failing();
        }
        if reusable.is_some() {
            kept.insert(name.clone());
        }
        let provider = reusable.unwrap_or_else(|| Provider::start(name, spec, cx, &providers));
        providers.insert(name.clone(), provider);
    }
    providers
}

/// Traces: kept through a reload that leaves `[telemetry]` as it was (the
/// queue and what it holds survive); started anew otherwise.
fn telemetry(
    config: &Config,
    client: &HttpClient,
    runtime: &Runtime,
    previous: Option<&State>,
) -> Option<Arc<Telemetry>> {
    match (
        &config.telemetry,
        previous.and_then(|p| p.telemetry.as_ref()),
    ) {
        (Some(c), Some(t)) if t.config == *c => Some(t.clone()),
        (Some(c), _) if tokio::runtime::Handle::try_current().is_ok() => {
            Some(Telemetry::start(c, client.clone(), runtime.metrics.clone()))
        }
        _ => None,
    }
}
