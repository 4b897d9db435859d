//! A fake OTLP/HTTP collector: keeps the (protobuf) body of every POST to /v1/traces.

use std::sync::{Arc, Mutex};

pub type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// The endpoint to put in `tracing.otlp_endpoint`, and what reached it.
pub async fn start() -> (String, Bodies) {
    let bodies: Bodies = Arc::default();
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let b = b.clone();
            async move {
                b.lock().unwrap().push(body.to_vec());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), bodies)
}

/// Whether `needle` occurs in `hay` (attribute names and values are plain bytes in the
/// protobuf).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
