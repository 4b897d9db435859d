//! Parse + compile + swap of a policy set of 1,000 routes (in 10 files, 50 upstreams):
//! what one hot reload costs, end to end, through `Store::reload`.

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::load_gateway;
use gateway::runtime::Store;
use std::fmt::Write;

fn policy_dir(routes: usize, files: usize, upstreams: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "listeners:\n  - name: public\n    bind: 127.0.0.1:18080\npolicies: policies/\n",
    )
    .expect("gateway.yaml");
    let pdir = dir.path().join("policies");
    std::fs::create_dir(&pdir).expect("mkdir");
    let mut ups = String::from("upstreams:\n");
    for u in 0..upstreams {
        let _ = writeln!(
            ups,
            "  svc{u}:\n    targets: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n    timeouts: {{ connect: 1s, read: 5s }}",
            10000 + u,
            20000 + u
        );
    }
    std::fs::write(pdir.join("00-upstreams.yaml"), ups).expect("upstreams");
    for f in 0..files {
        let mut s = String::from("routes:\n");
        for r in (f..routes).step_by(files) {
            let path = match r % 3 {
                0 => format!("/v1/svc{r}/items/{{id}}"),
                1 => format!("/v1/svc{r}/things"),
                _ => format!("/v1/svc{r}/*"),
            };
            let _ = writeln!(
                s,
                "  - name: route-{r}\n    match: {{ path: \"{path}\", methods: [GET, POST] }}\n    auth: none\n    upstream: svc{}\n    rewrite: {{ strip_prefix: /v1 }}\n    request:\n      headers: {{ set: {{ X-Route: \"{r}\" }}, remove: [Cookie] }}",
                r % upstreams
            );
        }
        std::fs::write(pdir.join(format!("routes-{f:02}.yaml")), s).expect("routes");
    }
    dir
}

fn bench(c: &mut Criterion) {
    let dir = policy_dir(1000, 10, 50);
    let gw = load_gateway(&dir.path().join("gateway.yaml")).expect("gateway.yaml");
    let store = Store::open(gw).expect("policy set compiles");
    assert_eq!(store.load().routes.len(), 1000);
    c.bench_function("reload 1000 routes (parse+compile+swap)", |b| {
        b.iter(|| store.reload(true).expect("reload"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
