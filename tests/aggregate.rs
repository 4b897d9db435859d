//! Backend-for-frontend (`aggregate`) routes end to end through the real `gateway` binary:
//! calls made concurrently, templates and the headers every call carries, `merge: nest`
//! and `merge: root`, optional and required failures (`_errors`, `X-Gateway-Partial`,
//! 502), per-call timeouts and the route's deadline, `depends_on`, the
//! `gateway_aggregate_calls_total` metric, checks made before any call, and the
//! configuration errors of `gateway check`.
//!
//! The upstreams are purpose-built recorders started by each test: they record every
//! request (arrival instant, method, path and query as received, headers, body) and answer
//! as the test's plan says (after a delay, with a status, a JSON or non-JSON body).

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use common::{client, free_port, line_of, metric, ConfigDir, Gateway};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Recording upstreams
// ---------------------------------------------------------------------------------------

/// One request an upstream received.
#[derive(Clone, Debug)]
struct Seen {
    /// When the handler got the request (its headers).
    at: Instant,
    method: String,
    /// Path and query exactly as received (still percent-encoded).
    uri: String,
    path: String,
    query: Option<String>,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>"))
    }

    /// The value of query parameter `name` (decoded).
    fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// How an upstream answers one request.
#[derive(Clone)]
struct Plan {
    delay: Duration,
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// After the delay, also wait (at most `GATE_CAP`) until this many requests have
    /// arrived at the gate's upstreams.
    gate: Option<Arc<Gate>>,
}

/// Requests counted across several upstreams.
struct Gate {
    arrived: std::sync::atomic::AtomicUsize,
    need: usize,
}

/// The longest a gated answer waits for the others.
const GATE_CAP: Duration = Duration::from_secs(5);

impl Plan {
    fn json(v: Value) -> Plan {
        Plan {
            delay: Duration::ZERO,
            status: 200,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            gate: None,
        }
    }

    /// An answer with `status` and a plain-text body.
    fn status(status: u16, text: &str) -> Plan {
        Plan {
            delay: Duration::ZERO,
            status,
            content_type: "text/plain",
            body: text.as_bytes().to_vec(),
            gate: None,
        }
    }

    /// A 200 with a body that is not JSON.
    fn text(text: &str) -> Plan {
        Plan::status(200, text)
    }

    /// A 200 with an empty body.
    fn empty() -> Plan {
        Plan {
            delay: Duration::ZERO,
            status: 200,
            content_type: "application/json",
            body: Vec::new(),
            gate: None,
        }
    }

    fn after(mut self, delay: Duration) -> Plan {
        self.delay = delay;
        self
    }

    /// Counts this request at `gate` and, after the delay, waits for the others.
    fn gated(mut self, gate: &Arc<Gate>) -> Plan {
        gate.arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.gate = Some(gate.clone());
        self
    }
}

/// The JSON an upstream answers by default: what it saw.
fn echo(name: &str, s: &Seen) -> Plan {
    Plan::json(json!({
        "upstream": name,
        "method": s.method,
        "path": s.path,
        "query": s.query,
    }))
}

type PlanFn = Arc<dyn Fn(&Seen) -> Plan + Send + Sync>;

/// A running recording upstream; aborted on drop.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// When each answer was sent (after its delay), in the order answers were sent.
    answered: Arc<Mutex<Vec<Instant>>>,
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
        let answered: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
        let plan: PlanFn = Arc::new(plan);
        let (s, a) = (seen.clone(), answered.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (s, a, plan) = (s.clone(), a.clone(), plan.clone());
            async move { handle(req, s, a, plan).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            addr,
            seen,
            answered,
            task,
        }
    }

    /// An upstream that answers every request with `echo(name, ..)`.
    async fn echo(name: &'static str) -> Recorder {
        Recorder::start(move |s| echo(name, s)).await
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The only request whose path starts with `prefix`.
    fn one(&self, prefix: &str) -> Seen {
        let hits: Vec<Seen> = self
            .seen()
            .into_iter()
            .filter(|s| s.path.starts_with(prefix))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "exactly one request to {prefix} expected; seen: {:#?}",
            self.seen()
                .iter()
                .map(|s| format!("{} {}", s.method, s.uri))
                .collect::<Vec<_>>()
        );
        hits.into_iter().next().unwrap()
    }
}

async fn handle(
    req: Request,
    seen: Arc<Mutex<Vec<Seen>>>,
    answered: Arc<Mutex<Vec<Instant>>>,
    plan: PlanFn,
) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let s = Seen {
        at,
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_default(),
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
    if let Some(gate) = &p.gate {
        let cap = Instant::now() + GATE_CAP;
        while gate.arrived.load(std::sync::atomic::Ordering::SeqCst) < gate.need
            && Instant::now() < cap
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    answered.lock().unwrap().push(Instant::now());
    Response::builder()
        .status(p.status)
        .header("content-type", p.content_type)
        .body(Body::from(p.body))
        .expect("response")
}

/// A server that accepts connections, reads the request and closes without answering.
struct Resetter {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resetter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resetter {
    async fn start() -> Resetter {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    drop(sock);
                });
            }
        });
        Resetter { addr, task }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration, tokens, requests
// ---------------------------------------------------------------------------------------

const ISS: &str = "https://issuer.aggregate.test/";
const AUD: &str = "bff";
const SECRET_ENV: &str = "AGG_TEST_SECRET";
const SECRET: &str = "test-only-aggregate-secret-0123456789abcdef";

/// `upstreams:` with one target each.
fn upstreams(list: &[(&str, String)]) -> String {
    let mut s = String::from("upstreams:\n");
    for (name, target) in list {
        s.push_str(&format!("  {name}:\n    targets: [\"{target}\"]\n"));
    }
    s
}

/// Provider `corp` (HS256, consumer from `azp`, `tenant` forwarded as X-Tenant-Id).
fn provider() -> String {
    format!(
        "jwt_providers:\n  corp:\n    issuer: \"{ISS}\"\n    audiences: [{AUD}]\n    algorithms: [HS256]\n    keys:\n      - {{ kid: k1, alg: HS256, secret_env: {SECRET_ENV} }}\n    consumer_claim: azp\n    forward_claims: {{ tenant: X-Tenant-Id }}\n"
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A token `corp` accepts, with `extra` claims added.
fn token(extra: Value) -> String {
    let mut claims = json!({ "iss": ISS, "aud": AUD, "iat": now(), "exp": now() + 3600 });
    for (k, v) in extra.as_object().expect("object") {
        claims[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign token")
}

async fn start(policy: &str) -> Gateway {
    let config = ConfigDir::new("", &[("p.yaml", policy)]);
    Gateway::start_in(config, &[(SECRET_ENV, SECRET)]).await
}

/// An answer read in full.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    sent: Instant,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.describe()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>"))
    }

    fn describe(&self) -> String {
        format!("{} {:?} {}", self.status, self.headers, self.text)
    }

    /// Asserts a 200 JSON answer; returns the body.
    fn ok(&self, partial: bool) -> Value {
        assert_eq!(self.status, 200, "{}", self.describe());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.describe()
        );
        assert!(
            self.header("x-request-id").is_some_and(|v| !v.is_empty()),
            "{}",
            self.describe()
        );
        let body = self.json();
        if partial {
            assert_eq!(
                self.header("x-gateway-partial"),
                Some("true"),
                "{}",
                self.describe()
            );
            assert!(body["_errors"].is_object(), "{}", self.describe());
        } else {
            assert_eq!(
                self.header("x-gateway-partial"),
                None,
                "{}",
                self.describe()
            );
            assert!(body.get("_errors").is_none(), "{}", self.describe());
        }
        body
    }

    /// Asserts a 502 `bad_gateway` with exactly `message`.
    fn bad_gateway(&self, message: &str) {
        assert_eq!(self.status, 502, "{}", self.describe());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.describe()
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], "bad_gateway", "{}", self.describe());
        assert_eq!(body["error"]["status"], 502, "{}", self.describe());
        assert_eq!(body["error"]["message"], message, "{}", self.describe());
        assert_eq!(
            self.header("x-gateway-partial"),
            None,
            "{}",
            self.describe()
        );
        let rid = self.header("x-request-id").expect("x-request-id");
        assert_eq!(body["error"]["request_id"], rid, "{}", self.describe());
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let sent = Instant::now();
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    Answer {
        status,
        headers,
        text,
        sent,
    }
}

/// The metrics text once `ready` holds of it (or after 5 s, for the assertions to show).
async fn get(gw: &Gateway, path: &str) -> Answer {
    send(client().get(gw.url(path))).await
}

// ---------------------------------------------------------------------------------------
// 1. Concurrency
// ---------------------------------------------------------------------------------------

/// Three calls to upstreams that each wait 200 ms before answering arrive before any of
/// them answered. (To keep scheduling noise on a loaded machine from breaking the test,
/// each upstream also holds its answer until the other two requests have arrived, for at
/// most 5 s: calls made one after another would still show an answer before an arrival.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_concurrently() {
    let wait = Duration::from_millis(200);
    let mut gates: Vec<Arc<Gate>> = Vec::new();
    for _ in 0..2 {
        gates.push(Arc::new(Gate {
            arrived: Default::default(),
            need: 3,
        }));
    }
    let gates = Arc::new(gates);
    let gated = |name: &'static str| {
        let gates = gates.clone();
        move |s: &Seen| {
            let round: usize = s
                .query_param("round")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            echo(name, s).after(wait).gated(&gates[round])
        }
    };
    let a = Recorder::start(gated("a")).await;
    let b = Recorder::start(gated("b")).await;
    let c = Recorder::start(gated("c")).await;
    let policy = format!(
        "{}routes:
  - name: fan
    match: {{ path: /fan, methods: [GET] }}
    auth: none
    aggregate:
      timeout: 20s
      calls:
        - {{ name: a, upstream: a, path: \"/a?round={{query.round}}\" }}
        - {{ name: b, upstream: b, path: \"/b?round={{query.round}}\", required: true }}
        - {{ name: c, upstream: c, path: \"/c?round={{query.round}}\" }}
",
        upstreams(&[("a", a.target()), ("b", b.target()), ("c", c.target())])
    );
    let gw = start(&policy).await;
    // Twice: the first request opens connections, the second may reuse them.
    for round in 0..2 {
        let r = get(&gw, &format!("/fan?round={round}")).await;
        let body = r.ok(false);
        assert_eq!(body["a"]["path"], "/a");
        assert_eq!(body["b"]["path"], "/b");
        assert_eq!(body["c"]["path"], "/c");
        let ups = [&a, &b, &c];
        let arrivals: Vec<Instant> = ups.iter().map(|u| u.seen()[round].at).collect();
        let answers: Vec<Instant> = ups
            .iter()
            .map(|u| u.answered.lock().unwrap()[round])
            .collect();
        let last_arrival = *arrivals.iter().max().unwrap();
        let first_answer = *answers.iter().min().unwrap();
        let first_arrival = *arrivals.iter().min().unwrap();
        assert!(
            last_arrival < first_answer,
            "round {round}: a call arrived {:?} after the first arrival, after an answer \
             ({:?} after the first arrival): the calls did not overlap",
            last_arrival - first_arrival,
            first_answer - first_arrival,
        );
        assert!(first_arrival >= r.sent, "round {round}");
        assert!(first_answer >= first_arrival + wait, "round {round}");
    }
    assert_eq!((a.count(), b.count(), c.count()), (2, 2, 2));
}

// ---------------------------------------------------------------------------------------
// 2. Templates and headers
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_encoded_and_calls_carry_the_gateway_headers() {
    let up = Recorder::echo("up").await;
    let policy = format!(
        "{}{}routes:
  - name: tpl
    match: {{ path: \"/tpl/{{id}}\", methods: [POST] }}
    auth: [jwt:corp]
    request:
      headers: {{ set: {{ X-Gateway: bff }}, remove: [X-Forwarded-Host] }}
    aggregate:
      timeout: 5s
      calls:
        - {{ name: get, upstream: up, path: \"/p/{{path.id}}/{{header.x-thing}}/{{claims.sub}}?q={{query.q}}&s={{claims.sub}}&c={{consumer.id}}&h={{header.x-thing}}&m={{query.missing}}\" }}
        - {{ name: create, upstream: up, path: \"/orders/{{consumer.id}}\", method: POST, body: forward, required: true }}
        - {{ name: plain, upstream: up, path: /plain, method: POST }}
",
        upstreams(&[("up", up.target())]),
        provider()
    );
    let gw = start(&policy).await;
    let tok = token(json!({ "sub": "u&1 é/x", "azp": "app:one", "tenant": "t-42" }));
    let body: &[u8] = b"{\"k\":  \"v w\",\n \"n\": [1, 2.50]}  ";
    let content_type = "application/vnd.test+json; charset=utf-8";
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = send(
        client()
            .post(gw.url("/tpl/a%2Fb%20c"))
            .query(&[("q", "x y&z=w+v")])
            .bearer_auth(&tok)
            .header("cookie", "session=cookie-secret")
            .header("x-thing", "h v?#")
            .header("traceparent", traceparent)
            .header("accept", "text/html")
            .header("x-consumer-id", "spoofed")
            .header("x-tenant-id", "spoofed")
            .header("content-type", content_type)
            .body(body.to_vec()),
    )
    .await;
    let answer = r.ok(false);
    let rid = r.header("x-request-id").expect("x-request-id").to_string();

    let g = up.one("/p/");
    assert_eq!(
        g.uri,
        "/p/a%2Fb%20c/h%20v%3F%23/u&1%20%C3%A9%2Fx?q=x%20y%26z%3Dw%2Bv&s=u%261%20%C3%A9%2Fx&c=app:one&h=h%20v%3F%23&m=",
        "path segments and query components are percent-encoded where they land"
    );
    assert_eq!(g.query_param("q").as_deref(), Some("x y&z=w+v"));
    assert_eq!(g.query_param("s").as_deref(), Some("u&1 é/x"));
    assert_eq!(g.method, "GET");
    assert!(g.body.is_empty(), "a GET call sends no body");
    assert_eq!(answer["get"]["path"], g.path);

    let c = up.one("/orders/");
    assert_eq!(c.uri, "/orders/app:one");
    assert_eq!(c.method, "POST");
    assert_eq!(
        c.body, body,
        "body: forward sends the client's body exactly"
    );
    assert_eq!(c.header("content-type"), Some(content_type));
    assert_eq!(answer["create"]["method"], "POST");

    let p = up.one("/plain");
    assert_eq!(p.method, "POST");
    assert!(
        p.body.is_empty(),
        "a call without body: forward sends no body"
    );
    assert_eq!(p.header("content-type"), None);

    for s in [&g, &c, &p] {
        let what = format!("{} {}", s.method, s.uri);
        assert_eq!(s.header("x-request-id"), Some(rid.as_str()), "{what}");
        assert_eq!(s.header("traceparent"), Some(traceparent), "{what}");
        assert_eq!(s.header("x-consumer-id"), Some("app:one"), "{what}");
        assert_eq!(s.header("x-tenant-id"), Some("t-42"), "{what}");
        assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"), "{what}");
        assert_eq!(s.header("x-forwarded-proto"), Some("http"), "{what}");
        assert_eq!(
            s.header("x-forwarded-host"),
            None,
            "{what}: removed by the route's request.headers.remove"
        );
        assert_eq!(s.header("x-gateway"), Some("bff"), "{what}");
        assert_eq!(s.header("accept"), Some("application/json"), "{what}");
        assert_eq!(s.header("authorization"), None, "{what}");
        assert_eq!(s.header("cookie"), None, "{what}");
        assert_eq!(s.header("x-thing"), None, "{what}");
        for (name, v) in &s.headers {
            let v = String::from_utf8_lossy(v.as_bytes());
            assert!(
                !v.contains(&tok) && !v.contains("cookie-secret") && !v.contains("spoofed"),
                "{what}: header {name} carries a client credential or spoofed value: {v}"
            );
        }
    }
    assert_eq!(up.count(), 3);

    // Without a client X-Request-Id: the generated one reaches every call.
    let before = up.count();
    let r = send(
        client()
            .post(gw.url("/tpl/plain"))
            .bearer_auth(&tok)
            .body("x"),
    )
    .await;
    r.ok(false);
    let rid = r.header("x-request-id").expect("x-request-id");
    let seen = up.seen();
    assert_eq!(seen.len(), before + 3);
    for s in &seen[before..] {
        assert_eq!(s.header("x-request-id"), Some(rid), "{}", s.uri);
        assert!(
            s.header("traceparent").is_some_and(|t| t.len() == 55),
            "{}: a traceparent is started",
            s.uri
        );
    }
    // A body streamed without Content-Length is forwarded whole too.
    let streamed_from = up.count();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from_static(b"{\"part\": ")),
        Ok(bytes::Bytes::from_static(b"\"two\"}")),
    ];
    let r = send(
        client()
            .post(gw.url("/tpl/chunked"))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    r.ok(false);
    let created: Vec<Seen> = up.seen()[streamed_from..]
        .iter()
        .filter(|s| s.path.starts_with("/orders/"))
        .cloned()
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].body, b"{\"part\": \"two\"}");
    assert_eq!(created[0].header("content-type"), Some("application/json"));

    // A missing value renders empty; `m=` above, and here `q=` and the header segment.
    let g = &seen[before..]
        .iter()
        .find(|s| s.path.starts_with("/p/"))
        .expect("get call")
        .uri;
    assert!(
        g.starts_with("/p/plain//u&1%20%C3%A9%2Fx?q=&s="),
        "missing values render empty: {g}"
    );
}

/// HTTP/1.1 requires a `Host` header (RFC 9112 section 3.2); strict servers (nginx, Go's
/// net/http) answer 400 without one, so a call without it would fail against them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_carry_a_host_header() {
    let up = Recorder::echo("up").await;
    let policy = format!(
        "{}routes:
  - name: host
    match: {{ path: /host }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: a, upstream: up, path: /a }}
",
        upstreams(&[("up", up.target())])
    );
    let gw = start(&policy).await;
    get(&gw, "/host").await.ok(false);
    let a = up.one("/a");
    assert!(
        a.header("host").is_some_and(|h| !h.is_empty()),
        "the call has no Host header; headers: {:?}",
        a.headers
    );
}

// ---------------------------------------------------------------------------------------
// 3. Merging
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_nest_and_merge_root() {
    let up = Recorder::start(|s| match s.path.as_str() {
        "/first" => Plan::json(json!({ "x": 1, "shared": "first", "nested": { "k": 1 } }))
            // Answers last: the clash is decided by call order, not by arrival.
            .after(Duration::from_millis(150)),
        "/second" => Plan::json(json!({ "y": 2, "shared": "second", "nested": { "j": 2 } })),
        "/list" => Plan::json(json!([1, "two", null])),
        "/string" => Plan::json(json!("just a string")),
        "/empty" => Plan::empty(),
        _ => Plan::status(404, "no"),
    })
    .await;
    let policy = format!(
        "{}routes:
  - name: nest
    match: {{ path: /nest }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: first, upstream: up, path: /first }}
        - {{ name: second, upstream: up, path: /second }}
        - {{ name: list, upstream: up, path: /list }}
        - {{ name: string, upstream: up, path: /string }}
        - {{ name: empty, upstream: up, path: /empty }}
  - name: root
    match: {{ path: /root }}
    auth: none
    aggregate:
      timeout: 5s
      merge: root
      calls:
        - {{ name: first, upstream: up, path: /first }}
        - {{ name: second, upstream: up, path: /second }}
  - name: root-mixed
    match: {{ path: /root-mixed }}
    auth: none
    aggregate:
      timeout: 5s
      merge: root
      calls:
        - {{ name: first, upstream: up, path: /first }}
        - {{ name: list, upstream: up, path: /list }}
        - {{ name: second, upstream: up, path: /second }}
  - name: root-required
    match: {{ path: /root-required }}
    auth: none
    aggregate:
      timeout: 5s
      merge: root
      calls:
        - {{ name: first, upstream: up, path: /first }}
        - {{ name: string, upstream: up, path: /string, required: true }}
",
        upstreams(&[("up", up.target())])
    );
    let gw = start(&policy).await;

    let body = get(&gw, "/nest").await.ok(false);
    assert_eq!(
        body,
        json!({
            "first": { "x": 1, "shared": "first", "nested": { "k": 1 } },
            "second": { "y": 2, "shared": "second", "nested": { "j": 2 } },
            "list": [1, "two", null],
            "string": "just a string",
            "empty": null,
        }),
        "merge nest: every answer under its call's name; an empty 2xx body is null"
    );

    let body = get(&gw, "/root").await.ok(false);
    assert_eq!(
        body,
        json!({ "x": 1, "y": 2, "shared": "second", "nested": { "j": 2 } }),
        "merge root: shallow, key by key in call order, the later call wins a clash"
    );

    let body = get(&gw, "/root-mixed").await.ok(true);
    assert_eq!(
        body,
        json!({
            "x": 1, "y": 2, "shared": "second", "nested": { "j": 2 },
            "_errors": { "list": "not_an_object" },
        }),
        "merge root: an optional call answering a non-object is an error"
    );

    get(&gw, "/root-required")
        .await
        .bad_gateway("the required call \"string\" failed: not_an_object");
}

// ---------------------------------------------------------------------------------------
// 4. Optional failures
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_failures_give_a_partial_answer() {
    let big = {
        let mut b = Vec::with_capacity(9 << 20);
        b.push(b'"');
        b.resize(9 << 20, b'x');
        b.push(b'"');
        b
    };
    let up = Recorder::start(move |s| match s.path.as_str() {
        "/ok" => Plan::json(json!({ "fine": true })),
        "/slow" => Plan::json(json!({ "late": true })).after(Duration::from_secs(6)),
        "/unavailable" => Plan::status(503, "upstream-503-detail"),
        "/junk" => Plan::text("this is <not> json"),
        "/big" => Plan {
            delay: Duration::ZERO,
            status: 200,
            content_type: "application/json",
            body: big.clone(),
            gate: None,
        },
        _ => Plan::status(404, "no"),
    })
    .await;
    let reset = Resetter::start().await;
    let down = free_port();
    let policy = format!(
        "{}routes:
  - name: partial
    match: {{ path: /partial }}
    auth: none
    aggregate:
      timeout: 10s
      calls:
        - {{ name: ok, upstream: up, path: /ok, required: true }}
        - {{ name: slow, upstream: up, path: /slow, timeout: 1s }}
        - {{ name: unavailable, upstream: up, path: /unavailable }}
        - {{ name: down, upstream: down, path: /down }}
        - {{ name: junk, upstream: up, path: /junk }}
        - {{ name: big, upstream: up, path: /big }}
        - {{ name: reset, upstream: reset, path: /reset }}
",
        upstreams(&[
            ("up", up.target()),
            ("down", format!("127.0.0.1:{down}")),
            ("reset", reset.addr.to_string()),
        ])
    );
    let gw = start(&policy).await;
    let r = get(&gw, "/partial").await;
    let body = r.ok(true);
    assert_eq!(
        body,
        json!({
            "ok": { "fine": true },
            "_errors": {
                "slow": "timeout",
                "unavailable": "status 503",
                "down": "connect",
                "junk": "invalid_json",
                "big": "too_large",
                "reset": "reset",
            },
        }),
        "{}",
        r.describe()
    );
    assert!(!r.text.contains("upstream-503-detail"));
    assert!(
        r.sent.elapsed() >= Duration::from_secs(1),
        "the slow call was given its second"
    );

    // Upstream metrics count calls too.
    let m = gw.metrics().await;
    let errors = |upstream: &str, kind: &str| {
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("upstream", upstream), ("kind", kind)],
        )
    };
    assert_eq!(errors("up", "status"), 1.0, "the 503");
    assert_eq!(errors("down", "connect"), 1.0, "the refused connection");
    assert_eq!(errors("reset", "reset"), 1.0, "the closed connection");
    // Answer headers received (the metric ends at the header): ok, 503, junk and the big
    // one, whose body was then refused; the slow one was cut before its header.
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_duration_seconds_count",
            &[("upstream", "up")]
        ),
        4.0,
        "{m}"
    );
}

/// The upstream's own `timeouts.read` applies to calls as it does to proxied requests:
/// an upstream that does not answer within it fails the call with `timeout`, counted as
/// an upstream error of kind `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_read_timeout_applies_to_calls() {
    let up = Recorder::start(|s| match s.path.as_str() {
        "/slow" => Plan::json(json!({ "late": true })).after(Duration::from_secs(6)),
        _ => Plan::json(json!({ "fine": true })),
    })
    .await;
    let policy = format!(
        "upstreams:
  tight:
    targets: [\"{}\"]
    timeouts: {{ read: 1s }}
routes:
  - name: tight
    match: {{ path: /tight }}
    auth: none
    aggregate:
      timeout: 10s
      calls:
        - {{ name: ok, upstream: tight, path: /ok }}
        - {{ name: sluggish, upstream: tight, path: /slow }}
",
        up.target()
    );
    let gw = start(&policy).await;
    let r = get(&gw, "/tight").await;
    let body = r.ok(true);
    assert_eq!(
        body,
        json!({ "ok": { "fine": true }, "_errors": { "sluggish": "timeout" } }),
        "{}",
        r.describe()
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_errors_total",
            &[("upstream", "tight"), ("kind", "timeout")]
        ),
        1.0,
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Required failures
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_required_call_is_a_502_naming_it() {
    let secret = "SECRET-UPSTREAM-DETAIL stack trace at db.rs:42";
    let up = Recorder::start(move |s| match s.path.as_str() {
        "/profile" => Plan::status(503, secret),
        "/profile-500-json" => Plan {
            delay: Duration::ZERO,
            status: 500,
            content_type: "application/json",
            body: json!({ "error": secret }).to_string().into_bytes(),
            gate: None,
        },
        _ => Plan::json(json!({ "other": true })),
    })
    .await;
    let down = free_port();
    let policy = format!(
        "{}routes:
  - name: req
    match: {{ path: /req }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: other, upstream: up, path: /other }}
        - {{ name: profile, upstream: up, path: /profile, required: true }}
  - name: req-json
    match: {{ path: /req-json }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: profile, upstream: up, path: /profile-500-json, required: true }}
        - {{ name: other, upstream: up, path: /other }}
  - name: req-down
    match: {{ path: /req-down }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: other, upstream: up, path: /other }}
        - {{ name: account, upstream: down, path: /account, required: true }}
",
        upstreams(&[("up", up.target()), ("down", format!("127.0.0.1:{down}"))])
    );
    let gw = start(&policy).await;

    let r = get(&gw, "/req").await;
    r.bad_gateway("the required call \"profile\" failed: status 503");
    assert!(!r.text.contains("SECRET"), "{}", r.describe());
    assert!(
        !r.text.contains("other"),
        "no partial body: {}",
        r.describe()
    );

    let r = get(&gw, "/req-json").await;
    r.bad_gateway("the required call \"profile\" failed: status 500");
    assert!(!r.text.contains("SECRET"), "{}", r.describe());

    get(&gw, "/req-down")
        .await
        .bad_gateway("the required call \"account\" failed: connect");
}

// ---------------------------------------------------------------------------------------
// 6. The route's deadline
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_deadline_cuts_every_call() {
    let up = Recorder::start(|s| match s.path.as_str() {
        "/fast" => Plan::json(json!({ "fast": true })),
        _ => Plan::json(json!({ "slow": true })).after(Duration::from_secs(8)),
    })
    .await;
    let policy = format!(
        "{}routes:
  - name: deadline
    match: {{ path: /deadline }}
    auth: none
    aggregate:
      timeout: 1s
      calls:
        - {{ name: fast, upstream: up, path: /fast, required: true }}
        - {{ name: slow, upstream: up, path: /slow }}
        - {{ name: patient, upstream: up, path: /patient, timeout: 30s }}
  - name: deadline-required
    match: {{ path: /deadline-required }}
    auth: none
    aggregate:
      timeout: 1s
      calls:
        - {{ name: fast, upstream: up, path: /fast }}
        - {{ name: slow, upstream: up, path: /slow, required: true, timeout: 30s }}
",
        upstreams(&[("up", up.target())])
    );
    let gw = start(&policy).await;

    let r = get(&gw, "/deadline").await;
    let took = r.sent.elapsed();
    let body = r.ok(true);
    assert_eq!(
        body,
        json!({
            "fast": { "fast": true },
            "_errors": { "slow": "timeout", "patient": "timeout" },
        }),
        "a call still running at the route's deadline is cut, its own timeout \
         notwithstanding"
    );
    assert!(took >= Duration::from_secs(1), "not cut early: {took:?}");

    let r = get(&gw, "/deadline-required").await;
    let took = r.sent.elapsed();
    r.bad_gateway("the required call \"slow\" failed: timeout");
    assert!(took >= Duration::from_secs(1), "not cut early: {took:?}");
}

// ---------------------------------------------------------------------------------------
// 7. depends_on
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependent_calls_use_earlier_answers() {
    let profile_wait = Duration::from_millis(100);
    let users = Recorder::start(move |s| match s.path.as_str() {
        "/users/bad" => Plan::status(500, "boom"),
        p => Plan::json(json!({
            "id": p.trim_start_matches("/users/"),
            "team_id": "t 7/x",
            "org": { "id": 42, "name": "a&b" },
            "flag": true,
        }))
        .after(profile_wait),
    })
    .await;
    let teams = Recorder::echo("teams").await;
    let policy = format!(
        "{}routes:
  - name: deps
    match: {{ path: \"/deps/{{id}}\" }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: profile, upstream: users, path: \"/users/{{path.id}}\" }}
        - {{ name: team, upstream: teams, path: \"/teams/{{calls.profile.team_id}}?org={{calls.profile.org.id}}&name={{calls.profile.org.name}}&f={{calls.profile.flag}}&obj={{calls.profile.org}}&none={{calls.profile.nope}}\", depends_on: [profile] }}
        - {{ name: free, upstream: teams, path: /free }}
  - name: deps-required
    match: {{ path: \"/deps-required/{{id}}\" }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: profile, upstream: users, path: \"/users/{{path.id}}\" }}
        - {{ name: team, upstream: teams, path: \"/teams/{{calls.profile.team_id}}\", depends_on: [profile], required: true }}
",
        upstreams(&[("users", users.target()), ("teams", teams.target())])
    );
    let gw = start(&policy).await;

    let body = get(&gw, "/deps/u1").await.ok(false);
    assert_eq!(body["profile"]["id"], "u1");
    let team = teams.one("/teams/");
    assert_eq!(
        team.uri, "/teams/t%207%2Fx?org=42&name=a%26b&f=true&obj=&none=",
        "dependency fields substituted and encoded; objects and missing fields render empty"
    );
    assert_eq!(body["team"]["path"], team.path);
    let profile = users.one("/users/");
    assert!(
        team.at >= profile.at + profile_wait,
        "the dependent call started only after its dependency answered"
    );
    assert_eq!(body["free"]["path"], "/free");
    let host = format!("127.0.0.1:{}", gw.config.port);
    assert_eq!(team.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(profile.header("x-forwarded-host"), Some(host.as_str()));

    // The dependency fails: the dependent call is not made.
    let before = teams.count();
    let r = get(&gw, "/deps/bad").await;
    let body = r.ok(true);
    assert_eq!(
        body,
        json!({
            "free": { "upstream": "teams", "method": "GET", "path": "/free", "query": null },
            "_errors": { "profile": "status 500", "team": "dependency profile" },
        }),
        "{}",
        r.describe()
    );
    let after: Vec<String> = teams.seen()[before..]
        .iter()
        .map(|s| s.uri.clone())
        .collect();
    assert_eq!(after, vec!["/free".to_string()], "no call to /teams");

    // A required call whose dependency failed fails the whole.
    get(&gw, "/deps-required/bad")
        .await
        .bad_gateway("the required call \"team\" failed: dependency profile");
    assert_eq!(teams.count(), before + 1, "no call to /teams");
}

// ---------------------------------------------------------------------------------------
// 8. Metrics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_per_call_and_outcome() {
    let flag = |s: &Seen, name: &str| s.query_param(name).as_deref() == Some("1");
    let up_a = Recorder::start(move |s| match flag(s, "down") {
        true => Plan::status(500, "down"),
        false => Plan::json(json!({ "a": 1 })),
    })
    .await;
    let up_b = Recorder::start(move |s| match flag(s, "fail") {
        true => Plan::status(503, "fail"),
        false => Plan::json(json!({ "b": 1 })),
    })
    .await;
    let up_c = Recorder::start(move |s| match flag(s, "slow") {
        true => Plan::json(json!({ "c": 1 })).after(Duration::from_secs(6)),
        false => Plan::json(json!({ "c": 1 })),
    })
    .await;
    let up_d = Recorder::start(|_| Plan::json(json!({ "d": 1 }))).await;
    let policy = format!(
        "{}routes:
  - name: metered
    match: {{ path: /metered }}
    auth: none
    aggregate:
      timeout: 10s
      calls:
        - {{ name: a, upstream: up_a, path: \"/a?down={{query.down}}\", required: true }}
        - {{ name: b, upstream: up_b, path: \"/b?fail={{query.fail}}\" }}
        - {{ name: c, upstream: up_c, path: \"/c?slow={{query.slow}}\", timeout: 1s }}
        - {{ name: d, upstream: up_d, path: /d, depends_on: [b] }}
",
        upstreams(&[
            ("up_a", up_a.target()),
            ("up_b", up_b.target()),
            ("up_c", up_c.target()),
            ("up_d", up_d.target()),
        ])
    );
    let gw = start(&policy).await;

    // 1: every call ok.
    get(&gw, "/metered").await.ok(false);
    // 2: b fails, so d fails (dependency).
    let body = get(&gw, "/metered?fail=1").await.ok(true);
    assert_eq!(
        body["_errors"],
        json!({ "b": "status 503", "d": "dependency b" })
    );
    // 3: b fails, c times out.
    let body = get(&gw, "/metered?fail=1&slow=1").await.ok(true);
    assert_eq!(
        body["_errors"],
        json!({ "b": "status 503", "c": "timeout", "d": "dependency b" })
    );
    // Request counts are recorded as a request is logged, which may be just after its
    // answer was read: wait for all three.
    let m = gw
        .metrics_when(|m| metric(m, "gateway_requests_total", &[("route", "metered")]) >= 3.0)
        .await;
    let table = |m: &str| -> Vec<(&str, [f64; 3])> {
        let calls = |call: &str, outcome: &str| {
            metric(
                m,
                "gateway_aggregate_calls_total",
                &[("route", "metered"), ("call", call), ("outcome", outcome)],
            )
        };
        ["a", "b", "c", "d"]
            .iter()
            .map(|c| (*c, [calls(c, "ok"), calls(c, "error"), calls(c, "timeout")]))
            .collect()
    };
    assert_eq!(
        table(&m),
        vec![
            ("a", [3.0, 0.0, 0.0]),
            ("b", [1.0, 2.0, 0.0]),
            ("c", [2.0, 0.0, 1.0]),
            ("d", [1.0, 2.0, 0.0]),
        ],
        "(call, [ok, error, timeout]); metrics:\n{m}"
    );

    // 4: the required call fails at once: 502 without waiting for the slow call, which is
    // abandoned and not counted (b and d may or may not have answered first).
    get(&gw, "/metered?down=1&slow=1")
        .await
        .bad_gateway("the required call \"a\" failed: status 500");
    let m = gw
        .metrics_when(|m| metric(m, "gateway_requests_total", &[("route", "metered")]) >= 4.0)
        .await;
    let after = table(&m);
    assert_eq!(after[0], ("a", [3.0, 1.0, 0.0]), "metrics:\n{m}");
    assert_eq!(
        after[2],
        ("c", [2.0, 0.0, 1.0]),
        "the abandoned call is not counted:\n{m}"
    );
    let requests = |status: &str| {
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "metered"), ("status", status)],
        )
    };
    assert_eq!((requests("200"), requests("502")), (3.0, 1.0));

    // Upstream metrics: answered calls are observed, 5xx answers counted as errors, calls
    // cut by their timeout counted as timeouts.
    let upstream = |name: &str, u: &str, kind: Option<&str>| {
        let mut labels = vec![("upstream", u)];
        labels.extend(kind.map(|k| ("kind", k)));
        metric(&m, name, &labels)
    };
    let duration = |u| upstream("gateway_upstream_duration_seconds_count", u, None);
    let errors = |u, k| upstream("gateway_upstream_errors_total", u, Some(k));
    assert_eq!(duration("up_a"), 4.0, "{m}");
    assert_eq!(duration("up_c"), 2.0, "{m}");
    assert_eq!(
        [errors("up_a", "status"), errors("up_c", "status")],
        [1.0, 0.0],
        "{m}"
    );
    assert_eq!(errors("up_c", "timeout"), 1.0, "{m}");
    assert!((2.0..=3.0).contains(&errors("up_b", "status")), "{m}");
    assert_eq!(up_a.count(), 4);
}

// ---------------------------------------------------------------------------------------
// 9. Checks before calls
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_limits_and_validation_come_before_any_call() {
    let up = Recorder::echo("up").await;
    let policy = format!(
        "{}{}routes:
  - name: secured
    match: {{ path: /secured }}
    auth: [jwt:corp]
    aggregate:
      timeout: 5s
      calls:
        - {{ name: me, upstream: up, path: \"/me/{{claims.sub}}\", required: true }}
        - {{ name: more, upstream: up, path: /more }}
  - name: limited
    match: {{ path: /limited }}
    auth: none
    rate_limit: {{ key: client_ip, limits: [ {{ requests: 1, per: 1m }} ] }}
    aggregate:
      timeout: 5s
      calls:
        - {{ name: l, upstream: up, path: /limited-call }}
  - name: validated
    match: {{ path: /validated, methods: [POST] }}
    auth: none
    request:
      schema: {{ type: object, required: [name], properties: {{ name: {{ type: string }} }} }}
    aggregate:
      timeout: 5s
      calls:
        - {{ name: v, upstream: up, path: /validated-call, method: POST, body: forward }}
",
        upstreams(&[("up", up.target())]),
        provider()
    );
    let gw = start(&policy).await;

    let r = get(&gw, "/secured").await;
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let r = send(client().get(gw.url("/secured")).bearer_auth("not.a.token")).await;
    assert_eq!(r.status, 401, "{}", r.describe());
    let wrong = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let claims = json!({ "iss": ISS, "aud": AUD, "sub": "u", "exp": now() + 3600 });
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(b"another-secret"),
        )
        .expect("sign")
    };
    let r = send(client().get(gw.url("/secured")).bearer_auth(&wrong)).await;
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_eq!(
        up.count(),
        0,
        "no call was made for an unauthenticated request"
    );
    // The control: with a good token, both calls are made.
    let r = send(
        client()
            .get(gw.url("/secured"))
            .bearer_auth(token(json!({ "sub": "alice", "azp": "app" }))),
    )
    .await;
    assert_eq!(r.ok(false)["me"]["path"], "/me/alice");
    assert_eq!(up.count(), 2);

    // Rate limit: the second request is refused before any call.
    get(&gw, "/limited").await.ok(false);
    let r = get(&gw, "/limited").await;
    assert_eq!(r.status, 429, "{}", r.describe());
    assert_eq!(up.count(), 3, "the refused request made no call");

    // Validation: an invalid body is refused before any call; a valid one is forwarded.
    let r = send(
        client()
            .post(gw.url("/validated"))
            .header("content-type", "application/json")
            .body(r#"{"name": 5}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(up.count(), 3, "the invalid request made no call");
    let r = send(
        client()
            .post(gw.url("/validated"))
            .header("content-type", "application/json")
            .body(r#"{"name": "ok"}"#),
    )
    .await;
    r.ok(false);
    assert_eq!(up.one("/validated-call").body, br#"{"name": "ok"}"#);
}

// ---------------------------------------------------------------------------------------
// 10. gateway check
// ---------------------------------------------------------------------------------------

/// A policy with upstream `users` and one aggregate route whose `calls` are `calls`
/// (each a line of YAML, placed under `calls:`), with `route_extra` lines under the route.
fn check_policy(route_extra: &str, calls: &[&str]) -> String {
    let mut s = String::from(
        "upstreams:\n  users:\n    targets: [\"127.0.0.1:9\"]\nroutes:\n  - name: agg\n    match: { path: \"/agg/{id}\" }\n    auth: none\n",
    );
    for l in route_extra.lines() {
        s.push_str(&format!("    {l}\n"));
    }
    s.push_str("    aggregate:\n      timeout: 1s\n");
    if calls.is_empty() {
        s.push_str("      calls: []\n");
    } else {
        s.push_str("      calls:\n");
        for c in calls {
            s.push_str(&format!("        - {c}\n"));
        }
    }
    s
}

/// Checks `text` and asserts a failure reported as `file:line: message`, on the line of
/// `needle`, with a message containing every one of `parts`.
fn assert_check_problem(text: &str, needle: &str, parts: &[&str]) {
    let c = ConfigDir::new("", &[("routes.yaml", text)]);
    let (ok, out) = c.check();
    assert!(!ok, "check should have failed for:\n{text}\noutput:\n{out}");
    let file = c.path().join("policies").join("routes.yaml");
    let prefix = format!("{}:{}: ", file.display(), line_of(text, needle));
    let msg = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no problem reported as {prefix:?}; output:\n{out}"));
    for p in parts {
        assert!(
            msg.contains(p),
            "message {msg:?} should contain {p:?}; output:\n{out}"
        );
    }
}

#[test]
fn check_refuses_bad_aggregates() {
    // The control: a valid aggregate passes.
    let good = check_policy(
        "",
        &[
            "{ name: profile, upstream: users, path: \"/users/{path.id}\", required: true }",
            "{ name: team, upstream: users, path: \"/teams/{calls.profile.team_id}\", depends_on: [profile] }",
        ],
    );
    let c = ConfigDir::new("", &[("routes.yaml", &good)]);
    let (ok, out) = c.check();
    assert!(ok, "check failed:\n{good}\n{out}");

    assert_check_problem(
        &check_policy("", &["{ name: a, upstream: nowhere, path: /a }"]),
        "nowhere",
        &["unknown upstream \"nowhere\""],
    );
    assert_check_problem(
        &check_policy(
            "",
            &[
                "{ name: profile, upstream: users, path: /p }",
                "{ name: team, upstream: users, path: \"/t/{calls.profile.team_id}\" }",
            ],
        ),
        "name: team",
        &["calls.profile.team_id", "depends_on"],
    );
    assert_check_problem(
        &check_policy(
            "",
            &[
                "{ name: team, upstream: users, path: /t, depends_on: [profile] }",
                "{ name: profile, upstream: users, path: /p }",
            ],
        ),
        "name: team",
        &["\"profile\"", "not an earlier call"],
    );
    assert_check_problem(
        &check_policy(
            "",
            &["{ name: team, upstream: users, path: /t, depends_on: [ghost] }"],
        ),
        "ghost",
        &["\"ghost\"", "not an earlier call"],
    );
    assert_check_problem(
        &check_policy(
            "",
            &["{ name: team, upstream: users, path: /t, depends_on: [team] }"],
        ),
        "depends_on: [team]",
        &["\"team\"", "not an earlier call"],
    );
    assert_check_problem(
        &check_policy(
            "",
            &[
                "{ name: a, upstream: users, path: /first }",
                "{ name: a, upstream: users, path: /second }",
            ],
        ),
        "/second",
        &["\"a\"", "used twice"],
    );
    assert_check_problem(
        &check_policy("", &["{ name: _errors, upstream: users, path: /e }"]),
        "_errors",
        &["\"_errors\"", "`_`"],
    );
    assert_check_problem(
        &check_policy(
            "upstream: users",
            &["{ name: a, upstream: users, path: /a }"],
        ),
        "name: agg",
        &["exactly one of `upstream`, `aggregate` and `deliver`"],
    );
    assert_check_problem(&check_policy("", &[]), "calls: []", &["at least one call"]);
}
