//! The admin server: health, readiness, metrics, the live configuration, and reload.

use crate::metrics;
use crate::runtime::Store;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Admin {
    store: Arc<Store>,
    ready: Arc<AtomicBool>,
    /// The console's live per-route figures.
    live: Arc<crate::console::stats::Live>,
    /// SHA-256 of the admin token, when one is configured.
    token: Option<[u8; 32]>,
}

impl Admin {
    pub fn new(
        store: Arc<Store>,
        ready: Arc<AtomicBool>,
        live: Arc<crate::console::stats::Live>,
        token: Option<String>,
    ) -> Admin {
        let token = token
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into());
        Admin {
            store,
            ready,
            live,
            token,
        }
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let got: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        // Compare digests without an early exit.
        got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", v.to_string().into_bytes())
}

/// The consumer id of `/consumers/{id}/usage` (percent-decoded).
fn consumer_usage(path: &str) -> Option<String> {
    let id = path.strip_prefix("/consumers/")?.strip_suffix("/usage")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?;
    Some(id.into_owned())
}

/// Admin request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(piece)) => {
                if body.len() + piece.len() > MAX_ADMIN_BODY {
                    return Err(format!("the body is over {MAX_ADMIN_BODY} bytes"));
                }
                body.extend_from_slice(&piece);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("the body could not be read: {e}")),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        // The console page itself carries no data: it loads without the token and asks
        // for it.
        let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/");
        if !open && !self.authorized(session) {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"status": 401, "code": "unauthorized", "message": "admin token required"}}),
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => json(StatusCode::OK, json!({"status": "ok"})),
            (Method::GET, "/readyz") => {
                if self.ready.load(Ordering::Acquire) {
                    json(StatusCode::OK, json!({"status": "ready"}))
                } else {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "starting"}),
                    )
                }
            }
            (Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render().into_bytes(),
            ),
            (Method::GET, "/config") => json(StatusCode::OK, self.store.describe()),
            (ref m, p) if p == "/deliveries" || p.starts_with("/deliveries/") => {
                let snapshot = self.store.load();
                let q = session.req_header().uri.query().map(str::to_string);
                let queue = snapshot.state.queue.clone();
                match crate::deliver::admin::handle(&*queue, m, p, q.as_deref()).await {
                    Some((status, body)) => json(status, body),
                    None => json(
                        StatusCode::NOT_FOUND,
                        json!({"error": {"status": 404, "code": "not_found", "message": "no such admin endpoint"}}),
                    ),
                }
            }
            (Method::GET, p) if consumer_usage(p).is_some() => {
                let id = consumer_usage(p).unwrap_or_default();
                let (status, body) = crate::ratelimit::usage::report(&self.store.load(), &id).await;
                json(status, body)
            }
            (Method::GET, "/openapi.json") => json(
                StatusCode::OK,
                crate::openapi::export::document(&self.store.load(), self.store.gateway()),
            ),
            (Method::GET, "/") => {
                let mut r = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    crate::console::PAGE.as_bytes().to_vec(),
                );
                // Everything the page needs is inline; nothing else may load or frame it.
                r.headers_mut().insert(
                    http::header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
                    ),
                );
                r
            }
            (Method::GET, "/console/state") => json(
                StatusCode::OK,
                crate::console::state(&self.store, &self.live),
            ),
            (Method::POST, "/reload") => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.reload(true)).await {
                    Ok(Ok(_)) => json(StatusCode::OK, self.store.describe()),
                    Ok(Err(problems)) => {
                        let errors: Vec<String> =
                            problems.0.iter().map(|p| p.to_string()).collect();
                        json(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            json!({ "errors": errors }),
                        )
                    }
                    Err(e) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({ "errors": [format!("reload task failed: {e}")] }),
                    ),
                }
            }
            (Method::POST, "/cache/purge") => match read_body(session).await {
                Ok(body) => {
                    let (status, answer) =
                        crate::cache::purge::admin(&self.store.load(), &body).await;
                    json(status, answer)
                }
                Err(message) => json(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"status": 400, "code": "invalid_purge", "message": message}}),
                ),
            },
            (
                _,
                "/" | "/console/state" | "/healthz" | "/readyz" | "/metrics" | "/config"
                | "/reload" | "/cache/purge" | "/openapi.json",
            ) => json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": {"status": 405, "code": "method_not_allowed", "message": "method not allowed"}}),
            ),
            _ => json(
                StatusCode::NOT_FOUND,
                json!({"error": {"status": 404, "code": "not_found", "message": "no such admin endpoint"}}),
            ),
        }
    }
}
