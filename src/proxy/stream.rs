//! Streams: WebSocket upgrades and server-sent events. Both pass routing, authentication
//! and rate limits as a request; then the upstream's `timeouts.read` would cut a stream
//! that is quiet for a while, so a stream request reads under the route's
//! `timeouts.idle` instead (default 5 min). An open stream is counted in
//! `gateway_open_streams{route}` until it ends, and its end in
//! `gateway_streams_closed_total{route, reason}` and `gateway_stream_duration_seconds`;
//! the bytes it carries in `gateway_stream_bytes_total{route, direction}` as they pass.
//! A stream keeps the policy generation it started under: a reload never closes it.
//! Once upgraded, the frames a client sends are stream bytes, not a request body: the
//! route's `max_body` no longer applies to them.

use super::ctx::Ctx;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use prometheus::IntCounter;
use std::time::Instant;

/// A WebSocket (any `Upgrade`) or an event stream (`Accept: text/event-stream`).
pub fn requested(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::UPGRADE)
        || req
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| contains_event_stream(v.as_bytes()))
}

fn contains_event_stream(v: &[u8]) -> bool {
    v.windows(17)
        .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
}

/// Whether an answer opens a stream: 101, or an event stream.
pub fn answered(resp: &ResponseHeader) -> bool {
    resp.status == http::StatusCode::SWITCHING_PROTOCOLS
        || resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| contains_event_stream(v.as_bytes()))
}

/// A stream request reads and writes under the route's idle timeout.
pub fn peer_options(peer: &mut HttpPeer, ctx: &Ctx) {
    if let Some(route) = ctx.route() {
        peer.options.read_timeout = Some(route.stream_idle);
        peer.options.write_timeout = Some(route.stream_idle);
    }
}

/// An open stream: counted while it lives.
pub struct Open {
    route: std::sync::Arc<str>,
    started: Instant,
    /// Bytes from the client (frames after the upgrade) and to it, so far.
    from_client: u64,
    to_client: u64,
    // Resolved once: a stream's pieces are counted without a label lookup each.
    from_client_total: IntCounter,
    to_client_total: IntCounter,
}

impl Open {
    fn new(route: std::sync::Arc<str>) -> Open {
        crate::metrics::OPEN_STREAMS
            .with_label_values(&[&route])
            .inc();
        let bytes =
            |direction| crate::metrics::STREAM_BYTES.with_label_values(&[&*route, direction]);
        Open {
            from_client_total: bytes("from_client"),
            to_client_total: bytes("to_client"),
            route,
            started: Instant::now(),
            from_client: 0,
            to_client: 0,
        }
    }

    /// A piece the client sent through the stream.
    pub fn from_client(&mut self, n: usize) {
        self.from_client += n as u64;
        self.from_client_total.inc_by(n as u64);
    }

    /// A piece the upstream sent through the stream.
    pub fn to_client(&mut self, n: usize) {
        self.to_client += n as u64;
        self.to_client_total.inc_by(n as u64);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::metrics::OPEN_STREAMS
            .with_label_values(&[&self.route])
            .dec();
    }
}

/// `response_filter`: the answer opened a stream.
#[inline(never)]
pub fn opened(ctx: &mut Ctx) {
    if let Some(route) = ctx.route() {
        ctx.stream = Some(Open::new(route.name.clone()));
    }
}

/// Why a stream ended, from the error that ended it (none: one side closed it).
fn reason(e: Option<&Error>) -> &'static str {
    match e {
        None => "closed",
        Some(e)
            if matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) =>
        {
            "idle"
        }
        Some(e) if matches!(e.esource(), ErrorSource::Downstream) => "client",
        Some(e) if matches!(e.esource(), ErrorSource::Upstream) => "upstream",
        Some(_) => "error",
    }
}

/// How a stream ended, for the access log and the request's span.
pub struct Closed {
    pub reason: &'static str,
    pub from_client: u64,
    pub to_client: u64,
}

/// `logging`: the stream is over; its duration and how it ended are counted.
#[inline(never)]
pub fn closed(ctx: &mut Ctx, e: Option<&Error>) -> Option<Closed> {
    // Taken, so that the open-streams gauge falls before the close is counted: a scrape
    // never sees a stream both closed and still open.
    let open = ctx.stream.take()?;
    let (route, started) = (open.route.clone(), open.started);
    let (from_client, to_client) = (open.from_client, open.to_client);
    drop(open);
    let why = reason(e);
    crate::metrics::STREAM_DURATION
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    crate::metrics::STREAMS_CLOSED
        .with_label_values(&[&route, why])
        .inc();
    Some(Closed {
        reason: why,
        from_client,
        to_client,
    })
}
