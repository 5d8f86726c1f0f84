//! How the proxy reaches upstreams: `[upstream_tls]` (certificate trust and
//! HTTP/2) and `[upstream_proxy]` (an egress HTTP proxy, DESIGN §10).

use std::path::PathBuf;

use http::Uri;
use toml::Value;

use super::credentials::{resolve_now, secret_source};
use super::walk::{Report, Section, check_keys, type_name};
use crate::credentials::Sources;
use crate::secret::Secret;

const TLS_KEYS: &[&str] = &["roots", "ca_file", "insecure_skip_verify", "http2"];
const PROXY_KEYS: &[&str] = &["url", "username", "password", "no_proxy"];

/// How the proxy trusts upstream TLS certificates, and speaks to upstreams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    pub roots: Roots,
    /// Extra PEM CA certificates, e.g. a private CA in front of a test gateway.
    pub ca_file: Option<PathBuf>,
    /// Off only for debugging; `check` warns.
    pub insecure_skip_verify: bool,
    pub http2: Http2,
}

/// Which HTTP version to speak to upstreams (`[upstream_tls] http2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Http2 {
    /// HTTP/2 when the upstream offers it by ALPN, else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge for plain http upstreams).
    Http2,
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

/// Where upstream, IAM and metadata connections go: direct, or through an
/// HTTP proxy (`[upstream_proxy]`, else `HTTPS_PROXY` / `HTTP_PROXY` /
/// `ALL_PROXY` / `NO_PROXY` in either case). Loopback and link-local
/// destinations are always reached directly: they are on this host or link,
/// and a proxy elsewhere would reach its own (its own metadata service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    /// For `https://` destinations (a `CONNECT` tunnel).
    pub https: Option<EgressProxy>,
    /// For `http://` destinations (absolute-form requests).
    pub http: Option<EgressProxy>,
    /// Hosts, domains (`.example.com`), IPs and CIDRs reached directly, in
    /// `NO_PROXY` syntax (comma separated).
    pub no_proxy: String,
    /// Where the settings came from, for the startup log and `check`.
    pub origin: &'static str,
}

/// One HTTP proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressProxy {
    /// `http://proxy.example.com:3128/`, without credentials.
    pub url: Uri,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Egress {
    /// True when some destination goes through a proxy.
    pub fn is_proxied(&self) -> bool {
        self.https.is_some() || self.http.is_some()
    }

    /// One line for the startup log and `check`, never with credentials:
    /// `https via proxy:3128, http via proxy:3128 (environment; no_proxy: …)`.
    pub fn describe(&self) -> String {
        if !self.is_proxied() {
            return "direct".to_owned();
        }
        let via = |scheme: &str, p: &Option<EgressProxy>| match p {
            Some(p) => {
                let auth = if p.username.is_some() {
                    " with basic auth"
                } else {
                    ""
                };
                let host = p.url.authority().map(|a| a.as_str()).unwrap_or("?");
                format!("{scheme} via {host}{auth}")
            }
            None => format!("{scheme} direct"),
        };
        let no_proxy = if self.no_proxy.is_empty() {
            String::new()
        } else {
            format!("; no_proxy: {}", self.no_proxy)
        };
        format!(
            "{}, {} ({}{no_proxy}; loopback and link-local always direct)",
            via("https", &self.https),
            via("http", &self.http),
            self.origin
        )
    }
}

/// The variables, first set (and non-empty) wins, as curl reads them.
const HTTPS_VARS: &[&str] = &["HTTPS_PROXY", "https_proxy"];
const HTTP_VARS: &[&str] = &["HTTP_PROXY", "http_proxy"];
const ALL_VARS: &[&str] = &["ALL_PROXY", "all_proxy"];
const NO_VARS: &[&str] = &["NO_PROXY", "no_proxy"];

fn first_env(sources: &dyn Sources, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|&name| {
        sources
            .env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v.trim().to_owned()))
    })
}

/// `[upstream_proxy]` when present, else the environment.
pub(super) fn egress(
    report: &mut Report,
    file: Option<&Section<'_>>,
    sources: &dyn Sources,
) -> Egress {
    let env_no_proxy = first_env(sources, NO_VARS)
        .map(|(_, v)| v)
        .unwrap_or_default();
    if let Some(s) = file {
        let Some((proxy, no_proxy)) = upstream_proxy(report, s, sources) else {
            return Egress::default();
        };
        return Egress {
            https: Some(proxy.clone()),
            http: Some(proxy),
            no_proxy: no_proxy.unwrap_or(env_no_proxy),
            origin: "upstream_proxy",
        };
    }
    let mut from_env = |names: &[&'static str]| {
        let (name, value) = first_env(sources, names)?;
        match parse_proxy_url(&value) {
            Ok(proxy) => Some(proxy),
            Err(why) => {
                report.error(name, format!("{why}: {}", redact_userinfo(&value)));
                None
            }
        }
    };
    let all = from_env(ALL_VARS);
    let https = from_env(HTTPS_VARS).or_else(|| all.clone());
    let http = from_env(HTTP_VARS).or(all);
    Egress {
        origin: if https.is_some() || http.is_some() {
            "environment"
        } else {
            "direct"
        },
        https,
        http,
        no_proxy: env_no_proxy,
    }
}

/// An `http://[user[:password]@]host[:port]` proxy URL from a variable; the
/// scheme may be left out, as curl allows.
fn parse_proxy_url(text: &str) -> Result<EgressProxy, String> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|_| "not a valid proxy URL".to_owned())?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// egress proxies are supported (HTTPS upstreams still get end-to-end TLS through CONNECT)".into());
    }
    let authority = uri.authority().ok_or("the proxy URL has no host")?.as_str();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err("the proxy URL has no host".into());
    }
    let url: Uri = format!("http://{host_port}/")
        .parse()
        .map_err(|_| "not a valid proxy URL".to_owned())?;
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            (
                Some(percent_decode(user)),
                pass.map(|p| Secret::new(percent_decode(p))),
            )
        }
    };
    Ok(EgressProxy {
        url,
        username,
        password,
    })
}

/// `%XX` decoding for proxy user names and passwords (`p%40ss` is `p@ss`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A proxy URL fit for a message: any `user:password@` becomes `***@`.
pub fn redact_userinfo(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

/// `[upstream_proxy]`: the proxy, and its own `no_proxy` list if it has one.
fn upstream_proxy(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<(EgressProxy, Option<String>)> {
    check_keys(report, s.table, &s.path, PROXY_KEYS);
    let url = s
        .require(report, "url", |r| s.str(r, "url"))
        .and_then(|text| {
            let bad = |report: &mut Report, why: &str| {
                report.error(
                    s.key_path("url"),
                    format!(
                        "{why}: {:?}; write e.g. \"http://proxy.example.com:3128\"",
                        redact_userinfo(text)
                    ),
                );
                None
            };
            let Ok(uri) = text.parse::<Uri>() else {
                return bad(report, "not a valid URL");
            };
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return bad(report, "an http:// proxy URL with a host is needed");
            }
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return bad(
                    report,
                    "give the credentials as username and password, not in the URL",
                );
            }
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            format!("http://{authority}/").parse::<Uri>().ok()
        });
    let username = s.str(report, "username").map(str::to_owned);
    let password = secret_source(report, s, "password")
        .and_then(|src| resolve_now(report, s, "password", &src, sources));
    if password.is_some() && username.is_none() {
        report.error(s.key_path("password"), "needs a username");
    }
    let no_proxy = match s.get("no_proxy") {
        None => None,
        Some(Value::Array(items)) => {
            let mut hosts = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(host) => hosts.push(host.trim()),
                    None => report.error(
                        format!("{}[{i}]", s.key_path("no_proxy")),
                        format!("expected a host, found {}", type_name(item)),
                    ),
                }
            }
            Some(hosts.join(","))
        }
        Some(other) => {
            report.error(
                s.key_path("no_proxy"),
                format!("expected a list of hosts, found {}", type_name(other)),
            );
            None
        }
    };
    Some((
        EgressProxy {
            url: url?,
            username,
            password,
        },
        no_proxy,
    ))
}

pub(super) fn upstream_tls(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> UpstreamTls {
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
    if let Some(path) = &ca_file
        && let Err(message) = check_ca_file(path, sources)
    {
        report.error(s.key_path("ca_file"), message);
    }
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
    let http2 = match s.str(report, "http2") {
        None | Some("auto") => Http2::Auto,
        Some("http1") => Http2::Http1,
        Some("http2") => Http2::Http2,
        Some(other) => {
            report.error(
                s.key_path("http2"),
                format!("must be \"auto\", \"http1\" or \"http2\", not {other:?}"),
            );
            Http2::Auto
        }
    };
    UpstreamTls {
        roots,
        ca_file,
        insecure_skip_verify,
        http2,
    }
}

/// A CA file must be readable and hold at least one usable PEM certificate
/// (checked here, so `check` reports it with every other problem).
fn check_ca_file(path: &std::path::Path, sources: &dyn Sources) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let text = sources
        .read_file(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    let mut roots = rustls::RootCertStore::empty();
    if roots.add_parsable_certificates(certs).0 == 0 {
        return Err(format!("{} holds no usable CA certificate", path.display()));
    }
    Ok(())
}
