//! The command line (DESIGN §3): `run`, `check`, `sign`, `dev`.
//!
//! Startup reads like a script: parse arguments → init tracing → load and
//! validate config → build state → bind → serve until a signal → drain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use toml::{Table, Value};

use crate::config::walk::Problem;
use crate::config::{self, Credentials};
use crate::credentials::{self, Sources, System};
use crate::proxy::{Shared, State};
use crate::server::Daemon;
use crate::signer::{self, Payload, SignableRequest};

/// Where `-c` comes from when it is not given (handy in containers).
pub const ENV_CONFIG: &str = "MODELARTS_PROXY_CONFIG";

/// `-c FILE`, else `MODELARTS_PROXY_CONFIG`. Read here rather than by clap, so
/// a set variable does not collide with `run --upstream`.
fn config_path(flag: &Option<PathBuf>) -> Option<PathBuf> {
    flag.clone().or_else(|| {
        std::env::var_os(ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Exit code for bad usage (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for a bad configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "modelarts-proxy",
    version,
    about = "Localhost proxy that signs requests for Huawei Cloud ModelArts / API Gateway"
)]
pub struct Cli {
    /// Log format on stderr; the level filter comes from RUST_LOG (default "info").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy, from a config file or from flags describing one route.
    Run(RunArgs),
    /// Validate a config file and its credentials; print every problem.
    Check(CheckArgs),
    /// Print a signed request as a ready-to-paste curl command.
    Sign(SignArgs),
    /// Print a valid IAM token on stdout (like `gcloud auth print-access-token`).
    Token(TokenArgs),
    /// Run a stand-in ModelArts service and IAM that verify credentials, with the proxy in front.
    Dev(DevArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
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
    #[arg(long, value_enum, default_value_t = Auth::Aksk, conflicts_with = "config")]
    auth: Auth,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, conflicts_with = "config", value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Allow listening on non-loopback addresses.
    #[arg(long, conflicts_with = "config")]
    allow_remote: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Auth {
    Aksk,
    Token,
    Apikey,
    None,
}

/// `--auth token`: the IAM user (env).
pub const ENV_IAM_USER: &str = "HUAWEICLOUD_IAM_USER";
/// `--auth token`: the IAM user's password (env).
pub const ENV_IAM_PASSWORD: &str = "HUAWEICLOUD_IAM_PASSWORD";
/// `--auth token`: the account (domain) name (env).
pub const ENV_IAM_DOMAIN: &str = "HUAWEICLOUD_IAM_DOMAIN";
/// `--auth token`: the project name (env); or [`ENV_IAM_PROJECT_ID`].
pub const ENV_IAM_PROJECT: &str = "HUAWEICLOUD_IAM_PROJECT";
pub const ENV_IAM_PROJECT_ID: &str = "HUAWEICLOUD_IAM_PROJECT_ID";
/// `--auth token`: the IAM endpoint (the SDKs' variable), or derive it from [`ENV_REGION`].
pub const ENV_IAM_ENDPOINT: &str = "HUAWEICLOUD_SDK_IAM_ENDPOINT";
pub const ENV_REGION: &str = "HUAWEICLOUD_SDK_REGION";
/// `--auth apikey`: the APIG app code (env).
pub const ENV_APP_CODE: &str = "APIG_APP_CODE";

#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also send one signed request through each route and report the upstream's answer.
    #[arg(long)]
    online: bool,
}

#[derive(clap::Args, Debug)]
struct SignArgs {
    /// Take credentials from this config file (else from HUAWEICLOUD_SDK_AK / _SK or the profile file).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which [credentials.NAME] to use (default: the route whose upstream the URL starts with).
    #[arg(long, value_name = "NAME")]
    credentials: Option<String>,
    #[arg(
        short = 'X',
        long = "request",
        default_value = "GET",
        value_name = "METHOD"
    )]
    method: String,
    /// A header to send and sign, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Body text, or @FILE.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    data: Option<String>,
    /// auto (the SDK's rule), signed or unsigned.
    #[arg(long, default_value = "auto", value_parser = ["auto", "signed", "unsigned"])]
    payload: String,
    /// Full URL, e.g. https://<id>.apig.cn-north-4.huaweicloudapis.com/v1/infers/<service-id>
    url: String,
}

#[derive(clap::Args, Debug)]
struct DevArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = config::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where the stand-in service listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    service_listen: SocketAddr,
    /// How long the stand-in IAM's tokens live (short, to watch them being refreshed).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    token_lifetime: std::time::Duration,
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// Config file; without it, the HUAWEICLOUD_IAM_* variables of `run --auth token`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which [credentials.NAME] (default: the only token credentials in the file).
    #[arg(long, value_name = "NAME")]
    credentials: Option<String>,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Check(args) => check(args).await,
            Command::Sign(args) => sign(args),
            Command::Token(args) => token(args).await,
            Command::Dev(args) => dev(args).await,
        }
    });
    ExitCode::from(code)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print_problems(problems: &[Problem], origin: &str) {
    for p in problems {
        eprintln!("error: {p}");
    }
    eprintln!("{} error(s) in {origin}", problems.len());
}

/// Reads and validates a config file.
fn load_file(path: &Path) -> Result<config::Validated, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    config::load(&text, &System)
}

/// The one-route config that `run --upstream …` describes, as TOML, so it
/// goes through exactly the same validation as a file.
fn flags_config(args: &RunArgs, upstream: &str, sources: &dyn Sources) -> Table {
    let mut server = Table::new();
    if !args.listen.is_empty() {
        server.insert(
            "listen".into(),
            Value::Array(args.listen.iter().cloned().map(Value::String).collect()),
        );
    }
    if let Some(a) = &args.admin_listen {
        server.insert("admin_listen".into(), Value::String(a.clone()));
    }
    server.insert("allow_remote".into(), Value::Boolean(args.allow_remote));
    let mut route = Table::new();
    route.insert("prefix".into(), "/".into());
    route.insert("upstream".into(), upstream.into());
    let mut root = Table::new();
    if let Some(creds) = env_credentials(args.auth, sources) {
        route.insert("credentials".into(), "default".into());
        let mut all = Table::new();
        all.insert("default".into(), Value::Table(creds));
        root.insert("credentials".into(), Value::Table(all));
    }
    root.insert("server".into(), Value::Table(server));
    root.insert("route".into(), Value::Array(vec![Value::Table(route)]));
    root
}

/// `[credentials.default]` for `--auth`, from the environment variables the README documents.
fn env_credentials(auth: Auth, sources: &dyn Sources) -> Option<Table> {
    let env_ref = |name: &str| {
        let mut t = Table::new();
        t.insert("env".into(), name.into());
        Value::Table(t)
    };
    let mut creds = Table::new();
    match auth {
        Auth::None => return None,
        Auth::Aksk => {
            creds.insert("type".into(), "aksk".into());
            creds.insert("source".into(), "env".into());
        }
        Auth::Apikey => {
            creds.insert("type".into(), "apikey".into());
            creds.insert("app_code".into(), env_ref(ENV_APP_CODE));
        }
        Auth::Token => {
            creds.insert("type".into(), "token".into());
            creds.insert("password".into(), env_ref(ENV_IAM_PASSWORD));
            for (key, var) in [
                ("iam_endpoint", ENV_IAM_ENDPOINT),
                ("region", ENV_REGION),
                ("user", ENV_IAM_USER),
                ("domain", ENV_IAM_DOMAIN),
                ("project", ENV_IAM_PROJECT),
                ("project_id", ENV_IAM_PROJECT_ID),
            ] {
                if let Some(v) = sources.env(var).filter(|v| !v.trim().is_empty()) {
                    creds.insert(key.into(), v.trim().into());
                }
            }
        }
    }
    Some(creds)
}

/// Names flags instead of key paths in errors about a flag-built config.
fn flag_problem(mut p: Problem) -> Problem {
    let flag = if p.path.starts_with("server.listen") {
        "--listen"
    } else if p.path == "server.admin_listen" {
        "--admin-listen"
    } else if p.path.starts_with("route[0].upstream") {
        "--upstream"
    } else if let Some(key) = p.path.strip_prefix("credentials.default") {
        // Name the environment variable that sets the missing value.
        let var = match key.trim_start_matches('.') {
            "user" => Some(ENV_IAM_USER),
            "password" => Some(ENV_IAM_PASSWORD),
            "domain" => Some(ENV_IAM_DOMAIN),
            "project" => Some(
                "HUAWEICLOUD_IAM_PROJECT (or HUAWEICLOUD_IAM_PROJECT_ID, or HUAWEICLOUD_SDK_REGION)",
            ),
            "iam_endpoint" => Some("HUAWEICLOUD_SDK_IAM_ENDPOINT (or HUAWEICLOUD_SDK_REGION)"),
            _ => None,
        };
        if let Some(var) = var.filter(|_| p.message.starts_with("is required")) {
            p.message = format!("set {var}");
        }
        "--auth"
    } else {
        return p;
    };
    p.path = flag.to_owned();
    p
}

async fn run(args: RunArgs) -> u8 {
    // Flags win over MODELARTS_PROXY_CONFIG; `-c` with `--upstream` is refused by clap.
    let config_file = match &args.upstream {
        Some(_) => None,
        None => config_path(&args.config),
    };
    let (validated, origin) = match (&config_file, &args.upstream) {
        (Some(path), _) => (load_file(path), path.display().to_string()),
        (None, Some(upstream)) => (
            config::validate(&flags_config(&args, upstream, &System), &System)
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
    serve(state, config_file).await
}

/// Binds, logs what is served, reloads on SIGHUP, drains on SIGTERM / Ctrl-C.
async fn serve(state: State, config_path: Option<PathBuf>) -> u8 {
    let daemon = match Daemon::bind(state).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    log_startup(&daemon);
    if let Some(path) = config_path {
        tokio::spawn(reload_on_sighup(daemon.shared(), path));
    }
    daemon.run(shutdown_signal()).await;
    0
}

/// `[credentials.NAME] AK/SK from …, payload auto` or `no authentication`.
fn describe_auth(route: &config::Route, config: &config::Config) -> String {
    match route
        .credentials
        .as_ref()
        .and_then(|n| config.credentials.get(n).map(|c| (n, c)))
    {
        None => "no authentication".to_owned(),
        Some((name, c @ (Credentials::AkSk(_) | Credentials::Metadata(_)))) => {
            format!(
                "[credentials.{name}] {}, payload {}",
                c.describe(),
                route.payload
            )
        }
        Some((name, c)) => format!("[credentials.{name}] {}", c.describe()),
    }
}

fn log_startup(daemon: &Daemon) {
    let shared = daemon.shared();
    let state = shared.state.load();
    for addr in daemon.local_addrs() {
        tracing::info!("listening on http://{addr}");
    }
    if let Some(addr) = daemon.admin_addr() {
        tracing::info!("admin endpoints on http://{addr} (/healthz /readyz /metrics)");
    }
    for route in &state.config.routes {
        let auth = describe_auth(route, &state.config);
        tracing::info!(
            "route {} -> {} ({auth})",
            route.prefix,
            route.upstream.url()
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received");
}

async fn reload_on_sighup(shared: Arc<Shared>, path: PathBuf) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            reload(&shared, &path);
        }
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

async fn check(args: CheckArgs) -> u8 {
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
            format!("  route {} -> {} ({auth})", r.prefix, r.upstream.url())
        })
        .collect();
    // Offline: the TLS settings are checked, nothing is fetched.
    if let Err(message) = crate::client::build(&config.upstream_tls) {
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

/// Sends one GET through each route (via an in-process proxy on loopback)
/// and reports what the upstream answered. A gateway authentication error
/// (APIG.0301 …) or an unreachable upstream fails the check.
async fn check_online(mut state: State) -> u8 {
    let mut failed = 0;
    let mut failed_credentials: Vec<String> = Vec::new();
    // Expiring credentials first: each must be fetched within its max_wait.
    let mut names: Vec<&String> = state.providers.keys().collect();
    names.sort();
    for name in names {
        // Report as soon as the first fetch has finished, good or bad.
        async fn first<T: Send + Sync + 'static>(
            r: &crate::auth::refresh::Refreshing<T>,
            wait: std::time::Duration,
        ) -> Result<std::sync::Arc<crate::auth::refresh::Expiring<T>>, String> {
            let mut changes = r.subscribe();
            if r.current().is_none() && r.last_error().is_none() {
                let _ = tokio::time::timeout(wait, changes.changed()).await;
            }
            r.current().ok_or_else(|| match r.last_error() {
                Some(e) => e.message,
                None => format!("no answer within {}", humantime::format_duration(wait)),
            })
        }
        let result = match &state.providers[name] {
            crate::auth::Provider::Token {
                token, max_wait, ..
            } => first(token, *max_wait)
                .await
                .map(|t| format!("IAM token valid until {}", t.expires_at.to_rfc3339())),
            crate::auth::Provider::Metadata { creds, max_wait } => {
                first(creds, *max_wait).await.map(|c| {
                    format!(
                        "temporary AK/SK {} valid until {}",
                        c.value.key.access_key,
                        c.expires_at.to_rfc3339()
                    )
                })
            }
            _ => continue,
        };
        match result {
            Ok(ok) => println!("online: [credentials.{name}]: ok, {ok}"),
            Err(e) => {
                eprintln!("online: [credentials.{name}]: FAILED: {e}");
                failed += 1;
                failed_credentials.push(name.clone());
            }
        }
    }
    state.config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
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
    let task = tokio::spawn(daemon.run(async {
        let _ = stopped.await;
    }));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for prefix in prefixes {
        let uri: http::Uri = match format!("http://{addr}{prefix}").parse() {
            Ok(u) => u,
            Err(e) => {
                eprintln!("online: route {prefix}: {e}");
                failed += 1;
                continue;
            }
        };
        match client.get(uri).await {
            Err(e) => {
                eprintln!("online: route {prefix}: {}", crate::error::chain(&e));
                failed += 1;
            }
            Ok(resp) => {
                use http_body_util::BodyExt;
                let status = resp.status();
                let from_proxy = resp.headers().get(crate::error::ERROR_HEADER).is_some();
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
                    failed += 1;
                } else {
                    println!(
                        "online: route {prefix}: ok, the upstream answered HTTP {status} (credentials accepted)"
                    );
                }
            }
        }
    }
    let _ = stop.send(());
    let _ = task.await;
    if failed > 0 { 1 } else { 0 }
}

/// Splits `scheme://authority/path?query` verbatim (no normalisation): the
/// signature must cover exactly what curl will send.
fn split_url(url: &str) -> Result<(&str, &str, &str, Option<&str>), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("the URL needs a scheme (https://…)")?;
    if scheme != "https" && scheme != "http" {
        return Err(format!("the scheme must be https or http, not {scheme:?}"));
    }
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path_query) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    Ok((
        scheme,
        authority,
        if path.is_empty() { "/" } else { path },
        query,
    ))
}

/// Single-quotes a string for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sign(args: SignArgs) -> u8 {
    match sign_command(&args, &System, chrono::Utc::now()) {
        Ok((curl, debug)) => {
            eprintln!("{debug}");
            println!("{curl}");
            0
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// Builds the curl command (stdout) and the signing stages (stderr).
fn sign_command(
    args: &SignArgs,
    sources: &dyn Sources,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, String), (u8, String)> {
    let usage = |m: String| (EXIT_USAGE, m);
    let (scheme, authority, path, query) = split_url(&args.url).map_err(usage)?;
    let method = args.method.to_ascii_uppercase();
    let config = args.config.clone().or_else(|| {
        sources
            .env(ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let (key, project_id) = match &config {
        None => {
            let found = credentials::from_sdk_chain(sources).map_err(|e| (EXIT_CONFIG, e))?;
            (found.key, found.project_id)
        }
        Some(path) => {
            let text = sources
                .read_file(path)
                .map_err(|e| (EXIT_CONFIG, format!("cannot read {}: {e}", path.display())))?;
            let v = config::load(&text, sources).map_err(|ps| {
                (
                    EXIT_CONFIG,
                    ps.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n       "),
                )
            })?;
            let name = match &args.credentials {
                Some(n) => n.clone(),
                None => v
                    .config
                    .routes
                    .iter()
                    .find(|r| args.url.starts_with(&r.upstream.url()))
                    .and_then(|r| r.credentials.clone())
                    .or_else(|| (v.config.credentials.len() == 1).then(|| v.config.credentials.keys().next().cloned()).flatten())
                    .ok_or_else(|| usage("no route's upstream matches the URL; pick credentials with --credentials NAME".into()))?,
            };
            match v.config.credentials.get(&name) {
                Some(Credentials::AkSk(c)) => (c.current.key.clone(), c.current.project_id.clone()),
                Some(other) => {
                    return Err(usage(format!(
                        "[credentials.{name}] is {}; sign needs AK/SK credentials",
                        other.describe()
                    )));
                }
                None => {
                    return Err(usage(format!(
                        "no [credentials.{name}] in {}",
                        path.display()
                    )));
                }
            }
        }
    };

    let mut headers: Vec<(String, String)> = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| usage(format!("header {h:?} is not \"Name: value\"")))?;
        if name.trim().eq_ignore_ascii_case("authorization") {
            return Err(usage(
                "sign makes the Authorization header itself; remove -H 'Authorization: …'".into(),
            ));
        }
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let has = |hs: &[(String, String)], n: &str| hs.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
    headers.insert(0, ("Host".into(), authority.to_owned()));
    let (body, body_arg) = match &args.data {
        None => (Vec::new(), None),
        Some(d) => match d.strip_prefix('@') {
            Some(file) => (
                std::fs::read(file).map_err(|e| usage(format!("cannot read {file}: {e}")))?,
                Some(format!("--data-binary {}", shell_quote(d))),
            ),
            None => (
                d.as_bytes().to_vec(),
                Some(format!("--data-binary {}", shell_quote(d))),
            ),
        },
    };
    if body_arg.is_some() && !has(&headers, "content-type") {
        // The SDK's default; also stops curl adding an unsigned form content type.
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    if let Some(token) = &key.security_token {
        headers.push(("X-Security-Token".into(), token.expose().to_owned()));
    }
    if let Some(p) = project_id {
        headers.push(("X-Project-Id".into(), p));
    }
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    let unsigned = match args.payload.as_str() {
        "signed" => false,
        "unsigned" => true,
        _ => signer::sdk_auto_unsigned(content_type),
    };
    if unsigned {
        headers.push((
            "X-Sdk-Content-Sha256".into(),
            signer::UNSIGNED_PAYLOAD.into(),
        ));
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let req = SignableRequest {
        method: &method,
        path,
        query,
        headers: &pairs,
        payload: Payload::Bytes(&body),
    };
    let out = signer::sign(&req, &key, now).map_err(|e| (1, e.to_string()))?;

    let url = format!(
        "{scheme}://{authority}{path}{}",
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let mut curl = String::from("curl --path-as-is");
    match method.as_str() {
        "GET" if body.is_empty() => {}
        "HEAD" => curl.push_str(" --head"),
        m => curl.push_str(&format!(" -X {m}")),
    }
    curl.push_str(&format!(" {}", shell_quote(&url)));
    // A date given with -H is the one signed (and sent once).
    let date = (!has(&headers, "x-sdk-date")).then_some(("X-Sdk-Date", out.date.as_str()));
    for (k, v) in headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(date)
        .chain([("Authorization", out.authorization.as_str())])
    {
        curl.push_str(&format!(" \\\n  -H {}", shell_quote(&format!("{k}: {v}"))));
    }
    if let Some(arg) = body_arg {
        curl.push_str(&format!(" \\\n  {arg}"));
    }
    let debug = format!(
        "# canonical request:\n{}\n# string to sign:\n{}\n# (the X-Sdk-Date is valid for 15 minutes)",
        out.canonical_request.redacted(),
        out.string_to_sign
    );
    Ok((curl, debug))
}

async fn token(args: TokenArgs) -> u8 {
    let (validated, origin) = match config_path(&args.config) {
        Some(path) => (load_file(&path), path.display().to_string()),
        None => {
            let mut root = Table::new();
            let mut all = Table::new();
            all.insert(
                "default".into(),
                Value::Table(env_credentials(Auth::Token, &System).expect("token")),
            );
            root.insert("credentials".into(), Value::Table(all));
            let mut route = Table::new();
            route.insert("upstream".into(), "http://127.0.0.1/".into());
            route.insert("credentials".into(), "default".into());
            root.insert("route".into(), Value::Array(vec![Value::Table(route)]));
            let v = config::validate(&root, &System)
                .map_err(|ps| ps.into_iter().map(flag_problem).collect());
            (v, "the environment".to_owned())
        }
    };
    let config = match validated {
        Ok(v) => v.config,
        Err(problems) => {
            print_problems(&problems, &origin);
            return EXIT_CONFIG;
        }
    };
    let tokens: Vec<(&String, &config::TokenSpec)> = config
        .credentials
        .iter()
        .filter_map(|(n, c)| match c {
            Credentials::Token(t) => Some((n, t)),
            _ => None,
        })
        .filter(|(n, _)| args.credentials.as_ref().is_none_or(|want| want == *n))
        .collect();
    let spec = match tokens.as_slice() {
        [(_, spec)] => *spec,
        [] => {
            eprintln!(
                "error: no token credentials{} in {origin}",
                args.credentials
                    .as_ref()
                    .map(|n| format!(" named {n}"))
                    .unwrap_or_default()
            );
            return EXIT_USAGE;
        }
        _ => {
            eprintln!(
                "error: several token credentials in {origin}; pick one with --credentials NAME"
            );
            return EXIT_USAGE;
        }
    };
    let client = match crate::client::build(&config.upstream_tls) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    match crate::auth::iam::fetch_token(&spec.request, &client, &System).await {
        Ok(token) => {
            println!("{}", String::from_utf8_lossy(token.value.header.as_bytes()));
            eprintln!("# valid until {}", token.expires_at.to_rfc3339());
            0
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            1
        }
    }
}

async fn dev(args: DevArgs) -> u8 {
    use crate::dev::{StandIn, StandInIam, demo_key, random_text};
    let key = demo_key();
    let sources = DemoSources {
        ak: key.access_key.clone(),
        sk: key.secret_key.expose().to_owned(),
        password: random_text(24),
        app_code: random_text(32),
    };
    let iam = StandInIam {
        user: "demo".into(),
        password: crate::secret::Secret::new(sources.password.clone()),
        domain: "demo".into(),
        project: "cn-north-4".into(),
        project_id: random_text(32).to_ascii_lowercase(),
        token_lifetime: args.token_lifetime,
        token_size: 8 * 1024,
    };
    let stand_in = StandIn::new(vec![key.clone()], Arc::new(chrono::Utc::now))
        .with_iam(iam)
        .with_app_codes(vec![crate::secret::Secret::new(sources.app_code.clone())]);
    let service = match stand_in.spawn(args.service_listen).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let upstream = format!("http://{service}/v1/infers/demo");
    let text = format!(
        r#"
[server]
listen = "{listen}"
[[route]]
prefix = "/"
upstream = "{upstream}"
credentials = "demo"
[[route]]
prefix = "/token"
upstream = "{upstream}"
credentials = "iam"
[[route]]
prefix = "/apikey"
upstream = "{upstream}"
credentials = "appcode"
[credentials.demo]
type = "aksk"
access_key = {{ env = "DEMO_AK" }}
secret_key = {{ env = "DEMO_SK" }}
[credentials.iam]
type = "token"
iam_endpoint = "http://{service}"
user = "demo"
password = {{ env = "DEMO_PASSWORD" }}
domain = "demo"
project = "cn-north-4"
[credentials.appcode]
type = "apikey"
app_code = {{ env = "DEMO_APP_CODE" }}
"#,
        listen = args.listen
    );
    let sources: Arc<dyn Sources> = Arc::new(sources);
    let runtime = crate::proxy::Runtime {
        sources: sources.clone(),
        ..Default::default()
    };
    let state = match config::load(&text, &*sources)
        .and_then(|v| State::build_with(v.config, runtime, None))
    {
        Ok(s) => s,
        Err(problems) => {
            print_problems(&problems, "the dev configuration");
            return EXIT_CONFIG;
        }
    };
    let daemon = match Daemon::bind(state).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let proxy = daemon.local_addrs()[0];
    let lifetime = humantime::format_duration(args.token_lifetime);
    println!(
        "modelarts-proxy dev\n\
         \n  stand-in ModelArts service: {upstream}\n    (checks AK/SK signatures, IAM tokens and app codes like API Gateway; echoes what it received)\n\
         \n  stand-in IAM:               http://{service}/v3/auth/tokens  (8 KB tokens, valid {lifetime})\n\
         \n  proxy:                      http://{proxy}\n\
         \x20   /        -> the service, signed with the demo AK/SK {}\n\
         \x20   /token   -> the service, with an IAM token (refreshed before it expires)\n\
         \x20   /apikey  -> the service, with an X-Apig-AppCode\n\
         \ntry:\n  curl -s http://{proxy}/ -H 'Content-Type: application/json' -d '{{\"prompt\":\"hello\"}}'\n\
         \x20 curl -s http://{proxy}/token -d 'any body'\n\
         \x20 curl -s http://{proxy}/apikey\n\
         \nand, to see the stand-in reject a request without credentials:\n  curl -s {upstream}\n\nCtrl-C to stop.",
        key.access_key
    );
    log_startup(&daemon);
    daemon.run(shutdown_signal()).await;
    0
}

/// Hands the demo key to the config loader without touching the process environment.
struct DemoSources {
    ak: String,
    sk: String,
    password: String,
    app_code: String,
}

impl Sources for DemoSources {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "DEMO_AK" => Some(self.ak.clone()),
            "DEMO_SK" => Some(self.sk.clone()),
            "DEMO_PASSWORD" => Some(self.password.clone()),
            "DEMO_APP_CODE" => Some(self.app_code.clone()),
            _ => None,
        }
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn home_dir(&self) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::fake::FakeSources;

    fn sign_args(extra: &[&str]) -> SignArgs {
        let mut argv = vec!["modelarts-proxy", "sign"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Sign(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn env() -> FakeSources {
        FakeSources::default()
            .with_env(credentials::ENV_AK, "AKCLI")
            .with_env(credentials::ENV_SK, "sk-cli-secret")
    }

    #[test]
    fn sign_prints_a_curl_command_that_keeps_the_url_verbatim() {
        let args = sign_args(&[
            "-X",
            "post",
            "-d",
            "{\"a\":1}",
            "https://h.example.com:443/v1/a%2Fb/./c?q=a+b&flag",
        ]);
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-15T08:09:10Z")
            .unwrap()
            .to_utc();
        let (curl, debug) = sign_command(&args, &env(), now).unwrap();
        assert!(
            curl.starts_with(
                "curl --path-as-is -X POST 'https://h.example.com:443/v1/a%2Fb/./c?q=a+b&flag'"
            ),
            "{curl}"
        );
        assert!(curl.contains("-H 'Host: h.example.com:443'"), "{curl}");
        assert!(
            curl.contains("-H 'Content-Type: application/json'"),
            "{curl}"
        );
        assert!(curl.contains("-H 'X-Sdk-Date: 20240115T080910Z'"), "{curl}");
        assert!(curl.contains("-H 'Authorization: SDK-HMAC-SHA256 Access=AKCLI, SignedHeaders=content-type;host;x-sdk-date, Signature="), "{curl}");
        assert!(curl.ends_with("--data-binary '{\"a\":1}'"), "{curl}");
        assert!(
            debug.contains("POST\n/v1/a/b/./c/\nflag=&q=a%2Bb\n"),
            "{debug}"
        );
        assert!(!curl.contains("sk-cli-secret") && !debug.contains("sk-cli-secret"));
    }

    #[test]
    fn sign_signature_verifies_like_the_gateway() {
        let args = sign_args(&[
            "-H",
            "x-stage: RELEASE",
            "http://127.0.0.1:9/v1/infers/x?a=1",
        ]);
        let now = chrono::Utc::now();
        let (curl, _) = sign_command(&args, &env(), now).unwrap();
        let header = |name: &str| {
            let start = curl.find(&format!("-H '{name}: ")).unwrap() + name.len() + 6;
            curl[start..start + curl[start..].find('\'').unwrap()].to_owned()
        };
        let mut headers = http::HeaderMap::new();
        for name in ["Host", "x-stage", "X-Sdk-Date", "Authorization"] {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                header(name).parse().unwrap(),
            );
        }
        let key = signer::AkSk {
            access_key: "AKCLI".into(),
            secret_key: crate::secret::Secret::new("sk-cli-secret"),
            security_token: None,
        };
        let uri: http::Uri = "/v1/infers/x?a=1".parse().unwrap();
        signer::verify::verify(
            &http::Method::GET,
            &uri,
            &headers,
            b"",
            |_| Some(key.clone()),
            now,
            chrono::Duration::minutes(15),
        )
        .unwrap();
    }

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
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
        let errs: Vec<String> = config::validate(&flags_config(&args, "ftp://x", &env()), &env())
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
    }
}
