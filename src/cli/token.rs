//! `modelarts-proxy token`: prints a valid IAM token on stdout (like
//! `gcloud auth print-access-token`).

use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::env::{Auth, env_credentials, env_problem};
use super::{EXIT_CONFIG, EXIT_USAGE, config_path, print_problems};
use crate::auth::Provider;
use crate::config::walk::Problem;
use crate::config::{self, Credentials};
use crate::credentials::System;
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Config file; without it, the HUAWEICLOUD_IAM_* variables of `run --auth token`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which [credentials.NAME] (default: the only token credentials in the file).
    #[arg(long, value_name = "NAME")]
    credentials: Option<String>,
}

pub(super) async fn token(args: TokenArgs) -> u8 {
    let (validated, origin) = match config_path(&args.config) {
        Some(path) => (
            load_token_credentials(&path, args.credentials.as_deref()),
            path.display().to_string(),
        ),
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
                .map_err(|ps| ps.into_iter().map(env_problem).collect());
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
    let (name, spec) = match tokens.as_slice() {
        [(name, spec)] => ((*name).clone(), (*spec).clone()),
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
    // Only this credential (and the one it assumes an agency with) is fetched.
    let mut config = config;
    let base = match &spec.source {
        config::TokenSource::Agency { agency, .. } => Some(agency.base.clone()),
        _ => None,
    };
    config
        .credentials
        .retain(|n, _| *n == name || Some(n) == base.as_ref());
    for route in &mut config.routes {
        route.credentials = Some(name.clone());
    }
    let state = match State::build(config) {
        Ok(s) => s,
        Err(problems) => {
            print_problems(&problems, &origin);
            return EXIT_CONFIG;
        }
    };
    let Some(Provider::Token { token, .. }) = state.providers.get(&name) else {
        return EXIT_CONFIG;
    };
    // IAM may take its time; a token that cannot be fetched fails at once.
    match super::check::first_fetch(token, Duration::from_secs(60)).await {
        Ok(token) => {
            println!("{}", String::from_utf8_lossy(token.value.header.as_bytes()));
            eprintln!("# valid until {}", token.expires_at.to_rfc3339());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Reads and validates only the token credentials to use (`--credentials
/// NAME`, else the only `type = "token"` table): another credential's
/// missing secret does not stop `token`.
fn load_token_credentials(
    path: &std::path::Path,
    name: Option<&str>,
) -> Result<config::Validated, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    let table = config::parse(&text)?;
    match name
        .map(str::to_owned)
        .or_else(|| config::pick_credentials(&table, None, Some("token")))
    {
        Some(name) => config::validate_one(&table, &name, &System),
        // None or several: the whole file, and the checks below say which.
        None => config::validate(&table, &System),
    }
}
