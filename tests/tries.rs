//! The upstream try state machine end to end (issue 17): a dead target never surfaces to
//! clients when retries are configured, at any request rate; consecutive connect failures
//! take a target out passively without a `circuit_breaker` block; a half-open breaker's
//! probe is released when the client leaves during it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, metric, Gateway, Upstream};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A loopback port with a bound socket that never listens: connections are refused.
struct Refused(tokio::net::TcpSocket);

impl Refused {
    fn new() -> Refused {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        Refused(s)
    }

    fn target(&self) -> String {
        self.0.local_addr().expect("addr").to_string()
    }
}

fn policy(targets: &[String], extra: &str) -> String {
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "upstreams:\n  u:\n    targets: [{list}]\n{extra}routes:\n  - name: all\n    match: {{ path: /* }}\n    auth: none\n    upstream: u\n"
    )
}

const RETRIES: &str = "    retries: { attempts: 3, backoff: 1ms, max_backoff: 5ms }\n";

fn connect_errors(m: &str) -> f64 {
    metric(
        m,
        "gateway_upstream_errors_total",
        &[("upstream", "u"), ("kind", "connect")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_never_surfaces_with_retries() {
    let good = Upstream::start("good").await;
    let dead = Refused::new();
    let p = policy(&[dead.target(), good.target()], RETRIES);
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let c = client();
    // Sequential: every request answered by the good target.
    for i in 0..40 {
        let r = c.get(gw.url(&format!("/seq/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "sequential request {i}");
    }
    // Concurrent bursts, far beyond the retry budget's reserve.
    for round in 0..3 {
        let burst = (0..60).map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/burst/{round}/{i}"));
            async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
        });
        for (i, s) in futures::future::join_all(burst)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(s.unwrap(), 200, "round {round}, request {i}");
        }
    }
    assert_eq!(good.hits.load(Ordering::SeqCst), 40 + 180);
    // Taken out passively after a few refused connections (no circuit_breaker block):
    // 220 requests tried it only a handful of times.
    let m = gw.metrics().await;
    let refused = connect_errors(&m);
    assert!(
        (1.0..=12.0).contains(&refused),
        "the dead target was tried {refused} times: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_without_retries_limits_failures_and_ends() {
    let good = Upstream::start("good").await;
    let dead = Refused::new();
    // No retries and no breaker block: a request that goes to the dead target fails, but
    // after a few consecutive refusals it is skipped for a while.
    let p = policy(&[dead.target(), good.target()], "");
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let c = client();
    let mut failed = 0;
    for i in 0..60 {
        let r = c.get(gw.url(&format!("/p/{i}"))).send().await.unwrap();
        if r.status() != 200 {
            assert_eq!(r.status(), 502, "request {i}");
            failed += 1;
        }
    }
    assert!((1..=6).contains(&failed), "{failed} of 60 requests failed");
    let m = gw.metrics().await;
    let state = metric(
        &m,
        "gateway_circuit_state",
        &[("upstream", "u"), ("target", &dead.target())],
    );
    assert!(state >= 1.0, "the dead target is out (state {state}): {m}");
}

/// A half-open breaker lets one probe through; a client that leaves while the probe is out
/// must not leave the target half-open with no traffic for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_abandoned_by_its_client_is_released() {
    let up = Upstream::start("up").await;
    let p = policy(
        &[up.target()],
        "    circuit_breaker: { failures: 1, open_for: 300ms }\n",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let c = client();
    // One failure opens the breaker.
    let r = c.get(gw.url("/status/503")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 503, "open: refused by the gateway");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The probe: a slow request whose client gives up after 200 ms.
    let slow = c
        .get(gw.url("/slow?ms=2000"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(slow.is_err(), "the client gave up");
    // The next request gets to probe (and closes the breaker) instead of a 503.
    let mut status = 0;
    for _ in 0..20 {
        status = c
            .get(gw.url("/after"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the target stayed half-open after the abandoned probe"
    );
}
