//! Operating the response cache through the real `gateway` binary: `POST /cache/purge` on
//! the admin port removes a route's entries or one path's (every query string and
//! variant), answers `{"purged": N}`, 404 for an unknown route and 400 for a malformed
//! request; with the Redis store a purge on one gateway reaches another sharing the Redis;
//! `gateway_cache_requests_total{route, result}` counts HIT, MISS and BYPASS; `gateway
//! check` refuses bad cache settings with file:line.
//!
//! `redis-server` must be installed: the fan-out test fails, never skips, without it.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cache_upstream.rs"]
mod cache_upstream;
mod common;
#[path = "common/redis.rs"]
mod redis_server;

use cache_upstream::{call, expect, get, policy, purge, show, start, xc, Origin};
use common::{line_of, metric, ConfigDir, Gateway};
use redis_server::Redis;
use serde_json::json;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// 1. Purging a path or a route
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_one_paths_entries_or_a_whole_routes() {
    let (gw, up) = start("").await;
    let de = [("accept-language", "de")];
    let warm: [(&str, &[(&str, &str)]); 5] = [
        ("/v1/catalog/7", &[]),
        ("/v1/catalog/7?x=1", &[]),
        ("/v1/catalog/7", &de),
        ("/v1/catalog/8", &[]),
        ("/nokey/7", &[]),
    ];
    for (path, h) in warm {
        expect(&get(&gw, path, h).await, 200, "MISS", path);
        expect(&get(&gw, path, h).await, 200, "HIT", path);
    }

    let (status, body) = purge(&gw, r#"{"route":"catalog","path":"/v1/catalog/7"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"purged": 3}), "/7, /7?x=1 and /7 in German");
    for (path, h) in [
        ("/v1/catalog/7", &[][..]),
        ("/v1/catalog/7?x=1", &[]),
        ("/v1/catalog/7", &de),
    ] {
        expect(
            &get(&gw, path, h).await,
            200,
            "MISS",
            &format!("{path} {h:?} purged"),
        );
    }
    expect(
        &get(&gw, "/v1/catalog/8", &[]).await,
        200,
        "HIT",
        "another path kept",
    );
    expect(
        &get(&gw, "/nokey/7", &[]).await,
        200,
        "HIT",
        "another route kept",
    );
    assert_eq!(up.calls("/v1/catalog/7"), 6);
    assert_eq!(up.calls("/v1/catalog/8"), 1);

    // The whole route: /7 (three variants again), /8.
    let (status, body) = purge(&gw, r#"{"route": "catalog"}"#).await;
    assert_eq!((status, body), (200, json!({"purged": 4})));
    expect(
        &get(&gw, "/v1/catalog/8", &[]).await,
        200,
        "MISS",
        "/8 after the route purge",
    );
    expect(
        &get(&gw, "/v1/catalog/7?x=1", &[]).await,
        200,
        "MISS",
        "/7?x=1 after the route purge",
    );
    expect(
        &get(&gw, "/nokey/7", &[]).await,
        200,
        "HIT",
        "another route kept",
    );
    let (status, body) = purge(&gw, r#"{"route":"catalog","path":"/v1/catalog/none"}"#).await;
    assert_eq!((status, body), (200, json!({"purged": 0})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_refuses_unknown_routes_and_malformed_requests() {
    let (gw, _up) = start("").await;
    expect(&get(&gw, "/v1/catalog/1", &[]).await, 200, "MISS", "warm");
    for (body, want) in [
        (r#"{"route":"nope"}"#, 404),
        (r#"{"route":"nope","path":"/v1/catalog/1"}"#, 404),
        (r#"{"route":"catalog""#, 400),
        ("not json", 400),
        ("", 400),
        (r#"{"path":"/v1/catalog/1"}"#, 400),
        (r#"{"route":7}"#, 400),
    ] {
        let (status, v) = purge(&gw, body).await;
        assert_eq!(status, want, "{body:?}: {v}");
        assert_eq!(v["error"]["status"], want, "{body:?}: a JSON error: {v}");
        assert!(v["error"]["message"].is_string(), "{body:?}: {v}");
    }
    expect(
        &get(&gw, "/v1/catalog/1", &[]).await,
        200,
        "HIT",
        "nothing purged",
    );
}

// ---------------------------------------------------------------------------------------
// 2. With the Redis store, a purge reaches every gateway
// ---------------------------------------------------------------------------------------

/// GETs `path` until it is a HIT (at most three times).
async fn warm(gw: &Gateway, path: &str) {
    for _ in 0..3 {
        let r = get(gw, path, &[]).await;
        assert_eq!(r.status, 200, "{}", show(&r));
        if xc(&r) == "HIT" {
            return;
        }
    }
    panic!("{path} never became a HIT on {}", gw.url(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_every_gateway_sharing_the_redis_store() {
    let redis = Redis::start().await;
    let up = Origin::start().await;
    let store = format!(
        "store:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 300ms }}\n",
        redis.url()
    );
    let mut gws = Vec::new();
    for _ in 0..2 {
        let c = ConfigDir::new(&store, &[("p.yaml", &policy(&up.target()))]);
        gws.push(Gateway::start_in(c, &[]).await);
    }
    let (a, b) = (&gws[0], &gws[1]);
    for gw in [a, b] {
        warm(gw, "/v1/catalog/1").await;
        warm(gw, "/v1/catalog/2").await;
    }

    let (status, body) = purge(a, r#"{"route":"catalog"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["purged"].as_u64().unwrap() >= 2,
        "A's two entries at least: {body}"
    );
    expect(
        &get(a, "/v1/catalog/2", &[]).await,
        200,
        "MISS",
        "on A at once",
    );

    // B hears of it within a couple of seconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = get(b, "/v1/catalog/1", &[]).await;
        if xc(&r) == "MISS" {
            break;
        }
        expect(&r, 200, "HIT", "B before the purge reached it");
        assert!(Instant::now() < deadline, "B still serves the purged entry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 3. gateway_cache_requests_total
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_and_result() {
    let (gw, _up) = start("").await;
    let p = "/v1/catalog/m";
    expect(&get(&gw, p, &[]).await, 200, "MISS", "first");
    expect(&get(&gw, p, &[]).await, 200, "HIT", "second");
    expect(&get(&gw, p, &[]).await, 200, "HIT", "third");
    expect(&call(&gw, "POST", p, &[]).await, 200, "BYPASS", "POST");
    let ns = [("cache-control", "no-store")];
    expect(&get(&gw, p, &ns).await, 200, "BYPASS", "no-store");
    expect(&get(&gw, "/nokey/m", &[]).await, 200, "MISS", "other route");
    get(&gw, "/plain/m", &[]).await;

    let want = [("HIT", 2.0), ("MISS", 1.0), ("BYPASS", 2.0), ("STALE", 0.0)];
    let count = |m: &str, route: &str, result: &str| {
        metric(
            m,
            "gateway_cache_requests_total",
            &[("route", route), ("result", result)],
        )
    };
    let m = gw
        .metrics_when(|m| want.iter().all(|(r, n)| count(m, "catalog", r) == *n))
        .await;
    for (result, n) in want {
        assert_eq!(count(&m, "catalog", result), n, "{result}:\n{m}");
    }
    assert_eq!(count(&m, "nokey", "MISS"), 1.0, "{m}");
    let plain = common::samples(&m, "gateway_cache_requests_total", &[("route", "plain")]);
    assert_eq!(
        plain.count(),
        0,
        "a route without cache is not counted:\n{m}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. gateway check
// ---------------------------------------------------------------------------------------

const UP: &str = "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\n";

/// A policy with one route `r` whose `cache` block is `cache` (indented under the route).
fn cached_route(cache: &str) -> String {
    format!("{UP}routes:\n  - name: r\n    match: {{ path: /r }}\n    auth: none\n    upstream: up\n    cache:\n{cache}")
}

/// Asserts that `check` failed with a problem at `file:line` mentioning every one of `parts`.
#[track_caller]
fn assert_problem(c: &ConfigDir, file: &std::path::Path, line: usize, parts: &[&str]) {
    let (ok, out) = c.check();
    assert!(!ok, "check should have failed:\n{out}");
    let prefix = format!("{}:{line}: ", file.display());
    let msg = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no problem reported as {prefix:?}:\n{out}"));
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should mention {p:?}:\n{out}");
    }
}

#[test]
fn check_accepts_the_cache_settings_and_refuses_bad_ones_with_file_and_line() {
    let good = cached_route(
        "      ttl: 60s\n      key: [header:Accept-Language, header:X-Tenant]\n      stale_while_revalidate: 10s\n",
    );
    let c = ConfigDir::new("cache:\n  max_memory: 256MiB\n", &[("p.yaml", &good)]);
    let (ok, out) = c.check();
    assert!(ok, "{out}");
    let c = ConfigDir::new("", &[("p.yaml", &cached_route("      ttl: 1s\n"))]);
    let (ok, out) = c.check();
    assert!(ok, "without a cache block in gateway.yaml:\n{out}");

    for (cache, needle, parts) in [
        ("      ttl: 0s\n", "ttl: 0s", &["ttl"][..]),
        ("      ttl: soon\n", "ttl: soon", &["soon"]),
        (
            "      ttl: 60s\n      key: [cookie:x]\n",
            "key:",
            &["cookie:x"],
        ),
        (
            "      ttl: 60s\n      key: [\"header:\"]\n",
            "key:",
            &["header:"],
        ),
        (
            "      ttl: 60s\n      stale_while_revalidate: lots\n",
            "stale_while_revalidate",
            &["lots"],
        ),
        ("      tll: 60s\n", "tll", &["tll"]),
    ] {
        let text = cached_route(cache);
        let c = ConfigDir::new("", &[("p.yaml", &text)]);
        let file = c.path().join("policies").join("p.yaml");
        assert_problem(&c, &file, line_of(&text, needle), parts);
    }
    // gateway.yaml's own cache block.
    for (block, needle, parts) in [
        (
            "cache:\n  max_memory: lots\n",
            "max_memory",
            &["max_memory", "lots"][..],
        ),
        ("cache:\n  max_mem: 1MiB\n", "max_mem:", &["max_mem"]),
    ] {
        let c = ConfigDir::new(block, &[("p.yaml", &cached_route("      ttl: 1s\n"))]);
        let text = std::fs::read_to_string(c.gateway_yaml()).unwrap();
        assert_problem(&c, &c.gateway_yaml(), line_of(&text, needle), parts);
    }
}
