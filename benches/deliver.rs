//! Asynchronous delivery under load (issue 24), against the release binary and a real
//! redis-server: (1) what accepting a 1 KiB request into the Redis queue adds, p50/p99
//! over requests one after the other, beside the same body proxied to the same upstream;
//! (2) how fast one gateway's workers deliver a backlog to a fast upstream.
//!
//! `cargo build --release --bin gateway && cargo bench --bench deliver`. Environment:
//! `DELIVER_REQUESTS` (default 2,000 for the latency), `DELIVER_BACKLOG` (default 20,000),
//! `GATEWAY_BIN`. Needs `redis-server`. Under `cargo test` it runs small and checks that
//! every message is delivered.

// A bench program: a failed step is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{env, free_port, pct, Killed};

/// An upstream that answers 200 at once and counts what it received.
async fn upstream(hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn timed(c: &reqwest::Client, url: &str, body: &[u8], n: usize, want: u16) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = c.post(url).body(body.to_vec()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want);
        r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, backlog) = match bench {
        true => (
            env("DELIVER_REQUESTS", 2000),
            env("DELIVER_BACKLOG", 20_000),
        ),
        false => (50, 200),
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("GATEWAY_BIN").unwrap_or_else(|_| match bench {
        true => root.join("target/release/gateway").display().to_string(),
        false => env!("CARGO_BIN_EXE_gateway").to_string(),
    });
    let redis_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let redis = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let up = upstream(hits.clone()).await;
    let store = format!(
        "store:\n  backend: redis\n  redis: {{ url: \"redis://127.0.0.1:{redis_port}\", timeout: 1s }}\n"
    );
    let policy = format!(
        "upstreams:\n  up: {{ targets: [\"{up}\"] }}\nroutes:\n  - {{ name: queued, match: {{ path: /queued }}, auth: none, deliver: {{ upstream: up, max_queued: 1000000 }} }}\n  - {{ name: proxied, match: {{ path: /proxied }}, auth: none, upstream: up }}\n"
    );
    let gw = support::Gateway::start(&bin, &store, &policy, None).await;
    let port = gw.port;
    let c = reqwest::Client::new();

    // (1) Accepting: one request after another, 1 KiB each.
    let body = vec![b'x'; 1024];
    let queued_url = format!("http://127.0.0.1:{port}/queued");
    let proxied_url = format!("http://127.0.0.1:{port}/proxied");
    timed(&c, &proxied_url, &body, n / 10 + 1, 200).await;
    timed(&c, &queued_url, &body, n / 10 + 1, 202).await;
    let p = timed(&c, &proxied_url, &body, n, 200).await;
    let q = timed(&c, &queued_url, &body, n, 202).await;
    println!(
        "1 KiB POST, {n} one after another: proxied p50 {:?} p99 {:?}; accepted into Redis p50 {:?} p99 {:?}",
        pct(&p, 0.5),
        pct(&p, 0.99),
        pct(&q, 0.5),
        pct(&q, 0.99)
    );
    // Let the workers drain what (1) queued.
    // Both the proxied and the queued requests reach the upstream.
    let drained = 2 * (n + n / 10 + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while hits.load(Ordering::Relaxed) < drained {
        assert!(
            Instant::now() < deadline,
            "the latency part was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // (2) A backlog: accepted by 32 concurrent clients, then delivered by the workers.
    let before = hits.load(Ordering::Relaxed);
    let started = Instant::now();
    let per = backlog / 32;
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let c = c.clone();
            let url = queued_url.clone();
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    let r = c.post(&url).body(body.clone()).send().await.unwrap();
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    for t in clients {
        t.await.unwrap();
    }
    let accepted_in = started.elapsed();
    let total = per * 32;
    let deadline = Instant::now() + Duration::from_secs(600);
    while hits.load(Ordering::Relaxed) < before + total {
        assert!(Instant::now() < deadline, "the backlog was not delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_in = started.elapsed();
    println!(
        "backlog of {total}: accepted in {accepted_in:.2?} ({:.0}/s); all delivered after {all_in:.2?} ({:.0} deliveries/s by one gateway's workers)",
        total as f64 / accepted_in.as_secs_f64(),
        total as f64 / all_in.as_secs_f64()
    );
    drop(gw);
    drop(redis);
}
