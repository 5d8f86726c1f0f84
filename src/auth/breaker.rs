//! The signature breaker (DESIGN §9). APIG locks an AK for 5 minutes after 5
//! failed signature checks in a row, for every application using it. After
//! [`THRESHOLD`] rejections in a row the proxy stops sending that
//! credential's requests for the cool-down, so it never causes the lock;
//! then one request probes. A reload or a change of the credential's files
//! closes it at once.
//!
//! closed → (3 rejections in a row) → open → (cool-down) → half-open:
//! one probe → closed on any answer that is not a signature rejection,
//! open again on a rejection.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{CredentialLabels, Metrics, TransitionLabels};

/// Rejections in a row that open the breaker: two short of APIG's five.
pub const THRESHOLD: u32 = 3;

#[derive(Debug)]
enum State {
    Closed {
        rejections: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down is over and one request is probing.
    Probing,
}

/// Why a request was held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Until the cool-down ends (zero while a probe is out).
    pub remaining: Duration,
    /// What the gateway said last.
    pub last: String,
}

/// The breaker of one credential.
pub struct Breaker {
    label: String,
    credentials: String,
    cooldown: Duration,
    state: Mutex<(State, String)>,
    metrics: std::sync::Arc<Metrics>,
}

/// A request let through; say how the gateway answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Normal,
    Probe,
}

impl Breaker {
    pub fn new(credentials: &str, cooldown: Duration, metrics: std::sync::Arc<Metrics>) -> Self {
        let b = Breaker {
            label: format!("credentials.{credentials}"),
            credentials: credentials.to_owned(),
            cooldown,
            state: Mutex::new((State::Closed { rejections: 0 }, String::new())),
            metrics,
        };
        b.gauge(false);
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, String)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a request go out now? `Err` while open, or while a probe is out.
    pub fn admit(&self) -> Result<Ticket, Held> {
        let mut guard = self.lock();
        let (state, last) = &mut *guard;
        match state {
            State::Closed { .. } => Ok(Ticket::Normal),
            State::Open { until } if Instant::now() >= *until => {
                *state = State::Probing;
                tracing::info!(credentials = %self.label, "signature breaker: cool-down over; one request probes");
                Ok(Ticket::Probe)
            }
            State::Open { until } => Err(Held {
                remaining: until.saturating_duration_since(Instant::now()),
                last: last.clone(),
            }),
            State::Probing => Err(Held {
                remaining: Duration::ZERO,
                last: last.clone(),
            }),
        }
    }

    /// The gateway rejected the signature of a request this breaker let through.
    pub fn rejected(&self, ticket: Ticket, message: &str) {
        let mut guard = self.lock();
        let (state, last) = &mut *guard;
        message.clone_into(last);
        let opens = match state {
            State::Closed { rejections } => {
                *rejections += 1;
                *rejections >= THRESHOLD
            }
            State::Probing => ticket == Ticket::Probe,
            State::Open { .. } => false,
        };
        if opens {
            *state = State::Open {
                until: Instant::now() + self.cooldown,
            };
            drop(guard);
            tracing::warn!(
                credentials = %self.label,
                cooldown = %humantime::format_duration(self.cooldown),
                "signature breaker open: the gateway rejected this credential's signature {THRESHOLD} \
                 times in a row (APIG locks an AK after 5); its requests get 503 credentials_rejected \
                 until the cool-down ends, a reload, or a change of its key files. Last answer: {message}"
            );
            self.transition("open");
        }
    }

    /// The gateway answered a request without rejecting its signature.
    pub fn accepted(&self) {
        let mut guard = self.lock();
        let was_open = !matches!(guard.0, State::Closed { .. });
        guard.0 = State::Closed { rejections: 0 };
        drop(guard);
        if was_open {
            tracing::info!(credentials = %self.label, "signature breaker closed: the probe was accepted");
            self.transition("closed");
        }
    }

    /// A probe went out and no answer came back (the upstream was
    /// unreachable): the next request probes instead.
    pub fn probe_abandoned(&self) {
        let mut guard = self.lock();
        if matches!(guard.0, State::Probing) {
            guard.0 = State::Open {
                until: Instant::now(),
            };
        }
    }

    /// Closes at once: the operator changed something (a reload, new key files).
    pub fn reset(&self, why: &str) {
        let mut guard = self.lock();
        let was_open = !matches!(guard.0, State::Closed { .. });
        guard.0 = State::Closed { rejections: 0 };
        drop(guard);
        if was_open {
            tracing::info!(credentials = %self.label, "signature breaker closed: {why}");
            self.transition("closed");
        }
    }

    /// True while requests are held back.
    pub fn is_open(&self) -> bool {
        !matches!(self.lock().0, State::Closed { .. })
    }

    fn transition(&self, to: &'static str) {
        self.gauge(to == "open");
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels {
                credentials: self.credentials.clone(),
                to,
            })
            .inc();
    }

    fn gauge(&self, open: bool) {
        self.metrics
            .breaker_open
            .get_or_create(&CredentialLabels {
                credentials: self.credentials.clone(),
            })
            .set(i64::from(open));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const REJECTED: &str = "Incorrect IAM authentication information: verify aksk signature fail";

    fn breaker() -> Breaker {
        Breaker::new("main", Duration::from_secs(300), Arc::new(Metrics::new()))
    }

    #[tokio::test(start_paused = true)]
    async fn three_rejections_in_a_row_open_it_for_the_cooldown_then_one_probe() {
        let b = breaker();
        for _ in 0..THRESHOLD {
            let t = b.admit().unwrap();
            b.rejected(t, REJECTED);
        }
        let held = b.admit().unwrap_err();
        assert_eq!(held.last, REJECTED);
        assert_eq!(held.remaining, Duration::from_secs(300));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(b.admit().is_err(), "still cooling down");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit().unwrap(), Ticket::Probe);
        assert!(b.admit().is_err(), "one probe at a time");
        b.accepted();
        assert_eq!(b.admit().unwrap(), Ticket::Normal);
        assert!(!b.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_probe_opens_it_again() {
        let b = breaker();
        for _ in 0..THRESHOLD {
            b.rejected(Ticket::Normal, REJECTED);
        }
        tokio::time::advance(Duration::from_secs(300)).await;
        let probe = b.admit().unwrap();
        b.rejected(probe, REJECTED);
        assert_eq!(b.admit().unwrap_err().remaining, Duration::from_secs(300));
    }

    #[test]
    fn an_accepted_answer_resets_the_count() {
        let b = breaker();
        b.rejected(Ticket::Normal, REJECTED);
        b.rejected(Ticket::Normal, REJECTED);
        b.accepted();
        b.rejected(Ticket::Normal, REJECTED);
        b.rejected(Ticket::Normal, REJECTED);
        assert!(b.admit().is_ok(), "two in a row, not three");
    }

    #[test]
    fn a_reset_closes_it_at_once_and_the_metrics_say_so() {
        let metrics = Arc::new(Metrics::new());
        let b = Breaker::new("main", Duration::from_secs(300), metrics.clone());
        for _ in 0..THRESHOLD {
            b.rejected(Ticket::Normal, REJECTED);
        }
        let text = metrics.encode();
        assert!(
            text.contains("modelarts_proxy_breaker_open{credentials=\"main\"} 1"),
            "{text}"
        );
        b.reset("reload");
        assert!(b.admit().is_ok());
        let text = metrics.encode();
        assert!(
            text.contains("modelarts_proxy_breaker_open{credentials=\"main\"} 0"),
            "{text}"
        );
        assert!(text.contains(
            "modelarts_proxy_breaker_transitions_total{credentials=\"main\",to=\"open\"} 1"
        ));
        assert!(text.contains(
            "modelarts_proxy_breaker_transitions_total{credentials=\"main\",to=\"closed\"} 1"
        ));
    }
}
