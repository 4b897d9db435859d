//! Steps 1 and 2 of a request: identity, route match and size limits.

use super::ctx::Ctx;
use super::ids;
use super::router::{decode_segments, Match, PathError};
use crate::error::GatewayError;
use pingora_http::RequestHeader;

/// What the gateway does with a request after admission.
pub enum Outcome {
    Proxy,
    Reject(GatewayError),
}

/// The authority of an absolute-form request target (`GET http://host/path`), which takes
/// precedence over `Host` (RFC 9112 §3.2.2). Pingora keeps it only in the raw target.
pub fn absolute_authority(req: &RequestHeader) -> Option<&str> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str());
    }
    let raw = std::str::from_utf8(req.raw_path()).ok()?;
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))?;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

/// Host to route on: the absolute-form target's authority, else the Host header;
/// lower-case, without port.
fn route_host(req: &RequestHeader) -> String {
    let raw = absolute_authority(req)
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let no_port = if raw.starts_with('[') {
        raw.split_once(']').map_or(raw, |(h, _)| &h[1..])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    no_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Sets up identity and matches the route. Runs once per request, before anything else.
pub fn admit(req: &RequestHeader, ctx: &mut Ctx) -> Outcome {
    ctx.request_id = ids::request_id(req.headers.get("x-request-id"));
    ctx.traceparent = ids::traceparent(req.headers.get("traceparent"));

    let path = req.uri.path();
    let segments = match decode_segments(path) {
        Ok(s) => s,
        Err(PathError::NotOrigin) => {
            return Outcome::Reject(GatewayError::BadRequest(
                "the request target must be a path (origin-form) or an absolute URI".into(),
            ))
        }
        Err(PathError::BadEncoding) => {
            return Outcome::Reject(GatewayError::BadRequest(
                "the request path has invalid percent-encoding".into(),
            ))
        }
        Err(PathError::DotSegment) => {
            return Outcome::Reject(GatewayError::BadRequest(
                "the request path contains `.` or `..` segments".into(),
            ))
        }
    };
    let segs: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    let host = route_host(req);
    let snapshot = ctx.snapshot.clone();
    match snapshot.router.find(&host, &segs, &req.method) {
        Match::Found { route, params } => {
            ctx.route = Some(route);
            ctx.params = params;
        }
        Match::NotFound => return Outcome::Reject(GatewayError::NoRoute),
        Match::MethodNotAllowed(methods) => {
            let allow = methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Outcome::Reject(GatewayError::MethodNotAllowed { allow });
        }
    }

    let limit = ctx
        .route()
        .map_or(snapshot.settings.max_body, |r| r.max_body);
    if let Some(len) = req.headers.get(http::header::CONTENT_LENGTH) {
        let len = len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
        match len {
            Some(n) if n > limit => return Outcome::Reject(GatewayError::BodyTooLarge { limit }),
            Some(_) => {}
            None => {
                return Outcome::Reject(GatewayError::BadRequest("invalid Content-Length".into()))
            }
        }
    }
    Outcome::Proxy
}

/// Counts streamed request body bytes against the route's limit (for bodies without
/// Content-Length, or that lie about it).
pub fn count_body(ctx: &mut Ctx, chunk: usize) -> Result<(), GatewayError> {
    ctx.body_bytes += chunk as u64;
    let limit = ctx
        .route()
        .map_or(ctx.snapshot.settings.max_body, |r| r.max_body);
    if ctx.body_bytes > limit {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    Ok(())
}
