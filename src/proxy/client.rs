//! Who the client is, for keys: its address (trusting `X-Forwarded-For` only from trusted
//! proxies), and the keys that rate limits and consistent hashing derive from it.

use super::ctx::Ctx;
use crate::config::values::ClientKey;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_ip(req: &RequestHeader, ctx: &Ctx) -> Option<IpAddr> {
    let peer = ctx.client.ip?;
    let settings = &ctx.snapshot.settings;
    if !settings.is_trusted(peer) {
        return Some(peer);
    }
    let mut found = peer;
    let hops = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if settings.is_trusted(ip) => found = ip,
            Ok(ip) => return Some(ip),
            // An unparseable hop: what lies left of it cannot be trusted either.
            Err(_) => break,
        }
    }
    Some(found)
}

/// The client key of a set: `c:` consumer, `h:` header value, `ip:` client address. A
/// missing consumer (public route) or header falls back to the client's address.
pub fn rate_key(key: &ClientKey, req: &RequestHeader, ctx: &Ctx) -> String {
    match key {
        ClientKey::Consumer => {
            if let Some(c) = ctx.consumer() {
                return format!("c:{c}");
            }
        }
        ClientKey::Header(h) => {
            if let Some(v) = req.headers.get(h) {
                return format!("h:{}", String::from_utf8_lossy(v.as_bytes()));
            }
        }
        ClientKey::ClientIp => {}
    }
    match client_ip(req, ctx) {
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".into(),
    }
}

/// The consistent-hashing key for this request.
pub fn hash_key(req: &RequestHeader, ctx: &Ctx, key: &ClientKey) -> Vec<u8> {
    match key {
        ClientKey::Header(h) => req
            .headers
            .get(h)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        ClientKey::Consumer if ctx.consumer().is_some() => {
            ctx.consumer().unwrap_or_default().as_bytes().to_vec()
        }
        // A request without a consumer (a public route) hashes on the client's address.
        ClientKey::ClientIp | ClientKey::Consumer => client_ip(req, ctx)
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default(),
    }
}
