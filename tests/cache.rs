//! Response caching through the real `gateway` binary: GET answers kept and served again
//! (`X-Cache: HIT` with `Age`), HEAD from the GET entry, other methods bypassing; only the
//! storable statuses, never what the upstream marks `no-store`/`private`/`no-cache`/
//! `max-age=0`, sets a cookie on, varies on `*` or on a header outside the key, encodes, or
//! sends over 8 MiB; freshness from `s-maxage`, `max-age`, then the route's `ttl`; the
//! client's `Cache-Control: no-cache` refreshing and `no-store` bypassing; keys by query,
//! host, configured headers and consumer, after authentication and rate limits; one
//! upstream request for concurrent misses; stale-while-revalidate; one entry serving
//! gzip and identity clients; least-recently-used eviction within `max_memory`.
//!
//! "Served from the cache" is always proven with the upstream's request counters and the
//! request number in its body. Purges, Redis fan-out, metrics and `gateway check`:
//! tests/cache_purge.rs.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cache_upstream.rs"]
mod cache_upstream;
mod common;

use cache_upstream::{
    call, cc, client, expect, get, gunzip, n, show, start, xc, ACME_KEY, BETA_KEY,
};
use common::metric;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// 1. A repeat is a hit; HEAD shares the entry; other methods and routes bypass
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_served_from_the_cache_and_other_methods_bypass_it() {
    let (gw, up) = start("").await;
    let first = get(&gw, "/v1/catalog/1", &[]).await;
    expect(&first, 200, "MISS", "first");
    assert_eq!(up.calls("/v1/catalog/1"), 1);

    let again = get(&gw, "/v1/catalog/1", &[]).await;
    expect(&again, 200, "HIT", "repeat");
    assert_eq!(again.text, first.text, "the stored body");
    let age = again.number("age").expect("a hit carries Age");
    assert!(age <= 5, "{}", show(&again));
    let head = call(&gw, "HEAD", "/v1/catalog/1", &[]).await;
    expect(&head, 200, "HIT", "HEAD after GET");
    assert!(head.text.is_empty(), "HEAD has no body: {}", show(&head));
    assert_eq!(up.calls("/v1/catalog/1"), 1, "served without the upstream");

    // The query string and the host are part of the key.
    let before = up.hits();
    let q = get(&gw, "/v1/catalog/1?page=2", &[]).await;
    expect(&q, 200, "MISS", "another query string");
    assert_ne!(n(&q), n(&first));
    expect(
        &get(&gw, "/v1/catalog/1?page=2", &[]).await,
        200,
        "HIT",
        "query again",
    );
    let host = [("host", "other.example")];
    let h = get(&gw, "/v1/catalog/1", &host).await;
    expect(&h, 200, "MISS", "another host");
    let h2 = get(&gw, "/v1/catalog/1", &host).await;
    expect(&h2, 200, "HIT", "other host again");
    assert_eq!(h2.text, h.text);
    assert_eq!(up.hits(), before + 2);

    // Other methods always reach the upstream, marked BYPASS.
    for m in ["POST", "PUT", "DELETE", "POST"] {
        let before = up.hits();
        let r = call(&gw, m, "/v1/catalog/1", &[]).await;
        expect(&r, 200, "BYPASS", m);
        assert_eq!(up.hits(), before + 1, "{m} reached the upstream");
        assert_eq!(r.json()["n"].as_u64(), Some(before as u64 + 1), "{m}");
    }

    // A route without `cache` says nothing and always forwards.
    for i in 1..=2 {
        let r = get(&gw, "/plain/1", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-cache"),
            None,
            "no X-Cache without cache: {}",
            show(&r)
        );
        assert_eq!(up.calls("/plain/1"), i);
    }
}

// ---------------------------------------------------------------------------------------
// 2. What is stored: statuses, Cache-Control, Set-Cookie, Vary: *, size
// ---------------------------------------------------------------------------------------

/// GETs `path` twice; asserts that the second came from the cache (`kept`) or from the
/// upstream again, both with `status`.
async fn twice(
    gw: &common::Gateway,
    up: &cache_upstream::Origin,
    path: &str,
    status: u16,
    kept: bool,
) {
    let bare = path.split('?').next().unwrap();
    let before = up.calls(bare);
    let a = get(gw, path, &[]).await;
    expect(&a, status, "MISS", &format!("{path} first"));
    let b = get(gw, path, &[]).await;
    if kept {
        expect(&b, status, "HIT", &format!("{path} again"));
        assert_eq!(b.text, a.text, "{path}");
        assert_eq!(up.calls(bare), before + 1, "{path}: stored");
    } else {
        expect(&b, status, "MISS", &format!("{path} again"));
        assert_eq!(up.calls(bare), before + 2, "{path}: not stored");
        if status != 204 {
            assert_ne!(n(&b), n(&a), "{path}: a new answer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_storable_statuses_and_answers_are_kept() {
    let (gw, up) = start("").await;
    for status in [200u16, 203, 204, 301, 404, 410] {
        twice(
            &gw,
            &up,
            &format!("/v1/catalog/s{status}?status={status}"),
            status,
            true,
        )
        .await;
    }
    for status in [201u16, 302, 400, 500] {
        twice(
            &gw,
            &up,
            &format!("/v1/catalog/s{status}?status={status}"),
            status,
            false,
        )
        .await;
    }
    for (i, q) in [
        cc("no-store"),
        cc("private, max-age=60"),
        cc("no-cache"),
        cc("max-age=0"),
        "cookie=1".to_string(),
        "vary=*".to_string(),
    ]
    .iter()
    .enumerate()
    {
        twice(&gw, &up, &format!("/v1/catalog/u{i}?{q}"), 200, false).await;
    }
    assert!(up.hits() > 0);

    // Over 8 MiB: never stored, and every client gets the whole body.
    let big = 9 << 20;
    for i in 1..=2 {
        let r = get(&gw, "/v1/catalog/big?bytes=9437184", &[]).await;
        expect(&r, 200, "MISS", "9 MiB");
        assert_eq!(r.text.len(), big, "the whole body");
        assert_eq!(r.json()["call"], i, "from the upstream each time");
    }
    // 2 MiB is stored, and served whole.
    let a = get(&gw, "/v1/catalog/two?bytes=2097152", &[]).await;
    expect(&a, 200, "MISS", "2 MiB");
    let b = get(&gw, "/v1/catalog/two?bytes=2097152", &[]).await;
    expect(&b, 200, "HIT", "2 MiB again");
    assert_eq!((a.text.len(), b.text == a.text), (2 << 20, true));
    assert_eq!(up.calls("/v1/catalog/two"), 1);
}

// ---------------------------------------------------------------------------------------
// 3. Freshness: s-maxage, then max-age, then the route's ttl
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_comes_from_s_maxage_then_max_age_then_the_route() {
    let (gw, up) = start("").await;
    // (path, still fresh after 2.2 s)
    let cases = [
        ("/short/route".to_string(), false),
        (format!("/short/max-age?{}", cc("max-age=60")), true),
        (format!("/v1/catalog/max-age?{}", cc("max-age=1")), false),
        (
            format!("/v1/catalog/s-maxage?{}", cc("s-maxage=1, max-age=60")),
            false,
        ),
        (
            format!("/short/s-maxage?{}", cc("max-age=1, s-maxage=60")),
            true,
        ),
    ];
    let mut first = Vec::new();
    for (path, _) in &cases {
        let a = get(&gw, path, &[]).await;
        expect(&a, 200, "MISS", path);
        expect(&get(&gw, path, &[]).await, 200, "HIT", path);
        first.push(a);
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for ((path, fresh), a) in cases.iter().zip(&first) {
        let bare = path.split('?').next().unwrap();
        let r = get(&gw, path, &[]).await;
        if *fresh {
            expect(&r, 200, "HIT", path);
            assert_eq!(r.text, a.text, "{path}");
            let age = r.number("age").expect("Age");
            assert!(
                (2..=5).contains(&age),
                "{path}: Age after 2.2 s: {}",
                show(&r)
            );
            assert_eq!(up.calls(bare), 1, "{path}");
        } else {
            expect(&r, 200, "MISS", &format!("{path} expired"));
            assert_ne!(n(&r), n(a), "{path}");
            assert_eq!(up.calls(bare), 2, "{path}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. The client's Cache-Control: no-cache refreshes, no-store bypasses
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_cache_refreshes_the_entry_and_no_store_bypasses_it() {
    let (gw, up) = start("").await;
    let p = "/v1/catalog/rc";
    let a = get(&gw, p, &[]).await;
    expect(&a, 200, "MISS", "first");
    let fresh = get(&gw, p, &[("cache-control", "no-cache")]).await;
    expect(&fresh, 200, "MISS", "no-cache");
    assert_ne!(n(&fresh), n(&a), "no-cache reached the upstream");
    let hit = get(&gw, p, &[]).await;
    expect(&hit, 200, "HIT", "after no-cache");
    assert_eq!(hit.text, fresh.text, "the entry was replaced");

    let by = get(&gw, p, &[("cache-control", "no-store")]).await;
    expect(&by, 200, "BYPASS", "no-store");
    assert_ne!(n(&by), n(&fresh), "no-store reached the upstream");
    let hit = get(&gw, p, &[]).await;
    expect(&hit, 200, "HIT", "after no-store");
    assert_eq!(hit.text, fresh.text, "no-store left the entry alone");
    assert_eq!(up.calls("/v1/catalog/rc"), 3);
}

// ---------------------------------------------------------------------------------------
// 5. Configured key headers and the upstream's Vary
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_headers_select_entries_and_vary_outside_the_key_is_not_stored() {
    let (gw, up) = start("").await;
    let p = "/v1/catalog/lang";
    let en = get(&gw, p, &[("accept-language", "en")]).await;
    expect(&en, 200, "MISS", "en");
    let de = get(&gw, p, &[("accept-language", "de")]).await;
    expect(&de, 200, "MISS", "de");
    let none = get(&gw, p, &[]).await;
    expect(&none, 200, "MISS", "no Accept-Language");
    for (lang, want) in [("en", &en), ("de", &de)] {
        let r = get(&gw, p, &[("accept-language", lang)]).await;
        expect(&r, 200, "HIT", lang);
        assert_eq!(r.text, want.text, "{lang}: its own entry");
        assert_eq!(r.json()["lang"], lang);
    }
    expect(&get(&gw, p, &[]).await, 200, "HIT", "none again");
    assert_eq!(up.calls(p), 3);

    // Vary on a header in the key: stored per value.
    let v = "/v1/catalog/vary?vary=Accept-Language";
    let fr = [("accept-language", "fr")];
    expect(&get(&gw, v, &fr).await, 200, "MISS", "vary in key");
    expect(&get(&gw, v, &fr).await, 200, "HIT", "vary in key again");
    assert_eq!(up.calls("/v1/catalog/vary"), 1);
    // Vary on a header outside the key: never stored.
    for i in 1..=3 {
        let r = get(&gw, "/nokey/vary?vary=Accept-Language", &fr).await;
        expect(&r, 200, "MISS", &format!("vary outside the key #{i}"));
        assert_eq!(up.calls("/nokey/vary"), i);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Per consumer, after authentication and rate limits
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_per_consumer_and_authentication_and_limits_come_first() {
    let (gw, up) = start("").await;
    let p = "/private/doc";
    let as_ = |k: &'static str| [("x-api-key", k)];
    let a1 = get(&gw, p, &as_(ACME_KEY)).await;
    expect(&a1, 200, "MISS", "acme");
    assert_eq!(a1.json()["consumer"], "acme");
    let a2 = get(&gw, p, &as_(ACME_KEY)).await;
    expect(&a2, 200, "HIT", "acme again");
    assert_eq!(a2.text, a1.text);

    let b1 = get(&gw, p, &as_(BETA_KEY)).await;
    expect(&b1, 200, "MISS", "beta never gets acme's entry");
    assert_eq!(b1.json()["consumer"], "beta");
    let b2 = get(&gw, p, &as_(BETA_KEY)).await;
    expect(&b2, 200, "HIT", "beta again");
    assert_eq!(b2.text, b1.text, "beta's own entry");

    for (what, h) in [
        ("no key", vec![]),
        ("wrong key", vec![("x-api-key", "test-only-wrong-key")]),
    ] {
        let r = get(&gw, p, &h).await;
        assert_eq!(r.status, 401, "{what}: {}", show(&r));
        assert_ne!(xc(&r), "HIT", "{what}");
        assert_eq!(r.code(), "unauthorized", "{what}");
    }
    // 3 requests a minute: acme's third is a hit, its fourth is refused though cached.
    expect(&get(&gw, p, &as_(ACME_KEY)).await, 200, "HIT", "acme third");
    let r = get(&gw, p, &as_(ACME_KEY)).await;
    assert_eq!(r.status, 429, "{}", show(&r));
    assert_eq!(r.code(), "rate_limited");
    assert_ne!(xc(&r), "HIT");
    assert_eq!(up.calls(p), 2, "one upstream request per consumer");
}

// ---------------------------------------------------------------------------------------
// 7. Concurrent misses: one upstream request
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_upstream_request() {
    let (gw, up) = start("").await;
    let url = gw.url("/v1/catalog/cold?ms=300");
    let c = client();
    let answers = futures::future::join_all((0..20).map(|_| {
        let req = c.get(&url).send();
        async move {
            let r = req.await.unwrap();
            let x = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), x, r.text().await.unwrap())
        }
    }))
    .await;
    assert_eq!(
        up.calls("/v1/catalog/cold"),
        1,
        "one upstream request for 20 misses"
    );
    let body = &answers[0].2;
    for (i, (status, x, text)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "#{i}");
        assert_eq!(text, body, "#{i}: the same answer");
        assert!(matches!(x.as_deref(), Some("MISS" | "HIT")), "#{i}: {x:?}");
    }
    assert!(answers.iter().any(|a| a.1.as_deref() == Some("MISS")));
    let r = get(&gw, "/v1/catalog/cold?ms=300", &[]).await;
    expect(&r, 200, "HIT", "after");
    assert_eq!(&r.text, body);
    assert_eq!(up.calls("/v1/catalog/cold"), 1);
}

// ---------------------------------------------------------------------------------------
// 8. stale_while_revalidate: the old answer at once, one refresh in the background
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_is_served_stale_while_one_request_refreshes_it() {
    let (gw, up) = start("").await;
    // The upstream answers at once the first time, after 1.5 s from then on.
    let p = "/swr/doc?ms=1500&slow_from=2";
    let first = get(&gw, p, &[]).await;
    expect(&first, 200, "MISS", "first");
    expect(&get(&gw, p, &[]).await, 200, "HIT", "fresh");
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let mut stale = 0;
    for i in 0..2 {
        let r = get(&gw, p, &[]).await;
        expect(&r, 200, "STALE", &format!("expired #{i}"));
        assert_eq!(r.text, first.text, "the old answer");
        assert!(
            r.took() < Duration::from_millis(1000),
            "not waiting for the refresh: {:?}",
            r.took()
        );
        stale += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let r = get(&gw, p, &[]).await;
        match xc(&r) {
            "HIT" if r.json()["call"] == 2 => break r,
            "STALE" => stale += 1,
            _ => panic!("while refreshing: {}", show(&r)),
        }
        assert!(Instant::now() < deadline, "never refreshed: {}", show(&r));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(fresh.text, first.text);
    assert_eq!(
        up.calls("/swr/doc"),
        2,
        "one refresh for every stale answer"
    );
    let m = gw
        .metrics_when(|m| {
            metric(
                m,
                "gateway_cache_requests_total",
                &[("route", "swr"), ("result", "STALE")],
            ) == stale as f64
        })
        .await;
    let count = |r: &str| {
        metric(
            &m,
            "gateway_cache_requests_total",
            &[("route", "swr"), ("result", r)],
        )
    };
    assert_eq!(count("STALE"), stale as f64, "{m}");
    assert_eq!(count("MISS"), 1.0, "{m}");
}

// ---------------------------------------------------------------------------------------
// 9. Compression on the same route: one entry, every client its own encoding
// ---------------------------------------------------------------------------------------

async fn fetch(gw: &common::Gateway, path: &str, gzip: bool) -> (String, Option<String>, Vec<u8>) {
    let mut req = client().get(gw.url(path));
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (x, enc) = (h("x-cache").unwrap_or_default(), h("content-encoding"));
    (x, enc, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_identity_clients_share_one_entry() {
    let (gw, up) = start("").await;
    for (path, order) in [
        ("/zip/a?bytes=4096", [true, false, true, false]),
        ("/zip/b?bytes=4096", [false, true, false, true]),
    ] {
        let mut bodies = Vec::new();
        for (i, gzip) in order.into_iter().enumerate() {
            let (x, enc, bytes) = fetch(&gw, path, gzip).await;
            assert_eq!(x, if i == 0 { "MISS" } else { "HIT" }, "{path} #{i}");
            let body = if gzip {
                assert_eq!(enc.as_deref(), Some("gzip"), "{path} #{i}");
                gunzip(&bytes)
            } else {
                assert_eq!(enc, None, "{path} #{i}: identity asked nothing");
                bytes
            };
            assert_eq!(body.len(), 4096, "{path} #{i}");
            bodies.push(body);
        }
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "{path}: one body for all"
        );
        let bare = path.split('?').next().unwrap();
        assert_eq!(up.calls(bare), 1, "{path}");
    }
    // Already encoded by the upstream: passed on, never stored.
    for i in 1..=2u64 {
        let (x, enc, bytes) = fetch(&gw, "/zip/enc?gzip=1", true).await;
        assert_eq!((x.as_str(), enc.as_deref()), ("MISS", Some("gzip")), "#{i}");
        let v: serde_json::Value = serde_json::from_slice(&gunzip(&bytes)).unwrap();
        assert_eq!(v["call"], i, "#{i}");
    }
}

// ---------------------------------------------------------------------------------------
// 10. max_memory: the least recently used entry goes first
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_entry_is_evicted_within_max_memory() {
    let (gw, up) = start("cache:\n  max_memory: 1MiB\n").await;
    let at = |name: &str| format!("/v1/catalog/{name}?bytes=307200");
    for name in ["a", "b", "c"] {
        expect(&get(&gw, &at(name), &[]).await, 200, "MISS", name);
    }
    expect(&get(&gw, &at("a"), &[]).await, 200, "HIT", "a touched");
    expect(&get(&gw, &at("d"), &[]).await, 200, "MISS", "d");
    let a = get(&gw, &at("a"), &[]).await;
    expect(&a, 200, "HIT", "a, recently used, kept");
    assert_eq!(a.text.len(), 307_200);
    expect(&get(&gw, &at("d"), &[]).await, 200, "HIT", "d, just stored");
    expect(
        &get(&gw, &at("b"), &[]).await,
        200,
        "MISS",
        "b, least recently used, evicted",
    );
    assert_eq!(up.calls("/v1/catalog/a"), 1);
    assert_eq!(up.calls("/v1/catalog/b"), 2);
}
