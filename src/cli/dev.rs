//! `modelarts-proxy dev`: stand-ins for IAM and a real-time service that
//! verify credentials, with the proxy in front, so the whole flow can be
//! tried with no cloud account. `--env-file` writes the demo credentials as
//! shell `export` lines, so `sign`, `token`, `check --online` and `run` can
//! be tried against the stand-ins too (DESIGN §3).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::env::{
    ENV_APP_CODE, ENV_IAM_DOMAIN, ENV_IAM_ENDPOINT, ENV_IAM_PASSWORD, ENV_IAM_PROJECT, ENV_IAM_USER,
};
use super::{EXIT_CONFIG, log_startup, print_problems};
use crate::config;
use crate::credentials::{self as creds, Sources};
use crate::dev::{StandIn, StandInIam, demo_key, random_text};
use crate::secret::Secret;
use crate::server::{Daemon, OsSignals};
use crate::state::State;

/// The variable `--env-file` sets to the stand-in service's base URL.
pub const ENV_DEV_SERVICE_URL: &str = "MODELARTS_DEV_SERVICE_URL";

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = config::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where the proxy's /healthz, /readyz and /metrics are served.
    #[arg(long, default_value = "127.0.0.1:9901", value_name = "ADDR")]
    admin_listen: SocketAddr,
    /// Where the stand-in service listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    service_listen: SocketAddr,
    /// How long the stand-in IAM's tokens live (short, to watch them being refreshed).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    token_lifetime: std::time::Duration,
    /// Write the demo credentials here as shell `export` lines (mode 0600):
    /// `. PATH` lets `sign`, `token`, `check --online` and `run` use the stand-ins.
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
}

/// The stand-in IAM's user, account and project.
const DEMO_USER: &str = "demo";
const DEMO_DOMAIN: &str = "demo";
const DEMO_PROJECT: &str = "cn-north-4";

pub(super) async fn dev(args: DevArgs) -> u8 {
    let demo = Demo::new();
    let stand_in = StandIn::new(vec![demo_aksk(&demo)], Arc::new(chrono::Utc::now))
        .with_iam(StandInIam {
            user: DEMO_USER.into(),
            password: Secret::new(demo.password.clone()),
            domain: DEMO_DOMAIN.into(),
            project: DEMO_PROJECT.into(),
            project_id: random_text(32).to_ascii_lowercase(),
            token_lifetime: args.token_lifetime,
            token_size: 8 * 1024,
        })
        .with_app_codes(vec![Secret::new(demo.app_code.clone())]);
    let service = match stand_in.spawn(args.service_listen).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let upstream = format!("http://{service}/v1/infers/demo");
    if let Some(path) = &args.env_file
        && let Err(e) = write_env_file(path, &demo, service, &upstream)
    {
        tracing::error!("cannot write {}: {e}", path.display());
        return 1;
    }
    let text = dev_config(&args, service, &upstream);
    let sources: Arc<dyn Sources> = Arc::new(demo.clone());
    let runtime = crate::state::Runtime {
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
    print_banner(&daemon, service, &upstream, &demo, &args);
    log_startup(&daemon);
    daemon.run(OsSignals::new()).await;
    0
}

/// The demo credentials, random for each run.
#[derive(Clone)]
struct Demo {
    ak: String,
    sk: String,
    password: String,
    app_code: String,
}

impl Demo {
    fn new() -> Self {
        let key = demo_key();
        Demo {
            ak: key.access_key.clone(),
            sk: key.secret_key.expose().to_owned(),
            password: random_text(24),
            app_code: random_text(32),
        }
    }
}

fn demo_aksk(demo: &Demo) -> crate::signer::AkSk {
    crate::signer::AkSk {
        access_key: demo.ak.clone(),
        secret_key: Secret::new(demo.sk.clone()),
        security_token: None,
    }
}

/// The variables of `run --auth aksk|token|apikey`, `sign` and `token`,
/// set to the demo credentials, as `export NAME='value'` lines.
fn env_lines(demo: &Demo, service: SocketAddr, upstream: &str) -> String {
    let vars = [
        (creds::ENV_AK, demo.ak.as_str()),
        (creds::ENV_SK, demo.sk.as_str()),
        (ENV_APP_CODE, demo.app_code.as_str()),
        (ENV_IAM_USER, DEMO_USER),
        (ENV_IAM_PASSWORD, demo.password.as_str()),
        (ENV_IAM_DOMAIN, DEMO_DOMAIN),
        (ENV_IAM_PROJECT, DEMO_PROJECT),
        (ENV_IAM_ENDPOINT, &format!("http://{service}")),
        (ENV_DEV_SERVICE_URL, upstream),
    ];
    let mut text = String::from(
        "# modelarts-proxy dev: demo credentials for the stand-ins (valid while dev runs)\n",
    );
    for (name, value) in vars {
        text.push_str(&format!("export {name}='{value}'\n"));
    }
    text
}

/// Writes the env file readable by its owner only: it holds secrets.
fn write_env_file(
    path: &Path,
    demo: &Demo,
    service: SocketAddr,
    upstream: &str,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(env_lines(demo, service, upstream).as_bytes())
}

/// One route per mode, all to the stand-in service.
fn dev_config(args: &DevArgs, service: SocketAddr, upstream: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
[[route]]
prefix = "/"
upstream = "{upstream}"
credentials = "demo"
stream_usage = true
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
user = "{DEMO_USER}"
password = {{ env = "DEMO_PASSWORD" }}
domain = "{DEMO_DOMAIN}"
project = "{DEMO_PROJECT}"
[credentials.appcode]
type = "apikey"
app_code = {{ env = "DEMO_APP_CODE" }}
"#,
        listen = args.listen,
        admin = args.admin_listen,
    )
}

/// What runs where, and what to try.
fn print_banner(daemon: &Daemon, service: SocketAddr, upstream: &str, demo: &Demo, args: &DevArgs) {
    let proxy = daemon.local_addrs()[0];
    let admin = daemon
        .admin_addr()
        .map_or_else(String::new, |a| a.to_string());
    let lifetime = humantime::format_duration(args.token_lifetime);
    let env_file = match &args.env_file {
        Some(p) => format!(
            "\nthe demo credentials are in {} (`. {}`), for the other commands:\n\
             \x20 modelarts-proxy sign -X POST -d '{{\"prompt\":\"hi\"}}' \"${ENV_DEV_SERVICE_URL}\"\n\
             \x20 modelarts-proxy token\n\
             \x20 modelarts-proxy run --upstream \"${ENV_DEV_SERVICE_URL}\" --listen 127.0.0.1:8081\n",
            p.display(),
            p.display()
        ),
        None => "\n(--env-file PATH writes the demo credentials for sign, token, check --online and run)\n"
            .to_owned(),
    };
    println!(
        "modelarts-proxy dev\n\
         \n  stand-in ModelArts service: {upstream}\n    (checks AK/SK signatures, IAM tokens and app codes like API Gateway; echoes what it received;\n     streams OpenAI-style events for \"stream\": true or Accept: text/event-stream,\n     with their usage when asked: the / route asks, stream_usage = true)\n\
         \n  stand-in IAM:               http://{service}/v3/auth/tokens  (8 KB tokens, valid {lifetime})\n\
         \n  proxy:                      http://{proxy}\n\
         \x20   /        -> the service, signed with the demo AK/SK {}\n\
         \x20   /token   -> the service, with an IAM token (refreshed before it expires)\n\
         \x20   /apikey  -> the service, with an X-Apig-AppCode\n\
         \n  admin:                      http://{admin}  (status page at /, /status.json /healthz /readyz /metrics)\n\
         \ntry:\n  curl -s http://{proxy}/ -H 'Content-Type: application/json' -d '{{\"prompt\":\"hello\"}}'\n\
         \x20 curl -s http://{proxy}/token -d 'any body'\n\
         \x20 curl -s http://{proxy}/apikey\n\
         \x20 curl -N http://{proxy}/v1/chat/completions -H 'Content-Type: application/json' -d '{{\"stream\":true}}'\n\
         \x20 cargo run --release --example websocket -- ws://{proxy}/ws hello   # WebSocket echo (any route)\n\
         {env_file}\
         \nand, to see the stand-in reject a request without credentials:\n  curl -s {upstream}\n\nCtrl-C to stop.",
        demo.ak
    );
}

/// Hands the demo key to the config loader without touching the process environment.
impl Sources for Demo {
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
