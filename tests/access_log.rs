//! The JSON access log under load: one line per request, none lost (the writer's dropped
//! count stays 0), each with the documented keys, whatever a path contains.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, metric, Gateway, Upstream};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_line_and_none_is_lost() {
    let up = Upstream::start("up").await;
    let policy = format!(
        "upstreams:\n  up: {{ targets: [\"{}\"] }}\nroutes:\n  - {{ name: all, match: {{ path: /* }}, auth: none, upstream: up }}\n",
        up.target()
    );
    let gw = Gateway::start("", &[("p.yaml", &policy)]).await;
    let c = client();
    let total = 3000;
    let tasks: Vec<_> = (0..30)
        .map(|t| {
            let c = c.clone();
            let base = gw.url("/load/");
            tokio::spawn(async move {
                for i in 0..total / 30 {
                    let r = c.get(format!("{base}{t}-{i}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // A percent-encoded path is logged as sent (escaping is unit-tested in logging::access).
    let odd = c
        .get(gw.url("/load/%22quoted%22%5Cback"))
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = gw.access_log();
        if lines.len() > total {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} access lines for {} requests",
            lines.len(),
            total + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lines.len(), total + 1);
    let mut keys: Vec<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "bytes_received",
            "bytes_sent",
            "client_ip",
            "duration_ms",
            "level",
            "method",
            "path",
            "request_id",
            "route",
            "status",
            "target",
            "timestamp",
            "upstream",
            "upstream_target",
        ]
    );
    assert!(lines
        .iter()
        .any(|l| l["path"] == "/load/%22quoted%22%5Cback"));
    assert!(lines
        .iter()
        .all(|l| l["status"] == 200 && l["route"] == "all"));
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "gateway_log_lines_dropped_total", &[]),
        0.0,
        "{m}"
    );
}
