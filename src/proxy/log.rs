//! The end of every request: its metrics and one access-log line.

use super::ctx::Ctx;
use crate::metrics;
use pingora_proxy::Session;

pub fn finish(session: &Session, ctx: &Ctx, status: u16) {
    let route = ctx.route_name();
    let method = session.req_header().method.as_str();
    let elapsed = ctx.started.elapsed();
    let mut buf = itoa::Buffer::new();
    metrics::REQUESTS
        .with_label_values(&[route, method, buf.format(status)])
        .inc();
    metrics::REQUEST_DURATION
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "access",
        request_id = ctx.request_id(),
        route,
        method,
        path = session.req_header().uri.path(),
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = ctx.upstream_name().unwrap_or(""),
        upstream_target = %ctx.target.as_ref().map(ToString::to_string).unwrap_or_default(),
        bytes_sent = session.body_bytes_sent(),
        client_ip = ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
    );
}
