//! `modelarts-proxy run`: the daemon, from a config file or from flags
//! describing one route; SIGHUP reloads, SIGTERM / Ctrl-C drains.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;
use toml::{Table, Value};

use super::env::{Auth, env_credentials, flag_problem};
use super::{EXIT_CONFIG, EXIT_USAGE, config_path, load_file, log_startup, print_problems};
use crate::config;
use crate::credentials::{Sources, System};
use crate::server::{Daemon, OsSignals};
use crate::state::{Shared, State};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Config file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Upstream URL for a single route "/" (instead of a config file).
    #[arg(long, conflicts_with = "config", value_name = "URL")]
    upstream: Option<String>,
    /// Address to listen on (repeatable).
    #[arg(long, conflicts_with = "config", value_name = "ADDR")]
    listen: Vec<String>,
    /// How to authenticate: aksk (HUAWEICLOUD_SDK_AK / _SK, or ~/.huaweicloud/credentials),
    /// token (HUAWEICLOUD_IAM_USER / _PASSWORD / _DOMAIN / _PROJECT, HUAWEICLOUD_SDK_REGION),
    /// apikey (APIG_APP_CODE) or none.
    #[arg(long, value_enum, conflicts_with = "config")]
    auth: Option<Auth>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, conflicts_with = "config", value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Allow listening on non-loopback addresses.
    #[arg(long, conflicts_with = "config")]
    allow_remote: bool,
    /// Reload the config file when it changes (as SIGHUP does).
    #[arg(long, requires = "config")]
    watch: bool,
}

/// Without a config file, `run`'s flags may also come from the environment
/// (a container's only input): each is read when its flag is not given.
pub const ENV_UPSTREAM: &str = "MODELARTS_PROXY_UPSTREAM";
/// Comma-separated addresses, like repeated `--listen`.
pub const ENV_LISTEN: &str = "MODELARTS_PROXY_LISTEN";
/// `aksk`, `token`, `apikey` or `none`, like `--auth`.
pub const ENV_AUTH: &str = "MODELARTS_PROXY_AUTH";
pub const ENV_ADMIN_LISTEN: &str = "MODELARTS_PROXY_ADMIN_LISTEN";
/// `true` or `1`, like `--allow-remote`.
pub const ENV_ALLOW_REMOTE: &str = "MODELARTS_PROXY_ALLOW_REMOTE";

/// The one-route settings of `run` without a config file: the flags, each
/// falling back to its environment variable.
#[derive(Debug)]
struct OneRoute {
    upstream: String,
    listen: Vec<String>,
    auth: Auth,
    admin_listen: Option<String>,
    allow_remote: bool,
}

impl OneRoute {
    fn from(args: &RunArgs, sources: &dyn Sources) -> Result<Option<OneRoute>, String> {
        let env = |name: &str| sources.env(name).filter(|v| !v.trim().is_empty());
        let Some(upstream) = args.upstream.clone().or_else(|| env(ENV_UPSTREAM)) else {
            return Ok(None);
        };
        let auth = match (&args.auth, env(ENV_AUTH)) {
            (Some(a), _) => *a,
            (None, Some(text)) => Auth::from_str(text.trim(), true)
                .map_err(|_| format!("{ENV_AUTH}={text:?}: must be aksk, token, apikey or none"))?,
            (None, None) => Auth::Aksk,
        };
        let listen = if args.listen.is_empty() {
            env(ENV_LISTEN)
                .map(|v| v.split(',').map(|a| a.trim().to_owned()).collect())
                .unwrap_or_default()
        } else {
            args.listen.clone()
        };
        let allow_remote = args.allow_remote
            || env(ENV_ALLOW_REMOTE).is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes"));
        Ok(Some(OneRoute {
            upstream,
            listen,
            auth,
            admin_listen: args.admin_listen.clone().or_else(|| env(ENV_ADMIN_LISTEN)),
            allow_remote,
        }))
    }
}

/// How often `--watch` looks at the config file: a `stat` a second costs
/// nothing, and follows the symlink swaps of Kubernetes ConfigMaps.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The one-route config that `run --upstream …` describes, as TOML, so it
/// goes through exactly the same validation as a file.
fn flags_config(one: &OneRoute, sources: &dyn Sources) -> Table {
    let mut server = Table::new();
    if !one.listen.is_empty() {
        server.insert(
            "listen".into(),
            Value::Array(one.listen.iter().cloned().map(Value::String).collect()),
        );
    }
    if let Some(a) = &one.admin_listen {
        server.insert("admin_listen".into(), Value::String(a.clone()));
    }
    server.insert("allow_remote".into(), Value::Boolean(one.allow_remote));
    let mut route = Table::new();
    route.insert("prefix".into(), "/".into());
    route.insert("upstream".into(), one.upstream.as_str().into());
    let mut root = Table::new();
    if let Some(creds) = env_credentials(one.auth, sources) {
        route.insert("credentials".into(), "default".into());
        let mut all = Table::new();
        all.insert("default".into(), Value::Table(creds));
        root.insert("credentials".into(), Value::Table(all));
    }
    root.insert("server".into(), Value::Table(server));
    root.insert("route".into(), Value::Array(vec![Value::Table(route)]));
    root
}

pub(super) async fn run(args: RunArgs) -> u8 {
    // -c, then --upstream, then MODELARTS_PROXY_CONFIG, then MODELARTS_PROXY_UPSTREAM
    // (`-c` with `--upstream` is refused by clap).
    let config_file = match &args.upstream {
        Some(_) => None,
        None => config_path(&args.config),
    };
    let one = match config_file {
        Some(_) => None,
        None => match OneRoute::from(&args, &System) {
            Ok(one) => one,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
    };
    let (validated, origin) = match (&config_file, &one) {
        (Some(path), _) => (load_file(path), path.display().to_string()),
        (None, Some(one)) => (
            config::validate(&flags_config(one, &System), &System)
                .map_err(|ps| ps.into_iter().map(flag_problem).collect()),
            "the command line".to_owned(),
        ),
        (None, None) => {
            eprintln!(
                "error: run needs a config file (-c FILE) or an upstream (--upstream URL)\n\
                 try: modelarts-proxy run --upstream https://<id>.apig.<region>.huaweicloudapis.com/v1/infers/<service-id>\n\
                 or:  modelarts-proxy dev   (a local stand-in, no cloud account needed)"
            );
            return EXIT_USAGE;
        }
    };
    let validated = match validated {
        Ok(v) => v,
        Err(problems) => {
            print_problems(&problems, &origin);
            return EXIT_CONFIG;
        }
    };
    for w in &validated.warnings {
        tracing::warn!("config: {w}");
    }
    let state = match State::build(validated.config) {
        Ok(s) => s,
        Err(problems) => {
            print_problems(&problems, &origin);
            return EXIT_CONFIG;
        }
    };
    serve(state, config_file, args.watch).await
}

/// Binds, logs what is served, reloads on SIGHUP, drains on SIGTERM / Ctrl-C.
pub(super) async fn serve(state: State, config_path: Option<PathBuf>, watch: bool) -> u8 {
    // Registered before binding, so a SIGTERM during startup is not lost.
    let signals = OsSignals::new();
    let daemon = match Daemon::bind(state).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let workers = daemon.shared().state.load().config.server.worker_threads();
    let daemon = daemon.on_workers(workers);
    if let Some(path) = config_path {
        if watch {
            tokio::spawn(reload_on_change(daemon.shared(), path.clone()));
        }
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_on_sighup(daemon.shared(), path, hup));
            }
            Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}); reload with --watch"),
        }
    }
    log_startup(&daemon);
    tracing::info!(
        "serving on {workers} worker thread{}",
        if workers == 1 { "" } else { "s" }
    );
    daemon.run(signals).await;
    0
}

/// `--watch`: reloads when the file's contents change (read each tick: a
/// small file, and no trust in modification times).
async fn reload_on_change(shared: Arc<Shared>, path: PathBuf) {
    let look = |path: &Path| std::fs::read(path).ok();
    let mut seen = look(&path);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = look(&path);
        if now != seen {
            seen = now;
            tracing::info!("{} changed (--watch)", path.display());
            reload(&shared, &path);
        }
    }
}

/// Reloads on each SIGHUP; `hup` is registered before the daemon says it
/// is listening, so no SIGHUP (whose default action kills) is missed.
async fn reload_on_sighup(
    shared: Arc<Shared>,
    path: PathBuf,
    mut hup: tokio::signal::unix::Signal,
) {
    while hup.recv().await.is_some() {
        reload(&shared, &path);
    }
}

/// Builds the new state from `path` and swaps it in; on any error the old
/// state keeps serving and the reason is logged.
pub fn reload(shared: &Shared, path: &Path) -> bool {
    let outcome = load_file(path).and_then(|v| {
        for w in &v.warnings {
            tracing::warn!("config: {w}");
        }
        let old = shared.state.load();
        State::build_with(v.config, old.runtime(Arc::new(System)), Some(&old))
    });
    let result = match outcome {
        Ok(state) => {
            let old = shared.state.load();
            if old.config.server.listen != state.config.server.listen
                || old.config.server.admin_listen != state.config.server.admin_listen
            {
                tracing::warn!(
                    "reload: listen addresses change only on restart; keeping the current ones"
                );
            }
            if old.config.server.workers != state.config.server.workers {
                tracing::warn!("reload: server.workers changes only on restart");
            }
            if old.config.server.max_connections != state.config.server.max_connections {
                tracing::warn!(
                    "reload: server.max_connections changes only on restart; keeping {}",
                    old.config.server.max_connections
                );
            }
            shared.state.store(Arc::new(state));
            tracing::info!("reloaded {}", path.display());
            "ok"
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!("reload rejected: {p}");
            }
            tracing::error!(
                "reload of {} rejected; the previous configuration keeps serving",
                path.display()
            );
            "error"
        }
    };
    shared
        .metrics
        .reloads
        .get_or_create(&crate::metrics::ResultLabels {
            result: result.to_owned(),
        })
        .inc();
    result == "ok"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::credentials::{self, fake::FakeSources};
    use clap::Parser;

    fn env() -> FakeSources {
        FakeSources::default()
            .with_env(credentials::ENV_AK, "AKCLI")
            .with_env(credentials::ENV_SK, "sk-cli-secret")
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let args = match Cli::try_parse_from([
            "m",
            "run",
            "--upstream",
            "ftp://x",
            "--listen",
            "0.0.0.0:80",
        ])
        .unwrap()
        .command
        {
            Command::Run(a) => a,
            other => panic!("{other:?}"),
        };
        let one = OneRoute::from(&args, &env()).unwrap().unwrap();
        let errs: Vec<String> = config::validate(&flags_config(&one, &env()), &env())
            .unwrap_err()
            .into_iter()
            .map(|p| flag_problem(p).to_string())
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("--upstream: the scheme must be https or http"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("--listen: 0.0.0.0:80 is not a loopback address"),
            "{errs:?}"
        );
        assert!(errs[1].contains("Pass --allow-remote"), "{errs:?}");
    }

    #[test]
    fn without_flags_the_environment_describes_the_route() {
        let args = match Cli::try_parse_from(["m", "run"]).unwrap().command {
            Command::Run(a) => a,
            other => panic!("{other:?}"),
        };
        assert!(
            OneRoute::from(&args, &env()).unwrap().is_none(),
            "nothing to serve"
        );
        let container = env()
            .with_env(ENV_UPSTREAM, "https://h.example.com/v1/infers/x")
            .with_env(ENV_LISTEN, "0.0.0.0:8080, [::]:8080")
            .with_env(ENV_AUTH, "apikey")
            .with_env(ENV_ADMIN_LISTEN, "0.0.0.0:9901")
            .with_env(ENV_ALLOW_REMOTE, "true");
        let one = OneRoute::from(&args, &container).unwrap().unwrap();
        assert_eq!(one.upstream, "https://h.example.com/v1/infers/x");
        assert_eq!(one.listen, ["0.0.0.0:8080", "[::]:8080"]);
        assert_eq!(one.auth, Auth::Apikey);
        assert_eq!(one.admin_listen.as_deref(), Some("0.0.0.0:9901"));
        assert!(one.allow_remote);
        let bad = env()
            .with_env(ENV_UPSTREAM, "https://h/")
            .with_env(ENV_AUTH, "kerberos");
        assert!(
            OneRoute::from(&args, &bad)
                .unwrap_err()
                .contains("MODELARTS_PROXY_AUTH")
        );
    }
}
