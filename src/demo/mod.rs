//! Demo upstream services built into the binary, for `gateway demo`: a users service and
//! an orders service on loopback, each with slow, failing and echo endpoints, and a live
//! service with a WebSocket echo and an event ticker ([`live`]).

pub mod client;
pub mod live;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the demo services listen; `policies/` points its upstreams here.
pub const ADDRS: [&str; 2] = ["127.0.0.1:9001", "127.0.0.1:9002"];

/// The demo webhook verifier's secret variable, and the demo-only value that `gateway demo`
/// and the local-testing commands (`token`, `webhook-sign`) give it when it is not set (as
/// the inline demo JWT key: never for production; `run` and `check` never set it).
pub const WEBHOOK_SECRET_ENV: &str = "DEMO_WEBHOOK_SECRET";
pub const WEBHOOK_SECRET_DEMO: &str = "whsec_ZGVtby1vbmx5LXdlYmhvb2stc2VjcmV0LWNoYW5nZS1tZQ==";

/// Sets the demo webhook secret unless the environment has one. Called before anything
/// else runs (no other thread exists yet).
pub fn default_webhook_secret() {
    if std::env::var_os(WEBHOOK_SECRET_ENV).is_none() {
        std::env::set_var(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET_DEMO);
    }
}

/// Whether `/inbox` takes events (see the delivery walkthrough).
static INBOX_OPEN: AtomicBool = AtomicBool::new(false);

/// Longest delay `/slow` accepts.
const MAX_SLOW_MS: u64 = 30_000;
/// Largest JSON request body the echo endpoint shows.
const MAX_ECHOED_JSON: usize = 4096;
/// Largest request body the echo endpoint reads.
const MAX_ECHO_BODY: usize = 1 << 20;

pub struct DemoService {
    name: &'static str,
}

fn query<'a>(session: &'a ServerSession, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    let q = session.req_header().uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn json_response(status: StatusCode, body: Value) -> Response<Vec<u8>> {
    let bytes = body.to_string().into_bytes();
    let mut r = Response::new(bytes);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    r
}

impl DemoService {
    fn user(id: &str) -> Value {
        let n: u64 = id.bytes().map(u64::from).sum();
        json!({"id": id, "name": format!("User {id}"), "team_id": format!("team-{}", n % 7)})
    }

    fn orders(user: &str) -> Value {
        json!({"user": user, "orders": [
            {"id": format!("{user}-1"), "total": 42.5, "status": "shipped"},
            {"id": format!("{user}-2"), "total": 7.25, "status": "pending"}
        ]})
    }

    async fn echo(&self, session: &mut ServerSession) -> Value {
        let mut body_bytes = 0usize;
        // A small JSON body is echoed too (to show what a request transform sent).
        let mut small = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
            if body_bytes <= MAX_ECHOED_JSON {
                small.extend_from_slice(&chunk);
            }
            if body_bytes > MAX_ECHO_BODY {
                break;
            }
        }
        let body: Value = if body_bytes <= MAX_ECHOED_JSON {
            serde_json::from_slice(&small).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let req = session.req_header();
        let headers: serde_json::Map<String, Value> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
                )
            })
            .collect();
        json!({
            "service": self.name,
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "headers": headers,
            "body_bytes": body_bytes,
            "body": body,
        })
    }
}

#[async_trait]
impl ServeHttp for DemoService {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["healthz"] => json_response(
                StatusCode::OK,
                json!({"status": "ok", "service": self.name}),
            ),
            ["users", id] => json_response(StatusCode::OK, Self::user(id)),
            ["teams", id] => json_response(
                StatusCode::OK,
                json!({"id": id, "name": format!("Team {}", id.trim_start_matches("team-"))}),
            ),
            ["recommendations", user] => {
                let ms = query(session, "delay")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    .min(MAX_SLOW_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_response(
                    StatusCode::OK,
                    json!({"user": user, "items": ["sku-1", "sku-7"]}),
                )
            }
            ["catalog", rest @ ..] => {
                // A read-heavy endpoint for the cache walkthrough: `generated_at` shows
                // whether an answer came from the upstream or from the gateway's cache.
                let generated_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let lang = session
                    .req_header()
                    .headers
                    .get(http::header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("en")
                    .to_string();
                let items: Vec<Value> = (1..=40)
                    .map(|i| json!({"sku": format!("sku-{i}"), "name": format!("Product {i}"), "price": 5 * i}))
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({"section": rest.join("/"), "lang": lang, "generated_at": generated_at, "items": items}),
                )
            }
            ["orders"] => {
                let user = query(session, "user").unwrap_or_default().into_owned();
                json_response(StatusCode::OK, Self::orders(&user))
            }
            ["slow"] => {
                let ms = query(session, "ms")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1000)
                    .min(MAX_SLOW_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_response(
                    StatusCode::OK,
                    json!({"slept_ms": ms, "service": self.name}),
                )
            }
            // For the delivery walkthrough: a partner inbox that refuses events (409,
            // a permanent failure: the delivery is dead at once) until it is opened.
            ["inbox"] if INBOX_OPEN.load(Ordering::Relaxed) => {
                let v = self.echo(session).await;
                json_response(
                    StatusCode::OK,
                    json!({"received": v["body"], "service": self.name}),
                )
            }
            ["inbox"] => json_response(
                StatusCode::CONFLICT,
                json!({"error": "the inbox is closed: POST /inbox/open on this service", "service": self.name}),
            ),
            ["inbox", "open"] => {
                INBOX_OPEN.store(true, Ordering::Relaxed);
                json_response(StatusCode::OK, json!({"inbox": "open"}))
            }
            ["fail"] => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "the demo service failed on purpose", "service": self.name}),
            ),
            _ => {
                let v = self.echo(session).await;
                json_response(StatusCode::OK, v)
            }
        }
    }
}

/// The live service (WebSocket echo, event ticker), ready to add to a server.
pub fn live_service() -> Service<live::Live> {
    let mut svc = Service::new("demo live".to_string(), live::Live);
    svc.add_tcp(live::ADDR);
    svc
}

/// The demo services, ready to add to a server.
pub fn services() -> Vec<Service<DemoService>> {
    [("users", ADDRS[0]), ("orders", ADDRS[1])]
        .into_iter()
        .map(|(name, addr)| {
            let mut svc = Service::new(format!("demo {name}"), DemoService { name });
            svc.add_tcp(addr);
            svc
        })
        .collect()
}
