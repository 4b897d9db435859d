//! Tries of a proxied request: the wait before a retry, whether another try is allowed,
//! and each try's outcome for the target's circuit breaker.

use super::ctx::Ctx;
use crate::metrics;
use crate::upstream::retry::idempotent;
use pingora_proxy::Session;

/// Before try `ctx.tries + 1`: the first earns the upstream's retry budget a share; a
/// retry waits its backoff.
pub async fn before_try(ctx: &Ctx) {
    let Some(up) = ctx.route().and_then(|r| r.upstream.as_ref()) else {
        return;
    };
    let Some(policy) = &up.retry else { return };
    if ctx.tries == 0 {
        policy.budget.deposit();
    } else {
        tokio::time::sleep(policy.delay(ctx.tries + 1)).await;
    }
}

/// A retry found its target: count it.
pub fn count_retry(ctx: &Ctx) {
    if let Some(up) = ctx.route().and_then(|r| r.upstream.as_ref()) {
        if ctx.tries > 1 {
            metrics::UPSTREAM_RETRIES
                .with_label_values(&[&up.name])
                .inc();
        }
    }
}

/// Whether the request may be tried again: the upstream retries, nothing of the answer
/// went to the client, the body can be sent again, the request is idempotent (or carries
/// an `Idempotency-Key`), tries are left and the retry budget has one.
pub fn may_retry(session: &Session, ctx: &Ctx) -> bool {
    let Some(up) = ctx.route().and_then(|r| r.upstream.as_ref()) else {
        return false;
    };
    let Some(policy) = &up.retry else {
        return false;
    };
    let req = session.req_header();
    session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
        && idempotent(&req.method, &req.headers)
        && up.available()
        && policy.another(ctx.tries)
}

/// A pooled connection the upstream had closed failed before any answer: the request is
/// sent again on a new connection (as Pingora does by default), without counting a try,
/// a retry or a breaker failure. Only when it can be sent again safely.
pub fn stale_connection(session: &Session, upstream_reused: bool, ctx: &Ctx) -> bool {
    let req = session.req_header();
    upstream_reused
        && ctx.upstream_status.is_none()
        && session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
        && idempotent(&req.method, &req.headers)
}

/// Feeds the outcome of the current try to its target's breaker.
pub fn record(ctx: &Ctx, ok: bool) {
    if let (Some(up), Some(target)) = (
        ctx.route().and_then(|r| r.upstream.as_ref()),
        ctx.target.as_ref(),
    ) {
        up.record(target, ok);
    }
}
