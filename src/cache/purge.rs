//! Purges: `POST /cache/purge` on the admin port removes a route's entries (or one path's)
//! from this replica, and, when the store is Redis, publishes the purge so that every other
//! replica removes them too ([`PurgeService`] listens on each).

use crate::runtime::{Snapshot, Store};
use crate::state::{Kv, Shared};
use async_trait::async_trait;
use futures::StreamExt;
use http::StatusCode;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// What an operator asks to purge, and what replicas tell each other.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A purge as published: with the replica it came from, which skips its own message.
#[derive(Debug, Deserialize, Serialize)]
struct Published {
    from: String,
    #[serde(flatten)]
    purge: Purge,
}

/// This process among the replicas.
static REPLICA: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());

fn channel(state: &Shared) -> String {
    format!("{}cache-purge", state.prefix)
}

fn error(status: StatusCode, code: &str, message: String) -> (StatusCode, serde_json::Value) {
    (
        status,
        json!({"error": {"status": status.as_u16(), "code": code, "message": message}}),
    )
}

/// Answers `POST /cache/purge` with `body`: `{"purged": N}` (entries removed here), and
/// `"published"` when other replicas were told (Redis store).
pub async fn admin(snapshot: &Snapshot, body: &[u8]) -> (StatusCode, serde_json::Value) {
    let purge: Purge = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_purge",
                format!("expected {{\"route\": NAME, \"path\": optional PATH}}: {e}"),
            )
        }
    };
    let Some(route) = snapshot.routes.iter().find(|r| *r.name == purge.route) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("no route named {:?}", purge.route),
        );
    };
    if route.cache.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "route_not_cached",
            format!("route {:?} has no cache", purge.route),
        );
    }
    let purged = apply(&purge);
    crate::metrics::CACHE_PURGES
        .with_label_values(&["admin"])
        .inc_by(purged as u64);
    let mut answer = json!({ "purged": purged });
    if let Kv::Redis(pool) = &snapshot.state.kv {
        let message = Published {
            from: REPLICA.clone(),
            purge,
        };
        let published = match serde_json::to_string(&message) {
            Ok(text) => pool.publish(&channel(&snapshot.state), &text).await,
            Err(e) => Err(crate::state::StoreError::Failed(e.to_string())),
        };
        if let Err(e) = &published {
            tracing::warn!(error = %e, "cache purge not published to other replicas");
            answer["error"] = json!(format!("other replicas not reached: {e}"));
        }
        answer["published"] = json!(published.is_ok());
    }
    (StatusCode::OK, answer)
}

fn apply(purge: &Purge) -> usize {
    super::storage().purge_route(&purge.route, purge.path.as_deref())
}

/// Listens for other replicas' purges (Redis store only), reconnecting until stopped. With
/// Redis Cluster, through one node: a PUBLISH on any node reaches every node's subscribers.
pub struct PurgeService {
    store: Arc<Store>,
}

impl PurgeService {
    pub fn new(store: Arc<Store>) -> PurgeService {
        PurgeService { store }
    }
}

#[async_trait]
impl BackgroundService for PurgeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let state = self.store.load().state.clone();
        let Kv::Redis(pool) = &state.kv else {
            return;
        };
        let channel = channel(&state);
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                ended = listen(pool.client(), &channel) => {
                    if let Err(e) = ended {
                        tracing::warn!(error = %e, "cache purge subscription lost; reconnecting");
                    }
                    // In a cluster, the next attempt goes to the next node of the list.
                    pool.subscription_failed();
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Applies purges published on `channel` until the connection ends.
async fn listen(client: &redis::Client, channel: &str) -> Result<(), String> {
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
    tracing::info!(channel, "listening for cache purges from other replicas");
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let Ok(published) = serde_json::from_slice::<Published>(msg.get_payload_bytes()) else {
            tracing::warn!(channel, "ignored a malformed cache purge message");
            continue;
        };
        if published.from == *REPLICA {
            continue;
        }
        let purged = apply(&published.purge);
        crate::metrics::CACHE_PURGES
            .with_label_values(&["peer"])
            .inc_by(purged as u64);
        tracing::info!(
            route = %published.purge.route,
            path = ?published.purge.path,
            purged,
            "cache purge from another replica"
        );
    }
    Err("the subscription ended".into())
}
