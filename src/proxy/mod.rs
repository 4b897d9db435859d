//! The `ProxyHttp` implementation: thin dispatch of Pingora's phases. The request path is
//! `admit` (identity, route, size limits), then the route's compiled [`stage`]s, then the
//! upstream tries ([`attempt`], [`peer`]), and last `log`. Errors the gateway decides on
//! travel as the cause of the Pingora error (`Error::because`) and are answered by
//! [`respond`].

pub mod admit;
pub mod after;
pub mod attempt;
pub mod cache;
pub mod client;
pub mod ctx;
pub mod forward;
pub mod grpc;
pub mod ids;
pub mod log;
pub mod peer;
pub mod reshape;
pub mod respond;
pub mod stage;
pub mod stream;
pub mod traffic;

use crate::error::GatewayError;
use crate::runtime::Store;
use async_trait::async_trait;
use attempt::End;
use bytes::Bytes;
use ctx::Ctx;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora_core::modules::http::grpc_web::GrpcWeb;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;

/// The gateway's proxy logic, one instance per listener.
pub struct Gateway {
    store: Arc<Store>,
}

impl Gateway {
    pub fn new(store: Arc<Store>) -> Self {
        Gateway { store }
    }
}

/// A Pingora error whose cause is the gateway's own decision.
fn refusal(err: GatewayError) -> Box<Error> {
    Error::because(ErrorType::InternalError, "refused by the gateway", err)
}

/// The gateway's own decision behind a Pingora error, if it is one.
pub fn gateway_error(e: &Error) -> Option<&GatewayError> {
    e.root_cause().downcast_ref::<GatewayError>()
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.store.load())
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Pingora's default adds its own response compression, disabled: the gateway
        // compresses in its own filters, so it is left out. The gRPC-Web bridge is added
        // when a route of the starting configuration uses it (it then costs every request
        // one module call; adding `grpc_web` later needs a restart, and says so).
        if self.store.load().routes.iter().any(|r| r.grpc_web) {
            modules.add_module(Box::new(GrpcWeb));
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if grpc::is_web(session.req_header()) {
            grpc::enable_web(session, ctx);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        admit::client(session, ctx);
        let snapshot = ctx.snapshot.clone();
        let admitted = admit::admit(session.req_header(), ctx);
        admit::trace(session, ctx);
        let outcome = match admitted {
            admit::Outcome::Reject(err) => Err(err),
            admit::Outcome::Preflight => {
                respond::write_preflight(session, ctx).await;
                Ok(stage::Flow::Answered)
            }
            admit::Outcome::Proxy => match ctx.route.and_then(|i| snapshot.routes.get(i)) {
                Some(route) => match route.traffic.ips.is_some() {
                    true => match traffic::check_ips(session.req_header(), ctx) {
                        Ok(()) => stage::all(route, session, ctx).await,
                        Err(e) => Err(e),
                    },
                    false => stage::all(route, session, ctx).await,
                },
                None => Err(GatewayError::NoRoute),
            },
        };
        match outcome {
            Ok(stage::Flow::Answered) => Ok(true),
            Ok(stage::Flow::Next) => {
                peer::prepare(session, ctx);
                Ok(false)
            }
            Err(err) => {
                respond::write_error(session, ctx, &err, false).await;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.route().is_some_and(|r| r.cache.is_some()) {
            cache::enable(session, ctx);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        cache::key(session.req_header(), ctx)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        Ok(cache::hit_filter(ctx))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(cache::admit(session.req_header(), resp, ctx))
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        // `None`: the entry is within its stale_while_revalidate and one request is
        // refreshing it. An upstream failure serves stale only within stale-if-error.
        error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        peer::select(session, ctx).await.map_err(refusal)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        peer::end_span(ctx, 0, Some(e.to_string()));
        peer::count_failure(ctx, &e);
        let next = peer::end(session, ctx, End::ConnectFailed);
        e.set_retry(next == attempt::Next::Retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        upstream_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        peer::end_span(ctx, 0, Some(e.to_string()));
        if ctx.tries.next == Some(attempt::Next::Retry) {
            // Decided (and taken from the budget) when the upstream's status arrived.
            e.set_retry(true);
            return e;
        }
        let refused = gateway_error(&e).is_some();
        let end = if refused {
            End::Abandoned
        } else if upstream_reused
            && ctx.tries.status.is_none()
            && matches!(e.retry, pingora_error::RetryType::ReusedOnly)
        {
            End::Stale
        } else if ctx.tries.status.is_none() && matches!(e.esource(), ErrorSource::Upstream) {
            End::Failed
        } else {
            End::Abandoned
        };
        if end == End::Failed {
            peer::count_failure(ctx, &e);
        }
        let next = peer::end(session, ctx, end);
        e.set_retry(next != attempt::Next::Stop);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward::upstream_request(session.req_header(), up, ctx);
        if session.cache.enabled() {
            cache::upstream_request(session, up);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            match &mut ctx.stream {
                // Frames after an upgrade: stream bytes, not a body held to `max_body`.
                Some(open) => open.from_client(b.len()),
                None => admit::count_body(ctx, b.len()).map_err(refusal)?,
            }
        }
        if ctx.mirror.is_some() {
            traffic::mirror_body(session, ctx, body.as_ref(), end_of_stream);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let status = resp.status.as_u16();
        peer::end_span(ctx, status, None);
        peer::answered(ctx, status);
        if peer::end(session, ctx, End::Answered(status)) == attempt::Next::Retry {
            // Nothing went to the client yet: try again, elsewhere if possible.
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream answered with a retryable status",
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward::client_response(resp, ctx);
        if stream::answered(resp) {
            stream::opened(ctx);
        }
        if ctx.cache.is_some() && session.subrequest_ctx.is_none() {
            cache::decorate(session, resp, ctx);
        }
        if let Some(route) = ctx.route().filter(|r| r.response_transform.is_some()) {
            let compression_follows = route.compression.is_some();
            reshape::start(session.req_header(), resp, ctx, compression_follows);
        }
        if ctx.after.idempotency.is_some() {
            // The answer as the client gets it before encoding: a replay is encoded (or
            // not) on its own.
            after::on_response(resp, ctx);
        }
        if let Some(c) = ctx.route().and_then(|r| r.compression.as_ref()) {
            let req = session.req_header();
            let accept = req.headers.get(http::header::ACCEPT_ENCODING);
            let encoder = c.start(resp, accept, req.method == http::Method::HEAD);
            ctx.encoder = encoder;
            if ctx.reshape.is_some() {
                reshape::unframe(resp);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(open), Some(b)) = (&mut ctx.stream, body.as_ref()) {
            open.to_client(b.len());
        }
        if ctx.reshape.is_some() {
            reshape::body(session.req_header(), body, end_of_stream, ctx);
        }
        if ctx.after.idempotency.is_some() {
            after::on_body(body.as_ref(), end_of_stream, ctx);
        }
        if let Some(encoder) = &mut ctx.encoder {
            let input = body.as_deref().unwrap_or_default();
            let out = encoder.encode(input, end_of_stream).map_err(|e| {
                Error::explain(
                    ErrorType::InternalError,
                    format!("compressing the answer failed: {e}"),
                )
            })?;
            // An empty piece would read as the end of a chunked body.
            *body = (!out.is_empty()).then_some(out);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = gateway_error(e).cloned().or_else(|| respond::classify(e));
        let code = match &err {
            Some(err) if session.response_written().is_none() => {
                respond::write_error(session, ctx, err, true).await
            }
            Some(err) => err.status_and_code().0.as_u16(),
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        // The gateway's own refusals, and clients that went away, are reported by the
        // access log (status 0 for the latter), not as errors.
        let client_gone = matches!(error.esource(), ErrorSource::Downstream)
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        client_gone
            || matches!(
                gateway_error(error),
                Some(GatewayError::BodyTooLarge { .. } | GatewayError::UpstreamUnavailable)
            )
    }

    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        // Path only: a query string may carry a credential.
        let req = session.req_header();
        format!(
            "{} {} route={} request_id={}",
            req.method,
            req.uri.path(),
            ctx.route_name(),
            ctx.request_id()
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        peer::finish(ctx);
        peer::end_span(ctx, 0, None);
        let stream = if ctx.stream.is_some() {
            stream::closed(ctx, e)
        } else {
            None
        };
        if let Some(cx) = ctx.trace.request.take() {
            if let Some(s) = &stream {
                crate::telemetry::stream_ended(&cx, s.reason, s.from_client, s.to_client);
            }
            let error =
                e.map(|e| gateway_error(e).map_or_else(|| e.to_string(), |g| g.to_string()));
            crate::telemetry::end(&cx, status, error);
        }
        if ctx.after.pending() {
            after::finish(ctx, status, e.is_none()).await;
        }
        if session.subrequest_ctx.is_none() {
            log::finish(session, ctx, status, stream.as_ref());
        } else {
            // A cache's background refresh: not a client's request, not counted as one.
            tracing::debug!(
                route = ctx.route_name(),
                status,
                "cache refreshed in the background"
            );
        }
    }
}
