//! The reload service: watches the configuration's directories (debounced) and listens for
//! SIGHUP, then rebuilds and swaps the policy set through [`Store::reload`].
//!
//! Directories, not files, are watched: editors that save by renaming, and Kubernetes
//! ConfigMap updates (a new `..data` symlink renamed into place), replace files rather than
//! write them, and a watch on the old file would see nothing. The watch is re-armed after
//! every reload attempt, so a directory that was itself replaced is watched again.

use super::store::{Reloaded, Store};
use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Quiet time after the last file event before reloading: editors and `kubectl` write
/// several events per change.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Longest a reload waits for changes to settle.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

pub struct ReloadService {
    store: Arc<Store>,
    /// Set once the watcher and the SIGHUP handler are in place.
    armed: Arc<AtomicBool>,
}

impl ReloadService {
    pub fn new(store: Arc<Store>, armed: Arc<AtomicBool>) -> Self {
        ReloadService { store, armed }
    }

    /// A watcher on every configuration directory that pings `tx` when an entry that
    /// matters changes.
    fn watch(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        let plan = self.store.watch_plan();
        let dirs = plan.dirs();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(ev) if !ev.paths.is_empty() && !ev.paths.iter().any(|p| plan.relevant(p)) => {}
            // A full channel already holds a pending ping: dropping this one is fine.
            _ => {
                let _ = tx.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch configuration files; use SIGHUP or POST /reload");
                return None;
            }
        };
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        Some(watcher)
    }

    async fn reload(&self, force: bool) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.reload(force)).await {
            Ok(Ok(Reloaded::Swapped(_) | Reloaded::Unchanged)) | Ok(Err(_)) => {}
            Err(e) => tracing::error!(error = %e, "reload task failed"),
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP");
                None
            }
        };
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // Held only to keep the watch alive (its drop ends it).
        let mut _watcher = self.watch(tx.clone());
        self.armed.store(true, Ordering::Release);
        loop {
            let force = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    // Wait for the writes to settle, but not forever: files that keep
                    // changing still reload within MAX_DEBOUNCE.
                    let first = tokio::time::Instant::now();
                    while first.elapsed() < MAX_DEBOUNCE {
                        match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                            Ok(Some(())) => continue,
                            _ => break,
                        }
                    }
                    false
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP received: reloading");
                    true
                }
            };
            self.reload(force).await;
            // Re-arm: directories may have been replaced, or referenced files may differ.
            // The new watch is in place before the old one is dropped (on assignment), so a
            // change made just after a reload is not lost between the two.
            _watcher = self.watch(tx.clone());
        }
    }
}
