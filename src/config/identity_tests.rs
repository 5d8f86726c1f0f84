//! The keyless sources' tables, and what `source = "auto"` chooses under
//! each combination of environment variables and files.

use super::*;
use crate::config::{DEFAULT_METADATA_ENDPOINT, load};
use crate::credentials::fake::FakeSources;
use crate::credentials::{ENV_AK, ENV_SK};

const ROUTE: &str = r#"
[[route]]
upstream = "https://x.apig.cn-north-4.huaweicloudapis.com/v1/infers/abc"
credentials = "c"
"#;

fn with(table: &str, sources: &FakeSources) -> Result<Credentials, Vec<String>> {
    load(&format!("{ROUTE}\n[credentials.c]\n{table}"), sources)
        .map(|v| v.config.credentials["c"].clone())
        .map_err(|ps| ps.iter().map(ToString::to_string).collect())
}

fn temporary(c: Credentials) -> (TemporarySource, Option<String>) {
    match c {
        Credentials::Temporary(t) => (t.source, t.chosen),
        other => panic!("not temporary: {other:?}"),
    }
}

fn pod_env() -> FakeSources {
    FakeSources::default()
        .with_env(ENV_POD_IDENTITY_URI, "http://127.0.0.1:9/v1/credentials")
        .with_env(ENV_POD_IDENTITY_TOKEN_FILE, "/var/run/secrets/pod/token")
}

#[test]
fn pod_identity_takes_the_cce_variables_or_its_own_keys() {
    let (source, chosen) =
        temporary(with("type = \"aksk\"\nsource = \"pod_identity\"", &pod_env()).unwrap());
    assert_eq!(
        source,
        TemporarySource::PodIdentity(PodIdentitySpec {
            endpoint: "http://127.0.0.1:9/v1/credentials".parse().unwrap(),
            token_file: "/var/run/secrets/pod/token".into(),
        })
    );
    assert_eq!(chosen, None);
    let table = "type = \"aksk\"\nsource = \"pod_identity\"\nendpoint = \"http://127.0.0.1:1/x\"\ntoken_file = \"/t\"";
    let (source, _) = temporary(with(table, &FakeSources::default()).unwrap());
    let TemporarySource::PodIdentity(p) = source else {
        panic!()
    };
    assert_eq!(p.endpoint.to_string(), "http://127.0.0.1:1/x");
    assert_eq!(p.token_file, PathBuf::from("/t"));
}

#[test]
fn pod_identity_without_its_variables_names_both() {
    let errors = with(
        "type = \"aksk\"\nsource = \"pod_identity\"",
        &FakeSources::default(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with(
        "credentials.c.endpoint: is required: HC_CONTAINER_CREDENTIALS_FULL_URI is not set"
    ));
    assert!(errors[1].starts_with(
        "credentials.c.token_file: is required: HC_CONTAINER_AUTHORIZATION_TOKEN_FILE is not set"
    ));
}

#[test]
fn oidc_for_keys_and_for_tokens() {
    let env = FakeSources::default()
        .with_env(ENV_IDP_ID, "idp-1")
        .with_env(ENV_ID_TOKEN_FILE, "/id/token")
        .with_env(ENV_REGION, "cn-south-1");
    let (source, _) = temporary(
        with(
            "type = \"aksk\"\nsource = \"oidc\"\nduration = \"1h\"",
            &env,
        )
        .unwrap(),
    );
    assert_eq!(
        source,
        TemporarySource::Oidc {
            oidc: OidcSpec {
                iam_endpoint: "https://iam.cn-south-1.myhuaweicloud.com".parse().unwrap(),
                idp_id: "idp-1".into(),
                id_token_file: "/id/token".into(),
            },
            duration: Duration::from_secs(3600),
        }
    );
    let table = "type = \"token\"\nsource = \"oidc\"\nidp_id = \"mine\"\nid_token_file = \"/f\"\nregion = \"cn-north-4\"";
    let Credentials::Token(t) = with(table, &FakeSources::default()).unwrap() else {
        panic!()
    };
    let TokenSource::Oidc { oidc, project } = &t.source else {
        panic!()
    };
    assert_eq!(oidc.idp_id, "mine");
    assert_eq!(
        oidc.iam_endpoint.to_string(),
        "https://iam.cn-north-4.myhuaweicloud.com/"
    );
    assert_eq!(*project, ProjectScope::Name("cn-north-4".into()));
    // Without a region or endpoint anywhere: IAM's global endpoint, as the SDKs.
    let (source, _) = temporary(
        with(
            "type = \"aksk\"\nsource = \"oidc\"\nidp_id = \"i\"\nid_token_file = \"/f\"",
            &FakeSources::default(),
        )
        .unwrap(),
    );
    let TemporarySource::Oidc { oidc, duration } = source else {
        panic!()
    };
    assert_eq!(
        oidc.iam_endpoint.to_string(),
        "https://iam.myhuaweicloud.com/"
    );
    assert_eq!(duration, DEFAULT_DURATION);
}

#[test]
fn every_mistake_in_a_keyless_table_at_once() {
    let table = r#"type = "aksk"
source = "oidc"
idp_id = "i"
duration = "5m"
token_file = "/t"
base = "x"
region = "no such region!"
"#;
    let errors = with(table, &FakeSources::default()).unwrap_err();
    for want in [
        "credentials.c.base: only applies to source = \"assume_agency\"",
        "credentials.c.duration: 5m is outside what IAM issues: 15m to 24h",
        "credentials.c.id_token_file: is required: HUAWEICLOUD_SDK_ID_TOKEN_FILE is not set",
        "credentials.c.region: \"no such region!\" is not a region name",
        "credentials.c.token_file: only applies to source = \"pod_identity\"",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    let errors = with(
        "type = \"token\"\nsource = \"oidc\"\nuser = \"u\"",
        &FakeSources::default(),
    )
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e == "credentials.c.user: only applies to source = \"password\""),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("credentials.c.project: is required")),
        "{errors:#?}"
    );
    let errors = with(
        "type = \"aksk\"\nsource = \"magic\"",
        &FakeSources::default(),
    )
    .unwrap_err();
    assert!(errors[0].contains("\"assume_agency_with_oidc\" or \"auto\", not \"magic\""));
}

const AGENCY: &str = r#"
[[route]]
upstream = "https://x.apig.cn-north-4.huaweicloudapis.com/v1/infers/abc"
credentials = "partner"

[credentials.fed]
type = "aksk"
source = "oidc"
idp_id = "idp"
id_token_file = "/id"
iam_endpoint = "https://iam.example:8443"

[credentials.partner]
type = "TYPE"
source = "assume_agency"
base = "BASE"
domain_name = "partner-account"
agency_name = "modelarts-invoke"
PROJECT
"#;

fn agency(
    kind: &str,
    base: &str,
    extra: &str,
    sources: &FakeSources,
) -> Result<AgencySpec, Vec<String>> {
    let project = if kind == "token" {
        "project = \"cn-north-4\""
    } else {
        ""
    };
    let text = AGENCY
        .replace("TYPE", kind)
        .replace("BASE", base)
        .replace("PROJECT", project)
        + extra;
    let c = load(&text, sources)
        .map_err(|ps| ps.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(match &c.config.credentials["partner"] {
        Credentials::Token(t) => match &t.source {
            TokenSource::Agency { agency, .. } => agency.clone(),
            _ => panic!(),
        },
        Credentials::Temporary(t) => match &t.source {
            TemporarySource::Agency { agency, .. } => agency.clone(),
            _ => panic!(),
        },
        _ => panic!(),
    })
}

#[test]
fn an_agency_takes_its_base_and_its_iam_endpoint() {
    let none = FakeSources::default();
    // An OIDC key credential lends its unscoped token and its IAM.
    let a = agency("token", "fed", "", &none).unwrap();
    assert_eq!(a.iam_endpoint.to_string(), "https://iam.example:8443/");
    assert!(matches!(a.by, Base::Oidc(_)));
    assert_eq!(
        (a.domain_name.as_str(), a.agency_name.as_str()),
        ("partner-account", "modelarts-invoke")
    );
    // A password token lends its token.
    let pw = "\n[credentials.pw]\ntype = \"token\"\niam_endpoint = \"https://iam.pw\"\nuser = \"u\"\npassword = \"p\"\ndomain = \"d\"\nproject = \"cn-north-4\"\n";
    let a = agency("aksk", "pw", pw, &none).unwrap();
    assert_eq!(
        (a.by.clone(), a.iam_endpoint.to_string()),
        (Base::Token, "https://iam.pw/".to_owned())
    );
    // A Pod Identity key can only sign, which IAM takes for AK/SK, not for tokens.
    let pod = "\n[credentials.pod]\ntype = \"aksk\"\nsource = \"pod_identity\"\n";
    let a = agency("aksk", "pod", pod, &pod_env()).unwrap();
    assert_eq!(a.by, Base::Signature);
    assert_eq!(a.iam_endpoint.to_string(), "https://iam.myhuaweicloud.com/");
    let errors = agency("token", "pod", pod, &pod_env()).unwrap_err();
    assert!(
        errors[0].starts_with("credentials.partner.base: is an AK/SK credential"),
        "{errors:?}"
    );
}

#[test]
fn an_agency_without_a_usable_base_is_refused() {
    let none = FakeSources::default();
    let errors = agency("token", "nobody", "", &none).unwrap_err();
    assert_eq!(
        errors,
        ["credentials.partner.base: names no [credentials.nobody] table"]
    );
    let key = "\n[credentials.key]\ntype = \"apikey\"\napp_code = \"c\"\n";
    let errors = agency("aksk", "key", key, &none).unwrap_err();
    assert!(errors[0].contains("is an API key"), "{errors:?}");
    let chained = "\n[credentials.first]\ntype = \"token\"\nsource = \"assume_agency\"\nbase = \"fed\"\ndomain_name = \"a\"\nagency_name = \"b\"\nproject = \"p\"\n";
    let errors = agency("token", "first", chained, &none).unwrap_err();
    assert!(
        errors[0].contains("is itself an assumed agency"),
        "{errors:?}"
    );
}

#[test]
fn an_app_signs_with_its_key_and_secret() {
    let env = FakeSources::default().with_env("APP_SECRET", "app-secret-value");
    let c = with(
        "type = \"app\"\napp_key = \"app-key-1\"\napp_secret = { env = \"APP_SECRET\" }",
        &env,
    )
    .unwrap();
    let Credentials::AkSk(a) = c else { panic!() };
    assert_eq!(a.current.key.access_key, "app-key-1");
    assert_eq!(a.current.key.secret_key.expose(), "app-secret-value");
    assert!(!format!("{a:?}").contains("app-secret-value"));
    let errors = with(
        "type = \"app\"\napp_key = \"k\"\napp_secret = { env = \"NONE\" }",
        &env,
    )
    .unwrap_err();
    assert_eq!(
        errors,
        ["credentials.c.app_secret: environment variable NONE is not set"]
    );
}

/// What `auto` picks with `sources`.
fn auto(sources: &FakeSources) -> Result<Credentials, Vec<String>> {
    with("type = \"aksk\"\nsource = \"auto\"", sources)
}

#[test]
fn auto_prefers_a_key_in_the_environment() {
    let env = pod_env()
        .with_env(ENV_AK, "ENVAK")
        .with_env(ENV_SK, "envsk")
        .with_env(ENV_IDP_ID, "idp")
        .with_env(ENV_ID_TOKEN_FILE, "/id");
    let Credentials::AkSk(a) = auto(&env).unwrap() else {
        panic!()
    };
    assert_eq!(a.current.key.access_key, "ENVAK");
    // Half a key is an error, not a reason to look further.
    let errors = auto(&pod_env().with_env(ENV_AK, "ENVAK")).unwrap_err();
    assert!(
        errors[0].contains("HUAWEICLOUD_SDK_AK is set but HUAWEICLOUD_SDK_SK is not"),
        "{errors:?}"
    );
}

#[test]
fn auto_takes_an_identity_provider_from_the_environment() {
    let env = pod_env()
        .with_env(ENV_IDP_ID, "idp")
        .with_env(ENV_ID_TOKEN_FILE, "/id")
        .with_env(ENV_IAM_ENDPOINT, "https://iam.env");
    let (source, chosen) = temporary(auto(&env).unwrap());
    let TemporarySource::Oidc { oidc, .. } = source else {
        panic!("{source:?}")
    };
    assert_eq!(
        (oidc.idp_id.as_str(), oidc.iam_endpoint.to_string()),
        ("idp", "https://iam.env/".to_owned())
    );
    assert!(chosen.unwrap().contains(ENV_IDP_ID));
    let errors = auto(&pod_env().with_env(ENV_IDP_ID, "idp")).unwrap_err();
    assert!(
        errors[0].contains("set both HUAWEICLOUD_SDK_IDP_ID and HUAWEICLOUD_SDK_ID_TOKEN_FILE")
    );
}

#[test]
fn auto_reads_the_profile_file_before_pod_identity() {
    let mut env = pod_env().with_file(
        "/home/u/.huaweicloud/credentials",
        "[basic]\nak = PROFAK\nsk = profsk\n",
    );
    env.home = Some("/home/u".into());
    let Credentials::AkSk(a) = auto(&env).unwrap() else {
        panic!()
    };
    assert_eq!(a.current.key.access_key, "PROFAK");
    // An identity provider in the same file wins over its key, as in the SDKs.
    let mut env = pod_env().with_file(
        "/p",
        "[basic]\nak = PROFAK\nsk = profsk\nidp_id = pidp\nid_token_file = /pid\niam_endpoint = https://iam.profile\n",
    );
    env = env.with_env(crate::credentials::ENV_CREDENTIALS_FILE, "/p");
    let (source, chosen) = temporary(auto(&env).unwrap());
    let TemporarySource::Oidc { oidc, .. } = source else {
        panic!()
    };
    assert_eq!(oidc.iam_endpoint.to_string(), "https://iam.profile/");
    assert_eq!(chosen.as_deref(), Some("the profile file /p"));
    // A profile file named by the variable must exist.
    let env = pod_env().with_env(crate::credentials::ENV_CREDENTIALS_FILE, "/missing");
    let errors = auto(&env).unwrap_err();
    assert!(
        errors[0].contains("the profile file /missing cannot be read"),
        "{errors:?}"
    );
}

#[test]
fn auto_takes_pod_identity_and_never_the_nodes_identity() {
    let (source, chosen) = temporary(auto(&pod_env()).unwrap());
    assert!(
        matches!(source, TemporarySource::PodIdentity(_)),
        "{source:?}"
    );
    assert!(chosen.unwrap().contains("CCE Pod Identity"));
    let env = FakeSources::default().with_env(ENV_POD_IDENTITY_URI, "http://127.0.0.1:9/");
    let errors = auto(&env).unwrap_err();
    assert!(
        errors[0].contains("HC_CONTAINER_CREDENTIALS_FULL_URI is set but HC_CONTAINER_AUTHORIZATION_TOKEN_FILE is not"),
        "a half-configured Pod Identity must not fall through to the node's identity: {errors:?}"
    );
    let env = FakeSources::default().with_env(ENV_POD_IDENTITY_TOKEN_FILE, "/t");
    let errors = auto(&env).unwrap_err();
    assert!(
        errors[0].contains("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE is set but HC_CONTAINER_CREDENTIALS_FULL_URI is not"),
        "{errors:?}"
    );
    let env = pod_env().with_env(ENV_POD_IDENTITY_URI, "not a url");
    assert!(auto(&env).unwrap_err()[0].contains("is not a URL"));
}

#[test]
fn auto_ends_at_the_metadata_service() {
    let (source, chosen) = temporary(auto(&FakeSources::default()).unwrap());
    assert_eq!(
        source,
        TemporarySource::Metadata {
            endpoint: DEFAULT_METADATA_ENDPOINT.parse().unwrap()
        }
    );
    assert!(chosen.unwrap().contains("ECS metadata"));
}

#[test]
fn sts_takes_urns_an_id_token_and_a_region() {
    let table = r#"type = "aksk"
source = "assume_agency_with_oidc"
provider_urn = "iam::01:oidcProvider:c"
agency_urn = "iam::01:agency:a"
id_token_file = "/id"
region = "cn-north-4"
"#;
    let (source, _) = temporary(with(table, &FakeSources::default()).unwrap());
    assert_eq!(
        source,
        TemporarySource::StsOidc {
            sts: StsOidcSpec {
                sts_endpoint: "https://sts.cn-north-4.myhuaweicloud.com".parse().unwrap(),
                provider_urn: "iam::01:oidcProvider:c".into(),
                agency_urn: "iam::01:agency:a".into(),
                session_name: DEFAULT_SESSION_NAME.into(),
                id_token_file: "/id".into(),
            },
            duration: STS_DEFAULT_DURATION,
        }
    );
    let errors = with(
        "type = \"aksk\"\nsource = \"assume_agency_with_oidc\"\nduration = \"13h\"\nagency_session_name = \"x\"",
        &FakeSources::default(),
    )
    .unwrap_err();
    for want in [
        "credentials.c.agency_session_name: must be 2 to 128 characters long",
        "credentials.c.agency_urn: is required",
        "credentials.c.duration: 13h is outside what STS issues: 15m to 12h",
        "credentials.c.id_token_file: is required: HUAWEICLOUD_SDK_ID_TOKEN_FILE is not set",
        "credentials.c.provider_urn: is required",
        "credentials.c.sts_endpoint: is required",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
}
