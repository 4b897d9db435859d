//! What the traffic-control and transform tests (tests/traffic.rs, tests/transform.rs)
//! share: a recording upstream that keeps every request it received (method, path, query,
//! headers, body) and answers as the test's plan says, a port that refuses connections,
//! API-key hashes, and requests read in full. Included with `#[path =
//! "common/traffic_upstream.rs"] mod traffic_upstream;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::reply::{send, Reply};
use crate::common::Gateway;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request an upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>"))
    }
}

/// How an upstream answers one request.
#[derive(Clone, Debug)]
pub struct Plan {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Plan {
    /// A 200 with `body` as `application/json`, exactly these bytes.
    pub fn json_text(status: u16, body: &str) -> Plan {
        Plan {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(v: &Value) -> Plan {
        Plan::json_text(200, &v.to_string())
    }

    /// `status` with a `text/plain` body.
    pub fn text(status: u16, body: &str) -> Plan {
        Plan {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Plan {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Plan {
        self.delay = delay;
        self
    }
}

/// The default answer: JSON naming the upstream and saying what it received:
/// `{"upstream", "method", "path", "query", "headers": {lower-case name: value},
/// "body": text, "got": the body parsed as JSON (null when it is not), "len": body bytes,
/// "content_length": the Content-Length header (null without one)}`.
pub fn echo(name: &str, s: &Seen) -> Plan {
    let headers: serde_json::Map<String, Value> = s
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    Plan::json(&json!({
        "upstream": name,
        "method": s.method,
        "path": s.path,
        "query": s.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&s.body),
        "got": serde_json::from_slice::<Value>(&s.body).unwrap_or(Value::Null),
        "len": s.body.len(),
        "content_length": s.header("content-length"),
    }))
}

type PlanFn = Arc<dyn Fn(&Seen) -> Plan + Send + Sync>;

/// A running recording upstream; aborted on drop.
pub struct Recorder {
    pub name: &'static str,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// An upstream answering every request with `plan` (the request is recorded when it
    /// arrives, before any delay).
    pub async fn start(
        name: &'static str,
        plan: impl Fn(&Seen) -> Plan + Send + Sync + 'static,
    ) -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
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
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            name,
            addr,
            seen,
            task,
        }
    }

    /// An upstream that answers `echo(name, ..)`.
    pub async fn echo(name: &'static str) -> Recorder {
        Recorder::start(name, move |s| echo(name, s)).await
    }

    /// An upstream that records each request, then holds its answer for `delay`.
    pub async fn hanging(name: &'static str, delay: Duration) -> Recorder {
        Recorder::start(name, move |s| echo(name, s).after(delay)).await
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits (at most `limit`) until this upstream has seen at least `n` requests; returns
    /// how many it has seen.
    pub async fn wait_count(&self, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count()
    }
}

async fn handle(req: Request, seen: Arc<Mutex<Vec<Seen>>>, plan: PlanFn) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let s = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body: body.to_vec(),
    };
    let p = plan(&s);
    seen.lock().unwrap().push(s);
    if !p.delay.is_zero() {
        tokio::time::sleep(p.delay).await;
    }
    let mut r = Response::builder().status(p.status);
    for (k, v) in &p.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    r.body(Body::from(p.body)).expect("response")
}

/// A loopback port with a bound socket that never listens: connections are refused.
pub struct Refused(tokio::net::TcpSocket);

impl Refused {
    pub fn new() -> Refused {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        Refused(s)
    }

    pub fn target(&self) -> String {
        self.0.local_addr().expect("addr").to_string()
    }
}

/// `sha256:<hex>` of an API key, as configuration holds it.
pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A client that follows no redirect and decodes nothing.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// `method` `path` on the gateway with `headers` and `body` (none when empty), read in full.
pub async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.body(body.to_string());
    }
    send(req).await
}

pub async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(gw, "GET", path, headers, "").await
}

/// Status, headers and body of an answer, for failure messages.
pub fn show(r: &Reply) -> String {
    let body: String = r.text.chars().take(600).collect();
    format!(
        "{} {:?} [{} bytes] {body}",
        r.status,
        r.headers,
        r.text.len()
    )
}

/// Asserts a gateway error answer of `status` with JSON `error.code` `code`.
#[track_caller]
pub fn assert_error(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", show(r));
    assert_eq!(r.code(), code, "{what}: {}", show(r));
}

/// Asserts a 200 from the echo of upstream `name`; returns the echo.
#[track_caller]
pub fn echoed_by(r: &Reply, name: &str, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", show(r));
    let v = r.json();
    assert_eq!(v["upstream"], name, "{what}: {}", show(r));
    v
}

/// Checks the configuration and asserts that it failed with a problem printed as
/// `file:line: message` on one of `lines` of policy file `file` whose message contains
/// every one of `parts`; returns the message.
#[track_caller]
pub fn assert_problem_on(
    config: &crate::common::ConfigDir,
    file: &str,
    lines: &[usize],
    parts: &[&str],
) -> String {
    let (ok, out) = config.check();
    assert!(!ok, "check should have failed; output:\n{out}");
    let path = config.path().join("policies").join(file);
    let prefixes: Vec<String> = lines
        .iter()
        .map(|line| format!("{}:{line}: ", path.display()))
        .collect();
    out.lines()
        .filter_map(|l| prefixes.iter().find_map(|p| l.strip_prefix(p.as_str())))
        .find(|msg| parts.iter().all(|p| msg.contains(p)))
        .unwrap_or_else(|| {
            panic!("no problem at {file} lines {lines:?} mentioning {parts:?}; output:\n{out}")
        })
        .to_string()
}

/// Asserts that `gateway check` accepts the configuration.
#[track_caller]
pub fn assert_check_ok(config: &crate::common::ConfigDir) {
    let (ok, out) = config.check();
    assert!(ok, "check should have passed; output:\n{out}");
}
