//! The buffer budget (DESIGN §8): every request-body byte the proxy holds in
//! memory (signed payloads, 401-replay copies) is reserved here before it is
//! read. A request that cannot get its reservation within `buffer_wait` is
//! refused with 503 `overloaded`, and nothing goes upstream.
//!
//! Built on `tokio::sync::Semaphore` (fair, FIFO): a [`Reservation`] holds
//! permits and travels with the body it pays for, so the bytes return to the
//! budget when the body is dropped.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Permits are kibibytes, so a `u32` reservation covers any body.
const UNIT: u64 = 1024;

/// The budget shared by every request.
#[derive(Clone)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    total: u64,
    /// `modelarts_proxy_buffered_bytes`: bytes reserved now.
    in_use: Gauge,
}

/// The budget had no room in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// What was asked for, in bytes.
    pub wanted: u64,
    /// True when the request alone is larger than the whole budget.
    pub never_fits: bool,
}

impl Budget {
    pub fn new(total: u64, in_use: Gauge) -> Self {
        let permits = total.div_ceil(UNIT) as usize;
        Budget {
            semaphore: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            total,
            in_use,
        }
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Reserves `bytes`, waiting until `until` for room.
    pub async fn reserve(&self, bytes: u64, until: Instant) -> Result<Reservation, Overloaded> {
        let mut r = self.empty();
        r.grow(bytes, until).await?;
        Ok(r)
    }

    /// Reserves `bytes` if there is room now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let units = units(bytes)?;
        let permit = self.semaphore.clone().try_acquire_many_owned(units).ok()?;
        Some(self.reservation(Some(permit), units))
    }

    /// A reservation of nothing, to grow as a body of unknown length arrives.
    pub fn empty(&self) -> Reservation {
        self.reservation(None, 0)
    }

    fn reservation(&self, permit: Option<OwnedSemaphorePermit>, units: u32) -> Reservation {
        self.in_use.inc_by(i64::from(units) * UNIT as i64);
        Reservation {
            budget: self.clone(),
            permit,
            units,
        }
    }
}

fn units(bytes: u64) -> Option<u32> {
    u32::try_from(bytes.div_ceil(UNIT)).ok()
}

/// Bytes reserved in the budget; returned when dropped.
pub struct Reservation {
    budget: Budget,
    permit: Option<OwnedSemaphorePermit>,
    units: u32,
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Reserves `more` bytes in addition, waiting until `until`.
    pub async fn grow(&mut self, more: u64, until: Instant) -> Result<(), Overloaded> {
        let wanted = self.bytes() + more;
        let over = Overloaded {
            wanted,
            never_fits: wanted > self.budget.total,
        };
        if over.never_fits {
            return Err(over);
        }
        let units = units(more).ok_or(over)?;
        if units == 0 {
            return Ok(());
        }
        let acquire = self.budget.semaphore.clone().acquire_many_owned(units);
        let permit = match tokio::time::timeout_at(until, acquire).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(over),
        };
        self.budget.in_use.inc_by(i64::from(units) * UNIT as i64);
        self.units += units;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .in_use
            .dec_by(i64::from(self.units) * UNIT as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(total: u64) -> (Budget, Gauge) {
        let g = Gauge::default();
        (Budget::new(total, g.clone()), g)
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_count_in_the_gauge_and_return_when_dropped() {
        let (b, g) = budget(10 * 1024);
        let r = b.reserve(4096, Instant::now()).await.unwrap();
        assert_eq!(g.get(), 4096);
        let mut s = b.reserve(1, Instant::now()).await.unwrap();
        assert_eq!(g.get(), 4096 + 1024, "rounded up to whole KiB");
        s.grow(2048, Instant::now()).await.unwrap();
        assert_eq!(g.get(), 4096 + 3072);
        drop(r);
        drop(s);
        assert_eq!(g.get(), 0);
        assert!(b.try_reserve(10 * 1024).is_some(), "everything is back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_waits_then_refuses() {
        let (b, _) = budget(8 * 1024);
        let held = b.reserve(8 * 1024, Instant::now()).await.unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let err = b.reserve(1024, until).await.err().unwrap();
        assert!(!err.never_fits);
        assert_eq!(Instant::now(), until, "waited the whole buffer_wait");
        assert!(b.try_reserve(1024).is_none());
        drop(held);
        assert!(b.try_reserve(1024).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_room_as_soon_as_it_is_freed() {
        let (b, _) = budget(8 * 1024);
        let held = b.reserve(8 * 1024, Instant::now()).await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            b2.reserve(4096, Instant::now() + Duration::from_secs(5))
                .await
                .map(|r| r.bytes())
        });
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(4096));
    }

    #[tokio::test]
    async fn a_body_larger_than_the_whole_budget_is_refused_at_once() {
        let (b, g) = budget(8 * 1024);
        let err = b
            .reserve(9 * 1024, Instant::now() + Duration::from_secs(60))
            .await;
        assert!(err.err().unwrap().never_fits);
        assert_eq!(g.get(), 0);
    }
}
