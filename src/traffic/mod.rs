//! Traffic control on a route: who may call it (`allow_ips`/`deny_ips`), which upstream
//! takes a request (`split`, `sticky`), copies to a shadow ([`mirror`]), and the route's
//! edits of answer headers. Compiled at load ([`compile`]); the proxy's side is
//! `crate::proxy::traffic`.

pub mod compile;
pub mod mirror;

use crate::config::values::ClientKey;
use crate::upstream::Upstream;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use prometheus::IntCounter;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// `allow_ips` / `deny_ips`.
#[derive(Debug, Default)]
pub struct IpRules {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl IpRules {
    /// Whether a client at `ip` may call the route; an unknown address (not an IP
    /// connection) passes only a route without `allow_ips`.
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else {
            return self.allow.is_empty();
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// One side of a split: requests whose point (0..100) is below `upto` go to `upstream`.
#[derive(Debug)]
pub struct Arm {
    pub upstream: Arc<Upstream>,
    upto: u32,
    /// `gateway_upstream_requests_total{route, upstream}`.
    pub requests: IntCounter,
}

/// `split` and `sticky`: the share of a route's requests each other upstream takes.
#[derive(Debug)]
pub struct Split {
    arms: Vec<Arm>,
    /// `None`: each request is drawn at random.
    pub sticky: Option<ClientKey>,
}

impl Split {
    /// A client's fixed point: the same key lands on the same side in every replica and
    /// generation (the hash has fixed keys).
    pub fn point_of(key: &str) -> u32 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % 100) as u32
    }

    /// The arm at `index`, in the order written.
    pub fn arm_at(&self, index: usize) -> Option<&Arm> {
        self.arms.get(index)
    }

    /// The index of the arm for `point`, `None` for the route's own upstream.
    pub fn arm_index(&self, point: u32) -> Option<usize> {
        self.arms.iter().position(|a| point < a.upto)
    }

    pub fn random_point() -> u32 {
        rand::random::<u32>() % 100
    }
}

/// `response.headers`: set and remove on every answer of the route.
#[derive(Debug, Default)]
pub struct HeaderOps {
    /// Names parsed at load time, with their wire case: inserted without a parse each time.
    pub set: Vec<(pingora_http::KnownHeader, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn apply(&self, resp: &mut pingora_http::ResponseHeader) {
        for h in &self.remove {
            resp.remove_header(h);
        }
        for (k, v) in &self.set {
            let _ = resp.insert_known(k, v.clone());
        }
    }
}

#[cfg(test)]
#[path = "traffic_tests.rs"]
mod tests;
