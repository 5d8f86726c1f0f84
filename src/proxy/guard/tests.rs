use super::*;
use crate::config::RequireHeader;
use crate::secret::Secret;

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

fn code(r: Result<(), ProxyError>) -> &'static str {
    r.err().map_or("ok", |e| e.code())
}

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> &'static str {
    code(check_head(&req(method, uri, headers), &Server::default()))
}

#[test]
fn dot_segments_raw_or_encoded_are_refused() {
    for path in [
        "/..",
        "/../SERVICE-B/predict",
        "/a/./b",
        "/a/.",
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/.%2e/x",
        "/%2e./x",
        "/%2e/x",
        "/a/..%2Fb",
        "/a/..%2fb",
        "/a%2F..%2Fb",
        "/a/..\\b",
        "/a/..%5cb",
    ] {
        assert_eq!(head("GET", path, &[]), "bad_request", "{path}");
    }
}

#[test]
fn paths_that_only_look_like_dots_pass() {
    for path in [
        "/",
        "/.well-known/x",
        "/a.b/c",
        "/...",
        "/a/b..c",
        "/v1/infers/%E4%B8%AD",
        "/a%2Fb",
        "//double//slash",
    ] {
        assert_eq!(head("GET", path, &[]), "ok", "{path}");
    }
}

#[test]
fn trace_is_405_and_connect_is_403() {
    assert_eq!(head("TRACE", "/", &[]), "method_not_allowed");
    let resp = ProxyError::MethodNotAllowed("TRACE".into()).to_response("id");
    assert_eq!(resp.status(), 405);
    assert!(
        !resp.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .contains("TRACE")
    );
    let connect = Request::builder()
        .method("CONNECT")
        .uri("example.com:443")
        .body(())
        .unwrap();
    assert_eq!(
        code(check_head(&connect, &Server::default())),
        "forbidden_client"
    );
}

#[test]
fn two_host_headers_are_refused() {
    assert_eq!(
        head(
            "GET",
            "/",
            &[("host", "127.0.0.1:8080"), ("host", "evil.example")]
        ),
        "bad_request"
    );
    assert_eq!(head("GET", "/", &[("host", "127.0.0.1:8080")]), "ok");
}

#[test]
fn ambiguous_framing_is_refused() {
    assert_eq!(
        head(
            "POST",
            "/",
            &[("content-length", "5"), ("transfer-encoding", "chunked")]
        ),
        "bad_request"
    );
    assert_eq!(
        head(
            "POST",
            "/",
            &[("content-length", "5"), ("content-length", "6")]
        ),
        "bad_request"
    );
    assert_eq!(
        head(
            "POST",
            "/",
            &[("content-length", "5"), ("content-length", "5")]
        ),
        "ok"
    );
}

#[test]
fn headers_over_max_header_bytes_get_431() {
    let server = Server {
        max_header_bytes: 4096,
        ..Server::default()
    };
    let big = "x".repeat(4100);
    let r = req("GET", "/", &[("x-big", &big)]);
    let err = check_head(&r, &server).unwrap_err();
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("headers_too_large", 431)
    );
    let small = req("GET", "/", &[("x-small", "y")]);
    assert!(check_head(&small, &server).is_ok());
    // The target counts too: a huge query is as large as a huge header.
    let long_query = format!("/?q={}", "z".repeat(4100));
    assert!(check_head(&req("GET", &long_query, &[]), &server).is_err());
}

fn allowing(nets: &[&str]) -> Server {
    Server {
        allow_clients: Some(nets.iter().map(|n| n.parse().unwrap()).collect()),
        ..Server::default()
    }
}

#[test]
fn allow_clients_admits_only_listed_sources() {
    let server = allowing(&["10.0.0.0/8", "::1/128"]);
    let h = HeaderMap::new();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(code(check_client(&server, ip("10.1.2.3"), &h)), "ok");
    assert_eq!(code(check_client(&server, ip("::1"), &h)), "ok");
    assert_eq!(
        code(check_client(&server, ip("192.168.0.1"), &h)),
        "forbidden_client"
    );
    // An IPv4 client on a dual-stack listener arrives as ::ffff:a.b.c.d.
    assert_eq!(code(check_client(&server, ip("::ffff:10.9.9.9"), &h)), "ok");
    assert_eq!(
        code(check_client(&server, ip("::ffff:192.168.0.1"), &h)),
        "forbidden_client"
    );
    // No list: everyone.
    assert_eq!(
        code(check_client(&Server::default(), ip("192.168.0.1"), &h)),
        "ok"
    );
}

#[test]
fn require_header_needs_the_exact_secret_and_never_echoes_it() {
    let server = Server {
        require_header: Some(RequireHeader {
            name: http::HeaderName::from_static("x-proxy-key"),
            value: Secret::new("s3cret-shared-VALUE"),
        }),
        ..Server::default()
    };
    let with = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert("x-proxy-key", v.parse().unwrap());
        h
    };
    assert_eq!(
        code(check_client(&server, None, &with("s3cret-shared-VALUE"))),
        "ok"
    );
    for wrong in [
        "s3cret-shared-VALU",
        "s3cret-shared-VALUE ",
        "S3CRET-SHARED-VALUE",
        "",
    ] {
        let err = check_client(&server, None, &with(wrong)).unwrap_err();
        assert_eq!(err.code(), "forbidden_client");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    assert_eq!(
        code(check_client(&server, None, &HeaderMap::new())),
        "forbidden_client"
    );
}

#[test]
fn only_loopback_names_and_ip_literals_pass_as_host() {
    for ok in [
        "localhost",
        "LocalHost:8080",
        "localhost.",
        "app.localhost",
        "APP.LOCALHOST.:80",
        "127.0.0.1",
        "127.9.9.9:8080",
        "[::1]:8080",
        "10.1.2.3",
    ] {
        assert_eq!(head("GET", "/", &[("host", ok)]), "ok", "Host {ok}");
    }
    for refused in [
        "attacker.example",
        "localhost.example",
        "notlocalhost",
        "evil-localhost:8080",
        "localhost.attacker.example",
        ".localhost",
    ] {
        assert_eq!(
            head("GET", "/", &[("host", refused)]),
            "forbidden_client",
            "Host {refused}"
        );
    }
    assert_eq!(
        head("GET", "/", &[("host", "bad host")]),
        "forbidden_client",
        "not a host[:port]"
    );
    assert_eq!(head("GET", "http://LOCALHOST:8080/", &[]), "ok");
}
