//! Client connections before and around Pingora's HTTP handling: the request-head guard
//! (`limits.header_timeout`, `idle_timeout`, `max_header_bytes`, `max_headers`, framing
//! checks) and the count of requests in flight that a graceful stop waits for.
//!
//! Pingora offers no hook between accepting a connection and parsing a head, nor between
//! two requests of a keep-alive connection, so [`Guard`] takes the place of Pingora's own
//! HTTP/1 connection loop (`ServerApp for HttpServerApp`, a dozen lines) and wraps each
//! connection in [`stream::Guarded`]. HTTP/2 connections go to Pingora's loop unchanged:
//! their frames are bounded by the h2 crate's own settings.

pub mod head;
pub mod stream;

use crate::error::GatewayError;
use crate::metrics;
use crate::runtime::Store;
use async_trait::async_trait;
use bytes::Bytes;
use head::Refusal;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// An HTTP application (Pingora's proxy) behind the request-head guard.
/// The limits come from the policy generation live when a connection opens, so a reload
/// of gateway.yaml's `limits` applies to new connections.
pub struct Guard<A> {
    app: Arc<A>,
    store: Arc<Store>,
}

impl<A> Guard<A> {
    pub fn new(app: A, store: Arc<Store>) -> Guard<A> {
        Guard {
            app: Arc::new(app),
            store,
        }
    }
}

/// Whether a cleartext connection starts with HTTP/2's preface (an h2c listener takes
/// both); `None` when the connection ended, or sent fewer than the preface's 24 bytes
/// within the head timeout (Pingora's peek waits for all of them: a complete HTTP/1.1
/// request is longer, with its Host field).
async fn h2_preface(stream: &mut Stream, within: std::time::Duration) -> Option<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    match tokio::time::timeout(within, stream.try_peek(&mut buf)).await {
        Ok(Ok(true)) => Some(&buf == PREFACE),
        // A stream that cannot peek is taken as HTTP/1.
        Ok(Ok(false)) => Some(false),
        Ok(Err(_)) | Err(_) => None,
    }
}

#[async_trait]
impl<A> ServerApp for Guard<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        let mut stream = stream;
        let h2c = self.app.server_options().is_some_and(|o| o.h2c);
        let within = self.store.load().settings.header_timeout;
        if h2c && stream.get_ssl_digest().is_none() && h2_preface(&mut stream, within).await? {
            // HTTP/2 frames are bounded by the h2 crate's own settings.
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        let settings = self.store.load().settings.clone();
        let guarded: Stream = Box::new(stream::Guarded::new(stream, settings));
        let mut session = ServerSession::new_http1(guarded);
        // 0 is "no timeout" to Pingora: the guard enforces `idle_timeout` itself, from the
        // end of one request to the first byte of the next.
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(0) });
        let limit = self
            .app
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        session.set_keepalive_reuses_remaining(limit);
        let mut result = self.app.process_new_http(session, shutdown).await;
        while let Some((stream, persistent)) = result.map(|r| r.consume()) {
            let Ok(mut guarded) = stream.into_any().downcast::<stream::Guarded>() else {
                // Cannot happen: the stream is the one wrapped above.
                return None;
            };
            guarded.next_request();
            let mut session = ServerSession::new_http1(guarded);
            if let Some(p) = persistent {
                p.apply_to_session(&mut session);
            }
            result = self.app.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        // Wakes keep-alive connections waiting for a request, so that they close at once.
        self.app.http_cleanup().await;
    }
}

/// Counts a connection the guard closed, by reason.
fn count_close(reason: &'static str) {
    metrics::DOWNSTREAM_CLOSED
        .with_label_values(&[reason])
        .inc();
}

/// The method's metric label, from the raw request line.
fn method_label_bytes(m: &[u8]) -> &'static str {
    http::Method::from_bytes(m).map_or("other", |m| metrics::method_label(&m))
}

/// The whole HTTP/1.1 answer to a refused head, as the contract's JSON error; counted
/// and logged as a request of no route.
fn refusal_answer(
    r: Refusal,
    method: &'static str,
    peer: Option<pingora_core::protocols::l4::socket::SocketAddr>,
) -> Bytes {
    let err = match r {
        Refusal::TooLarge => GatewayError::HeaderTooLarge(r.message()),
        _ => GatewayError::Malformed(r.message().to_string()),
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let resp = err.to_response(&id);
    let status = resp.status.as_u16();
    count_close(r.label());
    metrics::REQUESTS
        .with_label_values(&[crate::metrics::UNMATCHED, method, &status.to_string()])
        .inc();
    tracing::info!(
        target: "access",
        request_id = id.as_str(),
        route = crate::metrics::UNMATCHED,
        method,
        status,
        refused = r.message(),
        client_ip = peer
            .and_then(|p| p.as_inet().map(|a| a.ip().to_string()))
            .unwrap_or_default(),
    );
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-Request-Id: {id}\r\n\r\n",
        status,
        resp.status.canonical_reason().unwrap_or(""),
        resp.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&resp.body);
    Bytes::from(out)
}

/// Requests in flight in this process (every listener), for a graceful stop.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Held by each request from its first phase to its last.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Release);
    }
}

pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}
