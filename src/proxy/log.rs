//! The end of every request: its metrics and one access-log line.

use super::ctx::Ctx;
use super::stream::Closed;
use pingora_proxy::Session;

/// One access-log line: the common fields, then any the caller adds.
macro_rules! access {
    ($session:expr, $ctx:expr, $status:expr, $elapsed:expr, $($extra:tt)*) => {
        tracing::info!(
            target: "access",
            request_id = $ctx.request_id(),
            route = $ctx.route_name(),
            // The method as sent (bounded by the head limit); only metric labels must not
            // carry client-chosen text.
            method = $session.req_header().method.as_str(),
            path = $session.req_header().uri.path(),
            status = $status,
            duration_ms = $elapsed.as_secs_f64() * 1000.0,
            upstream = $ctx.upstream_name().unwrap_or(""),
            upstream_target = %$ctx.tries.target.as_ref().map(ToString::to_string).unwrap_or_default(),
            client_ip = $ctx.client.ip.map(|i| i.to_string()).unwrap_or_default(),
            $($extra)*
        )
    };
}

pub fn finish(session: &Session, ctx: &Ctx, status: u16, stream: Option<&Closed>) {
    let elapsed = ctx.ids.started.elapsed();
    let handles = ctx.route().map_or(&ctx.snapshot.unmatched, |r| &r.metrics);
    handles.record(&session.req_header().method, status, elapsed.as_secs_f64());
    let received = ctx
        .body
        .held
        .as_ref()
        .map_or(ctx.body.read, |b| b.len() as u64);
    if crate::logging::access::fast() {
        fast_line(session, ctx, status, elapsed, received, stream);
        return;
    }
    match stream {
        None => access!(
            session,
            ctx,
            status,
            elapsed,
            bytes_sent = session.body_bytes_sent(),
            bytes_received = received,
        ),
        // A stream's line is written when it ends: what it carried each way, and why.
        Some(s) => access!(
            session,
            ctx,
            status,
            elapsed,
            bytes_sent = s.to_client,
            bytes_received = s.from_client,
            stream_end = s.reason,
        ),
    }
}

/// The same line as [`access!`] writes, without tracing's formatter (JSON only).
fn fast_line(
    session: &Session,
    ctx: &Ctx,
    status: u16,
    elapsed: std::time::Duration,
    received: u64,
    stream: Option<&Closed>,
) {
    let req = session.req_header();
    crate::logging::access::write(|l| {
        l.str("request_id", ctx.request_id())
            .str("route", ctx.route_name())
            .str("method", req.method.as_str())
            .str("path", req.uri.path())
            .uint("status", u64::from(status))
            .millis("duration_ms", elapsed)
            .str("upstream", ctx.upstream_name().unwrap_or(""))
            .plain("upstream_target", |out| match &ctx.tries.target {
                // An address without `core::fmt` (as the client address).
                Some(crate::upstream::Addr::Inet(a)) => {
                    let v6 = a.is_ipv6();
                    if v6 {
                        out.push('[');
                    }
                    crate::proxy::forward::push_ip(out, a.ip());
                    if v6 {
                        out.push(']');
                    }
                    out.push(':');
                    out.push_str(itoa::Buffer::new().format(a.port()));
                }
                Some(other) => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "{other}");
                }
                None => {}
            })
            .plain("client_ip", |out| {
                if let Some(ip) = ctx.client.ip {
                    crate::proxy::forward::push_ip(out, ip);
                }
            });
        match stream {
            None => {
                l.uint("bytes_sent", session.body_bytes_sent() as u64)
                    .uint("bytes_received", received);
            }
            Some(s) => {
                l.uint("bytes_sent", s.to_client)
                    .uint("bytes_received", s.from_client)
                    .str("stream_end", s.reason);
            }
        }
    });
}
