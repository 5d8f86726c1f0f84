//! Sources of short-lived credentials that need no key on disk (DESIGN §11):
//! CCE Pod Identity, OIDC federation, agency assumption, and `auto`, which
//! picks the first one configured. Each file named here is read again at
//! every fetch; only its path is validated now (a projected token may not
//! exist yet when the proxy starts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use super::credentials::{
    Credentials, DEFAULT_METADATA_ENDPOINT, KeySource, ProjectScope, TemporarySource,
    TemporarySpec, TokenSource, url,
};
use super::walk::{Report, Section};
use crate::credentials::{
    ENV_AK, ENV_IAM_ENDPOINT, ENV_ID_TOKEN_FILE, ENV_IDP_ID, ENV_POD_IDENTITY_TOKEN_FILE,
    ENV_POD_IDENTITY_URI, ENV_REGION, ENV_SK, ENV_STS_ENDPOINT, Profile, Sources, read_profile,
};

/// IAM's global endpoint: the SDKs' default when no region is named.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iam.myhuaweicloud.com";

/// The lifetime asked for temporary AK/SK when `duration` is not given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(6 * 3600);
/// IAM issues temporary AK/SK for 15 minutes to 24 hours.
pub const MIN_DURATION: Duration = Duration::from_secs(15 * 60);
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// CCE Pod Identity: where to ask and the service-account token to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentitySpec {
    pub endpoint: Uri,
    pub token_file: PathBuf,
}

/// An IAM identity provider that trusts the OIDC id token in `id_token_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcSpec {
    pub iam_endpoint: Uri,
    pub idp_id: String,
    pub id_token_file: PathBuf,
}

/// An agency in another account, assumed with the credential named `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgencySpec {
    pub base: String,
    /// How the base proves who it is (settled once every table is read).
    pub by: Base,
    pub iam_endpoint: Uri,
    /// False: `iam_endpoint` is a default that the base's may replace.
    pub iam_given: bool,
    pub domain_name: String,
    pub agency_name: String,
}

/// IAM5 STS `AssumeAgencyWithOIDC`: an agency that trusts an OIDC identity
/// provider, assumed with the id token alone (no IAM token step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsOidcSpec {
    /// `https://sts.{region}.myhuaweicloud.com`
    pub sts_endpoint: Uri,
    /// `iam::{account id}:oidcProvider:{name}`
    pub provider_urn: String,
    /// `iam::{account id}:agency:{name}`
    pub agency_urn: String,
    pub session_name: String,
    pub id_token_file: PathBuf,
}

/// STS issues AK/SK for 15 minutes to 12 hours; 1 hour unless asked.
pub const STS_MAX_DURATION: Duration = Duration::from_secs(12 * 3600);
pub const STS_DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// The session name STS records when none is configured.
pub const DEFAULT_SESSION_NAME: &str = "modelarts-proxy";

/// What an agency's base gives IAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// The token of a `type = "token"` credential, in `X-Auth-Token`.
    Token,
    /// An unscoped token from an `oidc` AK/SK credential's identity provider.
    Oidc(OidcSpec),
    /// A signature with an AK/SK credential (IAM accepts one for temporary
    /// AK/SK through an agency, not for agency tokens).
    Signature,
}

/// Every source of temporary AK/SK.
const TEMPORARY: &[&str] = &[
    "metadata",
    "pod_identity",
    "oidc",
    "assume_agency",
    "assume_agency_with_oidc",
    "auto",
];

/// The keys each source of an AK/SK table may have, beyond those of every table.
pub(super) const AKSK_SOURCE_KEYS: &[(&str, &[&str])] = &[
    ("metadata_endpoint", &["metadata", "auto"]),
    ("refresh_margin", TEMPORARY),
    ("max_wait", TEMPORARY),
    ("endpoint", &["pod_identity"]),
    ("token_file", &["pod_identity"]),
    ("idp_id", &["oidc"]),
    ("id_token_file", &["oidc", "assume_agency_with_oidc"]),
    ("iam_endpoint", &["oidc", "assume_agency", "auto"]),
    (
        "region",
        &["oidc", "assume_agency", "auto", "assume_agency_with_oidc"],
    ),
    (
        "duration",
        &["oidc", "assume_agency", "auto", "assume_agency_with_oidc"],
    ),
    ("sts_endpoint", &["assume_agency_with_oidc"]),
    ("provider_urn", &["assume_agency_with_oidc"]),
    ("agency_urn", &["assume_agency_with_oidc"]),
    ("agency_session_name", &["assume_agency_with_oidc"]),
    ("base", &["assume_agency"]),
    ("domain_name", &["assume_agency"]),
    ("agency_name", &["assume_agency"]),
];

/// The same for a token table (`source` defaults to `password`).
pub(super) const TOKEN_SOURCE_KEYS: &[(&str, &[&str])] = &[
    ("user", &["password"]),
    ("password", &["password"]),
    ("domain", &["password"]),
    ("idp_id", &["oidc"]),
    ("id_token_file", &["oidc"]),
    ("base", &["assume_agency"]),
    ("domain_name", &["assume_agency"]),
    ("agency_name", &["assume_agency"]),
];

/// Reports each key that `source` does not use.
pub(super) fn only_for(
    report: &mut Report,
    s: &Section<'_>,
    source: &str,
    keys: &[(&str, &[&str])],
) {
    for (key, sources) in keys {
        if s.table.contains_key(*key) && !sources.contains(&source) {
            let names: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
            report.error(
                s.key_path(key),
                format!("only applies to source = {}", names.join(" or ")),
            );
        }
    }
}

/// `duration`: the lifetime asked for temporary AK/SK.
pub(super) fn duration(report: &mut Report, s: &Section<'_>) -> Duration {
    bounded_duration(
        report,
        s,
        MAX_DURATION,
        DEFAULT_DURATION,
        "IAM issues: 15m to 24h",
    )
}

fn bounded_duration(
    report: &mut Report,
    s: &Section<'_>,
    max: Duration,
    default: Duration,
    range: &str,
) -> Duration {
    match s.duration(report, "duration") {
        Some(d) if (MIN_DURATION..=max).contains(&d) => d,
        Some(d) => {
            report.error(
                s.key_path("duration"),
                format!("{} is outside what {range}", humantime::format_duration(d)),
            );
            default
        }
        None => default,
    }
}

/// `source = "assume_agency_with_oidc"` (IAM5 STS).
pub(super) fn sts_oidc(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<(StsOidcSpec, Duration)> {
    let sts_endpoint = if s.table.contains_key("sts_endpoint") {
        url(report, s, "sts_endpoint")
    } else if let Some(region) = s.str(report, "region") {
        let endpoint = format!("https://sts.{region}.myhuaweicloud.com").parse::<Uri>();
        match (region_endpoint(region), endpoint) {
            (Some(_), Ok(u)) => Some(u),
            _ => {
                report.error(
                    s.key_path("region"),
                    format!("{region:?} is not a region name such as \"cn-north-4\""),
                );
                None
            }
        }
    } else {
        let env = sources
            .env(ENV_STS_ENDPOINT)
            .map(|v| v.trim().to_owned())
            .and_then(|v| v.parse::<Uri>().ok())
            .filter(|u| u.scheme().is_some() && u.authority().is_some());
        if env.is_none() {
            report.error(
                s.key_path("sts_endpoint"),
                format!("is required (or give region = \"cn-north-4\" for https://sts.cn-north-4.myhuaweicloud.com, or set {ENV_STS_ENDPOINT})"),
            );
        }
        env
    };
    let provider_urn = s.require(report, "provider_urn", |r| s.str(r, "provider_urn"));
    let agency_urn = s.require(report, "agency_urn", |r| s.str(r, "agency_urn"));
    let session_name = s
        .str(report, "agency_session_name")
        .unwrap_or(DEFAULT_SESSION_NAME);
    if !(2..=128).contains(&session_name.chars().count()) {
        report.error(
            s.key_path("agency_session_name"),
            "must be 2 to 128 characters long",
        );
    }
    let why = "the file that holds the OIDC id token, e.g. a projected service-account token";
    let id_token_file = key_or_env(report, s, sources, "id_token_file", ENV_ID_TOKEN_FILE, why);
    let duration = bounded_duration(
        report,
        s,
        STS_MAX_DURATION,
        STS_DEFAULT_DURATION,
        "STS issues: 15m to 12h",
    );
    let spec = StsOidcSpec {
        sts_endpoint: sts_endpoint?,
        provider_urn: provider_urn?.to_owned(),
        agency_urn: agency_urn?.to_owned(),
        session_name: session_name.to_owned(),
        id_token_file: PathBuf::from(id_token_file?),
    };
    Some((spec, duration))
}

/// `iam_endpoint`, else `region`'s endpoint; `None` when neither is given
/// (or one is wrong, which is reported).
pub(super) fn iam_given(report: &mut Report, s: &Section<'_>) -> Option<Uri> {
    if s.table.contains_key("iam_endpoint") {
        return url(report, s, "iam_endpoint");
    }
    let region = s.str(report, "region")?;
    region_endpoint(region).or_else(|| {
        report.error(
            s.key_path("region"),
            format!("{region:?} is not a region name such as \"cn-north-4\""),
        );
        None
    })
}

/// `https://iam.{region}.myhuaweicloud.com`
pub fn region_endpoint(region: &str) -> Option<Uri> {
    let ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then(|| {
        format!("https://iam.{region}.myhuaweicloud.com")
            .parse()
            .ok()
    })
    .flatten()
}

/// IAM as the SDKs find it when the table names none:
/// `HUAWEICLOUD_SDK_IAM_ENDPOINT`, `HUAWEICLOUD_SDK_REGION`, the global endpoint.
pub fn iam_from_env(sources: &dyn Sources) -> Uri {
    let env = |n: &str| sources.env(n).map(|v| v.trim().to_owned());
    env(ENV_IAM_ENDPOINT)
        .and_then(|e| e.parse::<Uri>().ok())
        .filter(|u| u.scheme().is_some() && u.authority().is_some())
        .or_else(|| env(ENV_REGION).and_then(|r| region_endpoint(&r)))
        .unwrap_or_else(|| Uri::from_static(DEFAULT_IAM_ENDPOINT))
}

/// A required string: the key, else the environment variable `env`.
fn key_or_env(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
    key: &str,
    env: &str,
    why: &str,
) -> Option<String> {
    if s.table.contains_key(key) {
        return s
            .str(report, key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                report.error(s.key_path(key), "is empty");
                None
            });
    }
    match sources.env(env).map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => Some(v),
        _ => {
            report.error(
                s.key_path(key),
                format!("is required: {env} is not set ({why})"),
            );
            None
        }
    }
}

/// `source = "pod_identity"`.
pub(super) fn pod_identity(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<PodIdentitySpec> {
    let why = "is Pod Identity set up for this pod's service account?";
    let endpoint =
        match s.table.contains_key("endpoint") {
            true => url(report, s, "endpoint"),
            false => key_or_env(report, s, sources, "endpoint", ENV_POD_IDENTITY_URI, why)
                .and_then(|e| match e.parse::<Uri>() {
                    Ok(u) if u.scheme().is_some() && u.authority().is_some() => Some(u),
                    _ => {
                        report.error(
                            s.key_path("endpoint"),
                            format!("{ENV_POD_IDENTITY_URI}={e:?} is not an absolute http(s) URL"),
                        );
                        None
                    }
                }),
        };
    let token_file = key_or_env(
        report,
        s,
        sources,
        "token_file",
        ENV_POD_IDENTITY_TOKEN_FILE,
        why,
    );
    Some(PodIdentitySpec {
        endpoint: endpoint?,
        token_file: PathBuf::from(token_file?),
    })
}

/// `source = "oidc"`.
pub(super) fn oidc(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
) -> Option<OidcSpec> {
    let why = "the id of the IAM identity provider that trusts the id token";
    let idp_id = key_or_env(report, s, sources, "idp_id", ENV_IDP_ID, why);
    let why = "the file that holds the OIDC id token, e.g. a projected service-account token";
    let id_token_file = key_or_env(report, s, sources, "id_token_file", ENV_ID_TOKEN_FILE, why);
    let given = iam_given(report, s);
    Some(OidcSpec {
        iam_endpoint: given.unwrap_or_else(|| iam_from_env(sources)),
        idp_id: idp_id?,
        id_token_file: PathBuf::from(id_token_file?),
    })
}

/// `source = "assume_agency"`; [`settle_bases`] finishes it.
pub(super) fn agency(report: &mut Report, s: &Section<'_>) -> Option<AgencySpec> {
    let base = s.require(report, "base", |r| s.str(r, "base"));
    let domain_name = s.require(report, "domain_name", |r| s.str(r, "domain_name"));
    let agency_name = s.require(report, "agency_name", |r| s.str(r, "agency_name"));
    let given = iam_given(report, s);
    Some(AgencySpec {
        base: base?.to_owned(),
        by: Base::Token,
        iam_given: given.is_some(),
        iam_endpoint: given.unwrap_or_else(|| Uri::from_static(DEFAULT_IAM_ENDPOINT)),
        domain_name: domain_name?.to_owned(),
        agency_name: agency_name?.to_owned(),
    })
}

/// Each agency's base must exist and be able to prove itself to IAM; an
/// agency without its own IAM endpoint uses its base's.
pub(super) fn settle_bases(report: &mut Report, credentials: &mut BTreeMap<String, Credentials>) {
    let names: Vec<String> = credentials.keys().cloned().collect();
    for name in names {
        let (agency, wants_token) = match credentials.get(&name) {
            Some(Credentials::Token(t)) => match &t.source {
                TokenSource::Agency { agency, .. } => (agency.clone(), true),
                _ => continue,
            },
            Some(Credentials::Temporary(t)) => match &t.source {
                TemporarySource::Agency { agency, .. } => (agency.clone(), false),
                _ => continue,
            },
            _ => continue,
        };
        let path = format!("credentials.{name}.base");
        let settled = match credentials.get(&agency.base) {
            None => Err(format!("names no [credentials.{}] table", agency.base)),
            Some(base) => base_of(base, wants_token),
        };
        match settled {
            Err(e) => report.error(path, e),
            Ok((by, iam)) => {
                let spec = match credentials.get_mut(&name) {
                    Some(Credentials::Token(t)) => match &mut t.source {
                        TokenSource::Agency { agency, .. } => agency,
                        _ => continue,
                    },
                    Some(Credentials::Temporary(t)) => match &mut t.source {
                        TemporarySource::Agency { agency, .. } => agency,
                        _ => continue,
                    },
                    _ => continue,
                };
                spec.by = by;
                if !spec.iam_given
                    && let Some(iam) = iam
                {
                    spec.iam_endpoint = iam;
                }
            }
        }
    }
}

/// How `base` can assume an agency, and its IAM endpoint.
fn base_of(base: &Credentials, wants_token: bool) -> Result<(Base, Option<Uri>), String> {
    let chained = "is itself an assumed agency; IAM does not assume an agency from an agency's credentials: name the credential that the first agency is based on";
    match base {
        Credentials::Token(t) => match &t.source {
            TokenSource::Agency { .. } => Err(chained.to_owned()),
            _ => Ok((Base::Token, Some(t.iam_endpoint().clone()))),
        },
        Credentials::Temporary(t) => match &t.source {
            TemporarySource::Oidc { oidc, .. } => {
                Ok((Base::Oidc(oidc.clone()), Some(oidc.iam_endpoint.clone())))
            }
            TemporarySource::Agency { .. } => Err(chained.to_owned()),
            _ if wants_token => Err(signature_only()),
            _ => Ok((Base::Signature, None)),
        },
        Credentials::AkSk(_) if wants_token => Err(signature_only()),
        Credentials::AkSk(_) => Ok((Base::Signature, None)),
        Credentials::ApiKey(_) => Err(
            "is an API key, which IAM does not accept; name a token, oidc or AK/SK credential"
                .to_owned(),
        ),
    }
}

fn signature_only() -> String {
    "is an AK/SK credential: IAM issues agency tokens only to a token (type = \"token\", or source = \"oidc\"); \
     with this base, use type = \"aksk\" (temporary AK/SK through the agency, asked with a signature)"
        .to_owned()
}

/// What `source = "auto"` chose, as the SDKs look: the environment (AK/SK,
/// or an identity provider and id-token file), the profile file, CCE Pod
/// Identity, then the ECS metadata service. Pod Identity comes before the
/// metadata service so that a pod never gets its node's identity.
pub(super) fn auto(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
    temporary: impl FnOnce(&mut Report, TemporarySource, String) -> Option<Credentials>,
    fixed: impl FnOnce(&mut Report, KeySource) -> Option<Credentials>,
) -> Option<Credentials> {
    let env = |n: &str| {
        sources
            .env(n)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let path = s.key_path("source");
    // 1. The environment.
    if env(ENV_AK).is_some() || env(ENV_SK).is_some() {
        return fixed(report, KeySource::SdkChain);
    }
    match (env(ENV_IDP_ID), env(ENV_ID_TOKEN_FILE)) {
        (Some(idp_id), Some(file)) => {
            let oidc = OidcSpec {
                iam_endpoint: auto_iam(report, s, sources, None),
                idp_id,
                id_token_file: file.into(),
            };
            let chosen = format!("the environment ({ENV_IDP_ID}, {ENV_ID_TOKEN_FILE})");
            let source = oidc_source(report, s, oidc);
            return temporary(report, source, chosen);
        }
        (Some(_), None) | (None, Some(_)) => {
            report.error(
                path,
                format!("\"auto\": set both {ENV_IDP_ID} and {ENV_ID_TOKEN_FILE}, or neither"),
            );
            return None;
        }
        (None, None) => {}
    }
    // 2. The SDK profile file.
    match read_profile(sources) {
        Ok(Some((file, profile))) => {
            return from_profile(report, s, sources, (file, profile), temporary, fixed);
        }
        Ok(None) => {}
        Err(e) => {
            report.error(path, format!("\"auto\": {e}"));
            return None;
        }
    }
    // 3. CCE Pod Identity. Half of it is an error: never the node's identity instead.
    if env(ENV_POD_IDENTITY_URI).is_none() && env(ENV_POD_IDENTITY_TOKEN_FILE).is_some() {
        report.error(
            path,
            format!(
                "\"auto\": {ENV_POD_IDENTITY_TOKEN_FILE} is set but {ENV_POD_IDENTITY_URI} is not"
            ),
        );
        return None;
    }
    if let Some(endpoint) = env(ENV_POD_IDENTITY_URI) {
        let Some(token_file) = env(ENV_POD_IDENTITY_TOKEN_FILE) else {
            report.error(
                path,
                format!("\"auto\": {ENV_POD_IDENTITY_URI} is set but {ENV_POD_IDENTITY_TOKEN_FILE} is not"),
            );
            return None;
        };
        let Some(endpoint) = endpoint
            .parse::<Uri>()
            .ok()
            .filter(|u| u.scheme().is_some() && u.authority().is_some())
        else {
            report.error(
                path,
                format!("\"auto\": {ENV_POD_IDENTITY_URI}={endpoint:?} is not a URL"),
            );
            return None;
        };
        let spec = PodIdentitySpec {
            endpoint,
            token_file: token_file.into(),
        };
        let chosen = format!("CCE Pod Identity ({ENV_POD_IDENTITY_URI})");
        return temporary(report, TemporarySource::PodIdentity(spec), chosen);
    }
    // 4. The ECS metadata service.
    let endpoint = match s.get("metadata_endpoint") {
        Some(_) => url(report, s, "metadata_endpoint")?,
        None => Uri::from_static(DEFAULT_METADATA_ENDPOINT),
    };
    let chosen = "the ECS metadata service (no key, identity provider, profile file or Pod Identity is configured)".to_owned();
    temporary(report, TemporarySource::Metadata { endpoint }, chosen)
}

/// `auto`'s choice from a profile file: its AK/SK, or its identity provider.
fn from_profile(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
    (file, profile): (PathBuf, Profile),
    temporary: impl FnOnce(&mut Report, TemporarySource, String) -> Option<Credentials>,
    fixed: impl FnOnce(&mut Report, KeySource) -> Option<Credentials>,
) -> Option<Credentials> {
    match (profile.idp_id, profile.id_token_file) {
        // As in the SDKs, an identity provider wins over a key in the same file.
        (Some(idp_id), Some(id_token_file)) => {
            let oidc = OidcSpec {
                iam_endpoint: auto_iam(report, s, sources, profile.iam_endpoint.as_deref()),
                idp_id,
                id_token_file: id_token_file.into(),
            };
            let chosen = format!("the profile file {}", file.display());
            let source = oidc_source(report, s, oidc);
            temporary(report, source, chosen)
        }
        _ => fixed(report, KeySource::SdkChain),
    }
}

fn oidc_source(report: &mut Report, s: &Section<'_>, oidc: OidcSpec) -> TemporarySource {
    TemporarySource::Oidc {
        oidc,
        duration: duration(report, s),
    }
}

/// The IAM endpoint for an identity provider `auto` found: the table's,
/// the profile file's, then the SDKs' environment.
fn auto_iam(
    report: &mut Report,
    s: &Section<'_>,
    sources: &dyn Sources,
    profile: Option<&str>,
) -> Uri {
    iam_given(report, s)
        .or_else(|| profile.and_then(|p| p.parse::<Uri>().ok()))
        .unwrap_or_else(|| iam_from_env(sources))
}

/// An AK/SK table's temporary source, with the keys every such source shares.
pub(super) fn temporary_spec(
    report: &mut Report,
    s: &Section<'_>,
    source: TemporarySource,
    chosen: Option<String>,
    breaker_cooldown: Duration,
) -> TemporarySpec {
    TemporarySpec {
        source,
        project_id: s.str(report, "project_id").map(str::to_owned),
        refresh_margin: s
            .duration(report, "refresh_margin")
            .unwrap_or(super::DEFAULT_REFRESH_MARGIN),
        max_wait: s
            .duration(report, "max_wait")
            .unwrap_or(super::DEFAULT_MAX_WAIT),
        breaker_cooldown,
        chosen,
    }
}

/// The project a token is scoped to: `project`, `project_id`, or `region`
/// (a project's name is its region's name); `None` (reported) when absent.
pub(super) fn project_scope(report: &mut Report, s: &Section<'_>) -> Option<ProjectScope> {
    match (
        s.str(report, "project"),
        s.str(report, "project_id"),
        s.str(report, "region"),
    ) {
        (Some(name), None, _) => Some(ProjectScope::Name(name.to_owned())),
        (None, Some(id), _) => Some(ProjectScope::Id(id.to_owned())),
        (None, None, Some(region)) => Some(ProjectScope::Name(region.to_owned())),
        (None, None, None) => {
            report.error(
                s.key_path("project"),
                "is required (the project name, e.g. \"cn-north-4\"), or give project_id",
            );
            None
        }
        (Some(_), Some(_), _) => {
            report.error(&s.path, "give project or project_id, not both");
            None
        }
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
