//! The admin endpoints, metrics, access log, and malformed requests.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, raw, raw_status, ConfigDir, Gateway, Upstream};
use serde_json::Value;
use std::time::Duration;

fn routes(target: &str, names: &[&str]) -> String {
    let mut s = format!("upstreams:\n  up:\n    targets: [\"{target}\"]\nroutes:\n");
    for n in names {
        s.push_str(&format!(
            "  - name: {n}\n    match: {{ path: /{n}/*, methods: [GET, POST] }}\n    auth: none\n    upstream: up\n"
        ));
    }
    s
}

#[tokio::test]
async fn health_ready_config_and_metrics() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start("", &[("p.yaml", &routes(&up.target(), &["a", "b"]))]).await;
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let cfg: Value = gw.config().await;
    assert_eq!(cfg["generation"], 1);
    assert!(cfg["hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(cfg["hash"].as_str().unwrap().len(), 7 + 64);
    assert!(cfg["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(cfg["routes"], serde_json::json!(["a", "b"]));
    assert_eq!(cfg["last_error"], Value::Null);

    assert_eq!(c.get(gw.url("/a/x")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(gw.url("/nowhere")).send().await.unwrap().status(),
        404
    );
    let r = c.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let needles = [
        "gateway_requests_total{method=\"GET\",route=\"a\",status=\"200\"} 1",
        "gateway_requests_total{method=\"GET\",route=\"_unmatched\",status=\"404\"} 1",
        "gateway_request_duration_seconds_bucket{route=\"a\"",
        "gateway_upstream_duration_seconds_count{upstream=\"up\"} 1",
        "gateway_config_generation 1",
        "gateway_config_reloads_total{result=\"failure\"} 0",
    ];
    // The last request is counted when it is logged, just after its answer was sent.
    let m = gw
        .metrics_when(|m| needles.iter().all(|n| m.contains(n)))
        .await;
    for needle in needles {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    assert_eq!(
        c.get(gw.admin_url("/nope")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.post(gw.admin_url("/config"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn reload_endpoint_swaps_or_keeps_the_set() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start("", &[("p.yaml", &routes(&up.target(), &["a"]))]).await;
    let c = client();
    assert_eq!(c.get(gw.url("/b/x")).send().await.unwrap().status(), 404);

    gw.config
        .write_policy("p.yaml", &routes(&up.target(), &["a", "b"]));
    let r = c.post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["generation"], 2);
    assert_eq!(c.get(gw.url("/b/x")).send().await.unwrap().status(), 200);

    gw.config.write_policy("p.yaml", "routes:\n  - name: broken\n    match: { path: /z }\n    auth: none\n    upstream: missing\n");
    let r = c.post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    let err = v["errors"][0].as_str().unwrap();
    assert!(
        err.contains("p.yaml:5:") && err.contains("unknown upstream"),
        "{err}"
    );
    // The old set keeps serving.
    assert_eq!(c.get(gw.url("/b/x")).send().await.unwrap().status(), 200);
    let cfg: Value = gw.config().await;
    assert_eq!(cfg["generation"], 2);
    assert!(cfg["last_error"]
        .as_str()
        .unwrap()
        .contains("unknown upstream"));
    let m = gw.metrics().await;
    assert!(
        m.contains("gateway_config_reloads_total{result=\"failure\"} 1"),
        "{m}"
    );
    assert!(m.contains("gateway_config_generation 2"), "{m}");
}

#[tokio::test]
async fn admin_token_guards_everything_but_probes() {
    let up = Upstream::start("u").await;
    let config = ConfigDir::new("", &[("p.yaml", &routes(&up.target(), &["a"]))]);
    // token_env lives in the admin section: rewrite gateway.yaml with it.
    let gw_yaml = std::fs::read_to_string(config.gateway_yaml())
        .unwrap()
        .replace("admin:\n", "admin:\n  token_env: TEST_ADMIN_TOKEN\n");
    std::fs::write(config.gateway_yaml(), gw_yaml).unwrap();
    let gw = Gateway::start_in(config, &[("TEST_ADMIN_TOKEN", "s3cret")]).await;
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in ["/config", "/metrics"] {
        let r = c.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(gw.admin_url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(gw.admin_url(path))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert_eq!(
        c.post(gw.admin_url("/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn access_log_line_per_request() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start("", &[("p.yaml", &routes(&up.target(), &["a"]))]).await;
    let r = client()
        .get(gw.url("/a/hello?api_key=supersecret"))
        .header("x-request-id", "log-test-1")
        .send()
        .await
        .unwrap();
    let sent = r.bytes().await.unwrap().len() as u64;
    let line = gw.wait_log(|v| v["request_id"] == "log-test-1").await;
    assert_eq!(line["route"], "a");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/a/hello");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], "up");
    assert_eq!(line["upstream_target"], up.target());
    assert_eq!(line["bytes_sent"], sent);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(line["timestamp"].as_str().is_some());
    assert!(
        !gw.output().contains("supersecret"),
        "the query string must not be logged"
    );

    let _ = client()
        .get(gw.url("/zzz"))
        .header("x-request-id", "log-test-2")
        .send()
        .await
        .unwrap();
    let line = gw.wait_log(|v| v["request_id"] == "log-test-2").await;
    assert_eq!(line["route"], "_unmatched");
    assert_eq!(line["status"], 404);
}

#[tokio::test]
async fn malformed_requests_get_clear_errors() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start("", &[("p.yaml", &routes(&up.target(), &["a"]))]).await;
    let q = Duration::from_millis(500);

    let r = raw(
        gw.addr(),
        b"GET /a/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        q,
    )
    .await;
    assert_eq!(raw_status(&r), 400, "{r}");
    assert!(
        r.contains("\"code\":\"invalid_request\"") && r.contains("percent-encoding"),
        "{r}"
    );

    let r = raw(
        gw.addr(),
        b"GET /a/../admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        q,
    )
    .await;
    assert_eq!(raw_status(&r), 400, "{r}");

    let r = raw(
        gw.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        q,
    )
    .await;
    assert_eq!(raw_status(&r), 400, "{r}");
    assert!(r.contains("invalid_request"), "{r}");

    // Absolute-form is routed on its path, with the host from the URI.
    let r = raw(
        gw.addr(),
        b"GET http://api.example.com/a/abs HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(raw_status(&r), 200, "{r}");
    assert!(r.contains("\"path\":\"/a/abs\""), "{r}");
    assert!(
        r.contains("\"x-forwarded-host\":\"api.example.com\""),
        "{r}"
    );

    // Oversized headers are refused, and the gateway keeps serving.
    let mut big = b"GET /a/x HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    big.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let r = raw(gw.addr(), &big, q).await;
    let status = raw_status(&r);
    assert!(
        status == 0 || (400..500).contains(&status),
        "oversized headers answered {status}"
    );

    let r = raw(
        gw.addr(),
        b"GET /a/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        q,
    )
    .await;
    assert_eq!(raw_status(&r), 400, "{r}");

    let r = raw(gw.addr(), b"NOT-HTTP\r\n\r\n", q).await;
    assert!(r.is_empty() || raw_status(&r) == 400, "{r}");

    assert_eq!(
        client().get(gw.url("/a/ok")).send().await.unwrap().status(),
        200
    );
}
