//! The immutable, compiled policy set that every request reads from.

use crate::aggregate::Aggregate;
use crate::auth::jwks::JwksSource;
use crate::auth::{Identities, RouteAuth};
use crate::proxy::router::Router;
use crate::ratelimit::compile::RateLimits;
use crate::ratelimit::LimitSet;
use crate::template::Template;
use crate::upstream::Upstream;
use crate::validate::RouteValidation;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Process settings from gateway.yaml that the request path needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_body: u64,
    pub body_timeout: std::time::Duration,
    pub trusted_proxies: Vec<IpNet>,
}

impl Settings {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug)]
pub enum Rewrite {
    None,
    StripPrefix(String),
    Path(Template),
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub auth: RouteAuth,
    /// Where requests go: exactly one of `upstream` and `aggregate` is set.
    pub upstream: Option<Arc<Upstream>>,
    pub aggregate: Option<Arc<Aggregate>>,
    pub rewrite: Rewrite,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    pub max_body: u64,
    pub validation: Option<Arc<RouteValidation>>,
    /// The route's own rate limits (the consumer's plan applies on top).
    pub rate_limit: Option<Arc<LimitSet>>,
}

/// A whole generation of compiled policy.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub hash: String,
    pub loaded_at: SystemTime,
    pub router: Router,
    pub routes: Vec<Route>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub settings: Arc<Settings>,
    pub identities: Identities,
    /// Remote key sets, refreshed by the JWKS service; reused across reloads when unchanged.
    pub jwks: Vec<Arc<JwksSource>>,
    /// The rate-limit store and every limit, reused across reloads when unchanged.
    pub rate: RateLimits,
    /// Files the policies refer to (schemas, keys, certificates): watched, and part of the
    /// change check, so that editing one reloads the set.
    pub referenced: Vec<PathBuf>,
}

impl Snapshot {
    pub fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| &*r.name).collect()
    }
}
