//! Credentials from the environment variables the README documents: the
//! `[credentials.default]` table that `run --auth …` and `token` build, and
//! errors that name the flag or variable instead of a key path.

use clap::ValueEnum;
use toml::{Table, Value};

use crate::config::walk::Problem;
use crate::credentials::Sources;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Auth {
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
pub use crate::credentials::{ENV_IAM_ENDPOINT, ENV_REGION};
/// `--auth apikey`: the APIG app code (env).
pub const ENV_APP_CODE: &str = "APIG_APP_CODE";

/// `[credentials.default]` for `--auth`, from the environment variables the README documents.
pub(super) fn env_credentials(auth: Auth, sources: &dyn Sources) -> Option<Table> {
    let env_ref = |name: &str| {
        let mut t = Table::new();
        t.insert("env".into(), name.into());
        Value::Table(t)
    };
    let mut creds = Table::new();
    match auth {
        Auth::None => return None,
        // The SDKs' chain, with CCE Pod Identity before the ECS metadata
        // service (DESIGN §11).
        Auth::Aksk => {
            creds.insert("type".into(), "aksk".into());
            creds.insert("source".into(), "auto".into());
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
pub(super) fn flag_problem(p: Problem) -> Problem {
    name_the_source(p, "--auth")
}

/// As [`flag_problem`], for `token` (which has no `--auth`): a missing
/// value is named by its environment variable alone.
pub(super) fn env_problem(p: Problem) -> Problem {
    name_the_source(p, "")
}

/// Names the flag or variable a flag-built config's problem comes from;
/// `auth` is what to call the credentials' source (`--auth`, or nothing).
fn name_the_source(mut p: Problem, auth: &str) -> Problem {
    let flag = if p.path.starts_with("server.listen") {
        p.message = p.message.replace(
            "Set server.allow_remote = true if that is intended",
            "Pass --allow-remote if that is intended",
        );
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
        match var.filter(|_| p.message.starts_with("is required")) {
            Some(var) => p.message = format!("set {var}"),
            // e.g. "environment variable HUAWEICLOUD_SDK_AK is not set": already names it.
            None if auth.is_empty() => {
                return Problem {
                    path: String::new(),
                    ..p
                };
            }
            None => {}
        }
        auth
    } else {
        return p;
    };
    p.path = flag.to_owned();
    p
}
