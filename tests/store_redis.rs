//! Idempotency keys and webhook replay ids in the Redis store, end to end: a real
//! `redis-server` and two real `gateway` processes sharing it. A duplicate sent to the
//! other gateway is replayed, refused while in flight, or refused as reused; a delivered
//! webhook is a duplicate on the other gateway; every key carries a TTL; Redis down follows
//! `on_error` (allow: forwarded without the feature, counted; deny: 503 `store_unavailable`)
//! without waiting beyond the timeout, and the features work again once Redis is back; the
//! in-flight lock of a gateway killed mid-request expires after the upstream's longest
//! answer time plus 5 s.
//!
//! `redis-server` must be installed: these tests fail, never skip, without it.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use base64::Engine as _;
use common::reply::{assert_ok, send, Reply};
use common::{client, metric, ConfigDir, Gateway, Upstream};
use hmac::{Hmac, Mac};
use redis_server::Redis;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const STD_KEY: &[u8] = b"test-only-redis-webhook-key";

fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(STD_KEY)
    )
}

/// The store section; `section` is `store` or its older name `rate_limit_store`.
fn store(section: &str, redis: &Redis, on_error: &str) -> String {
    format!(
        "{section}:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 300ms, on_error: {on_error} }}\n",
        redis.url()
    )
}

/// Upstreams `up` (default timeouts) and `short` (connect 100ms, read 1s, no retries: a
/// lock lives 1.1 s + 5 s), both the echo upstream; routes:
/// - `any` `/*`: keys on GET and POST;
/// - `short` `/short/*` (prefix stripped) to `short`, keys on GET and POST;
/// - `hook` `/hook` (POST): Standard Webhooks verifier `std`.
fn policy(target: &str) -> String {
    format!(
        r#"upstreams:
  up:
    targets: ["{target}"]
  short:
    targets: ["{target}"]
    timeouts: {{ connect: 100ms, read: 1s }}
webhook_verifiers:
  std: {{ scheme: standard, secrets_env: [WH_STD], tolerance: 5m }}
routes:
  - name: any
    match: {{ path: /* }}
    auth: none
    idempotency: {{ methods: [GET, POST] }}
    upstream: up
  - name: short
    match: {{ path: /short/* }}
    auth: none
    rewrite: {{ strip_prefix: /short }}
    idempotency: {{ methods: [GET, POST] }}
    upstream: short
  - name: hook
    match: {{ path: /hook, methods: [POST] }}
    auth: [webhook:std]
    upstream: up
"#
    )
}

async fn start_section(section: &str, redis: &Redis, on_error: &str, up: &Upstream) -> Gateway {
    let config = ConfigDir::new(
        &store(section, redis, on_error),
        &[("p.yaml", &policy(&up.target()))],
    );
    Gateway::start_in(config, &[("WH_STD", &whsec())]).await
}

async fn start(redis: &Redis, on_error: &str, up: &Upstream) -> Gateway {
    start_section("store", redis, on_error, up).await
}

/// Sends `req` and waits until the gateway has finished the request: its access-log line
/// is written after the answer was stored (or the key released, or the event remembered),
/// so the next request sees what this one left in the store.
async fn finished(gw: &Gateway, req: reqwest::RequestBuilder) -> Reply {
    let r = send(req).await;
    if let Some(id) = r.header("x-request-id").map(str::to_string) {
        gw.wait_log(|l| l["request_id"] == id.as_str()).await;
    }
    r
}

async fn call(gw: &Gateway, method: &str, path: &str, key: &str, body: &str) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let req = client()
        .request(method, gw.url(path))
        .header("Idempotency-Key", key)
        .body(body.to_string());
    finished(gw, req).await
}

async fn post(gw: &Gateway, key: &str, body: &str) -> Reply {
    call(gw, "POST", "/orders", key, body).await
}

/// A Standard Webhooks delivery of `body` with id `id` to `/hook`.
async fn deliver(gw: &Gateway, id: &str, body: &[u8]) -> Reply {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(STD_KEY).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let req = client()
        .post(gw.url("/hook"))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", format!("v1,{sig}"))
        .body(body.to_vec());
    finished(gw, req).await
}

fn replayed(r: &Reply) -> bool {
    r.header("idempotent-replayed") == Some("true")
}

fn hits(up: &Upstream) -> usize {
    up.hits.load(Ordering::SeqCst)
}

fn assert_refused(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert_eq!(r.code(), code, "{what}: {}", r.describe());
}

fn assert_duplicate(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert_eq!(r.json(), serde_json::json!({ "duplicate": true }), "{what}");
    assert_eq!(r.header("webhook-duplicate"), Some("true"), "{what}");
}

/// The keys of `feature` (`idem`, `webhook`) in Redis, each with its PTTL.
async fn keys(redis: &Redis, feature: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for k in redis.keys().await {
        if k.starts_with(&format!("gateway:rl:{feature}:")) {
            let ttl = redis.pttl(&k).await;
            out.push((k, ttl));
        }
    }
    out
}

/// [`keys`] once there are `n` of them (written when a request ends, which may be just
/// after its answer reached the client), at most 5 s.
async fn keys_when(redis: &Redis, feature: &str, n: usize) -> Vec<(String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let k = keys(redis, feature).await;
        if k.len() == n || Instant::now() > deadline {
            return k;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `gateway_store_errors_total{feature}`, every kind.
async fn store_errors(gw: &Gateway, feature: &str) -> f64 {
    metric(
        &gw.metrics().await,
        "gateway_store_errors_total",
        &[("feature", feature)],
    )
}

// ---------------------------------------------------------------------------------------
// 17. Idempotency keys are shared by the gateways on one Redis
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_idempotency_keys() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let a = Arc::new(start(&redis, "deny", &up).await);
    let b = start(&redis, "deny", &up).await;

    let first = post(&a, "order-1", r#"{"n":1}"#).await;
    assert_ok(&first, "via A");
    assert!(!replayed(&first));
    let again = post(&b, "order-1", r#"{"n":1}"#).await;
    assert!(replayed(&again), "via B: {}", again.describe());
    assert_eq!(
        (again.status, &again.text),
        (first.status, &first.text),
        "via B"
    );
    assert_refused(
        &post(&b, "order-1", r#"{"n":2}"#).await,
        422,
        "idempotency_key_reused",
        "B",
    );
    assert_refused(
        &post(&a, "order-1", r#"{"n":2}"#).await,
        422,
        "idempotency_key_reused",
        "A",
    );
    assert_eq!(hits(&up), 1);

    // In flight on A: 409 on B; replayed on B once A's answer is in.
    let a2 = a.clone();
    let slow = tokio::spawn(async move { call(&a2, "GET", "/slow?ms=1500", "slow-1", "").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits(&up) < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = call(&b, "GET", "/slow?ms=1500", "slow-1", "").await;
    assert_refused(
        &busy,
        409,
        "idempotency_key_in_flight",
        "B while A is in flight",
    );
    assert_eq!(busy.header("retry-after"), Some("1"));
    let done = slow.await.unwrap();
    assert_eq!(
        (done.status, done.text.as_str()),
        (200, "slow done"),
        "{}",
        done.describe()
    );
    let again = call(&b, "GET", "/slow?ms=1500", "slow-1", "").await;
    assert!(
        replayed(&again) && again.text == "slow done",
        "{}",
        again.describe()
    );
    assert_eq!(hits(&up), 2);

    // Both answers are in Redis, each with a TTL (the route's ttl, 24 h).
    let idem = keys_when(&redis, "idem", 2).await;
    assert_eq!(idem.len(), 2, "{idem:?}");
    for (k, ttl) in &idem {
        assert!(*ttl > 86_000_000 && *ttl <= 86_400_000, "{k}: PTTL {ttl}");
    }
}

// ---------------------------------------------------------------------------------------
// 18. A webhook delivered via one gateway is a duplicate on the other
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_delivered_via_one_gateway_is_a_duplicate_on_the_other() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let a = start(&redis, "deny", &up).await;
    // The older name of the section, still accepted.
    let b = start_section("rate_limit_store", &redis, "deny", &up).await;
    let body: &[u8] = br#"{"type": "ping"}"#;

    let r = deliver(&a, "evt_shared", body).await;
    assert_ok(&r, "via A");
    assert_eq!(
        r.upstream_header("x-consumer-id").as_deref(),
        Some("webhook:std")
    );
    assert_duplicate(&deliver(&b, "evt_shared", body).await, "via B");
    assert_duplicate(&deliver(&a, "evt_shared", body).await, "via A again");
    assert_ok(&deliver(&b, "evt_other", body).await, "another event via B");
    assert_eq!(hits(&up), 2);
    // Remembered for about the tolerance (5 min), not for ever.
    let ids = keys_when(&redis, "webhook", 2).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (k, ttl) in &ids {
        assert!(*ttl > 250_000 && *ttl <= 302_000, "{k}: PTTL {ttl}");
    }
}

// ---------------------------------------------------------------------------------------
// 19. Redis down: on_error allow / deny, bounded by the timeout, recovered
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_follows_on_error_and_recovers() {
    let mut redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let allow = start(&redis, "allow", &up).await;
    let deny = start(&redis, "deny", &up).await;
    // Working first (the connections are made on first use).
    for (name, gw) in [("allow", &allow), ("deny", &deny)] {
        let key = format!("warm-up-{name}");
        assert_ok(&post(gw, &key, "{}").await, name);
        assert!(
            replayed(&post(gw, &key, "{}").await),
            "{name}: not replayed"
        );
    }
    // A Redis that does not answer (paused): bounded by the timeout (300ms).
    redis.signal("-STOP");
    let allowed = post(&allow, "paused-1", "{}").await;
    let denied = post(&deny, "paused-2", "{}").await;
    redis.signal("-CONT");
    assert_ok(&allowed, "paused, allow");
    assert_refused(&denied, 503, "store_unavailable", "paused, deny");
    for r in [&allowed, &denied] {
        assert!(
            r.took() < Duration::from_secs(2),
            "paused: {}",
            r.describe()
        );
    }
    let timeouts = |m: &str| {
        let labels = [("feature", "idempotency"), ("kind", "timeout")];
        metric(m, "gateway_store_errors_total", &labels)
    };
    assert_eq!(timeouts(&allow.metrics().await), 1.0, "allow: a timeout");
    assert_eq!(timeouts(&deny.metrics().await), 1.0, "deny: a timeout");

    redis.kill();
    let hits0 = hits(&up);

    // allow: forwarded without the feature, each time; counted.
    for i in 0..2 {
        let r = post(&allow, "down-1", "{}").await;
        assert_ok(&r, &format!("allow #{i}"));
        assert!(!replayed(&r), "allow #{i}");
        assert!(
            r.took() < Duration::from_secs(2),
            "allow #{i}: {}",
            r.describe()
        );
    }
    let r = deliver(&allow, "evt_down", b"{}").await;
    assert_ok(&r, "webhook, allow");
    assert!(r.took() < Duration::from_secs(2), "{}", r.describe());
    assert_eq!(hits(&up), hits0 + 3);
    assert!(
        store_errors(&allow, "idempotency").await >= 2.0,
        "{}",
        allow.metrics().await
    );
    assert!(
        store_errors(&allow, "webhook").await >= 1.0,
        "{}",
        allow.metrics().await
    );

    // deny: 503 store_unavailable, nothing forwarded; requests without a key go through.
    for i in 0..2 {
        let r = post(&deny, "down-2", "{}").await;
        assert_refused(&r, 503, "store_unavailable", &format!("deny #{i}"));
        assert!(
            r.took() < Duration::from_secs(2),
            "deny #{i}: {}",
            r.describe()
        );
    }
    let r = deliver(&deny, "evt_down", b"{}").await;
    assert_refused(&r, 503, "store_unavailable", "webhook, deny");
    assert!(r.took() < Duration::from_secs(2), "{}", r.describe());
    assert_eq!(hits(&up), hits0 + 3, "nothing forwarded by deny");
    let plain = finished(&deny, client().post(deny.url("/orders")).body("{}")).await;
    assert_ok(&plain, "deny, no key");
    assert!(
        store_errors(&deny, "idempotency").await >= 2.0,
        "{}",
        deny.metrics().await
    );

    // Redis back (empty): keys work again, by themselves, within seconds.
    redis.spawn().await;
    for (name, gw) in [("allow", &allow), ("deny", &deny)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        for n in 0.. {
            let key = format!("back-{name}-{n}");
            let first = post(gw, &key, "{}").await;
            let again = post(gw, &key, "{}").await;
            if first.status == 200 && !replayed(&first) && replayed(&again) {
                break;
            }
            seen.push(format!("{} / {}", first.describe(), again.describe()));
            assert!(
                Instant::now() < deadline,
                "{name}: not recovered:\n{}",
                seen.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 20. The lock of a gateway killed mid-request expires
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lock_of_a_killed_gateway_expires() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let mut a = start(&redis, "deny", &up).await;
    let b = start(&redis, "deny", &up).await;
    let path = "/short/slow?ms=3000";

    let sent = Instant::now();
    let url = a.url(path);
    let held = tokio::spawn(async move {
        let _ = client()
            .get(url)
            .header("Idempotency-Key", "crash-1")
            .send()
            .await;
    });
    while hits(&up) == 0 {
        assert!(sent.elapsed() < Duration::from_secs(3), "A never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lock = keys(&redis, "idem").await;
    assert_eq!(lock.len(), 1, "{lock:?}");
    // (connect 100ms + read 1s) x 1 try + 5 s.
    assert!(
        lock[0].1 > 4_000 && lock[0].1 <= 6_100,
        "lock PTTL {}",
        lock[0].1
    );
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(
        ok && a.wait_exit(Duration::from_secs(5)).is_some(),
        "A not killed"
    );
    let _ = held.await;

    // B: 409 while the lock lives, then forwarded (a 504 here: the upstream takes 3 s).
    let mut answers = Vec::new();
    let r = loop {
        let r = call(&b, "GET", path, "crash-1", "").await;
        let at = sent.elapsed();
        if r.status != 409 {
            break r;
        }
        assert_refused(&r, 409, "idempotency_key_in_flight", &format!("at {at:?}"));
        answers.push(at);
        assert!(at < Duration::from_secs(9), "still 409 after {at:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at = r.sent.duration_since(sent);
    assert!(
        at >= Duration::from_millis(6_000),
        "forwarded {at:?} after the lock was taken: {}",
        r.describe()
    );
    assert!(
        answers
            .last()
            .is_some_and(|t| *t >= Duration::from_millis(5_500)),
        "{answers:?}"
    );
    assert_refused(&r, 504, "upstream_timeout", "after the lock expired");
    assert_eq!(hits(&up), 2, "forwarded once the lock expired");
}
