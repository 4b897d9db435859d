//! The memory backend's sweeper: a background service that evicts keys whose state is back
//! to that of a fresh key, so memory follows the keys in use, and reports the key count.

use super::Backend;
use crate::metrics;
use crate::runtime::Store;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;

pub struct SweepService {
    store: Arc<Store>,
}

impl SweepService {
    pub fn new(store: Arc<Store>) -> Self {
        SweepService { store }
    }
}

/// One sweep of the live generation's limits; returns the keys left.
pub fn sweep(store: &Store) -> usize {
    let snapshot = store.load();
    let mut keys = 0;
    for limit in snapshot.rate.limits.values() {
        if let Some(m) = &limit.memory {
            m.sweep();
            keys += m.len();
        }
    }
    metrics::RATE_LIMIT_KEYS.set(keys as i64);
    // The shared store's idempotency keys and webhook ids expire on the same beat.
    snapshot.state.kv.sweep();
    keys
}

#[async_trait]
impl BackgroundService for SweepService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Backend::Memory(settings) = &*self.store.load().rate.backend else {
            return;
        };
        let every = settings
            .sweep_interval
            .max(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(every) => {}
            }
            // Sweeping a large table takes a while: off the runtime's worker.
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || sweep(&store)).await;
        }
    }
}
