use super::*;
use crate::config::integration::{CacheKeyPart, RouteCacheDef};
use crate::config::values::Dur;
use pingora_cache::key::CacheHashKey;

fn route(key: &[&str]) -> RouteCache {
    let key = key
        .iter()
        .map(|s| serde_yaml::from_str::<CacheKeyPart>(s).unwrap())
        .collect();
    RouteCache::compile(
        "policy-test",
        &RouteCacheDef {
            ttl: Dur(Duration::from_secs(60)),
            key,
            stale_while_revalidate: Some(Dur(Duration::from_secs(10))),
        },
    )
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn ttl(c: RespCacheable) -> Option<u64> {
    match c {
        RespCacheable::Cacheable(m) => Some(m.fresh_sec()),
        RespCacheable::Uncacheable(_) => None,
    }
}

#[test]
fn only_get_and_head_look_up_and_request_directives_count() {
    assert_eq!(
        lookup(&req("GET", "/", &[])),
        Lookup::Use { refresh: false }
    );
    assert_eq!(
        lookup(&req("HEAD", "/", &[])),
        Lookup::Use { refresh: false }
    );
    assert_eq!(lookup(&req("POST", "/", &[])), Lookup::Bypass);
    assert_eq!(lookup(&req("DELETE", "/", &[])), Lookup::Bypass);
    let nc = req("GET", "/", &[("cache-control", "no-cache")]);
    assert_eq!(lookup(&nc), Lookup::Use { refresh: true });
    let ma0 = req("GET", "/", &[("cache-control", "max-age=0")]);
    assert_eq!(lookup(&ma0), Lookup::Use { refresh: true });
    let pragma = req("GET", "/", &[("pragma", "no-cache")]);
    assert_eq!(lookup(&pragma), Lookup::Use { refresh: true });
    let ns = req("GET", "/", &[("cache-control", "no-store")]);
    assert_eq!(lookup(&ns), Lookup::Bypass);
}

#[test]
fn keys_separate_what_must_not_share_an_entry() {
    let rc = route(&["header:Accept-Language"]);
    let k = |r: &RequestHeader, host: &str, who: Option<&str>| key(&rc, r, host, who).primary_bin();
    let plain = req("GET", "/v1/catalog?page=1", &[]);
    let base = k(&plain, "api.example.com", None);
    // HEAD reads GET's entry; host case does not matter.
    assert_eq!(
        base,
        k(
            &req("HEAD", "/v1/catalog?page=1", &[]),
            "API.example.com",
            None
        )
    );
    assert_ne!(
        base,
        k(
            &req("GET", "/v1/catalog?page=2", &[]),
            "api.example.com",
            None
        )
    );
    assert_ne!(
        base,
        k(&req("GET", "/v1/catalog", &[]), "api.example.com", None)
    );
    assert_ne!(base, k(&plain, "other.example.com", None));
    let fr = req("GET", "/v1/catalog?page=1", &[("accept-language", "fr")]);
    let de = req("GET", "/v1/catalog?page=1", &[("accept-language", "de")]);
    let empty = req("GET", "/v1/catalog?page=1", &[("accept-language", "")]);
    assert_ne!(
        k(&fr, "api.example.com", None),
        k(&de, "api.example.com", None)
    );
    assert_ne!(base, k(&empty, "api.example.com", None));
    // Consumers never share, and no consumer is not any consumer.
    let a = k(&plain, "api.example.com", Some("a"));
    assert_ne!(a, k(&plain, "api.example.com", Some("b")));
    assert_ne!(a, base);
    // Other headers are not part of the key.
    let other = req("GET", "/v1/catalog?page=1", &[("x-anything", "1")]);
    assert_eq!(base, k(&other, "api.example.com", None));
    // The purge index gets the route and the path without the query.
    let tag = key(&rc, &plain, "h", None);
    let tag = tag.extensions.get::<EntryTag>().unwrap();
    assert_eq!((&*tag.route, &*tag.path), ("policy-test", "/v1/catalog"));
}

#[test]
fn statuses_cookies_encodings_and_directives_decide_storage() {
    let rc = route(&[]);
    assert_eq!(ttl(admit(&rc, &resp(200, &[]), false)), Some(60));
    for s in [203, 204, 301, 404, 410] {
        assert!(ttl(admit(&rc, &resp(s, &[]), false)).is_some(), "{s}");
    }
    for s in [201, 206, 302, 304, 400, 401, 500, 502, 503] {
        assert!(ttl(admit(&rc, &resp(s, &[]), false)).is_none(), "{s}");
    }
    let never = [
        ("set-cookie", "sid=1"),
        ("cache-control", "no-store"),
        ("cache-control", "private"),
        ("cache-control", "private, max-age=60"),
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("content-encoding", "gzip"),
        ("vary", "*"),
        ("vary", "Cookie"),
    ];
    for h in never {
        assert!(ttl(admit(&rc, &resp(200, &[h]), false)).is_none(), "{h:?}");
    }
    assert!(ttl(admit(
        &rc,
        &resp(200, &[("content-encoding", "identity")]),
        false
    ))
    .is_some());
    assert!(ttl(admit(
        &rc,
        &resp(200, &[("vary", "Accept-Encoding")]),
        false
    ))
    .is_some());
}

#[test]
fn upstream_freshness_beats_the_route_ttl() {
    let rc = route(&[]);
    let cc = |v: &'static str| resp(200, &[("cache-control", v)]);
    assert_eq!(ttl(admit(&rc, &cc("max-age=5"), false)), Some(5));
    assert_eq!(
        ttl(admit(&rc, &cc("max-age=5, s-maxage=7"), false)),
        Some(7)
    );
    assert_eq!(ttl(admit(&rc, &cc("public"), false)), Some(60));
    let RespCacheable::Cacheable(m) = admit(&rc, &cc("max-age=5"), false) else {
        panic!("cacheable")
    };
    assert_eq!(m.stale_while_revalidate_sec(), 10);
    let RespCacheable::Cacheable(m) = admit(&rc, &cc("max-age=5, must-revalidate"), false) else {
        panic!("cacheable")
    };
    assert_eq!(m.stale_while_revalidate_sec(), 0);
}

#[test]
fn unchecked_credentials_need_a_shareable_answer() {
    let rc = route(&[]);
    assert!(ttl(admit(&rc, &resp(200, &[]), true)).is_none());
    let public = resp(200, &[("cache-control", "public, max-age=30")]);
    assert_eq!(ttl(admit(&rc, &public, true)), Some(30));
}

#[test]
fn vary_is_covered_only_by_key_headers() {
    let rc = route(&["header:Accept-Language"]);
    let v = resp(200, &[("vary", "accept-language, Accept-Encoding")]);
    assert!(ttl(admit(&rc, &v, false)).is_some());
    let v = resp(200, &[("vary", "Accept-Language, Origin")]);
    assert!(ttl(admit(&rc, &v, false)).is_none());
}

#[test]
fn key_parts_are_checked() {
    let bad = |k: &str| serde_yaml::from_str::<CacheKeyPart>(k).is_err();
    assert!(bad("cookie:sid"));
    assert!(bad("'header:bad name'"));
    assert!(bad("'header:'"));
    assert!(bad("Accept-Language"));
    assert!(!bad("header:X-Tenant"));
}
