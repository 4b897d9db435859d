//! Active health checks (Pingora's HTTP health check per target) and the background
//! service that runs them for the live generation's upstreams, each at its interval.

use super::tls::Tls;
use crate::config::policy::UpstreamDef;
use crate::runtime::Store;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::health_check::HttpHealthCheck;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The health check of an upstream with `health_check`: a GET of `path` that must answer
/// 200; `healthy` successes in a row make a target healthy again, `unhealthy` failures in
/// a row take it out of rotation.
pub(super) fn check(def: &UpstreamDef, tls: Option<&Tls>) -> Option<Box<HttpHealthCheck>> {
    let h = def.health_check.as_ref()?;
    let host = tls.map_or_else(|| "localhost".to_string(), |t| t.sni.clone());
    let mut hc = HttpHealthCheck::new(&host, tls.is_some());
    hc.consecutive_success = h.healthy.unwrap_or(2).max(1) as usize;
    hc.consecutive_failure = h.unhealthy.unwrap_or(3).max(1) as usize;
    let path = if h.path.starts_with('/') {
        h.path.clone()
    } else {
        format!("/{}", h.path)
    };
    if let Ok(uri) = path.parse::<http::Uri>() {
        hc.req.set_uri(uri);
    }
    let o = &mut hc.peer_template.options;
    o.connection_timeout = Some(def.timeouts.connect.0);
    o.read_timeout = Some(
        def.timeouts
            .read
            .0
            .min(h.interval.0.max(Duration::from_millis(100))),
    );
    if let Some(t) = tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        o.ca = t.ca.as_ref().map(|c| c.1.clone());
    }
    Some(Box::new(hc))
}

/// When an upstream's checks are due.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    /// Milliseconds since `epoch` of the last run; `u64::MAX`: never.
    last: AtomicU64,
    epoch: Instant,
}

impl Schedule {
    pub fn new(interval: Duration) -> Schedule {
        Schedule {
            interval: interval.max(Duration::from_millis(100)),
            last: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// Whether a run is due; if so, it counts as started now.
    pub(super) fn take_due(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last.load(Ordering::Acquire);
        let due = last == u64::MAX || now.saturating_sub(last) >= self.interval.as_millis() as u64;
        due && self
            .last
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

pub struct HealthService {
    store: Arc<Store>,
}

impl HealthService {
    pub fn new(store: Arc<Store>) -> Self {
        HealthService { store }
    }
}

const TICK: Duration = Duration::from_millis(100);

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.store.load();
            for up in snapshot.upstreams.values() {
                if up.health.as_ref().is_some_and(Schedule::take_due) {
                    let up = up.clone();
                    // Each upstream on its own: a slow one delays no other.
                    tokio::spawn(async move { up.check_health().await });
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
