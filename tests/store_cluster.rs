//! The shared store on a real three-master Redis Cluster, end to end: two real `gateway`
//! processes on one cluster (one configured with `store.redis.cluster`, the other with a
//! `redis+cluster://` URL) admit exactly a limit together, share idempotency keys and
//! webhook ids, and hear each other's cache purges; when a master is killed, requests whose
//! keys lived on it follow `on_error` (allow: admitted; deny: 503 `rate_limit_unavailable`)
//! within a bound, while keys on the surviving masters stay limited exactly; a master that
//! answers nothing (SIGSTOP) costs its keys the store's timeout only; `gateway check`
//! refuses `url` with `cluster`, an empty `cluster`, and a brace in `prefix`, with file:line.
//!
//! `redis-server` and `redis-cli` must be installed: these tests fail, never skip, without.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cache_upstream.rs"]
mod cache_upstream;
mod common;
#[path = "common/redis_cluster.rs"]
mod redis_cluster;

use base64::Engine as _;
use common::reply::{assert_ok, send, Reply};
use common::{client, line_of, ConfigDir, Gateway, Upstream};
use hmac::{Hmac, Mac};
use redis_cluster::RedisCluster;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const STD_KEY: &[u8] = b"test-only-cluster-webhook-key";

/// Every answer while a master is down must come within this (store timeout: 300 ms).
const BOUND: Duration = Duration::from_secs(3);

fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(STD_KEY)
    )
}

/// The store section: gateway `0` names the nodes in `cluster`, gateway `1` in a URL.
fn store(cluster: &RedisCluster, which: usize, on_error: &str) -> String {
    let target = if which == 0 {
        format!("cluster: {:?}", cluster.nodes())
    } else {
        format!("url: \"{}\"", cluster.url())
    };
    format!(
        "store:\n  backend: redis\n  redis: {{ {target}, timeout: 300ms, on_error: {on_error} }}\n"
    )
}

/// Upstream `up`; routes `limited` (`/limited`, 5 a minute per `X-Tenant`), `hook`
/// (Standard Webhooks) and `any` (`/*`, idempotency keys on POST).
fn policy(target: &str) -> String {
    format!(
        r#"upstreams:
  up:
    targets: ["{target}"]
webhook_verifiers:
  std: {{ scheme: standard, secrets_env: [WH_STD], tolerance: 5m }}
routes:
  - name: limited
    match: {{ path: /limited }}
    auth: none
    rate_limit: {{ key: "header:X-Tenant", limits: [ {{ requests: 5, per: 1m }} ] }}
    upstream: up
  - name: hook
    match: {{ path: /hook, methods: [POST] }}
    auth: [webhook:std]
    upstream: up
  - name: any
    match: {{ path: /* }}
    auth: none
    idempotency: {{ methods: [POST] }}
    upstream: up
"#
    )
}

async fn start(cluster: &RedisCluster, which: usize, on_error: &str, up: &Upstream) -> Gateway {
    let config = ConfigDir::new(
        &store(cluster, which, on_error),
        &[("p.yaml", &policy(&up.target()))],
    );
    Gateway::start_in(config, &[("WH_STD", &whsec())]).await
}

/// Sends `req` and waits for its access-log line (written once the store was updated).
async fn finished(gw: &Gateway, req: reqwest::RequestBuilder) -> Reply {
    let r = send(req).await;
    if let Some(id) = r.header("x-request-id").map(str::to_string) {
        gw.wait_log(|l| l["request_id"] == id.as_str()).await;
    }
    r
}

/// GET `/limited` as `tenant`, asserting it is answered within [`BOUND`].
async fn limited(gw: &Gateway, tenant: &str) -> Reply {
    let t = Instant::now();
    let r = send(client().get(gw.url("/limited")).header("X-Tenant", tenant)).await;
    assert!(
        t.elapsed() < BOUND,
        "{tenant}: answered after {:?}: {}",
        t.elapsed(),
        r.describe()
    );
    r
}

fn assert_limited(r: &Reply, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.describe());
    assert_eq!(r.code(), "rate_limited", "{what}: {}", r.describe());
}

/// Sends `n` requests as `tenant`, alternating between the gateways; the number admitted.
async fn admitted(gws: &[&Gateway], tenant: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let r = limited(gws[i % gws.len()], tenant).await;
        match r.status {
            200 => ok += 1,
            _ => assert_limited(&r, &format!("{tenant} #{i}")),
        }
    }
    ok
}

/// The master holding the rate-limit key of `tenant` (its key names the tenant).
fn owner_of(cluster: &RedisCluster, tenant: &str) -> usize {
    let keys = cluster.keys();
    let found: Vec<_> = keys.iter().filter(|(k, _)| k.contains(tenant)).collect();
    assert_eq!(found.len(), 1, "{tenant}'s key among {keys:?}");
    assert_eq!(
        found[0].1,
        cluster.owner(&found[0].0),
        "stored on its slot's master"
    );
    found[0].1
}

// ---------------------------------------------------------------------------------------
// 1. Configuration
// ---------------------------------------------------------------------------------------

#[test]
fn check_refuses_url_with_cluster_an_empty_cluster_and_a_braced_prefix_with_file_and_line() {
    let p = "upstreams:\n  up:\n    targets: [\"127.0.0.1:1\"]\nroutes:\n  - name: r\n    match: { path: /r }\n    auth: none\n    upstream: up\n";
    let good = [
        "store:\n  backend: redis\n  redis: { cluster: [\"127.0.0.1:7000\", \"127.0.0.1:7001\"] }\n",
        "store:\n  backend: redis\n  redis: { url: \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001/\" }\n",
    ];
    for g in good {
        let (ok, out) = ConfigDir::new(g, &[("p.yaml", p)]).check();
        assert!(ok, "{g}: {out}");
    }
    // (configuration, what the message says, the line it points at)
    let bad = [
        (
            "store:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:1\n    cluster: [\"127.0.0.1:7000\"]\n",
            "both set",
            "  redis:",
        ),
        (
            "store:\n  backend: redis\n  redis:\n    cluster: []\n",
            "is empty",
            "  redis:",
        ),
        (
            "store:\n  backend: redis\n  redis:\n    cluster: [\"no-port\"]\n",
            "not host:port",
            "  redis:",
        ),
        (
            "store:\n  backend: redis\n  redis:\n    url: \"redis+cluster:///\"\n",
            "is empty",
            "  redis:",
        ),
        (
            "store:\n  backend: redis\n  redis:\n    cluster: [\"127.0.0.1:7000\"]\n    prefix: \"gw{a}:\"\n",
            "has a brace",
            "    prefix:",
        ),
    ];
    for (g, message, line) in bad {
        let c = ConfigDir::new(g, &[("p.yaml", p)]);
        let (ok, out) = c.check();
        assert!(!ok, "{g}: accepted: {out}");
        let yaml = std::fs::read_to_string(c.gateway_yaml()).unwrap();
        let at = format!("{}:{}", c.gateway_yaml().display(), line_of(&yaml, line));
        assert!(out.contains(&at), "{g}: expected {at} in {out}");
        assert!(out.contains(message), "{g}: expected {message:?} in {out}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. Two gateways on one cluster admit exactly the limit together, on every master
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_rate_limits_across_the_masters() {
    let cluster = RedisCluster::start().await;
    let up = Upstream::start("up").await;
    let a = start(&cluster, 0, "deny", &up).await;
    let b = start(&cluster, 1, "deny", &up).await;

    let t = Instant::now();
    let mut masters = std::collections::HashSet::new();
    for i in 0..9 {
        let tenant = format!("tenant-{i}-x");
        assert_eq!(admitted(&[&a, &b], &tenant, 11).await, 5, "{tenant}");
        masters.insert(owner_of(&cluster, &tenant));
    }
    assert!(
        masters.len() >= 2,
        "nine tenants' keys all on one master: {masters:?}"
    );
    eprintln!("99 limited requests in {:?}", t.elapsed());
}

// ---------------------------------------------------------------------------------------
// 3. Idempotency keys and webhook ids are shared
// ---------------------------------------------------------------------------------------

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

async fn post(gw: &Gateway, key: &str, body: &str) -> Reply {
    let req = client()
        .post(gw.url("/orders"))
        .header("Idempotency-Key", key)
        .body(body.to_string());
    finished(gw, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_and_webhook_ids_are_shared_by_the_gateways() {
    let cluster = RedisCluster::start().await;
    let up = Upstream::start("up").await;
    let a = start(&cluster, 0, "deny", &up).await;
    let b = start(&cluster, 1, "deny", &up).await;
    let hits = || up.hits.load(Ordering::SeqCst);

    for i in 0..6 {
        let key = format!("order-{i}");
        let first = post(&a, &key, r#"{"n":1}"#).await;
        assert_ok(&first, &key);
        assert_eq!(first.header("idempotent-replayed"), None, "{key}");
        let again = post(&b, &key, r#"{"n":1}"#).await;
        assert_eq!(
            again.header("idempotent-replayed"),
            Some("true"),
            "{key} via B: {}",
            again.describe()
        );
        assert_eq!((again.status, &again.text), (first.status, &first.text));
        let reused = post(&b, &key, r#"{"n":2}"#).await;
        assert_eq!(reused.status, 422, "{}", reused.describe());
        assert_eq!(reused.code(), "idempotency_key_reused");
    }
    assert_eq!(hits(), 6, "one upstream call per key");

    for i in 0..6 {
        let id = format!("msg_{i}");
        let r = deliver(&a, &id, b"{}").await;
        assert_ok(&r, &id);
        let dup = deliver(&b, &id, b"{}").await;
        assert_eq!(dup.status, 200, "{id}: {}", dup.describe());
        assert_eq!(dup.header("webhook-duplicate"), Some("true"), "{id} via B");
    }
    assert_eq!(hits(), 12, "duplicates never reach the upstream");

    let keys = cluster.keys();
    let masters: std::collections::HashSet<_> = keys.iter().map(|(_, m)| *m).collect();
    assert!(
        keys.len() >= 12 && masters.len() >= 2,
        "keys spread: {keys:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. A cache purge reaches the other gateway, also once its pub/sub node is gone
// ---------------------------------------------------------------------------------------

async fn warm(gw: &Gateway, path: &str) {
    for _ in 0..3 {
        let r = cache_upstream::get(gw, path, &[]).await;
        assert_eq!(r.status, 200, "{}", cache_upstream::show(&r));
        if cache_upstream::xc(&r) == "HIT" {
            return;
        }
    }
    panic!("{path} never became a HIT on {}", gw.url(""));
}

/// Purges `catalog` on `a` and waits (at most 5 s) until `b` misses `path`.
async fn purge_reaches(a: &Gateway, b: &Gateway, path: &str, what: &str) {
    warm(a, path).await;
    warm(b, path).await;
    let (status, body) = cache_upstream::purge(a, r#"{"route":"catalog"}"#).await;
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(body["published"], true, "{what}: {body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = cache_upstream::get(b, path, &[]).await;
        if cache_upstream::xc(&r) == "MISS" {
            return;
        }
        cache_upstream::expect(&r, 200, "HIT", what);
        assert!(
            Instant::now() < deadline,
            "{what}: B still serves the purged entry; B's output:\n{}",
            b.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_the_other_gateway_even_without_the_first_node() {
    let mut cluster = RedisCluster::start().await;
    let up = cache_upstream::Origin::start().await;
    let mut gws = Vec::new();
    for which in 0..2 {
        let store = store(&cluster, which, "allow");
        let c = ConfigDir::new(&store, &[("p.yaml", &cache_upstream::policy(&up.target()))]);
        gws.push(Gateway::start_in(c, &[]).await);
    }
    let (a, b) = (&gws[0], &gws[1]);
    purge_reaches(a, b, "/v1/catalog/1", "A to B").await;
    purge_reaches(b, a, "/v1/catalog/2", "B to A").await;

    // Both subscribe (and publish) through the first node of their list: kill it.
    cluster.kill(0);
    // Pub/sub is fire and forget: a purge published before a gateway has subscribed again
    // (through the next node) is not heard. Wait for both to be listening again.
    for gw in [a, b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while gw.output().matches("listening for cache purges").count() < 2 {
            assert!(
                Instant::now() < deadline,
                "not subscribed again: {}",
                gw.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    purge_reaches(a, b, "/v1/catalog/3", "A to B without node 0").await;
    purge_reaches(b, a, "/v1/catalog/4", "B to A without node 0").await;
}

// ---------------------------------------------------------------------------------------
// 5. A master lost: its keys follow on_error, the others stay exact, nothing hangs
// ---------------------------------------------------------------------------------------

/// Twelve tenants, one request each through `gw` (1 of their 5 used), and the master
/// holding each one's key.
async fn spread(cluster: &RedisCluster, gw: &Gateway) -> (Vec<String>, Vec<usize>) {
    let tenants: Vec<String> = (0..12).map(|i| format!("tenant-{i}-x")).collect();
    let mut owners = Vec::new();
    for t in &tenants {
        assert_ok(&limited(gw, t).await, t);
        owners.push(owner_of(cluster, t));
    }
    (tenants, owners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_master_affects_only_its_keys() {
    let mut cluster = RedisCluster::start().await;
    let up = Upstream::start("up").await;
    let allow = start(&cluster, 0, "allow", &up).await;
    let deny = start(&cluster, 1, "deny", &up).await;

    let (tenants, owners) = spread(&cluster, &allow).await;
    let victim = owners[0];
    let lost: Vec<&String> = (0..tenants.len())
        .filter(|&i| owners[i] == victim)
        .map(|i| &tenants[i])
        .collect();
    let kept: Vec<&String> = (0..tenants.len())
        .filter(|&i| owners[i] != victim)
        .map(|i| &tenants[i])
        .collect();
    assert!(
        !kept.is_empty(),
        "every tenant on master {victim}: {owners:?}"
    );

    cluster.kill(victim);
    let killed = Instant::now();
    // Right after the kill (the cluster has not noticed yet), then once the other masters
    // marked it failed. Kept tenants used 1 of their 5 before: 4 more now, then none.
    for (phase, left) in [("right after the kill", 4), ("once marked failed", 0)] {
        if left == 0 {
            cluster.wait_failed(victim).await;
            eprintln!("master {victim} marked failed after {:?}", killed.elapsed());
        }
        let t = Instant::now();
        for tenant in &lost {
            for i in 0..7 {
                let r = limited(&allow, tenant).await;
                assert_ok(&r, &format!("{phase}: {tenant} #{i} on allow"));
                let r = limited(&deny, tenant).await;
                assert_eq!(r.status, 503, "{phase}: {tenant} on deny: {}", r.describe());
                assert_eq!(r.code(), "rate_limit_unavailable", "{phase}: {tenant}");
            }
        }
        eprintln!(
            "{phase}: {} lost tenants, 14 requests each, in {:?}",
            lost.len(),
            t.elapsed()
        );
        // A refusal (429) proves the store answered: on error, `allow` would admit and
        // `deny` answer 503.
        let t = Instant::now();
        for tenant in &kept {
            assert_eq!(
                admitted(&[&allow, &deny], tenant, 8).await,
                left,
                "{phase}: {tenant}"
            );
        }
        eprintln!(
            "{phase}: {} kept tenants, 8 requests each, in {:?}",
            kept.len(),
            t.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. A master that answers nothing (stopped): bounded by the timeout, others still exact
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_master_costs_its_keys_the_timeout_only() {
    let cluster = RedisCluster::start().await;
    let up = Upstream::start("up").await;
    let allow = start(&cluster, 0, "allow", &up).await;
    let deny = start(&cluster, 1, "deny", &up).await;
    let (tenants, owners) = spread(&cluster, &allow).await;
    let victim = owners[0];
    // `deny` has served nothing yet: it is ready only once its store connections are up,
    // so that its first requests do not discover the slot map from the silent master.
    for gw in [&allow, &deny] {
        gw.wait_output("redis store connected").await;
    }
    cluster.signal(victim, "-STOP");
    let t = Instant::now();
    for (i, tenant) in tenants.iter().enumerate() {
        if owners[i] == victim {
            assert_ok(
                &limited(&allow, tenant).await,
                &format!("{tenant} on allow"),
            );
            let r = limited(&deny, tenant).await;
            assert_eq!(r.status, 503, "{tenant} on deny: {}", r.describe());
        } else {
            assert_eq!(admitted(&[&allow, &deny], tenant, 8).await, 4, "{tenant}");
        }
    }
    eprintln!("silent master: 12 tenants in {:?}", t.elapsed());
    cluster.signal(victim, "-CONT");
}
