//! Requests the gateway makes itself (aggregate calls), through the same machinery as
//! proxying: the upstream's target selection, its peer with its timeouts, and Pingora's
//! pooled HTTP connector.

use super::Upstream;
use crate::metrics;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::Backend;
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

/// An answer whose header has arrived and whose body is read as it comes.
pub struct Live {
    pub header: ResponseHeader,
    session: HttpSession,
    peer: Box<HttpPeer>,
    /// The target that answered.
    pub target: super::Addr,
}

impl Live {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, CallError> {
        self.session
            .read_response_body()
            .await
            .map_err(|e| CallError::from(FailureKind::of(&e)))
    }

    /// Returns the connection to the pool once the whole answer has been read.
    pub async fn finish(self) {
        CONNECTOR
            .release_http_session(self.session, &*self.peer, self.peer.idle_timeout())
            .await;
    }
}

/// Something a try produced, with the status that decides whether to try again.
trait Status {
    fn status(&self) -> u16;
}

impl Status for Answer {
    fn status(&self) -> u16 {
        self.header.status.as_u16()
    }
}

impl Status for Live {
    fn status(&self) -> u16 {
        self.header.status.as_u16()
    }
}

/// Sends `req` (and `body`) to a target of `upstream` and reads the whole answer, at most
/// `max_body` bytes of it.
pub async fn send(
    upstream: &Upstream,
    key: &[u8],
    req: &RequestHeader,
    body: Option<Bytes>,
    max_body: usize,
) -> Result<Answer, CallError> {
    with_retries(upstream, key, req, |backend| {
        let body = body.clone();
        Box::pin(async move {
            let mut live = try_once(upstream, &backend, req, body).await?;
            let mut buf = BytesMut::new();
            while let Some(chunk) = live.chunk().await? {
                if buf.len() + chunk.len() > max_body {
                    return Err(CallError::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            let header = live.header.clone();
            live.finish().await;
            Ok(Answer {
                header,
                body: buf.freeze(),
            })
        })
    })
    .await
}

/// Sends `req` with `body` and returns as soon as an answer's header has arrived; the
/// caller reads the body as it comes. Tries are made as for [`send`].
pub async fn open(
    upstream: &Upstream,
    key: &[u8],
    req: &RequestHeader,
    body: Bytes,
) -> Result<Live, CallError> {
    with_retries(upstream, key, req, |backend| {
        let body = Some(body.clone());
        Box::pin(async move { try_once(upstream, &backend, req, body).await })
    })
    .await
}

/// Tries `attempt` on the targets of `upstream` until one answers with a status that is
/// not retryable, or the upstream's retry policy and budget say stop. Idempotent requests
/// only are tried again. Every outcome counts for the target's breaker.
async fn with_retries<'a, T: Status>(
    upstream: &'a Upstream,
    key: &[u8],
    req: &RequestHeader,
    mut attempt: impl FnMut(Backend) -> BoxFuture<'a, Result<T, CallError>>,
) -> Result<T, CallError> {
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
        let result = attempt(backend).await;
        if let (true, Some(policy)) = (!tried.is_empty(), &upstream.retry) {
            policy.budget.retry_done();
        }
        use super::breaker::Verdict;
        let verdict = match &result {
            Ok(a) if super::retry::retryable_status(a.status()) => Verdict::Failed,
            Ok(_) | Err(CallError::TooLarge) => Verdict::Ok,
            Err(CallError::Connect) => Verdict::ConnectFailed,
            Err(_) => Verdict::Failed,
        };
        let failed = verdict != Verdict::Ok;
        upstream.record(&target, verdict);
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

/// One try at one target, up to the answer's header. A pooled connection that turns out
/// to be closed is replaced by a fresh one once.
async fn try_once(
    upstream: &Upstream,
    backend: &Backend,
    req: &RequestHeader,
    body: Option<Bytes>,
) -> Result<Live, CallError> {
    let peer = upstream.peer(backend);
    let mut req = req.clone();
    if !req.headers.contains_key(http::header::HOST) {
        let _ = req.insert_header(http::header::HOST, backend.addr.to_string());
    }
    let req = &req;
    let started = Instant::now();
    let result = match exchange(&peer, req, body.clone(), true).await {
        Err(Failed::Stale) => exchange(&peer, req, body, false).await,
        other => other,
    };
    let name = &*upstream.name;
    match result {
        Ok((session, header)) => {
            upstream.duration.observe(started.elapsed().as_secs_f64());
            if header.status.is_server_error() {
                metrics::UPSTREAM_ERRORS
                    .with_label_values(&[name, "status"])
                    .inc();
            }
            Ok(Live {
                header,
                session,
                peer,
                target: backend.addr.clone(),
            })
        }
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
    Io((FailureKind, bool)),
}

/// Writes the request and reads the answer's header.
async fn exchange(
    peer: &HttpPeer,
    req: &RequestHeader,
    body: Option<Bytes>,
    may_reuse: bool,
) -> Result<(HttpSession, ResponseHeader), Failed> {
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
    loop {
        session.read_response_header().await.map_err(stale)?;
        match session.response_header() {
            Some(h) if h.status.is_informational() => continue,
            Some(h) => {
                let h = h.clone();
                return Ok((session, h));
            }
            None => return Err(io(Error::new(ErrorType::InvalidHTTPHeader))),
        }
    }
}
