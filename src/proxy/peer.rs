//! The upstream side of a proxied request: choosing each try's target, turning what
//! Pingora reports into the try state machine's inputs ([`super::attempt`]), and the
//! upstream metrics and spans of each try.

use super::attempt::{End, Facts, Next};
use super::ctx::Ctx;
use crate::error::GatewayError;
use crate::metrics;
use crate::upstream::retry::idempotent;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::Session;

/// After the stages let the request through: a body up to 64 KiB is kept so that a retry
/// can send it again.
pub fn prepare(session: &mut Session, ctx: &mut Ctx) {
    if let Some(route) = ctx.route() {
        let (split, mirror) = (
            route.traffic.split.is_some(),
            route.traffic.mirror.is_some(),
        );
        if split {
            super::traffic::choose(session.req_header(), ctx);
        }
        if mirror {
            super::traffic::mirror(session, ctx);
        }
    }
    let retries = ctx.upstream().is_some_and(|u| u.retry.is_some());
    if retries {
        session.as_mut().enable_retry_buffering();
    }
}

/// Chooses the target of the next try. A retry first waits its backoff; a replaced stale
/// connection is not a new try and does not wait.
pub async fn select(session: &Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>, GatewayError> {
    let upstream = ctx.upstream().cloned().ok_or(GatewayError::NoRoute)?;
    let new_try = !ctx.tries.replacing();
    if new_try && ctx.tries.count == 0 {
        super::traffic::count_upstream_request(ctx);
    }
    if let (true, Some(policy)) = (new_try, &upstream.retry) {
        match ctx.tries.count {
            0 => policy.budget.deposit(),
            n => tokio::time::sleep(policy.delay(n + 1)).await,
        }
    }
    let key = match upstream.hashes() {
        true => super::client::hash_key(session.req_header(), ctx, &upstream.hash_key),
        false => Vec::new(),
    };
    // Open breakers and unhealthy targets are skipped; with none left the answer is an
    // immediate 503.
    let backend = upstream
        .select_for(&key, &ctx.tries.tried)
        .ok_or(GatewayError::UpstreamUnavailable)?;
    ctx.tries.started(backend.addr.clone(), new_try);
    if new_try && ctx.tries.count > 1 {
        metrics::UPSTREAM_RETRIES
            .with_label_values(&[&upstream.name])
            .inc();
    }
    if let Some(cx) = &ctx.trace.request {
        let attrs = vec![
            opentelemetry::KeyValue::new("gateway.upstream", upstream.name.to_string()),
            opentelemetry::KeyValue::new("server.address", backend.addr.to_string()),
            opentelemetry::KeyValue::new("gateway.try", i64::from(ctx.tries.count)),
        ];
        ctx.trace.attempt = crate::telemetry::child(cx, "gateway.upstream", attrs);
    }
    let mut peer = upstream.peer(&backend);
    let req = session.req_header();
    if super::stream::requested(req) {
        super::stream::peer_options(&mut peer, ctx);
    }
    if super::grpc::is_grpc(req) {
        // gRPC needs HTTP/2 (trailers): over TLS it is asked for by ALPN.
        if upstream.def.scheme == crate::config::policy::Scheme::Https {
            peer.options.set_http_version(2, 2);
        }
        if let Some(deadline) = super::grpc::timeout(req) {
            super::grpc::bound_peer(&mut peer, deadline);
        }
    }
    Ok(peer)
}

/// The current try ended: what follows. `Retry` and `Replace` mean Pingora tries again.
pub fn end(session: &Session, ctx: &mut Ctx, end: End) -> Next {
    let Some(upstream) = ctx.upstream().cloned() else {
        return Next::Stop;
    };
    let attempts = upstream.retry.as_ref().map_or(1, |p| p.attempts);
    let tries = ctx.tries.count;
    // Whether the request could be sent again matters only when another send is possible
    // at all: a stale connection, or tries left. The common answered request skips it.
    let req = session.req_header();
    let replayable = (end == End::Stale || tries < attempts)
        && session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
        && idempotent(&req.method, &req.headers);
    let facts = Facts {
        attempts,
        tries,
        replayable,
    };
    ctx.tries.end(&upstream, end, facts)
}

/// A try failed at the upstream: counted by kind (connect, timeout, reset).
pub fn count_failure(ctx: &Ctx, e: &pingora_error::Error) {
    if let Some(up) = ctx.upstream_name() {
        let (kind, _) = crate::upstream::client::FailureKind::of(e);
        metrics::UPSTREAM_ERRORS
            .with_label_values(&[up, kind.as_str()])
            .inc();
    }
}

/// The answer's header arrived: the try's duration, and a 5xx counted as an upstream error.
pub fn answered(ctx: &Ctx, status: u16) {
    let Some(upstream) = ctx.upstream() else {
        return;
    };
    if let Some(t) = ctx.tries.started {
        upstream.duration.observe(t.elapsed().as_secs_f64());
    }
    if status >= 500 {
        metrics::UPSTREAM_ERRORS
            .with_label_values(&[&upstream.name, "status"])
            .inc();
    }
}

/// The request is over: a try left without a verdict gives back what it held.
pub fn finish(ctx: &mut Ctx) {
    if let Some(upstream) = ctx.upstream().cloned() {
        ctx.tries.finish(&upstream);
    }
}

/// Ends the current upstream try's span, if one is open.
pub fn end_span(ctx: &mut Ctx, status: u16, error: Option<String>) {
    if let Some(cx) = ctx.trace.attempt.take() {
        crate::telemetry::end(&cx, status, error);
    }
}
