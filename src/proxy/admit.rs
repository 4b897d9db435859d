//! Steps 1 and 2 of a request: identity, route match and size limits.

use super::ctx::Ctx;
use super::ids;
use crate::error::GatewayError;
use crate::runtime::router::{decode_segments, Match, PathError};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// What the gateway does with a request after admission.
pub enum Outcome {
    Proxy,
    /// A CORS preflight on a route with `cors`: answered by the gateway, nothing else runs.
    Preflight,
    Reject(GatewayError),
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn preflight_method(req: &RequestHeader) -> Option<http::Method> {
    if req.method != http::Method::OPTIONS || !req.headers.contains_key(http::header::ORIGIN) {
        return None;
    }
    let m = req
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
    http::Method::from_bytes(m.as_bytes()).ok()
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
pub(super) fn route_host(req: &RequestHeader) -> std::borrow::Cow<'_, str> {
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
    let host = no_port.trim_end_matches('.');
    // Hosts nearly always arrive in lower case: copy only when one does not.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Who is asking: the peer's address, and whether (and with which certificate) it came
/// over TLS.
pub fn client(session: &Session, ctx: &mut Ctx) {
    ctx.client.ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let ssl = session.digest().and_then(|d| d.ssl_digest.clone());
    ctx.client.tls = ssl.is_some();
    ctx.client.cert = ssl.and_then(|s| {
        let cert = s
            .extension
            .get::<std::sync::Arc<crate::tls::client::ClientCert>>()?;
        Some(cert.clone())
    });
}

/// Starts the request's trace span (with `tracing`), once its ids are known.
pub fn trace(session: &Session, ctx: &mut Ctx) {
    if crate::telemetry::enabled() && ctx.trace.request.is_none() && !ctx.ids.traceparent.is_empty()
    {
        let req = session.req_header();
        ctx.trace.request = crate::telemetry::request(
            ctx.ids.traceparent.to_str().unwrap_or_default(),
            req.method.as_str(),
            req.uri.path(),
        );
    }
}

/// Whether a decoded HTTP/2 head is within the limits that HTTP/1 heads are held to as
/// they arrive: field count, and size counted as HTTP/1 would carry it.
fn h2_head_fits(req: &RequestHeader, limits: &crate::conn::head::HeadLimits) -> bool {
    if req.headers.len() > limits.max_headers {
        return false;
    }
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    let fields: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    line + fields <= limits.max_bytes
}

/// Sets up identity and matches the route. Runs once per request, before anything else.
pub fn admit(req: &RequestHeader, ctx: &mut Ctx) -> Outcome {
    ctx.ids.id = ids::request_id(req.headers.get(&ids::X_REQUEST_ID));
    ctx.ids.traceparent = ids::traceparent(req.headers.get(&ids::TRACEPARENT));
    if req.version == http::Version::HTTP_2 && !h2_head_fits(req, &ctx.snapshot.settings.head) {
        return Outcome::Reject(GatewayError::HeaderTooLarge(
            "request headers over the limit",
        ));
    }

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
    if let Some(asked) = preflight_method(req) {
        // By host and path only: the route for the method asked about, else any there.
        // A preflight carries none of the request's own headers: a route constrained by
        // one answers it only when no other route is there.
        let found = [
            snapshot.router.find(&host, &segs, &asked, req),
            snapshot.router.find_path_for(&host, &segs, &asked),
            snapshot.router.find_path(&host, &segs),
        ]
        .into_iter()
        .find_map(|m| match m {
            Match::Found { route, .. } => Some(route),
            _ => None,
        });
        if let Some(route) =
            found.filter(|r| snapshot.routes.get(*r).is_some_and(|r| r.cors.is_some()))
        {
            ctx.route = Some(route);
            return Outcome::Preflight;
        }
    }
    match snapshot.router.find(&host, &segs, &req.method, req) {
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

    let cors = ctx
        .route
        .and_then(|i| snapshot.routes.get(i)?.cors.as_ref());
    if let Some(cors) = cors {
        ctx.client.origin = req
            .headers
            .get(http::header::ORIGIN)
            .filter(|o| cors.policy().allows(o.as_bytes()))
            .cloned();
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
    ctx.body.read += chunk as u64;
    let limit = ctx
        .route()
        .map_or(ctx.snapshot.settings.max_body, |r| r.max_body);
    if ctx.body.read > limit {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    Ok(())
}
