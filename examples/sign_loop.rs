//! Signs the benchmark's small JSON request in a loop (for profilers:
//! `valgrind --tool=callgrind target/release/examples/sign_loop`).
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::{AkSk, Payload, SignableRequest, SigningKey};

fn main() {
    let key = SigningKey::new(&AkSk {
        access_key: "HPUAL5ZAK0EXAMPLE000".into(),
        secret_key: Secret::new("kM9vQ2xR7tL4pZ8wE1nB6yC3hJ5gF0dS2aU7iO9e"),
        security_token: None,
    });
    let headers = [
        ("content-type", "application/json"),
        (
            "host",
            "0123456789abcdef.apig.cn-north-4.huaweicloudapis.com",
        ),
    ];
    let body = br#"{"instances":[{"text":"hello"}],"parameters":{"top_k":5}}"#;
    let now = chrono::Utc::now();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut total = 0;
    for _ in 0..n {
        let req = SignableRequest {
            method: "POST",
            path: std::hint::black_box("/v1/infers/2f9c6e1a-8b3d-4c5e-9f70-1a2b3c4d5e6f"),
            query: Some(std::hint::black_box("a=1&b=2")),
            headers: &headers,
            payload: Payload::Bytes(body),
        };
        total += key.sign(&req, now).unwrap().authorization.len();
    }
    println!("{total}");
}
