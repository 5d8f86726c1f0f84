//! Configuration: the TOML file (DESIGN §4) turned into typed runtime config.
//!
//! Two phases, as in vector and linkerd2-proxy: the file is parsed into a
//! TOML table, then [`validate`] walks it key by key into [`Config`],
//! collecting *every* problem with its key path. The runtime never sees TOML.

pub mod credentials;
pub mod identity;
pub mod server;
pub mod telemetry;
pub mod traffic;
pub mod upstream;
pub mod walk;

pub use credentials::{
    AgencySpec, AkSkSpec, ApiKeySpec, Base, Credentials, DEFAULT_APP_CODE_HEADER,
    DEFAULT_BREAKER_COOLDOWN, DEFAULT_MAX_WAIT, DEFAULT_METADATA_ENDPOINT, DEFAULT_REFRESH_MARGIN,
    KeySource, OidcSpec, PodIdentitySpec, ProjectScope, ResolvedKey, StsOidcSpec, TemporarySource,
    TemporarySpec, TokenRequest, TokenSource, TokenSpec, api_key_value, secret_source,
};
pub use server::{
    DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_SHUTDOWN_GRACE, DEFAULT_TIMEOUT, Listen,
    RequireHeader, Server, address,
};
pub use traffic::{Fallback, Pacing, Retry};
pub use upstream::{Egress, EgressProxy, Http2, Roots, UpstreamTls, redact_userinfo};

use std::collections::BTreeMap;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};
use toml::Value;

use crate::credentials::Sources;
use walk::{Problem, Report, Section, check_keys, type_name};

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: Server,
    /// Sorted longest prefix first, so the first match wins.
    pub routes: Vec<Route>,
    pub credentials: BTreeMap<String, Credentials>,
    pub upstream_tls: UpstreamTls,
    /// Direct, or through an egress HTTP proxy (`[upstream_proxy]` or the
    /// `HTTPS_PROXY` family of variables).
    pub egress: Egress,
    /// OpenTelemetry traces, when an endpoint is configured (DESIGN §13).
    pub telemetry: Option<telemetry::Telemetry>,
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
    /// What failed attempts are tried again (DESIGN §12).
    pub retry: Retry,
    /// Rate, concurrency and the queue in front of them.
    pub pacing: Pacing,
    /// Targets tried in order after `upstream`.
    pub fallbacks: Vec<Fallback>,
    /// Throttling moves to the next target too, for another region's quota.
    pub fallback_on_throttle: bool,
    /// A streaming JSON request asks for its usage (DESIGN §13).
    pub stream_usage: bool,
}

/// The outcome of validation: the config, or every error; warnings either way.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Top-level keys.
const TOP_KEYS: &[&str] = &[
    "server",
    "route",
    "credentials",
    "upstream_tls",
    "upstream_proxy",
    "telemetry",
];
/// The keys of a `[[route]]` table.
pub const ROUTE_KEYS: &[&str] = &[
    "prefix",
    "upstream",
    "credentials",
    "headers",
    "payload",
    "timeout",
    "max_body",
    "retry",
    "rate",
    "burst",
    "concurrency",
    "queue_timeout",
    "fallback",
    "fallback_on_throttle",
    "stream_usage",
];

/// Parses and validates a config file's text. `sources` reads the
/// environment and files that secrets refer to.
pub fn load(text: &str, sources: &dyn Sources) -> Result<Validated, Vec<Problem>> {
    validate(&parse(text)?, sources)
}

/// Parses config text into a TOML table (the first phase of [`load`]).
pub fn parse(text: &str) -> Result<toml::Table, Vec<Problem>> {
    text.parse().map_err(|e: toml::de::Error| {
        let place = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        vec![Problem {
            path: String::new(),
            message: format!("{place}invalid TOML: {}", e.message()),
        }]
    })
}

/// The credentials name a command should use when it is not told: the one
/// whose route's upstream `url` starts with (for `sign`), else the only
/// table of `kind` (`"token"`, or any when `None`).
pub fn pick_credentials(
    table: &toml::Table,
    url: Option<&str>,
    kind: Option<&str>,
) -> Option<String> {
    let by_url = url.and_then(|url| {
        table.get("route")?.as_array()?.iter().find_map(|r| {
            let up = r.get("upstream")?.as_str()?;
            url.starts_with(up.trim_end_matches('/'))
                .then(|| r.get("credentials")?.as_str().map(str::to_owned))
                .flatten()
        })
    });
    by_url.or_else(|| {
        let creds = table.get("credentials")?.as_table()?;
        let mut names = creds.iter().filter(|(_, c)| {
            kind.is_none_or(|k| c.get("type").and_then(|t| t.as_str()) == Some(k))
        });
        let (first, _) = names.next()?;
        names.next().is_none().then(|| first.clone())
    })
}

/// Validates only what one credential needs: `[credentials.{name}]` and
/// the routes that use it, with `[server]` and `[upstream_tls]`; every other
/// credential (and its secrets) is left out. For `sign` and `token`.
pub fn validate_one(
    table: &toml::Table,
    name: &str,
    sources: &dyn Sources,
) -> Result<Validated, Vec<Problem>> {
    let mut narrow = toml::Table::new();
    for key in ["server", "upstream_tls", "upstream_proxy", "telemetry"] {
        if let Some(v) = table.get(key) {
            narrow.insert(key.to_owned(), v.clone());
        }
    }
    let mut creds = toml::Table::new();
    if let Some(c) = table.get("credentials").and_then(|c| c.get(name)) {
        creds.insert(name.to_owned(), c.clone());
    }
    narrow.insert("credentials".to_owned(), Value::Table(creds));
    let mut routes: Vec<Value> = table
        .get("route")
        .and_then(|r| r.as_array())
        .map(|rs| {
            rs.iter()
                .filter(|r| r.get("credentials").and_then(|c| c.as_str()) == Some(name))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if routes.is_empty() {
        let mut placeholder = toml::Table::new();
        placeholder.insert("upstream".into(), "http://127.0.0.1/".into());
        placeholder.insert("credentials".into(), name.into());
        routes.push(Value::Table(placeholder));
    }
    narrow.insert("route".to_owned(), Value::Array(routes));
    validate(&narrow, sources)
}

/// Validates a parsed config; see [`load`].
pub fn validate(table: &toml::Table, sources: &dyn Sources) -> Result<Validated, Vec<Problem>> {
    let mut report = Report::default();
    check_keys(&mut report, table, "", TOP_KEYS);
    let root = Section::new(table, "");

    let server = match root.table(&mut report, "server") {
        Some(s) => server::server(&mut report, &s, sources),
        None => Server::default(),
    };
    let file_proxy = root.table(&mut report, "upstream_proxy");
    let egress = upstream::egress(&mut report, file_proxy.as_ref(), sources);
    let telemetry_table = root.table(&mut report, "telemetry");
    let telemetry = telemetry::telemetry(&mut report, telemetry_table.as_ref(), sources);
    let upstream_tls = match root.table(&mut report, "upstream_tls") {
        Some(s) => upstream::upstream_tls(&mut report, &s, sources),
        None => UpstreamTls::default(),
    };

    let (mut credentials, credential_names) = credential_tables(&mut report, &root, sources);
    identity::settle_bases(&mut report, &mut credentials);

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
                egress,
                telemetry,
            },
            warnings: report.warnings,
        })
    } else {
        report.errors.sort_by(|a, b| a.path.cmp(&b.path));
        Err(report.errors)
    }
}

/// Each `[credentials.NAME]` that is valid, and every name (valid or not,
/// so that routes naming a broken one are not reported twice).
fn credential_tables(
    report: &mut Report,
    root: &Section<'_>,
    sources: &dyn Sources,
) -> (BTreeMap<String, Credentials>, Vec<String>) {
    let mut credentials = BTreeMap::new();
    let mut credential_names = Vec::new();
    if let Some(creds) = root.table(report, "credentials") {
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
            if let Some(c) = credentials::credential(report, &Section::new(t, path), sources) {
                credentials.insert(name.clone(), c);
            }
        }
    }

    (credentials, credential_names)
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
            if crate::headers::is_reserved(hn.as_str()) {
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
    let retry = traffic::retry(report, s);
    let pacing = traffic::pacing(report, s);
    let fallbacks = traffic::fallbacks(report, s, credential_names);
    let fallback_on_throttle = s.bool(report, "fallback_on_throttle").unwrap_or(false);
    let stream_usage = s.bool(report, "stream_usage").unwrap_or(false);
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
        retry,
        pacing,
        fallbacks,
        fallback_on_throttle,
        stream_usage,
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

#[cfg(test)]
mod tests;
