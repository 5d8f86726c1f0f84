//! A route's traffic keys (DESIGN §12): `retry`, the pacing keys (`rate`,
//! `burst`, `concurrency`, `queue_timeout`), and failover
//! (`[[route.fallback]]`, `fallback_on_throttle`).

use std::time::Duration;

use toml::Value;

use super::walk::{Report, Section, check_keys, type_name};
use super::{Upstream, parse_upstream};

/// `retry = { attempts, backoff, max_backoff }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included; 1 turns retries off.
    pub attempts: u32,
    /// The first wait; each next one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// Three tries, 1 s then 2 s apart (jittered), at most 8 s: Huawei's
    /// guidance for throttled calls is to try again after 2–5 s.
    fn default() -> Self {
        Retry {
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// How fast, and how many at once, a route sends upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct Pacing {
    /// Requests per second, when limited.
    pub rate: Option<f64>,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
    /// Requests in flight upstream at once, when limited.
    pub concurrency: Option<u32>,
    /// How long a request may wait for rate or concurrency.
    pub queue_timeout: Duration,
}

/// A request may wait this long for the route's rate or concurrency
/// before it is answered 429 (DESIGN §12).
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            rate: None,
            burst: 1,
            concurrency: None,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// A `[[route.fallback]]` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub upstream: Upstream,
    /// A key of `[credentials]`; `None` means the route's own.
    pub credentials: Option<String>,
}

const RETRY_KEYS: &[&str] = &["attempts", "backoff", "max_backoff"];
const FALLBACK_KEYS: &[&str] = &["upstream", "credentials"];

/// The most tries a request gets: a storm of retries helps no gateway.
const MAX_ATTEMPTS: i64 = 10;

pub fn retry(report: &mut Report, route: &Section<'_>) -> Retry {
    let mut retry = Retry::default();
    let Some(s) = route.table(report, "retry") else {
        return retry;
    };
    check_keys(report, s.table, &s.path, RETRY_KEYS);
    if let Some(n) = s.integer(report, "attempts", 1, MAX_ATTEMPTS) {
        retry.attempts = n as u32;
    }
    if let Some(d) = s.duration(report, "backoff") {
        retry.backoff = d;
    }
    if let Some(d) = s.duration(report, "max_backoff") {
        retry.max_backoff = d;
    }
    if retry.max_backoff < retry.backoff {
        report.error(
            s.key_path("max_backoff"),
            format!(
                "must be at least backoff ({})",
                humantime::format_duration(retry.backoff)
            ),
        );
    }
    retry
}

pub fn pacing(report: &mut Report, s: &Section<'_>) -> Pacing {
    let rate = s.str(report, "rate").and_then(|text| match parse_rate(text) {
        Some(r) => Some(r),
        None => {
            report.error(
                s.key_path("rate"),
                format!("invalid rate {text:?}; write requests per second or minute, e.g. \"20/s\" or \"1200/min\""),
            );
            None
        }
    });
    let burst = s.integer(report, "burst", 1, 1_000_000).map(|n| n as u32);
    if burst.is_some() && s.get("rate").is_none() {
        report.error(s.key_path("burst"), "needs rate (it is the rate's burst)");
    }
    let concurrency = s
        .integer(report, "concurrency", 1, 1_000_000)
        .map(|n| n as u32);
    let queue_timeout = s
        .duration(report, "queue_timeout")
        .unwrap_or(DEFAULT_QUEUE_TIMEOUT);
    Pacing {
        rate,
        // One second's worth of the rate, at least one request.
        burst: burst.unwrap_or_else(|| rate.map_or(1, |r| r.ceil().max(1.0) as u32)),
        concurrency,
        queue_timeout,
    }
}

/// `"20/s"`, `"1200/min"`, `"0.5/s"` as requests per second.
pub fn parse_rate(text: &str) -> Option<f64> {
    let (count, per) = text.trim().split_once('/')?;
    let count: f64 = count.trim().parse().ok()?;
    let seconds = match per.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return None,
    };
    let rate = count / seconds;
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

pub fn fallbacks(
    report: &mut Report,
    route: &Section<'_>,
    credential_names: &[String],
) -> Vec<Fallback> {
    let path = route.key_path("fallback");
    let items = match route.get("fallback") {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            report.error(
                path,
                format!(
                    "expected an array of tables ([[route.fallback]]), found {}",
                    type_name(other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let Value::Table(t) = item else {
            report.error(path, format!("expected a table, found {}", type_name(item)));
            continue;
        };
        let s = Section::new(t, path);
        check_keys(report, s.table, &s.path, FALLBACK_KEYS);
        let upstream = s
            .require(report, "upstream", |r| s.str(r, "upstream"))
            .and_then(|u| parse_upstream(report, &s.key_path("upstream"), u));
        let credentials = s.str(report, "credentials").map(str::to_owned);
        if let Some(name) = &credentials
            && !credential_names.contains(name)
        {
            report.error(
                s.key_path("credentials"),
                format!("no [credentials.{name}] table"),
            );
        }
        if let Some(upstream) = upstream {
            out.push(Fallback {
                upstream,
                credentials,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_or_minute() {
        assert_eq!(parse_rate("20/s"), Some(20.0));
        assert_eq!(parse_rate("1200/min"), Some(20.0));
        assert_eq!(parse_rate(" 0.5 / s "), Some(0.5));
        for bad in ["20", "20/day", "0/s", "-1/s", "x/s", "inf/s"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }
}
