//! The wall clock, injected so that signing and expiry can be tested "at" a
//! given time (STYLE guideline 7), and the measured offset of the gateway's
//! clock from ours (DESIGN §9).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::gauge::Gauge;

/// A clock: the current UTC time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(Utc::now)
}

/// Past this offset from the gateway's clock, the proxy warns: the gateway
/// refuses an `X-Sdk-Date` 15 minutes off, and tokens expire early or late.
pub const SKEW_WARN_SECONDS: i64 = 60;

/// Offsets smaller than this are not corrected: an HTTP `Date` has
/// one-second resolution, and the round trip adds its own noise.
pub const SKEW_CORRECT_SECONDS: i64 = 5;

/// The gateway's clock minus ours, as last measured (`Date` headers of
/// upstream and IAM answers, the `server time` of a signature-expired error).
#[derive(Debug)]
pub struct Skew {
    millis: AtomicI64,
    known: AtomicBool,
    warned: AtomicBool,
    /// `modelarts_proxy_clock_skew_seconds`.
    gauge: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Skew {
    pub fn new(gauge: Gauge<f64, std::sync::atomic::AtomicU64>) -> Self {
        Skew {
            millis: AtomicI64::new(0),
            known: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            gauge,
        }
    }

    /// The remote clock said `remote` when ours said `local`.
    pub fn observe(&self, remote: DateTime<Utc>, local: DateTime<Utc>, source: &str) {
        let millis = (remote - local).num_milliseconds();
        self.millis.store(millis, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
        self.gauge.set(millis as f64 / 1000.0);
        let far = millis.abs() >= SKEW_WARN_SECONDS * 1000;
        if far && !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                skew_seconds = millis / 1000,
                source,
                "this machine's clock is {}s {} the gateway's (measured from {source}); \
                 requests are signed with the gateway's time while clock_skew_correction is on, \
                 but fix the clock (NTP)",
                (millis / 1000).abs(),
                if millis > 0 { "behind" } else { "ahead of" },
            );
        } else if !far && self.warned.swap(false, Ordering::AcqRel) {
            tracing::info!(
                skew_seconds = millis / 1000,
                "this machine's clock agrees with the gateway's again"
            );
        }
    }

    /// The measured offset, if any answer carried a time.
    pub fn offset(&self) -> Option<chrono::Duration> {
        self.known
            .load(Ordering::Acquire)
            .then(|| chrono::Duration::milliseconds(self.millis.load(Ordering::Relaxed)))
    }

    /// The correction to add to our clock: the offset when it is large
    /// enough to matter, else zero.
    pub fn correction(&self) -> chrono::Duration {
        match self.offset() {
            Some(d) if d.num_seconds().abs() >= SKEW_CORRECT_SECONDS => d,
            _ => chrono::Duration::zero(),
        }
    }

    /// `base`, corrected by this offset: the gateway's time as best known.
    pub fn corrected(self: &Arc<Self>, base: Clock) -> Clock {
        let skew = self.clone();
        Arc::new(move || base() + skew.correction())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_clock_twenty_minutes_behind_is_corrected_and_a_small_offset_is_not() {
        let skew = Arc::new(Skew::new(Gauge::default()));
        let ours: Clock = Arc::new(|| at("2026-12-01T10:00:00Z"));
        let corrected = skew.corrected(ours.clone());
        assert_eq!(corrected(), ours(), "nothing measured yet");
        skew.observe(
            at("2026-12-01T10:20:00Z"),
            at("2026-12-01T10:00:00Z"),
            "test",
        );
        assert_eq!(corrected(), at("2026-12-01T10:20:00Z"));
        assert_eq!(skew.gauge.get(), 1200.0);
        skew.observe(
            at("2026-12-01T10:00:02Z"),
            at("2026-12-01T10:00:00Z"),
            "test",
        );
        assert_eq!(
            corrected(),
            ours(),
            "two seconds is within the Date header's noise"
        );
        assert_eq!(skew.offset(), Some(chrono::Duration::seconds(2)));
    }
}
