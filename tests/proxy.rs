//! Proxying through the real gateway to real upstreams: balancing, headers, rewrites,
//! streaming, limits and upstream failures.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
        &format!(
            "  pool:\n    targets: [\"{}\", \"{}\"]\n",
            a.target(),
            b.target()
        ),
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
    assert!(
        peers.len() <= 4,
        "expected pooled connections, saw {} peers",
        peers.len()
    );
}

fn one_route(target: &str, route_extra: &str, upstream_extra: &str) -> String {
    policy(
        &format!("  up:\n    targets: [\"{target}\"]\n{upstream_extra}"),
        &format!("  - name: r\n    match: {{ path: /* }}\n    auth: none\n    upstream: up\n{route_extra}"),
    )
}

#[tokio::test]
async fn random_and_consistent_hash_balancing() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = policy(
        &format!(
            "  rnd:\n    targets: [\"{a}\", \"{b}\"]\n    balance: random\n  hash:\n    targets: [\"{a}\", \"{b}\"]\n    balance: consistent_hash\n    hash_key: header:X-User\n",
            a = a.target(),
            b = b.target()
        ),
        "  - name: rnd\n    match: { path: /rnd }\n    auth: none\n    upstream: rnd\n  - name: hash\n    match: { path: /hash }\n    auth: none\n    upstream: hash\n",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let (_, _, body) = get_json(&gw.url("/rnd")).await;
        seen.insert(body["name"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "random balancing should reach both targets");

    let c = client();
    let mut per_user = Vec::new();
    for user in 0..16 {
        let mut targets = HashSet::new();
        for _ in 0..5 {
            let r = c
                .get(gw.url("/hash"))
                .header("x-user", format!("u{user}"))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            targets.insert(v["name"].as_str().unwrap().to_string());
        }
        assert_eq!(targets.len(), 1, "user u{user} must stick to one target");
        per_user.push(targets.into_iter().next().unwrap());
    }
    let distinct: HashSet<_> = per_user.iter().collect();
    assert_eq!(
        distinct.len(),
        2,
        "16 users should spread over both targets"
    );
}

#[tokio::test]
async fn forwarding_and_identity_headers() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start("", &[("p.yaml", &one_route(&up.target(), "", ""))]).await;
    let c = client();

    // An untrusted peer's X-Forwarded-* are replaced; identity headers are kept when valid.
    let r = c
        .get(gw.url("/a?b=c"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "client-id-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-id-1");
    let v: Value = r.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["x-forwarded-host"],
        format!("127.0.0.1:{}", gw.config.port)
    );
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(
        h.get("x-hop").is_none(),
        "Connection-nominated header forwarded: {h}"
    );
    assert!(h.get("keep-alive").is_none(), "keep-alive forwarded: {h}");
    assert_eq!(v["path"], "/a");
    assert_eq!(v["query"], "b=c");

    // Invalid request id and traceparent are replaced by generated ones.
    let r = c
        .get(gw.url("/a"))
        .header("x-request-id", "x".repeat(129))
        .header("traceparent", "garbage")
        .send()
        .await
        .unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 32);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-request-id"], rid.as_str());
    let tp = v["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-") && tp.len() == 55,
        "generated traceparent {tp}"
    );

    // Hop-by-hop headers of the upstream's response do not reach the client.
    let r = c.get(gw.url("/status/201")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("x-secret-hop").is_none());
    assert!(r.headers().get("keep-alive").is_none());
    assert!(r.headers().get("x-request-id").is_some());
}

#[tokio::test]
async fn trusted_proxy_chain_is_appended() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(
        "trusted_proxies: [127.0.0.0/8]\n",
        &[("p.yaml", &one_route(&up.target(), "", ""))],
    )
    .await;
    let r = client()
        .get(gw.url("/a"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(v["headers"]["x-forwarded-host"], "api.example.com");
}

#[tokio::test]
async fn rewrites_and_header_edits() {
    let up = Upstream::start("u").await;
    let p = policy(
        &format!("  up:\n    targets: [\"{}\"]\n", up.target()),
        r#"  - name: strip
    match: { path: /v1/* }
    auth: none
    upstream: up
    rewrite: { strip_prefix: /v1 }
    request:
      headers: { set: { X-Gateway: "1" }, remove: [Cookie] }
  - name: tmpl
    match: { path: "/u/{id}/files/{name}" }
    auth: none
    upstream: up
    rewrite: { path: "/files/{path.name}?owner={path.id}&q={query.q}&h={header.x-tenant}" }
  - name: tmpl-keep-query
    match: { path: "/k/{id}" }
    auth: none
    upstream: up
    rewrite: { path: "/keep/{path.id}" }
"#,
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let c = client();
    let v: Value = c
        .get(gw.url("/v1/users/7?x=1"))
        .header("cookie", "session=secret")
        .header("x-gateway", "client-value")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/users/7");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["headers"]["x-gateway"], "1");
    assert!(v["headers"].get("cookie").is_none());
    let v: Value = c
        .get(gw.url("/v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/");

    let v: Value = c
        .get(gw.url("/u/a%20b/files/r%C3%A9sum%C3%A9.pdf?q=x%26y"))
        .header("x-tenant", "t/1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/files/r%C3%A9sum%C3%A9.pdf");
    assert_eq!(v["query"], "owner=a%20b&q=x%26y&h=t%2F1");

    let v: Value = c
        .get(gw.url("/k/9?z=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/keep/9");
    assert_eq!(v["query"], "z=2");
}

#[tokio::test]
async fn response_body_is_streamed_not_buffered() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start("", &[("p.yaml", &one_route(&up.target(), "", ""))]).await;
    let mut r = client().get(gw.url("/stream")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The upstream holds its second chunk until we have seen the first: a buffering proxy
    // would never deliver the first chunk and this test would time out.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), r.chunk())
        .await
        .expect("first chunk must arrive before the upstream finishes")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first\n");
    up.release.notify_one();
    let rest = r.chunk().await.unwrap().unwrap();
    assert_eq!(&rest[..], b"second\n");

    let big = client()
        .get(gw.url("/big?bytes=8388608"))
        .send()
        .await
        .unwrap();
    assert_eq!(big.bytes().await.unwrap().len(), 8 << 20);
}

#[tokio::test]
async fn body_limits_with_and_without_content_length() {
    let up = Upstream::start("u").await;
    let p = policy(
        &format!("  up:\n    targets: [\"{}\"]\n", up.target()),
        "  - name: small\n    match: { path: /small }\n    auth: none\n    upstream: up\n    request: { max_body: 1KiB }\n  - name: big\n    match: { path: /big-upload }\n    auth: none\n    upstream: up\n    request: { max_body: 4MiB }\n  - name: default\n    match: { path: /default }\n    auth: none\n    upstream: up\n",
    );
    let gw = Gateway::start("limits: { max_body: 2KiB }\n", &[("p.yaml", &p)]).await;
    let c = client();
    let ok = c
        .post(gw.url("/small"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["body_len"], 1024);

    let r = c
        .post(gw.url("/small"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");

    let r = c
        .post(gw.url("/default"))
        .body(vec![b'a'; 3000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "the gateway-wide default applies");
    let r = c
        .post(gw.url("/big-upload"))
        .body(vec![b'a'; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a route may raise the limit");

    // Chunked, without Content-Length: counted as it streams.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'z'; 512])).collect();
    let r = c
        .post(gw.url("/small"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..2).map(|_| Ok(vec![b'z'; 300])).collect();
    let r = c
        .post(gw.url("/small"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body_len"], 600);
}

#[tokio::test]
async fn upstream_failures_are_json_errors() {
    let up = Upstream::start("u").await;
    let dead = common::free_port();
    let p = policy(
        &format!(
            "  up:\n    targets: [\"{}\"]\n    timeouts: {{ connect: 1s, read: 300ms }}\n  dead:\n    targets: [\"127.0.0.1:{dead}\"]\n",
            up.target()
        ),
        "  - name: slow\n    match: { path: /slow }\n    auth: none\n    upstream: up\n  - name: dead\n    match: { path: /dead }\n    auth: none\n    upstream: dead\n",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let (status, headers, body) = get_json(&gw.url("/dead")).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error"]["code"], "bad_gateway");
    assert_eq!(
        body["error"]["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );

    let (status, _, body) = get_json(&gw.url("/slow?ms=2000")).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "upstream_timeout");

    let (status, _, _) = get_json(&gw.url("/slow?ms=10")).await;
    assert_eq!(status, 200, "a fast answer on the same route still works");

    // One keep-alive client alternating failures and successes: an error response must not
    // leave the client a connection that is about to be closed.
    let c = client();
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/dead")).send().await.unwrap().status(), 502);
        assert_eq!(
            c.get(gw.url("/slow?ms=1")).send().await.unwrap().status(),
            200
        );
        let big = c
            .post(gw.url("/slow?ms=1"))
            .body(vec![0u8; 2 << 20])
            .send()
            .await
            .unwrap();
        assert_eq!(big.status(), 413);
    }

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gateway_upstream_errors_total{kind=\"connect\",upstream=\"dead\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_upstream_errors_total{kind=\"timeout\",upstream=\"up\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn host_routing_and_head() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c_up = Upstream::start("c").await;
    let p = policy(
        &format!(
            "  a:\n    targets: [\"{}\"]\n  b:\n    targets: [\"{}\"]\n  c:\n    targets: [\"{}\"]\n",
            a.target(),
            b.target(),
            c_up.target()
        ),
        "  - name: exact\n    match: { host: api.example.com, path: /x }\n    auth: none\n    upstream: a\n  - name: wild\n    match: { host: \"*.example.com\", path: /x }\n    auth: none\n    upstream: b\n  - name: any\n    match: { path: /x, methods: [GET] }\n    auth: none\n    upstream: c\n",
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let c = client();
    for (host, want) in [
        ("api.example.com", "a"),
        ("API.Example.com:8080", "a"),
        ("web.example.com", "b"),
        ("example.com", "c"),
        ("other.org", "c"),
    ] {
        let v: Value = c
            .get(gw.url("/x"))
            .header("host", host)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["name"], want, "host {host}");
    }
    let r = c
        .head(gw.url("/x"))
        .header("host", "other.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD is allowed where GET is");
    let r = c
        .delete(gw.url("/x"))
        .header("host", "other.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}
