//! A route's pacing (DESIGN §12): requests beyond its `rate` (a GCRA with
//! `burst`) or its `concurrency` wait their turn, first come first served,
//! up to `queue_timeout`, then get 429 `rate_limited`. And the slow-down
//! that follows the gateway's quota by itself: when it throttles, the
//! route's rate is halved (from what it sent in the last second when no
//! `rate` is set), at most once a second, never below 1/s, and climbs back
//! by a tenth of where it started each second without throttling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Pacing;

/// The slowest the slow-down goes.
const MIN_RATE: f64 = 1.0;

/// The route's pacer; one per route, rebuilt with the state on reload.
#[derive(Debug)]
pub struct Pacer {
    rate: Option<f64>,
    burst: u32,
    queue_timeout: Duration,
    concurrency: Option<(u32, Arc<Semaphore>)>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// GCRA's theoretical arrival time of the next request.
    tat: Option<Instant>,
    slowed: Option<Slowed>,
    /// Requests let through in the second that began at `second_start`,
    /// and in the second before it.
    second_start: Instant,
    this_second: u32,
    last_second: u32,
}

/// The slow-down in force after the gateway throttled.
#[derive(Clone, Copy, Debug)]
struct Slowed {
    /// The rate before the first halving: where the climb stops.
    start: f64,
    current: f64,
    /// The last halving (at most one a second).
    halved: Instant,
    /// The last change, halving or climb step.
    changed: Instant,
}

/// A request's turn: it holds a concurrency slot (if the route has a
/// limit) until it is dropped, with the end of the response body.
#[derive(Debug)]
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
    /// How long the request waited for it.
    pub waited: Duration,
    /// The route has pacing configured or in force (so the wait is measured).
    pub paced: bool,
}

/// No turn within `queue_timeout`.
#[derive(Debug)]
pub struct Limited {
    /// `rate (20/s)`, `concurrency (16)`, `rate (slowed to 5/s after throttling)`.
    pub limit: String,
    pub waited: Duration,
    /// When a turn is likely.
    pub retry_after: Duration,
}

impl State {
    /// Counts one request let through at `now`.
    fn count(&mut self, now: Instant) {
        self.roll(now);
        self.this_second = self.this_second.saturating_add(1);
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.second_start);
        if elapsed >= Duration::from_secs(1) {
            self.last_second = if elapsed < Duration::from_secs(2) {
                self.this_second
            } else {
                0
            };
            self.this_second = 0;
            self.second_start = now;
        }
    }

    /// The slowed rate at `now`, after the climb of the seconds passed
    /// without throttling; `None` once it is back where it started.
    fn slowed_rate(&mut self, now: Instant) -> Option<f64> {
        let s = self.slowed.as_mut()?;
        let steps = now.saturating_duration_since(s.changed).as_secs();
        if steps > 0 {
            s.current = (s.current + steps as f64 * s.start / 10.0).min(s.start);
            s.changed += Duration::from_secs(steps);
        }
        if s.current >= s.start {
            self.slowed = None;
            return None;
        }
        Some(s.current)
    }
}

impl Pacer {
    pub fn new(p: &Pacing) -> Pacer {
        Pacer {
            rate: p.rate,
            burst: p.burst.max(1),
            queue_timeout: p.queue_timeout,
            concurrency: p
                .concurrency
                .map(|n| (n, Arc::new(Semaphore::new(n as usize)))),
            state: Mutex::new(State {
                tat: None,
                slowed: None,
                second_start: Instant::now(),
                this_second: 0,
                last_second: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the request's turn, in arrival order, at most `queue_timeout`.
    pub async fn admit(&self) -> Result<Turn, Limited> {
        let arrived = Instant::now();
        let until = arrived + self.queue_timeout;
        let permit = match &self.concurrency {
            None => None,
            Some((n, slots)) => {
                match tokio::time::timeout_at(until, slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        return Err(Limited {
                            limit: format!("concurrency ({n})"),
                            waited: arrived.elapsed(),
                            retry_after: Duration::from_secs(1),
                        });
                    }
                }
            }
        };
        let now = Instant::now();
        let (at, paced) = {
            let mut s = self.lock();
            let slowed = s.slowed_rate(now);
            let rate = match (self.rate, slowed) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Slowed down, the burst shrinks with the rate.
            let burst = match (self.rate, slowed) {
                (Some(configured), Some(r)) if r < configured => {
                    (f64::from(self.burst) * r / configured).ceil().max(1.0) as u32
                }
                (None, Some(_)) => 1,
                _ => self.burst,
            };
            let at = match rate {
                None => now,
                Some(rate) => {
                    let interval = Duration::from_secs_f64(1.0 / rate);
                    let tolerance = interval * (burst - 1);
                    let tat = s.tat.map_or(now, |t| t.max(now));
                    let at = tat.checked_sub(tolerance).unwrap_or(now).max(now);
                    if at > until {
                        return Err(Limited {
                            limit: match slowed {
                                Some(r) if self.rate.is_none_or(|c| r < c) => {
                                    format!("rate (slowed to {r:.1}/s after the gateway throttled)")
                                }
                                _ => format!("rate ({}/s)", trim(rate)),
                            },
                            waited: now.saturating_duration_since(arrived),
                            retry_after: at.saturating_duration_since(now),
                        });
                    }
                    s.tat = Some(tat + interval);
                    at
                }
            };
            s.count(at);
            (at, rate.is_some() || self.concurrency.is_some())
        };
        if at > now {
            tokio::time::sleep_until(at).await;
        }
        Ok(Turn {
            _permit: permit,
            waited: at.saturating_duration_since(arrived),
            paced,
        })
    }

    /// The gateway throttled a request of this route: halve the rate,
    /// at most once a second. Returns the new rate when it changed.
    pub fn throttled(&self, now: Instant) -> Option<f64> {
        let mut s = self.lock();
        s.roll(now);
        let current = s.slowed_rate(now);
        if let Some(sl) = &s.slowed
            && now.saturating_duration_since(sl.halved) < Duration::from_secs(1)
        {
            return None;
        }
        let measured = f64::from(s.last_second.max(s.this_second)).max(MIN_RATE);
        let from = current.or(self.rate).unwrap_or(measured);
        let start = s
            .slowed
            .map_or(self.rate.unwrap_or(measured), |sl| sl.start);
        let new = (from / 2.0).max(MIN_RATE);
        s.slowed = Some(Slowed {
            start,
            current: new,
            halved: now,
            changed: now,
        });
        Some(new)
    }

    /// The rate in force now (configured, or slowed), for the status.
    pub fn current_rate(&self, now: Instant) -> Option<f64> {
        let slowed = self.lock().slowed_rate(now);
        match (self.rate, slowed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `20`, `0.5`: a rate without trailing zeros.
fn trim(rate: f64) -> String {
    let s = format!("{rate:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(rate: Option<f64>, burst: u32, concurrency: Option<u32>) -> Pacing {
        Pacing {
            rate,
            burst,
            concurrency,
            queue_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_spaces_requests_after_the_burst_in_arrival_order() {
        let p = Arc::new(Pacer::new(&pacing(Some(10.0), 2, None)));
        let t0 = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            let turn = p.admit().await.unwrap();
            at.push((Instant::now() - t0, turn.waited));
        }
        let ms: Vec<u128> = at.iter().map(|(d, _)| d.as_millis()).collect();
        assert_eq!(ms, [0, 0, 100, 200, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn past_queue_timeout_the_answer_is_limited_with_when_to_come_back() {
        let mut cfg = pacing(Some(1.0), 1, None);
        cfg.queue_timeout = Duration::from_secs(2);
        let p = Pacer::new(&cfg);
        // Four at one instant: turns at 0 s, 1 s and 2 s; the fourth's (3 s)
        // is past the queue timeout.
        let (a, b, c, d) = tokio::join!(p.admit(), p.admit(), p.admit(), p.admit());
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        let d = d.unwrap_err();
        assert_eq!(d.limit, "rate (1/s)");
        assert_eq!(d.retry_after, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_holds_the_next_request_until_a_turn_is_dropped() {
        let mut cfg = pacing(None, 1, Some(1));
        cfg.queue_timeout = Duration::from_secs(1);
        let p = Arc::new(Pacer::new(&cfg));
        let first = p.admit().await.unwrap();
        let e = p.admit().await.unwrap_err();
        assert_eq!(e.limit, "concurrency (1)");
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.admit().await.map(|t| t.waited) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(first);
        let waited = waiter.await.unwrap().unwrap();
        assert_eq!(waited.as_millis(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_measured_rate_once_a_second_and_it_climbs_back_by_tenths() {
        let p = Pacer::new(&pacing(None, 1, None));
        // 40 requests in the first second.
        for _ in 0..40 {
            p.admit().await.unwrap();
        }
        tokio::time::advance(Duration::from_millis(1000)).await;
        let t = Instant::now();
        assert_eq!(p.throttled(t), Some(20.0));
        assert_eq!(p.throttled(t + Duration::from_millis(500)), None);
        assert_eq!(
            p.throttled(t + Duration::from_secs(1)),
            Some(12.0),
            "20 + 4 (climbed a tenth of 40) halved"
        );
        let t2 = t + Duration::from_secs(1);
        assert_eq!(p.current_rate(t2 + Duration::from_secs(3)), Some(24.0));
        assert_eq!(
            p.current_rate(t2 + Duration::from_secs(7)),
            None,
            "back at 40: no limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_slow_down_never_goes_below_one_a_second_and_starts_from_a_configured_rate() {
        let p = Pacer::new(&pacing(Some(4.0), 4, None));
        let mut t = Instant::now();
        let mut rates = Vec::new();
        for _ in 0..4 {
            rates.push(p.throttled(t).unwrap());
            t += Duration::from_millis(1000);
        }
        // 4 → 2, then +0.4 climbed each second before the next halving.
        assert_eq!(rates[0], 2.0);
        assert!((rates[1] - 1.2).abs() < 1e-9, "{rates:?}");
        assert_eq!(rates[3], 1.0);
    }
}
