//! A plain HTTP/1.1 upstream for the memory and soak scripts: it answers
//! every request with a small JSON body after reading the request body, and
//! can be told to wait before reading (a slow backend).
//!
//! ```text
//! cargo run --release --example bench_upstream -- [--listen 127.0.0.1:0] [--read-delay 3s] [--response-bytes N]
//! ```
//! With `--response-bytes`, the answer is N bytes of `x` (streamed in 64 KiB chunks).
//! Prints `listening on http://ADDR` on stdout once bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen")
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("--listen ADDR");
    let delay = arg(&args, "--read-delay")
        .map(|d| humantime::parse_duration(&d).expect("--read-delay DURATION"))
        .unwrap_or(Duration::ZERO);
    let response_bytes: usize = arg(&args, "--response-bytes")
        .map(|n| n.parse().expect("--response-bytes N"))
        .unwrap_or(0);
    let listener = TcpListener::bind(listen).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let len = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes().len(),
                    Err(_) => 0,
                };
                if response_bytes > 0 {
                    let body = Repeat {
                        left: response_bytes,
                        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                    };
                    return Ok::<_, Infallible>(Response::new(body.boxed_unsync()));
                }
                let body = format!("{{\"ok\":true,\"bytes\":{len}}}");
                let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `left` bytes of `x`, a chunk at a time, as fast as they are taken.
struct Repeat {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let n = self.chunk.len().min(self.left);
        self.left -= n;
        std::task::Poll::Ready((n > 0).then(|| Ok(Frame::data(self.chunk.slice(..n)))))
    }
}
