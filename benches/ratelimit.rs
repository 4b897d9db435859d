//! Per-request cost of a rate-limit decision: the memory backend with 1 and with 100,000
//! client keys live, two limits checked together, and the Redis path (one script call over
//! loopback to a `redis-server` this bench starts). Before the benches it measures the
//! memory a key costs, with one million distinct keys, by counting allocations.

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::gateway::{OnStoreError, RedisStore};
use gateway::config::values::Dur;
use gateway::ratelimit::memory::{self, MemLimit};
use gateway::ratelimit::redis::RedisBackend;
use gateway::ratelimit::{Backend, Limit, Spec};
use gateway::state::redis::RedisPool;
use std::alloc::System;
use std::time::Duration;

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

/// Counts the bytes currently allocated, to measure what the keys cost (`cap` wraps the
/// system allocator, so that this bench needs no unsafe code of its own).
#[global_allocator]
static ALLOC: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

/// A generous limit, so that every check in the benches is admitted (the common case).
fn limit(name: &str, max_keys: usize) -> Limit {
    let spec = Spec {
        requests: 1_000_000,
        per: Duration::from_secs(1),
        burst: 1_000_000,
    };
    Limit {
        memory: MemLimit::new(&spec, max_keys),
        spec,
        name: name.into(),
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

/// Bytes allocated per key with one million distinct keys in one limit.
fn bytes_per_key() {
    const N: usize = 1_000_000;
    let keys = keys(N);
    let before = ALLOC.allocated() as isize;
    let l = limit("mem", N);
    for k in &keys {
        memory::check(&[(&l, k)]);
    }
    let after = ALLOC.allocated() as isize;
    let m = l.memory.as_ref().map_or(0, MemLimit::len);
    assert_eq!(m, N, "every key is tracked");
    println!(
        "memory backend: {} keys, {} bytes allocated, {:.1} bytes per key",
        m,
        after - before,
        (after - before) as f64 / N as f64
    );
}

fn bench_memory(c: &mut Criterion) {
    bytes_per_key();
    let mut g = c.benchmark_group("ratelimit/memory");
    let one = limit("one", 10);
    g.bench_function("1 key", |b| {
        b.iter(|| memory::check(&[(&one, "ip:10.0.0.1")]))
    });

    let many = limit("many", 200_000);
    let ks = keys(100_000);
    for k in &ks {
        memory::check(&[(&many, k)]);
    }
    let mut i = 0;
    g.bench_function("100k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % ks.len();
            memory::check(&[(&many, &ks[i])])
        })
    });
    let other = limit("other", 200_000);
    g.bench_function("100k keys, two limits together", |b| {
        b.iter(|| {
            i = (i + 7919) % ks.len();
            memory::check(&[(&many, &ks[i]), (&other, "c:acme")])
        })
    });
    g.finish();
}

fn bench_redis(c: &mut Criterion) {
    let redis = Redis::start();
    let cfg = RedisStore {
        url: format!("redis://127.0.0.1:{}", redis.1),
        cluster: None,
        timeout: Dur(Duration::from_secs(1)),
        on_error: OnStoreError::Deny,
        pool: 1,
        prefix: "bench:".into(),
    };
    let pool = RedisPool::new(&cfg).expect("redis settings");
    let backend = RedisBackend::new(std::sync::Arc::new(pool), &cfg);
    let backend = Backend::Redis(Box::new(backend));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b2) = (limit("a", 1), limit("b", 1));
    let ks = keys(100_000);
    let mut i = 0;
    let mut g = c.benchmark_group("ratelimit/redis");
    g.bench_function("one limit, one round trip", |b| {
        b.iter(|| {
            i = (i + 7919) % ks.len();
            rt.block_on(backend.check(&[(&a, &ks[i])], &[]))
                .expect("redis answers")
        })
    });
    g.bench_function("two limits, one round trip", |b| {
        b.iter(|| {
            i = (i + 7919) % ks.len();
            rt.block_on(backend.check(&[(&a, &ks[i]), (&b2, "c:acme")], &[]))
                .expect("redis answers")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_memory, bench_redis);
criterion_main!(benches);
