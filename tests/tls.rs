//! HTTPS upstreams: certificates are verified by default; a private CA can be
//! trusted with `upstream_tls.ca_file`; HTTP/2 is spoken when the upstream
//! offers it by ALPN (`upstream_tls.http2`), over a handful of connections.

mod common;

use std::net::SocketAddr;

use common::pki::{self, TestPki, tls_upstream};
use common::*;

/// An HTTPS upstream on 127.0.0.1 (HTTP/1.1) that answers "tls ok".
async fn https_upstream(pki: &TestPki) -> SocketAddr {
    tls_upstream(pki, &[], |_req| async { text_response(200, "tls ok") })
        .await
        .addr
}

fn pki() -> TestPki {
    pki::pki(&["localhost"])
}

#[tokio::test]
async fn a_private_ca_is_trusted_through_ca_file() {
    let pki = pki();
    let upstream = https_upstream(&pki).await;
    let dir = std::env::temp_dir().join(format!("modelarts-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\n[[route]]\nupstream = \"https://localhost:{}/v1\"\n",
        ca_file.display(),
        upstream.port()
    ))
    .await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!((parts.status.as_u16(), &bytes[..]), (200, &b"tls ok"[..]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_with_502() {
    let pki = pki();
    let upstream = https_upstream(&pki).await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"https://localhost:{}/v1\"\n",
        upstream.port()
    ))
    .await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    let msg = json(&bytes)["error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(msg.contains("certificate"), "{msg}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let pki = pki();
    let upstream = https_upstream(&pki).await;
    let proxy = start_proxy(&format!(
        "[upstream_tls]\ninsecure_skip_verify = true\n[[route]]\nupstream = \"https://localhost:{}/v1\"\n",
        upstream.port()
    ))
    .await;
    assert_eq!(get(&proxy.url("/")).await.0.status, 200);
}

#[test]
fn a_missing_or_empty_ca_file_is_a_config_error_at_its_key() {
    // Reported by validation, with every other problem (here: a duplicate prefix).
    let errs = modelarts_proxy::config::load(
        "[upstream_tls]\nca_file = \"/nonexistent/ca.pem\"\n[[route]]\nupstream = \"https://h/\"\n[[route]]\nupstream = \"https://h/\"\n",
        &TestSources,
    )
    .expect_err("rejected");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "route");
    let errs = &errs[1..];
    assert_eq!(errs[0].path, "upstream_tls.ca_file");
    assert!(
        errs[0]
            .message
            .starts_with("cannot read /nonexistent/ca.pem"),
        "{}",
        errs[0].message
    );
}

/// An upstream offering `alpn` that answers with the HTTP version it spoke
/// and the Host it saw, and a proxy in `http2` mode in front of it.
async fn versioned(alpn: &[&[u8]], http2: &str) -> (Proxy, pki::TlsUpstream) {
    let pki = pki();
    let upstream = tls_upstream(&pki, alpn, |req| async move {
        // As nginx does: an h2 request carries its authority in `:authority`
        // only; a Host header as well is a 400 ("duplicate host header").
        if req.version() == http::Version::HTTP_2 && req.headers().contains_key("host") {
            return text_response(400, "client sent duplicate host header");
        }
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned())
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        text_response(200, &format!("{:?} {host}", req.version()))
    })
    .await;
    let ca = pki.ca_file(&format!("h2-{http2}-{}", alpn.len()));
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\nhttp2 = \"{http2}\"\n\
         [[route]]\nupstream = \"https://localhost:{}/v1\"\n",
        ca.display(),
        upstream.addr.port()
    ))
    .await;
    (proxy, upstream)
}

async fn version_seen(proxy: &Proxy) -> String {
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn auto_speaks_h2_when_offered_and_multiplexes_a_run_over_one_connection() {
    let (proxy, upstream) = versioned(&[b"h2", b"http/1.1"], "auto").await;
    let port = upstream.addr.port();
    for _ in 0..10 {
        assert_eq!(
            version_seen(&proxy).await,
            format!("HTTP/2.0 localhost:{port}")
        );
    }
    let concurrent: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(proxy.url("/").leak())))
        .collect();
    for c in concurrent {
        assert_eq!(c.await.unwrap().0.status, 200);
    }
    assert_eq!(upstream.connections(), 1, "30 requests, one h2 connection");
}

#[tokio::test]
async fn auto_falls_back_to_http1_and_reuses_its_connections() {
    for alpn in [&[b"http/1.1" as &[u8]][..], &[]] {
        let (proxy, upstream) = versioned(alpn, "auto").await;
        for _ in 0..10 {
            assert!(
                version_seen(&proxy)
                    .await
                    .starts_with("HTTP/1.1 localhost:")
            );
        }
        assert_eq!(
            upstream.connections(),
            1,
            "sequential requests reuse one connection"
        );
    }
}

#[tokio::test]
async fn http1_mode_never_offers_h2() {
    let (proxy, _upstream) = versioned(&[b"h2", b"http/1.1"], "http1").await;
    assert!(version_seen(&proxy).await.starts_with("HTTP/1.1 "));
}

#[tokio::test]
async fn http2_mode_refuses_an_http1_only_upstream_with_502() {
    let (proxy, _upstream) = versioned(&[b"http/1.1"], "http2").await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_proxy_error(&parts, &bytes, 502, "upstream_unreachable");
    let (proxy, _upstream) = versioned(&[b"h2"], "http2").await;
    assert!(version_seen(&proxy).await.starts_with("HTTP/2.0 "));
}

#[tokio::test]
async fn ak_sk_signatures_verify_over_h2() {
    use http_body_util::BodyExt;
    let pki = pki();
    let upstream = tls_upstream(&pki, &[b"h2", b"http/1.1"], |req| async move {
        let (parts, incoming) = req.into_parts();
        let bytes = incoming.collect().await.unwrap().to_bytes();
        let verdict = modelarts_proxy::signer::verify::verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &bytes,
            |ak| (ak == AK).then(key),
            chrono::Utc::now(),
            chrono::Duration::minutes(15),
        );
        match verdict {
            Ok(_) => text_response(200, &format!("{:?} signed ok", parts.version)),
            Err(e) => text_response(401, &format!("{:?} {e}", parts.version)),
        }
    })
    .await;
    let ca = pki.ca_file("h2-aksk");
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nroots = \"none\"\nca_file = \"{}\"\n\
         [[route]]\nupstream = \"https://localhost:{}/v1/infers/svc\"\ncredentials = \"test\"\npayload = \"signed\"\n{TEST_CREDENTIALS}",
        ca.display(),
        upstream.addr.port()
    ))
    .await;
    for (method, data) in [("GET", ""), ("POST", "{\"input\":[1,2,3]}")] {
        let (parts, bytes) = send(
            request(method, &proxy.url("/predict?b=2&a=1"))
                .header("content-type", "application/json")
                .body(body(data))
                .unwrap(),
        )
        .await;
        assert_eq!(
            (
                parts.status.as_u16(),
                String::from_utf8_lossy(&bytes).as_ref()
            ),
            (200, "HTTP/2.0 signed ok"),
            "{method}"
        );
    }
}
