//! Writing the gateway's own error responses, and classifying Pingora's errors into them.

use super::ctx::Ctx;
use crate::error::GatewayError;
use crate::upstream::client::FailureKind;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::Duration;

/// Writes `err` as the contract's JSON error. Returns the status written. With `close`, the
/// response says `Connection: close`: the connection will not be reused (after a proxy
/// failure, or when an unread body is left on it).
pub async fn write_error(session: &mut Session, ctx: &Ctx, err: &GatewayError, close: bool) -> u16 {
    if close
        || matches!(
            err,
            GatewayError::BodyTooLarge { .. }
                | GatewayError::RequestTimeout
                | GatewayError::HeaderTooLarge(_)
                | GatewayError::Malformed(_)
        )
    {
        session.set_keepalive(None);
    }
    if super::grpc::is_grpc(session.req_header()) {
        return super::grpc::write_error(session, ctx, err).await;
    }
    let r = err.to_response(ctx.request_id());
    let status = r.status.as_u16();
    let Ok(mut head) = ResponseHeader::build(r.status, Some(5)) else {
        return status;
    };
    let _ = head.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = head.insert_header(http::header::CONTENT_LENGTH, r.body.len());
    let _ = head.insert_known(&crate::proxy::ids::REQUEST_ID_HEADER, ctx.ids.id.clone());
    for (k, v) in r.headers {
        let _ = head.insert_header(k, v);
    }
    super::stage::rate_limit::add_headers(&mut head, ctx);
    ctx.cors_headers(&mut head);
    let head_only = session.req_header().method == http::Method::HEAD;
    if let Err(e) = session
        .write_response_header(Box::new(head), head_only)
        .await
    {
        tracing::debug!(error = %e, "could not write error response header");
        return status;
    }
    if !head_only {
        if let Err(e) = session.write_response_body(Some(r.body), true).await {
            tracing::debug!(error = %e, "could not write error response body");
        }
    }
    if matches!(err, GatewayError::BodyTooLarge { .. }) {
        linger(session).await;
    }
    status
}

/// Answers a CORS preflight (the route has `cors`): 204, with the CORS headers when the
/// origin, method and headers asked about are allowed. Nothing is forwarded.
pub async fn write_preflight(session: &mut Session, ctx: &Ctx) {
    let req = session.req_header();
    let header = |h: http::header::HeaderName| req.headers.get(h).cloned();
    let (Some(origin), Some(method)) = (
        header(http::header::ORIGIN),
        header(http::header::ACCESS_CONTROL_REQUEST_METHOD),
    ) else {
        return;
    };
    let asked = header(http::header::ACCESS_CONTROL_REQUEST_HEADERS);
    let Some(cors) = ctx.route().and_then(|r| r.cors.as_ref()) else {
        return;
    };
    let Some(mut head) = cors.preflight(
        &origin,
        method.as_bytes(),
        asked.as_ref().map(|h| h.as_bytes()),
    ) else {
        return;
    };
    let _ = head.insert_known(&crate::proxy::ids::REQUEST_ID_HEADER, ctx.ids.id.clone());
    if let Err(e) = session.write_response_header(Box::new(head), true).await {
        tracing::debug!(error = %e, "could not write the preflight answer");
    }
}

/// Writes an answer the gateway holds (a replayed idempotent answer, a webhook duplicate):
/// its status, headers and body, with this request's id and rate headers. Returns whether
/// it was written whole.
pub async fn write_answer(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    headers: &[(&str, &[u8])],
    body: bytes::Bytes,
) -> bool {
    let Ok(mut head) = ResponseHeader::build(status, Some(headers.len() + 4)) else {
        return false;
    };
    for (k, v) in headers {
        if let Ok(v) = http::HeaderValue::from_bytes(v) {
            let _ = head.append_header(k.to_string(), v);
        }
    }
    // RFC 9110 §8.6: no Content-Length on a 204 or 304.
    if status != 204 && status != 304 {
        let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len());
    }
    let _ = head.insert_known(&crate::proxy::ids::REQUEST_ID_HEADER, ctx.ids.id.clone());
    super::stage::rate_limit::add_headers(&mut head, ctx);
    ctx.cors_headers(&mut head);
    let head_only =
        session.req_header().method == http::Method::HEAD || status == 204 || status == 304;
    if session
        .write_response_header(Box::new(head), head_only)
        .await
        .is_err()
    {
        return false;
    }
    head_only || session.write_response_body(Some(body), true).await.is_ok()
}

/// How much of a refused body is read and discarded, at most, before closing.
const LINGER_BYTES: usize = 16 << 20;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// A lingering close (as nginx does): after refusing a body, read and discard what the
/// client is still sending, for a bounded time and size, so that it sees the answer instead
/// of a reset on a half-written request.
async fn linger(session: &mut Session) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut read = 0;
    while read < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => read += chunk.len(),
            _ => break,
        }
    }
}

/// The answer for a Pingora error, or `None` when the client is gone and nothing can be
/// written.
pub fn classify(e: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    match e.esource() {
        ErrorSource::Upstream => {
            // Counted in `gateway_upstream_errors_total` when the try ended (`peer`).
            let (_, timed_out) = FailureKind::of(e);
            Some(match timed_out {
                true => GatewayError::UpstreamTimeout,
                false => GatewayError::BadGateway,
            })
        }
        ErrorSource::Downstream => match e.etype() {
            ReadError | WriteError | ConnectionClosed => None,
            ReadTimedout | WriteTimedout => None,
            _ => Some(GatewayError::BadRequest(
                "the request could not be read".into(),
            )),
        },
        ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
            HTTPStatus(400) => Some(GatewayError::BadRequest("malformed request".into())),
            _ => Some(GatewayError::Internal),
        },
    }
}
