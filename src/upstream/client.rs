//! Requests the gateway makes itself (aggregate calls), through the same machinery as
//! proxying: the upstream's target selection, its peer with its timeouts, and Pingora's
//! pooled HTTP connector.

use super::Upstream;
use crate::metrics;
use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::Peer;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::LazyLock;
use std::time::Instant;

static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// How an upstream request failed: the `kind` label of `gateway_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Connect,
    Timeout,
    Reset,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
        }
    }

    /// The kind of a Pingora error on an upstream connection. A connect timeout is a
    /// connect failure for the metrics, and a timeout for the client.
    pub fn of(e: &Error) -> (FailureKind, bool) {
        use ErrorType::*;
        match e.etype() {
            ConnectTimedout => (FailureKind::Connect, true),
            ReadTimedout | WriteTimedout | TLSHandshakeTimedout => (FailureKind::Timeout, true),
            ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
            | TLSHandshakeFailure | ConnectProxyFailure | InvalidCert => {
                (FailureKind::Connect, false)
            }
            _ => (FailureKind::Reset, false),
        }
    }
}

/// Why a request the gateway made got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No target could be selected.
    Unavailable,
    Connect,
    Timeout,
    Reset,
    /// The answer's body is longer than allowed.
    TooLarge,
}

impl From<(FailureKind, bool)> for CallError {
    fn from((kind, timed_out): (FailureKind, bool)) -> Self {
        match (kind, timed_out) {
            (_, true) => CallError::Timeout,
            (FailureKind::Connect, _) => CallError::Connect,
            _ => CallError::Reset,
        }
    }
}

/// A whole answer.
pub struct Answer {
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// Sends `req` (and `body`) to a target of `upstream` and reads the whole answer, at most
/// `max_body` bytes of it. A pooled connection that turns out to be closed is replaced by a
/// fresh one once; otherwise nothing is retried here.
pub async fn send(
    upstream: &Upstream,
    key: &[u8],
    req: &RequestHeader,
    body: Option<Bytes>,
    max_body: usize,
) -> Result<Answer, CallError> {
    let may_repeat = super::retry::idempotent(&req.method, &req.headers);
    let mut tried: Vec<super::Addr> = Vec::new();
    loop {
        if let Some(policy) = &upstream.retry {
            match tried.len() {
                0 => policy.budget.deposit(),
                n => {
                    metrics::UPSTREAM_RETRIES
                        .with_label_values(&[&upstream.name])
                        .inc();
                    tokio::time::sleep(policy.delay(n as u32 + 1)).await;
                }
            }
        }
        let backend = upstream
            .select_for(key, &tried)
            .ok_or(CallError::Unavailable)?;
        let target = backend.addr.clone();
        let result = try_once(upstream, &backend, req, body.clone(), max_body).await;
        let failed = match &result {
            Ok(a) => super::retry::retryable_status(a.header.status.as_u16()),
            Err(CallError::TooLarge) => false,
            Err(_) => true,
        };
        upstream.record(&target, !failed);
        tried.push(target);
        let again = failed
            && may_repeat
            && upstream
                .retry
                .as_ref()
                .is_some_and(|p| p.another(tried.len() as u32));
        if !again {
            return result;
        }
    }
}

/// One try at one target.
async fn try_once(
    upstream: &Upstream,
    backend: &pingora_load_balancing::Backend,
    req: &RequestHeader,
    body: Option<Bytes>,
    max_body: usize,
) -> Result<Answer, CallError> {
    let peer = upstream.peer(backend);
    let mut req = req.clone();
    if !req.headers.contains_key(http::header::HOST) {
        let _ = req.insert_header(http::header::HOST, backend.addr.to_string());
    }
    let req = &req;
    let started = Instant::now();
    let result = match exchange(&peer, req, body.clone(), max_body, true).await {
        Err(Failed::Stale) => exchange(&peer, req, body, max_body, false).await,
        other => other,
    };
    let name = &*upstream.name;
    match result {
        Ok(answer) => {
            metrics::UPSTREAM_DURATION
                .with_label_values(&[name])
                .observe(started.elapsed().as_secs_f64());
            if answer.header.status.is_server_error() {
                metrics::UPSTREAM_ERRORS
                    .with_label_values(&[name, "status"])
                    .inc();
            }
            Ok(answer)
        }
        Err(Failed::TooLarge) => Err(CallError::TooLarge),
        Err(Failed::Stale) => Err(CallError::Reset),
        Err(Failed::Io(kind)) => {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[name, kind.0.as_str()])
                .inc();
            Err(kind.into())
        }
    }
}

enum Failed {
    /// A reused connection failed before any answer: worth one more try on a new one.
    Stale,
    TooLarge,
    Io((FailureKind, bool)),
}

async fn exchange(
    peer: &pingora_core::upstreams::peer::HttpPeer,
    req: &RequestHeader,
    body: Option<Bytes>,
    max_body: usize,
    may_reuse: bool,
) -> Result<Answer, Failed> {
    let io = |e: Box<Error>| Failed::Io(FailureKind::of(&e));
    let (mut session, reused) = CONNECTOR.get_http_session(peer).await.map_err(io)?;
    // As the proxy does: the upstream's read and write timeouts apply to each operation.
    session.set_read_timeout(peer.options.read_timeout);
    session.set_write_timeout(peer.options.write_timeout);
    let reused = reused && may_reuse;
    let stale = |e: Box<Error>| if reused { Failed::Stale } else { io(e) };
    session
        .write_request_header(Box::new(req.clone()))
        .await
        .map_err(stale)?;
    if let Some(b) = body {
        session.write_request_body(b, true).await.map_err(stale)?;
    }
    session.finish_request_body().await.map_err(stale)?;
    let header = loop {
        session.read_response_header().await.map_err(stale)?;
        match session.response_header() {
            Some(h) if h.status.is_informational() => continue,
            Some(h) => break h.clone(),
            None => return Err(io(Error::new(ErrorType::InvalidHTTPHeader))),
        }
    };
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_response_body().await.map_err(io)? {
        if buf.len() + chunk.len() > max_body {
            return Err(Failed::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    CONNECTOR
        .release_http_session(session, peer, peer.idle_timeout())
        .await;
    Ok(Answer {
        header,
        body: buf.freeze(),
    })
}
