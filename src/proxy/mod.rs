//! The `ProxyHttp` implementation: a thin dispatcher that hands each phase to its module.

pub mod admit;
pub mod bff;
pub mod client;
pub mod ctx;
pub mod forward;
pub mod guard;
pub mod ids;
pub mod inspect;
pub mod log;
pub mod respond;
pub mod retry;
pub mod router;
pub mod throttle;

use crate::error::GatewayError;
use crate::metrics;
use crate::runtime::Store;
use async_trait::async_trait;
use bytes::Bytes;
use ctx::Ctx;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// The gateway's proxy logic, one instance per listener.
pub struct Gateway {
    store: Arc<Store>,
}

impl Gateway {
    pub fn new(store: Arc<Store>) -> Self {
        Gateway { store }
    }
}

/// A Pingora error that stands for a `GatewayError` already stored in the context.
fn gateway_failure(ctx: &mut Ctx, err: GatewayError) -> Box<Error> {
    let msg = err.to_string();
    ctx.error = Some(err);
    Error::explain(ErrorType::InternalError, msg)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.store.load())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let ssl = session.digest().and_then(|d| d.ssl_digest.clone());
        ctx.tls = ssl.is_some();
        ctx.client_cert = ssl.and_then(|s| {
            let cert = s.extension.get::<Arc<crate::tls::client::ClientCert>>()?;
            Some(cert.clone())
        });
        let mut outcome = screen(session, ctx).await;
        if ctx.span.is_none() && !ctx.traceparent.is_empty() {
            let req = session.req_header();
            ctx.span = crate::telemetry::request(
                ctx.traceparent.to_str().unwrap_or_default(),
                req.method.as_str(),
                req.uri.path(),
            );
        }
        if outcome.is_ok() {
            if let Some(agg) = ctx.route().and_then(|r| r.aggregate.clone()) {
                // A backend-for-frontend route answers here; nothing is proxied.
                outcome = bff::answer(session, ctx, &agg).await;
                if outcome.is_ok() {
                    return Ok(true);
                }
            }
        }
        match outcome {
            Ok(()) => {
                // A body up to 64 KiB is kept so that a retry can send it again.
                if ctx
                    .route()
                    .and_then(|r| r.upstream.as_ref())
                    .is_some_and(|u| u.retry.is_some())
                {
                    session.as_mut().enable_retry_buffering();
                }
                Ok(false)
            }
            Err(err) => {
                respond::write_error(session, ctx, &err, false).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(upstream) = ctx.route().and_then(|r| r.upstream.clone()) else {
            return Err(gateway_failure(ctx, GatewayError::NoRoute));
        };
        let key = if upstream.hashes() {
            client::hash_key(session.req_header(), ctx, &upstream.hash_key)
        } else {
            Vec::new()
        };
        if !std::mem::take(&mut ctx.stale) {
            retry::before_try(ctx).await;
            ctx.tries += 1;
        }
        // Open breakers and unhealthy targets are skipped; with none left the answer is an
        // immediate 503.
        let Some(backend) = upstream.select_for(&key, &ctx.tried) else {
            return Err(gateway_failure(ctx, GatewayError::UpstreamUnavailable));
        };
        retry::count_retry(ctx);
        ctx.tried.push(backend.addr.clone());
        ctx.target = Some(backend.addr.clone());
        ctx.upstream_status = None;
        ctx.upstream_started = Some(Instant::now());
        if let Some(cx) = &ctx.span {
            let attrs = vec![
                opentelemetry::KeyValue::new("gateway.upstream", upstream.name.to_string()),
                opentelemetry::KeyValue::new("server.address", backend.addr.to_string()),
                opentelemetry::KeyValue::new("gateway.try", i64::from(ctx.tries)),
            ];
            ctx.try_span = crate::telemetry::child(cx, "gateway.upstream", attrs);
        }
        Ok(upstream.peer(&backend))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        retry::record(ctx, false);
        end_try(ctx, 0, Some(e.to_string()));
        e.set_retry(retry::may_retry(session, ctx));
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
        end_try(ctx, 0, Some(e.to_string()));
        if std::mem::take(&mut ctx.retrying) {
            // Decided (and taken from the budget) when the upstream's status arrived.
            e.set_retry(true);
            return e;
        }
        let reused_only = matches!(e.retry, pingora_error::RetryType::ReusedOnly);
        if reused_only
            && ctx.error.is_none()
            && retry::stale_connection(session, upstream_reused, ctx)
        {
            ctx.stale = true;
            e.set_retry(true);
            return e;
        }
        // A failure before the upstream answered counts against the target; the gateway's
        // own refusals (a body over the limit) and failures mid-answer do not retry.
        let before_answer = ctx.upstream_status.is_none() && ctx.error.is_none();
        if before_answer && matches!(e.esource(), pingora_error::ErrorSource::Upstream) {
            retry::record(ctx, false);
        }
        e.set_retry(before_answer && retry::may_retry(session, ctx));
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward::upstream_request(session.req_header(), up, ctx);
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            if let Err(err) = admit::count_body(ctx, b.len()) {
                return Err(gateway_failure(ctx, err));
            }
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
        end_try(ctx, status, None);
        let failed = crate::upstream::retry::retryable_status(status);
        retry::record(ctx, !failed);
        if failed && retry::may_retry(session, ctx) {
            // Nothing went to the client yet: try again, elsewhere if possible.
            if let Some(up) = ctx.upstream_name() {
                metrics::UPSTREAM_ERRORS
                    .with_label_values(&[up, "status"])
                    .inc();
            }
            ctx.retrying = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream answered with a retryable status",
            ));
        }
        ctx.upstream_status = Some(status);
        if let (Some(up), Some(t)) = (ctx.upstream_name(), ctx.upstream_started) {
            metrics::UPSTREAM_DURATION
                .with_label_values(&[up])
                .observe(t.elapsed().as_secs_f64());
            if resp.status.is_server_error() {
                metrics::UPSTREAM_ERRORS
                    .with_label_values(&[up, "status"])
                    .inc();
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward::client_response(resp, ctx);
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = match ctx.error.take() {
            Some(err) => Some(err),
            None => respond::classify(e, ctx),
        };
        let code = match &err {
            Some(err) if session.response_written().is_none() => {
                respond::write_error(session, ctx, err, true).await
            }
            Some(err) => err.status_and_code().0.as_u16(),
            None => 0,
        };
        ctx.error = err;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, error: &Error) -> bool {
        // The gateway's own refusals, and clients that went away, are reported by the
        // access log (status 0 for the latter), not as errors.
        let client_gone = matches!(error.esource(), pingora_error::ErrorSource::Downstream)
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        client_gone
            || matches!(
                ctx.error,
                Some(GatewayError::BodyTooLarge { .. }) | Some(GatewayError::UpstreamUnavailable)
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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        end_try(ctx, 0, None);
        if let Some(cx) = ctx.span.take() {
            let error = ctx.error.as_ref().map(ToString::to_string);
            crate::telemetry::end(&cx, status, error);
        }
        log::finish(session, ctx, status);
    }
}

/// Steps 1 to 6: route, size limits, authentication, rate limits, validation.
async fn screen(session: &mut Session, ctx: &mut Ctx) -> std::result::Result<(), GatewayError> {
    if let admit::Outcome::Reject(err) = admit::admit(session.req_header(), ctx) {
        return Err(err);
    }
    guard::check(session.req_header(), ctx).await?;
    throttle::check(session.req_header(), ctx).await?;
    inspect::check(session, ctx).await
}

/// Ends the current upstream try's span, if one is open.
fn end_try(ctx: &mut Ctx, status: u16, error: Option<String>) {
    if let Some(cx) = ctx.try_span.take() {
        crate::telemetry::end(&cx, status, error);
    }
}
