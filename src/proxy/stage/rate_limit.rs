//! Step 5 of a request: the rate limits of the consumer's plan and of the route, decided
//! together. The decision's headers land in the context for every later response.

use super::Flow;
use crate::config::gateway::OnStoreError;
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::ratelimit::quota::Quota;
use crate::ratelimit::Limit;
use crate::runtime::Route;
use pingora_http::{KnownHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::atomic::{AtomicU64, Ordering};

/// Store failures are logged at most once a second: a dead Redis must not flood the log.
fn log_store_error(err: &crate::ratelimit::StoreError) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(error = %err, "rate-limit store unavailable");
    }
}

pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    // A cache's background refresh repeats a request that was already counted.
    if session.subrequest_ctx.is_some() {
        return Ok(Flow::Next);
    }
    let req = session.req_header();
    let snapshot = ctx.snapshot.clone();
    let plan = ctx
        .consumer()
        .and_then(|c| snapshot.rate.consumer_plans.get(c));
    let sets = [plan, route.rate_limit.as_ref()];
    if sets.iter().all(Option::is_none) {
        return Ok(Flow::Next);
    }
    let keys: Vec<(&crate::ratelimit::LimitSet, String)> = sets
        .iter()
        .flatten()
        .map(|s| (&***s, crate::proxy::client::rate_key(&s.key, req, ctx)))
        .collect();
    let items: Vec<(&Limit, &str)> = keys
        .iter()
        .flat_map(|(s, key)| s.limits.iter().map(move |l| (&**l, key.as_str())))
        .collect();
    let quotas: Vec<(&Quota, &str)> = keys
        .iter()
        .flat_map(|(s, key)| s.quotas.iter().map(move |q| (&**q, key.as_str())))
        .collect();
    let backend = &snapshot.rate.backend;
    match backend.check(&items, &quotas).await {
        Ok(outcome) => {
            ctx.rate = outcome.rate.map(|d| d.headers);
            ctx.quota = outcome.quota.map(|q| q.headers);
            if outcome.admitted() {
                return Ok(Flow::Next);
            }
            metrics::RATE_LIMITED
                .with_label_values(&[&route.name])
                .inc();
            // A used-up quota outlasts any rate limit: it is the answer the client needs.
            match (outcome.quota, outcome.rate) {
                (Some(q), _) if !q.admitted => Err(GatewayError::QuotaExceeded {
                    retry_after: q.retry_after,
                }),
                (_, Some(d)) => Err(GatewayError::RateLimited {
                    retry_after: d.retry_after,
                }),
                _ => Ok(Flow::Next),
            }
        }
        Err(e) => {
            metrics::RATE_LIMIT_STORE_ERRORS
                .with_label_values(&[e.kind()])
                .inc();
            log_store_error(&e);
            match backend.on_error() {
                OnStoreError::Allow => Ok(Flow::Next),
                OnStoreError::Deny => Err(GatewayError::RateLimitUnavailable),
            }
        }
    }
}

/// Adds the `RateLimit-*` and `X-Quota-*` headers of the request's decision, if one was
/// made.
pub fn add_headers(resp: &mut ResponseHeader, ctx: &Ctx) {
    if let Some(h) = ctx.rate {
        resp.reserve_headers(3);
        let _ = resp.insert_known(&LIMIT, h.limit.into());
        let _ = resp.insert_known(&REMAINING, h.remaining.into());
        let _ = resp.insert_known(&RESET, h.reset.into());
    }
    if let Some(q) = ctx.quota {
        resp.reserve_headers(3);
        let _ = resp.insert_known(&QUOTA_LIMIT, q.limit.into());
        let _ = resp.insert_known(&QUOTA_REMAINING, q.remaining.into());
        let _ = resp.insert_known(&QUOTA_RESET, q.reset.into());
    }
}

// Parsed once (a name given as text is parsed and allocated at every insert); written in
// lower case, as the contract shows them.
static LIMIT: KnownHeader = KnownHeader::from_static("ratelimit-limit", "ratelimit-limit");
static REMAINING: KnownHeader =
    KnownHeader::from_static("ratelimit-remaining", "ratelimit-remaining");
static RESET: KnownHeader = KnownHeader::from_static("ratelimit-reset", "ratelimit-reset");
static QUOTA_LIMIT: KnownHeader = KnownHeader::from_static("x-quota-limit", "x-quota-limit");
static QUOTA_REMAINING: KnownHeader =
    KnownHeader::from_static("x-quota-remaining", "x-quota-remaining");
static QUOTA_RESET: KnownHeader = KnownHeader::from_static("x-quota-reset", "x-quota-reset");
