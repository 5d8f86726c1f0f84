//! `modelarts-proxy sign`: a signed request as a ready-to-paste `curl`
//! command, for debugging a signature. It uses the same decoration as the
//! proxy ([`aksk::decorate`]), so what it prints is what the proxy sends.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{ENV_CONFIG, EXIT_CONFIG, EXIT_USAGE};
use crate::auth::aksk::{self, AkSkCredentials, BodyHash, Target};
use crate::config::{self, Credentials, PayloadMode};
use crate::credentials::{self, Sources, System};

#[derive(clap::Args, Debug)]
pub struct SignArgs {
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

pub(super) fn sign(args: SignArgs) -> u8 {
    match sign_command(&args, &System, Utc::now()) {
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

type Failure = (u8, String);

fn usage(message: String) -> Failure {
    (EXIT_USAGE, message)
}

/// Builds the curl command (stdout) and the signing stages (stderr).
fn sign_command(
    args: &SignArgs,
    sources: &dyn Sources,
    now: DateTime<Utc>,
) -> Result<(String, String), Failure> {
    let (scheme, authority, path, query) = split_url(&args.url).map_err(usage)?;
    let method = args.method.to_ascii_uppercase();
    let creds = signing_credentials(args, sources)?;
    let (mut given, body, body_arg) = request_parts(args, authority)?;
    // The user's headers are all signed; the proxy's own are added by the decoration.
    let mut headers = HeaderMap::new();
    let mut names = Vec::new();
    for (name, value) in &given {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| usage(format!("{name:?} is not a valid header name")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| usage(format!("header {name} has an invalid value")))?;
        headers.append(n.clone(), v);
        names.push(n);
    }
    let mode = match args.payload.as_str() {
        "signed" => PayloadMode::Signed,
        "unsigned" => PayloadMode::Unsigned,
        _ => PayloadMode::Auto,
    };
    let content_type = aksk::single_value(&headers, &http::header::CONTENT_TYPE)
        .map_err(|e| usage(e.to_string()))?;
    let hash = if aksk::is_unsigned(mode, content_type) {
        BodyHash::Unsigned {
            empty: body.is_empty(),
        }
    } else {
        BodyHash::Bytes(&body)
    };
    let target = Target {
        method: &method,
        path,
        query,
    };
    let also_sign: Vec<&HeaderName> = names.iter().collect();
    let out = aksk::decorate(&creds, target, &mut headers, hash, &also_sign, now)
        .map_err(|e| (1, e.to_string()))?;
    // The headers the decoration added, in the order the gateway's docs show them.
    for (name, display) in [
        ("x-security-token", "X-Security-Token"),
        ("x-project-id", "X-Project-Id"),
        ("x-sdk-content-sha256", "X-Sdk-Content-Sha256"),
        ("x-sdk-date", "X-Sdk-Date"),
        ("authorization", "Authorization"),
    ] {
        if !names.iter().any(|n| n == name)
            && let Some(v) = headers.get(name)
        {
            given.push((
                display.to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let url = format!(
        "{scheme}://{authority}{path}{}",
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let curl = curl_command(&method, &url, &given, body_arg.as_deref(), body.is_empty());
    let debug = format!(
        "# canonical request:\n{}\n# string to sign:\n{}\n# (the X-Sdk-Date is valid for 15 minutes)",
        out.canonical_request.redacted(),
        out.string_to_sign
    );
    Ok((curl, debug))
}

/// The AK/SK to sign with: from `-c` (or `MODELARTS_PROXY_CONFIG`), else
/// the SDK chain. Only the credential used is read.
fn signing_credentials(args: &SignArgs, sources: &dyn Sources) -> Result<AkSkCredentials, Failure> {
    let config = args.config.clone().or_else(|| {
        sources
            .env(ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let Some(path) = config else {
        let found = credentials::from_sdk_chain(sources).map_err(|e| (EXIT_CONFIG, e))?;
        return Ok(AkSkCredentials::new(
            found.key,
            found.project_id,
            found.origin,
        ));
    };
    let text = sources
        .read_file(&path)
        .map_err(|e| (EXIT_CONFIG, format!("cannot read {}: {e}", path.display())))?;
    let problems = |ps: Vec<config::walk::Problem>| {
        (
            EXIT_CONFIG,
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n       "),
        )
    };
    let table = config::parse(&text).map_err(problems)?;
    let name = match &args.credentials {
        Some(n) => n.clone(),
        None => config::pick_credentials(&table, Some(&args.url), None).ok_or_else(|| {
            usage(
                "no route's upstream matches the URL; pick credentials with --credentials NAME"
                    .into(),
            )
        })?,
    };
    // Only the credential used is read: another's missing secret is not our problem.
    let v = config::validate_one(&table, &name, sources).map_err(problems)?;
    match v.config.credentials.get(&name) {
        Some(Credentials::AkSk(c)) => Ok(AkSkCredentials::from(&c.current)),
        Some(other) => Err(usage(format!(
            "[credentials.{name}] is {}; sign needs AK/SK credentials",
            other.describe()
        ))),
        None => Err(usage(format!(
            "no [credentials.{name}] in {}",
            path.display()
        ))),
    }
}

/// The headers as given (Host first, Content-Type defaulted for a body),
/// the body, and its curl argument.
#[allow(clippy::type_complexity)]
fn request_parts(
    args: &SignArgs,
    authority: &str,
) -> Result<(Vec<(String, String)>, Vec<u8>, Option<String>), Failure> {
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
        Some(d) => {
            let bytes = match d.strip_prefix('@') {
                Some(file) => {
                    std::fs::read(file).map_err(|e| usage(format!("cannot read {file}: {e}")))?
                }
                None => d.as_bytes().to_vec(),
            };
            (bytes, Some(format!("--data-binary {}", shell_quote(d))))
        }
    };
    if body_arg.is_some() && !has(&headers, "content-type") {
        // The SDK's default; also stops curl adding an unsigned form content type.
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    Ok((headers, body, body_arg))
}

/// `curl -sS --path-as-is [-X M] 'URL' -H '…'… [--data-binary …]` (no
/// progress meter, errors still shown)
fn curl_command(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body_arg: Option<&str>,
    no_body: bool,
) -> String {
    let mut curl = String::from("curl -sS --path-as-is");
    match method {
        "GET" if no_body => {}
        "HEAD" => curl.push_str(" --head"),
        m => curl.push_str(&format!(" -X {m}")),
    }
    curl.push_str(&format!(" {}", shell_quote(url)));
    for (k, v) in headers {
        curl.push_str(&format!(" \\\n  -H {}", shell_quote(&format!("{k}: {v}"))));
    }
    if let Some(arg) = body_arg {
        curl.push_str(&format!(" \\\n  {arg}"));
    }
    curl
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::credentials::fake::FakeSources;
    use crate::signer;
    use clap::Parser;

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
                "curl -sS --path-as-is -X POST 'https://h.example.com:443/v1/a%2Fb/./c?q=a+b&flag'"
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
}
