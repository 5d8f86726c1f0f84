//! The proxy's own request-head checks (`proxy::guard`) on arbitrary heads:
//! never a panic, and a path they accept never has a dot segment, checked
//! against an independent decoder.
#![no_main]

use http::Request;
use libfuzzer_sys::fuzz_target;
use modelarts_proxy::config::{RequireHeader, Server};
use modelarts_proxy::proxy::guard::{check_client, check_head, has_dot_segment};
use modelarts_proxy::secret::Secret;

/// Percent-decodes by characters (not bytes) and looks for `.`/`..` segments.
fn reference_dot_segment(path: &str) -> bool {
    let chars: Vec<char> = path.chars().collect();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '%' && i + 2 < chars.len() {
            let hex: String = chars[i + 1..i + 3].iter().collect();
            if let Ok(b) = u8::from_str_radix(&hex, 16) {
                if hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        let mut buf = [0u8; 4];
        out.extend_from_slice(chars[i].encode_utf8(&mut buf).as_bytes());
        i += 1;
    }
    let text = String::from_utf8_lossy(&out).replace('\\', "/");
    text.split('/').any(|s| s == "." || s == "..")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut builder = Request::builder().method(method).uri(target);
    for line in lines.take(64) {
        if let Some((n, v)) = line.split_once(':') {
            builder = builder.header(n, v.trim());
        }
    }
    let Ok(req) = builder.body(()) else {
        return;
    };
    let path = req.uri().path().to_owned();
    assert_eq!(
        has_dot_segment(&path),
        reference_dot_segment(&path),
        "{path:?}"
    );
    let strict = Server::default();
    if check_head(&req, &strict).is_ok() {
        assert!(!reference_dot_segment(&path), "accepted {path:?}");
        assert!(req.method().as_str() != "TRACE");
    }
    let open = Server {
        allow_remote: true,
        allow_clients: Some(vec!["10.0.0.0/8".parse().unwrap()]),
        require_header: Some(RequireHeader {
            name: http::HeaderName::from_static("x-proxy-key"),
            value: Secret::new("fuzz-secret"),
        }),
        ..Server::default()
    };
    let _ = check_head(&req, &open);
    let peer = data.first().map(|b| std::net::IpAddr::from([10, *b, 0, 1]));
    if let Err(e) = check_client(&open, peer, req.headers()) {
        assert!(!e.to_string().contains("fuzz-secret"));
    }
});
