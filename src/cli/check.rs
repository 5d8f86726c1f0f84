//! `modelarts-proxy check`: validates a config file and its credentials,
//! printing every problem with its key path; `--online` also fetches each
//! expiring credential and sends one request through each route.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use super::{
    ENV_CONFIG, EXIT_CONFIG, EXIT_USAGE, config_path, describe_auth, load_file, print_problems,
};
use crate::auth::Provider;
use crate::auth::refresh::{Expiring, Refreshing};
use crate::config::walk::Problem;
use crate::error::{ERROR_HEADER, chain};
use crate::server::{Daemon, Once};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Config file to check (TOML); else MODELARTS_PROXY_CONFIG.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also send one signed request through each route and report the upstream's answer.
    #[arg(long)]
    online: bool,
}

pub(super) async fn check(args: CheckArgs) -> u8 {
    let Some(path) = config_path(&args.config) else {
        eprintln!("error: check needs a config file: -c FILE (or {ENV_CONFIG})");
        return EXIT_USAGE;
    };
    let origin = path.display().to_string();
    let validated = match load_file(&path) {
        Ok(v) => v,
        Err(problems) => {
            print_problems(&problems, &origin);
            return EXIT_CONFIG;
        }
    };
    for w in &validated.warnings {
        eprintln!("warning: {w}");
    }
    let config = validated.config;
    let summary: Vec<String> = config
        .routes
        .iter()
        .map(|r| {
            let auth = describe_auth(r, &config);
            let mut line = format!("  route {} -> {} ({auth})", r.prefix, r.upstream.url());
            for f in &r.fallbacks {
                line.push_str(&format!(", then {}", f.upstream.url()));
            }
            line.push_str(&traffic_summary(r));
            line
        })
        .collect();
    // Offline: the TLS settings are checked, nothing is fetched.
    if let Err(message) = crate::client::build(&config.upstream_tls, &config.egress) {
        print_problems(
            &[Problem {
                path: "upstream_tls.ca_file".to_owned(),
                message,
            }],
            &origin,
        );
        return EXIT_CONFIG;
    }
    println!("{origin}: ok");
    for line in &summary {
        println!("{line}");
    }
    println!("  egress: {}", config.egress.describe());
    match &config.telemetry {
        Some(t) => println!(
            "  traces: to {} (sample ratio {}, service {})",
            t.traces_url, t.sample_ratio, t.service_name
        ),
        None => {
            println!("  traces: off (no [telemetry] otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)")
        }
    }
    if args.online {
        return match State::build(config) {
            Ok(state) => check_online(state).await,
            Err(problems) => {
                print_problems(&problems, &origin);
                EXIT_CONFIG
            }
        };
    }
    0
}

/// Fetches each expiring credential, then sends one GET through each route
/// (via an in-process proxy on loopback) and reports what the upstream
/// answered. A gateway authentication error (APIG.0301 …), an unreachable
/// upstream or a credential that cannot be fetched fails the check.
async fn check_online(mut state: State) -> u8 {
    let failed_credentials = fetch_expiring(&state).await;
    let mut failed = failed_credentials.len();
    state.config.server.listen = vec![crate::config::Listen::Tcp(SocketAddr::from((
        [127, 0, 0, 1],
        0,
    )))];
    state.config.server.admin_listen = None;
    // Routes whose credential failed above are not probed (they would only wait and 503).
    let mut prefixes: Vec<String> = Vec::new();
    for r in &state.config.routes {
        match r
            .credentials
            .as_ref()
            .filter(|c| failed_credentials.contains(c))
        {
            Some(c) => eprintln!(
                "online: route {}: skipped, [credentials.{c}] failed",
                r.prefix
            ),
            None => prefixes.push(r.prefix.clone()),
        }
    }
    let daemon = match Daemon::bind(state).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let addr = daemon.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(Once::new(async {
        let _ = stopped.await;
    })));
    let client = super::local_client();
    for prefix in prefixes {
        if !probe_route(&client, addr, &prefix).await {
            failed += 1;
        }
    }
    let _ = stop.send(());
    let _ = task.await;
    if failed > 0 { 1 } else { 0 }
}

/// Waits for the first fetch of each IAM token and temporary key (each
/// within its `max_wait`) and reports it. Returns the names that failed.
async fn fetch_expiring(state: &State) -> Vec<String> {
    let mut failed = Vec::new();
    let mut names: Vec<&String> = state.providers.keys().collect();
    names.sort();
    for name in names {
        let result = match &state.providers[name] {
            Provider::Token {
                token, max_wait, ..
            } => first_fetch(token, *max_wait)
                .await
                .map(|t| format!("IAM token valid until {}", t.expires_at.to_rfc3339())),
            // The AK's first 4 characters say which key without giving it away.
            Provider::Temporary {
                creds, max_wait, ..
            } => first_fetch(creds, *max_wait).await.map(|c| {
                format!(
                    "temporary AK/SK {}… valid until {}",
                    c.value.key.access_key.chars().take(4).collect::<String>(),
                    c.expires_at.to_rfc3339()
                )
            }),
            _ => continue,
        };
        let source = state
            .config
            .credentials
            .get(name)
            .map(|c| format!(" (from {})", c.describe()))
            .unwrap_or_default();
        let result = result.map(|ok| format!("{ok}{source}"));
        match result {
            Ok(ok) => println!("online: [credentials.{name}]: ok, {ok}"),
            Err(e) => {
                eprintln!("online: [credentials.{name}]: FAILED: {e}");
                failed.push(name.clone());
            }
        }
    }
    failed
}

/// The credential as soon as the first fetch has finished, good or bad.
pub(super) async fn first_fetch<T: Send + Sync + 'static>(
    r: &Refreshing<T>,
    wait: Duration,
) -> Result<Arc<Expiring<T>>, String> {
    let mut changes = r.subscribe();
    if r.current().is_none() && r.last_error().is_none() {
        let _ = tokio::time::timeout(wait, changes.changed()).await;
    }
    r.current().ok_or_else(|| match r.last_error() {
        Some(e) => e.message,
        None => format!("no answer within {}", humantime::format_duration(wait)),
    })
}

/// One GET through the proxy for `prefix`; true if the upstream accepted it.
async fn probe_route(client: &crate::client::HttpClient, addr: SocketAddr, prefix: &str) -> bool {
    let uri: http::Uri = match format!("http://{addr}{prefix}").parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("online: route {prefix}: {e}");
            return false;
        }
    };
    let req = http::Request::get(uri)
        .body(crate::error::empty())
        .expect("a valid request");
    let resp = match client.request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("online: route {prefix}: {}", chain(&e));
            return false;
        }
    };
    let status = resp.status();
    let from_proxy = resp.headers().get(ERROR_HEADER).is_some();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let gateway_auth_error = text.contains("\"APIG.03") || text.contains("\"APIGW.03");
    if from_proxy || gateway_auth_error {
        eprintln!(
            "online: route {prefix}: FAILED, HTTP {status}: {}",
            text.trim()
        );
        false
    } else {
        println!(
            "online: route {prefix}: ok, the upstream answered HTTP {status} (credentials accepted)"
        );
        true
    }
}

/// `; retries 3, rate 20/s, concurrency 16`: what the route's traffic keys say.
fn traffic_summary(r: &crate::config::Route) -> String {
    let mut parts = vec![match r.retry.attempts {
        1 => "no retries".to_owned(),
        n => format!("{n} attempts"),
    }];
    if let Some(rate) = r.pacing.rate {
        parts.push(format!("rate {rate}/s (burst {})", r.pacing.burst));
    }
    if let Some(n) = r.pacing.concurrency {
        parts.push(format!("concurrency {n}"));
    }
    format!("; {}", parts.join(", "))
}
