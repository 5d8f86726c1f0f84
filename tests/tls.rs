//! HTTPS upstreams: certificates are verified by default; a private CA can be
//! trusted with `upstream_tls.ca_file`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

struct TestPki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

/// A throwaway CA and a server certificate for `localhost`, made per run.
fn pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server_chain: vec![server.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    }
}

/// An HTTPS upstream on 127.0.0.1 that answers "tls ok".
async fn https_upstream(pki: &TestPki) -> SocketAddr {
    let config =
        rustls::ServerConfig::builder_with_provider(modelarts_proxy::client::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    service_fn(|_req| async { Ok::<_, Infallible>(text_response(200, "tls ok")) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
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
