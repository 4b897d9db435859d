//! The immutable, compiled policy set that every request reads from.

use crate::aggregate::Aggregate;
use crate::auth::jwks::JwksSource;
use crate::auth::{Identities, RouteAuth};
use crate::metrics::RouteMetrics;
use crate::ratelimit::compile::RateLimits;
use crate::ratelimit::LimitSet;
use crate::runtime::router::Router;
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
    /// Head limits; HTTP/1 heads are held to them as they arrive (`crate::conn`), HTTP/2
    /// ones once decoded.
    pub head: crate::conn::head::HeadLimits,
    /// A connection's first head must be complete this long after it opened; a later head,
    /// this long after its first byte.
    pub header_timeout: std::time::Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: std::time::Duration,
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

/// A step of the request pipeline after routing and size limits (`crate::proxy::stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Authentication and authorization (steps 3 and 4).
    Authenticate,
    /// A signed webhook event, in place of authentication.
    Webhook,
    /// The consumer's plan and the route's own limits (step 5).
    RateLimit,
    /// Query and body schemas (step 6).
    Validate,
    /// `request.transform`: the JSON body edited after validation.
    Transform,
    /// Idempotency keys: take the key, or replay or refuse.
    Idempotency,
    /// Backend-for-frontend calls, answered by the gateway.
    Aggregate,
    /// `deliver`: queued for the workers, answered 202 by the gateway.
    Deliver,
    /// A validated body too large for Pingora to replay is sent by the gateway itself.
    Relay,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub auth: RouteAuth,
    /// Where requests go: at most one of `upstream` and `aggregate` is set (neither on a
    /// `deliver` route, whose upstream is in `deliver`).
    pub upstream: Option<Arc<Upstream>>,
    pub aggregate: Option<Arc<Aggregate>>,
    /// `deliver`: queued and answered 202; the workers send it to its upstream.
    pub deliver: Option<Arc<crate::deliver::Deliver>>,
    pub rewrite: Rewrite,
    /// Parsed at load time, with their wire case (no name parse per request).
    pub set_headers: Vec<(pingora_http::KnownHeader, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    pub max_body: u64,
    pub validation: Option<Arc<RouteValidation>>,
    /// The route's own rate limits (the consumer's plan applies on top).
    pub rate_limit: Option<Arc<LimitSet>>,
    pub idempotency: Option<crate::idempotency::Idempotency>,
    /// Preflights answered here; CORS headers on every answer.
    pub cors: Option<crate::cors::RouteCors>,
    /// `response.compression`: answers encoded as the client accepts.
    pub compression: Option<crate::compress::Compression>,
    /// `allow_ips`/`deny_ips`, `split`/`sticky`, `mirror`, `response.headers`.
    pub traffic: crate::traffic::compile::Traffic,
    /// `request.transform` / `response.transform`.
    pub request_transform: Option<Arc<crate::transform::Transform>>,
    pub response_transform: Option<Arc<crate::transform::Transform>>,
    /// `grpc_web`: gRPC-Web requests bridged to gRPC (Pingora's module).
    pub grpc_web: bool,
    /// How long a WebSocket or event stream may carry nothing (`timeouts.idle`).
    pub stream_idle: std::time::Duration,
    /// `cache`: GET and HEAD answers kept and served by the gateway.
    pub cache: Option<crate::cache::RouteCache>,
    /// Request count and duration handles, resolved once.
    pub metrics: RouteMetrics,
    /// The route as written (path template, match, auth order, schema JSON), for the
    /// OpenAPI export and the console; never read by the request path.
    pub written: Arc<crate::openapi::facts::RouteFacts>,
    /// What else the console shows of it (limits, target, features).
    pub summary: Arc<crate::console::summary::RouteSummary>,
    /// The stages its requests pass, in order: only those of the features it uses.
    pub stages: Vec<Stage>,
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
    /// The shared store (idempotency keys, webhook ids): built at start, kept by every
    /// generation.
    pub state: Arc<crate::state::Shared>,
    /// Files the policies refer to (schemas, keys, certificates): watched, and part of the
    /// change check, so that editing one reloads the set.
    pub referenced: Vec<PathBuf>,
    /// What `gateway check` prints without refusing (`file:line: warning: ...`).
    pub warnings: Vec<String>,
    /// Metrics of requests that match no route (`route="_unmatched"`).
    pub unmatched: RouteMetrics,
}

impl Snapshot {
    pub fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| &*r.name).collect()
    }
}
