//! What aggregation adds to the latency of its calls: one upstream call through the
//! gateway's client (the floor), against an aggregate of three such calls made
//! concurrently, templated and merged. The upstream is a small axum server on loopback
//! answering a JSON document.

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::aggregate::merge::merge;
use gateway::aggregate::run::{run, Inputs};
use gateway::aggregate::{Aggregate, Call};
use gateway::config::policy::{Merge, UpstreamDef};
use gateway::template::{Scope, Template, Values};
use gateway::upstream::{client, Upstream};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

struct NoValues;
impl Values for NoValues {
    fn path_param(&self, _: usize) -> Option<&str> {
        None
    }
    fn query(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
    fn header(&self, _: &http::HeaderName) -> Option<&str> {
        None
    }
    fn claim(&self, _: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed("alice"))
    }
    fn consumer_id(&self) -> Option<&str> {
        None
    }
}

fn upstream(rt: &tokio::runtime::Runtime) -> Arc<Upstream> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|| async {
        axum::Json(
            serde_json::json!({"id": "alice", "name": "Alice", "team_id": "t-1",
            "items": [1, 2, 3, 4, 5, 6, 7, 8]}),
        )
    });
    rt.spawn(async move { axum::serve(listener, app).await });
    let def: UpstreamDef =
        serde_yaml::from_str(&format!("targets: [\"{addr}\"]")).expect("upstream def");
    Arc::new(Upstream::build("up", &def, std::path::Path::new(".")).expect("upstream"))
}

fn call(name: &str, up: &Arc<Upstream>, path: &str) -> Call {
    let scope = Scope {
        path_params: &[],
        claims: true,
        consumer: false,
        calls: &[],
    };
    Call {
        name: name.into(),
        upstream: up.clone(),
        path: Template::compile(path, &scope).expect("template"),
        required: name == "profile",
        timeout: Some(Duration::from_secs(1)),
        method: http::Method::GET,
        forward_body: false,
        deps: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let up = upstream(&rt);
    let headers = RequestHeader::build(http::Method::GET, b"/", None).expect("header");
    let mut g = c.benchmark_group("aggregate");
    g.bench_function("one call (the floor)", |b| {
        let req = RequestHeader::build(http::Method::GET, b"/users/alice", None).expect("req");
        b.iter(|| {
            rt.block_on(client::send(&up, b"", &req, None, 1 << 20))
                .map(|a| a.body.len())
                .expect("answer")
        })
    });
    let agg = Aggregate {
        timeout: Duration::from_secs(2),
        merge: Merge::Nest,
        calls: vec![
            call("profile", &up, "/users/{claims.sub}"),
            call("orders", &up, "/orders?user={claims.sub}"),
            call("recommendations", &up, "/recommendations/{claims.sub}"),
        ],
        forwards_body: false,
    };
    g.bench_function("three calls, concurrent, merged", |b| {
        b.iter(|| {
            rt.block_on(async {
                let inputs = Inputs {
                    values: &NoValues,
                    headers: &headers,
                    body: None,
                    keys: Vec::new(),
                    span: None,
                };
                let outcomes = run(&agg, &inputs).await;
                merge(&agg, &outcomes).expect("merged").partial
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
