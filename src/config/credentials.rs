//! `[credentials.NAME]` tables: static AK/SK (keys, the console's csv, the
//! SDK chain), IAM tokens, API keys, and the sources of temporary
//! credentials (DESIGN §4, §10, §11). Static secrets are resolved while
//! validating, so `check` reports a missing one.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use toml::Value;

use super::identity::{self as identity};
pub use super::identity::{AgencySpec, Base, OidcSpec, PodIdentitySpec, StsOidcSpec};
use super::walk::{Report, Section, check_keys, type_name};
use crate::credentials::{self, SecretSource, Sources};
use crate::secret::Secret;
use crate::signer::AkSk;

/// A `[credentials.NAME]` table, validated. Static secrets are resolved
/// already (so `check` reports a missing one); expiring credentials are
/// fetched at run time by the credential providers.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A long-lived AK/SK; the files it came from are re-read when they change.
    AkSk(AkSkSpec),
    /// Temporary AK/SK (ECS metadata, Pod Identity, OIDC, an agency),
    /// refreshed ahead of expiry.
    Temporary(TemporarySpec),
    /// An IAM token, refreshed ahead of expiry.
    Token(TokenSpec),
    /// An API key (APIG app code) sent in a header.
    ApiKey(ApiKeySpec),
}

impl Credentials {
    /// An agency assumed with another credential, which must start first.
    pub fn is_assumed(&self) -> bool {
        self.assumed_with().is_some()
    }

    /// The credential an agency is assumed with.
    pub fn assumed_with(&self) -> Option<&String> {
        match self {
            Credentials::Token(TokenSpec {
                source: TokenSource::Agency { agency, .. },
                ..
            })
            | Credentials::Temporary(TemporarySpec {
                source: TemporarySource::Agency { agency, .. },
                ..
            }) => Some(&agency.base),
            _ => None,
        }
    }

    /// `aksk from environment (…)`, `token for user alice in domain acme, project cn-north-4`: for logs.
    pub fn describe(&self) -> String {
        match self {
            Credentials::AkSk(a) => format!("AK/SK from {}", a.current.origin),
            Credentials::Temporary(t) => match &t.chosen {
                Some(chosen) => format!("{} (auto: {chosen})", t.source.describe()),
                None => t.source.describe(),
            },
            Credentials::Token(t) => t.describe(),
            Credentials::ApiKey(k) => format!("API key in {}", k.header),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AkSkSpec {
    /// The key as read at load time.
    pub current: ResolvedKey,
    /// How to read it again.
    pub source: KeySource,
    /// How long the signature breaker stays open (DESIGN §9).
    pub breaker_cooldown: Duration,
}

/// A resolved AK/SK and where it came from (never the secret).
#[derive(Clone, Debug)]
pub struct ResolvedKey {
    pub key: AkSk,
    /// Sent and signed as `X-Project-Id` when set.
    pub project_id: Option<String>,
    pub origin: String,
}

/// Where a long-lived AK/SK is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Keys {
        access_key: SecretSource,
        secret_key: SecretSource,
        security_token: Option<SecretSource>,
    },
    Csv(PathBuf),
    /// The SDK chain: environment variables, then the profile file.
    SdkChain,
}

/// Temporary AK/SK and where they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporarySpec {
    pub source: TemporarySource,
    /// Sent and signed as `X-Project-Id` when set.
    pub project_id: Option<String>,
    pub refresh_margin: Duration,
    /// How long a request may wait for the first key before 503.
    pub max_wait: Duration,
    pub breaker_cooldown: Duration,
    /// What `source = "auto"` found (`None`: the source was named).
    pub chosen: Option<String>,
}

/// Who issues temporary AK/SK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemporarySource {
    /// The ECS metadata service.
    Metadata { endpoint: Uri },
    /// CCE Pod Identity.
    PodIdentity(PodIdentitySpec),
    /// IAM, for an OIDC id token an identity provider trusts.
    Oidc { oidc: OidcSpec, duration: Duration },
    /// IAM, for an agency assumed by another credential.
    Agency {
        agency: AgencySpec,
        duration: Duration,
    },
    /// IAM5 STS, for an agency that trusts an OIDC identity provider.
    StsOidc {
        sts: StsOidcSpec,
        duration: Duration,
    },
}

impl TemporarySource {
    /// For logs, `check` and the status page; never a secret.
    pub fn describe(&self) -> String {
        match self {
            TemporarySource::Metadata { endpoint } => {
                format!("temporary AK/SK from the ECS metadata service {endpoint}")
            }
            TemporarySource::PodIdentity(p) => format!(
                "temporary AK/SK from CCE Pod Identity {} (token file {})",
                p.endpoint,
                p.token_file.display()
            ),
            TemporarySource::Oidc { oidc, .. } => {
                format!(
                    "temporary AK/SK from IAM {} for {}",
                    oidc.iam_endpoint,
                    oidc.describe()
                )
            }
            TemporarySource::Agency { agency, .. } => format!(
                "temporary AK/SK from IAM {} for {}",
                agency.iam_endpoint,
                agency.describe()
            ),
            TemporarySource::StsOidc { sts, .. } => format!(
                "temporary AK/SK from IAM STS {} for agency {} (id token file {})",
                sts.sts_endpoint,
                sts.agency_urn,
                sts.id_token_file.display()
            ),
        }
    }
}

/// Which project the token is scoped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectScope {
    Name(String),
    Id(String),
}

/// Everything needed to ask IAM for a token (the password is read when needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `https://iam.cn-north-4.myhuaweicloud.com`
    pub iam_endpoint: Uri,
    pub user: String,
    pub password: SecretSource,
    pub domain: String,
    pub project: ProjectScope,
}

impl TokenRequest {
    /// `user alice in domain acme, project cn-north-4`: for messages; never the password.
    pub fn describe(&self) -> String {
        format!(
            "user {} in domain {}, {}",
            self.user,
            self.domain,
            self.project.describe()
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    pub source: TokenSource,
    pub refresh_margin: Duration,
    /// How long a request may wait for the first token before 503.
    pub max_wait: Duration,
}

/// How a project-scoped IAM token is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// An IAM user's password.
    Password(TokenRequest),
    /// An OIDC id token an identity provider trusts.
    Oidc {
        oidc: OidcSpec,
        project: ProjectScope,
    },
    /// An agency assumed by another credential.
    Agency {
        agency: AgencySpec,
        project: ProjectScope,
    },
}

impl TokenSpec {
    pub fn iam_endpoint(&self) -> &Uri {
        match &self.source {
            TokenSource::Password(r) => &r.iam_endpoint,
            TokenSource::Oidc { oidc, .. } => &oidc.iam_endpoint,
            TokenSource::Agency { agency, .. } => &agency.iam_endpoint,
        }
    }

    /// `IAM token for user alice in domain acme, project cn-north-4 from https://iam…`
    pub fn describe(&self) -> String {
        let who = match &self.source {
            TokenSource::Password(r) => r.describe(),
            TokenSource::Oidc { oidc, project } => {
                format!("{}, {}", oidc.describe(), project.describe())
            }
            TokenSource::Agency { agency, project } => {
                format!("{}, {}", agency.describe(), project.describe())
            }
        };
        format!("IAM token for {who} from {}", self.iam_endpoint())
    }
}

impl ProjectScope {
    /// `project cn-north-4`, `project id 0a1b`.
    pub fn describe(&self) -> String {
        match self {
            ProjectScope::Name(n) => format!("project {n}"),
            ProjectScope::Id(id) => format!("project id {id}"),
        }
    }
}

impl OidcSpec {
    /// `identity provider X (id token file /p)`.
    pub fn describe(&self) -> String {
        format!(
            "identity provider {} (id token file {})",
            self.idp_id,
            self.id_token_file.display()
        )
    }
}

impl AgencySpec {
    /// `agency modelarts-invoke of account partner, assumed with [credentials.base]`.
    pub fn describe(&self) -> String {
        format!(
            "agency {} of account {}, assumed with [credentials.{}]",
            self.agency_name, self.domain_name, self.base
        )
    }
}

#[derive(Clone, Debug)]
pub struct ApiKeySpec {
    pub app_code: SecretSource,
    pub header: HeaderName,
    pub prefix: String,
    /// `prefix + app code`, as sent (marked sensitive).
    pub current: HeaderValue,
}

/// The ECS metadata endpoint for temporary credentials.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254/openstack/latest/securitykey";

/// After 3 signature rejections in a row, a credential's requests are held
/// back this long: APIG locks an AK for 5 minutes after 5 failures in a row.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(5 * 60);

/// Refresh expiring credentials at least this long before they expire.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Before the first token or temporary key exists, a request waits this long, then 503.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);
/// APIG's API-key header.
pub const DEFAULT_APP_CODE_HEADER: &str = "x-apig-appcode";

/// The keys of an AK/SK table (each source uses some: [`identity::AKSK_SOURCE_KEYS`]).
pub const AKSK_KEYS: &[&str] = &[
    "type",
    "access_key",
    "secret_key",
    "security_token",
    "csv",
    "source",
    "project_id",
    "metadata_endpoint",
    "refresh_margin",
    "max_wait",
    "breaker_cooldown",
    "endpoint",
    "token_file",
    "idp_id",
    "id_token_file",
    "iam_endpoint",
    "region",
    "duration",
    "base",
    "domain_name",
    "agency_name",
    "sts_endpoint",
    "provider_urn",
    "agency_urn",
    "agency_session_name",
];
/// The keys of a token table.
pub const TOKEN_KEYS: &[&str] = &[
    "type",
    "source",
    "iam_endpoint",
    "region",
    "user",
    "password",
    "domain",
    "project",
    "project_id",
    "refresh_margin",
    "max_wait",
    "idp_id",
    "id_token_file",
    "base",
    "domain_name",
    "agency_name",
];
/// The keys of an APIG App table (AppKey/AppSecret, signed as AK/SK).
pub const APP_KEYS: &[&str] = &[
    "type",
    "app_key",
    "app_secret",
    "project_id",
    "breaker_cooldown",
];
pub const APIKEY_KEYS: &[&str] = &["type", "app_code", "header", "prefix"];

pub(super) fn credential(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<Credentials> {
    let kind = s.require(report, "type", |r| s.str(r, "type"))?;
    match kind {
        "aksk" => aksk(report, s, sources),
        "app" => app(report, s, sources),
        "token" => token(report, s, sources).map(Credentials::Token),
        "apikey" => apikey(report, s, sources).map(Credentials::ApiKey),
        other => {
            report.error(
                s.key_path("type"),
                format!("must be \"aksk\", \"app\", \"token\" or \"apikey\", not {other:?}"),
            );
            None
        }
    }
}

/// Resolves a secret now, so a missing variable or file is reported by `check`.
pub(super) fn resolve_now(
    report: &mut Report,
    s: &Section<'_>,
    key: &str,
    src: &SecretSource,
    sources: &dyn Sources,
) -> Option<Secret> {
    match src.resolve(sources) {
        Ok(v) => Some(v),
        Err(e) => {
            report.error(s.key_path(key), e);
            None
        }
    }
}

pub(super) fn url(report: &mut Report, s: &Section<'_>, key: &str) -> Option<Uri> {
    let text = s.str(report, key)?;
    match text.parse::<Uri>() {
        Ok(u) if u.scheme().is_some() && u.authority().is_some() => Some(u),
        _ => {
            report.error(
                s.key_path(key),
                format!("{text:?} is not an absolute http(s) URL"),
            );
            None
        }
    }
}

fn token(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Option<TokenSpec> {
    check_keys(report, s.table, &s.path, TOKEN_KEYS);
    let source = s.str(report, "source").unwrap_or("password");
    identity::only_for(report, s, source, identity::TOKEN_SOURCE_KEYS);
    let refresh_margin = s
        .duration(report, "refresh_margin")
        .unwrap_or(DEFAULT_REFRESH_MARGIN);
    let max_wait = s.duration(report, "max_wait").unwrap_or(DEFAULT_MAX_WAIT);
    let source = match source {
        "password" => TokenSource::Password(password_token(report, s, sources)?),
        "oidc" => {
            let oidc = identity::oidc(report, s, sources);
            let project = identity::project_scope(report, s);
            TokenSource::Oidc {
                oidc: oidc?,
                project: project?,
            }
        }
        "assume_agency" => {
            let agency = identity::agency(report, s);
            let project = identity::project_scope(report, s);
            TokenSource::Agency {
                agency: agency?,
                project: project?,
            }
        }
        other => {
            report.error(
                s.key_path("source"),
                format!(
                    "must be \"password\" (the default), \"oidc\" or \"assume_agency\", not {other:?}"
                ),
            );
            return None;
        }
    };
    Some(TokenSpec {
        source,
        refresh_margin,
        max_wait,
    })
}

/// An IAM user's password, domain and project.
fn password_token(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<TokenRequest> {
    let iam_endpoint = identity::iam_given(report, s);
    if iam_endpoint.is_none()
        && !s.table.contains_key("iam_endpoint")
        && !s.table.contains_key("region")
    {
        report.error(
            s.key_path("iam_endpoint"),
            "is required (or give region = \"cn-north-4\" for https://iam.cn-north-4.myhuaweicloud.com)",
        );
    }
    let user = s.require(report, "user", |r| s.str(r, "user"));
    let domain = s.require(report, "domain", |r| s.str(r, "domain"));
    let password = s.require(report, "password", |r| secret_source(r, s, "password"));
    if let Some(src) = &password {
        resolve_now(report, s, "password", src, sources);
    }
    let project = identity::project_scope(report, s);
    Some(TokenRequest {
        iam_endpoint: iam_endpoint?,
        user: user?.to_owned(),
        password: password?,
        domain: domain?.to_owned(),
        project: project?,
    })
}

fn apikey(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Option<ApiKeySpec> {
    check_keys(report, s.table, &s.path, APIKEY_KEYS);
    let app_code = s.require(report, "app_code", |r| secret_source(r, s, "app_code"))?;
    let header = match s.str(report, "header") {
        None => Some(HeaderName::from_static(DEFAULT_APP_CODE_HEADER)),
        Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n)
                if !matches!(
                    n.as_str(),
                    "host" | "content-length" | "transfer-encoding" | "connection"
                ) =>
            {
                Some(n)
            }
            _ => {
                report.error(
                    s.key_path("header"),
                    format!("{h:?} cannot carry an API key"),
                );
                None
            }
        },
    };
    let prefix = s.str(report, "prefix").unwrap_or("").to_owned();
    let code = resolve_now(report, s, "app_code", &app_code, sources)?;
    let current = api_key_value(&prefix, &code)
        .map_err(|e| report.error(s.key_path("app_code"), e))
        .ok()?;
    Some(ApiKeySpec {
        app_code,
        header: header?,
        prefix,
        current,
    })
}

/// `prefix + code` as a sensitive header value.
pub fn api_key_value(prefix: &str, code: &Secret) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("{prefix}{}", code.expose().trim()))
        .map_err(|_| "has characters not allowed in a header".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
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

fn aksk(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Option<Credentials> {
    check_keys(report, s.table, &s.path, AKSK_KEYS);
    let breaker_cooldown = s
        .duration(report, "breaker_cooldown")
        .unwrap_or(DEFAULT_BREAKER_COOLDOWN);
    let source = s.str(report, "source");
    let csv = s.str(report, "csv");
    let has_keys = s.get("access_key").is_some() || s.get("secret_key").is_some();
    identity::only_for(
        report,
        s,
        source.unwrap_or("keys"),
        identity::AKSK_SOURCE_KEYS,
    );
    let temporary = |report: &mut Report, source: TemporarySource, chosen: Option<String>| {
        Some(Credentials::Temporary(identity::temporary_spec(
            report,
            s,
            source,
            chosen,
            breaker_cooldown,
        )))
    };
    let fixed = |report: &mut Report, key_source: KeySource| {
        fixed_key(report, s, sources, key_source, breaker_cooldown)
    };
    let key_source = match (source, csv, has_keys) {
        (Some(source), None, false) if source != "env" => {
            let source = match source {
                "auto" => {
                    let chosen = |r: &mut Report, source, how| temporary(r, source, Some(how));
                    return identity::auto(report, s, sources, chosen, fixed);
                }
                "metadata" => {
                    let endpoint = match s.get("metadata_endpoint") {
                        Some(_) => url(report, s, "metadata_endpoint"),
                        None => DEFAULT_METADATA_ENDPOINT.parse().ok(),
                    };
                    TemporarySource::Metadata {
                        endpoint: endpoint?,
                    }
                }
                "pod_identity" => {
                    TemporarySource::PodIdentity(identity::pod_identity(report, s, sources)?)
                }
                "oidc" => {
                    let oidc = identity::oidc(report, s, sources);
                    let duration = identity::duration(report, s);
                    TemporarySource::Oidc {
                        oidc: oidc?,
                        duration,
                    }
                }
                "assume_agency" => {
                    let agency = identity::agency(report, s);
                    let duration = identity::duration(report, s);
                    TemporarySource::Agency {
                        agency: agency?,
                        duration,
                    }
                }
                "assume_agency_with_oidc" => {
                    let (sts, duration) = identity::sts_oidc(report, s, sources)?;
                    TemporarySource::StsOidc { sts, duration }
                }
                other => {
                    report.error(
                        s.key_path("source"),
                        format!(
                            "must be \"env\", \"metadata\", \"pod_identity\", \"oidc\", \"assume_agency\", \"assume_agency_with_oidc\" or \"auto\", not {other:?}"
                        ),
                    );
                    return None;
                }
            };
            return temporary(report, source, None);
        }
        (Some(_), None, false) => KeySource::SdkChain,
        (None, Some(path), false) => KeySource::Csv(PathBuf::from(path)),
        (None, None, _) => {
            let ak = s.require(report, "access_key", |r| secret_source(r, s, "access_key"));
            let sk = s.require(report, "secret_key", |r| secret_source(r, s, "secret_key"));
            let token = secret_source(report, s, "security_token");
            KeySource::Keys {
                access_key: ak?,
                secret_key: sk?,
                security_token: token,
            }
        }
        _ => {
            report.error(
                &s.path,
                "give the key one way only: access_key + secret_key, csv = \"…\", or a source",
            );
            return None;
        }
    };
    fixed(report, key_source)
}

/// A long-lived key, read now so that `check` reports a missing one.
fn fixed_key(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
    key_source: KeySource,
    breaker_cooldown: Duration,
) -> Option<Credentials> {
    resolved(report, s, sources, key_source, breaker_cooldown, |key| key)
}

/// Reads `key_source` now; `key_name` names the table's key an error is about.
fn resolved(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
    key_source: KeySource,
    breaker_cooldown: Duration,
    key_name: fn(&'static str) -> &'static str,
) -> Option<Credentials> {
    let project_id = s.str(report, "project_id").map(str::to_owned);
    match key_source.resolve(sources, project_id) {
        Ok(current) => Some(Credentials::AkSk(AkSkSpec {
            current,
            source: key_source,
            breaker_cooldown,
        })),
        Err(problems) => {
            for (key, message) in problems {
                report.error(s.key_path(key_name(key)), message);
            }
            None
        }
    }
}

/// `type = "app"`: an APIG App's AppKey and AppSecret, which sign requests
/// exactly as an AK/SK does.
fn app(report: &mut Report, s: &Section<'_>, sources: &dyn Sources) -> Option<Credentials> {
    check_keys(report, s.table, &s.path, APP_KEYS);
    let breaker_cooldown = s
        .duration(report, "breaker_cooldown")
        .unwrap_or(DEFAULT_BREAKER_COOLDOWN);
    let key = s.require(report, "app_key", |r| secret_source(r, s, "app_key"));
    let secret = s.require(report, "app_secret", |r| secret_source(r, s, "app_secret"));
    let key_source = KeySource::Keys {
        access_key: key?,
        secret_key: secret?,
        security_token: None,
    };
    let app_keys = |key| match key {
        "access_key" => "app_key",
        "secret_key" => "app_secret",
        other => other,
    };
    let mut app = resolved(report, s, sources, key_source, breaker_cooldown, app_keys)?;
    if let Credentials::AkSk(a) = &mut app {
        a.current.origin = "an APIG App's AppKey/AppSecret".to_owned();
    }
    Some(app)
}

impl KeySource {
    /// Reads the key (again). The error names the config key it is about.
    pub fn resolve(
        &self,
        sources: &dyn Sources,
        project_id: Option<String>,
    ) -> Result<ResolvedKey, Vec<(&'static str, String)>> {
        match self {
            KeySource::SdkChain => credentials::from_sdk_chain(sources)
                .map(|found| ResolvedKey {
                    key: found.key,
                    project_id: project_id.or(found.project_id),
                    origin: found.origin,
                })
                .map_err(|e| vec![("source", e)]),
            KeySource::Csv(path) => {
                let text = sources
                    .read_file(path)
                    .map_err(|e| vec![("csv", format!("cannot read {}: {e}", path.display()))])?;
                let (access_key, secret_key) = credentials::parse_credentials_csv(&text)
                    .map_err(|e| vec![("csv", format!("{}: {e}", path.display()))])?;
                Ok(ResolvedKey {
                    key: AkSk {
                        access_key,
                        secret_key,
                        security_token: None,
                    },
                    project_id,
                    origin: format!("csv {}", path.display()),
                })
            }
            KeySource::Keys {
                access_key,
                secret_key,
                security_token,
            } => {
                // Every missing part at once, not only the first.
                let ak = access_key.resolve(sources).map_err(|e| ("access_key", e));
                let sk = secret_key.resolve(sources).map_err(|e| ("secret_key", e));
                let token = security_token
                    .as_ref()
                    .map(|t| t.resolve(sources).map_err(|e| ("security_token", e)))
                    .transpose();
                let (ak, sk, token) = match (ak, sk, token) {
                    (Ok(ak), Ok(sk), Ok(token)) => (ak, sk, token),
                    (ak, sk, token) => {
                        return Err([ak.err(), sk.err(), token.err()]
                            .into_iter()
                            .flatten()
                            .collect());
                    }
                };
                Ok(ResolvedKey {
                    key: AkSk {
                        access_key: ak.expose().trim().to_owned(),
                        secret_key: sk,
                        security_token: token,
                    },
                    project_id,
                    origin: "config keys".to_owned(),
                })
            }
        }
    }

    /// The files the key is read from, to watch for changes.
    pub fn files(&self, sources: &dyn Sources) -> Vec<PathBuf> {
        match self {
            KeySource::Csv(path) => vec![path.clone()],
            KeySource::Keys {
                access_key,
                secret_key,
                security_token,
            } => [Some(access_key), Some(secret_key), security_token.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|s| match s {
                    SecretSource::File(p) => Some(p.clone()),
                    _ => None,
                })
                .collect(),
            KeySource::SdkChain => {
                let from_env = sources
                    .env(credentials::ENV_AK)
                    .is_some_and(|v| !v.trim().is_empty());
                if from_env {
                    return Vec::new();
                }
                match sources
                    .env(credentials::ENV_CREDENTIALS_FILE)
                    .filter(|p| !p.trim().is_empty())
                {
                    Some(p) => vec![PathBuf::from(p)],
                    None => sources
                        .home_dir()
                        .map(|h| h.join(".huaweicloud").join("credentials"))
                        .into_iter()
                        .collect(),
                }
            }
        }
    }
}
