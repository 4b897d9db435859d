//! Proxying through the real gateway to real upstreams: balancing, headers, rewrites,
//! streaming, limits and upstream failures.

mod common;

use common::{client, Gateway, Upstream};
use serde_json::Value;
use std::collections::HashSet;

fn policy(upstreams: &str, routes: &str) -> String {
    format!("upstreams:\n{upstreams}\nroutes:\n{routes}")
}

async fn get_json(url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn round_robin_spreads_over_targets_and_pools_connections() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = policy(
        &format!("  pool:\n    targets: [\"{}\", \"{}\"]\n", a.target(), b.target()),
        "  - name: all\n    match: { path: /* }\n    auth: none\n    upstream: pool\n",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let mut names = Vec::new();
    let mut peers = HashSet::new();
    for _ in 0..20 {
        let (status, _, body) = get_json(&gw.url("/x")).await;
        assert_eq!(status, 200);
        names.push(body["name"].as_str().unwrap().to_string());
        peers.insert(body["peer"].as_str().unwrap().to_string());
    }
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 10, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "b").count(), 10, "{names:?}");
    // Sequential requests reuse pooled upstream connections: far fewer peers than requests.
    assert!(peers.len() <= 4, "expected pooled connections, saw {} peers", peers.len());
}
