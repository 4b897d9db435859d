//! Upstream servers started by tests: echo, slow, status, streaming, connection info.

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A running upstream; aborted on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests seen.
    pub hits: Arc<AtomicUsize>,
    /// Released by the test to let `/stream` send its second chunk.
    pub release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Starts an upstream called `name`:
    /// - `/slow?ms=N` answers after N ms;
    /// - `/status/{code}` answers with that status;
    /// - `/stream` sends `first\n`, waits for `release`, then `second\n`;
    /// - `/big?bytes=N` sends N bytes;
    /// - anything else echoes the request as JSON (name, method, path, query, headers,
    ///   body_len, peer).
    pub async fn start(name: &'static str) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (h, r) = (hits.clone(), release.clone());
        let app = Router::new()
            .route("/slow", any(slow))
            .route("/status/{code}", any(status))
            .route("/big", get(big))
            .route(
                "/stream",
                get(move || {
                    let r = r.clone();
                    async move { stream(r).await }
                }),
            )
            .fallback(move |ci, req| echo(name, ci, req))
            .layer(axum::middleware::from_fn(
                move |req, next: axum::middleware::Next| {
                    let h = h.clone();
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        next.run(req).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Upstream {
            addr,
            hits,
            release,
            task,
        }
    }
}

async fn echo(
    name: &'static str,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    axum::Json(serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
        "peer": peer.to_string(),
    }))
    .into_response()
}

async fn slow(Query(q): Query<HashMap<String, u64>>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(1000))).await;
    "slow done"
}

async fn status(axum::extract::Path(code): axum::extract::Path<u16>) -> Response {
    let code = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    (
        code,
        [
            ("connection", "x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
        ],
        format!("status {}", code.as_u16()),
    )
        .into_response()
}

async fn big(Query(q): Query<HashMap<String, usize>>) -> Vec<u8> {
    vec![b'x'; q.get("bytes").copied().unwrap_or(1 << 20)]
}

async fn stream(release: Arc<Notify>) -> Response {
    let s = async_stream(release);
    Response::new(Body::from_stream(s))
}

fn async_stream(
    release: Arc<Notify>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(0u8, move |state| {
        let release = release.clone();
        async move {
            match state {
                0 => Some((Ok(Bytes::from_static(b"first\n")), 1)),
                1 => {
                    release.notified().await;
                    Some((Ok(Bytes::from_static(b"second\n")), 2))
                }
                _ => None,
            }
        }
    })
}
