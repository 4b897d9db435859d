//! The demo's live service (127.0.0.1:9003) for the streams walkthrough: a WebSocket echo
//! at `/echo` and a server-sent event ticker at `/ticker`. Pingora's HTTP server reads the
//! request; the echo then hands the upgraded connection to tokio-tungstenite, and the
//! ticker writes one event a second on a chunked answer.

use async_trait::async_trait;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pingora_core::apps::{HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Where the live service listens; the demo's `live` upstream points here.
pub const ADDR: &str = "127.0.0.1:9003";

/// Most events a ticker sends (`?count=`), and the fastest pace (`?every_ms=`).
const MAX_EVENTS: u64 = 600;
const MIN_EVERY_MS: u64 = 50;
/// Largest message the echo takes.
const MAX_MESSAGE: usize = 64 * 1024;

pub struct Live;

#[async_trait]
impl HttpServerApp for Live {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        let done = match http.req_header().uri.path() {
            "/echo" => echo(http).await,
            "/ticker" => ticker(http, shutdown.clone()).await,
            _ => {
                answer(
                    &mut http,
                    404,
                    "no such demo stream: try /echo or /ticker\n",
                )
                .await
            }
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "demo live stream ended");
        }
        // Streams end their connection: nothing is reused.
        None
    }
}

type Result<T> = pingora_error::Result<T>;

async fn answer(http: &mut ServerSession, status: u16, text: &'static str) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(2))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    resp.insert_header(http::header::CONTENT_LENGTH, text.len())?;
    http.write_response_header(Box::new(resp)).await?;
    http.write_response_body(Bytes::from_static(text.as_bytes()), true)
        .await
}

/// Echoes every text and binary message back until the client closes.
async fn echo(mut http: ServerSession) -> Result<()> {
    let req = http.req_header();
    let upgrade = req
        .headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers.get(http::header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (upgrade, key) else {
        return answer(&mut http, 426, "a WebSocket upgrade is expected here\n").await;
    };
    let mut resp = ResponseHeader::build(101, Some(3))?;
    resp.insert_header(http::header::UPGRADE, "websocket")?;
    resp.insert_header(http::header::CONNECTION, "Upgrade")?;
    resp.insert_header(
        http::header::SEC_WEBSOCKET_ACCEPT,
        derive_accept_key(key.as_bytes()),
    )?;
    http.write_response_header(Box::new(resp)).await?;
    let ServerSession::H1(h1) = http else {
        return Ok(());
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws =
        WebSocketStream::from_raw_socket(h1.into_inner(), Role::Server, Some(config)).await;
    while let Some(Ok(msg)) = ws.next().await {
        let echoed = match msg {
            Message::Text(_) | Message::Binary(_) => ws.send(msg).await.is_ok(),
            Message::Close(_) => false,
            _ => true,
        };
        if !echoed {
            break;
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

fn query_u64(http: &ServerSession, key: &str) -> Option<u64> {
    let q = http.req_header().uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// `count` events (default 10), `every_ms` apart (default 1000), then the end.
async fn ticker(mut http: ServerSession, mut shutdown: ShutdownWatch) -> Result<()> {
    let count = query_u64(&http, "count").unwrap_or(10).min(MAX_EVENTS);
    let every = Duration::from_millis(
        query_u64(&http, "every_ms")
            .unwrap_or(1000)
            .max(MIN_EVERY_MS),
    );
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/event-stream")?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    http.write_response_header(Box::new(resp)).await?;
    for n in 1..=count {
        if n > 1 {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => break,
            }
        }
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let event =
            format!("event: tick\nid: {n}\ndata: {{\"n\":{n},\"of\":{count},\"at\":\"{at}\"}}\n\n");
        http.write_response_body(Bytes::from(event), false).await?;
    }
    http.finish_body().await?;
    Ok(())
}
