//! OpenTelemetry trace export: with a `tracing` section, spans for the request, each
//! upstream try and each aggregate call reach an OTLP/HTTP collector (a fake one started
//! by the test), continuing the client's trace; the upstream gets the gateway's span as
//! parent. Without the section, `traceparent` passes through unchanged.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::collector::{self, contains};
use common::{client, ConfigDir, Gateway, Upstream};
use std::time::{Duration, Instant};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn policy(up: &Upstream) -> String {
    format!(
        "upstreams:\n  up: {{ targets: [\"{}\"] }}\nroutes:\n  - {{ name: proxied, match: {{ path: /p }}, auth: none, upstream: up }}\n  - name: bff\n    match: {{ path: /bff }}\n    auth: none\n    aggregate:\n      timeout: 2s\n      calls:\n        - {{ name: one, upstream: up, path: /one }}\n        - {{ name: two, upstream: up, path: /two }}\n",
        up.target()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_continue_the_clients_trace() {
    let (endpoint, bodies) = collector::start().await;
    let up = Upstream::start("up").await;
    let extra = format!("tracing: {{ otlp_endpoint: \"{endpoint}\", export_interval: 200ms }}\n");
    let gw = Gateway::start(&extra, &[("p.yaml", &policy(&up))]).await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");

    let r = client()
        .get(gw.url("/p"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    let sent = echo["headers"]["traceparent"].as_str().unwrap().to_string();
    assert!(
        sent.starts_with(&format!("00-{TRACE}-")),
        "same trace upstream: {sent}"
    );
    assert!(
        !sent.contains(PARENT),
        "the gateway's span is the upstream's parent: {sent}"
    );

    let r = client()
        .get(gw.url("/bff"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Spans arrive in batches: wait for all the names and the trace id.
    let trace_id = hex_bytes(TRACE);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all: Vec<u8> = bodies.lock().unwrap().concat();
        let names = [
            "gateway.request",
            "gateway.upstream",
            "gateway.aggregate_call",
        ];
        let seen: Vec<bool> = names.iter().map(|n| contains(&all, n.as_bytes())).collect();
        if seen.iter().all(|s| *s) && contains(&all, &trace_id) {
            assert!(
                contains(&all, b"service.name"),
                "resource attributes exported"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans {names:?} seen {seen:?}, trace id seen {}; {} export(s)",
            contains(&all, &trace_id),
            bodies.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_the_traceparent_passes_unchanged() {
    let up = Upstream::start("up").await;
    let gw = Gateway::start_in(ConfigDir::new("", &[("p.yaml", &policy(&up))]), &[]).await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let r = client()
        .get(gw.url("/p"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["traceparent"], traceparent.as_str());
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
