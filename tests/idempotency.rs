//! Idempotency keys with the memory store, end to end through the real `gateway` binary:
//! the first request with a key is forwarded and its answer stored; a repeat gets that
//! answer back (`Idempotent-Replayed: true`) without reaching the upstream; a key reused for
//! another request is refused (422), one still in flight answers 409; retryable answers,
//! failures and answers over `max_response` release the key; keys are scoped by consumer
//! (by client address on public routes) and route; the store outlives a reload.
//!
//! "Nothing forwarded" is always proven with the upstream's request counter.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::reply::{assert_ok, send, Reply};
use common::{client, metric, ConfigDir, Gateway, Upstream};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const KEY: &str = "Idempotency-Key";
const ACME_KEY: &str = "test-only-idem-acme-key";
const BETA_KEY: &str = "test-only-idem-beta-key";

/// An upstream that answers every request 201 with a `Set-Cookie`, a header of its own and
/// a JSON body numbering the requests it saw.
struct Jar {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Jar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Jar {
    async fn start() -> Jar {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let headers = [
                    ("set-cookie", "session=test-only-cookie; Path=/"),
                    ("x-order", "kept"),
                    ("content-type", "application/json"),
                ];
                let body = serde_json::json!({ "order": n }).to_string();
                (axum::http::StatusCode::CREATED, headers, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Jar { addr, hits, task }
    }
}

fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// Upstreams `up` (echo), `jar` and `dead` (nothing listens); consumers `acme` and `beta`
/// (API keys); `extra` routes appended.
fn policy(up: &str, jar: &str, extra: &str) -> String {
    format!(
        r#"upstreams:
  up: {{ targets: ["{up}"] }}
  jar: {{ targets: ["{jar}"] }}
  dead: {{ targets: ["127.0.0.1:9"] }}
api_keys: {{ header: X-API-Key }}
consumers:
  acme: {{ api_keys: ["{acme}"] }}
  beta: {{ api_keys: ["{beta}"] }}
routes:
  - {{ name: orders, match: {{ path: /orders, methods: [POST, PATCH] }}, auth: none, idempotency: {{ ttl: 1h }}, upstream: up }}
  - {{ name: orders-copy, match: {{ path: /orders-copy, methods: [POST] }}, auth: none, idempotency: {{}}, upstream: up }}
  - {{ name: any, match: {{ path: "/*" }}, auth: none, idempotency: {{ methods: [GET, POST] }}, upstream: up }}
  - {{ name: big, match: {{ path: /big, methods: [GET] }}, auth: none, idempotency: {{ methods: [GET], max_response: 1KiB }}, upstream: up }}
  - {{ name: required, match: {{ path: /required, methods: [GET, POST] }}, auth: none, idempotency: {{ required: true }}, upstream: up }}
  - {{ name: jar, match: {{ path: /jar, methods: [POST] }}, auth: none, idempotency: {{}}, upstream: jar }}
  - {{ name: dead, match: {{ path: /dead, methods: [POST] }}, auth: none, idempotency: {{}}, upstream: dead }}
  - {{ name: keyed, match: {{ path: /keyed, methods: [POST] }}, auth: [api_key], idempotency: {{}}, upstream: up }}
  - {{ name: large, match: {{ path: /large, methods: [POST] }}, auth: none, request: {{ max_body: 2MiB }}, idempotency: {{}}, upstream: up }}
{extra}"#,
        acme = key_hash(ACME_KEY),
        beta = key_hash(BETA_KEY),
    )
}

/// One test's gateway (believing `X-Forwarded-For` from loopback) and upstreams.
struct T {
    gw: Arc<Gateway>,
    up: Upstream,
    jar: Jar,
}

impl T {
    async fn start() -> T {
        let (up, jar) = (Upstream::start("up").await, Jar::start().await);
        let p = policy(&up.target(), &jar.addr.to_string(), "");
        let config = ConfigDir::new("trusted_proxies: [127.0.0.1/32]\n", &[("p.yaml", &p)]);
        let gw = Arc::new(Gateway::start_in(config, &[]).await);
        T { gw, up, jar }
    }

    async fn req(
        &self,
        m: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
        h: &[(&str, &str)],
    ) -> Reply {
        call(&self.gw, m, path, key, body.to_string(), h).await
    }

    async fn post(&self, path: &str, key: &str, body: &str) -> Reply {
        self.req("POST", path, Some(key), body, &[]).await
    }

    async fn get(&self, path: &str, key: &str) -> Reply {
        self.req("GET", path, Some(key), "", &[]).await
    }

    fn hits(&self) -> usize {
        self.up.hits.load(Ordering::SeqCst)
    }

    /// Waits until `gateway_idempotency_total{route}` has exactly the outcomes `expected`
    /// (`"stored=1 replayed=2"`), then asserts them.
    async fn outcomes(&self, route: &str, expected: &str) {
        let want: Vec<(&str, f64)> = expected
            .split_whitespace()
            .map(|p| p.split_once('=').unwrap())
            .map(|(o, n)| (o, n.parse().unwrap()))
            .collect();
        let count = |m: &str, o: &str| {
            metric(
                m,
                "gateway_idempotency_total",
                &[("route", route), ("outcome", o)],
            )
        };
        let m = self
            .gw
            .metrics_when(|m| want.iter().all(|(o, n)| count(m, o) == *n))
            .await;
        for (o, n) in want {
            assert_eq!(count(&m, o), n, "route {route}, outcome {o}:\n{m}");
        }
    }
}

/// Sends `req` and waits until the gateway has finished the request: its access-log line
/// is written after the answer was stored (or the key released), so the next request sees
/// what this one left in the store.
async fn finished(gw: &Gateway, req: reqwest::RequestBuilder) -> Reply {
    let r = send(req).await;
    if let Some(id) = r.header("x-request-id").map(str::to_string) {
        gw.wait_log(|l| l["request_id"] == id.as_str()).await;
    }
    r
}

/// `method` `path` with `body`, idempotency key `key` (none: no header) and `headers`.
async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, gw.url(path)).body(body);
    if let Some(k) = key {
        req = req.header(KEY, k);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    finished(gw, req).await
}

fn replayed(r: &Reply) -> bool {
    r.header("idempotent-replayed") == Some("true")
}

/// Asserts a forwarded (not replayed) answer with `status`.
fn fwd(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert!(!replayed(r), "{what}: replayed: {}", r.describe());
}

/// Asserts a replay of `first`: same status, body and headers (but the request id, the
/// date, the framing and `unreplayed`), and `Idempotent-Replayed: true`.
fn replay_but(r: &Reply, first: &Reply, unreplayed: &[&str], what: &str) {
    assert!(replayed(r), "{what}: not a replay: {}", r.describe());
    assert_eq!(r.status, first.status, "{what}: {}", r.describe());
    assert_eq!(r.text, first.text, "{what}: another body");
    let skip = [
        "x-request-id",
        "date",
        "idempotent-replayed",
        "content-length",
    ];
    let values = |r: &Reply, n: &str| r.headers.get_all(n).iter().cloned().collect::<Vec<_>>();
    for name in first.headers.keys().chain(r.headers.keys()) {
        let name = name.as_str();
        if !skip.contains(&name) && !unreplayed.contains(&name) {
            assert_eq!(
                values(r, name),
                values(first, name),
                "{what}: header {name}"
            );
        }
    }
}

fn replay(r: &Reply, first: &Reply, what: &str) {
    replay_but(r, first, &[], what);
}

/// Asserts a gateway error `status` with `error.code` `code`.
fn refused(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert_eq!(r.code(), code, "{what}: {}", r.describe());
    assert!(!replayed(r), "{what}: {}", r.describe());
}

const REUSED: &str = "idempotency_key_reused";

// ---------------------------------------------------------------------------------------
// 1. A repeat is answered from the store, as it was, without the upstream
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_gets_the_stored_answer_without_reaching_the_upstream() {
    let t = T::start().await;
    let body = r#"{"item": "book", "qty": 2}"#;
    let id = |id: &'static str| [("x-request-id", id)];

    let first = t
        .req("POST", "/orders", Some("order-1"), body, &id("req-first"))
        .await;
    assert_ok(&first, "first");
    assert!(!replayed(&first), "{}", first.describe());
    assert_eq!(first.upstream_header("x-request-id").unwrap(), "req-first");
    assert_eq!(t.hits(), 1);

    let again = t
        .req("POST", "/orders", Some("order-1"), body, &id("req-again"))
        .await;
    replay(&again, &first, "repeat");
    // The echo is the first request's (its request id), the header this one's.
    assert_eq!(again.upstream_header("x-request-id").unwrap(), "req-first");
    assert_eq!(again.header("x-request-id"), Some("req-again"));
    // Without a request id of its own, the replay gets a new one.
    let third = t.req("POST", "/orders", Some("order-1"), body, &[]).await;
    replay(&third, &first, "third");
    let id = third.header("x-request-id").unwrap_or_default();
    assert!(!id.is_empty() && id != "req-first", "{}", third.describe());
    assert_eq!(t.hits(), 1, "nothing forwarded after the first");
    t.outcomes("orders", "stored=1 replayed=2").await;

    // Set-Cookie belongs to the first exchange: not replayed; the rest is.
    let first = t.post("/jar", "cookie-1", "{}").await;
    fwd(&first, 201, "jar first");
    assert!(first.header("set-cookie").is_some(), "{}", first.describe());
    let again = t.post("/jar", "cookie-1", "{}").await;
    replay_but(&again, &first, &["set-cookie"], "jar repeat");
    assert_eq!(again.header("x-order"), Some("kept"));
    assert_eq!(again.header("set-cookie"), None, "{:?}", again.headers);
    assert_eq!(t.jar.hits.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 2. A key reused for another request: 422; another route is another scope
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_request_is_refused() {
    let t = T::start().await;
    let first = t.post("/orders", "reuse-1", r#"{"n":1}"#).await;
    assert_ok(&first, "first");

    let r = t.post("/orders", "reuse-1", r#"{"n":2}"#).await;

    refused(&r, 422, REUSED, "body");
    let r = t.post("/orders?x=1", "reuse-1", r#"{"n":1}"#).await;
    refused(&r, 422, REUSED, "query");
    let patch = t
        .req("PATCH", "/orders", Some("reuse-1"), r#"{"n":1}"#, &[])
        .await;
    refused(&patch, 422, REUSED, "method");
    assert_eq!(t.hits(), 1, "nothing forwarded for a reused key");

    // The same key on another route is that route's own.
    let r = t.post("/orders-copy", "reuse-1", r#"{"n":1}"#).await;
    fwd(&r, 200, "other route");
    assert_eq!(t.hits(), 2);
    // And the first is still replayed as it was.
    let r = t.post("/orders", "reuse-1", r#"{"n":1}"#).await;
    replay(&r, &first, "again");
    assert_eq!(t.hits(), 2);
    t.outcomes("orders", "stored=1 reused=3 replayed=1").await;
    t.outcomes("orders-copy", "stored=1").await;
}

// ---------------------------------------------------------------------------------------
// 3. While the first is in flight: 409 with Retry-After; replayed once it completed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_flight_answers_409_then_the_answer_is_replayed() {
    let t = T::start().await;
    let gw = t.gw.clone();
    let slow =
        tokio::spawn(
            async move { call(&gw, "GET", "/slow?ms=1500", Some("slow-1"), "", &[]).await },
        );
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = t.get("/slow?ms=1500", "slow-1").await;
    refused(&busy, 409, "idempotency_key_in_flight", "in flight");
    assert_eq!(busy.header("retry-after"), Some("1"), "{}", busy.describe());
    // Another request under the key is refused as reused even while it is in flight.
    let r = t.get("/slow?ms=1400", "slow-1").await;
    refused(&r, 422, REUSED, "other, in flight");

    let first = slow.await.unwrap();
    fwd(&first, 200, "slow first");
    assert_eq!(first.text, "slow done");
    let again = t.get("/slow?ms=1500", "slow-1").await;
    replay(&again, &first, "after completion");
    assert!(
        again.took() < Duration::from_millis(1000),
        "{}",
        again.describe()
    );
    assert_eq!(t.hits(), 1);
    t.outcomes("any", "stored=1 in_flight=1 reused=1 replayed=1")
        .await;
}

/// A client that goes away before the answer: the request failed, the key is released
/// (the retry is forwarded at once, not refused as in flight until the lock expires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_releases_the_key() {
    let t = T::start().await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .get(t.gw.url("/slow?ms=1000"))
        .header(KEY, "gone-1");
    assert!(gone.send().await.is_err(), "the client did not time out");
    t.gw.wait_log(|l| l["path"] == "/slow").await;
    let retry = t.get("/slow?ms=1000", "gone-1").await;
    fwd(&retry, 200, "retry");
    assert_eq!(t.hits(), 2);
    t.outcomes("any", "not_stored=1 stored=1").await;
}

// ---------------------------------------------------------------------------------------
// 4. 5xx, 408, 429 and failures release the key; other answers below 500 are stored
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_answers_release_the_key_and_client_errors_are_stored() {
    let t = T::start().await;
    for code in [500u16, 503, 408, 429] {
        let (path, key, before) = (format!("/status/{code}"), format!("s-{code}"), t.hits());
        for attempt in 0..2 {
            let r = t.post(&path, &key, "{}").await;
            fwd(&r, code, &format!("{code} #{attempt}"));
        }
        assert_eq!(t.hits(), before + 2, "{code}: the repeat was not forwarded");
    }
    // Nothing listens: 502 each time, the key released (not 409, not replayed).
    for attempt in 0..2 {
        let r = t.post("/dead", "dead-1", "{}").await;
        refused(&r, 502, "bad_gateway", &format!("#{attempt}"));
    }
    for code in [201u16, 204, 400, 404, 409] {
        let (path, key, before) = (format!("/status/{code}"), format!("s-{code}"), t.hits());
        let first = t.post(&path, &key, "{}").await;
        fwd(&first, code, &format!("{code} first"));
        let r = t.post(&path, &key, "{}").await;
        replay(&r, &first, &format!("{code} again"));
        assert_eq!(t.hits(), before + 1, "{code}: the repeat was forwarded");
    }
    t.outcomes("any", "not_stored=8 stored=5 replayed=5").await;
    t.outcomes("dead", "not_stored=2").await;
}

// ---------------------------------------------------------------------------------------
// 5. Answers over max_response are not stored
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_max_response_are_not_stored() {
    let t = T::start().await;
    for bytes in [5000usize, 1025] {
        let path = format!("/big?bytes={bytes}");
        for attempt in 0..2 {
            let r = t.get(&path, &format!("big-{bytes}")).await;
            fwd(&r, 200, &format!("{bytes} bytes, #{attempt}"));
            assert_eq!(r.text.len(), bytes);
        }
    }
    assert_eq!(t.hits(), 4, "answers over 1 KiB forwarded each time");
    // 1 KiB exactly is not larger than max_response: stored.
    let first = t.get("/big?bytes=1024", "big-1024").await;
    fwd(&first, 200, "1024 bytes");
    let r = t.get("/big?bytes=1024", "big-1024").await;
    replay(&r, &first, "1024 bytes");
    assert_eq!(t.hits(), 5);
    t.outcomes("big", "not_stored=4 stored=1 replayed=1").await;
}

// ---------------------------------------------------------------------------------------
// 6. required keys, malformed keys, methods not listed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_and_malformed_keys_are_refused() {
    let t = T::start().await;
    let missing = t.req("POST", "/required", None, "{}", &[]).await;
    refused(&missing, 400, "idempotency_key_missing", "missing");
    assert!(
        missing.text.contains(KEY),
        "names the header: {}",
        missing.text
    );

    let long = "k".repeat(256);
    let bad: [(&str, &[u8]); 5] = [
        ("256 characters", long.as_bytes()),
        ("a space", b"a b"),
        ("non-ASCII", "cl\u{e9}".as_bytes()),
        ("a tab", b"a\tb"),
        ("empty", b""),
    ];
    for (what, key) in bad {
        for path in ["/required", "/orders"] {
            let value = reqwest::header::HeaderValue::from_bytes(key).unwrap();
            let req = client().post(t.gw.url(path)).header(KEY, value).body("{}");
            let r = finished(&t.gw, req).await;
            refused(&r, 400, "invalid_request", &format!("{what} on {path}"));
        }
    }
    assert_eq!(t.hits(), 0, "nothing forwarded");

    let r = t.post("/required", &"k".repeat(255), "{}").await;

    fwd(&r, 200, "255 characters");
    let odd = "!~\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}";
    fwd(&t.post("/required", odd, "{}").await, 200, "punctuation");
    // GET is not a listed method: no key needed, none taken.
    fwd(&t.req("GET", "/required", None, "", &[]).await, 200, "GET");
    fwd(&t.get("/required", "g-1").await, 200, "GET with a key");
    let r = t.get("/required", "g-1").await;
    fwd(&r, 200, "GET with a key again");
    assert_eq!(t.hits(), 5);
    t.outcomes("required", "stored=2 replayed=0").await;
}

// ---------------------------------------------------------------------------------------
// 7. Keys are scoped by consumer, and by client address on public routes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_by_consumer() {
    let t = T::start().await;
    let body = r#"{"same": true}"#;
    let t = &t;
    let post_as = move |api_key: &'static str| async move {
        t.req("POST", "/keyed", Some("k"), body, &[("x-api-key", api_key)])
            .await
    };
    let acme = post_as(ACME_KEY).await;
    fwd(&acme, 200, "acme");
    assert_eq!(acme.upstream_header("x-consumer-id").unwrap(), "acme");
    let beta = post_as(BETA_KEY).await;
    fwd(&beta, 200, "beta, same key");
    assert_eq!(beta.upstream_header("x-consumer-id").unwrap(), "beta");
    // Each is replayed its own answer.
    replay(&post_as(ACME_KEY).await, &acme, "acme again");
    replay(&post_as(BETA_KEY).await, &beta, "beta again");
    assert_eq!(t.hits(), 2);
}

/// On a public route, the client's address as resolved through `trusted_proxies`: two
/// clients behind one trusted proxy are two scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_by_client_address_behind_trusted_proxies() {
    let t = T::start().await;
    let t = &t;
    let post_from = move |ip: &'static str, body: &'static str| async move {
        t.req(
            "POST",
            "/orders",
            Some("k"),
            body,
            &[("x-forwarded-for", ip)],
        )
        .await
    };
    let a = post_from("198.51.100.1", r#"{"n":1}"#).await;
    fwd(&a, 200, "client A");
    let r = post_from("198.51.100.2", r#"{"n":2}"#).await;
    fwd(&r, 200, "client B, same key");
    let r = post_from("198.51.100.1", r#"{"n":1}"#).await;
    replay(&r, &a, "client A again");
    assert_eq!(t.hits(), 2);
}

// ---------------------------------------------------------------------------------------
// 9. A body over 64 KiB is forwarded intact and replayed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_forwarded_intact_and_replayed() {
    let t = T::start().await;
    let items: Vec<String> = (0..14_000).map(|i| format!("\"item-{i:08}\"")).collect();
    let body = format!("{{\"items\": [{}]}}", items.join(","));
    assert!(body.len() > 200 * 1024, "{}", body.len());

    let first = t.post("/large", "large-1", &body).await;
    assert_ok(&first, "large");
    assert_eq!(first.json()["body_len"], body.len());
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    assert_eq!(
        first.json()["body_sha256"],
        sha.as_str(),
        "the body changed on the way"
    );
    let r = t.post("/large", "large-1", &body).await;
    replay(&r, &first, "large again");
    // One byte different (same length): another request.
    let other = body.replacen("item-00000000", "item-00000001", 1);
    let r = t.post("/large", "large-1", &other).await;
    refused(&r, 422, REUSED, "one byte");
    assert_eq!(t.hits(), 1);
    t.outcomes("large", "stored=1 replayed=1 reused=1").await;
}

// ---------------------------------------------------------------------------------------
// 10. A stored answer survives a reload
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_answer_survives_a_reload() {
    let t = T::start().await;
    let first = t.post("/orders", "reload-1", r#"{"n":1}"#).await;
    fwd(&first, 200, "before the reload");
    let generation = t.gw.config().await["generation"].as_u64().unwrap();

    // An unrelated change: a new route.
    let extra = "  - { name: extra, match: { path: /extra }, auth: none, rewrite: { path: /rewritten }, upstream: up }\n";
    let p = policy(&t.up.target(), &t.jar.addr.to_string(), extra);
    t.gw.config.write_policy("p.yaml", &p);
    let r = client()
        .post(t.gw.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.gw.config().await["generation"].as_u64().unwrap() <= generation {
        assert!(
            Instant::now() < deadline,
            "no reload: {}",
            t.gw.config().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let extra = t.req("GET", "/extra", None, "", &[]).await;
    assert_eq!(
        extra.json()["path"],
        "/rewritten",
        "the new set is live: {}",
        extra.text
    );
    let before = t.hits();

    let r = t.post("/orders", "reload-1", r#"{"n":1}"#).await;

    replay(&r, &first, "after the reload");
    let r = t.post("/orders", "reload-1", r#"{"n":2}"#).await;
    refused(&r, 422, REUSED, "other body");
    assert_eq!(t.hits(), before, "nothing forwarded after the reload");
}
