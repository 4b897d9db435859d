//! The proxy's side of response caching: Pingora's cache hooks, for routes with a `cache`
//! block. Authentication, authorization and rate limits have run (in `request_filter`)
//! before any of these; a route without `cache` pays one check in [`enable`].

use super::ctx::Ctx;
use crate::cache::policy::{self, Lookup};
use crate::cache::Outcome;
use pingora_cache::{CacheKey, CachePhase, ForcedFreshness, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// What the request asked of the cache, decided in [`enable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Bypass,
    Lookup { refresh: bool },
}

/// `request_cache_filter`: turns Pingora's cache on for the request when its route caches
/// and the request may use it.
#[inline(never)]
pub fn enable(session: &mut Session, ctx: &mut Ctx) {
    let Some(route) = ctx.route() else {
        return;
    };
    let Some(_) = &route.cache else {
        return;
    };
    let mut lookup = policy::lookup(session.req_header());
    // On a route that authenticates, entries are per consumer: with no consumer to key
    // on, nothing is shared.
    if !route.auth.is_public() && who(ctx).is_none() {
        lookup = Lookup::Bypass;
    }
    ctx.cache = Some(match lookup {
        Lookup::Bypass => Use::Bypass,
        Lookup::Use { refresh } => {
            session.cache.enable(
                crate::cache::storage(),
                None,
                None,
                Some(crate::cache::lock()),
                None,
            );
            Use::Lookup { refresh }
        }
    });
}

/// Whose entries the request reads: the consumer, qualified by the token's issuer when a
/// JWT named it (two issuers may use the same subject).
fn who(ctx: &Ctx) -> Option<String> {
    let id = ctx.identity.as_ref()?;
    let consumer = id.consumer.as_deref()?;
    Some(match &id.provider {
        Some(p) => format!("{}\n{consumer}", p.issuer),
        None => consumer.to_string(),
    })
}

/// `cache_key_callback`.
pub fn key(req: &RequestHeader, ctx: &Ctx) -> Result<CacheKey> {
    let Some(rc) = ctx.route().and_then(|r| r.cache.as_ref()) else {
        return Error::e_explain(
            ErrorType::InternalError,
            "cache key on a route without cache",
        );
    };
    let host = super::admit::absolute_authority(req)
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())
        .unwrap_or_default();
    Ok(policy::key(rc, req, host, who(ctx).as_deref()))
}

/// `cache_hit_filter`: a refresh (request `no-cache`) goes upstream whatever is stored.
pub fn hit_filter(ctx: &Ctx) -> Option<ForcedFreshness> {
    matches!(ctx.cache, Some(Use::Lookup { refresh: true })).then_some(ForcedFreshness::ForceMiss)
}

/// `response_cache_filter`: whether the upstream's answer is stored, and for how long.
pub fn admit(req: &RequestHeader, resp: &ResponseHeader, ctx: &Ctx) -> RespCacheable {
    let Some(route) = ctx.route() else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    let Some(rc) = &route.cache else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    // Credentials the gateway did not check make the entry the upstream's call.
    let unchecked_credentials =
        route.auth.is_public() && req.headers.contains_key(http::header::AUTHORIZATION);
    policy::admit(rc, resp, unchecked_credentials)
}

/// `upstream_request_filter`, when the request may fill the cache: the whole answer is
/// fetched (GET for HEAD, no range or client preconditions; the entry's validators when it
/// revalidates one), in identity bytes (each answer is encoded for its own client).
#[inline(never)]
pub fn upstream_request(session: &Session, up: &mut RequestHeader) {
    if !session.cache.enabled() {
        return;
    }
    pingora_cache::filters::upstream::request_filter(up, session.cache.maybe_cache_meta());
    up.remove_header(&http::header::ACCEPT_ENCODING);
}

/// What the cache did, once the answer is known (`None`: the route has no cache).
pub fn outcome(session: &Session, ctx: &Ctx) -> Option<Outcome> {
    Some(match ctx.cache? {
        Use::Bypass => Outcome::Bypass,
        Use::Lookup { .. } => match session.cache.phase() {
            CachePhase::Hit | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
                Outcome::Hit
            }
            CachePhase::Stale | CachePhase::StaleUpdating => Outcome::Stale,
            CachePhase::Bypass => Outcome::Bypass,
            _ => Outcome::Miss,
        },
    })
}

/// `response_filter`: `X-Cache` on the answer, and the count.
#[inline(never)]
pub fn decorate(session: &Session, resp: &mut ResponseHeader, ctx: &Ctx) {
    let Some(outcome) = outcome(session, ctx) else {
        return;
    };
    let _ = resp.insert_header("X-Cache", outcome.as_str());
    if let Some(rc) = ctx.route().and_then(|r| r.cache.as_ref()) {
        rc.count(outcome);
    }
}
