//! The admin API of deliveries: `GET /deliveries/{id}`, `GET /deliveries?status=dead
//! [&route=NAME][&limit=N]`, `POST /deliveries/{id}/retry` (a dead letter back in the
//! queue), `DELETE /deliveries/{id}` (a dead letter dropped).

use super::queue::{Queue, QueueError, Record};
use http::{Method, StatusCode};
use serde_json::{json, Value};

const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1000;

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    let body = json!({"error": {"status": status.as_u16(), "code": code, "message": message}});
    (status, body)
}

fn store_error(e: &QueueError) -> (StatusCode, Value) {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        &format!("the delivery queue cannot be read: {e}"),
    )
}

fn record(r: &Record) -> Value {
    let at = r.next_attempt_at.map(|ms| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_millis(t).to_string()
    });
    json!({
        "id": r.id,
        "route": r.route,
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "last_error": r.last_error,
        "next_attempt_at": at,
    })
}

fn query<'a>(q: Option<&'a str>, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(q?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The answer for a `/deliveries` path, or `None` if `path` is not one.
pub async fn handle(
    queue: &dyn Queue,
    method: &Method,
    path: &str,
    q: Option<&str>,
) -> Option<(StatusCode, Value)> {
    let rest = path.strip_prefix("/deliveries")?;
    let answer = match (method, rest.trim_end_matches('/')) {
        (&Method::GET, "") => {
            if query(q, "status").as_deref() != Some("dead") {
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "list dead letters with ?status=dead (and optionally route=NAME, limit=N)",
                ));
            }
            let route = query(q, "route");
            let limit = query(q, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(DEFAULT_LIST)
                .min(MAX_LIST);
            match queue.dead_letters(route.as_deref(), limit).await {
                Ok(list) => (
                    StatusCode::OK,
                    json!({"deliveries": list.iter().map(record).collect::<Vec<_>>()}),
                ),
                Err(e) => store_error(&e),
            }
        }
        (m, id) => {
            let id = id.strip_prefix('/')?;
            let (id, action) = match id.split_once('/') {
                Some((id, action)) => (id, Some(action)),
                None => (id, None),
            };
            match (m, action) {
                (&Method::GET, None) => match queue.status(id).await {
                    Ok(Some(r)) => (StatusCode::OK, record(&r)),
                    Ok(None) => not_found(id),
                    Err(e) => store_error(&e),
                },
                (&Method::POST, Some("retry")) => match queue.requeue(id).await {
                    Ok(true) => match queue.status(id).await {
                        Ok(Some(r)) => (StatusCode::OK, record(&r)),
                        _ => (StatusCode::OK, json!({"id": id, "status": "queued"})),
                    },
                    Ok(false) => not_dead(queue, id).await,
                    Err(e) => store_error(&e),
                },
                (&Method::DELETE, None) => match queue.remove(id).await {
                    Ok(true) => (StatusCode::OK, json!({"id": id, "removed": true})),
                    Ok(false) => not_dead(queue, id).await,
                    Err(e) => store_error(&e),
                },
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "GET /deliveries/{id}, POST /deliveries/{id}/retry, DELETE /deliveries/{id}",
                ),
            }
        }
    };
    Some(answer)
}

fn not_found(id: &str) -> (StatusCode, Value) {
    error(
        StatusCode::NOT_FOUND,
        "unknown_delivery",
        &format!("no delivery {id:?} (delivered ones are kept for a day)"),
    )
}

/// `retry` and `DELETE` apply to dead letters only.
async fn not_dead(queue: &dyn Queue, id: &str) -> (StatusCode, Value) {
    match queue.status(id).await {
        Ok(Some(r)) => error(
            StatusCode::CONFLICT,
            "not_dead",
            &format!("delivery {id:?} is {}, not dead", r.status.as_str()),
        ),
        Ok(None) => not_found(id),
        Err(e) => store_error(&e),
    }
}
