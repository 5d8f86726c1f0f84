//! The status page (DESIGN §13): `GET /status.json` and `GET /` on the
//! admin listener, the same data: each route's targets with their health,
//! pacing and retries; each credential's source, state, AK's first 4
//! characters, time to expiry and last error; the signature breakers; the
//! measured clock skew; the last 20 gateway errors with their hints and
//! request ids; the build. Nothing secret: no key, token, password or app
//! code reaches either (a test searches both). The HTML is one page of the
//! binary's own, no script, no external asset, under a strict
//! Content-Security-Policy, refreshing itself every 10 s.

use std::fmt::Write as _;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::auth::Provider;
use crate::state::Shared;

/// The page's Content-Security-Policy: nothing loads, nothing runs; its
/// one inline style block is allowed.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How often the page reloads itself.
const REFRESH_SECONDS: u32 = 10;

/// The status as JSON.
pub fn json(shared: &Shared, draining: bool) -> Value {
    let state = shared.state.load();
    let now = Instant::now();
    let routes: Vec<Value> = state
        .config
        .routes
        .iter()
        .map(|r| {
            let traffic = state.traffic.get(&r.prefix);
            let targets: Vec<Value> = traffic
                .map(|t| {
                    t.targets
                        .iter()
                        .map(|t| {
                            json!({
                                "upstream": &*t.label,
                                "url": t.upstream.url(),
                                "credentials": t.credentials,
                                "up": t.health.is_up(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "prefix": r.prefix,
                "targets": targets,
                "retry_attempts": r.retry.attempts,
                "rate_per_second": r.pacing.rate,
                "current_rate_per_second": traffic.and_then(|t| t.pacer.current_rate(now)),
                "concurrency": r.pacing.concurrency,
                "queue_timeout_seconds": r.pacing.queue_timeout.as_secs_f64(),
                "timeout_seconds": r.timeout.as_secs_f64(),
            })
        })
        .collect();
    let mut credentials: Vec<Value> = state
        .providers
        .iter()
        .map(|(name, p)| {
            let mut c = credential(name, p);
            // Where it comes from, as configured (or as `auto` chose).
            if let Some(spec) = state.config.credentials.get(name) {
                c["source"] = spec.describe().into();
            }
            c
        })
        .collect();
    credentials.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let errors: Vec<Value> = shared
        .metrics
        .recent_gateway_errors
        .lock()
        .map(|e| e.iter().rev().map(|e| json!(e)).collect())
        .unwrap_or_default();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "ready": !draining && state.readiness().is_ok(),
        "draining": draining,
        "not_ready": state.readiness().err().unwrap_or_default(),
        "clock_skew_seconds": state.skew.offset().map(|d| d.num_milliseconds() as f64 / 1000.0),
        "routes": routes,
        "credentials": credentials,
        "gateway_errors": errors,
    })
}

/// One credential's public facts.
fn credential(name: &str, p: &Provider) -> Value {
    let now = Utc::now();
    let prefix = |ak: &str| ak.chars().take(4).collect::<String>();
    let (kind, source, ak, expires, error, breaker) = match p {
        Provider::AkSk { keys, breaker } => {
            let k = keys.current();
            (
                "aksk",
                k.origin.clone(),
                Some(prefix(&k.key.access_key)),
                None,
                None,
                Some(breaker.is_open()),
            )
        }
        Provider::Temporary { creds, breaker, .. } => {
            let c = creds.current();
            (
                "aksk (temporary)",
                c.as_ref()
                    .map_or_else(String::new, |c| c.value.origin.clone()),
                c.as_ref().map(|c| prefix(&c.value.key.access_key)),
                c.as_ref().map(|c| c.expires_at),
                creds.last_error().map(|e| e.message),
                Some(breaker.is_open()),
            )
        }
        Provider::Token { token, .. } => {
            let c = token.current();
            (
                "token",
                format!("IAM ({})", token.label()),
                None,
                c.as_ref().map(|c| c.expires_at),
                token.last_error().map(|e| e.message),
                None,
            )
        }
        Provider::ApiKey(key) => (
            "apikey",
            format!("header {}", key.current().header),
            None,
            None,
            None,
            None,
        ),
    };
    let state = match (p.is_ready(), &error) {
        (true, None) => "ready",
        (true, Some(_)) => "ready (the last refresh failed)",
        (false, Some(_)) => "failing",
        (false, None) => "fetching",
    };
    json!({
        "name": name,
        "kind": kind,
        "source": source,
        "state": state,
        "ak_prefix": ak,
        "expires_at": expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "expires_in_seconds": expires.map(|t| (t - now).num_seconds()),
        "last_error": error,
        "breaker_open": breaker,
    })
}

/// `text` for HTML: the five characters that matter, escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as page text: strings bare, nothing as a dash.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => esc(s),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        other => esc(&other.to_string()),
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1rem;max-width:70rem;color:#111;background:#fff}\
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:anywhere}\
.ok{color:#065f16}.bad{color:#a30000;font-weight:bold}.muted{color:#666}\
@media (max-width:40rem){table,tr,td,th{display:block}th{display:none}td{border:0;padding:.1rem 0}tr{border-bottom:1px solid #ddd;padding:.4rem 0}}";

/// The status as one HTML page.
pub fn html(status: &Value) -> String {
    let mut p = String::with_capacity(8 * 1024);
    let ready = status["ready"].as_bool() == Some(true);
    let _ = write!(
        p,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>modelarts-proxy status</title><style>{STYLE}</style></head><body>\
         <h1>modelarts-proxy {}</h1><p id=\"summary\">{} <span class=\"muted\">at {} · clock skew {}</span></p>",
        show(&status["version"]),
        if ready {
            "<span class=\"ok\">ready</span>".to_owned()
        } else if status["draining"].as_bool() == Some(true) {
            "<span class=\"bad\">draining</span>".to_owned()
        } else {
            format!(
                "<span class=\"bad\">not ready</span>: {}",
                status["not_ready"]
                    .as_array()
                    .map(|r| r.iter().map(show).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default()
            )
        },
        show(&status["now"]),
        match status["clock_skew_seconds"].as_f64() {
            Some(s) => format!("{s:+.1} s"),
            None => "not measured".to_owned(),
        },
    );
    routes_html(&mut p, status);
    credentials_html(&mut p, status);
    errors_html(&mut p, status);
    p.push_str("<p class=\"muted\">The same data: <a href=\"/status.json\">/status.json</a> · <a href=\"/metrics\">/metrics</a></p></body></html>\n");
    p
}

/// The routes table: targets with their health, retries, pacing.
fn routes_html(p: &mut String, status: &Value) {
    p.push_str("<h2>Routes</h2><table id=\"routes\"><tr><th>prefix</th><th>targets</th><th>retries</th><th>pacing</th></tr>");
    for r in status["routes"].as_array().into_iter().flatten() {
        let targets: Vec<String> = r["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let up = t["up"].as_bool() == Some(true);
                format!(
                    "<span class=\"{}\">{}</span> {} <span class=\"muted\">{}</span>",
                    if up { "ok" } else { "bad" },
                    if up { "up" } else { "ejected" },
                    show(&t["url"]),
                    show(&t["credentials"])
                )
            })
            .collect();
        let mut pacing = Vec::new();
        if !r["rate_per_second"].is_null() {
            pacing.push(format!("rate {}/s", show(&r["rate_per_second"])));
        }
        if let Some(now) = r["current_rate_per_second"].as_f64()
            && r["rate_per_second"].as_f64() != Some(now)
        {
            pacing.push(format!("<span class=\"bad\">slowed to {now:.1}/s</span>"));
        }
        if !r["concurrency"].is_null() {
            pacing.push(format!("concurrency {}", show(&r["concurrency"])));
        }
        let pacing = if pacing.is_empty() {
            "<span class=\"muted\">not paced</span>".to_owned()
        } else {
            format!(
                "{}, queue {} s",
                pacing.join(", "),
                show(&r["queue_timeout_seconds"])
            )
        };
        let _ = write!(
            p,
            "<tr><td>{}</td><td>{}</td><td>{} attempts</td><td>{pacing}</td></tr>",
            show(&r["prefix"]),
            targets.join("<br>"),
            show(&r["retry_attempts"]),
        );
    }
    p.push_str("</table>");
}

/// The credentials table: kind, source, state, AK, expiry, last error, breaker.
fn credentials_html(p: &mut String, status: &Value) {
    p.push_str("<h2>Credentials</h2><table id=\"credentials\"><tr><th>name</th><th>kind</th><th>source</th><th>state</th><th>AK</th><th>expires in</th><th>last error</th><th>breaker</th></tr>");
    for c in status["credentials"].as_array().into_iter().flatten() {
        let ok = c["state"].as_str() == Some("ready");
        let breaker = match c["breaker_open"].as_bool() {
            Some(true) => "<span class=\"bad\">open</span>",
            Some(false) => "closed",
            None => "—",
        };
        let _ = write!(
            p,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{breaker}</td></tr>",
            show(&c["name"]),
            show(&c["kind"]),
            show(&c["source"]),
            if ok { "ok" } else { "bad" },
            show(&c["state"]),
            match c["ak_prefix"].as_str() {
                Some(a) => format!("{}…", esc(a)),
                None => "—".to_owned(),
            },
            match c["expires_in_seconds"].as_i64() {
                Some(s) =>
                    humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64))
                        .to_string(),
                None => "—".to_owned(),
            },
            show(&c["last_error"]),
        );
    }
    p.push_str("</table>");
}

/// The last gateway errors, newest first.
fn errors_html(p: &mut String, status: &Value) {
    p.push_str("<h2>Last gateway errors</h2><table id=\"gateway-errors\"><tr><th>at</th><th>route</th><th>status</th><th>code</th><th>hint</th><th>request ids (ours, the gateway's)</th></tr>");
    let errors = status["gateway_errors"].as_array();
    if errors.is_none_or(|e| e.is_empty()) {
        p.push_str("<tr><td colspan=\"6\" class=\"muted\">none since the start</td></tr>");
    }
    for e in errors.into_iter().flatten() {
        let _ = write!(
            p,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{}<br>{}</td></tr>",
            show(&e["at"]),
            show(&e["route"]),
            show(&e["status"]),
            show(&e["code"]),
            show(&e["message"]),
            show(&e["hint"]),
            show(&e["request_id"]),
            show(&e["gateway_request_id"]),
        );
    }
    p.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_it_shows() {
        let status = json!({
            "version": "1<script>",
            "ready": false,
            "not_ready": ["<b>x</b>"],
            "routes": [{"prefix": "/\"a", "targets": [{"url": "https://x/<y>", "up": false}]}],
            "credentials": [],
            "gateway_errors": [{"message": "</td><script>alert(1)</script>"}],
        });
        let page = html(&status);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("ejected"));
    }
}
