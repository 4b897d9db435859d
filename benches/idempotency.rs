//! The gateway's own cost of an idempotency key, besides hashing the body: the store id
//! and fingerprint (of an empty body), the lock taken in the memory store, and the answer
//! encoded and stored in place of the lock (what `stage::idempotency` and `proxy::after`
//! do for a first request; the bench then removes the key, so the table keeps its size and
//! the figure is an upper bound), and a replay (claim finds the answer, which is decoded). With
//! 100,000 keys live. The body's SHA-256 is measured apart, for a 1 KiB body.

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::idempotency::{fingerprint, store_id, Answer, Entry};
use gateway::state::memory::MemoryKv;
use sha2::Digest;
use std::time::Duration;

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

fn answer() -> Answer {
    Answer {
        status: 201,
        headers: vec![
            (
                "content-type".into(),
                Bytes::from_static(b"application/json"),
            ),
            (
                "date".into(),
                Bytes::from_static(b"Sun, 06 Dec 2026 03:33:37 GMT"),
            ),
            ("location".into(), Bytes::from_static(b"/v1/orders/7")),
        ],
        body: Bytes::from(vec![b'x'; 512]),
    }
}

fn bench(c: &mut Criterion) {
    let kv = MemoryKv::new(1_000_000);
    let ttl = Duration::from_secs(3600);
    for i in 0..100_000 {
        kv.put(&format!("idem:{i}"), b"x", ttl).unwrap();
    }
    let method = http::Method::POST;
    let stored = Entry::Answer {
        fingerprint: fingerprint(&method, "/v1/orders", None, b""),
        answer: answer(),
    }
    .encode();
    kv.put("idem:replay", &stored, ttl).unwrap();
    let mut n = 0u64;
    let mut g = c.benchmark_group("idempotency/memory");
    g.bench_function(
        "first request: id, fingerprint, lock, store the answer",
        |b| {
            b.iter(|| {
                n += 1;
                let key = format!(
                    "idem:{}",
                    store_id("create-order", "consumer:acme", &n.to_be_bytes())
                );
                let fp = fingerprint(&method, "/v1/orders", None, b"");
                let lock = Entry::Lock {
                    fingerprint: fp,
                    token: rand::random(),
                }
                .encode();
                assert!(kv.claim(&key, &lock, ttl).unwrap().is_none());
                let entry = Entry::Answer {
                    fingerprint: fp,
                    answer: answer(),
                };
                let stored = entry.encode();
                assert!(kv.replace(&key, &lock, &stored, ttl));
                // Keeps the table at its size (the figure includes this removal).
                assert!(kv.release(&key, &stored));
            })
        },
    );
    g.bench_function(
        "replay: id, fingerprint, claim finds and decodes the answer",
        |b| {
            b.iter(|| {
                let _ = store_id("create-order", "consumer:acme", b"k");
                let fp = fingerprint(&method, "/v1/orders", None, b"");
                let lock = Entry::Lock {
                    fingerprint: fp,
                    token: rand::random(),
                }
                .encode();
                let raw = kv.claim("idem:replay", &lock, ttl).unwrap().unwrap();
                let e = Entry::decode(&raw).unwrap();
                assert_eq!(e.fingerprint(), &fp);
            })
        },
    );
    g.finish();
    let body = vec![b'{'; 1024];
    c.bench_function("idempotency/sha256 of a 1 KiB body", |b| {
        b.iter(|| sha2::Sha256::digest(&body))
    });
}

/// The Redis path: the lock (one script call) and the stored answer (one more), as a
/// first request makes them; a replay is the first call alone.
fn bench_redis(c: &mut Criterion) {
    use gateway::config::gateway::{OnStoreError, RedisStore};
    let redis = Redis::start();
    let cfg = RedisStore {
        url: format!("redis://127.0.0.1:{}", redis.1),
        cluster: None,
        timeout: gateway::config::values::Dur(Duration::from_secs(1)),
        on_error: OnStoreError::Deny,
        pool: 1,
        prefix: "bench:".into(),
    };
    let pool = gateway::state::redis::RedisPool::new(&cfg).expect("redis settings");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ttl = Duration::from_secs(60);
    let method = http::Method::POST;
    let fp = fingerprint(&method, "/v1/orders", None, b"");
    let stored = Entry::Answer {
        fingerprint: fp,
        answer: answer(),
    }
    .encode();
    rt.block_on(pool.put("bench:replay", &stored, ttl)).unwrap();
    let mut n = 0u64;
    let mut g = c.benchmark_group("idempotency/redis");
    g.bench_function(
        "first request: lock, then store the answer (2 round trips)",
        |b| {
            b.iter(|| {
                n += 1;
                let key = format!("bench:{n}");
                let lock = Entry::Lock {
                    fingerprint: fp,
                    token: rand::random(),
                }
                .encode();
                rt.block_on(async {
                    assert!(pool.claim(&key, &lock, ttl).await.unwrap().is_none());
                    assert!(pool.replace(&key, &lock, &stored, ttl).await.unwrap());
                })
            })
        },
    );
    g.bench_function("replay: claim finds the answer (1 round trip)", |b| {
        b.iter(|| {
            let raw = rt
                .block_on(pool.claim("bench:replay", b"lock", ttl))
                .unwrap()
                .unwrap();
            assert!(Entry::decode(&raw).is_some());
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_redis);
criterion_main!(benches);
