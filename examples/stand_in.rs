//! The verifying stand-in gateway and IAM (`modelarts_proxy::dev::StandIn`)
//! as a process of its own, with credentials from the environment, for the
//! soak script: the proxy under test runs in another process, so its RSS and
//! file descriptors are its own.
//!
//! ```text
//! STAND_IN_AK=… STAND_IN_SK=… STAND_IN_PASSWORD=… \
//!   cargo run --release --example stand_in -- [--listen 127.0.0.1:0] [--token-lifetime 30s]
//! ```
//! Prints `listening on http://ADDR` once bound. IAM user `soak`, domain
//! `soak`, project `cn-north-4`.

use std::sync::Arc;

use modelarts_proxy::dev::{StandIn, StandInIam};
use modelarts_proxy::secret::Secret;
use modelarts_proxy::signer::AkSk;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let lifetime = arg("--token-lifetime").unwrap_or_else(|| "30s".into());
    let key = AkSk {
        access_key: env("STAND_IN_AK"),
        secret_key: Secret::new(env("STAND_IN_SK")),
        security_token: None,
    };
    let iam = StandInIam {
        user: "soak".into(),
        password: Secret::new(env("STAND_IN_PASSWORD")),
        domain: "soak".into(),
        project: "cn-north-4".into(),
        project_id: "0a1b2c3d4e5f".into(),
        token_lifetime: humantime::parse_duration(&lifetime).expect("--token-lifetime"),
        token_size: 8 * 1024,
    };
    let addr = StandIn::new(vec![key], Arc::new(chrono::Utc::now))
        .with_iam(iam)
        .spawn(listen.parse().expect("--listen ADDR"))
        .await
        .expect("bind");
    println!("listening on http://{addr}");
    std::future::pending::<()>().await;
}
