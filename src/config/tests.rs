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
        ["127.0.0.1:8080".parse::<Listen>().unwrap()]
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
    let Credentials::AkSk(k) = &c.credentials["default"] else {
        panic!("not AK/SK")
    };
    assert_eq!(k.current.key.access_key, "AKEXAMPLE");
    assert_eq!(k.current.key.secret_key.expose(), "sk-secret-value");
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
fn token_and_apikey_mistakes_are_all_reported_with_their_key_paths() {
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
            "credentials.iam.domain: is required",
            "credentials.iam.iam_endpoint: is required (or give region = \"cn-north-4\" for https://iam.cn-north-4.myhuaweicloud.com)",
            "credentials.iam.password: is required",
            "credentials.iam.pasword: unknown key (did you mean \"password\"?)",
            "credentials.iam.project: is required (the project name, e.g. \"cn-north-4\"), or give project_id",
            "credentials.pangu.app_code: environment variable APP is not set",
        ]
    );
}

#[test]
fn token_apikey_and_metadata_credentials_parse() {
    let sources = env().with_env("IAM_PW", "pw").with_env("APP", "app-code-1");
    let text = r#"
[[route]]
upstream = "https://h/x"
credentials = "iam"
[credentials.iam]
type = "token"
region = "cn-north-4"
user = "alice"
password = { env = "IAM_PW" }
domain = "acme"
refresh_margin = "10m"
[credentials.byid]
type = "token"
iam_endpoint = "https://iam.example.com"
user = "bob"
password = { env = "IAM_PW" }
domain = "acme"
project_id = "0a1b"
[credentials.pangu]
type = "apikey"
app_code = { env = "APP" }
[credentials.bearer]
type = "apikey"
app_code = { env = "APP" }
header = "Authorization"
prefix = "Bearer "
[credentials.ecs]
type = "aksk"
source = "metadata"
metadata_endpoint = "http://127.0.0.1:9/openstack/latest/securitykey"
"#;
    let c = load(text, &sources).unwrap().config;
    let Credentials::Token(t) = &c.credentials["iam"] else {
        panic!()
    };
    let TokenSource::Password(request) = &t.source else {
        panic!()
    };
    assert_eq!(
        request.iam_endpoint.to_string(),
        "https://iam.cn-north-4.myhuaweicloud.com/"
    );
    assert_eq!(
        request.project,
        ProjectScope::Name("cn-north-4".into()),
        "the project defaults to the region"
    );
    assert_eq!(t.refresh_margin, Duration::from_secs(600));
    assert_eq!(t.max_wait, DEFAULT_MAX_WAIT);
    let Credentials::Token(t) = &c.credentials["byid"] else {
        panic!()
    };
    let TokenSource::Password(request) = &t.source else {
        panic!()
    };
    assert_eq!(request.project, ProjectScope::Id("0a1b".into()));
    let Credentials::ApiKey(k) = &c.credentials["pangu"] else {
        panic!()
    };
    assert_eq!(
        (k.header.as_str(), k.current.to_str().unwrap()),
        ("x-apig-appcode", "app-code-1")
    );
    assert!(k.current.is_sensitive());
    let Credentials::ApiKey(k) = &c.credentials["bearer"] else {
        panic!()
    };
    assert_eq!(
        (k.header.as_str(), k.current.to_str().unwrap()),
        ("authorization", "Bearer app-code-1")
    );
    let Credentials::Temporary(TemporarySpec {
        source: TemporarySource::Metadata { endpoint },
        ..
    }) = &c.credentials["ecs"]
    else {
        panic!()
    };
    assert_eq!(
        endpoint.to_string(),
        "http://127.0.0.1:9/openstack/latest/securitykey"
    );
    assert!(
        !format!("{c:?}").contains("app-code-1"),
        "API keys are redacted in Debug"
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
    let Credentials::AkSk(a) = &v.config.credentials["a"] else {
        panic!("not AK/SK")
    };
    assert_eq!(
        (
            a.current.key.access_key.as_str(),
            a.current.key.secret_key.expose()
        ),
        ("LITERALAK", "file-sk")
    );
    let Credentials::AkSk(b) = &v.config.credentials["b"] else {
        panic!("not AK/SK")
    };
    assert_eq!(
        (
            b.current.key.access_key.as_str(),
            b.current.key.secret_key.expose()
        ),
        ("CSVAK", "csv-sk")
    );
    assert_eq!(b.current.project_id.as_deref(), Some("p1"));
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

#[test]
fn the_bounds_of_section_8_parse_with_their_defaults() {
    let v = load(
        &format!(
            r#"
[server]
max_connections = 100
header_timeout = "5s"
idle_timeout = "2m"
buffer_budget = "16MiB"
buffer_wait = "0s"
allow_clients = ["10.0.0.0/8", "192.168.1.7", "::1/128"]
require_header = {{ name = "X-Proxy-Key", value = {{ env = "SK" }} }}
shutdown_delay = "3s"
max_header_bytes = "8KiB"
workers = 3
{MINIMAL}"#
        ),
        &env(),
    )
    .unwrap();
    let s = v.config.server;
    assert_eq!(s.max_connections, 100);
    assert_eq!(s.header_timeout, Duration::from_secs(5));
    assert_eq!(s.idle_timeout, Duration::from_secs(120));
    assert_eq!(s.buffer_budget, 16 * 1024 * 1024);
    assert_eq!(s.buffer_wait, Duration::ZERO);
    assert_eq!(s.shutdown_delay, Duration::from_secs(3));
    assert_eq!(s.max_header_bytes, 8 * 1024);
    assert_eq!((s.workers, s.worker_threads()), (Some(3), 3));
    assert!(s.client_allowed("10.9.8.7".parse().unwrap()));
    assert!(s.client_allowed("192.168.1.7".parse().unwrap()));
    assert!(!s.client_allowed("192.168.1.8".parse().unwrap()));
    let rh = s.require_header.unwrap();
    assert_eq!(
        (rh.name.as_str(), rh.value.expose()),
        ("x-proxy-key", "sk-secret-value")
    );
    // And the documented defaults.
    let d = Server::default();
    assert_eq!(
        (
            d.max_connections,
            d.header_timeout,
            d.idle_timeout,
            d.buffer_budget,
            d.buffer_wait
        ),
        (
            4096,
            Duration::from_secs(30),
            Duration::from_secs(60),
            64 << 20,
            Duration::from_secs(5)
        )
    );
    assert_eq!(
        (d.shutdown_delay, d.max_header_bytes),
        (Duration::ZERO, 32 * 1024)
    );
    assert!(d.allow_clients.is_none() && d.require_header.is_none());
    // Unset workers: one per CPU this process may use.
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!((d.workers, d.worker_threads()), (None, cpus));
}

#[test]
fn bad_bounds_are_all_reported_with_their_key_paths() {
    let errs = errors(&format!(
        r#"
[server]
max_connections = 0
header_timeout = "0s"
buffer_budget = "lots"
allow_clients = ["10.0.0.0/33", "not-an-ip", 7]
require_header = {{ name = "Host", value = {{ env = "NOPE" }} }}
shutdown_delay = "soon"
max_header_bytes = "1KiB"
workers = 0
{MINIMAL}"#
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap()).collect();
    for want in [
        "server.max_connections",
        "server.header_timeout",
        "server.buffer_budget",
        "server.allow_clients[0]",
        "server.allow_clients[1]",
        "server.allow_clients[2]",
        "server.require_header.name",
        "server.require_header.value",
        "server.shutdown_delay",
        "server.max_header_bytes",
        "server.workers",
    ] {
        assert!(paths.contains(&want), "no error at {want}: {errs:#?}");
    }
    assert!(
        errors(&format!("[server]\nallow_clients = []\n{MINIMAL}"))[0]
            .starts_with("server.allow_clients: is empty")
    );
}

#[test]
fn a_remote_listener_without_allow_clients_or_require_header_is_warned_about() {
    let warn = |server: &str| -> Vec<String> {
        load(&format!("[server]\n{server}\n{MINIMAL}"), &env())
            .unwrap()
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let open = warn("listen = \"0.0.0.0:8080\"\nallow_remote = true");
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        open[0].starts_with("server.allow_remote: is true with neither"),
        "{open:?}"
    );
    assert!(
        warn("listen = \"0.0.0.0:8080\"\nallow_remote = true\nallow_clients = [\"10.0.0.0/8\"]")
            .is_empty()
    );
    assert!(
        warn("listen = \"0.0.0.0:8080\"\nallow_remote = true\nrequire_header = { name = \"X-K\", value = { env = \"SK\" } }")
            .is_empty()
    );
    let small = warn("buffer_budget = \"1MiB\"");
    assert!(
        small[0].starts_with("server.buffer_budget: is smaller than max_body"),
        "{small:?}"
    );
}

#[test]
fn both_missing_keys_are_reported_not_only_the_first() {
    let errs = errors(
        "[[route]]\nupstream = \"https://h/\"\ncredentials = \"k\"\n[credentials.k]\ntype = \"aksk\"\naccess_key = { env = \"NO_AK\" }\nsecret_key = { env = \"NO_SK\" }\n",
    );
    assert_eq!(
        errs,
        [
            "credentials.k.access_key: environment variable NO_AK is not set",
            "credentials.k.secret_key: environment variable NO_SK is not set",
        ]
    );
}

#[test]
fn one_credential_is_validated_alone_for_sign_and_token() {
    let text = r#"
[[route]]
prefix = "/a"
upstream = "https://a.example.com/v1"
credentials = "good"
[[route]]
prefix = "/b"
upstream = "https://b.example.com/v1"
credentials = "broken"
[credentials.good]
type = "aksk"
access_key = { env = "AK" }
secret_key = { env = "SK" }
[credentials.broken]
type = "token"
iam_endpoint = "https://iam.example.com"
user = "u"
domain = "d"
project = "p"
password = { env = "UNSET_PASSWORD" }
"#;
    assert!(load(text, &env()).is_err(), "the whole file has a problem");
    let table = parse(text).unwrap();
    let name = pick_credentials(&table, Some("https://a.example.com/v1/infers/x"), None);
    assert_eq!(name.as_deref(), Some("good"));
    let v = validate_one(&table, "good", &env()).unwrap();
    assert_eq!(v.config.credentials.len(), 1);
    assert_eq!(
        pick_credentials(&table, None, Some("token")).as_deref(),
        Some("broken")
    );
    let errs = validate_one(&table, "broken", &env()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "credentials.broken.password");
}

#[test]
fn unix_socket_listeners_parse_and_bad_ones_are_named() {
    let v = load(
        &format!("[server]\nlisten = [\"unix:/run/p.sock\", \"127.0.0.1:8080\"]\nunix_mode = \"0600\"\n{MINIMAL}"),
        &env(),
    )
    .unwrap();
    assert_eq!(
        v.config.server.listen[0],
        Listen::Unix("/run/p.sock".into())
    );
    assert_eq!(v.config.server.listen[0].to_string(), "unix:/run/p.sock");
    assert_eq!(v.config.server.unix_mode, 0o600);
    let errs = errors(&format!(
        "[server]\nlisten = [\"unix:relative.sock\"]\nunix_mode = \"rw-rw----\"\n{MINIMAL}"
    ));
    assert!(
        errs[0].starts_with(
            "server.listen[0]: \"unix:relative.sock\": a Unix socket needs an absolute path"
        ),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("server.unix_mode: \"rw-rw----\" is not an octal file mode"),
        "{errs:?}"
    );
}

#[test]
fn egress_comes_from_the_variables_in_either_case_with_credentials_kept_secret() {
    let sources = env()
        .with_env("https_proxy", "http://alice:p%40ss@proxy.corp:3128")
        .with_env("HTTP_PROXY", "proxy.corp:8080")
        .with_env("no_proxy", "internal.example.com,10.0.0.0/8");
    let e = load(MINIMAL, &sources).unwrap().config.egress;
    let https = e.https.as_ref().unwrap();
    assert_eq!(https.url, "http://proxy.corp:3128/");
    assert_eq!(https.username.as_deref(), Some("alice"));
    assert_eq!(https.password.as_ref().unwrap().expose(), "p@ss");
    assert_eq!(e.http.as_ref().unwrap().url, "http://proxy.corp:8080/");
    assert!(e.http.as_ref().unwrap().username.is_none());
    assert_eq!(e.no_proxy, "internal.example.com,10.0.0.0/8");
    let line = e.describe();
    assert!(
        line.contains("https via proxy.corp:3128 with basic auth"),
        "{line}"
    );
    assert!(
        !line.contains("p@ss") && !format!("{e:?}").contains("p@ss"),
        "{line}"
    );

    let all = env().with_env("ALL_PROXY", "http://proxy.corp:3128");
    let e = load(MINIMAL, &all).unwrap().config.egress;
    assert_eq!(e.https, e.http);
    assert!(e.https.is_some());
    assert_eq!(
        load(MINIMAL, &env()).unwrap().config.egress.describe(),
        "direct"
    );
}

#[test]
fn upstream_proxy_in_the_file_wins_and_its_problems_are_named() {
    let sources = env()
        .with_env("HTTPS_PROXY", "http://env-proxy:1")
        .with_env("PROXY_PASSWORD", "hunter2");
    let v = load(
        &format!(
            "[upstream_proxy]\nurl = \"http://proxy.corp:3128\"\nusername = \"svc\"\n\
             password = {{ env = \"PROXY_PASSWORD\" }}\nno_proxy = [\".internal\", \"10.0.0.0/8\"]\n{MINIMAL}"
        ),
        &sources,
    )
    .unwrap();
    let e = v.config.egress;
    assert_eq!(e.origin, "upstream_proxy");
    assert_eq!(e.https.as_ref().unwrap().url, "http://proxy.corp:3128/");
    assert_eq!(
        e.https
            .as_ref()
            .unwrap()
            .password
            .as_ref()
            .unwrap()
            .expose(),
        "hunter2"
    );
    assert_eq!(e.no_proxy, ".internal,10.0.0.0/8");

    let errs = errors(&format!(
        "[upstream_proxy]\nurl = \"https://u:leaked@proxy.corp\"\npassword = \"x\"\nno_proxy = \"a\"\nport = 1\n{MINIMAL}"
    ));
    let all = errs.join("\n");
    assert!(all.contains("upstream_proxy.port"), "{all}");
    assert!(all.contains("upstream_proxy.url: an http:// proxy URL with a host is needed: \"https://***@proxy.corp\""), "{all}");
    assert!(
        all.contains("upstream_proxy.password: needs a username"),
        "{all}"
    );
    assert!(
        all.contains("upstream_proxy.no_proxy: expected a list of hosts"),
        "{all}"
    );
    assert!(!all.contains("leaked"), "{all}");
}

#[test]
fn a_bad_proxy_variable_is_an_error_naming_it_without_its_password() {
    let sources = env().with_env("HTTPS_PROXY", "socks5://bob:topsecret@proxy.corp:1080");
    let errs: Vec<String> = load(MINIMAL, &sources)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("HTTPS_PROXY: only http:// egress proxies are supported"),
        "{errs:?}"
    );
    assert!(
        errs[0].ends_with("socks5://***@proxy.corp:1080"),
        "{errs:?}"
    );
    assert!(!errs[0].contains("topsecret"));
}

#[test]
fn upstream_http2_is_auto_by_default_and_checked() {
    assert_eq!(
        load(MINIMAL, &env()).unwrap().config.upstream_tls.http2,
        Http2::Auto
    );
    let v = load(
        &format!("[upstream_tls]\nhttp2 = \"http1\"\n{MINIMAL}"),
        &env(),
    )
    .unwrap();
    assert_eq!(v.config.upstream_tls.http2, Http2::Http1);
    let errs = errors(&format!("[upstream_tls]\nhttp2 = \"h2c\"\n{MINIMAL}"));
    assert_eq!(
        errs,
        ["upstream_tls.http2: must be \"auto\", \"http1\" or \"http2\", not \"h2c\""]
    );
}

#[test]
fn telemetry_from_the_file_or_the_opentelemetry_variables() {
    let with = |table: &str, sources: &FakeSources| load(&format!("{MINIMAL}\n{table}"), sources);
    assert!(
        with("", &env()).unwrap().config.telemetry.is_none(),
        "off by default"
    );
    let t = with(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.25",
        &env(),
    )
    .unwrap()
    .config
    .telemetry
    .unwrap();
    assert_eq!(t.traces_url.to_string(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(t.sample_ratio, 0.25);
    assert_eq!((t.max_queue, t.max_batch), (2048, 512));
    assert_eq!(t.service_name, "modelarts-proxy");
    let sources = env()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        .with_env("OTEL_SERVICE_NAME", "sidecar-a")
        .with_env("OTEL_BSP_MAX_QUEUE_SIZE", "100");
    let t = with("", &sources).unwrap().config.telemetry.unwrap();
    assert_eq!(t.traces_url.to_string(), "http://collector:4318/v1/traces");
    assert_eq!(
        (t.service_name.as_str(), t.max_queue, t.max_batch),
        ("sidecar-a", 100, 100)
    );
    let sources = env().with_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom");
    let t = with("", &sources).unwrap().config.telemetry.unwrap();
    assert_eq!(
        t.traces_url.to_string(),
        "http://c:4318/custom",
        "used as it is"
    );
    let errors: Vec<String> = with(
        "[telemetry]\notlp_endpoint = \"grpc://x\"\nsample_ratio = 2\nheaders = 1",
        &env(),
    )
    .unwrap_err()
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("telemetry.otlp_endpoint: \"grpc://x\" is not an http(s) URL"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e == "telemetry.sample_ratio: must be a number from 0.0 to 1.0")
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("telemetry.headers: unknown key"))
    );
}
