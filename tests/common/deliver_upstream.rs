//! A controllable upstream for the asynchronous-delivery tests (tests/deliver.rs): a small
//! HTTP/1.1 server written on bare tokio sockets, so that the test controls everything the
//! gateway's delivery worker meets. It records every attempt it receives (when, method,
//! path, headers, body, and the status it answered), answers from a script (for example
//! 503 for the next N attempts, then 200; or 400 always; a `Retry-After` with an answer),
//! and can be taken down (its listener closed and every open connection dropped, so the
//! gateway gets "connection refused") and brought back on the same port.
//!
//! Included with `#[path = "common/deliver_upstream.rs"] mod deliver_upstream;` next to
//! `mod common;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One answer the upstream gives to an attempt.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// A `Retry-After` header value to send with the answer.
    pub retry_after: Option<String>,
    /// How long to wait before answering (to exceed the gateway's per-attempt timeout).
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    pub fn retry_after(mut self, value: &str) -> Answer {
        self.retry_after = Some(value.to_string());
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// When its head and body had been read (it is recorded then, before the answer).
    pub at: Instant,
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the upstream answers (or answered) with.
    pub status: u16,
}

impl Attempt {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `Idempotency-Key`.
    pub fn key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// `X-Delivery-Attempt` as a number (None when absent or not a number).
    pub fn attempt_no(&self) -> Option<u32> {
        self.header("x-delivery-attempt")
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A one-line description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} -> {} key={:?} attempt={:?} body={:?}",
            self.method,
            self.path,
            self.status,
            self.key(),
            self.header("x-delivery-attempt"),
            self.body_str()
        )
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    default: Option<Answer>,
    attempts: Vec<Attempt>,
}

impl State {
    fn next_answer(&mut self) -> Answer {
        self.script
            .pop_front()
            .or_else(|| self.default.clone())
            .unwrap_or_else(|| Answer::status(200))
    }
}

/// The controllable upstream; stopped on drop.
pub struct DeliverUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for DeliverUpstream {
    fn drop(&mut self) {
        if let Some(t) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

impl DeliverUpstream {
    /// Starts on a free loopback port, answering 200 to everything.
    pub async fn start() -> DeliverUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = DeliverUpstream {
            addr,
            state: Arc::new(Mutex::new(State::default())),
            server: Mutex::new(None),
        };
        up.serve(listener);
        up
    }

    /// `host:port`, for an upstream's `targets`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the server task drops them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            conns.spawn(connection(stream, state.clone()));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Every later attempt is answered `status` (the script, if any, is cleared).
    pub fn always(&self, status: u16) {
        self.always_answer(Answer::status(status));
    }

    pub fn always_answer(&self, answer: Answer) {
        let mut s = self.state();
        s.script.clear();
        s.default = Some(answer);
    }

    /// The next attempts are answered `answers` in order, then the default (200 unless
    /// `always` said otherwise).
    pub fn script(&self, answers: Vec<Answer>) {
        self.state().script = answers.into();
    }

    /// The next `n` attempts are answered `status`, then 200.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = self.state();
        s.script = std::iter::repeat_n(Answer::status(status), n).collect();
        s.default = Some(Answer::status(200));
    }

    /// Closes the listener and drops every open connection: the gateway meets a
    /// connection refused (or reset) until `up`.
    pub fn down(&self) {
        if let Some(t) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }

    /// Listens again on the same port (after `down`).
    pub async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot listen on {} again: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    /// Every attempt received so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state().attempts.clone()
    }

    /// The attempts so far carrying `Idempotency-Key: key`.
    pub fn attempts_for(&self, key: &str) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.key() == Some(key))
            .collect()
    }

    /// Waits (at most `limit`) until the attempts received satisfy `ready`; returns them
    /// then, or panics with what was received.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        ready: impl Fn(&[Attempt]) -> bool,
    ) -> Vec<Attempt> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.attempts();
            if ready(&seen) {
                return seen;
            }
            if Instant::now() > deadline {
                panic!(
                    "upstream: {what} not seen within {limit:?}; it received {} attempt(s):\n{}",
                    seen.len(),
                    describe_all(&seen)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One line per attempt, for assertion messages.
pub fn describe_all(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(Attempt::describe)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until the peer closes or sends
/// something unreadable.
async fn connection(stream: TcpStream, state: Arc<Mutex<State>>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let Some((method, path, headers, body, close)) = read_request(&mut read).await else {
            return;
        };
        let answer = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_answer();
        // Recorded on receipt, before any delay: a test can see an attempt in progress.
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attempts
            .push(Attempt {
                at: Instant::now(),
                method,
                path,
                headers,
                body,
                status: answer.status,
            });
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        let text = format!("status {}", answer.status);
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
            answer.status,
            reason(answer.status),
            text.len()
        );
        if let Some(ra) = &answer.retry_after {
            head.push_str(&format!("retry-after: {ra}\r\n"));
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        head.push_str(&text);
        if write.write_all(head.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

type Request = (String, String, Vec<(String, String)>, Vec<u8>, bool);

/// Reads one request: head, then a body by `Content-Length` or chunked.
async fn read_request<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Request> {
    let mut line = String::new();
    // Skip blank lines between requests.
    loop {
        line.clear();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            if r.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let size_text = line.trim().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).ok()?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk).await.ok()?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).await.ok()?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.trim().parse().ok()?;
        body = vec![0u8; len];
        r.read_exact(&mut body).await.ok()?;
    }
    let close = get("connection").is_some_and(|v| v.contains("close")) || version == "HTTP/1.0";
    Some((method, path, headers, body, close))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
