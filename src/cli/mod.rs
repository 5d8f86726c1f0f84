//! The command line (DESIGN §3), one module per subcommand: `run`,
//! `check`, `sign`, `token`, `dev`; `env` builds a config from the
//! environment for `run --auth` and `token`.
//!
//! Startup reads like a script: parse arguments → init tracing → load and
//! validate config → build state → bind → serve until a signal → drain.

mod check;
mod dev;
mod env;
mod probe;
mod run;
mod shutdown;
mod sign;
mod token;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::walk::Problem;
use crate::config::{self, Credentials};
use crate::credentials::System;
use crate::server::Daemon;

pub use env::{
    ENV_APP_CODE, ENV_IAM_DOMAIN, ENV_IAM_ENDPOINT, ENV_IAM_PASSWORD, ENV_IAM_PROJECT,
    ENV_IAM_PROJECT_ID, ENV_IAM_USER, ENV_REGION,
};
pub use run::reload;

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
    Run(run::RunArgs),
    /// Validate a config file and its credentials; print every problem.
    Check(check::CheckArgs),
    /// Print a signed request as a ready-to-paste curl command.
    Sign(sign::SignArgs),
    /// Print a valid IAM token on stdout (like `gcloud auth print-access-token`).
    Token(token::TokenArgs),
    /// Run a stand-in ModelArts service and IAM that verify credentials, with the proxy in front.
    Dev(dev::DevArgs),
    /// GET a URL and exit 0 on a 2xx answer (a health check for images without curl).
    Probe(probe::ProbeArgs),
    /// Stop a running proxy as SIGTERM does: POST /quitquitquit on its admin listener.
    Shutdown(shutdown::ShutdownArgs),
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
    // `run` serves connections on worker threads of its own
    // (`server.workers`); this thread keeps signals, reloads, credential
    // refreshes and the admin endpoints.
    let runtime = match cli.command {
        Command::Run(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Check(args) => check::check(args).await,
            Command::Sign(args) => sign::sign(args),
            Command::Token(args) => token::token(args).await,
            Command::Dev(args) => dev::dev(args).await,
            Command::Probe(args) => probe::probe(args).await,
            Command::Shutdown(args) => shutdown::shutdown(args).await,
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
        .with_writer(stderr_writer())
        .with_ansi(ansi);
    match format {
        LogFormat::Text if ansi => builder.init(),
        LogFormat::Text => builder.event_format(crate::logfmt::Text).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Where log lines go: standard error, written with one `write(2)` per
/// line without `std::io::Stderr`'s process-wide lock (the workers log
/// every request at once; the lock made them wait on each other in the
/// kernel). A line is formatted whole before it is written, so lines never
/// interleave. Falls back to `Stderr` if the descriptor cannot be copied.
fn stderr_writer() -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    use std::os::fd::AsFd;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => BoxMakeWriter::new(Arc::new(std::fs::File::from(fd))),
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    }
}

/// The client the subcommands use to reach a proxy on this machine (its
/// admin listener, its routes, a health URL): plain HTTP, no egress proxy,
/// no certificate store to load.
fn local_client() -> crate::client::HttpClient {
    let tls = config::UpstreamTls {
        roots: config::Roots::None,
        ..config::UpstreamTls::default()
    };
    crate::client::build(&tls, &config::Egress::default())
        .expect("a client without a CA file always builds")
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

/// `[credentials.NAME] AK/SK from …, payload auto` or `no authentication`.
fn describe_auth(route: &config::Route, config: &config::Config) -> String {
    match route
        .credentials
        .as_ref()
        .and_then(|n| config.credentials.get(n).map(|c| (n, c)))
    {
        None => "no authentication".to_owned(),
        Some((name, c @ (Credentials::AkSk(_) | Credentials::Temporary(_)))) => {
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
    for listening in daemon.listening() {
        tracing::info!("listening on {listening}");
    }
    if let Some(addr) = daemon.admin_addr() {
        tracing::info!(
            "admin endpoints on http://{addr} (the status page at /, /status.json /healthz /readyz /metrics)"
        );
    }
    for route in &state.config.routes {
        let auth = describe_auth(route, &state.config);
        tracing::info!(
            "route {} -> {} ({auth})",
            route.prefix,
            route.upstream.url()
        );
    }
    tracing::info!("egress: {}", state.config.egress.describe());
}
