//! The end of every request: its metrics and one access-log line.

use super::ctx::Ctx;
use pingora_proxy::Session;

pub fn finish(session: &Session, ctx: &Ctx, status: u16) {
    let route = ctx.route_name();
    let method = &session.req_header().method;
    let elapsed = ctx.ids.started.elapsed();
    let handles = ctx.route().map_or(&ctx.snapshot.unmatched, |r| &r.metrics);
    handles.record(method, status, elapsed.as_secs_f64());
    // The log line keeps the method as sent (bounded by the head limit); only metric
    // labels must not carry client-chosen text.
    let method = method.as_str();
    tracing::info!(
        target: "access",
        request_id = ctx.request_id(),
        route,
        method,
        path = session.req_header().uri.path(),
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = ctx.upstream_name().unwrap_or(""),
        upstream_target = %ctx.tries.target.as_ref().map(ToString::to_string).unwrap_or_default(),
        bytes_sent = session.body_bytes_sent(),
        client_ip = ctx.client.ip.map(|i| i.to_string()).unwrap_or_default(),
    );
}
