//! Per-request state, shared by every phase of one request.

use crate::auth::Identity;
use crate::error::GatewayError;
use crate::ratelimit::RateHeaders;
use crate::runtime::{Route, Snapshot};
use crate::tls::client::ClientCert;
use crate::upstream::Addr;
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Route label for requests that matched no route.
pub const UNMATCHED: &str = "_unmatched";

pub struct Ctx {
    /// The policy generation this request runs under, from its first phase to its last.
    pub snapshot: Arc<Snapshot>,
    pub started: Instant,
    /// `X-Request-Id` and `traceparent` as they go upstream and back (visible ASCII).
    pub request_id: HeaderValue,
    pub traceparent: HeaderValue,
    pub client_ip: Option<IpAddr>,
    /// Index into `snapshot.routes`.
    pub route: Option<usize>,
    /// Path parameter values, in the route pattern's order.
    pub params: Vec<String>,
    pub target: Option<Addr>,
    pub upstream_started: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// A failure the gateway decided on; `fail_to_proxy` answers with it.
    pub error: Option<GatewayError>,
    pub body_bytes: u64,
    pub tls: bool,
    /// Who made the request, once authenticated.
    pub identity: Option<Identity>,
    /// The rate-limit headers of this request's response, once decided.
    pub rate: Option<RateHeaders>,
    /// The request body, when a phase had to read it whole (validation).
    pub body: Option<bytes::Bytes>,
    /// The verified TLS client certificate of the connection, if any.
    pub client_cert: Option<Arc<ClientCert>>,
    /// Tries made so far, and the targets they went to.
    pub tries: u32,
    pub tried: Vec<Addr>,
    /// The current try's answer was refused for another try.
    pub retrying: bool,
    /// The next try replaces a stale pooled connection: not a new try.
    pub stale: bool,
    /// The request's trace span, and the current upstream try's (with `tracing`).
    pub span: Option<opentelemetry::Context>,
    pub try_span: Option<opentelemetry::Context>,
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>) -> Ctx {
        Ctx {
            snapshot,
            started: Instant::now(),
            request_id: HeaderValue::from_static(""),
            traceparent: HeaderValue::from_static(""),
            client_ip: None,
            route: None,
            params: Vec::new(),
            target: None,
            upstream_started: None,
            upstream_status: None,
            error: None,
            body_bytes: 0,
            tls: false,
            identity: None,
            rate: None,
            body: None,
            client_cert: None,
            tries: 0,
            tried: Vec::new(),
            retrying: false,
            stale: false,
            span: None,
            try_span: None,
        }
    }

    /// The `traceparent` for an upstream request: the try's span as parent when tracing,
    /// else the client's (or a new) trace as it came.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        self.try_span
            .as_ref()
            .and_then(|cx| HeaderValue::from_str(&crate::telemetry::traceparent(cx)).ok())
            .unwrap_or_else(|| self.traceparent.clone())
    }

    /// The request id as text (for logs and error bodies).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    pub fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.snapshot.routes.get(i))
    }

    pub fn route_name(&self) -> &str {
        self.route().map_or(UNMATCHED, |r| &r.name)
    }

    pub fn consumer(&self) -> Option<&str> {
        self.identity.as_ref()?.consumer.as_deref()
    }

    pub fn upstream_name(&self) -> Option<&str> {
        Some(&*self.route()?.upstream.as_ref()?.name)
    }
}
