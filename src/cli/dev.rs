//! `modelarts-proxy dev`: stand-ins for IAM and a real-time service that
//! verify credentials, with the proxy in front, so the whole flow can be
//! tried with no cloud account. The stand-in also plays the keyless sources
//! (DESIGN §11): CCE Pod Identity, an IAM identity provider and an agency,
//! with the pod's token file and the id-token file in a private temporary
//! directory. `--env-file` writes the demo credentials as shell `export`
//! lines, so `sign`, `token`, `check --online` and `run` can be tried
//! against the stand-ins too (DESIGN §3).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::env::{
    ENV_APP_CODE, ENV_IAM_DOMAIN, ENV_IAM_ENDPOINT, ENV_IAM_PASSWORD, ENV_IAM_PROJECT, ENV_IAM_USER,
};
use super::{EXIT_CONFIG, log_startup, print_problems};
use crate::config;
use crate::credentials::{self as creds, Sources};
use crate::dev::{
    ID_TOKEN_PATH, POD_IDENTITY_PATH, SECURITY_TOKENS_PATH, StandIn, StandInAgency,
    StandInFederation, StandInIam, StandInPodIdentity, demo_key, random_text,
};
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
    /// How long the stand-in IAM's tokens and every temporary key live
    /// (short, to watch them being refreshed).
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

/// The stand-in identity provider, and the agency another account made for this one.
const DEMO_IDP: &str = "dev-idp";
const DEMO_PARTNER: &str = "demo-partner";
const DEMO_AGENCY: &str = "modelarts-invoke";

/// The files a pod would be given, in dev's private directory.
const POD_TOKEN_FILE: &str = "pod-token";
const ID_TOKEN_FILE: &str = "id-token";

pub(super) async fn dev(args: DevArgs) -> u8 {
    let demo = Demo::new();
    // Removed when dev returns: the files hold the pod's and the id token.
    let files = match DemoFiles::write(&demo) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot write the demo token files: {e}");
            return 1;
        }
    };
    let service = match stand_in(&demo, &args).spawn(args.service_listen).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let upstream = format!("http://{service}/v1/infers/demo");
    if let Some(path) = &args.env_file
        && let Err(e) = write_private(path, &env_lines(&demo, service, &upstream, &files))
    {
        tracing::error!("cannot write {}: {e}", path.display());
        return 1;
    }
    let text = dev_config(&args, service, &upstream, &files);
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
    print_banner(&daemon, service, &upstream, &demo, &args, &files);
    log_startup(&daemon);
    daemon.run(OsSignals::new()).await;
    0
}

/// The stand-in: the service, IAM, app codes, and the keyless sources, all
/// issuing credentials that live `--token-lifetime`.
fn stand_in(demo: &Demo, args: &DevArgs) -> StandIn {
    let lifetime = args.token_lifetime;
    StandIn::new(vec![demo_aksk(demo)], Arc::new(chrono::Utc::now))
        .with_iam(StandInIam {
            user: DEMO_USER.into(),
            password: Secret::new(demo.password.clone()),
            domain: DEMO_DOMAIN.into(),
            project: DEMO_PROJECT.into(),
            project_id: random_text(32).to_ascii_lowercase(),
            token_lifetime: lifetime,
            token_size: 8 * 1024,
        })
        .with_app_codes(vec![Secret::new(demo.app_code.clone())])
        .with_pod_identity(StandInPodIdentity {
            tokens: vec![Secret::new(demo.sa_token.clone())],
            lifetime,
            second_shape: false,
        })
        .with_federation(StandInFederation {
            idp_id: DEMO_IDP.into(),
            id_tokens: vec![Secret::new(demo.id_token.clone())],
            credential_lifetime: lifetime,
        })
        .with_agency(StandInAgency {
            domain_name: DEMO_PARTNER.into(),
            agency_name: DEMO_AGENCY.into(),
            credential_lifetime: lifetime,
        })
}

/// The pod's service-account token file and the id-token file, in a
/// directory only this user can read, removed when dropped.
struct DemoFiles {
    dir: PathBuf,
    pod_token: PathBuf,
    id_token: PathBuf,
}

impl DemoFiles {
    fn write(demo: &Demo) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("modelarts-proxy-dev-{}", random_text(12)));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let files = DemoFiles {
            pod_token: dir.join(POD_TOKEN_FILE),
            id_token: dir.join(ID_TOKEN_FILE),
            dir,
        };
        write_private(&files.pod_token, &format!("{}\n", demo.sa_token))?;
        write_private(&files.id_token, &format!("{}\n", demo.id_token))?;
        Ok(files)
    }
}

impl Drop for DemoFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo credentials, random for each run.
#[derive(Clone)]
struct Demo {
    ak: String,
    sk: String,
    password: String,
    app_code: String,
    /// The pod's service-account token, for Pod Identity.
    sa_token: String,
    /// An OpenID Connect id token the stand-in identity provider trusts.
    id_token: String,
}

impl Demo {
    fn new() -> Self {
        let key = demo_key();
        Demo {
            ak: key.access_key.clone(),
            sk: key.secret_key.expose().to_owned(),
            password: random_text(24),
            app_code: random_text(32),
            sa_token: fake_jwt(),
            id_token: fake_jwt(),
        }
    }
}

/// A random token shaped like a JWT (header, claims, signature); nothing reads its claims.
fn fake_jwt() -> String {
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        random_text(120),
        random_text(86)
    )
}

fn demo_aksk(demo: &Demo) -> crate::signer::AkSk {
    crate::signer::AkSk {
        access_key: demo.ak.clone(),
        secret_key: Secret::new(demo.sk.clone()),
        security_token: None,
    }
}

/// The variables of `run --auth aksk|token|apikey`, `sign` and `token`,
/// set to the demo credentials, as `export NAME='value'` lines; then the
/// keyless sources' variables, which `run --auth aksk` (source auto) uses
/// only once the AK/SK variables are unset.
fn env_lines(demo: &Demo, service: SocketAddr, upstream: &str, files: &DemoFiles) -> String {
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
    let keyless = [
        (
            creds::ENV_POD_IDENTITY_URI,
            format!("http://{service}{POD_IDENTITY_PATH}"),
        ),
        (
            creds::ENV_POD_IDENTITY_TOKEN_FILE,
            files.pod_token.display().to_string(),
        ),
        (creds::ENV_IDP_ID, DEMO_IDP.to_owned()),
        (
            creds::ENV_ID_TOKEN_FILE,
            files.id_token.display().to_string(),
        ),
    ];
    let mut text = String::from(
        "# modelarts-proxy dev: demo credentials for the stand-ins (valid while dev runs)\n",
    );
    for (name, value) in vars {
        text.push_str(&format!("export {name}='{value}'\n"));
    }
    text.push_str(&format!(
        "# Keyless identity. `run --auth aksk` (source auto) prefers {ak}/{sk} when they are set,\n\
         # then the identity provider ({idp} + {idf}), then Pod Identity:\n\
         # `unset {ak} {sk}` to try the identity provider, and `unset {idp} {idf}` too for Pod Identity.\n",
        ak = creds::ENV_AK,
        sk = creds::ENV_SK,
        idp = creds::ENV_IDP_ID,
        idf = creds::ENV_ID_TOKEN_FILE,
    ));
    for (name, value) in keyless {
        text.push_str(&format!("export {name}='{value}'\n"));
    }
    text
}

/// Writes `text` readable by its owner only: it holds secrets.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// One route per mode, all to the stand-in service.
fn dev_config(args: &DevArgs, service: SocketAddr, upstream: &str, files: &DemoFiles) -> String {
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
{keyless}
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
        keyless = keyless_config(service, upstream, files),
    )
}

/// The keyless routes (DESIGN §11): temporary keys from Pod Identity and
/// from the identity provider, and a token of the agency, assumed with the
/// identity provider's token.
fn keyless_config(service: SocketAddr, upstream: &str, files: &DemoFiles) -> String {
    let pod_token = toml_string(&files.pod_token.display().to_string());
    let id_token = toml_string(&files.id_token.display().to_string());
    format!(
        r#"[[route]]
prefix = "/pod"
upstream = "{upstream}"
credentials = "pod"
[[route]]
prefix = "/oidc"
upstream = "{upstream}"
credentials = "oidc"
[[route]]
prefix = "/agency"
upstream = "{upstream}"
credentials = "agency"
[credentials.pod]
type = "aksk"
source = "pod_identity"
endpoint = "http://{service}{POD_IDENTITY_PATH}"
token_file = {pod_token}
[credentials.oidc]
type = "aksk"
source = "oidc"
idp_id = "{DEMO_IDP}"
id_token_file = {id_token}
iam_endpoint = "http://{service}"
[credentials.oidc-token]
type = "token"
source = "oidc"
idp_id = "{DEMO_IDP}"
id_token_file = {id_token}
iam_endpoint = "http://{service}"
project = "{DEMO_PROJECT}"
[credentials.agency]
type = "token"
source = "assume_agency"
base = "oidc-token"
domain_name = "{DEMO_PARTNER}"
agency_name = "{DEMO_AGENCY}"
iam_endpoint = "http://{service}"
project = "{DEMO_PROJECT}"
"#
    )
}

/// `text` as a TOML string (a temporary directory's path may hold anything).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// What runs where, and what to try.
fn print_banner(
    daemon: &Daemon,
    service: SocketAddr,
    upstream: &str,
    demo: &Demo,
    args: &DevArgs,
    files: &DemoFiles,
) {
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
             \x20 modelarts-proxy run --upstream \"${ENV_DEV_SERVICE_URL}\" --listen 127.0.0.1:8081\n\
             \x20 (run --auth aksk takes the demo AK/SK first: unset {ak} {sk} to try the identity provider,\n\
             \x20  and {idp} {idf} too for Pod Identity)\n",
            p.display(),
            p.display(),
            ak = creds::ENV_AK,
            sk = creds::ENV_SK,
            idp = creds::ENV_IDP_ID,
            idf = creds::ENV_ID_TOKEN_FILE,
        ),
        None => "\n(--env-file PATH writes the demo credentials for sign, token, check --online and run)\n"
            .to_owned(),
    };
    println!(
        "modelarts-proxy dev\n\
         \n  stand-in ModelArts service: {upstream}\n    (checks AK/SK signatures, IAM tokens and app codes like API Gateway; echoes what it received;\n     streams OpenAI-style events for \"stream\": true or Accept: text/event-stream,\n     with their usage when asked: the / route asks, stream_usage = true)\n\
         \n  stand-in IAM:               http://{service}/v3/auth/tokens  (8 KB tokens, valid {lifetime})\n\
         \x20   identity provider \"{DEMO_IDP}\": {ID_TOKEN_PATH}, id token in {id_token}\n\
         \x20   temporary AK/SK:   {SECURITY_TOKENS_PATH}; agency {DEMO_PARTNER}/{DEMO_AGENCY} (assume_role)\n\
         \n  stand-in Pod Identity:      http://{service}{POD_IDENTITY_PATH}, token in {pod_token}\n\
         \x20   (temporary keys valid {lifetime}; the token files are removed when dev stops)\n\
         \n  proxy:                      http://{proxy}\n\
         \x20   /        -> the service, signed with the demo AK/SK {}\n\
         \x20   /token   -> the service, with an IAM token (refreshed before it expires)\n\
         \x20   /apikey  -> the service, with an X-Apig-AppCode\n\
         \x20   /pod     -> the service, signed with temporary keys from Pod Identity\n\
         \x20   /oidc    -> the service, signed with temporary keys for the id token\n\
         \x20   /agency  -> the service, with a token of the agency, assumed with the id token's token\n\
         \n  admin:                      http://{admin}  (status page at /, /status.json /healthz /readyz /metrics)\n\
         \ntry:\n  curl -s http://{proxy}/ -H 'Content-Type: application/json' -d '{{\"prompt\":\"hello\"}}'\n\
         \x20 curl -s http://{proxy}/token -d 'any body'\n\
         \x20 curl -s http://{proxy}/apikey\n\
         \x20 curl -s http://{proxy}/pod; curl -s http://{proxy}/oidc; curl -s http://{proxy}/agency\n\
         \x20 curl -N http://{proxy}/v1/chat/completions -H 'Content-Type: application/json' -d '{{\"stream\":true}}'\n\
         \x20 cargo run --release --example websocket -- ws://{proxy}/ws hello   # WebSocket echo (any route)\n\
         {env_file}\
         \nand, to see the stand-in reject a request without credentials:\n  curl -s {upstream}\n\nCtrl-C to stop.",
        demo.ak,
        id_token = files.id_token.display(),
        pod_token = files.pod_token.display(),
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
            // Traces to a local collector: OTEL_EXPORTER_OTLP_ENDPOINT and friends.
            otel if otel.starts_with("OTEL_") => std::env::var(otel).ok(),
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
