//! Live figures per route for the console: requests per second, the share of 5xx answers,
//! and p50/p99 latency over the last [`WINDOW`], kept in process. Every [`TICK`] a
//! sampler reads the gateway's own request counters and duration histograms (the ones
//! `/metrics` exports) and keeps the last few readings; a figure is the difference between
//! the newest and the oldest. The request path does nothing more than it did before.

use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::proto::MetricFamily;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TICK: Duration = Duration::from_secs(2);
pub const WINDOW: Duration = Duration::from_secs(10);
/// Readings kept: enough to span the window.
const KEPT: usize = (WINDOW.as_secs() / TICK.as_secs()) as usize + 1;

/// One route's totals at one reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    /// Cumulative histogram buckets: (upper bound in seconds, count).
    pub buckets: Vec<(f64, u64)>,
}

struct Reading {
    at: Instant,
    routes: HashMap<String, Counts>,
}

/// What the console shows for a route.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Figures {
    pub requests_per_second: f64,
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Default)]
pub struct Live {
    readings: Mutex<VecDeque<Reading>>,
}

impl Live {
    /// Takes a reading now.
    pub fn sample(&self) {
        let routes = read(&prometheus::gather());
        self.push(Instant::now(), routes);
    }

    fn push(&self, at: Instant, routes: HashMap<String, Counts>) {
        let Ok(mut r) = self.readings.lock() else {
            return;
        };
        r.push_back(Reading { at, routes });
        while r.len() > KEPT {
            r.pop_front();
        }
    }

    /// Each route's figures over the readings kept (none until two readings exist).
    pub fn figures(&self) -> HashMap<String, Figures> {
        let Ok(r) = self.readings.lock() else {
            return HashMap::new();
        };
        let (Some(old), Some(new)) = (r.front(), r.back()) else {
            return HashMap::new();
        };
        let secs = new.at.duration_since(old.at).as_secs_f64();
        if secs <= 0.0 {
            return HashMap::new();
        }
        let empty = Counts::default();
        new.routes
            .iter()
            .map(|(route, now)| {
                let then = old.routes.get(route).unwrap_or(&empty);
                (route.clone(), between(then, now, secs))
            })
            .collect()
    }
}

/// The figures for what happened between two readings `secs` apart.
pub fn between(then: &Counts, now: &Counts, secs: f64) -> Figures {
    let requests = now.requests.saturating_sub(then.requests);
    let errors = now.errors.saturating_sub(then.errors);
    let buckets: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .map(|&(le, n)| {
            let before = then
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0, |(_, c)| *c);
            (le, n.saturating_sub(before))
        })
        .collect();
    let ms = |q| quantile(q, &buckets).map(|s| s * 1000.0);
    Figures {
        requests_per_second: requests as f64 / secs,
        error_ratio: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    }
}

/// The q-quantile of cumulative buckets, interpolated within the bucket it falls in (as
/// Prometheus's `histogram_quantile`); a quantile in the last, unbounded bucket is that
/// bucket's lower bound.
pub fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, count) in buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = (count - lower.1) as f64;
            let into = if in_bucket > 0.0 {
                (rank - lower.1 as f64) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * into);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// Per-route totals from the gathered metric families.
fn read(families: &[MetricFamily]) -> HashMap<String, Counts> {
    let mut routes: HashMap<String, Counts> = HashMap::new();
    for f in families {
        match f.name() {
            "gateway_requests_total" => {
                for m in f.get_metric() {
                    let Some(route) = label(m, "route") else {
                        continue;
                    };
                    let n = m.get_counter().value() as u64;
                    let c = routes.entry(route.to_string()).or_default();
                    c.requests += n;
                    if label(m, "status").is_some_and(|s| s.starts_with('5')) {
                        c.errors += n;
                    }
                }
            }
            "gateway_request_duration_seconds" => {
                for m in f.get_metric() {
                    let Some(route) = label(m, "route") else {
                        continue;
                    };
                    let h = m.get_histogram();
                    let mut buckets: Vec<(f64, u64)> = h
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                    buckets.push((f64::INFINITY, h.get_sample_count()));
                    routes.entry(route.to_string()).or_default().buckets = buckets;
                }
            }
            _ => {}
        }
    }
    routes
}

/// Takes a reading every [`TICK`].
pub struct Sampler(pub Arc<Live>);

#[async_trait::async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.0.sample();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
