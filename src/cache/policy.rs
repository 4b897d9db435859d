//! What is cached, under which key, and for how long: pure decisions over request and
//! response headers, so that they can be tested without a proxy.

use super::storage::EntryTag;
use super::RouteCache;
use http::{header, Method, StatusCode};
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// What a request does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not looked up, not stored: a method other than GET and HEAD, or `no-store`.
    Bypass,
    /// Looked up; a `refresh` (request `no-cache`) goes upstream whatever is stored, and
    /// replaces it.
    Use { refresh: bool },
}

pub fn lookup(req: &RequestHeader) -> Lookup {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Lookup::Bypass;
    }
    let cc = CacheControl::from_req_headers(req);
    // A stream never ends as an answer to keep; the others must not wait for it.
    if cc.as_ref().is_some_and(CacheControl::no_store) || crate::proxy::stream::requested(req) {
        return Lookup::Bypass;
    }
    let pragma_no_cache = || {
        req.headers
            .get(header::PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"))
    };
    let refresh = match &cc {
        Some(cc) => cc.no_cache() || cc.max_age().ok().flatten() == Some(0),
        None => pragma_no_cache(),
    };
    Lookup::Use { refresh }
}

/// Appends one key part with its length first, so that no two different lists of parts
/// make the same bytes.
fn part(key: &mut Vec<u8>, bytes: &[u8]) {
    key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    key.extend_from_slice(bytes);
}

/// The entry a request reads and fills: route, method (HEAD shares GET's entry: its answer
/// is GET's without the body), host, path and query, the route's key headers, and the
/// consumer on routes that authenticate (an answer is never served to another consumer).
pub fn key(rc: &RouteCache, req: &RequestHeader, host: &str, consumer: Option<&str>) -> CacheKey {
    let mut key = Vec::with_capacity(128);
    part(&mut key, rc.route.as_bytes());
    part(&mut key, b"GET");
    part(&mut key, host.to_ascii_lowercase().as_bytes());
    let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    part(&mut key, pq.as_bytes());
    for name in &rc.key_headers {
        // Several fields of one name count in their order; absent and empty differ.
        let mut values = req.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            key.push(0);
        } else {
            key.push(1);
            for v in values {
                part(&mut key, v.as_bytes());
            }
        }
    }
    match consumer {
        Some(c) => {
            key.push(1);
            part(&mut key, c.as_bytes());
        }
        None => key.push(0),
    }
    let mut key = CacheKey::new(key, consumer.unwrap_or_default());
    key.extensions.insert(EntryTag {
        route: rc.route.clone(),
        path: req.uri.path().into(),
    });
    key
}

/// Statuses whose answers may be stored (RFC 9110's heuristically cacheable ones the
/// contract names).
fn storable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 301 | 404 | 410)
}

/// Whether the upstream's answer may be stored, and for how long. `authorization`: the
/// request carried credentials the gateway did not check (a route without gateway
/// authentication, whose entries are shared by every client): then only an answer the
/// upstream marks shareable (`public`, `s-maxage`, `must-revalidate`) is stored.
pub fn admit(rc: &RouteCache, resp: &ResponseHeader, authorization: bool) -> RespCacheable {
    use RespCacheable::Uncacheable;
    if !storable_status(resp.status) {
        return Uncacheable(NoCacheReason::Custom("status"));
    }
    if crate::proxy::stream::answered(resp) {
        return Uncacheable(NoCacheReason::Custom("stream"));
    }
    if resp.headers.contains_key(header::SET_COOKIE) {
        return Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    // The upstream is asked for identity bytes; one that encodes anyway is not stored,
    // so that no client gets an encoding it did not accept.
    let encoded = resp
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Uncacheable(NoCacheReason::Custom("encoded"));
    }
    if !vary_covered(rc, resp) {
        return Uncacheable(NoCacheReason::Custom("vary"));
    }
    let cc = CacheControl::from_resp_headers(resp);
    if let Some(cc) = &cc {
        if cc.no_store() || cc.private() || cc.no_cache() {
            return Uncacheable(NoCacheReason::OriginNotCache);
        }
    }
    if authorization
        && !cc
            .as_ref()
            .is_some_and(|c| c.allow_caching_authorized_req())
    {
        return Uncacheable(NoCacheReason::Custom("authorization"));
    }
    let now = SystemTime::now();
    let ttl = cc
        .as_ref()
        .and_then(InterpretCacheControl::fresh_duration)
        .or_else(|| {
            pingora_cache::filters::calculate_expires_header_time(resp)
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
        })
        .unwrap_or(rc.ttl);
    if ttl.is_zero() {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    // `must-revalidate` and `proxy-revalidate` forbid serving the entry once it is stale.
    let stale = if cc
        .as_ref()
        .is_some_and(|c| c.must_revalidate() || c.proxy_revalidate())
    {
        0
    } else {
        u32::try_from(rc.stale_while_revalidate.as_secs()).unwrap_or(u32::MAX)
    };
    let Some(fresh_until) = now.checked_add(ttl) else {
        return Uncacheable(NoCacheReason::Custom("ttl"));
    };
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, stale, 0, resp.clone()))
}

/// The answer varies only on what the key holds. `Accept-Encoding` is covered: entries hold
/// identity bytes, encoded per answer. `*`, or any other header, is not.
fn vary_covered(rc: &RouteCache, resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .all(|n| {
            n.eq_ignore_ascii_case("accept-encoding")
                || rc
                    .key_headers
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h.as_str()))
        })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
