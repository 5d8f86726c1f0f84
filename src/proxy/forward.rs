//! From the rewritten request to the upstream's answer, attempt after
//! attempt (DESIGN §12). The body is read as far as it must be first (held
//! whole when it is small or signed, so it can be sent again); then the
//! pacing gate (a queued request is signed with a date from when it
//! leaves); then for each attempt: the target, a fresh credential, the send
//! (with the resends of the connection's ordinary life, which are no
//! attempts), 401 recovery, and the verdict: done, or tried again after
//! `Retry-After` or a jittered backoff, within the route's `timeout` and its
//! retry budget, on the same target (throttling) or the next (a connection
//! failure, a gateway 5xx). The last answer passes through unchanged when
//! every attempt failed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Response};
use tokio::time::Instant;

use super::observe::Exchange;
use super::send::{self, Failed};
use crate::auth::Provider;
use crate::auth::inject::{self, Head, Injection, Outgoing};
use crate::body::{Progress, RequestBody};
use crate::config::{Route, Upstream};
use crate::error::{ProxyBody, ProxyError};
use crate::gateway::Seen;
use crate::route::upstream_path_and_query;
use crate::state::State;
use crate::telemetry::RequestTrace;
use crate::traffic::health::Turn;
use crate::traffic::retry::{self, Reason};
use crate::traffic::{RouteTraffic, Target};

/// Where the request goes besides the route's own upstream: the path after
/// the prefix and the query, to put under each target's base path.
pub struct Rest<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// The upstream URL of `rest` on `upstream`.
pub fn target_uri(upstream: &Upstream, rest: &Rest<'_>) -> Result<http::Uri, ProxyError> {
    http::Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(upstream_path_and_query(
            &upstream.base_path,
            rest.path,
            rest.query,
        ))
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))
}

/// Sends the request until it is answered or no attempt is left, within
/// the route's `timeout` (the gateway's 40 s) until the response head.
/// When the deadline passes while the client's body is still awaited, the
/// client is to blame (408); otherwise the upstream (504).
pub async fn forward(
    state: &State,
    route: &Route,
    outgoing: Outgoing,
    rest: Rest<'_>,
    body: RequestBody,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    let deadline = Instant::now() + route.timeout;
    let progress: Arc<Progress> = body.progress();
    let traffic = state
        .traffic
        .get(&route.prefix)
        .ok_or(ProxyError::Internal)?
        .clone();
    traffic.budget.deposit(Instant::now());
    let attempts = Attempts {
        state,
        route,
        traffic: &traffic,
        rest,
        deadline,
        progress: &progress,
    };
    match tokio::time::timeout_at(deadline, attempts.run(outgoing, body, exchange)).await {
        Ok(result) => result,
        Err(_elapsed) if progress.waiting_on_client() => {
            Err(ProxyError::RequestTimeout(route.timeout))
        }
        Err(_elapsed) => Err(ProxyError::UpstreamTimeout(route.timeout)),
    }
}

struct Attempts<'a> {
    state: &'a State,
    route: &'a Route,
    traffic: &'a RouteTraffic,
    rest: Rest<'a>,
    deadline: Instant,
    progress: &'a Progress,
}

/// One attempt's result: the answer (and what the gateway said in it), or
/// no answer.
type Attempt = Result<(Response<ProxyBody>, Seen), Failed>;

impl Attempts<'_> {
    fn provider(&self, target: &Target) -> Option<&Provider> {
        let name = target.credentials.as_ref()?;
        self.state.providers.get(name)
    }

    fn injection(&self) -> Injection<'_> {
        Injection {
            route: self.route,
            deadline: self.deadline,
            // Each attempt is signed anew, with the time it leaves.
            now: (self.state.clock)(),
            metrics: &self.state.metrics,
            budget: &self.state.budget,
            buffer_wait: self.state.config.server.buffer_wait,
        }
    }

    async fn run(
        &self,
        mut outgoing: Outgoing,
        body: RequestBody,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let traffic = self.traffic;
        // Read as much of the body as must be read before the first attempt:
        // a waiting request then holds its connection and this, nothing more.
        let signs = traffic
            .targets
            .iter()
            .any(|t| matches!(self.provider(t), Some(p) if p.signs()));
        let mut payload = inject::prepare(signs, &mut outgoing, body, &self.injection()).await?;
        // The pacing gate, before any credential: a queued request is signed when it leaves.
        exchange.hold(self.pace().await?);
        let idempotent = super::resend::is_idempotent(&outgoing.method);
        let trace = exchange.trace().cloned();
        let (mut from, mut attempt) = (0, 1u32);
        loop {
            // The target: from `from` on, skipping the ejected ones.
            let (i, turn) = traffic.pick(from, Instant::now());
            let target = &traffic.targets[i];
            exchange.attempted(&target.label);
            // A fresh credential, the send (with its resends), 401 recovery.
            let traced = trace.as_ref().map(|t| (t, attempt));
            let result = self
                .attempt(target, i, &outgoing, &mut payload, turn, traced)
                .await?;
            // What the answer says: the target's health, the route's pace, a retry.
            let Some(reason) = self.verdict(i, &result, idempotent) else {
                return done(result);
            };
            let Some((wait, next)) = self.again(reason, attempt, i, &result, &payload) else {
                return done(result);
            };
            drop(result);
            tokio::time::sleep(wait).await;
            attempt += 1;
            from = next;
        }
    }

    /// Waits for the route's rate and concurrency (counted and measured).
    async fn pace(&self) -> Result<crate::traffic::pace::Turn, ProxyError> {
        let (metrics, route) = (&self.state.metrics, &self.route.prefix);
        let labels = || crate::metrics::RouteLabels {
            route: route.clone(),
        };
        let turn = self.traffic.pacer.admit().await.map_err(|limited| {
            metrics.rate_limited.get_or_create(&labels()).inc();
            ProxyError::RateLimited {
                route: route.clone(),
                limit: limited.limit,
                waited: limited.waited,
                retry_after: limited.retry_after,
            }
        })?;
        if turn.paced {
            metrics.queue.get_or_create(&labels()).observe(turn.waited);
        }
        Ok(turn)
    }

    /// Why the attempt on target `i` may be tried again, if it may; its
    /// outcome goes to the target's health, and throttling slows the route.
    fn verdict(&self, i: usize, result: &Attempt, idempotent: bool) -> Option<Reason> {
        let reason = match result {
            Ok((response, seen)) => {
                retry::classify(response.status(), seen.code.as_deref(), idempotent)
            }
            Err(failed) if failed.connect => Some(Reason::Connect),
            Err(_) => None,
        };
        let (route, metrics) = (&self.route.prefix, &self.state.metrics);
        let target_failed = matches!(reason, Some(Reason::Connect | Reason::Gateway5xx));
        let why = reason.map_or("", Reason::as_str);
        self.traffic
            .outcome(i, target_failed, Instant::now(), route, metrics, why);
        if reason == Some(Reason::Throttled)
            && let Some(rate) = self.traffic.pacer.throttled(Instant::now())
        {
            tracing::warn!(route = %route, "the gateway throttled; the route slows down to {rate:.1} requests a second, and climbs back a tenth a second while not throttled");
        }
        reason
    }

    /// Whether attempt number `attempt` (on target `i`, failed for
    /// `reason`) is followed by another, and after how long on which
    /// target: not when no try is left, the body cannot be sent again, the
    /// wait would pass the deadline or the retry budget is spent.
    fn again(
        &self,
        reason: Reason,
        attempt: u32,
        i: usize,
        result: &Attempt,
        payload: &inject::Payload,
    ) -> Option<(Duration, usize)> {
        let (route, traffic) = (self.route, self.traffic);
        let failover = reason.fails_over(route.fallback_on_throttle);
        // A failover gives each target one try, whatever `attempts` says.
        let tries_left = attempt < route.retry.attempts
            || (failover && (attempt as usize) < traffic.targets.len());
        if !tries_left || !payload.resendable() {
            return None;
        }
        let wait = match result {
            Ok((response, _)) => retry::retry_after(response.headers(), SystemTime::now()),
            Err(_) => None,
        }
        .unwrap_or_else(|| retry::backoff(&route.retry, attempt, retry::jitter()));
        // A wait that would pass the deadline is not started.
        if Instant::now() + wait >= self.deadline {
            return None;
        }
        let why = reason.as_str();
        if !traffic.budget.withdraw(Instant::now()) {
            tracing::warn!(route = %route.prefix, reason = why, "not retried: the route's retry budget is spent (20% of its requests over 10 s, plus 10 a second)");
            return None;
        }
        self.state.metrics.retry(&route.prefix, why);
        let next = if failover { i + 1 } else { i };
        tracing::info!(
            route = %route.prefix,
            reason = why,
            attempt = attempt + 1,
            of = route.retry.attempts,
            upstream = %traffic.targets[next % traffic.targets.len()].label,
            "trying again in {}: {}",
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)),
            describe(result)
        );
        Some((wait, next))
    }

    /// One attempt on `target`: a fresh credential, the send, 401 recovery.
    /// An error here (no credential, a bad request) ends the request.
    async fn attempt(
        &self,
        target: &Target,
        index: usize,
        template: &Outgoing,
        payload: &mut inject::Payload,
        turn: Turn,
        trace: Option<(&RequestTrace, u32)>,
    ) -> Result<Attempt, ProxyError> {
        let provider = self.provider(target);
        let mut head = Head::new(template);
        if index > 0 {
            let host = HeaderValue::from_str(target.upstream.authority.as_str())
                .map_err(|_| ProxyError::Internal)?;
            head.target = Some((target_uri(&target.upstream, &self.rest)?, host));
        }
        // Traced: this attempt's span, whose `traceparent` goes upstream (not signed).
        let (method, uri) = (template.method.as_str(), head.target.as_ref());
        let uri = uri.map_or(&template.uri, |(uri, _)| uri);
        let span = trace.map(|(t, n)| t.attempt(n, method, uri, &mut head.added));
        let waiting = trace.map(|(t, _)| t.credential(target.credentials.as_deref()));
        let cx = self.injection();
        let injected = inject::inject(provider, head, payload, &cx).await;
        drop(waiting);
        let (request, recovery) = match injected {
            Ok(x) => x,
            Err(e) => {
                if turn == Turn::Probe {
                    target.health.abandoned();
                }
                return Err(e);
            }
        };
        let request = send::chunked_if_unknown(request);
        let once = send::Once {
            state: self.state,
            route: self.route,
            target,
            provider,
            body: self.progress,
        };
        let sent = once
            .send(request, recovery.replay(), recovery.signed())
            .await;
        let (response, seen) = match sent {
            Ok(answer) => answer,
            Err(failed) => {
                if let Some(span) = &span {
                    span.answered(0);
                }
                return Ok(Err(failed));
            }
        };
        let answer = match recovery
            .after(response.status(), seen.error.as_ref(), &cx)
            .await
        {
            // Rare (a 401 to replay): boxed, so every attempt does not carry
            // a second send in its state.
            Some((again, request)) => Box::pin(once.send(request, Some(&again), None)).await,
            None => Ok((response, seen)),
        };
        if let Some(span) = &span {
            span.answered(answer.as_ref().map_or(0, |(r, _)| r.status().as_u16()));
        }
        Ok(answer)
    }
}

/// The attempt's answer, or its error, for the client.
fn done(result: Attempt) -> Result<Response<ProxyBody>, ProxyError> {
    result.map(|(r, _)| r).map_err(|f| f.error)
}

/// What a failed attempt got, for the retry's log line.
fn describe(result: &Attempt) -> String {
    match result {
        Ok((response, seen)) => match &seen.code {
            Some(code) => format!("{} {code}", response.status().as_u16()),
            None => response.status().as_u16().to_string(),
        },
        Err(failed) => failed.error.to_string(),
    }
}
