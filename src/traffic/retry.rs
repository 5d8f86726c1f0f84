//! Which failed attempts are tried again (DESIGN §12), and how long to
//! wait before the next: pure functions of the answer, the method and the
//! route's `retry` keys.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use crate::config::Retry;

/// Why an attempt is tried again; the label of `modelarts_proxy_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No connection: refused, reset, TLS or DNS failure, before any byte
    /// of the request was written.
    Connect,
    /// The gateway or the service is over a quota: 429, `APIG.0308`,
    /// `ModelArts.4206`, `ModelArts.81101`, `ModelArts.81103`.
    Throttled,
    /// 502, 503 or 504 from the gateway's front end.
    Gateway5xx,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Throttled => "throttled",
            Reason::Gateway5xx => "gateway_5xx",
        }
    }

    /// Connection failures and gateway 5xx move to the next target;
    /// throttling stays (another region has its own quota, but moving for
    /// quota is the route's choice: `fallback_on_throttle`).
    pub fn fails_over(self, on_throttle: bool) -> bool {
        match self {
            Reason::Connect | Reason::Gateway5xx => true,
            Reason::Throttled => on_throttle,
        }
    }
}

/// The error codes of throttling answers: APIG's "too many requests",
/// ModelArts' per-service limit, and MaaS's requests and tokens per minute.
pub const THROTTLING_CODES: [&str; 4] = [
    "APIG.0308",
    "ModelArts.4206",
    "ModelArts.81101",
    "ModelArts.81103",
];

/// What an answer says about trying again: a throttling code wins over the
/// status it came with (a 503 with `ModelArts.4206` is throttling, for any
/// method); a gateway 5xx is tried again only for idempotent methods.
pub fn classify(status: StatusCode, code: Option<&str>, idempotent: bool) -> Option<Reason> {
    if code.is_some_and(|c| THROTTLING_CODES.contains(&c))
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        return Some(Reason::Throttled);
    }
    let gateway = matches!(status.as_u16(), 502..=504);
    (gateway && idempotent).then_some(Reason::Gateway5xx)
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: SystemTime = chrono::DateTime::parse_from_rfc2822(text).ok()?.into();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before retry number `n` (1 for the first): `backoff` doubled
/// each time up to `max_backoff`, then jittered over its upper half
/// (`jitter` in 0..1), so clients throttled together do not come back
/// together and each wait is at least half the nominal one.
pub fn backoff(retry: &Retry, n: u32, jitter: f64) -> Duration {
    let doubled = retry
        .backoff
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
    let nominal = doubled.min(retry.max_backoff);
    nominal.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in 0..1 from the OS random source (0.5 if it fails).
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_any_method_and_wins_over_the_status() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(classify(s(429), None, false), Some(Reason::Throttled));
        assert_eq!(
            classify(s(503), Some("ModelArts.4206"), false),
            Some(Reason::Throttled)
        );
        assert_eq!(
            classify(s(400), Some("ModelArts.81103"), false),
            Some(Reason::Throttled)
        );
        assert_eq!(classify(s(503), None, true), Some(Reason::Gateway5xx));
        assert_eq!(classify(s(503), None, false), None, "POST");
        assert_eq!(classify(s(500), None, true), None);
        assert_eq!(classify(s(401), Some("APIG.0301"), true), None);
        assert_eq!(classify(s(200), None, true), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        let later: chrono::DateTime<chrono::Utc> = (now + Duration::from_secs(7)).into();
        h.insert(
            header::RETRY_AFTER,
            later.to_rfc2822().replace("+0000", "GMT").parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitters_over_the_upper_half() {
        let r = Retry {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        };
        assert_eq!(backoff(&r, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&r, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&r, 4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(&r, 30, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(&r, 2, 0.0), Duration::from_secs(1));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
