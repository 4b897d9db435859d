//! Traffic control through the real `gateway` binary: routes chosen by exact header and
//! query values (the most constraints winning, 404 `no_route` without a fallback),
//! response header edits, canary splits (shares counted at two real upstreams, the
//! `gateway_upstream_requests_total` metric, sticky by consumer, client address or
//! header), mirroring to a shadow upstream (what the copy carries, a hanging or dead
//! shadow never delaying or failing the client, `percent`, the
//! `gateway_mirror_requests_total` metric), `allow_ips` / `deny_ips` before authentication
//! and through `trusted_proxies`, and the configuration errors of `gateway check`.
//!
//! Which upstream answered is always read from its echo and cross-checked with the
//! requests each upstream recorded.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/traffic_upstream.rs"]
mod traffic_upstream;

use common::reply::Reply;
use common::{line_of, metric, raw, ConfigDir, Gateway};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use traffic_upstream::{
    assert_check_ok, assert_error, assert_problem_on, call, echoed_by, get, key_hash, show, Plan,
    Recorder, Refused,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Consumers `c0`..`c11`, each with API key `key(i)`.
const CONSUMERS: usize = 12;

fn key(i: usize) -> String {
    format!("test-only-traffic-key-{i}")
}

/// The upstreams of one test, all recording: `a` and `b` (echo), `shadow` and `half`
/// (echo), `sleepy` (records, then answers after 5 s), `hdrs` (answers with `Server`,
/// `X-Powered-By`, `Cache-Control: no-store`, `X-Kept`, the status the last path segment
/// names), and `dead` (nothing listens).
struct World {
    gw: Gateway,
    a: Recorder,
    b: Recorder,
    shadow: Recorder,
    half: Recorder,
    sleepy: Recorder,
    _hdrs: Recorder,
    _dead: Refused,
}

const OK: &str = r#"{"ok":true}"#;

fn hdrs_plan(s: &traffic_upstream::Seen) -> Plan {
    let status = s.path.rsplit('/').next().and_then(|x| x.parse().ok());
    Plan::json_text(status.unwrap_or(200), OK)
        .header("server", "test-origin/1.0")
        .header("x-powered-by", "PHP/8")
        .header("cache-control", "no-store")
        .header("x-kept", "yes")
}

/// Every route of these tests, one per line. `X-Route` tells which route a request took.
const ROUTES: &str = r#"routes:
  # Matching by header and query values.
  - { name: cust-plain, match: { path: "/v2/customers/{id}" }, auth: none, upstream: a, request: { headers: { set: { X-Route: cust-plain } } } }
  - { name: cust-v2, match: { path: "/v2/customers/{id}", headers: { X-Api-Version: "2" } }, auth: none, upstream: a, request: { headers: { set: { X-Route: cust-v2 } } } }
  - { name: cust-v2-beta, match: { path: "/v2/customers/{id}", headers: { X-Api-Version: "2", X-Beta: "yes" } }, auth: none, upstream: a, request: { headers: { set: { X-Route: cust-v2-beta } } } }
  - { name: cust-v3, match: { path: "/v2/customers/{id}", headers: { x-api-version: "3" } }, auth: none, upstream: a, request: { headers: { set: { X-Route: cust-v3 } } } }
  - { name: items-v1, match: { path: /items, query: { v: "1" } }, auth: none, upstream: a, request: { headers: { set: { X-Route: items-v1 } } } }
  - { name: items-v2, match: { path: /items, query: { v: "2" } }, auth: none, upstream: a, request: { headers: { set: { X-Route: items-v2 } } } }
  - { name: items-v2-gold, match: { path: /items, query: { v: "2" }, headers: { X-Tier: Gold } }, auth: none, upstream: a, request: { headers: { set: { X-Route: items-v2-gold } } } }
  # Response headers.
  - { name: shaped, match: { path: "/shaped/*" }, auth: none, upstream: hdrs, response: { headers: { set: { Cache-Control: "max-age=30" }, remove: [Server, X-Powered-By] } } }
  - { name: unshaped, match: { path: "/unshaped/*" }, auth: none, upstream: hdrs }
  # Splits.
  - { name: canary, match: { path: /canary }, auth: none, upstream: a, split: [ { upstream: b, weight: 10 } ] }
  - { name: sticky-consumer, match: { path: /sticky/consumer }, auth: [api_key], upstream: a, split: [ { upstream: b, weight: 50 } ], sticky: consumer }
  - { name: sticky-anon, match: { path: /sticky/anon }, auth: none, upstream: a, split: [ { upstream: b, weight: 50 } ], sticky: consumer }
  - { name: sticky-ip, match: { path: /sticky/ip }, auth: none, upstream: a, split: [ { upstream: b, weight: 50 } ], sticky: client_ip }
  - { name: sticky-header, match: { path: /sticky/header }, auth: none, upstream: a, split: [ { upstream: b, weight: 50 } ], sticky: "header:X-User" }
  # Mirrors.
  - { name: mirrored, match: { path: "/mirrored/*" }, auth: none, upstream: a, mirror: { upstream: shadow, percent: 100 } }
  - { name: mirror-sleepy, match: { path: "/mirror-sleepy/*" }, auth: none, upstream: a, mirror: { upstream: sleepy, percent: 100 } }
  - { name: mirror-dead, match: { path: "/mirror-dead/*" }, auth: none, upstream: a, mirror: { upstream: dead, percent: 100 } }
  - { name: mirror-half, match: { path: "/mirror-half/*" }, auth: none, upstream: a, mirror: { upstream: half, percent: 50 } }
  # IP rules.
  - { name: deny-local, match: { path: /deny-local }, auth: none, upstream: a, deny_ips: [127.0.0.1] }
  - { name: only-ten, match: { path: /only-ten }, auth: none, upstream: a, allow_ips: [10.0.0.0/8, 192.0.2.7] }
  - { name: guarded, match: { path: /guarded }, auth: [api_key], upstream: a, deny_ips: [127.0.0.0/8] }
  - { name: local-ok, match: { path: /local-ok }, auth: [api_key], upstream: a, allow_ips: [127.0.0.0/8, "::1"] }
  - { name: deny-doc, match: { path: /deny-doc }, auth: none, upstream: a, deny_ips: [203.0.113.0/24] }
"#;

/// The upstreams (name, target), consumers `c0`..`c11`, then `ROUTES`.
fn policy(targets: &[(&str, String)]) -> String {
    let mut s = String::from("upstreams:\n");
    for (name, target) in targets {
        s.push_str(&format!("  {name}: {{ targets: [\"{target}\"] }}\n"));
    }
    s.push_str("api_keys: { header: X-API-Key }\nconsumers:\n");
    for i in 0..CONSUMERS {
        let hash = key_hash(&key(i));
        s.push_str(&format!("  c{i}: {{ api_keys: [\"{hash}\"] }}\n"));
    }
    s + ROUTES
}

/// Starts every upstream and a gateway on `policy` (`extra` appended to gateway.yaml).
async fn world(extra: &str) -> World {
    let a = Recorder::echo("a").await;
    let b = Recorder::echo("b").await;
    let shadow = Recorder::echo("shadow").await;
    let half = Recorder::echo("half").await;
    let sleepy = Recorder::hanging("sleepy", Duration::from_secs(5)).await;
    let hdrs = Recorder::start("hdrs", hdrs_plan).await;
    let dead = Refused::new();
    let targets = [
        ("a", a.target()),
        ("b", b.target()),
        ("shadow", shadow.target()),
        ("half", half.target()),
        ("sleepy", sleepy.target()),
        ("hdrs", hdrs.target()),
        ("dead", dead.target()),
    ];
    let config = ConfigDir::new(extra, &[("p.yaml", &policy(&targets))]);
    assert_check_ok(&config);
    let gw = Gateway::start_in(config, &[]).await;
    World {
        gw,
        a,
        b,
        shadow,
        half,
        sleepy,
        _hdrs: hdrs,
        _dead: dead,
    }
}

/// GETs `path` `n` times with `headers` (8 at a time); every answer must be a 200 from
/// `a` or `b`; returns the upstream names in answer order.
async fn sides(gw: &Gateway, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<String> {
    let replies: Vec<Reply> = futures::stream::iter(0..n)
        .map(|_| get(gw, path, headers))
        .buffer_unordered(8)
        .collect()
        .await;
    replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{path} {headers:?}: {}", show(r));
            let side = r.json()["upstream"].as_str().unwrap_or("").to_string();
            assert!(side == "a" || side == "b", "{path}: {}", show(r));
            side
        })
        .collect()
}

fn distinct(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// The route a request went to, from the `X-Route` header its route set.
#[track_caller]
fn route_of(r: &Reply) -> String {
    echoed_by(r, "a", "routed request")["headers"]["x-route"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// 1. Matching by header and query values
// ---------------------------------------------------------------------------------------

/// (path, request headers, the route expected).
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_values_choose_the_route_with_the_most_matching_constraints() {
    let w = world("").await;
    let gw = &w.gw;
    let cases: &[Case] = &[
        ("/v2/customers/7", &[], "cust-plain"),
        ("/v2/customers/7", &[("X-Api-Version", "2")], "cust-v2"),
        ("/v2/customers/7", &[("X-Api-Version", "3")], "cust-v3"),
        ("/v2/customers/7", &[("X-Api-Version", "02")], "cust-plain"),
        ("/v2/customers/7", &[("X-Api-Version", "2.0")], "cust-plain"),
        (
            "/v2/customers/7",
            &[("X-Api-Version", "2"), ("X-Beta", "yes")],
            "cust-v2-beta",
        ),
        (
            "/v2/customers/7",
            &[("X-Api-Version", "2"), ("X-Beta", "no")],
            "cust-v2",
        ),
        ("/v2/customers/7", &[("X-Beta", "yes")], "cust-plain"),
        ("/items?v=1", &[], "items-v1"),
        ("/items?v=2", &[], "items-v2"),
        ("/items?page=3&v=2", &[], "items-v2"),
        ("/items?v=2", &[("X-Tier", "Gold")], "items-v2-gold"),
        // Values are exact: `gold` is not `Gold`.
        ("/items?v=2", &[("X-Tier", "gold")], "items-v2"),
    ];
    for (path, headers, want) in cases {
        let r = get(gw, path, headers).await;
        assert_eq!(route_of(&r), *want, "{path} {headers:?}: {}", show(&r));
    }
    let answered = cases.len();
    assert_eq!(w.a.count(), answered);

    // Header names are case-insensitive on the wire too (reqwest sends lower case).
    let resp = raw(
        gw.addr(),
        b"GET /v2/customers/7 HTTP/1.1\r\nHost: t\r\nX-API-VERSION: 2\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(resp.contains(r#""x-route":"cust-v2""#), "{resp}");

    // /items has no route without constraints: anything else is 404 no_route, unforwarded.
    for path in ["/items", "/items?v=3", "/items?v=22", "/items?w=2"] {
        assert_error(&get(gw, path, &[]).await, 404, "no_route", path);
    }
    assert_eq!(w.a.count(), answered + 1, "no 404 reached the upstream");
}

#[test]
fn check_refuses_routes_that_match_the_same_request_equally() {
    let route = |name: &str, m: &str| {
        format!("  - {{ name: {name}, match: {{ path: /c{m} }}, auth: none, upstream: a }}\n")
    };
    let file = |routes: &[String]| {
        format!(
            "upstreams:\n  a: {{ targets: [\"127.0.0.1:9\"] }}\nroutes:\n{}",
            routes.concat()
        )
    };
    let conflicts = [
        (", headers: { X-A: \"1\" }", ", headers: { X-B: \"1\" }"),
        (", headers: { X-A: \"1\" }", ", headers: { x-a: \"1\" }"),
        (", query: { v: \"1\" }", ", headers: { X-A: \"1\" }"),
        (
            ", headers: { X-A: \"1\" }, query: { v: \"1\" }",
            ", headers: { X-B: \"1\" }, query: { v: \"1\" }",
        ),
    ];
    for (first, second) in conflicts {
        let text = file(&[route("first", first), route("second", second)]);
        let c = ConfigDir::new("", &[("routes.yaml", &text)]);
        let lines = [
            line_of(&text, "name: first"),
            line_of(&text, "name: second"),
        ];
        let msg = assert_problem_on(&c, "routes.yaml", &lines, &[]);
        assert!(
            msg.contains("\"first\"") || msg.contains("\"second\""),
            "the problem names a route: {msg:?}\n{text}"
        );
    }

    // Values that exclude each other, fewer against more constraints, disjoint methods.
    let text = file(&[
        route("plain", ""),
        route("v1", ", query: { v: \"1\" }"),
        route("v2", ", query: { v: \"2\" }"),
        route("v1b", ", query: { v: \"1\", w: \"b\" }"),
        route("xa", "/d, headers: { X-A: \"1\" }, methods: [GET]"),
        route("xb", "/d, headers: { X-B: \"1\" }, methods: [POST]"),
        route("xab", "/d, headers: { X-A: \"1\", X-B: \"1\" }"),
    ]);
    assert_check_ok(&ConfigDir::new("", &[("routes.yaml", &text)]));
}

// ---------------------------------------------------------------------------------------
// 2. Response headers
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_are_set_and_removed_on_every_proxied_answer() {
    let w = world("").await;
    for (path, status) in [
        ("/shaped/x", 200),
        ("/shaped/404", 404),
        ("/shaped/500", 500),
    ] {
        let r = get(&w.gw, path, &[]).await;
        assert_eq!((r.status, r.text.as_str()), (status, OK), "{}", show(&r));
        let cc: Vec<&str> = r
            .headers
            .get_all("cache-control")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cc, ["max-age=30"], "{path}: {}", show(&r));
        assert_eq!(r.header("server"), None, "{path}: {}", show(&r));
        assert_eq!(r.header("x-powered-by"), None, "{path}: {}", show(&r));
        assert_eq!(r.header("x-kept"), Some("yes"), "{path}: {}", show(&r));
    }
    // The control: another route on the same upstream keeps them.
    let r = get(&w.gw, "/unshaped/x", &[]).await;
    assert_eq!(r.header("server"), Some("test-origin/1.0"), "{}", show(&r));
    assert_eq!(r.header("x-powered-by"), Some("PHP/8"), "{}", show(&r));
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", show(&r));
}

// ---------------------------------------------------------------------------------------
// 3. Splits and stickiness
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_sends_its_share_to_the_other_upstream_and_counts_both() {
    let w = world("").await;
    let n = 1000;
    let got = sides(&w.gw, "/canary", &[], n).await;
    let to_b = got.iter().filter(|s| *s == "b").count();
    assert!((60..=140).contains(&to_b), "{to_b} of {n} to b");
    assert_eq!((w.a.count(), w.b.count()), (n - to_b, to_b));
    let series = |up: &'static str| [("route", "canary"), ("upstream", up)];
    let name = "gateway_upstream_requests_total";
    let m = w
        .gw
        .metrics_when(|m| metric(m, name, &series("a")) + metric(m, name, &series("b")) >= n as f64)
        .await;
    assert_eq!(metric(&m, name, &series("a")), (n - to_b) as f64, "{m}");
    assert_eq!(metric(&m, name, &series("b")), to_b as f64, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_consumer_keeps_each_consumer_on_one_side() {
    let w = world("").await;
    let mut used = BTreeSet::new();
    for i in 0..CONSUMERS {
        let k = key(i);
        let got = sides(&w.gw, "/sticky/consumer", &[("X-API-Key", k.as_str())], 50).await;
        let d = distinct(&got);
        assert_eq!(d.len(), 1, "consumer c{i} landed on {d:?}");
        used.extend(d);
    }
    assert_eq!(used.len(), 2, "{CONSUMERS} consumers all on {used:?}");
    assert_eq!(w.a.count() + w.b.count(), CONSUMERS * 50);

    // Without authentication, `sticky: consumer` keys by client address: one side.
    let before = (w.a.count(), w.b.count());
    let d = distinct(&sides(&w.gw, "/sticky/anon", &[], 50).await);
    assert_eq!(d.len(), 1, "one anonymous client landed on {d:?}");
    assert_eq!(w.a.count() + w.b.count(), before.0 + before.1 + 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_client_ip_and_header_keep_each_client_on_one_side() {
    let w = world("trusted_proxies: [127.0.0.0/8]\n").await;
    let d = distinct(&sides(&w.gw, "/sticky/ip", &[], 50).await);
    assert_eq!(d.len(), 1, "client 127.0.0.1 landed on {d:?}");

    // Clients behind the trusted proxy, each from its own address.
    let mut used = BTreeSet::new();
    for i in 1..=16 {
        let ip = format!("198.51.100.{i}");
        let d =
            distinct(&sides(&w.gw, "/sticky/ip", &[("X-Forwarded-For", ip.as_str())], 10).await);
        assert_eq!(d.len(), 1, "client {ip} landed on {d:?}");
        used.extend(d);
    }
    assert_eq!(used.len(), 2, "16 client addresses all on {used:?}");

    let mut used = BTreeSet::new();
    for i in 0..16 {
        let user = format!("user-{i}");
        let n = if i == 0 { 50 } else { 10 };
        let d = distinct(&sides(&w.gw, "/sticky/header", &[("X-User", user.as_str())], n).await);
        assert_eq!(d.len(), 1, "X-User {user} landed on {d:?}");
        used.extend(d);
    }
    assert_eq!(used.len(), 2, "16 X-User values all on {used:?}");
}

#[test]
fn check_refuses_bad_splits() {
    let file = |split: &str| {
        format!(
            "upstreams:\n  a: {{ targets: [\"127.0.0.1:9\"] }}\n  b: {{ targets: [\"127.0.0.1:9\"] }}\n  c: {{ targets: [\"127.0.0.1:9\"] }}\nroutes:\n  - name: r\n    match: {{ path: /r }}\n    auth: none\n    upstream: a\n    {split}\n"
        )
    };
    for (line, word) in [
        (
            "split: [ { upstream: b, weight: 60 }, { upstream: c, weight: 50 } ]",
            "100",
        ),
        ("split: [ { upstream: ghost, weight: 10 } ]", "ghost"),
        ("mirror: { upstream: phantom, percent: 10 }", "phantom"),
    ] {
        let text = file(line);
        let c = ConfigDir::new("", &[("routes.yaml", &text)]);
        assert_problem_on(&c, "routes.yaml", &[line_of(&text, line)], &[word]);
    }
    let text = file("split: [ { upstream: b, weight: 60 }, { upstream: c, weight: 40 } ]");
    assert_check_ok(&ConfigDir::new("", &[("routes.yaml", &text)]));
}

// ---------------------------------------------------------------------------------------
// 4. Mirroring
// ---------------------------------------------------------------------------------------

const MIRROR: &str = "gateway_mirror_requests_total";

fn outcome(m: &str, route: &str, outcome: &str) -> f64 {
    metric(m, MIRROR, &[("route", route), ("outcome", outcome)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_a_copy_of_every_request_and_the_client_the_main_answer() {
    let w = world("").await;
    let gw = &w.gw;
    let r = get(gw, "/mirrored/items?x=1&y=two", &[("X-Test", "t1")]).await;
    echoed_by(&r, "a", "GET");
    let body = "{\"n\": 1, \"s\": \"caf\u{e9}\"}";
    let headers = [("Content-Type", "application/json"), ("X-Test", "t2")];
    let r = call(gw, "POST", "/mirrored/orders?z=9", &headers, body).await;
    let main = echoed_by(&r, "a", "POST");
    assert_eq!(main["body"], body);
    assert_eq!(w.shadow.wait_count(2, Duration::from_secs(5)).await, 2);
    let seen = w.shadow.seen();
    let get_copy = seen.iter().find(|s| s.method == "GET").expect("GET copy");
    assert_eq!(get_copy.path, "/mirrored/items");
    assert_eq!(get_copy.query.as_deref(), Some("x=1&y=two"));
    assert_eq!(get_copy.header("x-test"), Some("t1"));
    let post_copy = seen.iter().find(|s| s.method == "POST").expect("POST copy");
    assert_eq!(post_copy.path, "/mirrored/orders");
    assert_eq!(post_copy.query.as_deref(), Some("z=9"));
    assert_eq!(post_copy.header("x-test"), Some("t2"));
    assert_eq!(post_copy.header("content-type"), Some("application/json"));
    assert_eq!(post_copy.body, body.as_bytes(), "the same body");

    for i in 0..10 {
        let r = get(gw, &format!("/mirrored/n{i}"), &[]).await;
        echoed_by(&r, "a", "GET n");
    }
    assert_eq!(w.shadow.wait_count(12, Duration::from_secs(5)).await, 12);
    assert_eq!(w.a.count(), 12, "the main upstream got each request once");
    let m = gw
        .metrics_when(|m| outcome(m, "mirrored", "sent") >= 12.0)
        .await;
    assert_eq!(outcome(&m, "mirrored", "sent"), 12.0, "{m}");
    assert_eq!(outcome(&m, "mirrored", "failed"), 0.0, "{m}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.shadow.count(), 12, "one copy per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_dead_shadow_never_delays_or_fails_the_client() {
    let w = world("").await;
    let gw = &w.gw;
    let quick = Duration::from_millis(900);
    for i in 0..5 {
        for (m, body) in [("GET", ""), ("POST", "{\"k\":1}")] {
            let path = format!("/mirror-sleepy/{i}");
            let r = call(gw, m, &path, &[("Content-Type", "application/json")], body).await;
            echoed_by(&r, "a", &format!("{m} {path}"));
            assert!(r.took() < quick, "{m} {path} took {:?}", r.took());
        }
    }
    // The copies did go out (the shadow records them before it starts sleeping).
    assert_eq!(w.sleepy.wait_count(10, Duration::from_secs(3)).await, 10);

    let start = Instant::now();
    for i in 0..5 {
        let r = get(gw, &format!("/mirror-dead/{i}"), &[]).await;
        echoed_by(&r, "a", "dead shadow");
        assert!(r.took() < quick, "took {:?}", r.took());
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    let m = gw
        .metrics_when(|m| outcome(m, "mirror-dead", "failed") >= 5.0)
        .await;
    assert_eq!(outcome(&m, "mirror-dead", "failed"), 5.0, "{m}");
    assert_eq!(outcome(&m, "mirror-dead", "sent"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn percent_copies_about_that_share() {
    let w = world("").await;
    let n = 400;
    let got = sides(&w.gw, "/mirror-half/x", &[], n).await;
    assert_eq!(distinct(&got).len(), 1, "all from a");
    assert_eq!(w.a.count(), n);
    // Copies are asynchronous: wait until the count settles and matches the metric.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (usize::MAX, -1.0);
    loop {
        let now = (
            w.half.count(),
            outcome(&w.gw.metrics().await, "mirror-half", "sent"),
        );
        if (now == last && now.0 as f64 == now.1) || Instant::now() > deadline {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let copies = w.half.count();
    assert!((120..=280).contains(&copies), "{copies} of {n} copied");
    let m = w.gw.metrics().await;
    assert_eq!(outcome(&m, "mirror-half", "sent"), copies as f64, "{m}");
}

// ---------------------------------------------------------------------------------------
// 5. IP rules
// ---------------------------------------------------------------------------------------

/// Asserts that GET `path` with `headers` is refused: 403 `forbidden`.
async fn refused(gw: &Gateway, path: &str, headers: &[(&str, &str)]) {
    let r = get(gw, path, headers).await;
    assert_error(&r, 403, "forbidden", &format!("{path} {headers:?}"));
}

/// Asserts that GET `path` with `headers` is answered by upstream `a`.
async fn let_through(gw: &Gateway, path: &str, headers: &[(&str, &str)]) {
    let r = get(gw, path, headers).await;
    echoed_by(&r, "a", &format!("{path} {headers:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_use_the_socket_address_without_trusted_proxies() {
    let w = world("").await;
    let gw = &w.gw;
    let k = key(0);
    refused(gw, "/deny-local", &[]).await;
    refused(gw, "/only-ten", &[]).await;
    refused(gw, "/only-ten", &[("X-Forwarded-For", "10.1.2.3")]).await;
    // Before authentication: refused without credentials, and with good ones.
    refused(gw, "/guarded", &[]).await;
    refused(gw, "/guarded", &[("X-API-Key", k.as_str())]).await;
    assert_eq!(w.a.count(), 0, "nothing refused reached the upstream");
    // An allowed client goes on to authentication.
    let r = get(gw, "/local-ok", &[]).await;
    assert_error(&r, 401, "unauthorized", "allowed, no key");
    let_through(gw, "/local-ok", &[("X-API-Key", k.as_str())]).await;
    let_through(gw, "/deny-doc", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_use_the_forwarded_address_behind_trusted_proxies() {
    let w = world("trusted_proxies: [127.0.0.0/8]\n").await;
    let gw = &w.gw;
    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    // The right-most address that is not a trusted proxy is the client.
    for ok in [
        "10.1.2.3",
        "192.0.2.7",
        "203.0.113.9, 10.1.2.3",
        "10.1.2.3, 127.0.0.5",
    ] {
        let_through(gw, "/only-ten", &xff(ok)).await;
    }
    let before = w.a.count();
    for no in [
        "203.0.113.9",
        "192.0.2.8",
        "10.1.2.3, 203.0.113.9",
        "11.0.0.1",
    ] {
        refused(gw, "/only-ten", &xff(no)).await;
    }
    refused(gw, "/only-ten", &[]).await;
    refused(gw, "/deny-doc", &xff("203.0.113.9")).await;
    assert_eq!(w.a.count(), before);
    let_through(gw, "/deny-doc", &xff("198.51.100.1")).await;
    // deny_ips 127.0.0.0/8 concerns the client, not the trusted proxy in front of it.
    let k = key(1);
    let headers = [("X-Forwarded-For", "10.9.9.9"), ("X-API-Key", k.as_str())];
    let_through(gw, "/guarded", &headers).await;
    refused(gw, "/guarded", &[]).await;
}

#[test]
fn check_refuses_bad_ip_entries_at_their_line() {
    for (line, word) in [
        ("allow_ips: [10.0.0.0/8, nonsense]", "nonsense"),
        ("deny_ips: [10.0.0.0/33]", "10.0.0.0/33"),
        ("allow_ips: [300.1.2.3]", "300.1.2.3"),
    ] {
        let text = format!(
            "upstreams:\n  a: {{ targets: [\"127.0.0.1:9\"] }}\nroutes:\n  - name: r\n    match: {{ path: /r }}\n    auth: none\n    upstream: a\n    {line}\n"
        );
        let c = ConfigDir::new("", &[("routes.yaml", &text)]);
        assert_problem_on(&c, "routes.yaml", &[line_of(&text, line)], &[word]);
    }
}
