//! Where credentials come from: secret references (`{ env = … }`,
//! `{ file = … }`, literals), the console's `credentials.csv`, and the
//! official SDKs' environment variables and profile file.
//!
//! Reading the environment and files goes through [`Sources`], so the rules
//! are tested without touching the process environment.

use std::io;
use std::path::{Path, PathBuf};

use crate::secret::Secret;
use crate::signer::AkSk;

/// SDK convention: the access key.
pub const ENV_AK: &str = "HUAWEICLOUD_SDK_AK";
/// SDK convention: the secret key.
pub const ENV_SK: &str = "HUAWEICLOUD_SDK_SK";
/// SDK convention: the security token of temporary credentials.
pub const ENV_SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
/// SDK convention: the project id, sent and signed as `X-Project-Id`.
pub const ENV_PROJECT_ID: &str = "HUAWEICLOUD_SDK_PROJECT_ID";
/// SDK convention: overrides the profile file's path.
pub const ENV_CREDENTIALS_FILE: &str = "HUAWEICLOUD_SDK_CREDENTIALS_FILE";
/// SDK convention: the IAM endpoint.
pub const ENV_IAM_ENDPOINT: &str = "HUAWEICLOUD_SDK_IAM_ENDPOINT";
/// SDK convention: the region (`cn-north-4`), which names IAM's endpoint.
pub const ENV_REGION: &str = "HUAWEICLOUD_SDK_REGION";
/// SDK convention: the id of the IAM identity provider that trusts an OIDC id token.
pub const ENV_IDP_ID: &str = "HUAWEICLOUD_SDK_IDP_ID";
/// SDK convention: the file holding the OIDC id token (re-read at every use).
pub const ENV_ID_TOKEN_FILE: &str = "HUAWEICLOUD_SDK_ID_TOKEN_FILE";
/// SDK convention: the IAM5 STS endpoint.
pub const ENV_STS_ENDPOINT: &str = "HUAWEICLOUD_SDK_STS_ENDPOINT";
/// CCE Pod Identity: where the pod's temporary credentials are issued.
pub const ENV_POD_IDENTITY_URI: &str = "HC_CONTAINER_CREDENTIALS_FULL_URI";
/// CCE Pod Identity: the projected service-account token sent to it.
pub const ENV_POD_IDENTITY_TOKEN_FILE: &str = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// The environment and file system, as credential loading sees them.
pub trait Sources: Send + Sync {
    fn env(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> io::Result<String>;
    fn home_dir(&self) -> Option<PathBuf>;
}

/// The real process environment and file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct System;

impl Sources for System {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn home_dir(&self) -> Option<PathBuf> {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
    }
}

/// Where one secret value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `{ env = "NAME" }`
    Env(String),
    /// `{ file = "PATH" }`: trailing newline trimmed.
    File(PathBuf),
    /// A literal string in the config file (allowed; `check` warns).
    Literal(Secret),
}

impl SecretSource {
    /// Reads the secret. The error never contains the secret.
    pub fn resolve(&self, sources: &dyn Sources) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Env(name) => sources
                .env(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?,
            SecretSource::File(path) => {
                let mut text = sources
                    .read_file(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let trimmed = text.trim_end_matches(['\n', '\r']).len();
                text.truncate(trimmed);
                text
            }
            SecretSource::Literal(secret) => return non_empty(secret.clone(), "the literal value"),
        };
        non_empty(Secret::new(value), &self.describe())
    }

    /// What the source is, for messages: `environment variable X`, `file /p`.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Literal(_) => "the literal value".to_owned(),
        }
    }
}

fn non_empty(secret: Secret, what: &str) -> Result<Secret, String> {
    if secret.expose().trim().is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(secret)
    }
}

/// Reads the `credentials.csv` the console downloads when an access key is
/// created: a header line (`User Name,Access Key Id,Secret Access Key`, or
/// without the user column) and one row. A UTF-8 BOM, CRLF and quoted fields
/// are accepted; columns are found by name, in any case.
pub fn parse_credentials_csv(text: &str) -> Result<(String, Secret), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines.next().ok_or("the file is empty")?;
    let columns: Vec<String> = split_csv_line(header)
        .iter()
        .map(|c| {
            c.to_ascii_lowercase()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let find = |name: &str| columns.iter().position(|c| c == name);
    let (ak_col, sk_col) = match (find("access key id"), find("secret access key")) {
        (Some(a), Some(s)) => (a, s),
        _ => {
            return Err(
                "the header line has no \"Access Key Id\" and \"Secret Access Key\" columns; \
                 is this the credentials.csv the console downloads?"
                    .to_owned(),
            );
        }
    };
    let row = lines
        .next()
        .ok_or("the file has a header line but no key row")?;
    let fields = split_csv_line(row);
    let ak = fields
        .get(ak_col)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let sk = fields
        .get(sk_col)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    match (ak, sk) {
        (Some(ak), Some(sk)) => Ok((ak.to_owned(), Secret::new(sk))),
        _ => Err("the key row has an empty access key or secret key".to_owned()),
    }
}

/// Splits one CSV line, honouring `"quoted, fields"` and `""` escapes.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// AK/SK found through the SDK conventions, and where they were found.
#[derive(Clone, Debug)]
pub struct Found {
    pub key: AkSk,
    pub project_id: Option<String>,
    /// `environment (HUAWEICLOUD_SDK_AK/SK)` or `profile file ~/.huaweicloud/credentials`.
    pub origin: String,
}

/// The official SDKs' chain: `HUAWEICLOUD_SDK_AK` / `_SK` (and
/// `_SECURITY_TOKEN`, `_PROJECT_ID`), then the profile file
/// (`HUAWEICLOUD_SDK_CREDENTIALS_FILE`, default `~/.huaweicloud/credentials`),
/// section `[basic]`, keys `ak`, `sk`, `security_token`, `project_id`.
pub fn from_sdk_chain(sources: &dyn Sources) -> Result<Found, String> {
    let env = |name| sources.env(name).filter(|v: &String| !v.trim().is_empty());
    match (env(ENV_AK), env(ENV_SK)) {
        (Some(ak), Some(sk)) => {
            return Ok(Found {
                key: AkSk {
                    access_key: ak.trim().to_owned(),
                    secret_key: Secret::new(sk.trim()),
                    security_token: env(ENV_SECURITY_TOKEN).map(Secret::new),
                },
                project_id: env(ENV_PROJECT_ID),
                origin: format!("environment ({ENV_AK}, {ENV_SK})"),
            });
        }
        (Some(_), None) => return Err(format!("{ENV_AK} is set but {ENV_SK} is not")),
        (None, Some(_)) => return Err(format!("{ENV_SK} is set but {ENV_AK} is not")),
        (None, None) => {}
    }
    let (path, profile) = match read_profile(sources)? {
        Some(found) => found,
        None => {
            let path = profile_path(sources).map_or_else(
                || "~/.huaweicloud/credentials (there is no home directory)".to_owned(),
                |p| p.display().to_string(),
            );
            return Err(format!(
                "no AK/SK: {ENV_AK} and {ENV_SK} are not set, and there is no profile file {path}"
            ));
        }
    };
    match (profile.ak, profile.sk) {
        (Some(ak), Some(sk)) => Ok(Found {
            key: AkSk {
                access_key: ak,
                secret_key: sk,
                security_token: profile.security_token,
            },
            project_id: profile.project_id,
            origin: format!("profile file {}", path.display()),
        }),
        _ => Err(format!(
            "profile file {}: its [basic] section needs both ak and sk",
            path.display()
        )),
    }
}

/// The profile file's path: `HUAWEICLOUD_SDK_CREDENTIALS_FILE`, else
/// `~/.huaweicloud/credentials`.
pub fn profile_path(sources: &dyn Sources) -> Option<PathBuf> {
    match sources
        .env(ENV_CREDENTIALS_FILE)
        .filter(|v| !v.trim().is_empty())
    {
        Some(p) => Some(PathBuf::from(p.trim())),
        None => sources
            .home_dir()
            .map(|home| home.join(".huaweicloud").join("credentials")),
    }
}

/// What a profile file's `[basic]` section holds (empty values are absent).
#[derive(Debug, Default)]
pub struct Profile {
    pub ak: Option<String>,
    pub sk: Option<Secret>,
    pub security_token: Option<Secret>,
    pub project_id: Option<String>,
    pub iam_endpoint: Option<String>,
    pub idp_id: Option<String>,
    pub id_token_file: Option<String>,
}

/// The profile file and its `[basic]` section; `None` when there is no
/// file where the SDKs look by default. A file named by
/// `HUAWEICLOUD_SDK_CREDENTIALS_FILE` must exist.
pub fn read_profile(sources: &dyn Sources) -> Result<Option<(PathBuf, Profile)>, String> {
    let named = sources
        .env(ENV_CREDENTIALS_FILE)
        .is_some_and(|v| !v.trim().is_empty());
    let Some(path) = profile_path(sources) else {
        return Ok(None);
    };
    let text = match sources.read_file(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(format!(
                "the profile file {} cannot be read ({e})",
                path.display()
            ));
        }
    };
    let profile =
        parse_profile(&text).map_err(|e| format!("profile file {}: {e}", path.display()))?;
    Ok(Some((path, profile)))
}

/// Reads the `[basic]` section of an SDK profile file (INI).
fn parse_profile(text: &str) -> Result<Profile, String> {
    let mut section = None::<String>;
    let mut basic_seen = false;
    let mut profile = Profile::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_ascii_lowercase());
            // The SDKs pick the first section whose name starts with "basic".
            basic_seen |= section.as_deref().is_some_and(|s| s.starts_with("basic"));
            continue;
        }
        let in_basic = section.as_deref().is_some_and(|s| s.starts_with("basic"));
        let Some((key, value)) = line.split_once(['=', ':']) else {
            continue;
        };
        let value = value.trim();
        if !in_basic || value.is_empty() {
            continue;
        }
        let value = value.to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "ak" => profile.ak = Some(value),
            "sk" => profile.sk = Some(Secret::new(value)),
            "security_token" => profile.security_token = Some(Secret::new(value)),
            "project_id" => profile.project_id = Some(value),
            "iam_endpoint" => profile.iam_endpoint = Some(value),
            "idp_id" => profile.idp_id = Some(value),
            "id_token_file" => profile.id_token_file = Some(value),
            _ => {}
        }
    }
    if !basic_seen {
        return Err("it has no [basic] section".to_owned());
    }
    Ok(profile)
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory environment and file system for tests.
    #[derive(Default)]
    pub struct FakeSources {
        pub env: HashMap<String, String>,
        pub files: HashMap<PathBuf, String>,
        pub home: Option<PathBuf>,
    }

    impl FakeSources {
        pub fn with_env(mut self, k: &str, v: &str) -> Self {
            self.env.insert(k.into(), v.into());
            self
        }

        pub fn with_file(mut self, p: &str, text: &str) -> Self {
            self.files.insert(p.into(), text.into());
            self
        }
    }

    impl Sources for FakeSources {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }

        fn read_file(&self, path: &Path) -> io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
        }

        fn home_dir(&self) -> Option<PathBuf> {
            self.home.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeSources;
    use super::*;

    #[test]
    fn env_and_file_secrets_resolve_and_trim_the_trailing_newline() {
        let s = FakeSources::default()
            .with_env("SK", "abc")
            .with_file("/run/sk", "from-file\r\n");
        assert_eq!(
            SecretSource::Env("SK".into()).resolve(&s).unwrap().expose(),
            "abc"
        );
        assert_eq!(
            SecretSource::File("/run/sk".into())
                .resolve(&s)
                .unwrap()
                .expose(),
            "from-file"
        );
    }

    #[test]
    fn missing_and_empty_secrets_are_clear_errors() {
        let s = FakeSources::default()
            .with_env("EMPTY", "")
            .with_file("/blank", "\n");
        assert_eq!(
            SecretSource::Env("NOPE".into()).resolve(&s).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert_eq!(
            SecretSource::Env("EMPTY".into()).resolve(&s).unwrap_err(),
            "environment variable EMPTY is empty"
        );
        assert_eq!(
            SecretSource::File("/blank".into()).resolve(&s).unwrap_err(),
            "file /blank is empty"
        );
        assert!(
            SecretSource::File("/none".into())
                .resolve(&s)
                .unwrap_err()
                .starts_with("cannot read /none: ")
        );
    }

    #[test]
    fn console_csv_with_bom_crlf_and_quotes() {
        let csv = "\u{feff}User Name,Access Key Id,Secret Access Key\r\n\"alice\",AKEXAMPLE,sk/Example+1\r\n";
        let (ak, sk) = parse_credentials_csv(csv).unwrap();
        assert_eq!(ak, "AKEXAMPLE");
        assert_eq!(sk.expose(), "sk/Example+1");
        let (ak, _) = parse_credentials_csv("access key id,secret access key\nAK2,SK2\n").unwrap();
        assert_eq!(ak, "AK2");
    }

    #[test]
    fn console_csv_errors_say_what_is_wrong() {
        assert_eq!(parse_credentials_csv("").unwrap_err(), "the file is empty");
        assert!(
            parse_credentials_csv("a,b\n1,2")
                .unwrap_err()
                .contains("Access Key Id")
        );
        assert!(
            parse_credentials_csv("Access Key Id,Secret Access Key\n")
                .unwrap_err()
                .contains("no key row")
        );
        assert!(
            parse_credentials_csv("Access Key Id,Secret Access Key\nAK,\n")
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn sdk_chain_prefers_the_environment() {
        let s = FakeSources::default()
            .with_env(ENV_AK, "AK1")
            .with_env(ENV_SK, "SK1")
            .with_env(ENV_SECURITY_TOKEN, "TOK")
            .with_env(ENV_PROJECT_ID, "p1");
        let found = from_sdk_chain(&s).unwrap();
        assert_eq!(found.key.access_key, "AK1");
        assert_eq!(found.key.secret_key.expose(), "SK1");
        assert_eq!(found.key.security_token.unwrap().expose(), "TOK");
        assert_eq!(found.project_id.as_deref(), Some("p1"));
    }

    #[test]
    fn sdk_chain_falls_back_to_the_profile_file() {
        let profile =
            "[global]\nak = GLOBAL\nsk = G\n\n[basic]\nak = AKP\nsk = SKP\nproject_id = proj\n";
        let mut s = FakeSources::default().with_file("/home/u/.huaweicloud/credentials", profile);
        s.home = Some("/home/u".into());
        let found = from_sdk_chain(&s).unwrap();
        assert_eq!(found.key.access_key, "AKP");
        assert_eq!(found.project_id.as_deref(), Some("proj"));
        assert_eq!(
            found.origin,
            "profile file /home/u/.huaweicloud/credentials"
        );

        let s = FakeSources::default()
            .with_env(ENV_CREDENTIALS_FILE, "/etc/hc")
            .with_file("/etc/hc", "[basic]\nak=A\nsk=S\n");
        assert_eq!(from_sdk_chain(&s).unwrap().key.access_key, "A");
    }

    #[test]
    fn sdk_chain_errors_name_what_was_tried() {
        let s = FakeSources {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        let err = from_sdk_chain(&s).unwrap_err();
        assert!(
            err.contains(ENV_AK) && err.contains("/home/u/.huaweicloud/credentials"),
            "{err}"
        );
        let err = from_sdk_chain(&FakeSources::default().with_env(ENV_AK, "A")).unwrap_err();
        assert_eq!(err, format!("{ENV_AK} is set but {ENV_SK} is not"));
        let s = FakeSources::default()
            .with_env(ENV_CREDENTIALS_FILE, "/p")
            .with_file("/p", "[global]\nak=a\nsk=b");
        assert!(
            from_sdk_chain(&s)
                .unwrap_err()
                .contains("no [basic] section")
        );
    }
}
