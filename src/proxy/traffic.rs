//! The proxy's side of traffic control (`crate::traffic`): the IP rules right after
//! routing, the upstream a split route sends a request to, the copy for a mirror, and the
//! count of requests per upstream.

use super::ctx::Ctx;
use crate::error::GatewayError;
use crate::traffic::mirror::{Mirror, MAX_BODY};
use crate::traffic::Split;
use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::sync::Arc;

/// `allow_ips`/`deny_ips`: checked before authentication, on the client address as
/// resolved through `trusted_proxies`.
#[inline(never)]
pub fn check_ips(req: &RequestHeader, ctx: &Ctx) -> Result<(), GatewayError> {
    let Some(rules) = ctx.route().and_then(|r| r.traffic.ips.as_ref()) else {
        return Ok(());
    };
    if rules.admits(super::client::client_ip(req, ctx)) {
        Ok(())
    } else {
        Err(GatewayError::AddressForbidden)
    }
}

/// Chooses the request's upstream once: a side of the route's split (by the sticky key's
/// hash, else at random), else the route's own.
#[inline(never)]
pub fn choose(req: &RequestHeader, ctx: &mut Ctx) {
    if ctx.upstream.is_some() {
        return;
    }
    let Some(split) = ctx.route().and_then(|r| r.traffic.split.as_ref()) else {
        return;
    };
    let point = match &split.sticky {
        Some(key) => Split::point_of(&super::client::rate_key(key, req, ctx)),
        None => Split::random_point(),
    };
    let arm = split.arm_index(point);
    let chosen = arm
        .and_then(|i| split.arm_at(i))
        .map(|a| a.upstream.clone());
    ctx.arm = arm;
    ctx.upstream = chosen.or_else(|| ctx.route().and_then(|r| r.upstream.clone()));
}

/// `gateway_upstream_requests_total{route, upstream}` for this request (its first try).
pub fn count_upstream_request(ctx: &Ctx) {
    let Some(route) = ctx.route() else {
        return;
    };
    let arm = ctx
        .arm
        .and_then(|i| route.traffic.split.as_ref()?.arm_at(i));
    match arm {
        Some(a) => a.requests.inc(),
        None => {
            if let Some(c) = &route.traffic.requests {
                c.inc();
            }
        }
    }
}

/// A copy waiting for the rest of the request's body.
pub struct PendingCopy {
    mirror: Arc<Mirror>,
    body: BytesMut,
}

/// Starts the request's copy for the route's shadow, if it has one and this request is
/// drawn: sent now when the body is known (none, or held by a stage), else when it has
/// streamed through ([`mirror_body`]).
#[inline(never)]
pub fn mirror(session: &Session, ctx: &mut Ctx) {
    let Some(mirror) = ctx.route().and_then(|r| r.traffic.mirror.clone()) else {
        return;
    };
    if ctx.mirror.is_some() || !mirror.draw() {
        return;
    }
    let req = session.req_header();
    let streams = super::stage::body::announced(req);
    match (&ctx.body.held, streams) {
        (Some(held), _) => send(&mirror, req, ctx, Some(held.clone())),
        (None, false) => send(&mirror, req, ctx, None),
        (None, true) => {
            ctx.mirror = Some(Box::new(PendingCopy {
                mirror,
                body: BytesMut::new(),
            }));
        }
    }
}

/// `request_body_filter`: collects the body of a pending copy; sends it at the end.
#[inline(never)]
pub fn mirror_body(session: &Session, ctx: &mut Ctx, chunk: Option<&Bytes>, end: bool) {
    let Some(copy) = &mut ctx.mirror else {
        return;
    };
    if let Some(c) = chunk {
        if copy.body.len() + c.len() > MAX_BODY {
            copy.mirror.drop_copy();
            ctx.mirror = None;
            return;
        }
        copy.body.extend_from_slice(c);
    }
    if end {
        if let Some(copy) = ctx.mirror.take() {
            let body = copy.body.freeze();
            send(&copy.mirror, session.req_header(), ctx, Some(body));
        }
    }
}

fn send(mirror: &Arc<Mirror>, client: &RequestHeader, ctx: &Ctx, body: Option<Bytes>) {
    let len = body.as_ref().map_or(0, Bytes::len);
    let mut req = super::stage::relay::upstream_request(client, ctx, len);
    if body.is_none() && client.headers.get(http::header::CONTENT_LENGTH).is_none() {
        req.remove_header(&http::header::CONTENT_LENGTH);
    }
    mirror.send(req, body);
}
