//! The web console on the admin port: `GET /` serves one page built into the binary (no
//! external assets: it works offline), which reads `GET /console/state` every few seconds
//! and draws routes, upstream targets with their health and circuit state, live per-route
//! figures ([`stats`]), the configuration generation and the last reload error; its
//! reload button calls `POST /reload`. With an admin token configured, the page loads
//! without it, asks for it, and sends it as `Authorization: Bearer` on every data call.

pub mod stats;
pub mod summary;

use crate::runtime::Store;
use serde_json::{json, Value};

/// The page: HTML, CSS and script in one file, escaped by construction (the script sets
/// text, never markup, from the data).
pub const PAGE: &str = include_str!("page.html");

/// Everything the page draws, in one document.
pub fn state(store: &Store, live: &stats::Live) -> Value {
    let mut doc = store.describe();
    let s = store.load();
    let figures = live.figures();
    let routes: Vec<Value> = s
        .routes
        .iter()
        .map(|r| {
            let w = &*r.written;
            let mut v = serde_json::to_value(&*r.summary).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                let mut constraints: Vec<String> = w
                    .headers
                    .iter()
                    .map(|(k, v)| format!("header {k}={v}"))
                    .collect();
                constraints.extend(w.query.iter().map(|(k, v)| format!("query {k}={v}")));
                let auth: Vec<String> = match w.auth.is_empty() {
                    true => vec!["none".into()],
                    false => w.auth.iter().map(ToString::to_string).collect(),
                };
                let methods: Vec<String> = w
                    .methods
                    .iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect();
                m.insert("name".into(), json!(&*r.name));
                m.insert("host".into(), json!(w.host));
                m.insert("path".into(), json!(w.path));
                m.insert("methods".into(), json!(methods));
                m.insert("constraints".into(), json!(constraints));
                m.insert("auth".into(), json!(auth));
                m.insert("live".into(), json!(figures.get(&*r.name)));
            }
            v
        })
        .collect();
    let upstreams: Vec<Value> = s
        .upstreams
        .values()
        .map(|u| {
            let targets: Vec<Value> = u
                .target_states()
                .into_iter()
                .map(|(address, healthy, circuit)| {
                    // Without a health check the balancer counts every target healthy:
                    // the console says "not checked" rather than claim it.
                    let healthy = u.health.is_some().then_some(healthy);
                    json!({"address": address, "healthy": healthy, "circuit": circuit})
                })
                .collect();
            json!({
                "name": &*u.name,
                "health_check": u.health.is_some(),
                "targets": targets,
            })
        })
        .collect();
    if let Value::Object(m) = &mut doc {
        m.insert("routes".into(), Value::Array(routes));
        m.insert("upstreams".into(), Value::Array(upstreams));
        m.insert("window_seconds".into(), json!(stats::WINDOW.as_secs()));
        m.insert(
            "unmatched".into(),
            json!(figures.get(crate::metrics::UNMATCHED)),
        );
    }
    doc
}
