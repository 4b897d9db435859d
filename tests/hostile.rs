//! Hostile and broken traffic (SPEC "Hostile and broken traffic"): slowloris on new and
//! keep-alive connections, idle keep-alive, many slow clients, oversized heads, smuggling
//! shapes, invented methods in metric labels, percent-encoded paths, large validated
//! bodies, and SIGTERM with a long shutdown grace. Raw sockets where a client library would
//! refuse to send the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::reply::{assert_ok, send};
use common::{client, metric, ConfigDir, Gateway, Upstream};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Small limits so that the timing tests are quick.
const LIMITS: &str = "limits:\n  header_timeout: 1s\n  idle_timeout: 2s\n  max_header_bytes: 8KiB\n  max_headers: 20\n";
/// A request head that never ends: one more byte of `X-Slow` every `DRIP`.
const PARTIAL: &[u8] = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Slow: ";
const DRIP: Duration = Duration::from_millis(200);
const GET: &[u8] = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n";

/// Upstream `up` at `target` behind route `v1` (`/v1/*`, prefix stripped), then `routes`.
fn policy(target: &str, routes: &str) -> String {
    format!(
        "upstreams:\n  up:\n    targets: [\"{target}\"]\nroutes:\n  - name: v1\n    match: {{ path: /v1/* }}\n    auth: none\n    upstream: up\n    rewrite: {{ strip_prefix: /v1 }}\n{routes}"
    )
}

async fn start(up: &Upstream, extra: &str, routes: &str) -> Gateway {
    Gateway::start(extra, &[("p.yaml", &policy(&up.target(), routes))]).await
}

fn hits(up: &Upstream) -> usize {
    up.hits.load(Ordering::SeqCst)
}

/// One HTTP/1.1 response read off a raw connection.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> Value {
        self.json()["error"]["code"].clone()
    }

    fn describe(&self) -> String {
        format!(
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Reads one response: head, then a body framed by Content-Length, chunked, or the close.
async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = common::raw_status(&line);
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        match line.trim_end().split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string())),
            None => break,
        }
    }
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line).await? <= 2 {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..]).await?;
            r.read_line(&mut line).await?;
        }
    } else if let Some(len) = find("content-length") {
        body.resize(len.parse().map_err(std::io::Error::other)?, 0);
        r.read_exact(&mut body).await?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body).await?;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

async fn response<R: AsyncBufRead + Unpin>(r: &mut R) -> Resp {
    tokio::time::timeout(Duration::from_secs(5), read_response(r))
        .await
        .expect("no response within 5 s")
        .expect("a complete HTTP response")
}

/// How long until the peer closes `r` (EOF or error), dropping whatever it sends first;
/// None if it is still open after `limit`.
async fn closed_within<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + limit);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `req` on a new connection, reading while it writes (an early answer is not lost
/// to a blocked write), reads one response, then whether the gateway closes within 2 s.
async fn exchange(addr: SocketAddr, req: &[u8]) -> (Resp, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (rd, mut wr) = s.split();
    let mut rd = BufReader::new(rd);
    let write = async {
        let _ = tokio::time::timeout(Duration::from_secs(5), wr.write_all(req)).await;
    };
    let (_, resp) = tokio::join!(write, response(&mut rd));
    let closed = closed_within(&mut rd, Duration::from_secs(2))
        .await
        .is_some();
    (resp, closed)
}

/// Writes `head`, then one more header byte every `DRIP` until the gateway closes the
/// connection: how long after `since` that was; None if still open after `limit`.
async fn slowloris(
    mut s: TcpStream,
    head: &[u8],
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let (mut rd, mut wr) = s.split();
    if wr.write_all(head).await.is_err() {
        return Some(since.elapsed());
    }
    let deadline = tokio::time::Instant::from_std(since + limit);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + DRIP, DRIP);
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) {
                return Some(since.elapsed());
            },
            _ = tick.tick() => if wr.write_all(b"a").await.is_err() {
                return Some(since.elapsed());
            },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

fn assert_cut_off(took: Option<Duration>, what: &str) {
    let took = took.unwrap_or_else(|| panic!("{what}: still open after the test's limit"));
    assert!(
        took >= Duration::from_millis(800),
        "{what}: closed after {took:?}, before header_timeout (1s)"
    );
    assert!(
        took < Duration::from_secs(3),
        "{what}: closed only after {took:?}; header_timeout is 1s"
    );
}

#[tokio::test]
async fn slowloris_first_request_is_cut_off_after_header_timeout() {
    let up = Upstream::start("u").await;
    let gw = start(&up, LIMITS, "").await;
    let since = Instant::now();
    let s = TcpStream::connect(gw.addr()).await.expect("connect");
    let took = slowloris(s, PARTIAL, since, Duration::from_secs(6)).await;
    assert_cut_off(took, "trickled first request");
    assert_eq!(hits(&up), 0, "a partial head reached the upstream");
}

#[tokio::test]
async fn slowloris_and_idle_on_keep_alive_connections() {
    let up = Upstream::start("u").await;
    let gw = start(&up, LIMITS, "").await;

    // A full request and response, then a second request trickled on the same connection.
    let mut c = BufReader::new(TcpStream::connect(gw.addr()).await.expect("connect"));
    c.get_mut().write_all(GET).await.unwrap();
    let r = response(&mut c).await;
    assert_eq!(r.status, 200, "first request: {}", r.describe());
    let since = Instant::now();
    let took = slowloris(c.into_inner(), PARTIAL, since, Duration::from_secs(6)).await;
    assert_cut_off(took, "trickled second request on a keep-alive connection");
    assert_eq!(hits(&up), 1, "only the first request reaches the upstream");

    // A keep-alive connection that sends nothing more is closed by idle_timeout (2s).
    let mut c = BufReader::new(TcpStream::connect(gw.addr()).await.expect("connect"));
    c.get_mut().write_all(GET).await.unwrap();
    let r = response(&mut c).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let idle = closed_within(&mut c, Duration::from_secs(6))
        .await
        .expect("idle keep-alive connection still open after 6 s; idle_timeout is 2s");
    assert!(
        idle > Duration::from_millis(1500) && idle < Duration::from_millis(3500),
        "idle keep-alive connection closed after {idle:?}; idle_timeout is 2s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_slow_clients_do_not_delay_others() {
    const SLOW: usize = 200;
    let up = Upstream::start("u").await;
    let gw = start(&up, LIMITS, "").await;
    let addr = gw.addr();
    let (connected, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let (connected, closed) = (connected.clone(), closed.clone());
            tokio::spawn(async move {
                let since = Instant::now();
                let s = TcpStream::connect(addr).await.expect("connect");
                connected.fetch_add(1, Ordering::SeqCst);
                let took = slowloris(s, PARTIAL, since, Duration::from_secs(8)).await;
                closed.fetch_add(1, Ordering::SeqCst);
                took
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while connected.load(Ordering::SeqCst) < SLOW && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        connected.load(Ordering::SeqCst),
        SLOW,
        "slow clients connected"
    );

    // A new connection per request: accepting is not starved either.
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..20 {
        let r = send(c.get(gw.url("/v1/echo"))).await;
        assert_ok(&r, &format!("normal request {i}"));
        assert!(
            r.took() < Duration::from_secs(1),
            "normal request {i} took {:?} beside {SLOW} slow clients",
            r.took()
        );
    }
    let still_open = SLOW - closed.load(Ordering::SeqCst);
    assert!(
        still_open >= SLOW * 3 / 4,
        "only {still_open} slow clients were open while the normal requests ran"
    );
    for (i, t) in futures::future::join_all(slow)
        .await
        .into_iter()
        .enumerate()
    {
        let took = t.unwrap();
        assert!(
            took.is_some_and(|d| d < Duration::from_secs(3)),
            "slow client {i}: closed after {took:?} (None: still open at 8 s); header_timeout is 1s"
        );
    }
    assert_eq!(hits(&up), 20, "only the normal requests reach the upstream");
}

#[tokio::test]
async fn oversized_heads_get_431_and_the_connection_closed() {
    let up = Upstream::start("u").await;
    let gw = start(&up, LIMITS, "").await;
    let big = format!(
        "GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(128 << 10)
    );
    let fields: String = (0..29).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let many = format!("GET /v1/echo HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
    for (what, req) in [("a 128 KiB header value", big), ("30 header fields", many)] {
        let (r, closed) = exchange(gw.addr(), req.as_bytes()).await;
        assert_eq!(r.status, 431, "{what}: {}", r.describe());
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        assert_eq!(
            r.code(),
            "request_header_too_large",
            "{what}: {}",
            r.describe()
        );
        assert!(closed, "{what}: connection still open 2 s after the 431");
    }
    assert_eq!(hits(&up), 0, "an oversized head reached the upstream");

    // Just under both limits: 19 fields, about 6 KiB.
    let pad = "b".repeat(350);
    let fields: String = (0..17).map(|i| format!("X-Pad-{i}: {pad}\r\n")).collect();
    let req = format!("GET /v1/echo HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n");
    assert!(req.len() > 6000 && req.len() < 7000, "{}", req.len());
    let (r, _) = exchange(gw.addr(), req.as_bytes()).await;
    assert_eq!(r.status, 200, "a head under the limits: {}", r.describe());
    assert_eq!(r.json()["headers"]["x-pad-16"], pad.as_str());
}

#[tokio::test]
async fn smuggling_shapes_get_400_and_nothing_is_forwarded() {
    let up = Upstream::start("u").await;
    let gw = start(&up, "", "").await;
    let cases: [(&str, &[u8], bool); 3] = [
        (
            "Content-Length and Transfer-Encoding",
            b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
        (
            "two Content-Length values",
            b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            true,
        ),
        (
            "a method that is not a token",
            b"GE(T /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n",
            false,
        ),
    ];
    for (what, req, must_close) in cases {
        let (r, closed) = exchange(gw.addr(), req).await;
        assert_eq!(r.status, 400, "{what}: {}", r.describe());
        assert_eq!(r.code(), "bad_request", "{what}: {}", r.describe());
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        assert!(closed || !must_close, "{what}: connection left open");
    }
    assert_eq!(hits(&up), 0, "an ambiguous request reached the upstream");

    // The route itself works: a well-formed POST is forwarded.
    let ok =
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (r, _) = exchange(gw.addr(), ok).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["body_len"], 5);
    assert_eq!(hits(&up), 1);
}

#[tokio::test]
async fn invented_methods_are_routed_but_labelled_other() {
    let up = Upstream::start("u").await;
    let gw = start(&up, "", "").await;
    let c = client();
    for i in 1..=50 {
        let name = format!("FOO{i}");
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let r = send(c.request(method, gw.url("/v1/echo"))).await;
        assert_ok(&r, &name);
        assert_eq!(r.json()["method"], name.as_str());
    }
    let other = |m: &str| {
        metric(
            m,
            "gateway_requests_total",
            &[("route", "v1"), ("method", "other")],
        )
    };
    let m = gw.metrics_when(|m| other(m) >= 50.0).await;
    assert!(other(&m) >= 50.0, "method=\"other\" under 50:\n{m}");
    let leaked: Vec<&str> = m.lines().filter(|l| l.contains("FOO")).collect();
    assert!(
        leaked.is_empty(),
        "client-chosen text in /metrics: {leaked:#?}"
    );
}

#[tokio::test]
async fn encoded_paths_reach_the_upstream_as_matched() {
    let up = Upstream::start("u").await;
    let users = "  - name: users\n    match: { path: \"/v2/users/{id}\" }\n    auth: none\n    upstream: up\n    rewrite: { path: \"/users/{path.id}\" }\n";
    let gw = start(&up, "", users).await;
    for (sent, want) in [
        ("/v1/echo/x", "/echo/x"),
        ("/%76%31/echo/x", "/echo/x"),
        ("/v1/ech%6F/x", "/echo/x"),
        ("/v2/users/7", "/users/7"),
        ("/%76%32/users/7", "/users/7"),
        ("/v2/users/a%2Fb", "/users/a%2Fb"),
    ] {
        let req = format!("GET {sent} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (r, _) = exchange(gw.addr(), req.as_bytes()).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.describe());
        assert_eq!(r.json()["path"], want, "{sent}: {}", r.describe());
    }
}

/// `{"items": ["aaa…", …, TAIL]}`, about `bytes` long.
fn items_body(bytes: usize, tail: &str) -> Vec<u8> {
    let item = format!("\"{}\",", "a".repeat(1022));
    let mut s = String::from("{\"items\":[");
    s.push_str(&item.repeat(bytes / item.len()));
    s.push_str(tail);
    s.push_str("]}");
    s.into_bytes()
}

#[tokio::test]
async fn large_bodies_are_validated_up_to_the_route_max_body() {
    let up = Upstream::start("u").await;
    let upload = "  - name: upload\n    match: { path: /upload }\n    auth: none\n    upstream: up\n    request:\n      max_body: 3MiB\n      schema: { type: object, required: [items], properties: { items: { type: array, items: { type: string } } } }\n";
    let gw = start(&up, "", upload).await;
    let (ok, text) = gw.config.check();
    assert!(ok, "gateway check refuses the configuration: {text}");
    let post = |body: Vec<u8>| {
        send(
            client()
                .post(gw.url("/upload"))
                .header("content-type", "application/json")
                .body(body),
        )
    };

    let valid = items_body(2 << 20, "\"end\"");
    let r = post(valid.clone()).await;
    assert_ok(&r, "valid 2 MiB body");
    assert_eq!(r.json()["body_len"], valid.len());
    assert_eq!(
        r.json()["body_sha256"],
        hex::encode(Sha256::digest(&valid)),
        "the upstream received other bytes"
    );

    let r = post(items_body(2 << 20, "42")).await;
    assert_eq!(r.status, 400, "invalid 2 MiB body: {}", r.describe());
    assert_eq!(r.code(), "invalid_request", "{}", r.describe());

    let r = post(items_body(4 << 20, "\"end\"")).await;
    assert_eq!(r.status, 413, "4 MiB body: {}", r.describe());
    assert_eq!(r.code(), "body_too_large", "{}", r.describe());
    assert_eq!(hits(&up), 1, "only the valid body reaches the upstream");
}

/// A configuration like the harness's, with `shutdown_grace: 10s`.
fn long_grace(up: &Upstream) -> ConfigDir {
    let c = ConfigDir::new("", &[("p.yaml", &policy(&up.target(), ""))]);
    let text = std::fs::read_to_string(c.gateway_yaml()).unwrap();
    let changed = text.replace("shutdown_grace: 1s", "shutdown_grace: 10s");
    assert_ne!(text, changed, "harness gateway.yaml changed shape");
    std::fs::write(c.gateway_yaml(), changed).unwrap();
    c
}

fn sigterm(gw: &Gateway) -> Instant {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
    Instant::now()
}

/// Whether a new connection is refused, or closed without an answer within 700 ms.
async fn refused_or_closed(addr: SocketAddr) -> Result<(), String> {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return Ok(());
    };
    let _ = s.write_all(GET).await;
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_millis(700), s.read_to_end(&mut buf)).await {
        Err(_) => Err("accepted and held open".into()),
        Ok(_) if buf.is_empty() => Ok(()),
        Ok(_) => Err(format!("answered: {}", String::from_utf8_lossy(&buf))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_gateway_does_not_wait_for_the_grace() {
    let up = Upstream::start("u").await;
    let mut gw = Gateway::start_in(long_grace(&up), &[]).await;
    // A client's keep-alive connection, idle after one answer: no request in flight.
    let mut c = BufReader::new(TcpStream::connect(gw.addr()).await.expect("connect"));
    c.get_mut().write_all(GET).await.unwrap();
    assert_eq!(response(&mut c).await.status, 200);
    let t0 = sigterm(&gw);
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(12)));
    let took = t0.elapsed();
    assert!(exit.is_some(), "still running 12 s after SIGTERM");
    assert!(
        took < Duration::from_millis(2500),
        "an idle gateway took {took:?} to exit (shutdown_grace 10s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_then_exits() {
    let up = Upstream::start("u").await;
    let mut gw = Gateway::start_in(long_grace(&up), &[]).await;
    let url = gw.url("/v1/slow?ms=1500");
    let inflight = tokio::spawn(async move { send(client().get(url)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = sigterm(&gw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = refused_or_closed(gw.addr()).await;

    let r = inflight.await.unwrap();
    let answered = Instant::now();
    assert_eq!(r.status, 200, "the request in flight: {}", r.describe());
    assert_eq!(r.text, "slow done");
    assert_eq!(fresh, Ok(()), "a new connection during the drain");
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(12)));
    assert!(exit.is_some(), "still running 12 s after SIGTERM");
    let after = answered.elapsed();
    assert!(
        after < Duration::from_millis(2500),
        "exited {after:?} after the last answer ({:?} after SIGTERM; shutdown_grace 10s)",
        t0.elapsed()
    );
}
