//! Upstream resilience end to end through the real `gateway` binary: retries (which
//! requests, which failures, how many tries, where they go, the backoff between them, the
//! retry budget), circuit breakers per target, active health checks, the same machinery
//! for aggregate calls, and hostile clients (request smuggling, huge header blocks,
//! slowloris, head limits out of range).
//!
//! The upstreams are started by each test: a recording HTTP upstream whose answer is
//! planned per request (status, delay, body) and that counts the connections it accepts,
//! and raw TCP servers that misbehave (close or reset before answering, send half a
//! response, hang, send the body slowly). A port nothing listens on stands for a refused
//! connection.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::ListenerExt;
use common::reply::{get, send, Reply};
use common::{client, line_of, metric, samples, ConfigDir, Gateway};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// A recording upstream
// ---------------------------------------------------------------------------------------

/// One request an upstream received.
#[derive(Clone, Debug)]
struct Seen {
    /// When the handler got the request.
    at: Instant,
    method: String,
    path: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
    /// How many requests with the same path this upstream received before this one.
    n: usize,
}

/// How an upstream answers one request.
#[derive(Clone)]
struct Plan {
    status: u16,
    delay: Duration,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Plan {
    fn json(v: Value) -> Plan {
        Plan {
            status: 200,
            delay: Duration::ZERO,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    /// An answer with `status` and a plain-text body.
    fn status(status: u16, text: &str) -> Plan {
        Plan {
            status,
            delay: Duration::ZERO,
            content_type: "text/plain",
            body: text.as_bytes().to_vec(),
        }
    }

    fn after(mut self, delay: Duration) -> Plan {
        self.delay = delay;
        self
    }
}

/// The 200 JSON an upstream answers by default: who it is and what it saw.
fn echo(name: &str, s: &Seen) -> Plan {
    Plan::json(json!({
        "upstream": name,
        "method": s.method,
        "path": s.path,
        "body_len": s.body.len(),
    }))
}

type PlanFn = Arc<dyn Fn(&Seen) -> Plan + Send + Sync>;

/// A running recording upstream; aborted on drop.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(plan: impl Fn(&Seen) -> Plan + Send + Sync + 'static) -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
        let accepts = Arc::new(AtomicUsize::new(0));
        let plan: PlanFn = Arc::new(plan);
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (s, plan) = (s.clone(), plan.clone());
            async move { handle(req, s, plan).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acc = accepts.clone();
        let listener = listener.tap_io(move |_io| {
            acc.fetch_add(1, SeqCst);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            addr,
            seen,
            accepts,
            task,
        }
    }

    /// An upstream that answers every request with `echo(name, ..)`.
    async fn echo(name: &'static str) -> Recorder {
        Recorder::start(move |s| echo(name, s)).await
    }

    /// An upstream that answers every request with `status` and the text `"{name} says
    /// {status}"`.
    async fn failing(name: &'static str, status: u16) -> Recorder {
        Recorder::start(move |_| Plan::status(status, &format!("{name} says {status}"))).await
    }

    /// An upstream that answers as `status` says (200: the echo; anything else: that
    /// status with the text `"{name} is failing"`), after `delay_ms`; `/healthz` answers as
    /// `health` says.
    async fn switched(name: &'static str, sw: &Switch) -> Recorder {
        let sw = sw.clone();
        Recorder::start(move |s| {
            if s.path == "/healthz" {
                return Plan::status(sw.health.load(SeqCst), "health");
            }
            let delay = Duration::from_millis(sw.delay_ms.load(SeqCst));
            match sw.status.load(SeqCst) {
                200 => echo(name, s).after(delay),
                code => Plan::status(code, &format!("{name} is failing")).after(delay),
            }
        })
        .await
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .count()
    }

    /// Requests for exactly `path`.
    fn exact(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    /// Requests other than health checks.
    fn traffic(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path != "/healthz")
            .count()
    }

    fn checks(&self) -> usize {
        self.count("/healthz")
    }

    fn accepts(&self) -> usize {
        self.accepts.load(SeqCst)
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

/// What a switched upstream answers; the test changes it as it goes.
#[derive(Clone)]
struct Switch {
    status: Arc<AtomicU16>,
    health: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Switch {
    fn new(status: u16) -> Switch {
        Switch {
            status: Arc::new(AtomicU16::new(status)),
            health: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

async fn handle(req: Request, seen: Arc<Mutex<Vec<Seen>>>, plan: PlanFn) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let p = {
        let mut seen = seen.lock().unwrap();
        let n = seen.iter().filter(|s| s.path == path).count();
        let s = Seen {
            at,
            method: parts.method.to_string(),
            path,
            headers: parts.headers.clone(),
            body: body.to_vec(),
            n,
        };
        let p = plan(&s);
        seen.push(s);
        p
    };
    if !p.delay.is_zero() {
        tokio::time::sleep(p.delay).await;
    }
    Response::builder()
        .status(p.status)
        .header("content-type", p.content_type)
        .body(Body::from(p.body))
        .expect("response")
}

// ---------------------------------------------------------------------------------------
// Misbehaving raw TCP upstreams
// ---------------------------------------------------------------------------------------

/// How a raw upstream misbehaves on every connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the request head, then closes without a byte of answer.
    Close,
    /// Reads a few bytes and closes with the rest of the request unread: a reset.
    Reset,
    /// Reads the request, sends the head of a 200 announcing 1000 bytes and 100 of them,
    /// then closes.
    HalfBody,
    /// Reads the request and never answers (keeps the connection open).
    Hang,
    /// Reads the request, sends the head of a 200 announcing 20 bytes, 10 of them, waits,
    /// then the other 10.
    SlowBody(Duration),
    /// Answers the first request on a connection (a 200 that keeps it open), then closes
    /// it when the second request arrives, without answering: what a pooled connection
    /// that the upstream closed at the moment of its reuse looks like.
    OncePerConnection,
}

/// A raw upstream; aborted on drop (connections already accepted live on).
struct Raw {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    async fn start(fault: Fault) -> Raw {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let acc = accepts.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                acc.fetch_add(1, SeqCst);
                tokio::spawn(misbehave(sock, fault));
            }
        });
        Raw {
            addr,
            accepts,
            task,
        }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn accepts(&self) -> usize {
        self.accepts.load(SeqCst)
    }
}

/// Reads until the end of a request head (or EOF).
async fn read_head(sock: &mut TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 1 << 20 {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads and discards until the peer closes.
async fn drain(sock: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn misbehave(mut sock: TcpStream, fault: Fault) {
    match fault {
        Fault::Close => {
            read_head(&mut sock).await;
        }
        Fault::Reset => {
            let mut buf = [0u8; 4];
            let _ = sock.read(&mut buf).await;
        }
        Fault::HalfBody => {
            read_head(&mut sock).await;
            let mut out =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
                    .to_vec();
            out.extend_from_slice(&[b'x'; 100]);
            let _ = sock.write_all(&out).await;
            let _ = sock.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Fault::Hang => {
            read_head(&mut sock).await;
            drain(&mut sock).await;
        }
        Fault::SlowBody(gap) => {
            read_head(&mut sock).await;
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n0123456789";
            if sock.write_all(head).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
            if sock.write_all(b"abcdefghij").await.is_err() {
                return;
            }
            drain(&mut sock).await;
        }
        Fault::OncePerConnection => {
            read_head(&mut sock).await;
            let answer =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfresh";
            if sock.write_all(answer).await.is_err() {
                return;
            }
            read_head(&mut sock).await;
        }
    }
}

/// A port bound but not listening: connections to it are refused, and no other server
/// can take the port while this lives.
struct Refused {
    socket: tokio::net::TcpSocket,
}

impl Refused {
    fn new() -> Refused {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        Refused { socket }
    }

    fn target(&self) -> String {
        self.socket.local_addr().expect("addr").to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Configuration, requests, metrics
// ---------------------------------------------------------------------------------------

const RETRY3: &str = "    retries: { attempts: 3, backoff: 1ms, max_backoff: 5ms }\n";

/// Upstream `name` with `targets` and `extra` (lines indented by four spaces).
fn upstream(name: &str, targets: &[String], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("  {name}:\n    targets: [{}]\n{extra}", list.join(", "))
}

/// A public route `name` for `path` to upstream `up`.
fn route(name: &str, path: &str, up: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path: \"{path}\" }}\n    auth: none\n    upstream: {up}\n"
    )
}

fn policy(upstreams: &[String], routes: &[String]) -> String {
    format!(
        "upstreams:\n{}routes:\n{}",
        upstreams.concat(),
        routes.concat()
    )
}

async fn start(policy: &str) -> Gateway {
    Gateway::start("", &[("p.yaml", policy)]).await
}

async fn fetch(gw: &Gateway, path: &str) -> Reply {
    get(gw, path, &[]).await
}

/// Asserts a 200 echo from upstream `name`.
fn assert_from(r: &Reply, name: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert_eq!(r.json()["upstream"], name, "{what}: {}", r.describe());
}

/// Asserts the gateway's own JSON error `status` / `code`.
fn assert_error(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert_eq!(r.code(), code, "{what}: {}", r.describe());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: {}",
        r.describe()
    );
}

/// Asserts the upstream's own error answer passed through: `status` and its text.
fn assert_passed(r: &Reply, status: u16, text: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert_eq!(r.text, text, "{what}: {}", r.describe());
}

fn retries(m: &str, up: &str) -> f64 {
    metric(m, "gateway_upstream_retries_total", &[("upstream", up)])
}

/// The `gateway_circuit_state` of `target` of upstream `up` (None: no such series).
fn circuit(m: &str, up: &str, target: &str) -> Option<f64> {
    samples(
        m,
        "gateway_circuit_state",
        &[("upstream", up), ("target", target)],
    )
    .next()
}

/// Waits (at most 3 s) for the circuit state of `target` to be `want`; asserts it.
async fn expect_circuit(gw: &Gateway, up: &str, target: &str, want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = gw.metrics().await;
        let got = circuit(&m, up, target);
        if got == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: gateway_circuit_state of {up}/{target} is {got:?}, not {want}; metrics:\n{m}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` every 10 ms for at most `limit`; whether it came true.
async fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Sends raw bytes; returns what the gateway answered until it closed the connection (or
/// reset it, or went quiet for `quiet`), and whether it closed (or reset) it.
async fn raw_exchange(addr: SocketAddr, request: &[u8], quiet: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(request)).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status codes of the HTTP/1.x responses in a raw answer.
fn statuses(raw: &str) -> Vec<u16> {
    raw.split("HTTP/1.")
        .skip(1)
        .filter_map(|r| r.get(2..5).and_then(|c| c.parse().ok()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Retries of idempotent requests on 502/503/504
// ---------------------------------------------------------------------------------------

/// A GET answered 503 by one target is retried on the other (every request ends at the
/// good target, the bad one sees exactly the retries); 502/503/504 bursts on a single
/// target are retried on it until it answers; a 500 is not retried; when the tries run
/// out the upstream's own 503 reaches the client; two failing targets are both tried; an
/// upstream without `retries` does not retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_on_502_503_504() {
    let bad = Recorder::failing("bad", 503).await;
    let good = Recorder::echo("good").await;
    let bad2 = Recorder::failing("bad2", 503).await;
    let flaky = Recorder::start(|s| {
        let burst: &[u16] = match s.path.rsplit('/').next().unwrap_or("") {
            "burst" => &[503, 502],
            "gateway-timeout" => &[504, 504],
            "five-hundred" => &[500, 500, 500],
            "exhaust" => &[503, 503, 503, 503],
            "once" => &[503],
            _ => &[],
        };
        match burst.get(s.n) {
            Some(&code) => Plan::status(code, &format!("flaky says {code}")),
            None => echo("flaky", s),
        }
    })
    .await;
    let p = policy(
        &[
            upstream("pair", &[bad.target(), good.target()], RETRY3),
            upstream("one", &[flaky.target()], RETRY3),
            upstream("both", &[bad.target(), bad2.target()], RETRY3),
            upstream("plain", &[flaky.target()], ""),
        ],
        &[
            route("pair", "/pair/*", "pair"),
            route("one", "/one/*", "one"),
            route("both", "/both/*", "both"),
            route("plain", "/plain/*", "plain"),
        ],
    );
    let gw = start(&p).await;

    // Two targets, one always 503: every GET is a 200 from the good one.
    for i in 0..6 {
        assert_from(&fetch(&gw, "/pair/x").await, "good", &format!("GET {i}"));
    }
    let m = gw.metrics().await;
    assert_eq!(
        good.count("/pair"),
        6,
        "each request ends at the good target once"
    );
    let on_bad = bad.count("/pair");
    assert!(
        on_bad >= 1,
        "round robin sends some first tries to the bad target"
    );
    assert_eq!(
        retries(&m, "pair"),
        on_bad as f64,
        "every try at the bad target is followed by exactly one retry: {m}"
    );

    // One target: 503 then 502, then 200 — three tries.
    assert_from(&fetch(&gw, "/one/burst").await, "flaky", "503, 502, 200");
    assert_eq!(flaky.count("/one/burst"), 3);
    // 504 twice, then 200.
    assert_from(
        &fetch(&gw, "/one/gateway-timeout").await,
        "flaky",
        "504, 504, 200",
    );
    assert_eq!(flaky.count("/one/gateway-timeout"), 3);
    // A 500 is the upstream's answer, not a reason to try again.
    assert_passed(
        &fetch(&gw, "/one/five-hundred").await,
        500,
        "flaky says 500",
        "500",
    );
    assert_eq!(flaky.count("/one/five-hundred"), 1);
    // Tries exhausted: the upstream's own 503 goes to the client, after `attempts` tries.
    let r = fetch(&gw, "/one/exhaust").await;
    assert_passed(&r, 503, "flaky says 503", "exhausted");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain"),
        "{}",
        r.describe()
    );
    assert_eq!(flaky.count("/one/exhaust"), 3, "attempts: 3 tries in all");
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "one"), 6.0, "2 + 2 + 0 + 2 retries: {m}");
    // Requests are counted when they are logged, just after the answer went out.
    let m = gw
        .metrics_when(|m| metric(m, "gateway_requests_total", &[("route", "one")]) >= 4.0)
        .await;
    assert_eq!(
        metric(&m, "gateway_requests_total", &[("route", "one")]),
        4.0,
        "a retried request is one request: {m}"
    );

    // Two failing targets: the retry goes to the one not tried yet, then any.
    let r = fetch(&gw, "/both/x").await;
    assert_eq!(r.status, 503, "{}", r.describe());
    let (b1, b2) = (bad.count("/both"), bad2.count("/both"));
    assert_eq!(b1 + b2, 3, "three tries in all");
    assert!(
        b1 >= 1 && b2 >= 1,
        "the second try prefers the untried target: {b1} + {b2}"
    );

    // No `retries`: no retry.
    assert_passed(
        &fetch(&gw, "/plain/once").await,
        503,
        "flaky says 503",
        "no retries",
    );
    assert_eq!(flaky.count("/plain/once"), 1);
    assert_from(&fetch(&gw, "/plain/once").await, "flaky", "second request");
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "plain"), 0.0, "{m}");
}

// ---------------------------------------------------------------------------------------
// 2. Which methods are retried; the body is replayed
// ---------------------------------------------------------------------------------------

/// POST and PATCH are not retried (one try, the client sees the 503); POST with an
/// `Idempotency-Key`, PUT and DELETE are, with the same body every time; a body over
/// 64 KiB cannot be replayed, so it is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_retried_and_bodies_are_replayed() {
    // Each path: 503 twice, then the echo.
    let up = Recorder::start(|s| match s.n {
        0 | 1 => Plan::status(503, "up says 503"),
        _ => echo("up", s),
    })
    .await;
    let p = policy(
        &[upstream("u", &[up.target()], RETRY3)],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    let c = client();
    let body_of = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| b'a' + ((i * 7 + seed as usize) % 26) as u8)
            .collect()
    };

    // POST without a key: one try.
    let r = send(c.post(gw.url("/plain")).body("hello")).await;
    assert_passed(&r, 503, "up says 503", "POST");
    assert_eq!(up.count("/plain"), 1, "a POST is tried once");

    // PATCH: one try.
    let r = send(c.patch(gw.url("/patch")).body("hello")).await;
    assert_passed(&r, 503, "up says 503", "PATCH");
    assert_eq!(up.count("/patch"), 1, "a PATCH is tried once");

    // POST with an Idempotency-Key, 40 KiB: retried, the body replayed exactly.
    let body = body_of(40 * 1024, 3);
    let r = send(
        c.post(gw.url("/keyed"))
            .header("idempotency-key", "k-123")
            .header("content-type", "application/octet-stream")
            .body(body.clone()),
    )
    .await;
    assert_from(&r, "up", "POST with Idempotency-Key");
    let tries: Vec<Seen> = up
        .seen()
        .into_iter()
        .filter(|s| s.path == "/keyed")
        .collect();
    assert_eq!(tries.len(), 3, "503, 503, 200");
    for (i, s) in tries.iter().enumerate() {
        assert_eq!(s.method, "POST");
        assert_eq!(
            s.body.len(),
            body.len(),
            "try {i}: the body's length was {}",
            s.body.len()
        );
        assert!(s.body == body, "try {i}: the body was not replayed exactly");
        assert_eq!(
            s.headers.get("idempotency-key").map(|v| v.as_bytes()),
            Some(&b"k-123"[..]),
            "try {i}"
        );
        // Each try is built afresh from the client's request: nothing accumulates.
        let xff: Vec<_> = s.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["127.0.0.1"], "try {i}: X-Forwarded-For");
        assert_eq!(
            s.headers.get_all("x-request-id").iter().count(),
            1,
            "try {i}: one X-Request-Id"
        );
        assert_eq!(
            s.headers.get("x-request-id"),
            tries[0].headers.get("x-request-id"),
            "try {i}: the same X-Request-Id on every try"
        );
    }
    assert_eq!(
        r.header("x-request-id").map(str::as_bytes),
        tries[0].headers.get("x-request-id").map(|v| v.as_bytes()),
        "the client sees the request id the tries carried"
    );

    // PUT and DELETE are idempotent.
    let put = body_of(1000, 5);
    let r = send(c.put(gw.url("/put")).body(put.clone())).await;
    assert_from(&r, "up", "PUT");
    let tries: Vec<Seen> = up.seen().into_iter().filter(|s| s.path == "/put").collect();
    assert_eq!(tries.len(), 3, "PUT: 503, 503, 200");
    assert!(tries.iter().all(|s| s.body == put), "PUT body replayed");
    let r = send(c.delete(gw.url("/delete"))).await;
    assert_from(&r, "up", "DELETE");
    assert_eq!(up.count("/delete"), 3, "DELETE: 503, 503, 200");

    // Over 64 KiB: the body cannot be sent again, so there is no retry.
    let big = body_of(100 * 1024, 1);
    let r = send(
        c.post(gw.url("/big"))
            .header("idempotency-key", "k-big")
            .body(big.clone()),
    )
    .await;
    assert_passed(&r, 503, "up says 503", "POST of 100 KiB");
    let tries: Vec<Seen> = up.seen().into_iter().filter(|s| s.path == "/big").collect();
    assert_eq!(tries.len(), 1, "a body over 64 KiB is not retried");
    assert!(tries[0].body == big, "the whole body reached the upstream");

    let m = gw.metrics().await;
    assert_eq!(retries(&m, "u"), 6.0, "POST+key, PUT, DELETE: 2 each: {m}");
}

// ---------------------------------------------------------------------------------------
// 3. Refused connections
// ---------------------------------------------------------------------------------------

/// A refused target is skipped by a retry to the other one (every request is a 200);
/// with every target refused the answer is a 502 `bad_gateway` after `attempts` tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_elsewhere() {
    let good = Recorder::echo("good").await;
    let ports: Vec<Refused> = (0..4).map(|_| Refused::new()).collect();
    let p = policy(
        &[
            upstream("half", &[ports[0].target(), good.target()], RETRY3),
            upstream("none", &[ports[1].target(), ports[2].target()], RETRY3),
            upstream("single", &[ports[3].target()], ""),
        ],
        &[
            route("half", "/half/*", "half"),
            route("none", "/none/*", "none"),
            route("single", "/single/*", "single"),
        ],
    );
    let gw = start(&p).await;
    for i in 0..6 {
        assert_from(&fetch(&gw, "/half/x").await, "good", &format!("GET {i}"));
    }
    assert_eq!(good.count("/half"), 6);
    let m = gw.metrics().await;
    let r = retries(&m, "half");
    assert!(
        (1.0..=6.0).contains(&r),
        "a retry for each first try at the refused target: {m}"
    );

    let r = fetch(&gw, "/none/x").await;
    assert_error(&r, 502, "bad_gateway", "every target refused");
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "none"), 2.0, "3 tries in all: {m}");

    // Without retries: one try, 502.
    let r = fetch(&gw, "/single/x").await;
    assert_error(&r, 502, "bad_gateway", "refused, no retries");
    assert_eq!(retries(&gw.metrics().await, "single"), 0.0);
}

// ---------------------------------------------------------------------------------------
// 4. Connections closed or reset before or during the answer
// ---------------------------------------------------------------------------------------

/// A target that closes (or resets) the connection before answering is retried
/// elsewhere; with every target doing so the answer is a 502 after `attempts` tries. A
/// target that closes in the middle of the body is not retried: the client gets a
/// truncated answer and the upstream saw exactly one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_before_the_answer_are_retried_but_not_mid_body() {
    let closer = Raw::start(Fault::Close).await;
    let reset1 = Raw::start(Fault::Reset).await;
    let reset2 = Raw::start(Fault::Reset).await;
    let half = Raw::start(Fault::HalfBody).await;
    let good = Recorder::echo("good").await;
    let p = policy(
        &[
            upstream("closing", &[closer.target(), good.target()], RETRY3),
            upstream("resets", &[reset1.target(), reset2.target()], RETRY3),
            upstream("half", &[half.target()], RETRY3),
        ],
        &[
            route("closing", "/closing/*", "closing"),
            route("resets", "/resets/*", "resets"),
            route("half", "/half/*", "half"),
        ],
    );
    let gw = start(&p).await;

    for i in 0..6 {
        assert_from(&fetch(&gw, "/closing/x").await, "good", &format!("GET {i}"));
    }
    assert_eq!(good.count("/closing"), 6);
    let m = gw.metrics().await;
    assert!(closer.accepts() >= 1, "some first tries go to the closer");
    assert_eq!(
        retries(&m, "closing"),
        closer.accepts() as f64,
        "one retry per try at the closer: {m}"
    );

    let r = fetch(&gw, "/resets/x").await;
    assert_error(&r, 502, "bad_gateway", "every target resets");
    let (a, b) = (reset1.accepts(), reset2.accepts());
    assert_eq!(a + b, 3, "three tries in all");
    assert!(a >= 1 && b >= 1, "both targets tried: {a} + {b}");
    assert_eq!(retries(&gw.metrics().await, "resets"), 2.0);
    // A POST is not tried again after a reset.
    let r = send(client().post(gw.url("/resets/post")).body("once")).await;
    assert_error(&r, 502, "bad_gateway", "POST reset");
    assert_eq!(reset1.accepts() + reset2.accepts(), 4, "one try");
    assert_eq!(retries(&gw.metrics().await, "resets"), 2.0);

    // Mid-body: the head (and some body) went to the client; no retry.
    let (answer, closed) = raw_exchange(
        gw.addr(),
        b"GET /half/x HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        half.accepts(),
        1,
        "the upstream saw one request: {answer:?}"
    );
    assert_eq!(retries(&gw.metrics().await, "half"), 0.0);
    let st = statuses(&answer);
    assert!(
        st == [200] || st == [502],
        "one answer, the upstream's 200 (or a 502 when nothing was sent yet): {answer:?}"
    );
    if st == [200] {
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(
            body.len() < 1000 && closed,
            "a truncated body ({} bytes), then the connection closed ({closed}): {answer:?}",
            body.len()
        );
    }
    eprintln!(
        "mid-body close: client got {st:?}, {} bytes, closed={closed}",
        answer.len()
    );
}

// ---------------------------------------------------------------------------------------
// 5. Read timeouts and slow bodies
// ---------------------------------------------------------------------------------------

/// Targets that never answer: each try waits `timeouts.read`, then the next; the answer
/// is a 504 `upstream_timeout` after `attempts` tries on both targets. A body whose pauses
/// stay within the read timeout arrives whole; one that stalls past it mid-body is cut
/// and not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_targets_time_out_after_every_try() {
    let hang1 = Raw::start(Fault::Hang).await;
    let hang2 = Raw::start(Fault::Hang).await;
    let slow_ok = Raw::start(Fault::SlowBody(Duration::from_millis(100))).await;
    let slow_cut = Raw::start(Fault::SlowBody(Duration::from_millis(1500))).await;
    let read = "    timeouts: { read: 300ms }\n";
    let extra = format!("{read}{RETRY3}");
    let p = policy(
        &[
            upstream("hang", &[hang1.target(), hang2.target()], &extra),
            upstream("slowok", &[slow_ok.target()], &extra),
            upstream("slowcut", &[slow_cut.target()], &extra),
        ],
        &[
            route("hang", "/hang/*", "hang"),
            route("slowok", "/slowok/*", "slowok"),
            route("slowcut", "/slowcut/*", "slowcut"),
        ],
    );
    let gw = start(&p).await;

    let r = fetch(&gw, "/hang/x").await;
    assert_error(&r, 504, "upstream_timeout", "every try timed out");
    assert!(
        r.took() >= Duration::from_millis(900),
        "three tries of 300 ms: {}",
        r.describe()
    );
    assert!(r.took() < Duration::from_secs(5), "{}", r.describe());
    let (a, b) = (hang1.accepts(), hang2.accepts());
    assert_eq!(a + b, 3, "three tries");
    assert!(a >= 1 && b >= 1, "both targets tried: {a} + {b}");
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "hang"), 2.0, "{m}");

    // A POST that times out is not tried again.
    let r = send(client().post(gw.url("/hang/post")).body("once")).await;
    assert_error(&r, 504, "upstream_timeout", "POST timed out");
    assert_eq!(hang1.accepts() + hang2.accepts(), 4, "one more try only");
    assert_eq!(retries(&gw.metrics().await, "hang"), 2.0);

    let r = fetch(&gw, "/slowok/x").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.text, "0123456789abcdefghij");
    assert_eq!(slow_ok.accepts(), 1);

    let (answer, closed) = raw_exchange(
        gw.addr(),
        b"GET /slowcut/x HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slow_cut.accepts(), 1, "not retried: {answer:?}");
    assert_eq!(retries(&gw.metrics().await, "slowcut"), 0.0);
    assert_eq!(statuses(&answer), [200], "{answer:?}");
    assert!(
        !answer.contains("abcdefghij") && closed,
        "the body is cut after the first 10 bytes and the connection closed: {answer:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Backoff
// ---------------------------------------------------------------------------------------

/// The waits between tries stay within the backoff bound: `backoff` 200ms /
/// `max_backoff` 200ms, and `backoff` 1s capped by `max_backoff` 100ms (uncapped, the
/// waits would be up to 1 s and 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_waits_stay_within_the_bound() {
    let spaced = Recorder::failing("spaced", 503).await;
    let capped = Recorder::failing("capped", 503).await;
    let p = policy(
        &[
            upstream(
                "spaced",
                &[spaced.target()],
                "    retries: { attempts: 3, backoff: 200ms, max_backoff: 200ms }\n",
            ),
            upstream(
                "capped",
                &[capped.target()],
                "    retries: { attempts: 3, backoff: 1s, max_backoff: 100ms }\n",
            ),
        ],
        &[
            route("spaced", "/spaced/*", "spaced"),
            route("capped", "/capped/*", "capped"),
        ],
    );
    let gw = start(&p).await;
    // Processing around each wait: a new connection, the request, the 503.
    let slack = Duration::from_millis(300);
    for (name, up, bound) in [
        ("spaced", &spaced, Duration::from_millis(200)),
        ("capped", &capped, Duration::from_millis(100)),
    ] {
        for i in 0..4 {
            let r = fetch(&gw, &format!("/{name}/{i}")).await;
            assert_passed(&r, 503, &format!("{name} says 503"), name);
            let at: Vec<Instant> = up
                .seen()
                .into_iter()
                .filter(|s| s.path == format!("/{name}/{i}"))
                .map(|s| s.at)
                .collect();
            assert_eq!(at.len(), 3, "{name} {i}: three tries");
            for w in at.windows(2) {
                let gap = w[1] - w[0];
                assert!(
                    gap <= bound + slack,
                    "{name} {i}: {gap:?} between tries, bound {bound:?} (+{slack:?})"
                );
            }
            assert!(
                r.took() <= 3 * bound + 2 * slack,
                "{name} {i}: took {:?}",
                r.took()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 7. The retry budget
// ---------------------------------------------------------------------------------------

/// Under a sustained outage (one target, always 503 after 300 ms, `attempts: 3`), 100
/// requests at once make at most 100 + 10 (reserve) + 20 (a fifth of 100) + a few (the
/// floor of 3 retries in flight, reused as retries end) tries, not 300. Sequential requests
/// never run out: a few retries may always be in flight (Envoy's `min_retry_concurrency`),
/// so a quiet upstream with a dead target still retries every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_extra_tries_under_an_outage() {
    let down =
        Recorder::start(|_| Plan::status(503, "down says 503").after(Duration::from_millis(300)))
            .await;
    let p = policy(
        &[upstream("u", &[down.target()], RETRY3)],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    let c = client();
    let burst = (0..100).map(|i| {
        let c = c.clone();
        let url = gw.url(&format!("/r/{i}"));
        async move { send(c.get(url)).await }
    });
    for (i, r) in futures::future::join_all(burst).await.iter().enumerate() {
        assert_passed(r, 503, "down says 503", &format!("request {i}"));
    }
    let total = down.count("/r/");
    let m = gw.metrics().await;
    eprintln!("retry budget: 100 requests at once made {total} tries");
    assert!(
        (110..=145).contains(&total),
        "{total} tries for 100 requests at once: at least the reserve of 10, at most 100 + 10 + 20 + a few"
    );
    assert_eq!(retries(&m, "u"), (total - 100) as f64, "{m}");

    // One at a time, each request is retried in full even though the balance is spent.
    for i in 0..5 {
        let r = send(c.get(gw.url(&format!("/s/{i}")))).await;
        assert_passed(&r, 503, "down says 503", &format!("sequential {i}"));
        assert_eq!(
            down.exact(&format!("/s/{i}")),
            3,
            "sequential {i}: every try made"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. Circuit breakers
// ---------------------------------------------------------------------------------------

/// Two targets, no retries: target A fails 3 times in a row and opens (gauge 2); requests
/// then all go to B; after `open_for`, one probe reaches A: still failing, it opens again
/// (and A is skipped again); fixed, the probe closes it (gauge 0) and A takes traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_opens_its_breaker_and_is_probed_after_open_for() {
    let sw = Switch::new(503);
    let a = Recorder::switched("a", &sw).await;
    let b = Recorder::echo("b").await;
    let open_for = Duration::from_secs(2);
    let p = policy(
        &[upstream(
            "u",
            &[a.target(), b.target()],
            "    circuit_breaker: { failures: 3, open_for: 2s }\n",
        )],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    let m = gw.metrics().await;
    assert_eq!(circuit(&m, "u", &a.target()), Some(0.0), "closed: {m}");
    assert_eq!(circuit(&m, "u", &b.target()), Some(0.0), "closed: {m}");

    // Round robin: A's answers (503) reach the client until A has failed 3 times.
    let mut opened = None;
    for i in 0..20 {
        let r = fetch(&gw, "/x").await;
        if r.status == 503 {
            assert_passed(&r, 503, "a is failing", &format!("GET {i}"));
        } else {
            assert_from(&r, "b", &format!("GET {i}"));
        }
        if a.traffic() == 3 {
            opened = Some(Instant::now());
            break;
        }
    }
    let opened = opened.expect("A got 3 requests");
    expect_circuit(&gw, "u", &a.target(), 2.0, "after 3 failures").await;
    expect_circuit(&gw, "u", &b.target(), 0.0, "B is fine").await;

    // Open: A is skipped.
    for i in 0..6 {
        assert_from(&fetch(&gw, "/x").await, "b", &format!("open, GET {i}"));
    }
    assert_eq!(a.traffic(), 3, "an open target gets nothing");
    assert!(
        opened.elapsed() < open_for,
        "the machine is too slow for this test: {:?}",
        opened.elapsed()
    );

    // After open_for: one probe, still failing: open again.
    tokio::time::sleep_until((opened + open_for + Duration::from_millis(200)).into()).await;
    let mut probe = None;
    for i in 0..4 {
        let r = fetch(&gw, "/x").await;
        if a.traffic() == 4 {
            probe = Some(r);
            break;
        }
        assert_from(&r, "b", &format!("before the probe, GET {i}"));
    }
    let reopened = Instant::now();
    let probe = probe.expect("a probe reached A within 4 requests");
    assert_passed(&probe, 503, "a is failing", "the failed probe");
    expect_circuit(&gw, "u", &a.target(), 2.0, "the probe failed").await;
    for i in 0..6 {
        assert_from(&fetch(&gw, "/x").await, "b", &format!("reopened, GET {i}"));
    }
    assert_eq!(a.traffic(), 4, "one probe only");

    // A is fixed: after open_for the probe succeeds and A is back.
    sw.status.store(200, SeqCst);
    tokio::time::sleep_until((reopened + open_for + Duration::from_millis(200)).into()).await;
    let mut probe = None;
    for i in 0..4 {
        let r = fetch(&gw, "/x").await;
        if a.traffic() == 5 {
            probe = Some(r);
            break;
        }
        assert_from(&r, "b", &format!("before the second probe, GET {i}"));
    }
    let probe = probe.expect("a second probe reached A within 4 requests");
    assert_from(&probe, "a", "the successful probe");
    expect_circuit(&gw, "u", &a.target(), 0.0, "the probe succeeded").await;
    for i in 0..10 {
        assert_eq!(fetch(&gw, "/x").await.status, 200, "closed, GET {i}");
    }
    assert!(
        a.traffic() >= 5 + 3,
        "A takes its share again: {}",
        a.traffic()
    );
}

/// A single target: once open, requests are answered at once with 503
/// `upstream_unavailable` and the upstream is not contacted; after `open_for` exactly one
/// request goes through (gauge 1 while it is out; a concurrent request is refused); a
/// failed probe reopens, a good one closes. A refused target opens its breaker too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_single_target_is_refused_without_contacting_it() {
    let sw = Switch::new(503);
    let a = Recorder::switched("a", &sw).await;
    let refused = Refused::new();
    let down = refused.target();
    let mixed = Recorder::start(|s| match s.path.ends_with("/ok") {
        true => echo("mixed", s),
        false => Plan::status(503, "mixed says 503"),
    })
    .await;
    let open_for = Duration::from_millis(1500);
    let p = policy(
        &[
            upstream(
                "one",
                &[a.target()],
                "    circuit_breaker: { failures: 2, open_for: 1500ms }\n",
            ),
            upstream(
                "down",
                std::slice::from_ref(&down),
                "    circuit_breaker: { failures: 2, open_for: 30s }\n",
            ),
            upstream(
                "mixed",
                &[mixed.target()],
                "    circuit_breaker: { failures: 3, open_for: 30s }\n",
            ),
        ],
        &[
            route("one", "/one/*", "one"),
            route("down", "/down/*", "down"),
            route("mixed", "/mixed/*", "mixed"),
        ],
    );
    let gw = start(&p).await;

    // Failures must be consecutive: a success in between starts the count again.
    for (i, path) in ["bad", "bad", "ok", "bad", "bad"].iter().enumerate() {
        let r = fetch(&gw, &format!("/mixed/{path}")).await;
        assert_eq!(r.status, if *path == "ok" { 200 } else { 503 }, "{i}");
    }
    expect_circuit(
        &gw,
        "mixed",
        &mixed.target(),
        0.0,
        "2 failures since the success",
    )
    .await;
    fetch(&gw, "/mixed/bad").await;
    expect_circuit(&gw, "mixed", &mixed.target(), 2.0, "3 failures in a row").await;
    let r = fetch(&gw, "/mixed/ok").await;
    assert_error(&r, 503, "upstream_unavailable", "mixed is open");
    assert_eq!(mixed.count("/mixed/ok"), 1);

    for i in 0..2 {
        let r = fetch(&gw, "/one/x").await;
        assert_passed(&r, 503, "a is failing", &format!("failure {i}"));
    }
    let opened = Instant::now();
    expect_circuit(&gw, "one", &a.target(), 2.0, "after 2 failures").await;
    let (seen, accepted) = (a.traffic(), a.accepts());
    for i in 0..3 {
        let r = fetch(&gw, "/one/x").await;
        assert_error(&r, 503, "upstream_unavailable", &format!("open, GET {i}"));
        assert!(
            r.took() < Duration::from_millis(500),
            "answered at once: {}",
            r.describe()
        );
    }
    assert_eq!(a.traffic(), seen, "no request reached the upstream");
    assert_eq!(a.accepts(), accepted, "no connection was made");
    assert!(
        opened.elapsed() < open_for,
        "the machine is too slow for this test"
    );

    // The probe, still failing.
    tokio::time::sleep_until((opened + open_for + Duration::from_millis(200)).into()).await;
    let r = fetch(&gw, "/one/x").await;
    assert_passed(&r, 503, "a is failing", "the failed probe");
    let reopened = Instant::now();
    assert_eq!(a.traffic(), seen + 1, "one probe");
    expect_circuit(&gw, "one", &a.target(), 2.0, "the probe failed").await;
    let r = fetch(&gw, "/one/x").await;
    assert_error(&r, 503, "upstream_unavailable", "reopened");
    assert_eq!(a.traffic(), seen + 1);

    // Fixed, but slow: the probe is out for 800 ms; meanwhile the state is half-open and
    // other requests are refused.
    sw.status.store(200, SeqCst);
    sw.delay_ms.store(800, SeqCst);
    tokio::time::sleep_until((reopened + open_for + Duration::from_millis(200)).into()).await;
    let url = gw.url("/one/probe");
    let probe = tokio::spawn(async move { send(client().get(url)).await });
    assert!(
        wait_until(Duration::from_secs(3), || a.count("/one/probe") == 1).await,
        "the probe reached the upstream"
    );
    let m = gw.metrics().await;
    assert_eq!(
        circuit(&m, "one", &a.target()),
        Some(1.0),
        "half-open while the probe is out: {m}"
    );
    let r = fetch(&gw, "/one/x").await;
    assert_error(&r, 503, "upstream_unavailable", "during the probe");
    assert!(r.took() < Duration::from_millis(500), "{}", r.describe());
    let probe = probe.await.expect("probe task");
    assert_from(&probe, "a", "the successful probe");
    assert_eq!(a.traffic(), seen + 2, "exactly one probe went through");
    expect_circuit(&gw, "one", &a.target(), 0.0, "the probe succeeded").await;
    sw.delay_ms.store(0, SeqCst);
    for i in 0..3 {
        assert_from(
            &fetch(&gw, "/one/x").await,
            "a",
            &format!("closed, GET {i}"),
        );
    }

    // A refused target: 502 twice, then the breaker is open: 503 at once.
    for i in 0..2 {
        assert_error(
            &fetch(&gw, "/down/x").await,
            502,
            "bad_gateway",
            &format!("refused {i}"),
        );
    }
    expect_circuit(&gw, "down", &down, 2.0, "after 2 refusals").await;
    let r = fetch(&gw, "/down/x").await;
    assert_error(&r, 503, "upstream_unavailable", "open after refusals");
    assert!(r.took() < Duration::from_millis(500), "{}", r.describe());
}

/// A single target with retries and a breaker that opens during a request's tries
/// (`failures: 2`, `attempts: 3`): the upstream sees two tries, no third; the client gets a
/// 503 and later requests an immediate `upstream_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_that_opens_during_retries_stops_them() {
    let bad = Recorder::failing("bad", 503).await;
    let p = policy(
        &[upstream(
            "u",
            &[bad.target()],
            &format!("{RETRY3}    circuit_breaker: {{ failures: 2, open_for: 30s }}\n"),
        )],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    let r = fetch(&gw, "/x").await;
    assert_eq!(r.status, 503, "{}", r.describe());
    assert_eq!(
        bad.count("/x"),
        2,
        "the breaker opened after the second try"
    );
    expect_circuit(&gw, "u", &bad.target(), 2.0, "after 2 failures").await;
    // No target is left for a third try: the upstream's own 503 goes to the client, and
    // only the retry that reached the upstream is counted.
    assert!(
        r.json()["error"]["code"].is_null(),
        "the upstream's answer, not the gateway's: {}",
        r.describe()
    );
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "u"), 1.0, "{m}");
    let r = fetch(&gw, "/y").await;
    assert_error(&r, 503, "upstream_unavailable", "open");
    assert_eq!(bad.count("/y"), 0);
}

/// A pooled connection the upstream closes just as it is reused (it reads the second
/// request and closes without answering) is replaced by a fresh one for an idempotent
/// request — as Pingora does by default, and as aggregate calls do — with or without
/// `retries`; it is not a retry the client pays for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_is_replaced_for_idempotent_requests() {
    let plain = Raw::start(Fault::OncePerConnection).await;
    let retrying = Raw::start(Fault::OncePerConnection).await;
    let p = policy(
        &[
            upstream("plain", &[plain.target()], ""),
            upstream("retrying", &[retrying.target()], RETRY3),
        ],
        &[
            route("plain", "/plain/*", "plain"),
            route("retrying", "/retrying/*", "retrying"),
        ],
    );
    let gw = start(&p).await;
    for (name, up) in [("retrying", &retrying), ("plain", &plain)] {
        for i in 0..3 {
            let r = fetch(&gw, &format!("/{name}/{i}")).await;
            assert_eq!(
                (r.status, r.text.as_str()),
                (200, "fresh"),
                "{name} GET {i} (connections so far: {}): {}",
                up.accepts(),
                r.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(up.accepts(), 3, "{name}: a fresh connection for each reuse");
    }
}

// ---------------------------------------------------------------------------------------
// 9. Health checks
// ---------------------------------------------------------------------------------------

/// Health checks run at start and every `interval`; a target failing `unhealthy` checks
/// in a row is taken out (not before), one passing `healthy` checks in a row comes back
/// (not before); with every target out the answer is 503 `upstream_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_targets_out_and_bring_them_back() {
    let (swa, swb) = (Switch::new(200), Switch::new(200));
    let a = Recorder::switched("a", &swa).await;
    let b = Recorder::switched("b", &swb).await;
    let hourly = Recorder::switched("hourly", &Switch::new(200)).await;
    let p = policy(
        &[
            upstream(
                "u",
                &[a.target(), b.target()],
                "    health_check: { path: /healthz, interval: 200ms, healthy: 2, unhealthy: 3 }\n",
            ),
            upstream(
                "hourly",
                &[hourly.target()],
                "    health_check: { path: /healthz, interval: 1h }\n",
            ),
        ],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    assert!(
        wait_until(Duration::from_secs(2), || a.checks() >= 1
            && b.checks() >= 1
            && hourly.checks() >= 1)
        .await,
        "the first checks run at start, whatever the interval"
    );
    for i in 0..10 {
        assert_eq!(fetch(&gw, "/x").await.status, 200, "GET {i}");
    }
    assert!(
        a.traffic() >= 3 && b.traffic() >= 3,
        "both serve: {} / {}",
        a.traffic(),
        b.traffic()
    );
    let c = a.seen().into_iter().find(|s| s.path == "/healthz").unwrap();
    assert_eq!(c.method, "GET", "a check is a GET");

    // A fails its checks.
    let n0 = a.checks();
    swa.health.store(503, SeqCst);
    assert!(wait_until(Duration::from_secs(3), || a.checks() > n0).await);
    let before = a.traffic();
    for _ in 0..2 {
        assert_eq!(fetch(&gw, "/x").await.status, 200);
    }
    if a.checks() < n0 + 3 {
        assert!(
            a.traffic() > before,
            "fewer than 3 failed checks: A still takes traffic"
        );
    } else {
        eprintln!("inconclusive: 3 checks failed before two requests were served");
    }
    assert!(
        wait_until(Duration::from_secs(5), || a.checks() >= n0 + 4).await,
        "checks go on every 200 ms"
    );
    let before = a.traffic();
    for i in 0..10 {
        assert_from(&fetch(&gw, "/x").await, "b", &format!("A is out, GET {i}"));
    }
    assert_eq!(a.traffic(), before, "an unhealthy target gets no traffic");

    // A recovers.
    let n1 = a.checks();
    swa.health.store(200, SeqCst);
    assert!(wait_until(Duration::from_secs(3), || a.checks() > n1).await);
    let before = a.traffic();
    for _ in 0..2 {
        assert_from(&fetch(&gw, "/x").await, "b", "one good check is not enough");
    }
    if a.checks() < n1 + 2 {
        assert_eq!(a.traffic(), before, "one passing check: A is still out");
    } else {
        eprintln!("inconclusive: 2 checks passed before two requests were served");
    }
    assert!(wait_until(Duration::from_secs(5), || a.checks() >= n1 + 3).await);
    let before = a.traffic();
    for i in 0..10 {
        assert_eq!(fetch(&gw, "/x").await.status, 200, "A is back, GET {i}");
    }
    assert!(
        a.traffic() >= before + 3,
        "A takes traffic again: {} more",
        a.traffic() - before
    );

    // Both out: 503 upstream_unavailable, nothing reaches them.
    let (na, nb) = (a.checks(), b.checks());
    swa.health.store(503, SeqCst);
    swb.health.store(503, SeqCst);
    assert!(
        wait_until(Duration::from_secs(5), || a.checks() >= na + 4
            && b.checks() >= nb + 4)
        .await
    );
    let (ta, tb) = (a.traffic(), b.traffic());
    let r = fetch(&gw, "/x").await;
    assert_error(&r, 503, "upstream_unavailable", "every target unhealthy");
    assert_eq!((a.traffic(), b.traffic()), (ta, tb));
    assert_eq!(hourly.checks(), 1, "the next hourly check is not due");
}

// ---------------------------------------------------------------------------------------
// 10. Aggregate calls
// ---------------------------------------------------------------------------------------

/// Aggregate calls go through the same retries (idempotent calls only) and breakers: a
/// GET call answered 503 by one target is retried on the other; a 503 burst on a single
/// target is retried through; a POST call is not retried; an open breaker makes the
/// call `unavailable` without contacting the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_calls_use_retries_and_breakers() {
    let bad = Recorder::failing("bad", 503).await;
    let good = Recorder::echo("good").await;
    let burst = Recorder::start(|s| match s.n {
        0 | 1 => Plan::status(503, "burst says 503"),
        _ => echo("burst", s),
    })
    .await;
    let post = Recorder::failing("post", 503).await;
    let brk = Recorder::failing("brk", 503).await;
    let agg = |name: &str, call: &str| {
        format!(
            "  - name: {name}\n    match: {{ path: /{name} }}\n    auth: none\n    aggregate:\n      timeout: 5s\n      calls:\n        - {call}\n"
        )
    };
    let p = policy(
        &[
            upstream("pair", &[bad.target(), good.target()], RETRY3),
            upstream("burst", &[burst.target()], RETRY3),
            upstream("post", &[post.target()], RETRY3),
            upstream(
                "brk",
                &[brk.target()],
                "    circuit_breaker: { failures: 2, open_for: 30s }\n",
            ),
        ],
        &[
            agg("pair", "{ name: c, upstream: pair, path: /pair }"),
            agg("burst", "{ name: c, upstream: burst, path: /burst }"),
            agg(
                "post",
                "{ name: c, upstream: post, path: /post, method: POST }",
            ),
            agg("brk", "{ name: c, upstream: brk, path: /brk }"),
        ],
    );
    let gw = start(&p).await;

    for i in 0..4 {
        let r = fetch(&gw, "/pair").await;
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(
            r.json()["c"]["upstream"],
            "good",
            "call {i}: {}",
            r.describe()
        );
        assert!(r.header("x-gateway-partial").is_none(), "{}", r.describe());
    }
    assert_eq!(good.count("/pair"), 4);
    assert!(
        bad.count("/pair") >= 1,
        "some first tries at the bad target"
    );
    assert_eq!(
        retries(&gw.metrics().await, "pair"),
        bad.count("/pair") as f64
    );

    let r = fetch(&gw, "/burst").await;
    assert_eq!(r.json()["c"]["upstream"], "burst", "{}", r.describe());
    assert_eq!(burst.count("/burst"), 3, "503, 503, 200");
    assert_eq!(retries(&gw.metrics().await, "burst"), 2.0);

    let r = fetch(&gw, "/post").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["_errors"]["c"], "status 503", "{}", r.describe());
    assert_eq!(post.count("/post"), 1, "a POST call is not retried");
    assert_eq!(post.seen()[0].method, "POST");
    assert_eq!(retries(&gw.metrics().await, "post"), 0.0);

    for i in 0..2 {
        let r = fetch(&gw, "/brk").await;
        assert_eq!(
            r.json()["_errors"]["c"],
            "status 503",
            "failure {i}: {}",
            r.describe()
        );
    }
    expect_circuit(&gw, "brk", &brk.target(), 2.0, "after 2 failed calls").await;
    let accepted = brk.accepts();
    let r = fetch(&gw, "/brk").await;
    assert_eq!(
        r.json()["_errors"]["c"],
        "unavailable",
        "open: {}",
        r.describe()
    );
    assert_eq!(brk.count("/brk"), 2, "the open target was not called");
    assert_eq!(brk.accepts(), accepted);
}

// ---------------------------------------------------------------------------------------
// 11. Hostile clients
// ---------------------------------------------------------------------------------------

/// Content-Length together with Transfer-Encoding (both orders of disagreement) and two
/// different Content-Lengths: never two requests upstream, never the smuggled one; the
/// gateway answers 400 or closes the connection after its one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_is_not_possible() {
    let up = Recorder::echo("up").await;
    let p = policy(
        &[upstream("u", &[up.target()], "")],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let clte_body = format!("0\r\n\r\n{smuggled}");
    let cases = [
        (
            "/clte",
            format!(
                "POST /clte HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{clte_body}",
                clte_body.len()
            ),
        ),
        (
            "/tecl",
            format!(
                "POST /tecl HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "/twocl",
            format!(
                "POST /twocl HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{smuggled}",
                5 + smuggled.len()
            ),
        ),
    ];
    for (path, request) in cases {
        let (answer, closed) =
            raw_exchange(gw.addr(), request.as_bytes(), Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = statuses(&answer);
        eprintln!(
            "{path}: answers {st:?}, connection closed: {closed}, upstream saw {:?}",
            up.paths()
        );
        assert!(
            !up.paths().iter().any(|p| p.contains("smuggled")),
            "{path}: the smuggled request reached the upstream: {:?}",
            up.paths()
        );
        assert!(
            up.count(path) <= 1,
            "{path}: {} requests upstream",
            up.count(path)
        );
        assert!(st.len() <= 1, "{path}: more than one answer: {answer:?}");
        assert!(
            st == [400] || closed,
            "{path}: neither a 400 nor a closed connection: {answer:?}"
        );
        for s in up.seen().iter().filter(|s| s.path == path) {
            assert!(
                !(s.headers.contains_key("content-length")
                    && s.headers.contains_key("transfer-encoding")),
                "{path}: forwarded with both Content-Length and Transfer-Encoding"
            );
        }
    }
}

/// A 1.2 MiB header block and a request with 300 headers are refused by the gateway's own
/// limits (431 `request_header_too_large`, connection closed) and never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_blocks_are_refused() {
    let up = Recorder::echo("up").await;
    let p = policy(
        &[upstream("u", &[up.target()], "")],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;

    let mut huge = b"GET /huge HTTP/1.1\r\nHost: gw.test\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1200 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let (answer, closed) = raw_exchange(gw.addr(), &huge, Duration::from_secs(3)).await;
    let st = statuses(&answer);
    eprintln!("1.2 MiB header: answers {st:?}, closed: {closed}");
    assert!(
        st == [431] && closed,
        "refused with 431 and closed: {answer:?}"
    );
    assert!(answer.contains("request_header_too_large"), "{answer}");

    let mut many = String::from("GET /many HTTP/1.1\r\nHost: gw.test\r\n");
    for i in 0..300 {
        many.push_str(&format!("X-H-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (answer, closed) = raw_exchange(gw.addr(), many.as_bytes(), Duration::from_secs(3)).await;
    let st = statuses(&answer);
    eprintln!("300 headers: answers {st:?}, closed: {closed}");
    assert!(
        st == [431] && closed,
        "refused with 431 and closed: {answer:?}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.count("/huge"), 0);
    assert_eq!(up.count("/many"), 0);
    // The gateway still serves.
    assert_from(&fetch(&gw, "/ok").await, "up", "after the hostile requests");
}

/// 200 connections trickling a request head one header every 500 ms do not keep a normal
/// client from being served promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_other_clients() {
    let up = Recorder::echo("up").await;
    let p = policy(
        &[upstream("u", &[up.target()], "")],
        &[route("all", "/*", "u")],
    );
    let gw = start(&p).await;
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (stop, connected, alive, addr) =
            (stop.clone(), connected.clone(), alive.clone(), gw.addr());
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let head = format!("GET /slowloris/{i} HTTP/1.1\r\nHost: gw.test\r\n");
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            connected.fetch_add(1, SeqCst);
            alive.fetch_add(1, SeqCst);
            let mut n = 0;
            while !stop.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if s.write_all(format!("X-Slow-{n}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                n += 1;
            }
            alive.fetch_sub(1, SeqCst);
        }));
    }
    assert!(
        wait_until(Duration::from_secs(10), || connected.load(SeqCst) == 200).await,
        "200 slow connections: {}",
        connected.load(SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            send(client().get(gw.url(&format!("/normal/{i}")))),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} was not answered within 5 s"));
        assert_from(&r, "up", &format!("normal request {i}"));
    }
    let still = alive.load(SeqCst);
    eprintln!(
        "slowloris: {still} of 200 slow connections still open while normal clients were served"
    );
    assert!(still >= 150, "the slow connections were hanging: {still}");
    stop.store(true, SeqCst);
    for t in tasks {
        t.abort();
    }
    assert_eq!(up.count("/slowloris"), 0, "no slow request was completed");
    assert_eq!(up.count("/normal"), 3);
}

/// Head limits outside what can be enforced are refused by `gateway check`, naming the
/// file and line; the timeouts themselves are accepted.
#[test]
fn head_limits_out_of_range_are_refused_by_check() {
    let p = policy(
        &[upstream("u", &["127.0.0.1:9".to_string()], "")],
        &[route("all", "/*", "u")],
    );
    let c = ConfigDir::new(
        "limits:\n  header_timeout: 10s\n  max_header_bytes: 2MiB\n",
        &[("p.yaml", &p)],
    );
    let (ok, out) = c.check();
    assert!(!ok, "check must fail: {out}");
    let text = std::fs::read_to_string(c.gateway_yaml()).expect("read gateway.yaml");
    let line = line_of(&text, "max_header_bytes");
    let prefix = format!("{}:{line}: ", c.gateway_yaml().display());
    let msg = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no problem reported as {prefix:?}: {out}"));
    assert!(
        msg.contains("limits.max_header_bytes must be between"),
        "{msg}"
    );

    let c = ConfigDir::new(
        "limits:\n  header_timeout: 10s\n  idle_timeout: 30s\n  max_header_bytes: 16KiB\n  max_headers: 50\n",
        &[("p.yaml", &p)],
    );
    let (ok, out) = c.check();
    assert!(ok, "{out}");
}
