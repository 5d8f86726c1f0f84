//! Signer micro-benchmarks.
//!
//! Targets (from the issue): ≤ 1 µs per signature of a small JSON request
//! (Huawei's Python SDK takes ~17 µs), and a 1 MiB body hashed at
//! memory-bandwidth-class speed — compare `sign/body_1mib` with the raw
//! `sha256/1mib` reference in the same run.
//!
//! `sign_stages/*` splits `sign/small_json` into its stages to show where
//! the time goes.
//!
//! ```text
//! cargo bench --bench signer
//! cargo bench --bench signer -- sign/small_json          # one benchmark
//! cargo bench --bench signer -- --warm-up-time 1 --measurement-time 2   # quick
//! ```

use std::hint::black_box;

use chrono::{DateTime, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::{
    self, AkSk, Payload, SignableRequest, UNSIGNED_PAYLOAD, X_SDK_CONTENT_SHA256, canonical,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// A UUID-shaped real-time service id, as ModelArts uses in `/v1/infers/<id>`.
const INFER_PATH: &str = "/v1/infers/3f2b9c1e-7a4d-4e8b-9c61-0d5e2f8a1b7c";
const HOST: &str = "3f2b9c1e7a4d4e8b9c610d5e2f8a1b7c.apig.cn-north-4.huaweicloudapis.com";

/// ~60 bytes of JSON, a typical small inference request.
const SMALL_JSON: &[u8] = br#"{"prompt":"Summarise this paragraph.","max_tokens":128}"#;

fn key() -> AkSk {
    AkSk {
        access_key: "HPUAEXAMPLEAKID12345".to_owned(),
        secret_key: Secret::new("wJalrXUtnFEMI0K7MDENGbPxRfiCYEXAMPLEKEY1"),
        security_token: None,
    }
}

fn time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 8, 9, 10).unwrap()
}

fn sign(c: &mut Criterion) {
    let key = key();
    let now = time();
    let mut group = c.benchmark_group("sign");

    let headers = [("Content-Type", "application/json"), ("host", HOST)];
    group.bench_function("small_json", |b| {
        b.iter(|| {
            let req = SignableRequest {
                method: "POST",
                path: black_box(INFER_PATH),
                query: Some(black_box("a=1&b=2")),
                headers: black_box(&headers),
                payload: Payload::Bytes(black_box(SMALL_JSON)),
            };
            signer::sign(&req, &key, now).unwrap()
        })
    });
    // What the proxy does per request: the key schedule is computed once per credential.
    let prepared = signer::SigningKey::new(&key);
    group.bench_function("small_json_prepared_key", |b| {
        b.iter(|| {
            let req = SignableRequest {
                method: "POST",
                path: black_box(INFER_PATH),
                query: Some(black_box("a=1&b=2")),
                headers: black_box(&headers),
                payload: Payload::Bytes(black_box(SMALL_JSON)),
            };
            prepared.sign(&req, now).unwrap()
        })
    });

    let streaming_headers = [
        ("Content-Type", "application/octet-stream"),
        ("host", HOST),
        (X_SDK_CONTENT_SHA256, UNSIGNED_PAYLOAD),
    ];
    group.bench_function("unsigned_payload", |b| {
        b.iter(|| {
            let req = SignableRequest {
                method: "POST",
                path: black_box(INFER_PATH),
                query: Some(black_box("a=1&b=2")),
                headers: black_box(&streaming_headers),
                payload: Payload::Streaming,
            };
            signer::sign(&req, &key, now).unwrap()
        })
    });

    let body = test_body(MIB);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("body_1mib", |b| {
        b.iter(|| {
            let req = SignableRequest {
                method: "POST",
                path: black_box(INFER_PATH),
                query: None,
                headers: black_box(&headers),
                payload: Payload::Bytes(black_box(&body)),
            };
            signer::sign(&req, &key, now).unwrap()
        })
    });
    group.finish();
}

/// The memory-bandwidth-class reference for `sign/body_1mib`: the same
/// 1 MiB through `sha2` alone.
fn sha256(c: &mut Criterion) {
    let body = test_body(MIB);
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("1mib", |b| b.iter(|| Sha256::digest(black_box(&body))));
    // ring (already in the tree through rustls) as a second implementation.
    group.bench_function("1mib_ring", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&body)))
    });
    group.finish();

    // The memory-bandwidth yardstick: copying the same 1 MiB.
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Bytes(body.len() as u64));
    let mut dst = vec![0u8; body.len()];
    group.bench_function("copy_1mib", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&body));
            black_box(&dst);
        })
    });
    group.finish();
}

/// `sign/small_json` taken apart, stage by stage (SPEC §2.6–2.7), to show
/// where the time goes: the canonical request (headers, URI, query, body
/// hash), the string to sign (SHA-256 of the canonical request), and the
/// HMAC over it. The sum is close to, but not exactly, `sign/small_json`.
fn sign_stages(c: &mut Criterion) {
    let key = key();
    let now = time();
    let date = signer::format_sdk_date(now);
    let headers = [("Content-Type", "application/json"), ("host", HOST)];
    let req = SignableRequest {
        method: "POST",
        path: INFER_PATH,
        query: Some("a=1&b=2"),
        headers: &headers,
        payload: Payload::Bytes(SMALL_JSON),
    };
    let canonical_request = signer::CanonicalRequest::new(&req, &date).unwrap();
    let string_to_sign = signer::StringToSign::new(&canonical_request, &date).to_string();

    let mut group = c.benchmark_group("sign_stages");
    group.bench_function("format_sdk_date", |b| {
        b.iter(|| signer::format_sdk_date(black_box(now)))
    });
    group.bench_function("canonical_request", |b| {
        b.iter(|| signer::CanonicalRequest::new(black_box(&req), black_box(&date)).unwrap())
    });
    group.bench_function("string_to_sign", |b| {
        b.iter(|| {
            signer::StringToSign::new(black_box(&canonical_request), black_box(&date)).to_string()
        })
    });
    group.bench_function("hmac_hex", |b| {
        b.iter(|| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(black_box(
                key.secret_key.expose().as_bytes(),
            ))
            .unwrap();
            mac.update(black_box(string_to_sign.as_bytes()));
            hex::encode(mac.finalize().into_bytes())
        })
    });
    group.bench_function("sha256_small_json_hex", |b| {
        b.iter(|| hex::encode(Sha256::digest(black_box(SMALL_JSON))))
    });
    group.finish();
}

/// CanonicalURI + CanonicalQueryString alone, on the slow path: a path that
/// decodes to non-ASCII and is re-quoted, and an unsorted six-parameter query
/// with escapes on both sides of `=`.
fn canonical(c: &mut Criterion) {
    // "/v1/infers/<id>/模型/预测 v2" percent-encoded as a client sends it.
    let path = "/v1/infers/3f2b9c1e-7a4d-4e8b-9c61-0d5e2f8a1b7c/%E6%A8%A1%E5%9E%8B/%E9%A2%84%E6%B5%8B%20v2";
    let query = "z=last&a=1&lang=%E4%B8%AD%E6%96%87&b=two%20words&empty=&k%2Fey=v%3Dx";
    let mut group = c.benchmark_group("canonical");
    group.bench_function("uri_unicode_and_query", |b| {
        let mut out = String::with_capacity(256);
        b.iter(|| {
            out.clear();
            canonical::canonical_uri_into(black_box(path), &mut out);
            out.push('\n');
            canonical::canonical_query_into(black_box(query), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

/// Deterministic, incompressible-looking bytes (an LCG), so nothing can
/// special-case a zero-filled buffer.
fn test_body(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

criterion_group!(benches, sign, sign_stages, sha256, canonical);
criterion_main!(benches);
