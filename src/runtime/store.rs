//! The live policy set: one `ArcSwap<Snapshot>`, replaced whole on a successful reload.

use super::compile::load_and_compile;
use super::snapshot::Snapshot;
use crate::config::{GatewayConfig, Problems};
use crate::metrics;
use arc_swap::ArcSwap;
use serde_json::json;
use std::sync::{Arc, Mutex};

pub struct Store {
    current: ArcSwap<Snapshot>,
    gateway: GatewayConfig,
    last_error: Mutex<Option<String>>,
    /// Serializes reloads so two triggers at once cannot interleave.
    reloading: Mutex<()>,
}

impl Store {
    /// Loads and compiles the policy set for the first time.
    pub fn open(gateway: GatewayConfig) -> Result<Store, Problems> {
        let snapshot = load_and_compile(&gateway, None, 1)?;
        metrics::CONFIG_GENERATION.set(1);
        Ok(Store {
            current: ArcSwap::from_pointee(snapshot),
            gateway,
            last_error: Mutex::new(None),
            reloading: Mutex::new(()),
        })
    }

    /// The live snapshot; a request takes it once and keeps it to the end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn gateway(&self) -> &GatewayConfig {
        &self.gateway
    }

    /// Re-reads and compiles every policy file, then swaps the new set in at once. On any
    /// problem the live set stays. Blocking (file reads, name resolution): call it off the
    /// request path, for example in `spawn_blocking`.
    pub fn reload(&self) -> Result<Arc<Snapshot>, Problems> {
        let _guard = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let prev = self.current.load_full();
        match load_and_compile(&self.gateway, Some(&prev), prev.generation + 1) {
            Ok(next) => {
                let next = Arc::new(next);
                self.current.store(next.clone());
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                metrics::CONFIG_RELOADS
                    .with_label_values(&["success"])
                    .inc();
                metrics::CONFIG_GENERATION.set(next.generation as i64);
                tracing::info!(
                    generation = next.generation,
                    routes = next.routes.len(),
                    "policy set reloaded"
                );
                Ok(next)
            }
            Err(problems) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(problems.to_string());
                metrics::CONFIG_RELOADS
                    .with_label_values(&["failure"])
                    .inc();
                for p in &problems.0 {
                    tracing::error!(problem = %p, "reload failed; the previous policy set stays in force");
                }
                Err(problems)
            }
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The admin `/config` document.
    pub fn describe(&self) -> serde_json::Value {
        let s = self.load();
        json!({
            "generation": s.generation,
            "hash": s.hash,
            "loaded_at": humantime::format_rfc3339_seconds(s.loaded_at).to_string(),
            "routes": s.route_names(),
            "last_error": self.last_error(),
        })
    }
}
