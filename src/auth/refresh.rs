//! The JWKS background service: fetches every remote key set of the live snapshot when it
//! is due (at start, then every `jwks_refresh`; sooner after a failure).

use crate::runtime::Store;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(250);

pub struct JwksService {
    store: Arc<Store>,
}

impl JwksService {
    pub fn new(store: Arc<Store>) -> Self {
        JwksService { store }
    }
}

#[async_trait]
impl BackgroundService for JwksService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            for source in self.store.load().jwks.iter().filter(|s| s.due()) {
                let source = source.clone();
                // Each fetch runs on its own; a slow identity provider delays no other.
                tokio::spawn(async move { source.fetch_unless_recent(Duration::ZERO).await });
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
