//! `gateway demo` with the repository's own gateway.yaml and policies/: the README
//! walkthrough, request by request. Uses the demo's fixed ports (8080, 9901, 9001, 9002, 9003).

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const GW: &str = "http://127.0.0.1:8080";
const ADMIN: &str = "http://127.0.0.1:9901";

/// The JSON answer to a request (any status).
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn readme_walkthrough() {
    let child = Command::new(common::bin())
        .arg("demo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .env_remove("DEMO_WEBHOOK_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gateway demo");
    let _demo = Demo(child);
    let c = common::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.get(format!("{ADMIN}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gateway demo did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let get = |path: &str| c.get(format!("{GW}{path}")).send();

    let v: Value = get("/v1/users/42").await.unwrap().json().await.unwrap();
    assert_eq!(v["id"], "42");
    assert_eq!(v["name"], "User 42");

    let v: Value = get("/v1/users/42/orders")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["user"], "42");
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);

    let v = json_of(
        c.get(format!("{GW}/v1/echo/hello?x=1"))
            .header("cookie", "a=b"),
    )
    .await;
    assert_eq!(v["path"], "/echo/hello");
    assert_eq!(v["headers"]["x-gateway"], "1");
    assert!(v["headers"].get("cookie").is_none());
    assert!(v["headers"]["x-request-id"].as_str().is_some());

    let mut services = Vec::new();
    for _ in 0..4 {
        let v: Value = get("/v1/echo/rr").await.unwrap().json().await.unwrap();
        services.push(v["service"].as_str().unwrap().to_string());
    }
    assert!(services.contains(&"users".to_string()) && services.contains(&"orders".to_string()));

    let r = get("/v1/nope").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.delete(format!("{GW}/v1/users/42")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    let r = get("/v1/slow?ms=3000").await.unwrap();
    assert_eq!(r.status(), 504);
    let r = get("/v1/dead").await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "bad_gateway"
    );
    let r = get("/v1/fail").await.unwrap();
    assert_eq!(r.status(), 500, "an upstream's own error passes through");

    let r = c
        .post(format!("{GW}/v1/echo/upload"))
        .body(vec![0u8; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Hardening: an oversized head is 431, ambiguous framing 400, an encoded path goes up
    // as the router matched it.
    let r = c
        .get(format!("{GW}/v1/users/42"))
        .header("X-Big", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "request_header_too_large"
    );
    let smuggle = b"POST /v1/echo/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = common::raw(
        "127.0.0.1:8080".parse().unwrap(),
        smuggle,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(common::raw_status(&answer), 400, "{answer}");
    assert!(answer.contains("bad_request"), "{answer}");
    let v: Value = get("/v1/%65cho/encoded")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/echo/encoded", "{v}");

    // The rate-limited demo route: 3 per 10 s per client, then 429 with Retry-After.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get("/v1/limited").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        remaining.push(
            r.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = get("/v1/limited").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let r = c
        .get(format!("{GW}/v1/partner/orders"))
        .header("x-api-key", "demo-acme-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["ratelimit-limit"],
        "20",
        "acme's plan: bursts of 20"
    );
    // Its calendar quotas: the day's (10,000) is the closest to running out.
    assert_eq!(r.headers()["x-quota-limit"], "10000");
    let usage = json_of(c.get(format!("{ADMIN}/consumers/acme/usage"))).await;
    assert_eq!(usage["quotas"][0]["per"], "day");
    assert!(usage["quotas"][0]["used"].as_u64().unwrap() >= 1, "{usage}");
    assert_eq!(usage["quotas"][1]["limit"], 200000);

    // The backend-for-frontend demo route: four calls, one of them after another.
    let token = Command::new(common::bin())
        .args(["token", "--provider", "demo", "--sub", "alice"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("gateway token");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let dash = |q: &str| {
        c.get(format!("{GW}/v1/dashboard{q}"))
            .bearer_auth(&token)
            .send()
    };
    let r = dash("").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-gateway-partial").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["profile"]["id"], "alice");
    assert_eq!(v["orders"]["user"], "alice");
    assert_eq!(v["team"]["id"], v["profile"]["team_id"]);
    assert_eq!(v["recommendations"]["user"], "alice");
    let r = dash("?delay=800").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway-partial"], "true");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_errors"]["recommendations"], "timeout");
    assert!(v.get("recommendations").is_none());

    // Compression on the echo route: gzip as asked, decoding to the upstream's JSON.
    let r = c
        .get(format!("{GW}/v1/echo/hello"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    let raw = r.bytes().await.unwrap();
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut json).unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["path"], "/echo/hello");

    // CORS on get-user: the preflight is answered here; an allowed origin gets its headers.
    let r = c
        .request(reqwest::Method::OPTIONS, format!("{GW}/v1/users/42"))
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = c
        .get(format!("{GW}/v1/users/42"))
        .header("Origin", "https://shop.demo.local")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.demo.local"
    );
    assert_eq!(r.headers()["vary"], "Origin");

    // The cached catalog: MISS, then HIT with the same body; Accept-Language keys it;
    // a zstd client gets the entry encoded; a purge by path empties it.
    let catalog = |lang: Option<&str>, enc: Option<&str>| {
        let mut r = c.get(format!("{GW}/v1/catalog/shoes"));
        if let Some(l) = lang {
            r = r.header("Accept-Language", l);
        }
        if let Some(e) = enc {
            r = r.header("Accept-Encoding", e);
        }
        r.send()
    };
    let x_cache = |r: &reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_string();
    let r = catalog(None, None).await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let first = r.text().await.unwrap();
    let r = catalog(None, None).await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    assert!(r.headers().contains_key("age"));
    assert_eq!(
        r.text().await.unwrap(),
        first,
        "same generated_at: never reached the upstream"
    );
    assert_eq!(x_cache(&catalog(Some("fr"), None).await.unwrap()), "MISS");
    let r = catalog(None, Some("zstd")).await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    assert_eq!(r.headers()["content-encoding"], "zstd");
    let purged = json_of(
        c.post(format!("{ADMIN}/cache/purge"))
            .body(r#"{"route":"catalog","path":"/v1/catalog/shoes"}"#),
    )
    .await;
    assert_eq!(purged["purged"], 2);
    assert_eq!(x_cache(&catalog(None, None).await.unwrap()), "MISS");

    // Issue 20 in the walkthrough: a version header picks a reshaping route; the canary
    // keeps each user on one side; the signup body reaches the upstream reshaped; an IP
    // rule refuses the local client.
    let v = json_of(
        c.get(format!("{GW}/v1/users/42"))
            .header("X-Api-Version", "2"),
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"full_name": "User 42", "id": "42", "version": 2})
    );
    let mut sides = std::collections::HashMap::new();
    for u in [
        "ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon",
    ] {
        for _ in 0..3 {
            let v = json_of(c.get(format!("{GW}/v1/canary/hi")).header("X-User", u)).await;
            let side = v["service"].as_str().unwrap().to_string();
            assert_eq!(
                sides.entry(u).or_insert_with(|| side.clone()),
                &side,
                "{u} moved"
            );
        }
    }
    let v = json_of(
        c.post(format!("{GW}/v1/signup"))
            .header("Content-Type", "application/json")
            .header("X-Channel", "mobile")
            .body(r#"{"customerId":"c-7","internal":{"x":1}}"#),
    )
    .await;
    assert_eq!(
        v["body"],
        serde_json::json!({"channel": "mobile", "id": "c-7", "source": "gateway"})
    );
    let r = get("/v1/office").await.unwrap();
    assert_eq!(r.status(), 403);

    // Idempotency on create-order: the retry gets the first answer, from the store.
    let order = |key: &str, qty: u32| {
        c.post(format!("{GW}/v1/orders"))
            .header("X-API-Key", "demo-acme-key")
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body(format!(
                r#"{{"sku":"ABC-1234","quantity":{qty},"email":"a@example.com"}}"#
            ))
            .send()
    };
    let first = order("demo-order-7", 1).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = order("demo-order-7", 1).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    // The upstream's echo of the first request, with the first request's id.
    assert_eq!(again, first);
    let other = order("demo-order-7", 9).await.unwrap();
    assert_eq!(other.status(), 422);
    let v: Value = other.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_key_reused");

    // A signed webhook, as `gateway webhook-sign` signs it; then its replay and a forgery.
    let event = r#"{"type":"payment.succeeded","payment":"pay_1"}"#;
    let out = Command::new(common::bin())
        .args([
            "webhook-sign",
            "--verifier",
            "payments",
            "--id",
            "evt_demo_1",
            event,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DEMO_WEBHOOK_SECRET")
        .output()
        .expect("gateway webhook-sign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = String::from_utf8(out.stdout).unwrap();
    let headers: Vec<(String, String)> = args
        .split_whitespace()
        .filter(|a| *a != "-H")
        .map(|h| {
            let (k, v) = h.split_once(':').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(headers.len(), 3, "{args}");
    let hook = |body: &'static str| {
        let mut r = c.post(format!("{GW}/v1/webhooks/payments")).body(body);
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let r = hook(event).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-consumer-id"], "webhook:payments");
    assert_eq!(v["body_bytes"], event.len());
    let r = hook(event).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["webhook-duplicate"], "true");
    let r = hook(r#"{"type":"payment.succeeded","payment":"pay_1","amount":1}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_signature");

    // Asynchronous delivery: an order accepted (202), then delivered by the workers; a
    // signed event refused by the partner's closed inbox (dead), replayed once it opens.
    let accepted = json_of(
        c.post(format!("{GW}/v1/orders/async"))
            .header("x-api-key", "demo-acme-key")
            .header("content-type", "application/json")
            .body(r#"{"sku":"ABC-1234","quantity":2,"email":"a@example.com"}"#),
    )
    .await;
    assert_eq!(accepted["status"], "queued", "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let delivery = |id: String| async move {
        common::delivery_outcome(&format!("{ADMIN}/deliveries/{id}")).await
    };
    assert_eq!(delivery(id).await["status"], "delivered");
    let event = json_of(
        c.post(format!("{GW}/v1/events"))
            .header("x-api-key", "demo-acme-key")
            .body(r#"{"event":"order.shipped"}"#),
    )
    .await;
    let ev = event["id"].as_str().unwrap().to_string();
    let dead = delivery(ev.clone()).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert!(
        dead["last_error"].as_str().unwrap().contains("409"),
        "{dead}"
    );
    let list = json_of(c.get(format!("{ADMIN}/deliveries?status=dead"))).await;
    assert!(list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == ev.as_str()));
    let opened = c
        .post("http://127.0.0.1:9002/inbox/open")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let retried = c
        .post(format!("{ADMIN}/deliveries/{ev}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(delivery(ev).await["status"], "delivered");

    // Streams with the binary's own client, as the walkthrough runs them.
    let stream = |args: &[&str]| {
        let out = Command::new(common::bin())
            .arg("stream")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, err) = stream(&[
        "ws://localhost:8080/v1/live/echo",
        "-H",
        "X-API-Key: demo-acme-key",
        "--send",
        "hello",
        "--send",
        "world",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello\nworld\n");
    let (ok, out, err) = stream(&["ws://localhost:8080/v1/live/echo", "--send", "hello"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");
    let started = Instant::now();
    let (ok, out, err) = stream(&["http://localhost:8080/v1/live/ticker?count=3"]);
    assert!(ok, "{err}");
    let ticks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l.strip_prefix("tick ").unwrap()).unwrap())
        .collect();
    assert_eq!(ticks.len(), 3, "{out}");
    for (i, t) in ticks.iter().enumerate() {
        assert_eq!(t["n"], i + 1);
        assert_eq!(t["of"], 3);
    }
    // One a second: the three events took two pauses.
    assert!(started.elapsed() >= Duration::from_millis(1900));

    // HTTPS with HTTP/2 on the demo-only certificate.
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/demo-ca.pem")).unwrap();
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let r = tls
        .get("https://localhost:8443/v1/users/42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "42");

    let cfg = json_of(c.get(format!("{ADMIN}/config"))).await;
    assert!(cfg["routes"].as_array().unwrap().len() >= 8);
    let m = c
        .get(format!("{ADMIN}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("gateway_requests_total{method=\"GET\",route=\"get-user\",status=\"200\"}"));
    assert!(
        m.contains("gateway_streams_closed_total{reason=\"closed\",route=\"live-ticker\"} 1"),
        "{m}"
    );
    assert!(m.contains("gateway_stream_bytes_total{direction=\"from_client\",route=\"live-echo\"}"));
}
