//! gRPC requests (`Content-Type: application/grpc...`): the gateway's own refusals are
//! trailers-only gRPC answers (HTTP 200, `grpc-status`, `grpc-message`) that a gRPC client
//! reads, and `grpc-timeout` bounds the wait for the upstream.

use super::ctx::Ctx;
use crate::error::GatewayError;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::Duration;

pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A refusal as a trailers-only answer. Returns the status written (200).
pub async fn write_error(session: &mut Session, ctx: &Ctx, err: &GatewayError) -> u16 {
    let Ok(mut head) = ResponseHeader::build(http::StatusCode::OK, Some(5)) else {
        return 200;
    };
    let _ = head.insert_header(http::header::CONTENT_TYPE, "application/grpc");
    let _ = head.insert_header("grpc-status", err.grpc_status().to_string());
    // grpc-message is percent-encoded (gRPC over HTTP/2, "Responses").
    let message: String =
        percent_encoding::utf8_percent_encode(&err.to_string(), GRPC_MESSAGE).collect();
    if let Ok(v) = http::HeaderValue::from_str(&message) {
        let _ = head.insert_header("grpc-message", v);
    }
    let _ = head.insert_known(&crate::proxy::ids::REQUEST_ID_HEADER, ctx.ids.id.clone());
    super::stage::rate_limit::add_headers(&mut head, ctx);
    ctx.cors_headers(&mut head);
    if let Err(e) = session.write_response_header(Box::new(head), true).await {
        tracing::debug!(error = %e, "could not write a gRPC error answer");
    }
    200
}

/// Bytes kept as they are in grpc-message: printable ASCII but `%`.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(0x7f);

/// A gRPC-Web request (`application/grpc-web`, `+proto`; not the base64 `-text` form).
pub fn is_web(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"))
}

/// `early_request_filter`: a gRPC-Web request to a route with `grpc_web` is bridged to
/// gRPC by Pingora's module, which works on the request head before routing proper; so the
/// route is looked up here too (by host, path and method).
#[inline(never)]
pub fn enable_web(session: &mut Session, ctx: &Ctx) {
    let req = session.req_header();
    let Ok(segments) = crate::runtime::router::decode_segments(req.uri.path()) else {
        return;
    };
    let segs: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    let host = super::admit::route_host(req);
    let found = ctx.snapshot.router.find(&host, &segs, &req.method, req);
    let crate::runtime::router::Match::Found { route, .. } = found else {
        return;
    };
    if !ctx.snapshot.routes.get(route).is_some_and(|r| r.grpc_web) {
        return;
    }
    use pingora_core::modules::http::grpc_web::GrpcWebBridge;
    match session.downstream_modules_ctx.get_mut::<GrpcWebBridge>() {
        Some(bridge) => bridge.init(),
        None => {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "a route has grpc_web, but no route had it when the gateway started: restart to enable the gRPC-Web bridge"
                );
            }
        }
    }
}

/// `grpc-timeout` (`1H`, `5M`, `30S`, `100m`, `250u`, `1000n`): at most 8 digits and a unit.
pub fn timeout(req: &RequestHeader) -> Option<Duration> {
    let v = req.headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The client's deadline bounds each wait on the upstream (and the connect).
pub fn bound_peer(peer: &mut HttpPeer, deadline: Duration) {
    let o = &mut peer.options;
    let cap = |t: &mut Option<Duration>| *t = Some(t.map_or(deadline, |t| t.min(deadline)));
    cap(&mut o.read_timeout);
    cap(&mut o.write_timeout);
    cap(&mut o.connection_timeout);
    cap(&mut o.total_connection_timeout);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
        r.insert_header("grpc-timeout", t).unwrap();
        r
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_the_rest() {
        assert_eq!(timeout(&req("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(timeout(&req("2M")), Some(Duration::from_secs(120)));
        assert_eq!(timeout(&req("30S")), Some(Duration::from_secs(30)));
        assert_eq!(timeout(&req("100m")), Some(Duration::from_millis(100)));
        assert_eq!(timeout(&req("250u")), Some(Duration::from_micros(250)));
        assert_eq!(timeout(&req("1000n")), Some(Duration::from_nanos(1000)));
        for bad in ["", "S", "100", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(timeout(&req(bad)), None, "{bad:?}");
        }
    }
}
