//! Configuration: the TOML file (DESIGN §4) turned into typed runtime config.
//!
//! Two phases, as in vector and linkerd2-proxy: the file is parsed into a
//! TOML table, then [`validate`] walks it key by key into [`Config`],
//! collecting *every* problem with its key path. The runtime never sees TOML.

pub mod walk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};
use toml::Value;

use crate::credentials::{self, SecretSource, Sources};
use crate::secret::Secret;
use crate::signer::{AkSk, SigningKey};
use walk::{Problem, Report, Section, check_keys, type_name};

/// The gateway rejects bodies over 12 MB (APIG "API Request Signing Guide").
pub const DEFAULT_MAX_BODY: u64 = 12 * 1024 * 1024;
/// The gateway cuts a request off after 40 s without a response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);
/// How long in-flight requests may finish after SIGTERM; below Kubernetes'
/// default 30 s `terminationGracePeriodSeconds` would be safer per pod, but
/// matching it lets long predictions finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Where the daemon listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: Server,
    /// Sorted longest prefix first, so the first match wins.
    pub routes: Vec<Route>,
    pub credentials: BTreeMap<String, Credentials>,
    pub upstream_tls: UpstreamTls,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub allow_remote: bool,
    pub max_body: u64,
    pub timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec![DEFAULT_LISTEN.parse().expect("valid default")],
            admin_listen: None,
            allow_remote: false,
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// How an AK/SK route treats the body (DESIGN §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadMode {
    /// The official SDK's rule: unsigned unless the content type starts with
    /// `application/json` or `application/bson`.
    Auto,
    /// Buffer the body (within `max_body`) and sign its SHA-256.
    Signed,
    /// Send `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` and stream the body.
    Unsigned,
}

impl std::fmt::Display for PayloadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PayloadMode::Auto => "auto",
            PayloadMode::Signed => "signed",
            PayloadMode::Unsigned => "unsigned",
        })
    }
}

/// Where a route forwards to, kept exactly as written: the Host header and
/// the signature carry the authority verbatim (SPEC quirk 12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The upstream's path, e.g. `/v1/infers/abc`; empty for a bare host.
    pub base_path: String,
}

impl Upstream {
    /// `scheme://authority/base_path`, as written in the config.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[derive(Clone, Debug)]
pub struct Route {
    /// As written in the config, for messages and metrics labels.
    pub prefix: String,
    /// Without a trailing `/` (`/` becomes empty): matches itself and `{prefix}/…`.
    pub match_prefix: String,
    pub upstream: Upstream,
    /// A key of [`Config::credentials`]; `None` forwards without authentication.
    pub credentials: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub payload: PayloadMode,
    pub timeout: Duration,
    pub max_body: u64,
}

/// A `[credentials.NAME]` table, resolved.
#[derive(Clone, Debug)]
pub enum Credentials {
    AkSk(Arc<AkSkCredentials>),
}

/// Resolved AK/SK credentials and where they came from (never the secret).
#[derive(Clone, Debug)]
pub struct AkSkCredentials {
    pub key: AkSk,
    /// The same key with its HMAC key schedule precomputed.
    pub signing_key: SigningKey,
    /// Sent and signed as `X-Project-Id` when set.
    pub project_id: Option<String>,
    pub origin: String,
}

impl AkSkCredentials {
    pub fn new(key: AkSk, project_id: Option<String>, origin: impl Into<String>) -> Self {
        AkSkCredentials {
            signing_key: SigningKey::new(&key),
            key,
            project_id,
            origin: origin.into(),
        }
    }
}

/// How the proxy trusts upstream TLS certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    pub roots: Roots,
    /// Extra PEM CA certificates, e.g. a private CA in front of a test gateway.
    pub ca_file: Option<PathBuf>,
    /// Off only for debugging; `check` warns.
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store, falling back to the built-in Mozilla
    /// roots when it is empty (distroless images).
    #[default]
    System,
    /// Only the built-in Mozilla roots (webpki-roots).
    Webpki,
    /// No public roots: only `ca_file`.
    None,
}

/// The outcome of validation: the config, or every error; warnings either way.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Top-level keys.
const TOP_KEYS: &[&str] = &["server", "route", "credentials", "upstream_tls"];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "allow_remote",
    "max_body",
    "timeout",
    "shutdown_grace",
];
const ROUTE_KEYS: &[&str] = &[
    "prefix",
    "upstream",
    "credentials",
    "headers",
    "payload",
    "timeout",
    "max_body",
];
const TLS_KEYS: &[&str] = &["roots", "ca_file", "insecure_skip_verify"];
const AKSK_KEYS: &[&str] = &[
    "type",
    "access_key",
    "secret_key",
    "security_token",
    "csv",
    "source",
    "project_id",
];
const TOKEN_KEYS: &[&str] = &[
    "type",
    "iam_endpoint",
    "region",
    "user",
    "password",
    "domain",
    "project",
    "project_id",
    "refresh_margin",
];
const APIKEY_KEYS: &[&str] = &["type", "app_code", "header", "prefix"];

/// Headers the proxy owns; a route may not set them: the client credential
/// headers it strips, the hop-by-hop headers, and the framing it controls.
fn is_reserved_header(name: &str) -> bool {
    matches!(name, "host" | "content-length")
        || crate::proxy::CLIENT_CREDENTIAL_HEADERS.contains(&name)
        || crate::proxy::HOP_BY_HOP.contains(&name)
}

/// Parses and validates a config file's text. `sources` reads the
/// environment and files that secrets refer to.
pub fn load(text: &str, sources: &dyn Sources) -> Result<Validated, Vec<Problem>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let msg = e.message().to_owned();
            let place = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default();
            return Err(vec![Problem {
                path: String::new(),
                message: format!("{place}invalid TOML: {msg}"),
            }]);
        }
    };
    validate(&table, sources)
}

/// Validates a parsed config; see [`load`].
pub fn validate(table: &toml::Table, sources: &dyn Sources) -> Result<Validated, Vec<Problem>> {
    let mut report = Report::default();
    check_keys(&mut report, table, "", TOP_KEYS);
    let root = Section::new(table, "");

    let server = match root.table(&mut report, "server") {
        Some(s) => server(&mut report, &s),
        None => Server::default(),
    };
    let upstream_tls = match root.table(&mut report, "upstream_tls") {
        Some(s) => upstream_tls(&mut report, &s),
        None => UpstreamTls::default(),
    };

    let mut credentials = BTreeMap::new();
    let mut credential_names = Vec::new();
    if let Some(creds) = root.table(&mut report, "credentials") {
        for (name, value) in creds.table {
            let path = format!("credentials.{name}");
            credential_names.push(name.clone());
            let Value::Table(t) = value else {
                report.error(
                    &path,
                    format!("expected a table, found {}", type_name(value)),
                );
                continue;
            };
            if let Some(c) = credential(&mut report, &Section::new(t, path), sources) {
                credentials.insert(name.clone(), c);
            }
        }
    }

    let mut routes = Vec::new();
    match table.get("route") {
        None => report.error("route", "at least one [[route]] is required"),
        Some(Value::Array(items)) if items.is_empty() => {
            report.error("route", "at least one [[route]] is required")
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("route[{i}]");
                match item {
                    Value::Table(t) => {
                        let section = Section::new(t, path);
                        if let Some(r) = route(&mut report, &section, &server, &credential_names) {
                            routes.push(r);
                        }
                    }
                    other => report.error(
                        path,
                        format!("expected a table, found {}", type_name(other)),
                    ),
                }
            }
        }
        Some(other) => report.error(
            "route",
            format!(
                "expected an array of tables ([[route]]), found {}",
                type_name(other)
            ),
        ),
    }
    for (i, r) in routes.iter().enumerate() {
        if let Some(prev) = routes[..i]
            .iter()
            .find(|p| p.match_prefix == r.match_prefix)
        {
            report.error(
                "route",
                format!(
                    "two routes have the same prefix ({:?} and {:?})",
                    prev.prefix, r.prefix
                ),
            );
        }
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.match_prefix.len()));

    if report.errors.is_empty() {
        Ok(Validated {
            config: Config {
                server,
                routes,
                credentials,
                upstream_tls,
            },
            warnings: report.warnings,
        })
    } else {
        report.errors.sort_by(|a, b| a.path.cmp(&b.path));
        Err(report.errors)
    }
}

fn server(report: &mut Report, s: &Section<'_>) -> Server {
    check_keys(report, s.table, &s.path, SERVER_KEYS);
    let d = Server::default();
    let allow_remote = s.bool(report, "allow_remote").unwrap_or(false);
    let listen = match s.get("listen") {
        None => d.listen.clone(),
        Some(Value::String(a)) => address(report, &s.key_path("listen"), a, allow_remote)
            .into_iter()
            .collect(),
        Some(Value::Array(items)) if items.is_empty() => {
            report.error(s.key_path("listen"), "needs at least one address");
            Vec::new()
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let path = format!("{}[{i}]", s.key_path("listen"));
                match v {
                    Value::String(a) => address(report, &path, a, allow_remote),
                    other => {
                        report.error(
                            path,
                            format!("expected an address string, found {}", type_name(other)),
                        );
                        None
                    }
                }
            })
            .collect(),
        Some(other) => {
            report.error(
                s.key_path("listen"),
                format!(
                    "expected an address or a list of addresses, found {}",
                    type_name(other)
                ),
            );
            Vec::new()
        }
    };
    // The admin listener serves health and metrics only, no credentials, so it
    // may bind beyond loopback (kubelet probes come from the node) without
    // allow_remote, which would also open the proxy listener's guards.
    let admin_listen = s
        .str(report, "admin_listen")
        .and_then(|a| address(report, &s.key_path("admin_listen"), a, true));
    let max_body = s.size(report, "max_body").unwrap_or(d.max_body);
    if max_body > DEFAULT_MAX_BODY {
        report.warn(
            s.key_path("max_body"),
            "is above the gateway's 12 MiB limit; APIG will reject such bodies",
        );
    }
    Server {
        listen,
        admin_listen,
        allow_remote,
        max_body,
        timeout: s.duration(report, "timeout").unwrap_or(d.timeout),
        shutdown_grace: s
            .duration(report, "shutdown_grace")
            .unwrap_or(d.shutdown_grace),
    }
}

/// Parses a listen address; a non-loopback one needs `allow_remote = true`.
pub fn address(
    report: &mut Report,
    path: &str,
    text: &str,
    allow_remote: bool,
) -> Option<SocketAddr> {
    let Ok(addr) = text.parse::<SocketAddr>() else {
        report.error(
            path,
            format!("invalid address {text:?}; write IP:PORT, e.g. \"127.0.0.1:8080\""),
        );
        return None;
    };
    if !addr.ip().is_loopback() && !allow_remote {
        report.error(
            path,
            format!(
                "{addr} is not a loopback address; anyone who can reach it could use your \
                 credentials. Set server.allow_remote = true if that is intended"
            ),
        );
        return None;
    }
    Some(addr)
}

fn upstream_tls(report: &mut Report, s: &Section<'_>) -> UpstreamTls {
    check_keys(report, s.table, &s.path, TLS_KEYS);
    let roots = match s.str(report, "roots") {
        None | Some("system") => Roots::System,
        Some("webpki") => Roots::Webpki,
        Some("none") => Roots::None,
        Some(other) => {
            report.error(
                s.key_path("roots"),
                format!("must be \"system\", \"webpki\" or \"none\", not {other:?}"),
            );
            Roots::System
        }
    };
    let ca_file = s.str(report, "ca_file").map(PathBuf::from);
    if roots == Roots::None && ca_file.is_none() {
        report.error(
            s.key_path("roots"),
            "\"none\" needs upstream_tls.ca_file, or no https upstream can be trusted",
        );
    }
    let insecure_skip_verify = s.bool(report, "insecure_skip_verify").unwrap_or(false);
    if insecure_skip_verify {
        report.warn(
            s.key_path("insecure_skip_verify"),
            "upstream certificates are not verified: anyone on the path can read your requests",
        );
    }
    UpstreamTls {
        roots,
        ca_file,
        insecure_skip_verify,
    }
}

fn route(
    report: &mut Report,
    s: &Section<'_>,
    server: &Server,
    credential_names: &[String],
) -> Option<Route> {
    check_keys(report, s.table, &s.path, ROUTE_KEYS);
    let prefix = s.str(report, "prefix").unwrap_or("/");
    if !prefix.starts_with('/') {
        report.error(
            s.key_path("prefix"),
            format!("must start with '/', got {prefix:?}"),
        );
    }
    let upstream = s.require(report, "upstream", |r| s.str(r, "upstream"));
    let upstream = upstream.and_then(|u| parse_upstream(report, &s.key_path("upstream"), u));
    let credentials = s.str(report, "credentials").map(str::to_owned);
    if let Some(name) = &credentials
        && !credential_names.contains(name)
    {
        {
            let known = if credential_names.is_empty() {
                "there are no [credentials.NAME] tables".to_owned()
            } else {
                format!("known: {}", credential_names.join(", "))
            };
            report.error(
                s.key_path("credentials"),
                format!("no [credentials.{name}] table ({known})"),
            );
        }
    }
    let mut headers = Vec::new();
    if let Some(h) = s.table(report, "headers") {
        for (name, value) in h.table {
            let path = h.key_path(name);
            let Value::String(value) = value else {
                report.error(
                    path,
                    format!("expected a string, found {}", type_name(value)),
                );
                continue;
            };
            let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                report.error(path, "is not a valid header name");
                continue;
            };
            if hn.as_str().contains('_') {
                report.warn(
                    &path,
                    "is sent but not signed: the official SDK skips header names containing '_' (use '-')",
                );
            }
            if is_reserved_header(hn.as_str()) {
                report.error(path, "is set by the proxy itself and cannot be configured");
                continue;
            }
            // Trimmed as the signer trims, so the wire carries what is signed.
            match HeaderValue::from_str(crate::signer::canonical::trim_header_value(value)) {
                Ok(hv) => headers.push((hn, hv)),
                Err(_) => report.error(path, "is not a valid header value (visible ASCII only)"),
            }
        }
    }
    let payload = match s.str(report, "payload") {
        None | Some("auto") => PayloadMode::Auto,
        Some("signed") => PayloadMode::Signed,
        Some("unsigned") => PayloadMode::Unsigned,
        Some(other) => {
            report.error(
                s.key_path("payload"),
                format!("must be \"auto\", \"signed\" or \"unsigned\", not {other:?}"),
            );
            PayloadMode::Auto
        }
    };
    let timeout = s.duration(report, "timeout").unwrap_or(server.timeout);
    let max_body = s.size(report, "max_body").unwrap_or(server.max_body);
    let match_prefix = prefix.trim_end_matches('/').to_owned();
    Some(Route {
        prefix: prefix.to_owned(),
        match_prefix,
        upstream: upstream?,
        credentials,
        headers,
        payload,
        timeout,
        max_body,
    })
}

fn parse_upstream(report: &mut Report, path: &str, text: &str) -> Option<Upstream> {
    let bad = |report: &mut Report, why: &str| {
        report.error(path, format!("{why}: {text:?}; write e.g. \"https://<id>.apig.cn-north-4.huaweicloudapis.com/v1/infers/<service-id>\""));
        None
    };
    let Ok(uri) = text.parse::<Uri>() else {
        return bad(report, "not a valid URL");
    };
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return bad(report, "needs a scheme and a host");
    };
    if scheme != Scheme::HTTPS && scheme != Scheme::HTTP {
        return bad(report, "the scheme must be https or http");
    }
    if authority.as_str().contains('@') {
        return bad(
            report,
            "user:password@ in the URL is not supported; use [credentials]",
        );
    }
    if uri.query().is_some() || text.contains('#') {
        return bad(report, "the upstream URL may not have a query or fragment");
    }
    // `http::Uri` reports "/" for a bare host; keep what was written.
    let base_path = if text.split_once("://").is_some_and(|(_, r)| r.contains('/')) {
        uri.path().to_owned()
    } else {
        String::new()
    };
    Some(Upstream {
        scheme,
        authority,
        base_path,
    })
}

fn credential(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Option<Credentials> {
    let kind = s.require(report, "type", |r| s.str(r, "type"))?;
    match kind {
        "aksk" => aksk(report, s, sources).map(|c| Credentials::AkSk(Arc::new(c))),
        "token" => {
            check_keys(report, s.table, &s.path, TOKEN_KEYS);
            report.error(
                s.key_path("type"),
                "IAM token credentials (type = \"token\") are not supported yet; use type = \"aksk\"",
            );
            None
        }
        "apikey" => {
            check_keys(report, s.table, &s.path, APIKEY_KEYS);
            report.error(
                s.key_path("type"),
                "API-key credentials (type = \"apikey\") are not supported yet; use type = \"aksk\"",
            );
            None
        }
        other => {
            report.error(
                s.key_path("type"),
                format!("must be \"aksk\", \"token\" or \"apikey\", not {other:?}"),
            );
            None
        }
    }
}

/// Reads `{ env = … }`, `{ file = … }` or a literal string at `key`.
pub fn secret_source(report: &mut Report, s: &Section<'_>, key: &str) -> Option<SecretSource> {
    let path = s.key_path(key);
    match s.get(key)? {
        Value::String(v) => {
            report.warn(&path, "is a literal secret in the config file; prefer { env = \"…\" } or { file = \"…\" }");
            Some(SecretSource::Literal(Secret::new(v.clone())))
        }
        Value::Table(t) => {
            let inner = Section::new(t, path.clone());
            check_keys(report, t, &path, &["env", "file"]);
            match (inner.str(report, "env"), inner.str(report, "file")) {
                (Some(e), None) => Some(SecretSource::Env(e.to_owned())),
                (None, Some(f)) => Some(SecretSource::File(PathBuf::from(f))),
                _ => {
                    report.error(
                        path,
                        "needs exactly one of env = \"NAME\" or file = \"PATH\"",
                    );
                    None
                }
            }
        }
        other => {
            report.error(
                path,
                format!(
                    "expected a string or {{ env = … }} / {{ file = … }}, found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

fn aksk(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Option<AkSkCredentials> {
    check_keys(report, s.table, &s.path, AKSK_KEYS);
    let project_id = s.str(report, "project_id").map(str::to_owned);
    let source = s.str(report, "source");
    let csv = s.str(report, "csv");
    let has_keys = s.get("access_key").is_some() || s.get("secret_key").is_some();
    let resolve = |report: &mut Report, key: &str, src: &SecretSource| match src.resolve(sources) {
        Ok(v) => Some(v),
        Err(e) => {
            report.error(s.key_path(key), e);
            None
        }
    };
    match (source, csv, has_keys) {
        (Some("metadata"), None, false) => {
            report.error(
                s.key_path("source"),
                "\"metadata\" (ECS temporary credentials) is not supported yet; use keys, csv or source = \"env\"",
            );
            None
        }
        (Some("env"), None, false) => match credentials::from_sdk_chain(sources) {
            Ok(found) => Some(AkSkCredentials::new(
                found.key,
                project_id.or(found.project_id),
                found.origin,
            )),
            Err(e) => {
                report.error(s.key_path("source"), e);
                None
            }
        },
        (Some(other), None, false) => {
            report.error(
                s.key_path("source"),
                format!("must be \"env\" or \"metadata\", not {other:?}"),
            );
            None
        }
        (None, Some(path), false) => {
            let text = match sources.read_file(path.as_ref()) {
                Ok(t) => t,
                Err(e) => {
                    report.error(s.key_path("csv"), format!("cannot read {path}: {e}"));
                    return None;
                }
            };
            match credentials::parse_credentials_csv(&text) {
                Ok((access_key, secret_key)) => Some(AkSkCredentials::new(
                    AkSk {
                        access_key,
                        secret_key,
                        security_token: None,
                    },
                    project_id,
                    format!("csv {path}"),
                )),
                Err(e) => {
                    report.error(s.key_path("csv"), format!("{path}: {e}"));
                    None
                }
            }
        }
        (None, None, _) => {
            let ak = s.require(report, "access_key", |r| secret_source(r, s, "access_key"));
            let sk = s.require(report, "secret_key", |r| secret_source(r, s, "secret_key"));
            let token = secret_source(report, s, "security_token");
            let ak = ak.and_then(|src| resolve(report, "access_key", &src));
            let sk = sk.and_then(|src| resolve(report, "secret_key", &src));
            let token = match token {
                Some(src) => Some(resolve(report, "security_token", &src)?),
                None => None,
            };
            let (ak, sk) = (ak?, sk?);
            Some(AkSkCredentials::new(
                AkSk {
                    access_key: ak.expose().trim().to_owned(),
                    secret_key: sk,
                    security_token: token,
                },
                project_id,
                "config keys",
            ))
        }
        _ => {
            report.error(
                &s.path,
                "give the key one way only: access_key + secret_key, csv = \"…\", or source = \"env\" / \"metadata\"",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
