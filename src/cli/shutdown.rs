//! `modelarts-proxy shutdown [--admin ADDR]`: `POST /quitquitquit` on a
//! running proxy's admin listener, which then drains as on SIGTERM (it
//! needs `[server] quitquitquit = true`). For a Kubernetes Job's main
//! container to stop its sidecar when its work is done.

use std::time::Duration;

use http_body_util::BodyExt;

/// A proxy that does not answer this soon is not there.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub struct ShutdownArgs {
    /// The proxy's admin listener (`[server] admin_listen`).
    #[arg(
        long,
        env = "MODELARTS_PROXY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901",
        value_name = "ADDR"
    )]
    admin: String,
}

pub(super) async fn shutdown(args: ShutdownArgs) -> u8 {
    let url = format!("http://{}/quitquitquit", args.admin);
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: --admin {:?} is not host:port: {e}", args.admin);
            return super::EXIT_USAGE;
        }
    };
    let client = super::local_client();
    let req = http::Request::post(uri)
        .body(crate::error::empty())
        .expect("a valid request");
    let answer = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
    };
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, answer).await {
        Ok(Ok((status, body))) => {
            let text = String::from_utf8_lossy(&body);
            if status.is_success() {
                print!("{text}");
                0
            } else {
                eprint!("{url}: {status}: {text}");
                1
            }
        }
        Ok(Err(e)) => {
            eprintln!("{url}: {}", crate::error::chain(&*e));
            1
        }
        Err(_) => {
            eprintln!("{url}: no answer within {}s", SHUTDOWN_TIMEOUT.as_secs());
            1
        }
    }
}
