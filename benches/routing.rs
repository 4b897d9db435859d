//! Route matching over a realistic set of 1,000 routes.
//!
//! Run with `cargo bench --bench routing` (add `-- --quick` for a short run). See
//! `benches/README.md` for what each case measures and the figures last measured.

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gateway::runtime::router::{decode_segments, HostPattern, Match, PathPattern, Router};
use http::Method;
use std::hint::black_box;

/// Number of services; each contributes `TEMPLATES.len()` routes.
const SERVICES: usize = 50;

/// (host, path, methods) of one route template.
type Template = (
    Option<&'static str>,
    &'static str,
    Option<&'static [&'static str]>,
);

/// (host, path, methods) of one route, as text a policy file would hold.
type RawRoute = (Option<String>, String, Option<Vec<Method>>);

/// One route template per service: (host, path with `{svc}` standing for the service name,
/// allowed methods, `None` meaning any method). The mix follows a typical public API:
/// literal paths, `{param}` paths, final `/*` wildcards, host-specific and `*.example.com`
/// routes, and method lists.
const TEMPLATES: &[Template] = &[
    (None, "/v1/{svc}/health", Some(&["GET"])),
    (None, "/v1/{svc}/items", Some(&["GET", "POST"])),
    (
        None,
        "/v1/{svc}/items/{id}",
        Some(&["GET", "PUT", "DELETE"]),
    ),
    (None, "/v1/{svc}/items/{id}/history", Some(&["GET"])),
    (
        None,
        "/v1/{svc}/items/{id}/tags/{tag}",
        Some(&["GET", "DELETE"]),
    ),
    (None, "/v1/{svc}/items/search", Some(&["GET"])),
    (None, "/v1/{svc}/users/{user}/orders", Some(&["GET"])),
    (
        None,
        "/v1/{svc}/users/{user}/orders/{order}",
        Some(&["GET", "PATCH"]),
    ),
    (None, "/v1/{svc}/static/*", None),
    (
        Some("api.example.com"),
        "/v2/{svc}/items/{id}",
        Some(&["GET"]),
    ),
    (
        Some("*.example.com"),
        "/v2/{svc}/items",
        Some(&["GET", "POST"]),
    ),
    (Some("*.internal.example.com"), "/v2/{svc}/events/*", None),
    (
        Some("admin.example.com"),
        "/v1/{svc}/config",
        Some(&["GET", "PUT"]),
    ),
    (None, "/v1/{svc}/reports/{year}/{month}", Some(&["GET"])),
    (None, "/v1/{svc}/files/*", Some(&["GET", "HEAD"])),
    (None, "/v1/{svc}/webhooks", Some(&["POST"])),
    (None, "/v1/{svc}/webhooks/{hook}", Some(&["GET", "DELETE"])),
    (
        Some("{svc}.internal.example.com"),
        "/internal/{svc}/metrics",
        Some(&["GET"]),
    ),
    (None, "/v1/{svc}/batch", Some(&["POST"])),
    (None, "/v1/{svc}/*", None),
];

/// A parsed route, ready to be added to a router.
struct Spec {
    host: HostPattern,
    path: PathPattern,
    methods: Option<Vec<Method>>,
}

/// The raw (unparsed) text of the 1,000 routes, in route-index order.
fn raw_routes() -> Vec<RawRoute> {
    let mut out = Vec::with_capacity(SERVICES * TEMPLATES.len());
    for i in 0..SERVICES {
        let svc = format!("svc{i}");
        for (host, path, methods) in TEMPLATES {
            let host = host.map(|h| h.replace("{svc}", &svc));
            let path = path.replace("{svc}", &svc);
            let methods = methods.map(|ms| {
                ms.iter()
                    .map(|m| m.parse::<Method>().expect("valid method"))
                    .collect()
            });
            out.push((host, path, methods));
        }
    }
    out
}

fn parse_routes(raw: &[RawRoute]) -> Vec<Spec> {
    raw.iter()
        .map(|(host, path, methods)| Spec {
            host: HostPattern::parse(host.as_deref()).expect("valid host"),
            path: PathPattern::parse(path).expect("valid path"),
            methods: methods.clone(),
        })
        .collect()
}

fn build(specs: &[Spec]) -> Router {
    let mut router = Router::default();
    for (i, s) in specs.iter().enumerate() {
        router.add(i, &s.host, &s.path, s.methods.clone());
    }
    router
}

/// Route index of template `k` of service `i`.
fn idx(i: usize, k: usize) -> usize {
    i * TEMPLATES.len() + k
}

fn found(route: usize, params: &[&str]) -> Match {
    Match::Found {
        route,
        params: params.iter().map(|p| p.to_string()).collect(),
    }
}

/// Matches `path` the way the gateway does: decode, then find.
fn lookup(router: &Router, host: &str, path: &str, method: &Method) -> Match {
    let segs = decode_segments(path).expect("valid path");
    let refs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    let req = pingora_http::RequestHeader::build(method.as_str(), path.as_bytes(), None)
        .expect("valid request");
    router.find(host, &refs, method, &req)
}

fn bench_routing(c: &mut Criterion) {
    let raw = raw_routes();
    assert_eq!(raw.len(), 1_000);
    let specs = parse_routes(&raw);
    let router = build(&specs);

    // Each case: (name, host, path, method, expected outcome). The expectations are checked
    // once before timing, so a change in matching cannot silently change what is measured.
    let cases: Vec<(&str, &str, &str, Method, Match)> = vec![
        (
            "a_literal_hit",
            "api.example.com",
            "/v1/svc3/health",
            Method::GET,
            found(idx(3, 0), &[]),
        ),
        (
            "b_param_hit_deep",
            "api.example.com",
            "/v1/svc48/users/u-991/orders/o-12345",
            Method::GET,
            found(idx(48, 7), &["u-991", "o-12345"]),
        ),
        (
            "c_wildcard_fallback",
            "api.example.com",
            "/v1/svc42/items/123/unknown/more",
            Method::GET,
            found(idx(42, 19), &[]),
        ),
        (
            "d_miss_404",
            "api.example.com",
            "/v3/svc42/items/123",
            Method::GET,
            Match::NotFound,
        ),
        (
            "extra_method_not_allowed_405",
            "api.example.com",
            "/v2/svc42/items",
            Method::DELETE,
            // Only the `*.example.com` route matches the path, and it allows GET and POST.
            Match::MethodNotAllowed(vec![Method::GET, Method::HEAD, Method::POST]),
        ),
        (
            "extra_suffix_host_hit",
            "eu.internal.example.com",
            "/v2/svc17/events/2024/06/01",
            Method::POST,
            found(idx(17, 11), &[]),
        ),
    ];

    let mut group = c.benchmark_group("find_1000_routes");
    group.throughput(Throughput::Elements(1));
    for (name, host, path, method, expected) in &cases {
        assert_eq!(
            &lookup(&router, host, path, method),
            expected,
            "case {name}: {host} {method} {path}"
        );
        // Segments are decoded outside the timed loop: this measures `Router::find` alone.
        let segs = decode_segments(path).expect("valid path");
        let refs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
        let req = pingora_http::RequestHeader::build(method.as_str(), path.as_bytes(), None)
            .expect("valid request");
        group.bench_function(*name, |b| {
            b.iter(|| {
                router.find(
                    black_box(host),
                    black_box(&refs),
                    black_box(method),
                    black_box(&req),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_and_find_1000_routes");
    group.throughput(Throughput::Elements(1));
    let typical = "/v1/svc42/items/12345";
    assert_eq!(
        lookup(&router, "api.example.com", typical, &Method::GET),
        found(idx(42, 2), &["12345"])
    );
    group.bench_function("e_typical_path", |b| {
        b.iter(|| {
            lookup(
                &router,
                black_box("api.example.com"),
                black_box(typical),
                black_box(&Method::GET),
            )
        })
    });
    let encoded = "/v1/svc42/items/caf%C3%A9%20au%20lait";
    assert_eq!(
        lookup(&router, "api.example.com", encoded, &Method::GET),
        found(idx(42, 2), &["café au lait"])
    );
    group.bench_function("extra_percent_encoded_path", |b| {
        b.iter(|| {
            lookup(
                &router,
                black_box("api.example.com"),
                black_box(encoded),
                black_box(&Method::GET),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("build_1000_routes");
    group.throughput(Throughput::Elements(specs.len() as u64));
    group.bench_function("add_parsed", |b| b.iter(|| build(black_box(&specs))));
    group.bench_function("parse_and_add", |b| {
        b.iter_batched(
            || raw.clone(),
            |raw| build(&parse_routes(black_box(&raw))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_routing);
criterion_main!(benches);
