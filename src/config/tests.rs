use super::*;
use crate::credentials::fake::FakeSources;

fn env() -> FakeSources {
    FakeSources::default()
        .with_env("AK", "AKEXAMPLE")
        .with_env("SK", "sk-secret-value")
}

fn errors(text: &str) -> Vec<String> {
    load(text, &env())
        .expect_err("config should be rejected")
        .iter()
        .map(ToString::to_string)
        .collect()
}

const MINIMAL: &str = r#"
[[route]]
upstream = "https://x.apig.cn-north-4.huaweicloudapis.com/v1/infers/abc"
credentials = "default"

[credentials.default]
type = "aksk"
access_key = { env = "AK" }
secret_key = { env = "SK" }
"#;

#[test]
fn minimal_config_gets_the_gateway_defaults() {
    let v = load(MINIMAL, &env()).unwrap();
    let c = v.config;
    assert_eq!(c.server, Server::default());
    assert_eq!(
        c.server.listen,
        ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.server.max_body, 12 * 1024 * 1024);
    assert_eq!(c.server.timeout, Duration::from_secs(40));
    let r = &c.routes[0];
    assert_eq!((r.prefix.as_str(), r.match_prefix.as_str()), ("/", ""));
    assert_eq!(
        r.upstream.url(),
        "https://x.apig.cn-north-4.huaweicloudapis.com/v1/infers/abc"
    );
    assert_eq!(r.payload, PayloadMode::Auto);
    let Credentials::AkSk(k) = &c.credentials["default"];
    assert_eq!(k.key.access_key, "AKEXAMPLE");
    assert_eq!(k.key.secret_key.expose(), "sk-secret-value");
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn every_error_is_reported_at_once_with_its_key_path() {
    let errs = errors(
        r#"
bogus = 1
[server]
listen = ["127.0.0.1:8080", "nope"]
max_body = "12 parsecs"
timeout = 40
lisen = "x"

[[route]]
prefix = "v1"
upstream = "ftp://host/x"
credentials = "missing"
payload = "sometimes"
headers = { "x-auth-token" = "t", "x-stage" = 1 }

[[route]]
prefix = "/b"

[credentials.default]
type = "aksk"
access_key = { env = "AK" }
secret_key = { env = "NOT_SET" }
"#,
    );
    let want = [
        "bogus: unknown key; expected one of: server, route, credentials, upstream_tls",
        "credentials.default.secret_key: environment variable NOT_SET is not set",
        "route[0].credentials: no [credentials.missing] table (known: default)",
        "route[0].headers.x-auth-token: is set by the proxy itself and cannot be configured",
        "route[0].headers.x-stage: expected a string, found an integer",
        "route[0].payload: must be \"auto\", \"signed\" or \"unsigned\", not \"sometimes\"",
        "route[0].prefix: must start with '/', got \"v1\"",
        "route[0].upstream: the scheme must be https or http",
        "route[1].upstream: is required",
        "server.lisen: unknown key (did you mean \"listen\"?)",
        "server.listen[1]: invalid address \"nope\"",
        "server.max_body: invalid size \"12 parsecs\"",
        "server.timeout: expected a string, found an integer",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        assert!(
            got.starts_with(want),
            "got {got:?}, want it to start with {want:?}"
        );
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let errs = errors("[server]\nlisten = [\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("line "), "{errs:?}");
    assert!(errs[0].contains("invalid TOML"), "{errs:?}");
}

#[test]
fn non_loopback_listen_needs_allow_remote() {
    let text = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{MINIMAL}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("server.listen: 0.0.0.0:8080 is not a loopback address"),
        "{errs:?}"
    );
    let text = format!("[server]\nlisten = \"0.0.0.0:8080\"\nallow_remote = true\n{MINIMAL}");
    let c = load(&text, &env()).unwrap().config;
    assert_eq!(c.server.listen[0].to_string(), "0.0.0.0:8080");
    assert!(c.server.allow_remote);
}

#[test]
fn admin_listen_may_be_remote_without_opening_the_proxy_listener() {
    let text = format!("[server]\nadmin_listen = \"0.0.0.0:9901\"\n{MINIMAL}");
    let c = load(&text, &env()).unwrap().config;
    assert_eq!(c.server.admin_listen, Some("0.0.0.0:9901".parse().unwrap()));
    assert!(!c.server.allow_remote);
}

#[test]
fn token_and_apikey_credentials_are_parsed_but_refused_as_not_yet_supported() {
    let errs = errors(
        r#"
[[route]]
upstream = "https://h/x"
credentials = "iam"
[credentials.iam]
type = "token"
user = "alice"
pasword = "x"
[credentials.pangu]
type = "apikey"
app_code = { env = "APP" }
"#,
    );
    assert_eq!(
        errs,
        [
            "credentials.iam.pasword: unknown key (did you mean \"password\"?)",
            "credentials.iam.type: IAM token credentials (type = \"token\") are not supported yet; use type = \"aksk\"",
            "credentials.pangu.type: API-key credentials (type = \"apikey\") are not supported yet; use type = \"aksk\"",
        ]
    );
}

#[test]
fn routes_sort_longest_prefix_first_and_duplicates_are_refused() {
    let text = r#"
[[route]]
prefix = "/"
upstream = "http://127.0.0.1:1/a"
[[route]]
prefix = "/v1/special/"
upstream = "http://127.0.0.1:1/b"
[[route]]
prefix = "/v1"
upstream = "http://127.0.0.1:1/c"
"#;
    let c = load(text, &env()).unwrap().config;
    let order: Vec<&str> = c.routes.iter().map(|r| r.match_prefix.as_str()).collect();
    assert_eq!(order, ["/v1/special", "/v1", ""]);

    let errs = errors(
        "[[route]]\nprefix = \"/a\"\nupstream = \"http://h/\"\n[[route]]\nprefix = \"/a/\"\nupstream = \"http://h/\"\n",
    );
    assert_eq!(
        errs,
        ["route: two routes have the same prefix (\"/a\" and \"/a/\")"]
    );
}

#[test]
fn upstream_keeps_the_authority_and_path_as_written() {
    let text = "[[route]]\nupstream = \"https://Apig.Example.com:443\"\n";
    let c = load(text, &env()).unwrap().config;
    let u = &c.routes[0].upstream;
    assert_eq!(u.authority.as_str(), "Apig.Example.com:443");
    assert_eq!(u.base_path, "");
    for bad in [
        "https://u:p@h/x",
        "https://h/x?q=1",
        "h/x",
        "https://h/x#frag",
    ] {
        let errs = errors(&format!("[[route]]\nupstream = \"{bad}\"\n"));
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert!(errs[0].starts_with("route[0].upstream: "), "{errs:?}");
    }
}

#[test]
fn secrets_from_files_csv_and_literals() {
    let sources = env().with_file("/run/sk", "file-sk\n").with_file(
        "/keys.csv",
        "User Name,Access Key Id,Secret Access Key\nalice,CSVAK,csv-sk\n",
    );
    let text = r#"
[[route]]
upstream = "https://h/x"
credentials = "a"
[credentials.a]
type = "aksk"
access_key = "LITERALAK"
secret_key = { file = "/run/sk" }
[credentials.b]
type = "aksk"
csv = "/keys.csv"
project_id = "p1"
"#;
    let v = load(text, &sources).unwrap();
    let Credentials::AkSk(a) = &v.config.credentials["a"];
    assert_eq!(
        (a.key.access_key.as_str(), a.key.secret_key.expose()),
        ("LITERALAK", "file-sk")
    );
    let Credentials::AkSk(b) = &v.config.credentials["b"];
    assert_eq!(
        (b.key.access_key.as_str(), b.key.secret_key.expose()),
        ("CSVAK", "csv-sk")
    );
    assert_eq!(b.project_id.as_deref(), Some("p1"));
    let warnings: Vec<String> = v.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("credentials.a.access_key: is a literal secret"),
        "{warnings:?}"
    );
}

#[test]
fn one_key_source_only() {
    let errs = errors(
        "[[route]]\nupstream = \"https://h/\"\n[credentials.a]\ntype = \"aksk\"\ncsv = \"/x\"\nsource = \"env\"\n",
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("credentials.a: give the key one way only"),
        "{errs:?}"
    );
}

#[test]
fn config_debug_output_never_shows_secrets() {
    let v = load(MINIMAL, &env()).unwrap();
    let debug = format!("{:?}", v.config);
    assert!(!debug.contains("sk-secret-value"), "{debug}");
    assert!(debug.contains("** redacted **"));
}

#[test]
fn route_header_names_with_underscores_warn_that_they_are_not_signed() {
    let text = MINIMAL.replace(
        "credentials = \"default\"",
        "credentials = \"default\"\nheaders = { \"x_stage\" = \"a\" }",
    );
    let v = load(&text, &env()).unwrap();
    let warnings: Vec<String> = v.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("route[0].headers.x_stage: is sent but not signed"),
        "{warnings:?}"
    );
}
