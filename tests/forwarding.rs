//! Forwarding end to end: a client → the proxy → a stand-in ModelArts
//! service that recomputes the AK/SK signature from the request it actually
//! received (and answers 401 on any mismatch), or a programmable upstream.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use tokio::sync::{Mutex, oneshot};

fn echo_ok(parts: &http::response::Parts, body: &Bytes) -> serde_json::Value {
    assert_eq!(
        parts.status,
        200,
        "stand-in said: {}",
        String::from_utf8_lossy(body)
    );
    let v = json(body);
    assert_eq!(v["verified"], true);
    v
}

#[tokio::test]
async fn every_method_is_signed_and_verified_by_the_upstream() {
    let (proxy, _) = signing_proxy("").await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let req = request(method, &proxy.url("/items/42"))
            .header("content-type", "application/json")
            .body(body(format!("{{\"method\":\"{method}\"}}")))
            .unwrap();
        let (parts, bytes) = send(req).await;
        let v = echo_ok(&parts, &bytes);
        assert_eq!(v["method"], method);
        assert_eq!(v["path"], "/v1/infers/svc/items/42");
    }
    // HEAD: the stand-in answers 200 only if the signature verified; no body comes back.
    let (parts, bytes) = send(
        request("HEAD", &proxy.url("/items/42"))
            .body(body(""))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert!(bytes.is_empty());
}

#[tokio::test]
async fn json_bodies_are_hashed_into_the_signature() {
    let (proxy, _) = signing_proxy("").await;
    let payload = r#"{"instances":[{"text":"hello 你好"}]}"#;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json;charset=UTF-8")
        .body(body(payload))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(v["body"], payload);
    assert_eq!(
        v["path"], "/v1/infers/svc",
        "the root maps to the upstream URL exactly"
    );
    assert!(
        v["headers"].get("x-sdk-content-sha256").is_none(),
        "JSON is signed, not UNSIGNED-PAYLOAD"
    );
    let auth = v["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with(&format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;host;x-sdk-date, Signature="
        )),
        "{auth}"
    );
}

#[tokio::test]
async fn multipart_file_upload_streams_as_unsigned_payload() {
    let (proxy, _) = signing_proxy("").await;
    let boundary = "----modelarts-proxy-test";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"cat.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    form.extend((0..=255u8).cycle().take(50_000));
    form.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let want_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&form));
    let req = request("POST", &proxy.url("/"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body(form))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(v["headers"]["x-sdk-content-sha256"], "UNSIGNED-PAYLOAD");
    assert_eq!(v["body_sha256"], want_sha);
    assert!(
        v["headers"]["authorization"]
            .as_str()
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-sdk-content-sha256;x-sdk-date")
    );
}

#[tokio::test]
async fn binary_bodies_arrive_byte_for_byte() {
    let (proxy, _) = signing_proxy("").await;
    let data: Vec<u8> = (0..=255u8).rev().cycle().take(4099).collect();
    let want_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    let req = request("PUT", &proxy.url("/blob.bin"))
        .header("content-type", "application/octet-stream")
        .body(body(data))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(v["body_sha256"], want_sha);
    assert_eq!(v["body_bytes"], 4099);
}

#[tokio::test]
async fn empty_bodies_sign_with_the_empty_hash_even_when_unsigned() {
    let (proxy, _) = signing_proxy("").await;
    // Content-Length: 0 with a non-JSON type: UNSIGNED-PAYLOAD header, empty-string hash.
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "text/plain")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(v["headers"]["x-sdk-content-sha256"], "UNSIGNED-PAYLOAD");
    assert_eq!(v["body_bytes"], 0);

    // A chunked body that turns out to be empty: the proxy finds out before signing.
    let (tx, chunked) = Channel::<Bytes, modelarts_proxy::error::BoxError>::new(1);
    drop(tx);
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/octet-stream")
        .body(chunked.boxed_unsync())
        .unwrap();
    let (parts, bytes) = send(req).await;
    echo_ok(&parts, &bytes);
}

#[tokio::test]
async fn query_strings_are_forwarded_byte_for_byte_and_signed() {
    let (proxy, _) = signing_proxy("").await;
    let query = "q=a+b&flag&empty=&x=%E4%B8%AD%2F&n=2&n=10&A=upper&a%2Fb=1&a-b=2&=dropped";
    let (parts, bytes) = send(
        request("GET", &proxy.url(&format!("/search?{query}")))
            .body(body(""))
            .unwrap(),
    )
    .await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(v["query"], query);
}

#[tokio::test]
async fn unicode_and_encoded_slash_paths_are_forwarded_as_sent() {
    let (proxy, _) = signing_proxy("").await;
    let path = "/%E5%AF%B9%E8%B1%A1/a%2Fb/c/d//e~f%20g+h/.well-known/x..y";
    let (parts, bytes) = get(&proxy.url(path)).await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(v["path"], format!("/v1/infers/svc{path}"));
}

#[tokio::test]
async fn dot_segments_never_reach_outside_the_route_and_get_400() {
    // DESIGN §8: `/../SERVICE-B/predict` on a route to …/SERVICE-A must not
    // reach SERVICE-B on an upstream that normalises paths.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    let upstream = upstream(move |_req| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { text_response(200, "reached") }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{upstream}/v1/infers/SERVICE-A\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;
    for path in [
        "/../SERVICE-B/predict",
        "/%2e%2e/SERVICE-B/predict",
        "/a/./b",
        "/..%2FSERVICE-B",
    ] {
        let (parts, bytes) = get(&proxy.url(path)).await;
        assert_proxy_error(&parts, &bytes, 400, "bad_request");
    }
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing went upstream"
    );
}

#[tokio::test]
async fn longest_prefix_wins_and_the_prefix_is_stripped() {
    let upstream = stand_in().await;
    let toml = format!(
        r#"
[[route]]
prefix = "/"
upstream = "http://{upstream}/root"
credentials = "test"
[[route]]
prefix = "/v2/"
upstream = "http://{upstream}/v2/infers/two"
credentials = "test"
[[route]]
prefix = "/v2/special"
upstream = "http://{upstream}/special"
credentials = "test"
{TEST_CREDENTIALS}"#
    );
    let proxy = start_proxy(&toml).await;
    for (path, want) in [
        ("/", "/root"),
        ("/x", "/root/x"),
        ("/v2", "/v2/infers/two"),
        ("/v2/predict", "/v2/infers/two/predict"),
        ("/v2x", "/root/v2x"),
        ("/v2/special/a", "/special/a"),
    ] {
        let (parts, bytes) = get(&proxy.url(path)).await;
        assert_eq!(echo_ok(&parts, &bytes)["path"], want, "for {path}");
    }
}

#[tokio::test]
async fn client_credentials_and_hop_by_hop_headers_are_stripped() {
    let (proxy, upstream) = signing_proxy("").await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-token")
        .header("x-auth-token", "client-iam-token")
        .header("x-sdk-date", "20000101T000000Z")
        .header("x-security-token", "client-sts")
        .header("x-apig-appcode", "client-appcode")
        .header("x-sdk-content-sha256", "UNSIGNED-PAYLOAD")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("host", "localhost:9")
        .header("x-request-id", "kept-1")
        .body(body("{}"))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    let h = v["headers"].as_object().unwrap();
    for gone in [
        "x-auth-token",
        "x-security-token",
        "x-apig-appcode",
        "x-sdk-content-sha256",
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "te",
    ] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {v}");
    }
    assert!(
        h["authorization"]
            .as_str()
            .unwrap()
            .starts_with("SDK-HMAC-SHA256 Access=")
    );
    assert_ne!(h["x-sdk-date"], "20000101T000000Z");
    assert_eq!(
        h["host"],
        upstream.to_string(),
        "Host is the upstream authority"
    );
    assert_eq!(
        h["x-request-id"], "kept-1",
        "ordinary client headers pass through"
    );
}

#[tokio::test]
async fn dns_names_in_host_are_refused_unless_remote_is_allowed() {
    let (proxy, _) = signing_proxy("").await;
    // `Host` above is a DNS name: hyper's client sends it as given. A rebinding page would.
    let req = request("GET", &proxy.url("/"))
        .header("host", "attacker.example:8080")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_proxy_error(&parts, &bytes, 403, "forbidden_client");
    for ok in ["localhost:8080", "127.0.0.1", "[::1]:8080", "app.localhost"] {
        let req = request("GET", &proxy.url("/"))
            .header("host", ok)
            .body(body(""))
            .unwrap();
        assert_eq!(send(req).await.0.status, 200, "Host {ok}");
    }
}

#[tokio::test]
async fn route_headers_are_set_and_signed() {
    let (proxy, _) = signing_proxy(
        "headers = { \"x-stage\" = \"RELEASE\", \"x-custom_name\" = \"sent-not-signed\" }",
    )
    .await;
    let req = request("GET", &proxy.url("/"))
        .header("x-stage", "TEST")
        .body(body(""))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    assert_eq!(
        v["headers"]["x-stage"], "RELEASE",
        "the route's value replaces the client's"
    );
    assert_eq!(v["headers"]["x-custom_name"], "sent-not-signed");
    let auth = v["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.contains("SignedHeaders=host;x-sdk-date;x-stage,"),
        "{auth}"
    );
}

#[tokio::test]
async fn signed_payload_mode_hashes_any_content_type() {
    let (proxy, _) = signing_proxy("payload = \"signed\"").await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "text/csv")
        .body(body("a,b\n1,2\n"))
        .unwrap();
    let (parts, bytes) = send(req).await;
    let v = echo_ok(&parts, &bytes);
    assert!(v["headers"].get("x-sdk-content-sha256").is_none());
}

#[tokio::test]
async fn unsigned_payload_mode_applies_to_json_too() {
    let (proxy, _) = signing_proxy("payload = \"unsigned\"").await;
    let req = request("POST", &proxy.url("/"))
        .header("content-type", "application/json")
        .body(body("{\"a\":1}"))
        .unwrap();
    let (parts, bytes) = send(req).await;
    assert_eq!(
        echo_ok(&parts, &bytes)["headers"]["x-sdk-content-sha256"],
        "UNSIGNED-PAYLOAD"
    );
}

/// An upstream that checks the signature from the headers alone (an
/// UNSIGNED-PAYLOAD signature does not depend on the bytes), then reports
/// the first body chunk before the client has sent the second.
#[tokio::test]
async fn unsigned_bodies_stream_through_without_buffering() {
    let (first_seen_tx, first_seen) = oneshot::channel::<Bytes>();
    let first_seen_tx = Arc::new(Mutex::new(Some(first_seen_tx)));
    let upstream = upstream(move |req| {
        let first_seen_tx = first_seen_tx.clone();
        async move {
            let (parts, mut body) = req.into_parts();
            let verdict = modelarts_proxy::signer::verify::verify(
                &parts.method,
                &parts.uri,
                &parts.headers,
                b"non-empty",
                |_| Some(key()),
                chrono::Utc::now(),
                chrono::Duration::minutes(15),
            );
            if let Err(e) = verdict {
                return text_response(401, &e.to_string());
            }
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            first_seen_tx
                .lock()
                .await
                .take()
                .unwrap()
                .send(first)
                .unwrap();
            let rest = body.collect().await.unwrap().to_bytes();
            text_response(200, &format!("rest={}", String::from_utf8_lossy(&rest)))
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}"
    ))
    .await;

    let (mut tx, chunked) = Channel::<Bytes, modelarts_proxy::error::BoxError>::new(1);
    let req = request("POST", &proxy.url("/upload"))
        .header("content-type", "application/octet-stream")
        .body(chunked.boxed_unsync())
        .unwrap();
    let response = tokio::spawn(send(req));
    tx.send_data(Bytes::from_static(b"first-chunk"))
        .await
        .unwrap();
    let first = tokio::time::timeout(TEST_DEADLINE, first_seen)
        .await
        .expect("upstream saw the first chunk while the upload was open")
        .unwrap();
    assert_eq!(&first[..], b"first-chunk");
    tx.send_data(Bytes::from_static(b"second-chunk"))
        .await
        .unwrap();
    drop(tx);
    let (parts, bytes) = response.await.unwrap();
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(&bytes[..], b"rest=second-chunk");
}

#[tokio::test]
async fn sse_events_reach_the_client_one_by_one() {
    let (release_tx, release) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release)));
    let upstream = upstream(move |_req| {
        let release = release.clone();
        async move {
            let (mut tx, events) = Channel::<Bytes, modelarts_proxy::error::BoxError>::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"data: one\n\n"))
                    .await
                    .unwrap();
                // The second event is only sent once the client has the first.
                let release = release.lock().await.take().unwrap();
                release.await.unwrap();
                tx.send_data(Bytes::from_static(b"data: two\n\n"))
                    .await
                    .unwrap();
            });
            let mut resp = http::Response::new(events.boxed_unsync());
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp
        }
    })
    .await;
    let proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{upstream}/stream\"\ncredentials = \"test\"\n{TEST_CREDENTIALS}")).await;
    let resp = client().request(
        request("POST", &proxy.url("/"))
            .header("content-type", "application/json")
            .body(body("{}"))
            .unwrap(),
    );
    let resp = tokio::time::timeout(TEST_DEADLINE, resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(TEST_DEADLINE, body.frame())
        .await
        .expect("first event arrives before the second is sent");
    assert_eq!(
        &first.unwrap().unwrap().into_data().unwrap()[..],
        b"data: one\n\n"
    );
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"data: two\n\n");
}

#[tokio::test]
async fn unknown_paths_get_no_route() {
    let upstream = stand_in().await;
    let proxy = start_proxy(&format!(
        "[[route]]\nprefix = \"/v1\"\nupstream = \"http://{upstream}/x\"\n"
    ))
    .await;
    let (parts, bytes) = get(&proxy.url("/v2/other")).await;
    assert_proxy_error(&parts, &bytes, 404, "no_route");
    assert!(
        json(&bytes)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1")
    );
}

#[tokio::test]
async fn connect_and_absolute_form_for_other_hosts_are_refused() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let upstream = upstream(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { text_response(200, "upstream") }
    })
    .await;
    let proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{upstream}/\"\n")).await;
    let resp = raw(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("x-modelarts-proxy-error: forbidden_client"),
        "{resp}"
    );
    let resp = raw(
        proxy.addr,
        b"GET http://example.com/secret HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("not a forward proxy"), "{resp}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // Absolute-form naming the proxy itself is fine.
    let req = format!(
        "GET http://{}/ok HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        proxy.addr, proxy.addr
    );
    let resp = raw(proxy.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let (proxy, _) = signing_proxy("").await;
    let req = request("POST", &proxy.url("/h2"))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/json")
        .body(body("{}"))
        .unwrap();
    let resp = tokio::time::timeout(TEST_DEADLINE, h2c_client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(echo_ok(&parts, &bytes)["path"], "/v1/infers/svc/h2");
}

#[tokio::test]
async fn a_bad_signature_from_the_upstream_is_passed_through_untouched() {
    // A proxy holding the wrong SK: the stand-in rejects it; the client sees the
    // gateway's own 401, not a proxy error.
    let upstream = stand_in().await;
    let toml = format!(
        "[[route]]\nupstream = \"http://{upstream}/\"\ncredentials = \"bad\"\n[credentials.bad]\ntype = \"aksk\"\naccess_key = {{ env = \"TEST_AK\" }}\nsecret_key = \"wrong-secret\"\n"
    );
    let proxy = start_proxy(&toml).await;
    let (parts, bytes) = get(&proxy.url("/")).await;
    assert_eq!(parts.status, 401);
    assert!(parts.headers.get("x-modelarts-proxy-error").is_none());
    assert!(String::from_utf8_lossy(&bytes).contains("verify aksk signature fail"));
}

#[tokio::test]
async fn routes_without_credentials_forward_unauthenticated() {
    let upstream = upstream(|req| async move {
        let auth =
            req.headers().contains_key("authorization") || req.headers().contains_key("x-sdk-date");
        text_response(200, if auth { "signed" } else { "plain" })
    })
    .await;
    let proxy = start_proxy(&format!("[[route]]\nupstream = \"http://{upstream}/\"\n")).await;
    let (parts, bytes) = send(
        request("GET", &proxy.url("/"))
            .header("authorization", "Bearer x")
            .body(body(""))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(&bytes[..], b"plain");
}

/// Raw bytes, because hyper's own client (like the proxy's, before the fix)
/// drops the body of a GET whose length it does not know.
#[tokio::test]
async fn get_with_a_chunked_body_sends_the_body_that_was_signed() {
    let (proxy, _) = signing_proxy("").await;
    for ct in ["text/plain", "application/json"] {
        let req = format!(
            "GET /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\n{{\"q\":1}}\r\n0\r\n\r\n"
        );
        let resp = raw(proxy.addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{ct}: {resp}");
        let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
        assert_eq!(v["body"], "{\"q\":1}", "{ct}");
    }
}

#[tokio::test]
async fn web_pages_on_other_origins_cannot_use_the_credentials() {
    let (proxy, _) = signing_proxy("").await;
    let post = |headers: &[(&str, &str)]| {
        let mut req = request("POST", &proxy.url("/")).header("content-type", "text/plain");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body("from a page")).unwrap()
    };
    for refused in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("origin", "http://192.168.1.10:3000")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("host", "")],
    ] {
        let (parts, bytes) = send(post(&refused)).await;
        assert_proxy_error(&parts, &bytes, 403, "forbidden_client");
    }
    for allowed in [
        vec![("origin", "http://localhost:3000")],
        vec![
            ("origin", "http://127.0.0.1:5173"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("sec-fetch-site", "same-origin")],
    ] {
        let (parts, bytes) = send(post(&allowed)).await;
        echo_ok(&parts, &bytes);
    }
}
