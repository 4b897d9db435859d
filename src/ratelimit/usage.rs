//! `GET /consumers/{id}/usage` on the admin port: what a consumer's quotas have counted in
//! their current periods, read without counting anything.

use super::quota::Quota;
use crate::config::policy::QuotaPeriod;
use crate::runtime::Snapshot;
use http::StatusCode;
use serde_json::{json, Value};

fn error(status: StatusCode, code: &str, message: String) -> (StatusCode, Value) {
    let body = json!({"error": {"status": status.as_u16(), "code": code, "message": message}});
    (status, body)
}

/// The answer for consumer `id`: status and JSON body.
pub async fn report(snapshot: &Snapshot, id: &str) -> (StatusCode, Value) {
    if !snapshot.identities.consumers.contains_key(id) {
        let message = format!("no consumer {id:?} in the live configuration");
        return error(StatusCode::NOT_FOUND, "unknown_consumer", message);
    }
    let quotas: &[std::sync::Arc<Quota>] = snapshot
        .rate
        .consumer_plans
        .get(id)
        .map_or(&[], |p| p.quotas.as_slice());
    // The key the request path counts under (`rate_key` for a consumer).
    let key = format!("c:{id}");
    let counted = match snapshot.rate.backend.usage(quotas, &key).await {
        Ok(c) => c,
        Err(e) => {
            let message = format!("the store could not be read: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                message,
            );
        }
    };
    let list: Vec<Value> = quotas
        .iter()
        .zip(counted)
        .map(|(q, (window, used))| {
            let per = match q.per {
                QuotaPeriod::Day => "day",
                QuotaPeriod::Month => "month",
            };
            json!({
                "per": per,
                "limit": q.requests,
                "used": used,
                "remaining": q.requests.saturating_sub(used),
                "resets_at": humantime::format_rfc3339_seconds(window.resets_at).to_string(),
            })
        })
        .collect();
    (StatusCode::OK, json!({"consumer": id, "quotas": list}))
}
