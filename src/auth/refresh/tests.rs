//! The refresh task against a scripted fetcher, in paused Tokio time: the
//! wall clock the credentials expire by is derived from Tokio's clock, so
//! `tokio::time::advance` moves both.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

const T0: &str = "2026-01-01T00:00:00Z";

/// A wall clock that follows Tokio's (paused) clock.
fn tokio_clock() -> Clock {
    let base_instant = tokio::time::Instant::now();
    let base = DateTime::parse_from_rfc3339(T0).unwrap().to_utc();
    Arc::new(move || base + (tokio::time::Instant::now() - base_instant))
}

type Script = Arc<dyn Fn(usize) -> Result<Duration, FetchError> + Send + Sync>;

/// Fetch number n (0-based) yields a credential valid for `script(n)`, or its error.
struct Scripted {
    calls: Arc<AtomicUsize>,
    script: Script,
    clock: Clock,
    gate: Option<Arc<Notify>>,
}

impl Fetch<usize> for Scripted {
    fn fetch(&self) -> BoxFuture<'_, Result<Expiring<usize>, FetchError>> {
        Box::pin(async move {
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let lifetime = (self.script)(n)?;
            Ok(Expiring {
                value: n,
                expires_at: (self.clock)() + chrono::Duration::from_std(lifetime).unwrap(),
            })
        })
    }
}

fn transient(msg: &str) -> FetchError {
    FetchError {
        message: msg.into(),
        permanent: false,
    }
}

fn start(
    script: Script,
    gate: Option<Arc<Notify>>,
) -> (Arc<Refreshing<usize>>, Arc<AtomicUsize>, Clock) {
    let clock = tokio_clock();
    let calls = Arc::new(AtomicUsize::new(0));
    let fetcher = Scripted {
        calls: calls.clone(),
        script,
        clock: clock.clone(),
        gate,
    };
    let r = Refreshing::start(
        "credentials.test",
        fetcher,
        Policy::with_margin(Duration::from_secs(10)),
        clock.clone(),
        (),
    );
    (r, calls, clock)
}

#[test]
fn refresh_delay_is_half_the_lifetime_and_at_least_the_margin_before_expiry() {
    let p = Policy::with_margin(Duration::from_secs(300));
    let now = DateTime::parse_from_rfc3339(T0).unwrap().to_utc();
    let at = |secs: i64| now + chrono::Duration::seconds(secs);
    assert_eq!(
        p.refresh_delay(now, at(24 * 3600)),
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(
        p.refresh_delay(now, at(480)),
        Duration::from_secs(180),
        "8 min: 5 min before expiry"
    );
    assert_eq!(
        p.refresh_delay(now, at(120)),
        Duration::from_secs(60),
        "shorter than the margin: half"
    );
    assert_eq!(
        p.refresh_delay(now, at(1)),
        Duration::from_secs(1),
        "never sooner than min_delay"
    );
    assert_eq!(
        p.refresh_delay(now, at(-5)),
        Duration::from_secs(1),
        "already expired"
    );
}

#[test]
fn retries_back_off_exponentially_slower_for_permanent_errors() {
    let p = Policy::with_margin(Duration::from_secs(300));
    let transient: Vec<u64> = (1..=8).map(|n| p.retry_delay(n, false).as_secs()).collect();
    assert_eq!(transient, [1, 2, 4, 8, 16, 32, 60, 60]);
    let permanent: Vec<u64> = (1..=7).map(|n| p.retry_delay(n, true).as_secs()).collect();
    assert_eq!(permanent, [30, 60, 120, 240, 480, 900, 900]);
}

#[tokio::test(start_paused = true)]
async fn refreshes_before_expiry_and_never_serves_an_expired_credential() {
    let (r, calls, clock) = start(Arc::new(|_| Ok(Duration::from_secs(100))), None);
    let first = r.get(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.value, 0);
    for _ in 0..490 {
        tokio::time::advance(Duration::from_millis(500)).await;
        let c = r.current().expect("a credential is always held");
        assert!(c.expires_at > clock(), "served an expired credential");
        assert!(
            c.expires_at - clock() >= chrono::Duration::seconds(49),
            "refreshed at half the lifetime"
        );
    }
    // 245 s of 100 s credentials refreshed every 50 s: fetched at 0, 50, 100, 150, 200 s.
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn any_number_of_waiters_on_a_cold_start_cause_one_fetch() {
    let gate = Arc::new(Notify::new());
    let (r, calls, _) = start(
        Arc::new(|_| Ok(Duration::from_secs(3600))),
        Some(gate.clone()),
    );
    let waiters: Vec<_> = (0..200)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.get(Duration::from_secs(30)).await.map(|c| c.value) })
        })
        .collect();
    tokio::task::yield_now().await;
    gate.notify_one();
    for w in waiters {
        assert_eq!(w.await.unwrap(), Ok(0));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_at_start_gives_a_bounded_wait_then_the_error_then_recovery() {
    // IAM is down for the first three attempts.
    let (r, calls, _) = start(
        Arc::new(|n| {
            if n < 3 {
                Err(transient("IAM answered HTTP 503"))
            } else {
                Ok(Duration::from_secs(3600))
            }
        }),
        None,
    );
    let started = tokio::time::Instant::now();
    let err = r.get(Duration::from_millis(500)).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        err,
        "[credentials.test] has no valid credential: IAM answered HTTP 503"
    );
    // Retries after ~1 s, ~2 s, ~4 s (±20%): recovered well within 10 s.
    let c = r.get(Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.value, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(r.last_error().is_none());
}

#[tokio::test(start_paused = true)]
async fn an_outage_during_refresh_keeps_the_old_credential_until_it_expires() {
    let (r, _, clock) = start(
        Arc::new(|n| {
            if n == 0 {
                Ok(Duration::from_secs(100))
            } else {
                Err(transient("connection refused"))
            }
        }),
        None,
    );
    let first = r.get(Duration::from_secs(1)).await.unwrap();
    // From the refresh at 50 s until expiry at 100 s every fetch fails; requests
    // keep getting the first credential meanwhile.
    while clock() < first.expires_at - chrono::Duration::milliseconds(500) {
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(r.current().map(|c| c.value), Some(0));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        r.current().is_none(),
        "an expired credential is never served"
    );
    assert_eq!(
        r.get(Duration::from_millis(10)).await.unwrap_err(),
        "[credentials.test] has no valid credential: connection refused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrong_password_is_retried_slowly() {
    let (r, calls, _) = start(
        Arc::new(|_| {
            Err(FetchError {
                message: "wrong password for user alice".into(),
                permanent: true,
            })
        }),
        None,
    );
    // Sleeping (not one `advance`) lets paused time step through each retry timer.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    // 30 s, 60 s, 120 s, 240 s, 480 s, then every 15 min (±20%): under ten calls in an hour.
    let n = calls.load(Ordering::SeqCst);
    assert!((4..=10).contains(&n), "{n} IAM calls in an hour");
    assert_eq!(
        r.last_error().unwrap().message,
        "wrong password for user alice"
    );
}

#[tokio::test(start_paused = true)]
async fn many_rejections_of_one_credential_cause_one_refresh() {
    let (r, calls, _) = start(Arc::new(|_| Ok(Duration::from_secs(3600))), None);
    let stale = r.get(Duration::from_secs(1)).await.unwrap();
    let renewals: Vec<_> = (0..50)
        .map(|_| {
            let (r, stale) = (r.clone(), stale.clone());
            tokio::spawn(async move {
                r.renew(&stale, Duration::from_secs(30))
                    .await
                    .map(|c| c.value)
            })
        })
        .collect();
    for t in renewals {
        assert_eq!(t.await.unwrap(), Ok(1));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Renewing an already-replaced credential costs nothing.
    assert_eq!(
        r.renew(&stale, Duration::from_secs(1))
            .await
            .map(|c| c.value),
        Ok(1)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_credential_stops_its_task() {
    let (r, calls, _) = start(Arc::new(|_| Ok(Duration::from_secs(10))), None);
    r.get(Duration::from_secs(1)).await.unwrap();
    drop(r);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn rejections_cause_one_refresh_even_after_the_rate_limit_has_passed() {
    let (r, calls, _) = start(Arc::new(|_| Ok(Duration::from_secs(3600))), None);
    let stale = r.get(Duration::from_secs(1)).await.unwrap();
    let renewals: Vec<_> = (0..20)
        .map(|_| {
            let (r, stale) = (r.clone(), stale.clone());
            tokio::spawn(async move {
                r.renew(&stale, Duration::from_secs(30))
                    .await
                    .map(|c| c.value)
            })
        })
        .collect();
    for t in renewals {
        assert_eq!(t.await.unwrap(), Ok(1));
    }
    // No stored wake-up makes a second, unasked-for fetch later.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn rejections_while_iam_refuses_do_not_bypass_the_backoff() {
    // The token still looks valid, but its password was changed: every later
    // fetch is refused. A 401 per second must not become an IAM call per second.
    let (r, calls, _) = start(
        Arc::new(|n| {
            if n == 0 {
                Ok(Duration::from_secs(3600))
            } else {
                Err(FetchError {
                    message: "wrong password".into(),
                    permanent: true,
                })
            }
        }),
        None,
    );
    let stale = r.get(Duration::from_secs(1)).await.unwrap();
    let started = tokio::time::Instant::now();
    let first = r.renew(&stale, Duration::from_secs(10)).await;
    assert_eq!(
        first.unwrap_err(),
        "[credentials.test] has no valid credential: wrong password"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the failed renewal answers at once"
    );
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = tokio::time::Instant::now();
        assert!(r.renew(&stale, Duration::from_secs(10)).await.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(10),
            "no waiting while failing"
        );
        // A 401 on a request that cannot be replayed asks without waiting.
        r.request_renewal(&stale);
    }
    // The first fetch, one forced renewal, then the 30 s / 60 s backoff: four at most.
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 4, "{n} IAM calls in a minute of 401s");
}

#[tokio::test(start_paused = true)]
async fn a_credential_that_arrives_expired_is_a_failure_with_backoff() {
    let (r, calls, _) = start(Arc::new(|_| Ok(Duration::ZERO)), None);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // 1, 2, 4, 8, 16, 32 s (±20%): at most eight attempts in a minute, not sixty.
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 8, "{n} fetches in a minute");
    let err = r.last_error().unwrap().message;
    assert!(
        err.contains("is not in the future (is this machine's clock right?"),
        "{err}"
    );
    assert!(r.current().is_none());
}

#[tokio::test(start_paused = true)]
async fn retry_now_resets_a_permanent_backoff() {
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fixed.clone();
    let (r, calls, _) = start(
        Arc::new(move |_| {
            if f.load(Ordering::SeqCst) {
                Ok(Duration::from_secs(3600))
            } else {
                Err(FetchError {
                    message: "wrong password".into(),
                    permanent: true,
                })
            }
        }),
        None,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The operator fixes the password; the next attempt would be 30 s away.
    fixed.store(true, Ordering::SeqCst);
    r.retry_now();
    let c = r
        .get(Duration::from_secs(2))
        .await
        .expect("fetched at once");
    assert_eq!(c.value, 1);
}
