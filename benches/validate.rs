//! Validating request bodies against a JSON Schema: strict parse + schema check of a
//! 1 KiB and a 64 KiB order document (what a schema route adds per request).

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

fn order(items: usize) -> Vec<u8> {
    let items: Vec<_> = (0..items)
        .map(|i| {
            json!({
                "sku": format!("ABC-{:04}", i % 10000),
                "quantity": 1 + i % 9,
                "id": "0b8f2a34-5a1e-4c8b-9d2a-1f2e3d4c5b6a",
                "note": "leave at the door",
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "email": "buyer@example.com",
        "deliver_at": "2026-11-21T10:00:00Z",
        "items": items,
    }))
    .expect("json")
}

/// Grows the order until it is just under `size` bytes.
fn order_of_size(size: usize) -> Vec<u8> {
    let mut n = 1;
    while order(n + 1).len() <= size {
        n += 1;
    }
    order(n)
}

fn bench(c: &mut Criterion) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["email", "items"],
        "additionalProperties": false,
        "properties": {
            "email": {"type": "string", "format": "email"},
            "deliver_at": {"type": "string", "format": "date-time"},
            "items": {"type": "array", "maxItems": 1000, "items": {"$ref": "#/$defs/item"}}
        },
        "$defs": {"item": {
            "type": "object", "required": ["sku", "quantity"], "additionalProperties": false,
            "properties": {
                "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                "id": {"type": "string", "format": "uuid"},
                "note": {"type": "string", "maxLength": 200}
            }
        }}
    });
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema");
    let mut group = c.benchmark_group("validate body");
    for (name, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let body = order_of_size(size);
        assert!(gateway::validate::check_body(&validator, &body).is_ok());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| gateway::validate::check_body(&validator, &body))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
