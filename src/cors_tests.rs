use super::*;
use crate::config::integration::CorsPolicyDef;
use crate::config::values::{Dur, MethodName};

fn def(origins: &[&str], credentials: bool) -> CorsPolicyDef {
    CorsPolicyDef {
        allow_origins: origins.iter().map(|s| s.to_string()).collect(),
        allow_methods: None,
        allow_headers: vec!["Authorization".into(), "X-Custom".into()],
        expose_headers: vec!["X-Request-Id".into()],
        allow_credentials: credentials,
        max_age: Some(Dur(Duration::from_secs(600))),
    }
}

#[test]
fn origins() {
    let p = CorsPolicy::compile(&def(
        &["https://app.example.com", "https://*.example.org"],
        true,
    ))
    .unwrap();
    assert!(p.allows(b"https://app.example.com"));
    assert!(p.allows(b"HTTPS://APP.example.com"));
    assert!(!p.allows(b"http://app.example.com"));
    assert!(!p.allows(b"https://app.example.com.evil.net"));
    assert!(p.allows(b"https://a.example.org"));
    assert!(p.allows(b"https://a.b.example.org:8443"));
    assert!(!p.allows(b"https://example.org"));
    assert!(!p.allows(b"https://evilexample.org"));
    assert!(!p.allows(b"null"));
    assert!(!p.allows(&[0xff]));
    // Non-ASCII hosts never panic (byte offsets inside a character).
    assert!(!p.allows("https://é".as_bytes()));
    assert!(!p.allows("https://ééééééééééééé".as_bytes()));
    assert!(p.allows("https://é.example.org".as_bytes()));
    let any = CorsPolicy::compile(&def(&["*"], false)).unwrap();
    assert!(any.allows(b"http://anything:1"));
}

#[test]
fn bad_policies_are_refused() {
    assert!(CorsPolicy::compile(&def(&["*"], true))
        .unwrap_err()
        .contains("allow_credentials"));
    assert!(CorsPolicy::compile(&def(&[], false)).is_err());
    for bad in [
        "app.example.com",
        "https://a.com/path",
        "ftp://a.com",
        "https://a.*.com",
        "https://*",
    ] {
        assert!(CorsPolicy::compile(&def(&[bad], false)).is_err(), "{bad}");
    }
}

#[test]
fn preflights() {
    let p =
        std::sync::Arc::new(CorsPolicy::compile(&def(&["https://app.example.com"], true)).unwrap());
    let route = RouteCors::new(p, Some(&[Method::GET, Method::POST]));
    let origin = HeaderValue::from_static("https://app.example.com");
    let ok = route
        .preflight(&origin, b"POST", Some(b"authorization, x-custom"))
        .unwrap();
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(ok.headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        ok.headers["access-control-allow-headers"],
        "Authorization, X-Custom"
    );
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");
    assert_eq!(ok.headers["access-control-max-age"], "600");
    for (o, m, h) in [
        ("https://other.example.com", &b"POST"[..], None),
        ("https://app.example.com", &b"DELETE"[..], None),
        (
            "https://app.example.com",
            &b"POST"[..],
            Some(&b"x-other"[..]),
        ),
    ] {
        let r = route
            .preflight(&HeaderValue::from_str(o).unwrap(), m, h)
            .unwrap();
        assert_eq!(r.status, 204);
        assert!(
            r.headers.get("access-control-allow-origin").is_none(),
            "{o} {m:?} {h:?}"
        );
    }
    // The policy's own methods win over the route's.
    let mut d = def(&["https://app.example.com"], false);
    d.allow_methods = Some(vec![MethodName(Method::PUT)]);
    let route = RouteCors::new(
        std::sync::Arc::new(CorsPolicy::compile(&d).unwrap()),
        Some(&[Method::GET]),
    );
    assert!(route
        .preflight(&origin, b"PUT", None)
        .unwrap()
        .headers
        .contains_key("access-control-allow-origin"));
}

#[test]
fn answers_lose_the_upstreams_cors_headers() {
    let p = CorsPolicy::compile(&def(&["https://app.example.com"], true)).unwrap();
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("Access-Control-Allow-Origin", "*")
        .unwrap();
    resp.insert_header("Access-Control-Allow-Methods", "DELETE")
        .unwrap();
    decorate(&mut resp, &p, None);
    assert!(resp.headers.get("access-control-allow-origin").is_none());
    assert!(resp.headers.get("access-control-allow-methods").is_none());
    assert_eq!(resp.headers["vary"], "Origin");
    let origin = HeaderValue::from_static("https://app.example.com");
    decorate(&mut resp, &p, Some(&origin));
    assert_eq!(
        resp.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        resp.headers["access-control-expose-headers"],
        "X-Request-Id"
    );
    assert_eq!(resp.headers["access-control-allow-credentials"], "true");
}
