//! Calendar quotas through the real binary: per-day and per-month counts of admitted
//! requests per consumer, decided together with the rate limits (a request refused by one
//! counts in neither), 429 `quota_exceeded` with `Retry-After` until the next UTC midnight
//! or first of the month, `X-Quota-*` headers, `GET /consumers/{id}/usage`; in memory, and
//! in a real Redis where counts survive a restart and are exact across two gateways.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/redis_cluster.rs"]
mod redis_cluster;
#[path = "common/redis.rs"]
mod redis_server;

use common::{client, ConfigDir, Gateway, Upstream};
use redis_server::Redis;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

const KEY: &str = "test-only-quota-key";

/// Consumer `acme` (API key) on a plan with the given rate limits and quotas.
fn policy(up: &Upstream, limits: &str, quotas: &str) -> String {
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(KEY.as_bytes())));
    format!(
        r#"upstreams:
  up: {{ targets: ["{up}"] }}
api_keys: {{ header: X-API-Key }}
plans:
  metered:
    rate_limits: [{limits}]
    quotas: [{quotas}]
consumers:
  acme: {{ api_keys: ["{hash}"], plan: metered }}
  idle: {{ api_keys: ["sha256:{idle}"] }}
routes:
  - {{ name: data, match: {{ path: /data }}, auth: [api_key], upstream: up }}
"#,
        up = up.target(),
        idle = hex::encode(Sha256::digest(b"another-key")),
    )
}

fn redis_store(redis: &Redis) -> String {
    format!(
        "store:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 500ms, on_error: deny }}\n",
        redis.url()
    )
}

/// Seconds until the next UTC midnight.
fn until_midnight() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    86_400 - now % 86_400
}

async fn call(gw: &Gateway) -> reqwest::Response {
    client()
        .get(gw.url("/data"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> u64 {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers()))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn usage(gw: &Gateway, id: &str) -> (u16, Value) {
    let r = client()
        .get(gw.admin_url(&format!("/consumers/{id}/usage")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The day's quota of 3: three admitted with the headers counting down, then refused
/// until midnight; the usage endpoint agrees.
async fn a_day_quota_runs_out_then_waits_for_midnight(gw: &Gateway) {
    for remaining in [2, 1, 0] {
        let r = call(gw).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-quota-limit"), 3);
        assert_eq!(header(&r, "x-quota-remaining"), remaining);
        let reset = header(&r, "x-quota-reset");
        assert!(reset.abs_diff(until_midnight()) <= 2, "reset {reset}");
    }
    let r = call(gw).await;
    assert_eq!(r.status(), 429);
    let retry = header(&r, "retry-after");
    assert!(retry.abs_diff(until_midnight()) <= 2, "Retry-After {retry}");
    assert_eq!(header(&r, "x-quota-remaining"), 0);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded");

    let (status, u) = usage(gw, "acme").await;
    assert_eq!(status, 200);
    assert_eq!(u["consumer"], "acme");
    let day = &u["quotas"][0];
    assert_eq!(day["per"], "day");
    assert_eq!(
        (day["limit"].as_u64(), day["used"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(day["remaining"], 0);
    let midnight = SystemTime::now() + Duration::from_secs(until_midnight());
    let want = humantime::format_rfc3339_seconds(midnight).to_string();
    assert_eq!(day["resets_at"], want.as_str(), "{u}");
    let month = &u["quotas"][1];
    assert_eq!(month["per"], "month");
    // The refused request counted in neither quota.
    assert_eq!(month["used"], 3);
    assert!(month["resets_at"]
        .as_str()
        .unwrap()
        .ends_with("-01T00:00:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_a_day_quota_runs_out_until_midnight() {
    let up = Upstream::start("up").await;
    let p = policy(
        &up,
        "",
        "{ requests: 3, per: day }, { requests: 1000, per: month }",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    a_day_quota_runs_out_then_waits_for_midnight(&gw).await;
    // A consumer without a plan has no quotas; an unknown one is not found.
    let (status, u) = usage(&gw, "idle").await;
    assert_eq!((status, u["quotas"].as_array().unwrap().len()), (200, 0));
    let (status, u) = usage(&gw, "nobody").await;
    assert_eq!(status, 404);
    assert_eq!(u["error"]["code"], "unknown_consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_quotas_are_all_or_nothing() {
    let up = Upstream::start("up").await;
    // Two a minute, five a day: the third request is refused by the rate limit and not
    // counted by the quota.
    let p = policy(&up, "{ requests: 2, per: 1m }", "{ requests: 5, per: day }");
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    for _ in 0..2 {
        assert_eq!(call(&gw).await.status(), 200);
    }
    let r = call(&gw).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    let (_, u) = usage(&gw, "acme").await;
    assert_eq!(u["quotas"][0]["used"], 2, "{u}");

    // And the other way: a used-up quota takes nothing from the rate limit.
    let p = policy(
        &up,
        "{ requests: 5, per: 1m }",
        "{ requests: 1, per: month }",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let r = call(&gw).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-remaining"), 4);
    // A refused request's headers say what the limit would leave after it (3); were the
    // refusals counted by the rate limit, that would fall with each one.
    for _ in 0..3 {
        let r = call(&gw).await;
        assert_eq!(r.status(), 429);
        assert_eq!(header(&r, "ratelimit-remaining"), 3);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "quota_exceeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_counts_survive_a_restart_and_are_exact_across_gateways() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let p = policy(
        &up,
        "",
        "{ requests: 3, per: day }, { requests: 1000, per: month }",
    );
    let first = Gateway::start(&redis_store(&redis), &[("p.yaml", &p)]).await;
    assert_eq!(call(&first).await.status(), 200);
    drop(first);
    // A new process on the same Redis: the count is still there.
    let gw = Gateway::start(&redis_store(&redis), &[("p.yaml", &p)]).await;
    let (_, u) = usage(&gw, "acme").await;
    assert_eq!(u["quotas"][0]["used"], 1, "{u}");
    let r = call(&gw).await;
    assert_eq!(header(&r, "x-quota-remaining"), 1);
    assert_eq!(call(&gw).await.status(), 200);
    let r = call(&gw).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded");

    // Two gateways, 40 concurrent requests, a month quota of 25 (fresh counts under
    // another plan name would share them: the counts are the consumer's, so use a new
    // Redis).
    let redis = Redis::start().await;
    let p = policy(&up, "", "{ requests: 25, per: month }");
    let a = Gateway::start(&redis_store(&redis), &[("p.yaml", &p)]).await;
    let b = Gateway::start(&redis_store(&redis), &[("p.yaml", &p)]).await;
    let calls = (0..40).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        call(gw)
    });
    let answers = futures::future::join_all(calls).await;
    let admitted = answers.iter().filter(|r| r.status() == 200).count();
    let refused = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!((admitted, refused), (25, 15));
    let (_, u) = usage(&b, "acme").await;
    assert_eq!(u["quotas"][0]["used"], 25, "{u}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_mistakes_are_file_line_errors() {
    let up = Upstream::start("up").await;
    for (quotas, want) in [
        (
            "{ requests: 5, per: day }, { requests: 9, per: day }",
            "at most one quota per period",
        ),
        ("{ requests: 0, per: month }", "at least 1 request"),
        ("{ requests: 5, per: week }", "unknown variant"),
    ] {
        let config = ConfigDir::new("", &[("p.yaml", &policy(&up, "", quotas))]);
        let (ok, out) = config.check();
        assert!(!ok, "{quotas}: {out}");
        assert!(
            out.contains("p.yaml:") && out.contains(want),
            "{quotas}: {out}"
        );
    }
}

/// On a Redis Cluster the plan's keys (tagged by consumer) and a route limit's keys
/// (tagged by its header value) live in different slots: each client's run in turn, and
/// when a later one refuses, what the earlier one counted is given back. Quotas stay exact
/// across two gateways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_quotas_are_exact_and_a_refusal_elsewhere_is_given_back() {
    let cluster = redis_cluster::RedisCluster::start().await;
    let up = Upstream::start("up").await;
    let store = format!(
        "store:\n  backend: redis\n  redis: {{ cluster: {:?}, timeout: 500ms, on_error: deny }}\n",
        cluster.nodes()
    );
    let route = "  - name: tenant\n    match: { path: /tenant }\n    auth: [api_key]\n    \
                 rate_limit: { key: \"header:X-Tenant\", limits: [ { requests: 2, per: 1m } ] }\n    \
                 upstream: up\n";
    let p = policy(&up, "", "{ requests: 10, per: day }") + route;
    let a = Gateway::start(&store, &[("p.yaml", &p)]).await;
    let b = Gateway::start(&store, &[("p.yaml", &p)]).await;
    let tenant = |gw: &Gateway| {
        client()
            .get(gw.url("/tenant"))
            .header("X-API-Key", KEY)
            .header("X-Tenant", "t1")
            .send()
    };
    // The tenant's limit (2 a minute) admits two; the two it refuses were first counted by
    // acme's quota (its slot runs first) and must be given back.
    let mut statuses = Vec::new();
    for gw in [&a, &b, &a, &b] {
        statuses.push(tenant(gw).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let (_, u) = usage(&b, "acme").await;
    assert_eq!(u["quotas"][0]["used"], 2, "{u}");
    // The day's quota of 10, across both gateways and concurrently: 8 more, exactly.
    let calls = (0..16).map(|i| call(if i % 2 == 0 { &a } else { &b }));
    let answers = futures::future::join_all(calls).await;
    let admitted = answers.iter().filter(|r| r.status() == 200).count();
    assert_eq!(admitted, 8);
    let (_, u) = usage(&a, "acme").await;
    assert_eq!(u["quotas"][0]["used"], 10, "{u}");
}
