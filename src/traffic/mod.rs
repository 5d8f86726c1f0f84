//! Traffic the gateway accepts (DESIGN §12): each route's targets (its
//! upstream, then its `[[route.fallback]]`s) with their health, its retry
//! budget and its pacer. Built with the state (a reload starts them anew);
//! the request path asks them in `proxy::forward`.

pub mod budget;
pub mod health;
pub mod pace;
pub mod retry;

use tokio::time::Instant;

use crate::config::{Route, Upstream};
use crate::metrics::Metrics;
use budget::RetryBudget;
use health::{Change, Health, Turn};
use pace::Pacer;

/// One place a route's requests can go.
#[derive(Debug)]
pub struct Target {
    pub upstream: Upstream,
    /// The `[credentials.NAME]` it is called with.
    pub credentials: Option<String>,
    pub health: Health,
    /// `scheme://authority`: the `upstream` of logs and metrics (shared
    /// with each request's access-log record, not copied into it).
    pub label: std::sync::Arc<str>,
}

/// One route's traffic state.
#[derive(Debug)]
pub struct RouteTraffic {
    pub targets: Vec<Target>,
    pub budget: RetryBudget,
    pub pacer: Pacer,
}

impl RouteTraffic {
    pub fn new(route: &Route, metrics: &Metrics) -> RouteTraffic {
        let primary = (route.upstream.clone(), route.credentials.clone());
        let fallbacks = route.fallbacks.iter().map(|f| {
            (
                f.upstream.clone(),
                f.credentials.clone().or_else(|| route.credentials.clone()),
            )
        });
        let targets = std::iter::once(primary)
            .chain(fallbacks)
            .map(|(upstream, credentials)| {
                let label = format!("{}://{}", upstream.scheme, upstream.authority);
                metrics.upstream_up(&route.prefix, &label, true);
                Target {
                    upstream,
                    credentials,
                    health: Health::default(),
                    label: label.into(),
                }
            })
            .collect();
        RouteTraffic {
            targets,
            budget: RetryBudget::default(),
            pacer: Pacer::new(&route.pacing),
        }
    }

    /// The target for the next attempt, looking from `from` on (wrapping):
    /// the first in rotation, or whose probe is due (its turn is taken).
    /// When every one is ejected, `from` all the same: a route's last
    /// usable target is never skipped.
    pub fn pick(&self, from: usize, now: Instant) -> (usize, Turn) {
        let n = self.targets.len();
        for k in 0..n {
            let i = (from + k) % n;
            match self.targets[i].health.turn(now) {
                Turn::Skip => continue,
                turn => return (i, turn),
            }
        }
        (from % n, Turn::Open)
    }

    /// Records an attempt's outcome on target `i`: logged once when it is
    /// ejected or recovers, and reflected in `upstream_up`.
    pub fn outcome(
        &self,
        i: usize,
        failed: bool,
        now: Instant,
        route: &str,
        metrics: &Metrics,
        why: &str,
    ) {
        let target = &self.targets[i];
        let change = if failed {
            target.health.failed(now)
        } else {
            target.health.succeeded()
        };
        match change {
            Change::None => {}
            Change::Ejected => {
                metrics.upstream_up(route, &target.label, false);
                tracing::warn!(
                    route,
                    upstream = %target.label,
                    "upstream failed {} times in a row ({why}); skipped for {} (then one request probes it)",
                    health::EJECT_AFTER,
                    humantime::format_duration(health::EJECT_FOR)
                );
            }
            Change::Recovered => {
                metrics.upstream_up(route, &target.label, true);
                tracing::info!(route, upstream = %target.label, "upstream answered its probe; back in rotation");
            }
        }
    }
}
