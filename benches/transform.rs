//! JSON transforms: parse + transform (a rename, a remove, a `set` with `{consumer.id}`,
//! an `allow` over `/items/*/...`) + compact write of a 1 KiB order document, next to a
//! bare parse + write of the same body (what any JSON rewrite costs).

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::config::traffic::TransformDef;
use gateway::template::{Scope, Values};
use gateway::transform::{apply_bytes, Transform};
use serde_json::json;
use std::borrow::Cow;

struct Request;

impl Values for Request {
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
        None
    }
    fn consumer_id(&self) -> Option<&str> {
        Some("acme")
    }
}

fn bench(c: &mut Criterion) {
    let body = include_bytes!("fixtures/order-1k.json").as_slice();
    let def: TransformDef = serde_json::from_value(json!({
        "rename": {"/email": "/customer/email"},
        "remove": ["/deliver_at"],
        "set": {"/requested_by": "{consumer.id}"},
        "allow": ["/customer", "/requested_by", "/currency", "/total",
                  "/items/*/sku", "/items/*/quantity"]
    }))
    .unwrap();
    let scope = Scope {
        path_params: &[],
        claims: false,
        consumer: true,
        calls: &[],
    };
    let t = Transform::compile(&def, &scope).unwrap();
    let out = apply_bytes(&t, body, &Request).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["customer"]["email"], "buyer@example.com");
    assert_eq!(v["requested_by"], "acme");
    assert_eq!(v["items"][7], json!({"sku": "ABC-0007", "quantity": 8}));
    assert!(v.get("deliver_at").is_none());

    let mut group = c.benchmark_group("transform body");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("1KiB parse+transform+write", |b| {
        b.iter(|| apply_bytes(&t, body, &Request).unwrap())
    });
    group.bench_function("1KiB parse+write only", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            serde_json::to_vec(&v).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
