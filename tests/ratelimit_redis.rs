//! Per-client rate limiting with the Redis store, end to end: real `redis-server`
//! processes on free loopback ports, real `gateway` processes sharing them. Several
//! gateways admit no more than the limit together; a Redis that is down or does not answer
//! is handled as `on_error` says (allow: proxied without `RateLimit-*` headers; deny:
//! 503 `rate_limit_unavailable`), counted in `gateway_rate_limit_store_errors_total`, never
//! waited on beyond the timeout; and the gateway recovers by itself when Redis is back.
//!
//! `redis-server` must be installed: these tests fail, never skip, without it.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use common::reply::{assert_ok, send, Reply};
use common::{client, metric, ConfigDir, Gateway, Upstream};
use redis_server::Redis;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers: configuration, requests, metrics
// ---------------------------------------------------------------------------------------

/// The `rate_limit_store` section for `redis`.
fn store(redis: &Redis, timeout: &str, on_error: &str) -> String {
    format!(
        "rate_limit_store:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: {timeout}, on_error: {on_error} }}\n",
        redis.url()
    )
}

/// Upstream `up` at `target`; route `/limited` keyed by `X-Tenant`, `limits` per it, and
/// route `/open` without limits.
fn policy(target: &str, limits: &str) -> String {
    format!(
        "upstreams:\n  up:\n    targets: [\"{target}\"]\nroutes:\n  - name: limited\n    match: {{ path: /limited }}\n    auth: none\n    rate_limit:\n      key: header:X-Tenant\n      limits: [ {limits} ]\n    upstream: up\n  - name: open\n    match: {{ path: /open }}\n    auth: none\n    upstream: up\n"
    )
}

async fn start_gateway(
    redis: &Redis,
    timeout: &str,
    on_error: &str,
    limits: &str,
    up: &Upstream,
) -> Gateway {
    Gateway::start_in(
        ConfigDir::new(
            &store(redis, timeout, on_error),
            &[("p.yaml", &policy(&up.target(), limits))],
        ),
        &[],
    )
    .await
}

/// GET `path` as tenant `tenant` (on `c`, so concurrent requests can share one client).
async fn get_with(c: &reqwest::Client, gw: &Gateway, path: &str, tenant: &str) -> Reply {
    send(c.get(gw.url(path)).header("X-Tenant", tenant)).await
}

/// GET `/limited` as tenant `tenant`.
async fn get(gw: &Gateway, tenant: &str) -> Reply {
    get_with(&client(), gw, "/limited", tenant).await
}

/// Asserts a 200 decided by the store: proxied, with the RateLimit-* headers.
fn assert_admitted(r: &Reply, what: &str) -> (u64, u64) {
    assert_ok(r, what);
    let (l, rem, _) = r.rl();
    (l, rem)
}

fn assert_limited(r: &Reply, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.describe());
    assert_eq!(r.code(), "rate_limited", "{what}: {}", r.describe());
    assert!(
        r.number("retry-after").is_some_and(|s| s >= 1),
        "{what}: Retry-After: {}",
        r.describe()
    );
}

/// `gateway_rate_limit_store_errors_total` of `kind`.
async fn store_errors(gw: &Gateway, kind: &str) -> f64 {
    metric(
        &gw.metrics().await,
        "gateway_rate_limit_store_errors_total",
        &[("kind", kind)],
    )
}

/// Requests `/limited` as `tenant` every 100 ms until `done` accepts an answer, for at
/// most `limit`; every answer before that must satisfy `meanwhile`. Returns the accepted
/// answer.
async fn poll_until(
    gw: &Gateway,
    tenant: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Reply) -> bool,
    meanwhile: impl Fn(&Reply),
) -> Reply {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let r = get(gw, tenant).await;
        if done(&r) {
            return r;
        }
        meanwhile(&r);
        seen.push(r.describe());
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; answers:\n{}\ngateway output:\n{}",
            seen.join("\n"),
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls tenant `t` until it is refused again (for up to 10 s, every answer before that
/// proxied), `after` what; asserts the refusal is a 429 `rate_limited` and returns it.
async fn limited_again(gw: &Gateway, after: &str) -> Reply {
    let r = poll_until(
        gw,
        "t",
        Duration::from_secs(10),
        &format!("limited again {after}"),
        |r| r.status == 429,
        |r| assert_ok(r, &format!("until limited again {after}")),
    )
    .await;
    assert_limited(&r, after);
    r
}

// ---------------------------------------------------------------------------------------
// 1. Two gateways on one Redis admit no more than the limit together
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_quota() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let limits = "{ requests: 5, per: 1m, burst: 5 }";
    let g1 = start_gateway(&redis, "1s", "deny", limits, &up).await;
    let g2 = start_gateway(&redis, "1s", "deny", limits, &up).await;
    let gws = [&g1, &g2];

    // Sequentially, alternating: the shared state counts down across both.
    let mut admitted = 0;
    for i in 0..20usize {
        let r = get(gws[i % 2], "seq").await;
        if i < 5 {
            let (l, rem) = assert_admitted(&r, &format!("seq #{i} via gateway {}", i % 2 + 1));
            assert_eq!((l, rem), (5, 4 - i as u64), "seq #{i}: {}", r.describe());
            admitted += 1;
        } else {
            assert_limited(&r, &format!("seq #{i} via gateway {}", i % 2 + 1));
            let (l, rem, _) = r.rl();
            assert_eq!((l, rem), (5, 0), "seq #{i}: {}", r.describe());
        }
    }
    assert_eq!(admitted, 5);

    // Concurrently, another tenant: 20 requests at once, half on each gateway.
    let c = client();
    let replies = futures::future::join_all(
        (0..20).map(|i| get_with(&c, gws[i % 2], "/limited", "concurrent")),
    )
    .await;
    let all: Vec<String> = replies.iter().map(Reply::describe).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        (ok, limited),
        (5, 15),
        "admitted / refused of 20 concurrent; answers:\n{}",
        all.join("\n")
    );
    for r in &replies {
        if r.status == 200 {
            assert_admitted(r, "concurrent, admitted");
        } else {
            assert_limited(r, "concurrent, refused");
        }
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 10);

    let refused: f64 = futures::future::join_all(gws.iter().map(|g| g.metrics()))
        .await
        .iter()
        .map(|m| metric(m, "gateway_rate_limited_total", &[("route", "limited")]))
        .sum();
    assert_eq!(refused, 30.0, "429s counted over both gateways");
    for g in gws {
        assert_eq!(
            store_errors(g, "timeout").await + store_errors(g, "error").await,
            0.0
        );
    }

    // The state is in Redis, under the default prefix only.
    let keys = redis.keys().await;
    assert!(!keys.is_empty(), "no rate-limit state in redis");
    assert!(
        keys.iter().all(|k| k.starts_with("gateway:rl:")),
        "keys outside the prefix: {keys:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Redis down, on_error allow: proxied; recovered when Redis is back
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_with_on_error_allow_proxies_then_recovers() {
    let mut redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let gw = start_gateway(&redis, "500ms", "allow", "{ requests: 2, per: 1m }", &up).await;

    assert_eq!(assert_admitted(&get(&gw, "t").await, "before #1"), (2, 1));
    assert_eq!(assert_admitted(&get(&gw, "t").await, "before #2"), (2, 0));
    assert_limited(&get(&gw, "t").await, "before #3");

    redis.kill();
    // Every request is proxied, without RateLimit-* headers (no decision was made).
    for i in 0..6 {
        let r = get(&gw, "t").await;
        assert_ok(&r, &format!("redis down #{i}"));
        assert!(!r.has_rl(), "redis down #{i}: {}", r.describe());
        assert!(
            r.took() < Duration::from_secs(3),
            "redis down #{i}: {}",
            r.describe()
        );
    }
    let errors = store_errors(&gw, "error").await + store_errors(&gw, "timeout").await;
    assert!(
        errors >= 6.0,
        "each request let through counted: {}",
        gw.metrics().await
    );
    // A route without limits is unaffected.
    let r = get_with(&client(), &gw, "/open", "t").await;
    assert_ok(&r, "open route while redis is down");

    // Redis back (empty): limited again, by itself, within seconds.
    redis.spawn().await;
    let r = limited_again(&gw, "after redis came back").await;
    let (l, rem, _) = r.rl();
    assert_eq!((l, rem), (2, 0), "{}", r.describe());
}

// ---------------------------------------------------------------------------------------
// 3. Redis down, on_error deny: 503; admitted and limited again when Redis is back
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_with_on_error_deny_refuses_then_recovers() {
    let mut redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let gw = start_gateway(&redis, "500ms", "deny", "{ requests: 2, per: 1m }", &up).await;

    assert_eq!(assert_admitted(&get(&gw, "t").await, "before #1"), (2, 1));
    assert_eq!(assert_admitted(&get(&gw, "t").await, "before #2"), (2, 0));
    assert_limited(&get(&gw, "t").await, "before #3");
    let hits = up.hits.load(Ordering::SeqCst);

    redis.kill();
    for (i, tenant) in ["t", "fresh-1", "fresh-2", "t", "fresh-3"]
        .iter()
        .enumerate()
    {
        let r = get(&gw, tenant).await;
        assert_eq!(r.status, 503, "redis down #{i}: {}", r.describe());
        assert_eq!(r.code(), "rate_limit_unavailable", "{}", r.describe());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{}",
            r.describe()
        );
        assert!(
            r.took() < Duration::from_secs(3),
            "redis down #{i}: {}",
            r.describe()
        );
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "nothing proxied while the store is down"
    );
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "gateway_rate_limit_store_errors_total",
            &[("kind", "error")]
        ) + metric(
            &m,
            "gateway_rate_limit_store_errors_total",
            &[("kind", "timeout")]
        ) >= 5.0,
        "every failed decision counted: {m}"
    );

    // Redis back (empty): admitted with headers, then limited.
    redis.spawn().await;
    let r = poll_until(
        &gw,
        "t",
        Duration::from_secs(10),
        "admitted again after redis came back",
        |r| r.status == 200,
        |r| {
            assert_eq!(r.status, 503, "while reconnecting: {}", r.describe());
            assert_eq!(r.code(), "rate_limit_unavailable", "{}", r.describe());
        },
    )
    .await;
    assert_eq!(assert_admitted(&r, "after redis came back #1"), (2, 1));
    let r = get(&gw, "t").await;
    assert_eq!(assert_admitted(&r, "after redis came back #2"), (2, 0));
    assert_limited(&get(&gw, "t").await, "after redis came back #3");
}

// ---------------------------------------------------------------------------------------
// 4. Redis that does not answer: bounded by the timeout, never a hang
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unresponsive_redis_costs_at_most_the_timeout() {
    let redis = Redis::start().await;
    let up = Upstream::start("up").await;
    let gw = start_gateway(&redis, "50ms", "allow", "{ requests: 3, per: 1m }", &up).await;

    // Working first (polled: a 50 ms timeout may be missed once on a busy machine).
    poll_until(
        &gw,
        "t",
        Duration::from_secs(5),
        "a decision from redis",
        |r| r.status == 200 && r.has_rl(),
        |r| assert_ok(r, "before the pause"),
    )
    .await;
    let before = store_errors(&gw, "timeout").await;

    redis.signal("-STOP");
    // Sequential, then concurrent: each answered (proxied) well within 2 s.
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(get(&gw, "t").await);
    }
    let c = client();
    replies.extend(
        futures::future::join_all(
            (0..6).map(|i| get_with(&c, &gw, "/limited", if i % 2 == 0 { "t" } else { "u" })),
        )
        .await,
    );
    redis.signal("-CONT");
    for (i, r) in replies.iter().enumerate() {
        assert_ok(r, &format!("paused redis #{i}"));
        assert!(!r.has_rl(), "paused redis #{i}: {}", r.describe());
        assert!(
            r.took() < Duration::from_secs(2),
            "paused redis #{i}: took {:?}: {}",
            r.took(),
            r.describe()
        );
    }
    let after = store_errors(&gw, "timeout").await;
    let errors = store_errors(&gw, "error").await;
    assert!(
        after > before && after - before + errors >= 10.0,
        "each request let through counted, timeouts as kind=\"timeout\": \
         timeouts {before} -> {after}, errors {errors}; {}",
        gw.metrics().await
    );

    // Resumed: limited again by itself (some of the queued scripts may have run).
    limited_again(&gw, "after redis resumed").await;
}
