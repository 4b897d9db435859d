//! The accepted connection as Pingora's HTTP/1 code reads it, with the request head held
//! back until it is complete and within the limits. Pingora has no whole-head deadline (its
//! timeouts apply per read, so a client trickling one byte at a time holds a connection for
//! ever) and answers oversized or ambiguous heads with a bare 400; here a late head closes
//! the connection quietly and a refused one gets the contract's JSON answer.
//!
//! Because the head is withheld until it is complete, Pingora never holds a partial head:
//! a connection closed here looks to it like a client that sent nothing, which it drops
//! without logging an error.

use super::head::{self, HeadScan, Refusal, Scan};
use crate::runtime::snapshot::Settings;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora_timeout::fast_timeout::FastTimeout;
use pingora_timeout::ToTimeout;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A pending wake-up, made only when a read has to wait.
type Timer = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// How long a refused connection is read and discarded after its answer, so that the
/// client sees the answer rather than a reset (as nginx's lingering close).
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

enum State {
    /// Waiting for a request head. Until its first byte arrives on a reused connection the
    /// deadline is the idle timeout; from then on (and on a new connection from the start)
    /// it is the header timeout.
    Head { started: bool },
    /// The head is complete: what was held back goes to the reader first.
    Release { from: usize },
    /// Body and response bytes pass through untouched.
    Pass,
    /// Writing the answer to a refused head, then draining what the client still sends.
    Refuse {
        answer: Bytes,
        written: usize,
        drained: usize,
        shut: bool,
    },
    /// Closed: every read ends.
    Done,
}

pub struct Guarded {
    inner: Stream,
    settings: Arc<Settings>,
    state: State,
    /// Head bytes read but not yet handed on.
    held: Vec<u8>,
    scan: HeadScan,
    /// When the current wait ends.
    deadline: Instant,
    /// A wake-up at the given instant, from Pingora's shared coarse timers (as Pingora
    /// itself uses for keep-alive reads). It is kept while it fires no later than the
    /// deadline: on a busy keep-alive connection every request moves the deadline later,
    /// so one timer serves many requests; when it fires early the rest is waited again.
    timer: Option<(Instant, Timer)>,
    /// The idle deadline is set when a read first has to wait.
    idle_unset: bool,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Guarded {
    /// A new connection: its first head must be complete within the header timeout.
    pub fn new(inner: Stream, settings: Arc<Settings>) -> Guarded {
        let deadline = Instant::now() + settings.header_timeout;
        Guarded {
            inner,
            settings,
            state: State::Head { started: true },
            held: Vec::new(),
            scan: HeadScan::new(),
            deadline,
            timer: None,
            idle_unset: false,
        }
    }

    /// The previous request is done: wait for the next head, at most the idle timeout
    /// (counted from when a read first has to wait: no clock read when the next request is
    /// already there).
    pub fn next_request(&mut self) {
        self.state = State::Head { started: false };
        self.held.clear();
        self.scan = HeadScan::new();
        self.idle_unset = true;
    }

    fn set_deadline(&mut self, after: std::time::Duration) {
        self.deadline = Instant::now() + after;
    }

    /// Whether the current wait is over; otherwise the task is woken no later than when it
    /// is.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if std::mem::take(&mut self.idle_unset) {
            self.set_deadline(self.settings.idle_timeout);
        }
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return true;
            }
            match &mut self.timer {
                Some((at, timer)) if *at <= self.deadline => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return false;
                    }
                    // Fired before the (since moved) deadline: wait for the rest.
                    self.timer = None;
                }
                _ => {
                    let timer = FastTimeout::create(self.deadline - now).timeout();
                    self.timer = Some((self.deadline, timer));
                }
            }
        }
    }

    /// Reads while the head is incomplete. New bytes land in `out` first; they stay there
    /// only when they complete a head that nothing was held back for (the common case: no
    /// copy), otherwise they move to `held` and `out` is set back.
    fn poll_head(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let before = out.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, out) {
                Poll::Pending => {
                    if !self.expired(cx) {
                        return Poll::Pending;
                    }
                    let reason = match self.state {
                        State::Head { started: false } => "idle_timeout",
                        _ => "header_timeout",
                    };
                    super::count_close(reason);
                    self.state = State::Done;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let new = out.filled().len() - before;
            if new == 0 {
                // The client closed; a partial head is dropped with the connection.
                self.state = State::Done;
                return Poll::Ready(Ok(()));
            }
            let first_bytes = matches!(self.state, State::Head { started: false });
            if first_bytes {
                self.state = State::Head { started: true };
                self.idle_unset = false;
            }
            let limits = &self.settings.head;
            let verdict = if self.held.is_empty() {
                self.scan.scan(&out.filled()[before..], limits)
            } else {
                self.held.extend_from_slice(&out.filled()[before..]);
                self.scan.scan(&self.held, limits)
            };
            match verdict {
                Scan::Complete(_) if self.held.is_empty() => {
                    self.state = State::Pass;
                    return Poll::Ready(Ok(()));
                }
                Scan::Complete(_) => {
                    out.set_filled(before);
                    self.state = State::Release { from: 0 };
                    return self.poll_release(out);
                }
                Scan::Partial => {
                    // The rest of the head must come within the header timeout, from its
                    // first byte (set only now: most heads arrive whole in one read).
                    if first_bytes {
                        self.set_deadline(self.settings.header_timeout);
                    }
                    if self.held.is_empty() {
                        self.held.extend_from_slice(&out.filled()[before..]);
                    }
                    out.set_filled(before);
                }
                Scan::Refuse(r) => {
                    let method = match self.held.is_empty() {
                        true => super::method_label_bytes(head::method(&out.filled()[before..])),
                        false => super::method_label_bytes(head::method(&self.held)),
                    };
                    out.set_filled(before);
                    self.refuse(r, method);
                    return self.poll_refuse(cx, out);
                }
            }
        }
    }

    fn poll_release(&mut self, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let State::Release { from } = self.state else {
            return Poll::Ready(Ok(()));
        };
        let n = out.remaining().min(self.held.len() - from);
        out.put_slice(&self.held[from..from + n]);
        if from + n == self.held.len() {
            self.held = Vec::new();
            self.state = State::Pass;
        } else {
            self.state = State::Release { from: from + n };
        }
        Poll::Ready(Ok(()))
    }

    fn refuse(&mut self, r: Refusal, method: &'static str) {
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let answer = super::refusal_answer(r, method, peer);
        self.held = Vec::new();
        self.set_deadline(LINGER);
        self.state = State::Refuse {
            answer,
            written: 0,
            drained: 0,
            shut: false,
        };
    }

    /// Writes the answer, closes the write side, then reads and discards for a bounded
    /// time and size; then the connection ends.
    fn poll_refuse(
        &mut self,
        cx: &mut Context<'_>,
        _out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let State::Refuse {
            answer,
            written,
            drained,
            shut,
        } = &mut self.state
        else {
            return Poll::Ready(Ok(()));
        };
        let mut inner = Pin::new(&mut self.inner);
        let finished = loop {
            if *written < answer.len() {
                match inner.as_mut().poll_write(cx, &answer[*written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => *written += n,
                    Poll::Ready(_) => break true,
                    Poll::Pending => break false,
                }
            } else if !*shut {
                match inner.as_mut().poll_shutdown(cx) {
                    Poll::Ready(_) => *shut = true,
                    Poll::Pending => break false,
                }
            } else {
                let mut scratch = [0u8; 4096];
                let mut buf = ReadBuf::new(&mut scratch);
                match inner.as_mut().poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                        *drained += buf.filled().len();
                        if *drained > LINGER_BYTES {
                            break true;
                        }
                    }
                    Poll::Ready(_) => break true,
                    Poll::Pending => break false,
                }
            }
        };
        if finished || self.expired(cx) {
            self.state = State::Done;
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.state {
            State::Pass => Pin::new(&mut this.inner).poll_read(cx, out),
            State::Head { .. } if out.remaining() > 0 => this.poll_head(cx, out),
            State::Head { .. } => Poll::Ready(Ok(())),
            State::Release { .. } => this.poll_release(out),
            State::Refuse { .. } => this.poll_refuse(cx, out),
            State::Done => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: pingora_core::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<pingora_core::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// Peeking would bypass the held-back head; the gateway's own code never peeks.
#[async_trait]
impl Peek for Guarded {}
