//! Deliveries seen from outside the queue: what `sign` produces is accepted by the
//! gateway's own Standard Webhooks verifier (a deliver route whose upstream is a verified
//! webhook route of the same gateway), every attempt is a trace span in the accepting
//! request's trace, and an idle replica on Redis polls the queue with one worker at a time.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use common::collector::{self, contains};
use common::{client, ConfigDir, Gateway, Upstream};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_dGVzdC1vbmx5LWRlbGl2ZXJ5LXNpZ25pbmcta2V5";

async fn delivered(gw: &Gateway, id: &str) -> Value {
    common::delivery_outcome(&gw.admin_url(&format!("/deliveries/{id}"))).await
}

async fn submit(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let mut req = client().post(gw.url("/submit")).body(r#"{"order":7}"#);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_verifier_accepts_what_deliver_signs() {
    let up = Upstream::start("up").await;
    let config = ConfigDir::new("", &[]);
    // The deliver route's upstream is this gateway's own listener, on a verified route.
    let policy = format!(
        r#"upstreams:
  up: {{ targets: ["{up}"] }}
  myself: {{ targets: ["127.0.0.1:{port}"] }}
webhook_verifiers:
  partner: {{ scheme: standard, secrets_env: [WH_SECRET], tolerance: 5m }}
routes:
  - name: submit
    match: {{ path: /submit, methods: [POST] }}
    auth: none
    rewrite: {{ path: /hook }}
    deliver:
      upstream: myself
      retries: {{ attempts: 2, backoff: 100ms, max_backoff: 200ms }}
      timeout: 2s
      sign: {{ scheme: standard, secret_env: WH_SECRET }}
  - name: hook
    match: {{ path: /hook, methods: [POST] }}
    auth: [webhook:partner]
    upstream: up
"#,
        up = up.target(),
        port = config.port,
    );
    config.write_policy("p.yaml", &policy);
    let gw = Gateway::start_in(config, &[("WH_SECRET", SECRET)]).await;
    let id = submit(&gw, &[]).await;
    let v = delivered(&gw, &id).await;
    // A signature the verifier refused would be a 401: a permanent failure, dead.
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_a_span_in_the_accepting_requests_trace() {
    let (endpoint, spans) = collector::start().await;
    let up = Upstream::start("up").await;
    let policy = format!(
        "upstreams:\n  up: {{ targets: [\"{}\"] }}\nroutes:\n  - {{ name: submit, match: {{ path: /submit }}, auth: none, deliver: {{ upstream: up }} }}\n",
        up.target()
    );
    let extra = format!("tracing: {{ otlp_endpoint: \"{endpoint}\", export_interval: 200ms }}\n");
    let gw = Gateway::start(&extra, &[("p.yaml", &policy)]).await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let id = submit(
        &gw,
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;
    assert_eq!(delivered(&gw, &id).await["status"], "delivered");
    let trace_bytes = hex::decode(trace).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = spans.lock().unwrap().concat();
        // The attempt's span, with the delivery id, in the client's trace.
        if contains(&all, b"gateway.delivery")
            && contains(&all, id.as_bytes())
            && contains(&all, &trace_bytes)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery span exported");
        drop(all);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// EVALSHA calls Redis has answered so far (`INFO commandstats`).
async fn script_calls(redis: &redis_server::Redis) -> u64 {
    let info = redis.inline("INFO commandstats").await;
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_replica_polls_redis_with_one_worker_at_a_time() {
    let redis = redis_server::Redis::start().await;
    let up = Upstream::start("up").await;
    let store = format!(
        "store:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 500ms }}\n",
        redis.url()
    );
    let policy = format!(
        "upstreams:\n  up: {{ targets: [\"{}\"] }}\nroutes:\n  - {{ name: submit, match: {{ path: /submit }}, auth: none, deliver: {{ upstream: up }} }}\n",
        up.target()
    );
    let gw = Gateway::start(&store, &[("p.yaml", &policy)]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let before = script_calls(&redis).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = t.elapsed().as_secs_f64();
    let rate = (script_calls(&redis).await - before) as f64 / window;
    // One poller asks every 100 ms, and the gauges read the route's depth every 2 s: about
    // 10.5 a second. Four workers polling each would make about 40.
    assert!(
        (5.0..=20.0).contains(&rate),
        "{rate:.1} script calls a second while idle"
    );
    // A message is still taken within a poll or so.
    let sent = Instant::now();
    let id = submit(&gw, &[]).await;
    assert_eq!(delivered(&gw, &id).await["status"], "delivered");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}
