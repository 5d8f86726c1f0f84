//! Credentials that expire (IAM tokens, ECS temporary AK/SK), kept fresh in
//! the background.
//!
//! One task per credential does all fetching, so any number of requests cause
//! at most one call to IAM (single flight). Requests read the current value
//! lock-free ([`Refreshing::current`]); only before the very first fill do
//! they wait, and then for a bounded time. The task refreshes ahead of expiry
//! (half the remaining lifetime, and at least `margin` before expiry), keeps
//! the old value through failures until it really expires, and retries with
//! jittered exponential backoff, slowly for errors that retrying cannot fix.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use super::watched::BackgroundTask;

use crate::clock::Clock;

/// A value and when it stops being valid.
#[derive(Debug)]
pub struct Expiring<T> {
    pub value: T,
    pub expires_at: DateTime<Utc>,
}

/// Why a fetch failed. `permanent` errors (a wrong password, a 4xx from IAM)
/// are retried slowly, so IAM is not hammered; others quickly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchError {
    pub message: String,
    pub permanent: bool,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Gets a fresh credential (from IAM, from the ECS metadata service, or a fake in tests).
pub trait Fetch<T>: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<T>, FetchError>>;
}

/// A fetcher whose errors start with `prefix` (why it was chosen).
pub struct Explained<F> {
    pub inner: F,
    pub prefix: &'static str,
}

impl<T: 'static, F: Fetch<T>> Fetch<T> for Explained<F> {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<T>, FetchError>> {
        Box::pin(async move {
            self.inner.fetch().await.map_err(|e| FetchError {
                message: format!("{}{}", self.prefix, e.message),
                ..e
            })
        })
    }
}

/// When to refresh and retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Refresh at least this long before expiry, when the lifetime allows.
    pub margin: Duration,
    /// Never schedule the next fetch sooner than this (no hot loops on short lifetimes).
    pub min_delay: Duration,
    /// First retry after a transient failure (IAM down, timeout, 5xx); doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// First retry after a permanent failure (wrong password, 4xx); doubles up to `permanent_retry_max`.
    pub permanent_retry_base: Duration,
    pub permanent_retry_max: Duration,
    /// Refreshes forced by an upstream 401 are at least this far apart.
    pub forced_min_interval: Duration,
}

impl Policy {
    /// The defaults for a credential refreshed `margin` before expiry.
    pub fn with_margin(margin: Duration) -> Self {
        Policy {
            margin,
            min_delay: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            permanent_retry_base: Duration::from_secs(30),
            permanent_retry_max: Duration::from_secs(15 * 60),
            forced_min_interval: Duration::from_secs(1),
        }
    }

    /// Delay until the next refresh of a credential valid until `expires_at`:
    /// half the remaining lifetime, but no later than `margin` before expiry.
    pub fn refresh_delay(&self, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Duration {
        let remaining = (expires_at - now).to_std().unwrap_or(Duration::ZERO);
        let half = remaining / 2;
        let delay = match remaining.checked_sub(self.margin) {
            Some(before_margin) => half.min(before_margin),
            None => half,
        };
        delay.max(self.min_delay)
    }

    /// Delay before retry number `failures` (1-based), without jitter.
    pub fn retry_delay(&self, failures: u32, permanent: bool) -> Duration {
        let (base, max) = if permanent {
            (self.permanent_retry_base, self.permanent_retry_max)
        } else {
            (self.retry_base, self.retry_max)
        };
        base.saturating_mul(1 << failures.saturating_sub(1).min(20))
            .min(max)
    }
}

/// Spreads retries by ±20% so many proxies do not retry in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        32768
    };
    let factor = 0.8 + 0.4 * (f64::from(r) / f64::from(u16::MAX));
    d.mul_f64(factor)
}

/// Reports each fetch's outcome (metrics); called from the refresh task.
pub trait Observe: Send + Sync + 'static {
    fn fetched(&self, expires_at: DateTime<Utc>);
    fn failed(&self, error: &FetchError);
}

impl Observe for () {
    fn fetched(&self, _: DateTime<Utc>) {}
    fn failed(&self, _: &FetchError) {}
}

/// A credential kept fresh by a background task.
pub struct Refreshing<T> {
    /// `credentials.NAME`, for logs and errors.
    label: String,
    current: ArcSwapOption<Expiring<T>>,
    /// Bumped after every fetch, good or bad, so waiters look again.
    version: watch::Sender<u64>,
    last_error: ArcSwapOption<FetchError>,
    /// Wakes the task for a renewal (after a rejection) or a retry (after a reload).
    force: Arc<Notify>,
    /// The address of the credential an upstream rejected (0: none). A forced
    /// fetch happens only while that credential is still the current one.
    rejected: AtomicUsize,
    /// An operator action (reload, a changed password file): retry now, whatever the backoff.
    retry_requested: AtomicBool,
    clock: Clock,
    task: BackgroundTask,
}

impl<T: Send + Sync + 'static> Refreshing<T> {
    /// Starts the background task (needs a Tokio runtime). It stops when the
    /// returned value is dropped.
    pub fn start(
        label: impl Into<String>,
        fetcher: impl Fetch<T>,
        policy: Policy,
        clock: Clock,
        observe: impl Observe,
    ) -> Arc<Self> {
        let this = Arc::new(Refreshing {
            label: label.into(),
            current: ArcSwapOption::empty(),
            version: watch::channel(0).0,
            last_error: ArcSwapOption::empty(),
            force: Arc::new(Notify::new()),
            rejected: AtomicUsize::new(0),
            retry_requested: AtomicBool::new(false),
            clock,
            task: BackgroundTask::default(),
        });
        let task = tokio::spawn(refresh_loop(
            Arc::downgrade(&this),
            this.force.clone(),
            fetcher,
            policy,
            observe,
        ));
        this.task.set(task.abort_handle());
        this
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The current credential if it has not expired. Lock-free.
    pub fn current(&self) -> Option<Arc<Expiring<T>>> {
        self.current
            .load_full()
            .filter(|c| c.expires_at > (self.clock)())
    }

    /// True once a valid credential is held.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// The current credential, waiting up to `wait` if there is none yet.
    /// The error names the last fetch failure.
    pub async fn get(&self, wait: Duration) -> Result<Arc<Expiring<T>>, String> {
        let mut changes = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(c) = self.current() {
                return Ok(c);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(self.unavailable(wait)),
            }
        }
    }

    /// After the upstream rejected `stale`: a newer credential. However many
    /// callers reject the same one, the background task fetches once. While
    /// fetching is failing, the retry schedule decides (a stream of 401s must
    /// not make the proxy hammer IAM), so this returns the error at once.
    pub async fn renew(
        &self,
        stale: &Arc<Expiring<T>>,
        wait: Duration,
    ) -> Result<Arc<Expiring<T>>, String> {
        let newer =
            |c: &Option<Arc<Expiring<T>>>| c.as_ref().is_some_and(|c| !Arc::ptr_eq(c, stale));
        let mut changes = self.version.subscribe();
        let now = self.current();
        if newer(&now) {
            return Ok(now.expect("checked"));
        }
        if self.last_error.load().is_some() {
            return Err(self.unavailable(wait));
        }
        self.request_renewal(stale);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(self.unavailable(wait)),
            }
            let now = self.current();
            if newer(&now) {
                return Ok(now.expect("checked"));
            }
            if self.last_error.load().is_some() {
                // The renewal itself failed: no point waiting out `wait`.
                return Err(self.unavailable(wait));
            }
        }
    }

    /// Asks for a renewal of `stale` without waiting (after a rejection whose
    /// request cannot be replayed), so the next requests get a new credential.
    pub fn request_renewal(&self, stale: &Arc<Expiring<T>>) {
        self.rejected
            .store(Arc::as_ptr(stale) as usize, Ordering::Release);
        self.force.notify_one();
    }

    /// Retries at once, resetting the backoff (after a reload, or when the
    /// password file changed): an operator fixed something.
    pub fn retry_now(&self) {
        self.retry_requested.store(true, Ordering::Release);
        self.force.notify_one();
    }

    /// Changes after every fetch, good or bad (for observers and tests).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// True if an upstream rejected the credential that is current now.
    fn rejection_pending(&self) -> bool {
        let rejected = self.rejected.load(Ordering::Acquire);
        rejected != 0
            && self
                .current
                .load()
                .as_ref()
                .is_some_and(|c| Arc::as_ptr(c) as usize == rejected)
    }

    fn unavailable(&self, wait: Duration) -> String {
        match self.last_error.load_full() {
            Some(e) => format!("[{}] has no valid credential: {}", self.label, e.message),
            None => format!(
                "[{}] has no valid credential yet (waited {})",
                self.label,
                humantime::format_duration(wait)
            ),
        }
    }

    /// The last fetch error, if the last fetch failed.
    pub fn last_error(&self) -> Option<FetchError> {
        self.last_error.load_full().map(|e| (*e).clone())
    }

    fn store(&self, fresh: Expiring<T>) {
        self.current.store(Some(Arc::new(fresh)));
        self.rejected.store(0, Ordering::Release);
        self.last_error.store(None);
        self.version.send_modify(|v| *v += 1);
    }

    fn fail(&self, error: FetchError) {
        self.last_error.store(Some(Arc::new(error)));
        self.version.send_modify(|v| *v += 1);
    }
}

async fn refresh_loop<T: Send + Sync + 'static>(
    this: Weak<Refreshing<T>>,
    force: Arc<Notify>,
    fetcher: impl Fetch<T>,
    policy: Policy,
    observe: impl Observe,
) {
    let mut failures = 0u32;
    let mut next_at = tokio::time::Instant::now();
    let mut last_fetch: Option<tokio::time::Instant> = None;
    loop {
        // Sleep until the scheduled fetch, or until a wake-up that still
        // calls for a fetch. Stale wake-ups (a renewal already satisfied, a
        // stored permit) go back to sleep.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_at) => break,
                () = force.notified() => {
                    let Some(this) = this.upgrade() else { return };
                    let now = tokio::time::Instant::now();
                    if this.retry_requested.swap(false, Ordering::AcqRel) {
                        failures = 0;
                        break;
                    }
                    // While failing, the backoff decides: 401s cannot hammer IAM.
                    if failures > 0 || !this.rejection_pending() {
                        continue;
                    }
                    // Rate-limited, so a misbehaving upstream cannot either.
                    let earliest = last_fetch.map_or(now, |t| t + policy.forced_min_interval);
                    next_at = next_at.min(earliest.max(now));
                    if next_at <= now {
                        break;
                    }
                }
            }
        }
        let outcome = fetcher.fetch().await;
        last_fetch = Some(tokio::time::Instant::now());
        let Some(this) = this.upgrade() else { return };
        let now = (this.clock)();
        // A credential that is (nearly) expired on arrival is a failure, not a
        // reason to fetch again every second: the clocks disagree.
        let outcome = outcome.and_then(|fresh| {
            let floor = chrono::Duration::from_std(policy.min_delay).unwrap_or_default();
            if fresh.expires_at <= now + floor {
                Err(FetchError {
                    message: format!(
                        "received a credential that expires at {}, which is not in the future (is this machine's clock right? it says {})",
                        fresh.expires_at.to_rfc3339(),
                        now.to_rfc3339()
                    ),
                    permanent: false,
                })
            } else {
                Ok(fresh)
            }
        });
        let delay = match outcome {
            Ok(fresh) => {
                failures = 0;
                observe.fetched(fresh.expires_at);
                let delay = policy.refresh_delay(now, fresh.expires_at);
                tracing::info!(
                    credentials = %this.label,
                    expires_at = %fresh.expires_at.to_rfc3339(),
                    "credential refreshed; next refresh in {}",
                    humantime::format_duration(Duration::from_secs(delay.as_secs()))
                );
                this.store(fresh);
                delay
            }
            Err(error) => {
                failures += 1;
                observe.failed(&error);
                let delay = jitter(policy.retry_delay(failures, error.permanent));
                let still_valid = this.current().map(|c| c.expires_at.to_rfc3339());
                tracing::warn!(
                    credentials = %this.label,
                    failures,
                    retry_in_ms = delay.as_millis() as u64,
                    current_valid_until = still_valid.as_deref().unwrap_or("none"),
                    "credential refresh failed: {}",
                    error.message
                );
                this.fail(error);
                delay
            }
        };
        next_at = tokio::time::Instant::now() + delay;
    }
}

#[cfg(test)]
mod tests;
