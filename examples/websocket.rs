//! A WebSocket client for trying the proxy: connects to a `ws://` URL, sends
//! each further argument as a text message, prints every reply, then closes.
//!
//!   cargo run --release -- dev                     # another terminal
//!   cargo run --release --example websocket -- ws://127.0.0.1:8080/ws hello world

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: websocket ws://HOST:PORT/PATH [MESSAGE…]")?;
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("only ws:// URLs (the proxy listens on plain HTTP)")?;
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    let (mut ws, response) = tokio_tungstenite::client_async(url.as_str(), tcp).await?;
    eprintln!("connected: HTTP {}", response.status());
    for text in args {
        ws.send(Message::text(text)).await?;
        match ws.next().await {
            Some(Ok(reply)) => println!("{reply}"),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    ws.close(None).await?;
    Ok(())
}
