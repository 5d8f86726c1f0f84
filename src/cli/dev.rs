//! `modelarts-proxy dev`: stand-ins for IAM and a real-time service that
//! verify credentials, with the proxy in front, so the whole flow can be
//! tried with no cloud account.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{EXIT_CONFIG, log_startup, print_problems};
use crate::config;
use crate::credentials::Sources;
use crate::server::{Daemon, OsSignals};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
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

pub(super) async fn dev(args: DevArgs) -> u8 {
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
    let text = dev_config(args.listen, service, &upstream);
    let sources: Arc<dyn Sources> = Arc::new(sources);
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
    print_banner(
        &daemon,
        service,
        &upstream,
        &key.access_key,
        args.token_lifetime,
    );
    log_startup(&daemon);
    daemon.run(OsSignals::new()).await;
    0
}

/// One route per mode, all to the stand-in service.
fn dev_config(listen: SocketAddr, service: SocketAddr, upstream: &str) -> String {
    format!(
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
        listen = listen
    )
}

/// What runs where, and what to try.
fn print_banner(
    daemon: &Daemon,
    service: SocketAddr,
    upstream: &str,
    access_key: &str,
    token_lifetime: std::time::Duration,
) {
    let proxy = daemon.local_addrs()[0];
    let lifetime = humantime::format_duration(token_lifetime);
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
        access_key
    );
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
