//! Per-request state, shared by every phase of one request, grouped by concern: who is
//! asking (request identity, client), what matched (route), what authentication found,
//! the body, the upstream tries and tracing.

use super::attempt::Tries;
use crate::auth::Identity;
use crate::ratelimit::RateHeaders;
use crate::runtime::{Route, Snapshot};
use crate::tls::client::ClientCert;
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub use crate::metrics::UNMATCHED;

/// The request's identity: when it started, and the ids that go upstream and back.
pub struct RequestIds {
    pub started: Instant,
    /// `X-Request-Id` and `traceparent` (visible ASCII).
    pub id: HeaderValue,
    pub traceparent: HeaderValue,
}

/// The client connection the request came on.
#[derive(Default)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub tls: bool,
    /// The verified TLS client certificate of the connection, if any.
    pub cert: Option<Arc<ClientCert>>,
    /// The browser's `Origin`, when the route has CORS and allows it.
    pub origin: Option<HeaderValue>,
}

/// The request body as the gateway saw it.
#[derive(Default)]
pub struct Body {
    /// Bytes counted against the route's limit as they streamed.
    pub read: u64,
    /// The whole body, when a stage had to read it (validation, aggregate calls).
    pub held: Option<bytes::Bytes>,
    /// `held` is larger than Pingora's retry buffer: the gateway sends it upstream itself
    /// ([`super::stage::relay`]).
    pub relay: bool,
}

/// The request's trace span, and the current upstream try's (with `tracing`).
#[derive(Default)]
pub struct Trace {
    pub request: Option<opentelemetry::Context>,
    pub attempt: Option<opentelemetry::Context>,
}

pub struct Ctx {
    /// The policy generation this request runs under, from its first phase to its last.
    pub snapshot: Arc<Snapshot>,
    pub ids: RequestIds,
    pub client: Client,
    /// Index into `snapshot.routes`.
    pub route: Option<usize>,
    /// Path parameter values, in the route pattern's order.
    pub params: Vec<String>,
    /// Who made the request, once authenticated.
    pub identity: Option<Identity>,
    /// The rate-limit headers of this request's response, once decided.
    pub rate: Option<RateHeaders>,
    /// The `X-Quota-*` headers of the request's quota decision, once made.
    pub quota: Option<crate::ratelimit::quota::QuotaHeaders>,
    pub body: Body,
    pub tries: Tries,
    pub trace: Trace,
    /// Idempotency and webhook work left for when the answer is known.
    pub after: super::after::After,
    /// The answer being collected for the route's response transform.
    pub reshape: Option<Box<super::reshape::Reshape>>,
    /// The answer's body encoder, when it is compressed.
    pub encoder: Option<crate::compress::Encoder>,
    /// The upstream this request goes to, once chosen (a split route picks one of its
    /// sides; see `proxy::traffic::choose`), and the split side (`None`: the route's own).
    pub upstream: Option<Arc<crate::upstream::Upstream>>,
    pub arm: Option<usize>,
    /// A copy for the route's shadow upstream, collecting the body as it streams (boxed,
    /// as `reshape`: rare, and a larger context costs every request its moves).
    pub mirror: Option<Box<crate::proxy::traffic::PendingCopy>>,
    /// The WebSocket or event stream this request opened, counted while it lives.
    pub stream: Option<super::stream::Open>,
    /// What the request asked of the route's cache (`None`: the route has none).
    pub cache: Option<super::cache::Use>,
    /// Counts this request as in flight until it is dropped (a graceful stop waits).
    _in_flight: crate::conn::InFlight,
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>) -> Ctx {
        Ctx {
            snapshot,
            ids: RequestIds {
                started: Instant::now(),
                id: HeaderValue::from_static(""),
                traceparent: HeaderValue::from_static(""),
            },
            client: Client::default(),
            route: None,
            params: Vec::new(),
            identity: None,
            rate: None,
            quota: None,
            body: Body::default(),
            tries: Tries::default(),
            trace: Trace::default(),
            after: super::after::After::default(),
            encoder: None,
            reshape: None,
            cache: None,
            stream: None,
            upstream: None,
            arm: None,
            mirror: None,
            _in_flight: crate::conn::InFlight::enter(),
        }
    }

    /// The `traceparent` for an upstream request: the try's span as parent when tracing,
    /// else the client's (or a new) trace as it came.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        self.trace
            .attempt
            .as_ref()
            .and_then(|cx| HeaderValue::from_str(&crate::telemetry::traceparent(cx)).ok())
            .unwrap_or_else(|| self.ids.traceparent.clone())
    }

    /// The request id as text (for logs and error bodies).
    pub fn request_id(&self) -> &str {
        self.ids.id.to_str().unwrap_or_default()
    }

    pub fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.snapshot.routes.get(i))
    }

    /// The route's CORS headers on an answer (nothing on a route without `cors`).
    pub fn cors_headers(&self, resp: &mut pingora_http::ResponseHeader) {
        if let Some(cors) = self.route().and_then(|r| r.cors.as_ref()) {
            crate::cors::decorate(resp, cors.policy(), self.client.origin.as_ref());
        }
    }

    pub fn route_name(&self) -> &str {
        self.route().map_or(UNMATCHED, |r| &r.name)
    }

    pub fn consumer(&self) -> Option<&str> {
        self.identity.as_ref()?.consumer.as_deref()
    }

    pub fn upstream_name(&self) -> Option<&str> {
        Some(&*self.upstream()?.name)
    }

    /// The upstream of this request: the one chosen for it, else the route's.
    pub fn upstream(&self) -> Option<&Arc<crate::upstream::Upstream>> {
        self.upstream
            .as_ref()
            .or_else(|| self.route()?.upstream.as_ref())
    }
}
