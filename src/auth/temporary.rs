//! Temporary AK/SK as every issuer writes them. IAM and the ECS metadata
//! service answer `{"credential":{"access","secret","securitytoken",
//! "expires_at"}}`; CCE Pod Identity `{"credentials":{"accessKeyId",
//! "secretAccessKey","securityToken","expiration"}}`. The official SDKs
//! accept either wrapper with either spelling, and so does this.

use std::sync::Arc;

use super::aksk::AkSkCredentials;
use super::iam::parse_time;
use super::refresh::Expiring;
use crate::secret::Secret;
use crate::signer::AkSk;

/// A token file (a projected service-account token, an OIDC id token),
/// read now and trimmed; `what` names it in errors (`the id token file
/// /p`), which never quote its contents.
pub fn read_token_file(
    sources: &dyn crate::credentials::Sources,
    path: &std::path::Path,
    what: &str,
) -> Result<Secret, super::refresh::FetchError> {
    let failed = |message| super::refresh::FetchError {
        message,
        permanent: false,
    };
    let text = sources
        .read_file(path)
        .map_err(|e| failed(format!("cannot read {what}: {e}")))?;
    match text.trim() {
        "" => Err(failed(format!("{what} is empty"))),
        token => Ok(Secret::new(token)),
    }
}

/// A fetched key as requests are signed with it; `origin` says where it came from.
pub fn ready(
    fetched: Expiring<AkSk>,
    project_id: Option<String>,
    origin: String,
) -> Expiring<Arc<AkSkCredentials>> {
    Expiring {
        value: Arc::new(AkSkCredentials::new(fetched.value, project_id, origin)),
        expires_at: fetched.expires_at,
    }
}

/// Each field's spellings, as the SDKs' `Credential` model aliases them.
const ACCESS: &[&str] = &["access", "accessKeyId", "access_key_id"];
const SECRET: &[&str] = &["secret", "secretAccessKey", "secret_access_key"];
const TOKEN: &[&str] = &["securitytoken", "securityToken", "security_token"];
const EXPIRY: &[&str] = &["expires_at", "expiration"];

/// Parses a temporary-key answer. The error names what is missing, never a value.
pub fn parse_credential(body: &[u8]) -> Result<Expiring<AkSk>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("its body is not JSON ({e})"))?;
    let (wrapper, c) = ["credential", "credentials"]
        .into_iter()
        .find_map(|w| v.get(w).filter(|c| c.is_object()).map(|c| (w, c)))
        .ok_or("its body has no credential object")?;
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| c[*n].as_str().filter(|s| !s.is_empty()))
            .ok_or_else(|| format!("its body has no {wrapper}.{}", names[0]))
    };
    let (access, secret, token, expires_at) = (
        field(ACCESS)?,
        field(SECRET)?,
        field(TOKEN)?,
        field(EXPIRY)?,
    );
    Ok(Expiring {
        value: AkSk {
            access_key: access.to_owned(),
            secret_key: Secret::new(secret),
            security_token: Some(Secret::new(token)),
        },
        expires_at: parse_time(expires_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wrappers_and_both_spellings() {
        let iam = parse_credential(
            br#"{"credential":{"access":"TMPAK","secret":"tmp-sk","securitytoken":"tok","expires_at":"2020-01-08T03:50:07.574000Z"}}"#,
        )
        .unwrap();
        assert_eq!(iam.value.access_key, "TMPAK");
        assert_eq!(iam.value.secret_key.expose(), "tmp-sk");
        assert_eq!(iam.value.security_token.unwrap().expose(), "tok");
        assert_eq!(iam.expires_at.to_rfc3339(), "2020-01-08T03:50:07.574+00:00");
        let pod = parse_credential(
            br#"{"assumedAgency":{"urn":"u","id":"i"},"audience":"service.cce.pods","credentials":{"accessKeyId":"PODAK","secretAccessKey":"pod-sk","securityToken":"pt","expiration":"2020-01-08T03:50:07.574000Z"},"subject":{"namespace":"n","serviceAccount":"s"}}"#,
        )
        .unwrap();
        assert_eq!(pod.value.access_key, "PODAK");
        assert_eq!(pod.value.secret_key.expose(), "pod-sk");
        assert_eq!(pod.value.security_token.unwrap().expose(), "pt");
    }

    #[test]
    fn what_is_missing_is_named() {
        assert_eq!(
            parse_credential(br#"{"credential":{"access":"A"}}"#).unwrap_err(),
            "its body has no credential.secret"
        );
        assert_eq!(
            parse_credential(
                br#"{"credentials":{"accessKeyId":"A","secretAccessKey":"s","securityToken":"t"}}"#
            )
            .unwrap_err(),
            "its body has no credentials.expires_at"
        );
        assert_eq!(
            parse_credential(br#"{"token":{}}"#).unwrap_err(),
            "its body has no credential object"
        );
        assert!(
            parse_credential(b"<html>")
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
