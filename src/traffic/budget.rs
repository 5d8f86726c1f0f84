//! The retry budget (DESIGN §12): over any 10 s, a route's retries are at
//! most 20% of its requests in that window plus 10 a second, so a gateway
//! that keeps failing is not hammered by retry storms. Like tower's
//! `TpsBudget`: each request deposits, each retry withdraws, over a window
//! of one-second slots. It starts full.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window the budget is kept over.
const WINDOW_SECS: usize = 10;

/// Retries allowed on top of the percentage, per second of the window:
/// a quiet route can still retry its few failures.
const MIN_PER_SEC: u64 = 10;

/// Retries allowed per request in the window, in percent.
const RETRY_PERCENT: u64 = 20;

/// One route's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// The second (since `start`) that `slots[second % WINDOW_SECS]` holds.
    second: u64,
    /// (requests, retries) per second.
    slots: [(u64, u64); WINDOW_SECS],
}

impl Window {
    /// Moves to `now`'s second, emptying the slots of seconds passed.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let passed = second.saturating_sub(self.second).min(WINDOW_SECS as u64);
        for s in 1..=passed {
            self.slots[((self.second + s) % WINDOW_SECS as u64) as usize] = (0, 0);
        }
        self.second = self.second.max(second);
    }

    fn slot(&mut self) -> &mut (u64, u64) {
        &mut self.slots[(self.second % WINDOW_SECS as u64) as usize]
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(Instant::now())
    }
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget {
            window: Mutex::new(Window {
                start: now,
                second: 0,
                slots: [(0, 0); WINDOW_SECS],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request arrived on the route.
    pub fn deposit(&self, now: Instant) {
        let mut w = self.lock();
        w.advance(now);
        w.slot().0 += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let mut w = self.lock();
        w.advance(now);
        let (requests, retries) = w.slots.iter().fold((0, 0), |(a, b), (r, t)| (a + r, b + t));
        let allowed = requests * RETRY_PERCENT / 100 + MIN_PER_SEC * WINDOW_SECS as u64;
        if retries >= allowed {
            return false;
        }
        w.slot().1 += 1;
        true
    }
}

/// How long the window is, for messages.
pub const WINDOW: Duration = Duration::from_secs(WINDOW_SECS as u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_route_gets_a_hundred_retries_plus_a_fifth_of_its_requests_per_window() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        for _ in 0..1000 {
            b.deposit(t0);
        }
        let granted = (0..1000).filter(|_| b.withdraw(t0)).count();
        assert_eq!(granted, 300, "100 + 20% of 1000");
        // Ten seconds later the window has moved on: full again.
        let later = t0 + WINDOW;
        assert!(b.withdraw(later));
        let granted = (0..1000).filter(|_| b.withdraw(later)).count();
        assert_eq!(granted, 99);
    }

    #[test]
    fn the_budget_starts_full() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        assert_eq!((0..200).filter(|_| b.withdraw(t0)).count(), 100);
    }
}
