//! `gateway stream URL`: a small client for the streams walkthrough, so that it needs
//! neither websocat nor a browser. `ws://` opens a WebSocket, sends each `--send` message
//! and prints what comes back; `http(s)://` reads server-sent events and prints each one.
//! Every message or event is one line on stdout; a refused handshake is an error with the
//! gateway's status and answer.

use eventsource_stream::Eventsource;
use futures::{SinkExt, StreamExt};
use std::io::Write;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// What `gateway stream` was asked to do.
pub struct Options {
    pub url: String,
    /// `Name: value` headers for the opening request (an API key, a bearer token).
    pub headers: Vec<String>,
    /// WebSocket messages to send, in order.
    pub send: Vec<String>,
    /// Stop after this many messages or events (a WebSocket's default: one per `--send`).
    pub count: Option<usize>,
    /// Give up when the whole exchange takes longer.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not a ws:// or http(s):// address")]
    Scheme(String),
    #[error("header {0:?} is not `Name: value`")]
    Header(String),
    #[error("the gateway refused the stream: {status} {body}")]
    Refused { status: u16, body: String },
    #[error("connecting failed: {0}")]
    Connect(String),
    #[error("the stream broke: {0}")]
    Broken(String),
    #[error("nothing more arrived within {0:?}")]
    Timeout(Duration),
    #[error("writing the output failed: {0}")]
    Output(#[from] std::io::Error),
}

fn split_header(h: &str) -> Result<(http::HeaderName, http::HeaderValue), ClientError> {
    let bad = || ClientError::Header(h.to_string());
    let (name, value) = h.split_once(':').ok_or_else(bad)?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = http::HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

/// Runs the exchange, writing one line per message or event to `out`.
pub async fn run(opts: Options, out: &mut impl Write) -> Result<(), ClientError> {
    let timeout = opts.timeout;
    let exchange = async {
        if opts.url.starts_with("ws://") || opts.url.starts_with("wss://") {
            websocket(&opts, out).await
        } else if opts.url.starts_with("http://") || opts.url.starts_with("https://") {
            events(&opts, out).await
        } else {
            Err(ClientError::Scheme(opts.url.clone()))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn websocket(opts: &Options, out: &mut impl Write) -> Result<(), ClientError> {
    let mut req = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    for h in &opts.headers {
        let (name, value) = split_header(h)?;
        req.headers_mut().insert(name, value);
    }
    let (mut ws, _) = match tokio_tungstenite::connect_async(req).await {
        Ok(opened) => opened,
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            return Err(ClientError::Refused {
                status: resp.status().as_u16(),
                body: String::from_utf8_lossy(body).trim().to_string(),
            });
        }
        Err(e) => return Err(ClientError::Connect(e.to_string())),
    };
    let want = opts.count.unwrap_or(opts.send.len());
    let broken = |e: tungstenite::Error| ClientError::Broken(e.to_string());
    for text in &opts.send {
        ws.send(Message::text(text.as_str()))
            .await
            .map_err(broken)?;
    }
    let mut got = 0;
    while got < want {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => writeln!(out, "{t}")?,
            Some(Ok(Message::Binary(b))) => writeln!(out, "<{} bytes>", b.len())?,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(broken(e)),
        }
        out.flush()?;
        got += 1;
    }
    let _ = ws.close(None).await;
    Ok(())
}

async fn events(opts: &Options, out: &mut impl Write) -> Result<(), ClientError> {
    let mut req = reqwest::Client::new()
        .get(&opts.url)
        .header(http::header::ACCEPT, "text/event-stream");
    for h in &opts.headers {
        let (name, value) = split_header(h)?;
        req = req.header(name, value);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        return Err(ClientError::Refused {
            status,
            body: body.trim().to_string(),
        });
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut got = 0;
    while opts.count.is_none_or(|n| got < n) {
        match events.next().await {
            Some(Ok(e)) if e.event == "message" => writeln!(out, "{}", e.data)?,
            Some(Ok(e)) => writeln!(out, "{} {}", e.event, e.data)?,
            Some(Err(e)) => return Err(ClientError::Broken(e.to_string())),
            None => break,
        }
        out.flush()?;
        got += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str, headers: &[&str]) -> Options {
        Options {
            url: url.into(),
            headers: headers.iter().map(ToString::to_string).collect(),
            send: vec!["hi".into()],
            count: None,
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn bad_addresses_and_headers_are_clear_errors() {
        let mut out = Vec::new();
        let e = run(opts("ftp://x/", &[]), &mut out).await.unwrap_err();
        assert!(matches!(e, ClientError::Scheme(_)), "{e}");
        let e = run(opts("ws://127.0.0.1:1/x", &["no colon"]), &mut out)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Header(_)), "{e}");
        // Nothing listens on port 1: a connection error, not a hang or a panic.
        let e = run(opts("http://127.0.0.1:1/x", &[]), &mut out)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e}");
        assert!(out.is_empty());
    }
}
