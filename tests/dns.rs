//! Upstream targets given as host names, through the real `gateway` binary: a `localhost`
//! target becomes one target per address it resolves to; a name that does not resolve is a
//! warning for `gateway check` and a 503 `upstream_unavailable` at run time, not a reason to
//! refuse to start; a changed upstream keeps serving across a reload. How the target set
//! follows a name whose addresses change is tested with a scripted resolver in
//! src/upstream/dns_tests.rs (the system resolver cannot be steered from here).

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::reply::get;
use common::{client, metric, ConfigDir, Gateway};
use std::collections::BTreeSet;
use std::net::ToSocketAddrs;

/// A server answering 200 on `127.0.0.1:PORT` and, where the host has IPv6 loopback, on
/// `[::1]:PORT` too, so that a `localhost:PORT` target works whatever `localhost` resolves
/// to. Returns the port and the server tasks (aborted on drop).
async fn localhost_server() -> (u16, Vec<AbortOnDrop>) {
    let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let mut listeners = vec![(v4, "v4")];
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
        listeners.push((v6, "v6"));
    }
    let tasks = listeners
        .into_iter()
        .map(|(l, family)| {
            let app = axum::Router::new().fallback(move || async move {
                axum::Json(serde_json::json!({ "family": family }))
            });
            AbortOnDrop(tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            }))
        })
        .collect();
    (port, tasks)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `target` labels of the `gateway_circuit_state` series of `upstream`.
fn circuit_targets(metrics: &str, upstream: &str) -> BTreeSet<String> {
    let want = format!("upstream=\"{upstream}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("gateway_circuit_state{") && l.contains(&want))
        .filter_map(|l| {
            let rest = &l[l.find("target=\"")? + 8..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

fn local_policy(port: u16, connect: &str) -> String {
    format!(
        "upstreams:\n  local:\n    targets: [\"localhost:{port}\"]\n    dns_refresh: 1s\n    \
         timeouts: {{ connect: {connect} }}\n    retries: {{ attempts: 3 }}\n    \
         circuit_breaker: {{ failures: 5, open_for: 10s }}\nroutes:\n  - {{ name: local, match: \
         {{ path: /local }}, auth: none, upstream: local }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_localhost_target_is_one_target_per_address() {
    let (port, _servers) = localhost_server().await;
    let config = ConfigDir::new("", &[("p.yaml", &local_policy(port, "1s"))]);
    let (ok, out) = config.check();
    assert!(ok, "{out}");
    assert!(
        out.contains("warning") && out.contains(&format!("localhost:{port}")),
        "check names the host name it did not resolve:\n{out}"
    );

    let gw = Gateway::start_in(config, &[]).await;
    for i in 0..4 {
        let r = get(&gw, "/local", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.describe());
    }
    // One breaker, and one `target` label, per address `localhost` resolves to; the name
    // itself is never a target.
    let expected: BTreeSet<String> = ("localhost", port)
        .to_socket_addrs()
        .unwrap()
        .map(|a| a.to_string())
        .collect();
    let m = gw.metrics().await;
    assert_eq!(circuit_targets(&m, "local"), expected, "{m}");
    assert!(
        metric(
            &m,
            "gateway_dns_resolutions_total",
            &[("upstream", "local"), ("result", "success")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_a_warning_and_a_503() {
    let up = common::Upstream::start("fine").await;
    let policy = format!(
        "upstreams:\n  ghost:\n    targets: [\"nope.invalid:80\"]\n    dns_refresh: 1s\n  \
         fine:\n    targets: [\"{}\"]\nroutes:\n  - {{ name: ghost, match: {{ path: /ghost }}, \
         auth: none, upstream: ghost }}\n  - {{ name: fine, match: {{ path: /fine }}, auth: \
         none, upstream: fine }}\n",
        up.target()
    );
    let config = ConfigDir::new("", &[("p.yaml", &policy)]);
    let (ok, out) = config.check();
    assert!(
        ok,
        "a name that does not resolve is not a configuration error:\n{out}"
    );
    assert!(
        out.contains("warning") && out.contains("nope.invalid:80"),
        "{out}"
    );
    assert!(
        !out.contains(&up.target()),
        "an IP target needs no warning:\n{out}"
    );

    // The gateway starts and turns ready; the other upstream serves.
    let gw = Gateway::start_in(config, &[]).await;
    for _ in 0..3 {
        let r = get(&gw, "/ghost", &[]).await;
        assert_eq!(r.status, 503, "{}", r.describe());
        assert_eq!(r.code(), "upstream_unavailable", "{}", r.describe());
    }
    let r = get(&gw, "/fine", &[]).await;
    assert_eq!(r.status, 200, "{}", r.describe());

    // Looked up again every dns_refresh, each failure counted and logged.
    let failures = |m: &str| {
        metric(
            m,
            "gateway_dns_resolutions_total",
            &[("upstream", "ghost"), ("result", "failure")],
        )
    };
    let m = gw.metrics_when(|m| failures(m) >= 2.0).await;
    assert!(failures(&m) >= 2.0, "{m}");
    gw.wait_output("does not resolve").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_upstream_keeps_its_addresses_across_a_reload() {
    let (port, _servers) = localhost_server().await;
    let gw = Gateway::start("", &[("p.yaml", &local_policy(port, "1s"))]).await;
    assert_eq!(get(&gw, "/local", &[]).await.status, 200);

    // A changed definition is a new pool; it starts from the addresses the old one resolved,
    // so the first request after the reload is served (not 503 until the next lookup).
    gw.config.write_policy("p.yaml", &local_policy(port, "2s"));
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get(&gw, "/local", &[]).await;
    assert_eq!(r.status, 200, "right after the reload: {}", r.describe());
}

#[test]
fn dns_refresh_is_a_duration() {
    let policy = |v: &str| {
        format!("upstreams:\n  u:\n    targets: [\"127.0.0.1:1\"]\n    dns_refresh: {v}\n")
    };
    let config = ConfigDir::new("", &[("p.yaml", &policy("1s"))]);
    let (ok, out) = config.check();
    assert!(ok, "{out}");
    config.write_policy("p.yaml", &policy("soon"));
    let (ok, out) = config.check();
    assert!(!ok && out.contains("dns_refresh"), "{out}");
}

#[test]
fn check_refuses_a_target_that_is_not_host_and_port() {
    for bad in ["http://users:80", "users", "users:0", "::1:80"] {
        let policy = format!("upstreams:\n  u:\n    targets: [\"{bad}\"]\n");
        let config = ConfigDir::new("", &[("p.yaml", &policy)]);
        let (ok, out) = config.check();
        assert!(!ok && out.contains("invalid target"), "{bad}: {out}");
    }
}
