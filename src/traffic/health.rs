//! Each target's health on a route (DESIGN §12): a target that fails 5
//! times in a row (connection failures and gateway 5xx) is skipped for 30 s,
//! then one request probes it; a success closes it again. A small state
//! machine in the style of linkerd's consecutive-failures breaker, driven
//! by the outcome of each attempt.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures in a row that take a target out of rotation.
pub const EJECT_AFTER: u32 = 5;

/// How long an ejected target is skipped before one request probes it.
pub const EJECT_FOR: Duration = Duration::from_secs(30);

/// Whether a target takes the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// In rotation.
    Open,
    /// Ejected, and its cool-down is over: this attempt is its probe.
    Probe,
    /// Ejected (or its probe is out): skip it.
    Skip,
}

/// What an outcome did to the target, to be logged once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Ejected,
    Recovered,
}

#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// While ejected: when the probe may go.
    ejected_until: Option<Instant>,
    /// When the probe out now went (one that never reports back, its
    /// client gone, is taken as failed after another cool-down).
    probing: Option<Instant>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this target takes an attempt now (a probe turn is taken).
    pub fn turn(&self, now: Instant) -> Turn {
        let mut s = self.lock();
        let probe_due = s.probing.is_none_or(|at| now >= at + EJECT_FOR);
        match s.ejected_until {
            None => Turn::Open,
            Some(until) if now >= until && probe_due => {
                s.probing = Some(now);
                Turn::Probe
            }
            Some(_) => Turn::Skip,
        }
    }

    /// True while the target is in rotation (for `upstream_up`).
    pub fn is_up(&self) -> bool {
        self.lock().ejected_until.is_none()
    }

    /// The attempt got an answer that was no failure of the target.
    pub fn succeeded(&self) -> Change {
        let mut s = self.lock();
        s.failures = 0;
        s.probing = None;
        match s.ejected_until.take() {
            Some(_) => Change::Recovered,
            None => Change::None,
        }
    }

    /// The attempt failed (no connection, or a gateway 5xx).
    pub fn failed(&self, now: Instant) -> Change {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.ejected_until.is_some() {
            // A failed probe: another cool-down.
            s.probing = None;
            s.ejected_until = Some(now + EJECT_FOR);
            return Change::None;
        }
        if s.failures >= EJECT_AFTER {
            s.ejected_until = Some(now + EJECT_FOR);
            return Change::Ejected;
        }
        Change::None
    }

    /// The attempt ended without a verdict (the client went away, the
    /// deadline passed): a probe gives its turn back.
    pub fn abandoned(&self) {
        self.lock().probing = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_row_eject_for_thirty_seconds_then_one_probe() {
        let t0 = Instant::now();
        let h = Health::default();
        for _ in 0..4 {
            assert_eq!(h.failed(t0), Change::None);
        }
        assert_eq!(h.turn(t0), Turn::Open);
        assert_eq!(h.failed(t0), Change::Ejected);
        assert_eq!(h.turn(t0), Turn::Skip);
        assert!(!h.is_up());
        let later = t0 + EJECT_FOR;
        assert_eq!(h.turn(later), Turn::Probe);
        assert_eq!(h.turn(later), Turn::Skip, "one probe at a time");
        assert_eq!(h.failed(later), Change::None);
        assert_eq!(h.turn(later + Duration::from_secs(29)), Turn::Skip);
        assert_eq!(h.turn(later + EJECT_FOR), Turn::Probe);
        assert_eq!(h.succeeded(), Change::Recovered);
        assert_eq!(h.turn(later + EJECT_FOR), Turn::Open);
        assert!(h.is_up());
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let h = Health::default();
        for _ in 0..4 {
            h.failed(t0);
        }
        assert_eq!(h.succeeded(), Change::None);
        for _ in 0..4 {
            assert_eq!(h.failed(t0), Change::None);
        }
    }
}
