//! Asynchronous delivery ("accept now, deliver later, nothing lost") through the real
//! `gateway` binary: a route with `deliver` answers 202 only once the message is in the
//! store, and a background worker delivers it to a controllable upstream
//! (tests/common/deliver_upstream.rs) with `Idempotency-Key` and `X-Delivery-Attempt`,
//! retrying 408/429/5xx/connection errors with backoff (honouring `Retry-After`) and moving
//! other 4xx and the last failure to the dead letters, which the admin port lists, retries
//! and drops. With Redis: a message accepted by a gateway killed with SIGKILL is delivered
//! by another one; a store that is down refuses (503 `store_unavailable`), never accepts.
//! A bounded queue answers 503 `queue_full`. Signatures (Standard Webhooks) are checked by
//! an independent Python implementation (standard library only).
//!
//! Every wait is a bounded polling loop; nothing sleeps for a fixed long time.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/deliver_upstream.rs"]
mod deliver_upstream;
#[path = "common/redis.rs"]
mod redis_server;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::reply::{send, Reply};
use common::{client, metric, ConfigDir, Gateway};
use deliver_upstream::{describe_all, Answer, Attempt, DeliverUpstream};
use redis_server::Redis;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const PATH: &str = "/v1/orders/async";
const ROUTE: &str = "submit";
/// The Standard Webhooks key behind the `whsec_` secret of the signing test.
const SIGN_KEY: &[u8] = b"test-only-delivery-signing-key!!";

/// Upstream `orders` at `target`; route `submit` (POST /v1/orders/async, no auth) with
/// `deliver: { upstream: orders, <deliver> }` and `route_extra` (more keys of the route,
/// indented by four spaces).
fn policy(target: &str, deliver: &str, route_extra: &str) -> String {
    format!(
        r#"upstreams:
  orders: {{ targets: ["{target}"] }}
routes:
  - name: {ROUTE}
    match: {{ path: {PATH}, methods: [POST] }}
    auth: none
{route_extra}    deliver:
      upstream: orders
{deliver}"#
    )
}

/// `deliver` keys: retries, a per-attempt timeout of 2 s, and the queue bound.
fn deliver_keys(attempts: u32, backoff: &str, max_backoff: &str, max_queued: u32) -> String {
    format!(
        "      retries: {{ attempts: {attempts}, backoff: {backoff}, max_backoff: {max_backoff} }}\n      timeout: 2s\n      max_queued: {max_queued}\n"
    )
}

fn redis_store(redis: &Redis) -> String {
    format!(
        "store:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 500ms, on_error: allow }}\n",
        redis.url()
    )
}

/// Starts a gateway on `extra` (gateway.yaml) and `policy`, with environment `env`, after
/// `gateway check` (with the same environment) accepted the configuration.
async fn gateway(extra: &str, policy: &str, env: &[(&str, &str)]) -> Gateway {
    let config = ConfigDir::new(extra, &[("p.yaml", policy)]);
    let out = std::process::Command::new(common::bin())
        .args(["check", "-c"])
        .arg(config.gateway_yaml())
        .envs(env.iter().copied())
        .output()
        .expect("run gateway check");
    assert!(
        out.status.success(),
        "gateway check refuses the delivery configuration (is `deliver` implemented?):\n{}{}\npolicy:\n{policy}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Gateway::start_in(config, env).await
}

/// POSTs `body` (JSON) to the delivery route with extra headers.
async fn submit(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .post(gw.url(PATH))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

/// Asserts the 202 of an accepted message and returns its delivery id.
fn accepted(r: &Reply, what: &str) -> String {
    assert_eq!(r.status, 202, "{what}: expected 202; {}", r.describe());
    let v = r.json();
    assert_eq!(v["status"], "queued", "{what}: {}", r.text);
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string id in {}", r.text))
        .to_string();
    assert!(!id.is_empty(), "{what}: empty id");
    assert_eq!(
        v["status_url"],
        format!("/deliveries/{id}"),
        "{what}: {}",
        r.text
    );
    id
}

/// Submits `body` and returns the delivery id of the 202.
async fn accept(gw: &Gateway, body: &str) -> String {
    let r = submit(gw, body, &[]).await;
    accepted(&r, &format!("POST {body}"))
}

/// Asserts a 503 with error code `code`.
fn refused(r: &Reply, code: &str, what: &str) {
    assert_eq!(
        r.status,
        503,
        "{what}: expected 503 {code}; {}",
        r.describe()
    );
    assert_eq!(r.code(), code, "{what}: {}", r.describe());
}

/// `GET /deliveries/{id}` on the admin port: (status code, JSON).
async fn delivery(gw: &Gateway, id: &str) -> (u16, Value) {
    let r = send(client().get(gw.admin_url(&format!("/deliveries/{id}")))).await;
    (r.status, r.json())
}

/// Polls `GET /deliveries/{id}` until its `status` is `want` (at most `limit`).
async fn wait_status(gw: &Gateway, id: &str, want: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (code, v) = delivery(gw, id).await;
        if code == 200 && v["status"] == want {
            assert_eq!(v["id"], id, "{v}");
            assert_eq!(v["route"], ROUTE, "{v}");
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "delivery {id} is not {want} within {limit:?}: GET answered {code} {v}; gateway output:\n{}",
                gw.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The ids in a `GET /deliveries?...` answer: a bare array, or an object with one array
/// field (for example `deliveries`); the elements are objects with an `id` or plain ids.
fn listed_ids(v: &Value) -> Vec<String> {
    let items = match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => {
            let arrays: Vec<&Vec<Value>> = o.values().filter_map(Value::as_array).collect();
            assert_eq!(
                arrays.len(),
                1,
                "expected a JSON array, or an object with exactly one array field: {v}"
            );
            arrays[0].clone()
        }
        _ => panic!("expected a JSON array or object listing deliveries: {v}"),
    };
    items
        .iter()
        .map(|e| {
            e.get("id")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
                .unwrap_or_else(|| panic!("listed delivery without an id: {e}"))
                .to_string()
        })
        .collect()
}

/// The ids of the dead letters of the route.
async fn dead_letters(gw: &Gateway) -> Vec<String> {
    let url = gw.admin_url(&format!("/deliveries?status=dead&route={ROUTE}"));
    let r = send(client().get(url)).await;
    assert_eq!(r.status, 200, "dead-letter list: {}", r.describe());
    listed_ids(&r.json())
}

fn deliveries(m: &str, outcome: &str) -> f64 {
    metric(
        m,
        "gateway_deliveries_total",
        &[("route", ROUTE), ("outcome", outcome)],
    )
}

fn gauge(m: &str, name: &str) -> f64 {
    metric(m, name, &[("route", ROUTE)])
}

/// Waits (up to metrics_when's 5 s) for the route's queue to hold `depth` messages.
async fn assert_queue_depth(gw: &Gateway, depth: f64) {
    let name = "gateway_delivery_queue_depth";
    let m = gw.metrics_when(|m| gauge(m, name) == depth).await;
    assert_eq!(gauge(&m, name), depth, "queue depth");
}

/// Asserts that at least one sample of `name` for the route is exported.
fn exported(m: &str, name: &str) {
    assert!(
        common::samples(m, name, &[("route", ROUTE)])
            .next()
            .is_some(),
        "no {name}{{route=\"{ROUTE}\"}} in /metrics:\n{}",
        m.lines()
            .filter(|l| l.contains("deliver"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// SIGKILL to a gateway, then waits until it is gone.
fn kill9(gw: &mut Gateway) {
    let pid = gw.pid().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -9 {pid} failed");
    assert!(
        gw.wait_exit(Duration::from_secs(5)).is_some(),
        "gateway {pid} still running after SIGKILL"
    );
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs the Python verifier (standard library only) over one captured attempt, with the
/// body given (possibly altered); returns (exit success, stdout + stderr).
fn python_verify(dir: &std::path::Path, secret: &str, a: &Attempt, body: &[u8]) -> (bool, String) {
    let script = dir.join("verify.py");
    std::fs::write(&script, PY_VERIFY).unwrap();
    let body_file = dir.join("body.bin");
    std::fs::write(&body_file, body).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(secret)
        .arg(a.header("webhook-id").unwrap_or(""))
        .arg(a.header("webhook-timestamp").unwrap_or(""))
        .arg(a.header_all("webhook-signature").join(" "))
        .arg(&body_file)
        .output()
        .expect("run python3 (needed by this test; never skipped)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.trim() == "ok", text)
}

/// A Standard Webhooks verifier written from the specification, independently of the
/// gateway: the secret is `whsec_` + base64 of the key; the signed content is
/// `{id}.{timestamp}.{body}`; the header holds space-separated `v1,<base64 HMAC-SHA256>`.
const PY_VERIFY: &str = r#"import base64, hashlib, hmac, sys

secret, msg_id, ts, header, body_path = sys.argv[1:6]
with open(body_path, "rb") as f:
    body = f.read()
if not secret.startswith("whsec_"):
    print("secret without whsec_ prefix"); sys.exit(2)
key = base64.b64decode(secret[len("whsec_"):])
if not msg_id or not ts.isdigit():
    print("missing webhook-id or bad webhook-timestamp"); sys.exit(2)
signed = msg_id.encode() + b"." + ts.encode() + b"." + body
expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
for entry in header.split(" "):
    version, _, sig = entry.partition(",")
    if version == "v1" and hmac.compare_digest(sig, expected):
        print("ok"); sys.exit(0)
print("mismatch: expected v1," + expected + " in " + repr(header)); sys.exit(1)
"#;

// ---------------------------------------------------------------------------------------
// 1. Accepted, then delivered as it came (memory store)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn accepted_then_delivered_with_idempotency_key_and_attempt_number() {
    let up = DeliverUpstream::start().await;
    let p = policy(
        &up.target(),
        &deliver_keys(4, "100ms", "1s", 100),
        "    rewrite: { strip_prefix: /v1 }\n",
    );
    let gw = gateway("", &p, &[]).await;

    let body = r#"{"order": "o-1", "items": [{"sku": "ABC-1234", "qty": 2}], "note": "ü"}"#;
    let r = submit(&gw, body, &[("x-order-ref", "ref-42")]).await;
    let id = accepted(&r, "first order");

    let seen = up
        .wait_for("the delivery", Duration::from_secs(10), |a| {
            a.iter().any(|a| a.ok())
        })
        .await;
    assert_eq!(seen.len(), 1, "one attempt:\n{}", describe_all(&seen));
    let a = &seen[0];
    assert_eq!(a.method, "POST", "{}", a.describe());
    assert_eq!(a.path, "/orders/async", "the path after rewrite");
    assert_eq!(a.body, body.as_bytes(), "body delivered byte for byte");
    assert_eq!(a.key(), Some(id.as_str()), "Idempotency-Key = delivery id");
    assert_eq!(a.header("x-delivery-attempt"), Some("1"));
    assert_eq!(
        a.header("x-order-ref"),
        Some("ref-42"),
        "request headers kept"
    );
    assert!(
        a.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "content-type kept: {:?}",
        a.headers
    );

    let v = wait_status(&gw, &id, "delivered", Duration::from_secs(5)).await;
    assert_eq!(v["attempts"], 1, "{v}");

    let m = gw.metrics_when(|m| deliveries(m, "delivered") >= 1.0).await;
    assert_eq!(deliveries(&m, "delivered"), 1.0, "delivered counter");
    assert_eq!(deliveries(&m, "dead"), 0.0);
    exported(&m, "gateway_delivery_queue_depth");
    exported(&m, "gateway_delivery_dead");
    assert_queue_depth(&gw, 0.0).await;

    // An unknown id is a 404.
    let (code, _) = delivery(&gw, "no-such-delivery").await;
    assert_eq!(code, 404);
}

// ---------------------------------------------------------------------------------------
// 2. Upstream down for a while, then back: everything delivered, once per id
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_down_then_back_every_message_delivered_once() {
    let up = DeliverUpstream::start().await;
    // Many tries with a small cap, so ~1.2 s of outage cannot exhaust them.
    let p = policy(&up.target(), &deliver_keys(20, "100ms", "400ms", 100), "");
    let gw = gateway("", &p, &[]).await;

    // Listener closed for ~0.6 s, then 503 for ~0.6 s, then 200.
    up.down();
    let t0 = Instant::now();
    let mut ids = BTreeMap::new();
    for n in 0..10 {
        let body = format!(r#"{{"n": {n}}}"#);
        let id = accept(&gw, &body).await;
        ids.insert(body, id);
    }
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed())).await;
    up.always(503);
    up.up().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    up.always(200);

    let seen = up
        .wait_for("10 distinct deliveries", Duration::from_secs(30), |a| {
            a.iter()
                .filter(|a| a.ok())
                .filter_map(Attempt::key)
                .collect::<BTreeSet<_>>()
                .len()
                >= 10
        })
        .await;

    // Every body always carried the key it was accepted under.
    for a in &seen {
        let want = ids
            .get(&a.body_str())
            .unwrap_or_else(|| panic!("unknown body delivered: {}", a.describe()));
        assert_eq!(a.key(), Some(want.as_str()), "{}", a.describe());
    }
    let delivered: BTreeSet<&str> = seen
        .iter()
        .filter(|a| a.ok())
        .filter_map(|a| a.key())
        .collect();
    assert_eq!(delivered.len(), 10, "{}", describe_all(&seen));
    assert_eq!(
        delivered,
        ids.values().map(String::as_str).collect(),
        "exactly the accepted ids were delivered"
    );
    // Attempt numbers go 1, 2, 3... per id among those the upstream saw (refused
    // connections are attempts the upstream never sees, so only increasing is required).
    for id in ids.values() {
        let nos: Vec<u32> = seen
            .iter()
            .filter(|a| a.key() == Some(id.as_str()))
            .map(|a| a.attempt_no().expect("X-Delivery-Attempt is a number"))
            .collect();
        assert!(
            nos.windows(2).all(|w| w[0] < w[1]),
            "attempt numbers of {id} not increasing: {nos:?}"
        );
    }
    assert!(
        seen.iter()
            .filter(|a| a.ok())
            .any(|a| a.attempt_no().unwrap_or(0) > 1),
        "some message needed more than one attempt:\n{}",
        describe_all(&seen)
    );

    let mut more_than_one = 0;
    for id in ids.values() {
        let v = wait_status(&gw, id, "delivered", Duration::from_secs(5)).await;
        let n = v["attempts"].as_u64().unwrap_or_else(|| panic!("{v}"));
        assert!(n >= 1, "{v}");
        if n > 1 {
            more_than_one += 1;
        }
    }
    assert!(more_than_one > 0, "no delivery reports attempts > 1");

    let m = gw
        .metrics_when(|m| deliveries(m, "delivered") >= 10.0)
        .await;
    assert_eq!(deliveries(&m, "delivered"), 10.0);
    assert!(deliveries(&m, "retried") > 0.0, "retried counter");
    assert_eq!(deliveries(&m, "dead"), 0.0);
}

// ---------------------------------------------------------------------------------------
// 3. Permanent 4xx: dead letters, listed, retried, deleted
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn permanent_400_is_dead_listed_retried_and_deleted() {
    let up = DeliverUpstream::start().await;
    up.always(400);
    let p = policy(&up.target(), &deliver_keys(4, "100ms", "1s", 100), "");
    let gw = gateway("", &p, &[]).await;

    let first = accept(&gw, r#"{"order": "dead-1"}"#).await;
    let second = accept(&gw, r#"{"order": "dead-2"}"#).await;
    for id in [&first, &second] {
        let v = wait_status(&gw, id, "dead", Duration::from_secs(10)).await;
        assert_eq!(v["attempts"], 1, "a 400 is not retried: {v}");
        assert!(
            !v["last_error"].is_null() && v["last_error"] != "",
            "dead with a last_error: {v}"
        );
        let seen = up.attempts_for(id);
        assert_eq!(seen.len(), 1, "{}", describe_all(&seen));
    }

    let listed = dead_letters(&gw).await;
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "both dead letters listed: {listed:?}"
    );
    let m = gw.metrics_when(|m| deliveries(m, "dead") >= 2.0).await;
    assert_eq!(deliveries(&m, "dead"), 2.0);
    assert_eq!(deliveries(&m, "retried"), 0.0, "a 400 is not retried");
    let m = gw
        .metrics_when(|m| gauge(m, "gateway_delivery_dead") == 2.0)
        .await;
    assert_eq!(gauge(&m, "gateway_delivery_dead"), 2.0, "dead-letter gauge");

    // The upstream is fixed: the first dead letter is retried and delivered.
    up.always(200);
    let r = send(client().post(gw.admin_url(&format!("/deliveries/{first}/retry")))).await;
    assert!(
        (200..300).contains(&r.status),
        "retry answered {}",
        r.describe()
    );
    wait_status(&gw, &first, "delivered", Duration::from_secs(10)).await;
    let seen = up.attempts_for(&first);
    assert_eq!(seen.len(), 2, "{}", describe_all(&seen));
    assert!(seen[1].ok());
    assert_eq!(seen[1].body, br#"{"order": "dead-1"}"#);

    // The second one is dropped.
    let r = send(client().delete(gw.admin_url(&format!("/deliveries/{second}")))).await;
    assert!(
        (200..300).contains(&r.status),
        "delete answered {}",
        r.describe()
    );
    let (code, v) = delivery(&gw, &second).await;
    assert_eq!(code, 404, "deleted delivery: {v}");
    let listed = dead_letters(&gw).await;
    assert!(
        !listed.contains(&second) && !listed.contains(&first),
        "neither is a dead letter any more: {listed:?}"
    );
    assert_eq!(
        up.attempts_for(&second).len(),
        1,
        "a dropped letter is not sent"
    );

    let m = gw
        .metrics_when(|m| gauge(m, "gateway_delivery_dead") == 0.0)
        .await;
    assert_eq!(gauge(&m, "gateway_delivery_dead"), 0.0);
    assert_eq!(deliveries(&m, "delivered"), 1.0);
}

// ---------------------------------------------------------------------------------------
// 4. Retry-After honoured
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retry_after_is_honoured() {
    let up = DeliverUpstream::start().await;
    up.script(vec![Answer::status(503).retry_after("1")]);
    // Without Retry-After the second try would come within 100 ms.
    let p = policy(&up.target(), &deliver_keys(4, "100ms", "1s", 100), "");
    let gw = gateway("", &p, &[]).await;

    let id = accept(&gw, r#"{"order": "later"}"#).await;
    let seen = up
        .wait_for("two attempts", Duration::from_secs(10), |a| a.len() >= 2)
        .await;
    assert_eq!(seen[0].status, 503);
    assert_eq!(seen[0].attempt_no(), Some(1));
    assert_eq!(seen[1].attempt_no(), Some(2));
    assert!(seen.iter().all(|a| a.key() == Some(id.as_str())));
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "second attempt {gap:?} after the first, despite Retry-After: 1"
    );
    assert!(
        gap < Duration::from_secs(5),
        "second attempt came {gap:?} after the first"
    );
    wait_status(&gw, &id, "delivered", Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// 5. Redis: the accepting gateway is killed; another delivers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_message_of_a_killed_gateway_is_delivered_by_another() {
    let redis = Redis::start().await;
    let up = DeliverUpstream::start().await;
    up.always(503);
    let p = policy(&up.target(), &deliver_keys(10, "200ms", "1s", 100), "");
    let store = redis_store(&redis);

    let mut first = gateway(&store, &p, &[]).await;
    let body = r#"{"order": "survives"}"#;
    let id = accept(&first, body).await;
    kill9(&mut first);
    let died = Instant::now();
    let before = up.attempts_for(&id);
    assert!(before.iter().all(|a| !a.ok()), "{}", describe_all(&before));

    up.always(200);
    let second = gateway(&store, &p, &[]).await;
    let seen = up
        .wait_for(
            "the delivery by the second gateway",
            Duration::from_secs(20),
            |a| a.iter().any(|a| a.ok() && a.key() == Some(id.as_str())),
        )
        .await;
    let ok = seen
        .iter()
        .find(|a| a.ok() && a.key() == Some(id.as_str()))
        .unwrap();
    assert!(ok.at > died, "delivered after the first gateway died");
    assert_eq!(ok.body, body.as_bytes());
    assert!(
        ok.attempt_no().unwrap_or(0) > before.len() as u32,
        "attempt numbers carry on across replicas: {} after {} attempt(s):\n{}",
        ok.describe(),
        before.len(),
        describe_all(&seen)
    );

    let v = wait_status(&second, &id, "delivered", Duration::from_secs(5)).await;
    assert!(v["attempts"].as_u64().unwrap_or(0) >= 1, "{v}");
    let m = second
        .metrics_when(|m| deliveries(m, "delivered") >= 1.0)
        .await;
    assert_eq!(
        deliveries(&m, "delivered"),
        1.0,
        "the second gateway delivered it"
    );
    assert_queue_depth(&second, 0.0).await;
}

/// The same when the first gateway dies in the middle of an attempt: the entry it held is
/// claimed by another after `2 × timeout` (4 s here) and delivered again, under the same
/// `Idempotency-Key` (at least once: the upstream drops the duplicate by that key).
#[tokio::test]
async fn redis_attempt_in_progress_of_a_killed_gateway_is_claimed_by_another() {
    let redis = Redis::start().await;
    let up = DeliverUpstream::start().await;
    // The first attempt is answered only after 1.5 s (within the 2 s timeout): the first
    // gateway is killed while it waits for the answer.
    up.script(vec![
        Answer::status(200).delayed(Duration::from_millis(1500))
    ]);
    let p = policy(&up.target(), &deliver_keys(10, "200ms", "1s", 100), "");
    let store = redis_store(&redis);

    let mut first = gateway(&store, &p, &[]).await;
    let body = r#"{"order": "in-flight"}"#;
    let id = accept(&first, body).await;
    let held = up
        .wait_for("the first attempt", Duration::from_secs(10), |a| {
            !a.is_empty()
        })
        .await;
    assert_eq!(held[0].key(), Some(id.as_str()));
    kill9(&mut first);
    let died = Instant::now();

    let second = gateway(&store, &p, &[]).await;
    let seen = up
        .wait_for(
            "the attempt of the second gateway",
            Duration::from_secs(20),
            |a| a.iter().filter(|a| a.key() == Some(id.as_str())).count() >= 2,
        )
        .await;
    assert_eq!(seen.len(), 2, "{}", describe_all(&seen));
    let again = &seen[1];
    assert!(again.at > died, "{}", describe_all(&seen));
    assert!(again.ok(), "{}", describe_all(&seen));
    assert_eq!(again.body, body.as_bytes());
    assert!(
        again.attempt_no().unwrap_or(0) >= 2,
        "the claimed attempt is not the first: {}",
        again.describe()
    );
    wait_status(&second, &id, "delivered", Duration::from_secs(5)).await;
    let m = second
        .metrics_when(|m| deliveries(m, "delivered") >= 1.0)
        .await;
    assert_eq!(
        deliveries(&m, "delivered"),
        1.0,
        "the second gateway delivered it"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Redis down: refused, never accepted; back: accepted and delivered
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_down_refuses_with_store_unavailable_and_recovers() {
    let mut redis = Redis::start().await;
    let up = DeliverUpstream::start().await;
    let p = policy(&up.target(), &deliver_keys(4, "100ms", "1s", 100), "");
    // on_error: allow must not let a message through that could be lost.
    let gw = gateway(&redis_store(&redis), &p, &[]).await;

    let id = accept(&gw, r#"{"order": "before"}"#).await;
    wait_status(&gw, &id, "delivered", Duration::from_secs(10)).await;

    redis.kill();
    for n in 0..3 {
        let body = format!(r#"{{"order": "while-down-{n}"}}"#);
        let r = submit(&gw, &body, &[]).await;
        refused(
            &r,
            "store_unavailable",
            &format!("request {n} while Redis is down"),
        );
        assert!(
            r.took() < Duration::from_secs(5),
            "refused only after {:?}",
            r.took()
        );
    }

    redis.spawn().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let r = submit(&gw, r#"{"order": "after"}"#, &[]).await;
        if r.status == 202 {
            break accepted(&r, "after Redis is back");
        }
        refused(&r, "store_unavailable", "while reconnecting");
        assert!(
            Instant::now() < deadline,
            "still refused 15 s after Redis came back: {}",
            r.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = up
        .wait_for(
            "the delivery after the restart",
            Duration::from_secs(20),
            |a| a.iter().any(|a| a.ok() && a.key() == Some(id.as_str())),
        )
        .await;
    assert!(
        !seen.iter().any(|a| a.body_str().contains("while-down")),
        "a refused request reached the upstream:\n{}",
        describe_all(&seen)
    );
    wait_status(&gw, &id, "delivered", Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// 7. A bounded queue
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn queue_full_answers_503_queue_full() {
    let up = DeliverUpstream::start().await;
    up.always(503);
    let p = policy(&up.target(), &deliver_keys(50, "100ms", "1s", 3), "");
    let gw = gateway("", &p, &[]).await;

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(accept(&gw, &format!(r#"{{"order": "q-{n}"}}"#)).await);
    }
    // The three are waiting for their next attempt: they still count.
    up.wait_for("the first attempts", Duration::from_secs(10), |a| {
        a.iter().filter(|a| a.attempt_no() == Some(1)).count() >= 3
    })
    .await;
    let r = submit(&gw, r#"{"order": "q-overflow"}"#, &[]).await;
    refused(&r, "queue_full", "the fourth message");

    for id in &ids {
        let (code, v) = delivery(&gw, id).await;
        assert_eq!(code, 200, "{v}");
        assert!(
            v["status"] == "queued" || v["status"] == "delivering",
            "still pending: {v}"
        );
    }
    assert!(
        !up.attempts()
            .iter()
            .any(|a| a.body_str().contains("q-overflow")),
        "the refused message was delivered"
    );
    assert_queue_depth(&gw, 3.0).await;
}

// ---------------------------------------------------------------------------------------
// 8. Signed attempts, verified by an independent implementation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn signed_attempts_verify_with_an_independent_python_implementation() {
    let secret = format!("whsec_{}", B64.encode(SIGN_KEY));
    let up = DeliverUpstream::start().await;
    up.fail_next(1, 503);
    let mut keys = deliver_keys(4, "100ms", "1s", 100);
    keys.push_str("      sign: { scheme: standard, secret_env: PARTNER_WEBHOOK_SECRET }\n");
    let p = policy(&up.target(), &keys, "");
    let gw = gateway("", &p, &[("PARTNER_WEBHOOK_SECRET", secret.as_str())]).await;

    // Spacing, key order and a non-ASCII character: signed as received, byte for byte.
    let body = "{ \"event\":\"order.created\",  \"id\": 7, \"name\": \"Zoë\" }";
    let id = accept(&gw, body).await;
    let seen = up
        .wait_for("a delivery after one retry", Duration::from_secs(10), |a| {
            a.iter().any(|a| a.ok())
        })
        .await;
    assert_eq!(seen.len(), 2, "{}", describe_all(&seen));

    let dir = tempfile::tempdir().unwrap();
    for a in &seen {
        assert_eq!(a.header("webhook-id"), Some(id.as_str()), "{:?}", a.headers);
        let ts: i64 = a
            .header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("webhook-timestamp: {:?}", a.headers));
        assert!((ts - unix_now()).abs() <= 300, "timestamp {ts} is not now");
        assert!(
            a.header("webhook-signature")
                .is_some_and(|s| s.starts_with("v1,")),
            "{:?}",
            a.headers
        );
        assert_eq!(a.body, body.as_bytes());
        let (ok, out) = python_verify(dir.path(), &secret, a, &a.body);
        assert!(
            ok,
            "the Python verifier rejects attempt {}: {out}",
            a.describe()
        );

        let mut flipped = a.body.clone();
        flipped[3] ^= 0x01;
        let (ok, out) = python_verify(dir.path(), &secret, a, &flipped);
        assert!(!ok, "a changed body must not verify: {out}");
        let (ok, out) = python_verify(dir.path(), "whsec_d3Jvbmcta2V5", a, &a.body);
        assert!(!ok, "another secret must not verify: {out}");
    }
    // The secret itself never travels.
    for a in &seen {
        assert!(
            !a.headers.iter().any(|(_, v)| v.contains(&secret)),
            "{:?}",
            a.headers
        );
    }
}

// ---------------------------------------------------------------------------------------
// 9. Validation before queuing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn validation_runs_before_queuing() {
    let up = DeliverUpstream::start().await;
    let schema = "    request:\n      schema: { type: object, required: [sku], properties: { sku: { type: string } } }\n";
    let p = policy(&up.target(), &deliver_keys(4, "100ms", "1s", 100), schema);
    let gw = gateway("", &p, &[]).await;

    let r = submit(&gw, r#"{"qty": 1}"#, &[]).await;
    assert_eq!(r.status, 400, "invalid body: {}", r.describe());
    assert_eq!(r.code(), "invalid_request", "{}", r.describe());
    assert!(r.json().get("id").is_none(), "no delivery id: {}", r.text);
    let r = submit(&gw, "not json", &[]).await;
    assert_eq!(r.status, 400, "not JSON: {}", r.describe());

    // Nothing queued: once a valid message (sent after the invalid ones) has gone
    // through, the upstream has seen that one only.
    let id = accept(&gw, r#"{"sku": "ABC-1234", "qty": 1}"#).await;
    wait_status(&gw, &id, "delivered", Duration::from_secs(10)).await;
    let seen = up.attempts();
    assert_eq!(seen.len(), 1, "{}", describe_all(&seen));
    assert_eq!(seen[0].key(), Some(id.as_str()));
    let m = gw.metrics_when(|m| deliveries(m, "delivered") >= 1.0).await;
    assert_eq!(deliveries(&m, "delivered"), 1.0);
    assert_eq!(deliveries(&m, "dead"), 0.0);
}
