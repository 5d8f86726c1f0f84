//! `modelarts-proxy probe [URL]`: one GET, exit 0 on a 2xx answer. For
//! health checks in images with no shell or curl (distroless).

use std::time::Duration;

/// A probe that gets no answer this soon fails (Docker's default interval is 30 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// What to GET (plain http).
    #[arg(default_value = "http://127.0.0.1:9901/healthz", value_name = "URL")]
    url: String,
}

pub(super) async fn probe(args: ProbeArgs) -> u8 {
    let uri: http::Uri = match args.url.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {:?} is not a URL: {e}", args.url);
            return super::EXIT_USAGE;
        }
    };
    let client = super::local_client();
    let req = http::Request::get(uri)
        .body(crate::error::empty())
        .expect("a valid request");
    match tokio::time::timeout(PROBE_TIMEOUT, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => {
            println!("{} {}", args.url, resp.status());
            0
        }
        Ok(Ok(resp)) => {
            eprintln!("{} {}", args.url, resp.status());
            1
        }
        Ok(Err(e)) => {
            eprintln!("{}: {}", args.url, crate::error::chain(&e));
            1
        }
        Err(_) => {
            eprintln!(
                "{}: no answer within {}s",
                args.url,
                PROBE_TIMEOUT.as_secs()
            );
            1
        }
    }
}
