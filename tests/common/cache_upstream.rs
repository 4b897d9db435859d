//! What the response-cache tests (tests/cache.rs, tests/cache_purge.rs) share: an upstream
//! whose answers are shaped by the query string and that counts the requests it sees (in
//! all and per path), the policy of their routes, and requests that wait until the gateway
//! has finished with them. Included with `#[path = "common/cache_upstream.rs"] mod
//! cache_upstream;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::reply::{send, Reply};
use crate::common::Gateway;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ACME_KEY: &str = "test-only-cache-acme-key";
pub const BETA_KEY: &str = "test-only-cache-beta-key";

/// The upstream. Every answer is JSON `{"n": requests seen in all, "call": requests seen
/// for this path, "path", "query", "lang": Accept-Language, "consumer": X-Consumer-Id}`,
/// shaped by query parameters:
/// - `status=N`: that status (204: no body; 301: with `Location`);
/// - `cc=V`: `Cache-Control: V`; `vary=V`: `Vary: V`; `cookie=1`: a `Set-Cookie`;
/// - `bytes=N`: the JSON padded (`"pad": "xxx…"`) to N bytes;
/// - `gzip=1`: the body gzip-encoded, with `Content-Encoding: gzip`;
/// - `ms=N`: answers after N ms, from the `slow_from`-th request for the path on (default 1).
pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub async fn start() -> Origin {
        let hits = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Mutex::new(HashMap::new()));
        let (h, c) = (hits.clone(), calls.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (h, c) = (h.clone(), c.clone());
            async move { answer(&h, &c, req).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Origin {
            addr,
            hits,
            calls,
            task,
        }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Requests seen, in all.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests seen for `path` (without the query string), whatever their method.
    pub fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn answer(
    hits: &AtomicUsize,
    calls: &Mutex<HashMap<String, usize>>,
    req: Request,
) -> Response {
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let path = req.uri().path().to_string();
    let call = {
        let mut calls = calls.lock().unwrap();
        let c = calls.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let q: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<usize>().ok());
    if let Some(ms) = num("ms") {
        if call >= num("slow_from").unwrap_or(1) {
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut body = serde_json::json!({
        "n": n,
        "call": call,
        "path": path,
        "query": req.uri().query(),
        "lang": header("accept-language"),
        "consumer": header("x-consumer-id"),
    })
    .to_string();
    if let Some(bytes) = num("bytes") {
        let pad = bytes.saturating_sub(body.len() + 9);
        body.pop();
        body.push_str(&format!(",\"pad\":\"{}\"}}", "x".repeat(pad)));
    }
    let status = num("status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    };
    set("content-type", "application/json");
    if let Some(v) = q.get("cc") {
        set("cache-control", v);
    }
    if let Some(v) = q.get("vary") {
        set("vary", v);
    }
    if q.contains_key("cookie") {
        set("set-cookie", "session=test-only-cache-cookie; Path=/");
    }
    if status == StatusCode::MOVED_PERMANENTLY {
        set("location", "/elsewhere");
    }
    let mut bytes = body.into_bytes();
    if q.contains_key("gzip") {
        set("content-encoding", "gzip");
        bytes = gzip(&bytes);
    }
    if status == StatusCode::NO_CONTENT {
        bytes.clear();
    }
    (status, headers, bytes).into_response()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, bytes).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

/// `Cache-Control` value `v` as the `cc` query parameter.
pub fn cc(v: &str) -> String {
    format!(
        "cc={}",
        v.replace(' ', "%20")
            .replace('=', "%3D")
            .replace(',', "%2C")
    )
}

pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// Routes to `origin`, all public unless said otherwise:
/// - `catalog` `/v1/catalog/*`: `ttl: 60s`, keyed by `Accept-Language` too;
/// - `nokey` `/nokey/*`: `ttl: 60s`; `short` `/short/*`: `ttl: 1s`;
/// - `swr` `/swr/*`: `ttl: 1s`, `stale_while_revalidate: 10s`;
/// - `zip` `/zip/*`: `ttl: 60s`, compression from 256 bytes;
/// - `private` `/private/*`: API keys (consumers `acme`, `beta`), 3 requests a minute per
///   consumer, `ttl: 60s`;
/// - `plain` `/plain/*`: no cache.
pub fn policy(origin: &str) -> String {
    format!(
        r#"upstreams:
  origin: {{ targets: ["{origin}"] }}
api_keys: {{ header: X-API-Key }}
consumers:
  acme: {{ api_keys: ["{acme}"] }}
  beta: {{ api_keys: ["{beta}"] }}
routes:
  - name: catalog
    match: {{ path: /v1/catalog/* }}
    auth: none
    upstream: origin
    cache: {{ ttl: 60s, key: [header:Accept-Language] }}
  - name: nokey
    match: {{ path: /nokey/* }}
    auth: none
    upstream: origin
    cache: {{ ttl: 60s }}
  - name: short
    match: {{ path: /short/* }}
    auth: none
    upstream: origin
    cache: {{ ttl: 1s }}
  - name: swr
    match: {{ path: /swr/* }}
    auth: none
    upstream: origin
    cache: {{ ttl: 1s, stale_while_revalidate: 10s }}
  - name: zip
    match: {{ path: /zip/* }}
    auth: none
    upstream: origin
    response: {{ compression: {{ min_size: 256B }} }}
    cache: {{ ttl: 60s }}
  - name: private
    match: {{ path: /private/* }}
    auth: [api_key]
    rate_limit: {{ key: consumer, limits: [ {{ requests: 3, per: 1m }} ] }}
    upstream: origin
    cache: {{ ttl: 60s }}
  - name: plain
    match: {{ path: /plain/* }}
    auth: none
    upstream: origin
"#,
        acme = key_hash(ACME_KEY),
        beta = key_hash(BETA_KEY),
    )
}

/// The origin and a gateway on `policy` (`gateway_extra` appended to gateway.yaml).
pub async fn start(gateway_extra: &str) -> (Gateway, Origin) {
    let origin = Origin::start().await;
    let gw = Gateway::start(gateway_extra, &[("p.yaml", &policy(&origin.target()))]).await;
    (gw, origin)
}

/// A client that follows no redirect (a cached 301 is the answer itself) and decodes
/// nothing.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// `method` `path` with `headers`; returns once the gateway has logged the request (an
/// answer is stored by then, so the next request sees it).
pub async fn call(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = send(req).await;
    if let Some(id) = r.header("x-request-id").map(str::to_string) {
        gw.wait_log(|l| l["request_id"] == id.as_str()).await;
    }
    r
}

pub async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(gw, "GET", path, headers).await
}

/// The answer's `X-Cache` ("-" without one).
pub fn xc(r: &Reply) -> &str {
    r.header("x-cache").unwrap_or("-")
}

/// Status, `X-Cache`, `Age` and the start of the body.
pub fn show(r: &Reply) -> String {
    let body: String = r.text.chars().take(300).collect();
    format!(
        "{} X-Cache: {} Age: {} [{} bytes] {body}",
        r.status,
        xc(r),
        r.header("age").unwrap_or("-"),
        r.text.len()
    )
}

/// Asserts the status and the `X-Cache` of an answer.
#[track_caller]
pub fn expect(r: &Reply, status: u16, x_cache: &str, what: &str) {
    assert_eq!((r.status, xc(r)), (status, x_cache), "{what}: {}", show(r));
}

/// The `n` of the origin's body: which upstream request produced the answer.
#[track_caller]
pub fn n(r: &Reply) -> u64 {
    r.json()["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("not the origin's answer: {}", show(r)))
}

/// Admin `POST /cache/purge` with `body`; returns the status and the body as JSON (Null
/// when it is not JSON).
pub async fn purge(gw: &Gateway, body: &str) -> (u16, serde_json::Value) {
    let r = client()
        .post(gw.admin_url("/cache/purge"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}
