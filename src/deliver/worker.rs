//! The delivery workers of this replica: each takes the next due message from the queue,
//! makes one attempt, and records the outcome in the store. 2xx: delivered. 408, 429, 5xx,
//! a timeout or a connection failure: another attempt after the backoff (at least the
//! upstream's `Retry-After`), unless this was the last. Any other answer: dead. Every
//! attempt carries `Idempotency-Key` (the delivery id) and `X-Delivery-Attempt`, and with
//! `sign` the Standard Webhooks headers.

use super::queue::{Lease, Queue};
use super::{now_ms, Deliver};
use crate::metrics;
use crate::runtime::{Snapshot, Store};
use crate::upstream::client::{self, CallError};
use crate::webhook::verify::Scheme;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use std::sync::Arc;
use std::time::Duration;

/// Workers per replica.
const WORKERS: usize = 4;
/// How long one `next` waits for a message before looking at the configuration again.
const WAIT: Duration = Duration::from_millis(500);
/// How much of an upstream's answer is read (and then dropped).
const MAX_ANSWER: usize = 64 * 1024;
/// How often the queue gauges are refreshed.
const GAUGES: Duration = Duration::from_secs(2);
/// Every this many gauge refreshes (about a minute), the names of workers idle longer than
/// [`GONE`] are forgotten: every restart of every replica adds four, and a Redis consumer
/// group would keep them all.
const PRUNE_EVERY: u32 = 30;
/// A live worker asks the queue at least every `WAIT` (or holds a lease, and is kept).
const GONE: Duration = Duration::from_secs(600);

pub struct Workers {
    store: Arc<Store>,
}

impl Workers {
    pub fn new(store: Arc<Store>) -> Workers {
        Workers { store }
    }
}

#[async_trait]
impl BackgroundService for Workers {
    async fn start(&self, shutdown: ShutdownWatch) {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into());
        let me = format!("{host}-{}", std::process::id());
        let mut tasks = Vec::new();
        // The workers take turns asking the queue (the lock is fair), and attempt at the
        // same time: while nothing is due, one of them polls instead of all four.
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        for i in 0..WORKERS {
            let store = self.store.clone();
            let name = format!("{me}-{i}");
            let mut stop = shutdown.clone();
            let turn = turn.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = step(&store, &name, &turn) => {}
                    }
                }
            }));
        }
        let mut stop = shutdown.clone();
        let mut round: u32 = 0;
        loop {
            gauges(&self.store.load()).await;
            if round.is_multiple_of(PRUNE_EVERY) {
                prune(&self.store.load()).await;
            }
            round = round.wrapping_add(1);
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(GAUGES) => {}
            }
        }
        for t in tasks {
            t.abort();
        }
    }
}

/// An in-progress attempt may be taken over after twice the longest attempt timeout.
fn claim_after(snapshot: &Snapshot) -> Option<Duration> {
    snapshot
        .routes
        .iter()
        .filter_map(|r| r.deliver.as_ref().map(|d| d.timeout * 2))
        .max()
}

async fn step(store: &Store, worker: &str, turn: &tokio::sync::Mutex<()>) {
    let snapshot = store.load();
    let Some(claim) = claim_after(&snapshot) else {
        // No route delivers: nothing to take (queued messages wait for one that does).
        tokio::time::sleep(WAIT).await;
        return;
    };
    let queue = snapshot.state.queue.clone();
    let next = {
        let _turn = turn.lock().await;
        queue.next(worker, WAIT, claim).await
    };
    match next {
        Ok(Some(lease)) => attempt(&snapshot, &*queue, lease).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the delivery queue cannot be read");
            tokio::time::sleep(WAIT).await;
        }
    }
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    /// Worth another attempt (with the upstream's `Retry-After`, if it said one).
    Retry(String, Option<Duration>),
    Permanent(String),
}

fn request(d: &Deliver, lease: &Lease) -> Result<RequestHeader, String> {
    let m = &lease.message;
    let method = http::Method::from_bytes(m.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = RequestHeader::build(method, m.path.as_bytes(), Some(m.headers.len() + 6))
        .map_err(|e| e.to_string())?;
    for (name, value) in &m.headers {
        let _ = req.append_header(name.clone(), value.as_str());
    }
    let _ = req.insert_header(http::header::CONTENT_LENGTH, m.body.len());
    let _ = req.insert_header("Idempotency-Key", m.id.as_str());
    let _ = req.insert_header("X-Delivery-Attempt", lease.attempt);
    if let Some(secret) = &d.sign {
        let ts = (now_ms() / 1000) as i64;
        let headers = crate::webhook::verify::sign(&Scheme::Standard, secret, &m.id, ts, &m.body)?;
        for (name, value) in headers {
            let _ = req.insert_header(name, value);
        }
    }
    Ok(req)
}

/// The attempt's span: a child of the accepting request's (its `traceparent` travels with
/// the message), so a trace shows the request and every attempt to deliver it.
fn span(lease: &Lease) -> Option<opentelemetry::Context> {
    if !crate::telemetry::enabled() {
        return None;
    }
    let m = &lease.message;
    let parent = m
        .headers
        .iter()
        .find(|(n, _)| n == "traceparent")
        .map_or("", |(_, v)| v.as_str());
    let attrs = vec![
        opentelemetry::KeyValue::new("gateway.route", m.route.clone()),
        opentelemetry::KeyValue::new("gateway.delivery.id", m.id.clone()),
        opentelemetry::KeyValue::new("gateway.delivery.attempt", i64::from(lease.attempt)),
    ];
    crate::telemetry::child(
        &crate::telemetry::remote_parent(parent),
        "gateway.delivery",
        attrs,
    )
}

async fn try_once(d: &Deliver, lease: &Lease) -> Outcome {
    let span = span(lease);
    let outcome = attempt_status(d, lease, span.as_ref()).await;
    if let Some(cx) = &span {
        let (status, error) = match &outcome.0 {
            Outcome::Delivered => (outcome.1, None),
            Outcome::Retry(e, _) | Outcome::Permanent(e) => (outcome.1, Some(e.clone())),
        };
        crate::telemetry::end(cx, status, error);
    }
    outcome.0
}

/// One attempt, and the status the upstream answered (0: none).
async fn attempt_status(
    d: &Deliver,
    lease: &Lease,
    span: Option<&opentelemetry::Context>,
) -> (Outcome, u16) {
    let mut req = match request(d, lease) {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::Permanent(format!("the request cannot be built: {e}")),
                0,
            )
        }
    };
    if let Some(cx) = span {
        let _ = req.insert_header("traceparent", crate::telemetry::traceparent(cx));
    }
    let body = Some(lease.message.body.clone());
    let sent = client::send(
        &d.upstream,
        lease.message.id.as_bytes(),
        &req,
        body,
        MAX_ANSWER,
    );
    let answer = match tokio::time::timeout(d.timeout, sent).await {
        Err(_) => {
            return (
                Outcome::Retry(format!("no answer within {:?}", d.timeout), None),
                0,
            )
        }
        Ok(Err(e)) => {
            let why = match e {
                CallError::Unavailable => "no target available",
                CallError::Connect => "connection failed",
                CallError::Timeout => "timed out",
                CallError::Reset => "connection reset",
                CallError::TooLarge => "answer too large",
            };
            return (Outcome::Retry(why.to_string(), None), 0);
        }
        Ok(Ok(a)) => a,
    };
    let status = answer.header.status.as_u16();
    let outcome = match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => {
            let retry_after = answer
                .header
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Outcome::Retry(format!("the upstream answered {status}"), retry_after)
        }
        _ => Outcome::Permanent(format!("the upstream answered {status}")),
    };
    (outcome, status)
}

async fn attempt(snapshot: &Snapshot, queue: &dyn Queue, lease: Lease) {
    let route = &lease.message.route;
    let Some(d) = snapshot
        .routes
        .iter()
        .find(|r| &*r.name == route)
        .and_then(|r| r.deliver.as_ref())
    else {
        let why = "the route is gone from the configuration, or no longer delivers";
        count(route, "dead");
        log_store(queue.dead(&lease, why).await);
        return;
    };
    let outcome = try_once(d, &lease).await;
    let recorded = match outcome {
        Outcome::Delivered => {
            count(route, "delivered");
            queue.delivered(&lease).await
        }
        Outcome::Retry(why, retry_after) if lease.attempt < d.attempts => {
            count(route, "retried");
            let wait = d.backoff(lease.attempt, retry_after);
            let at = now_ms() + wait.as_millis() as u64;
            queue.retry_later(&lease, at, &why).await
        }
        Outcome::Retry(why, _) => {
            count(route, "dead");
            let why = format!("gave up after {} attempts: {why}", lease.attempt);
            queue.dead(&lease, &why).await
        }
        Outcome::Permanent(why) => {
            count(route, "dead");
            queue.dead(&lease, &why).await
        }
    };
    log_store(recorded);
}

fn count(route: &str, outcome: &str) {
    metrics::DELIVERIES
        .with_label_values(&[route, outcome])
        .inc();
}

/// An outcome the store did not take is taken over by another worker after the claim time
/// (delivered again at worst: at least once).
fn log_store(r: Result<(), super::queue::QueueError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "a delivery outcome could not be recorded");
    }
}

/// Forgets the names of workers gone (of this replica's earlier runs, or of others).
async fn prune(snapshot: &Snapshot) {
    if claim_after(snapshot).is_none() {
        return;
    }
    match snapshot.state.queue.prune_workers(GONE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "forgot the names of delivery workers gone"),
        Err(e) => tracing::warn!(error = %e, "delivery workers gone could not be forgotten"),
    }
}

async fn gauges(snapshot: &Snapshot) {
    for r in snapshot.routes.iter().filter(|r| r.deliver.is_some()) {
        if let Ok((queued, dead)) = snapshot.state.queue.depth(&r.name).await {
            metrics::DELIVERY_QUEUE_DEPTH
                .with_label_values(&[&r.name])
                .set(queued as i64);
            metrics::DELIVERY_DEAD
                .with_label_values(&[&r.name])
                .set(dead as i64);
        }
    }
}
