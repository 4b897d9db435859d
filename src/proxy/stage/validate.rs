//! Step 6 of a request: validation of the query and of the body, which is read whole
//! (bounded by the route's limit and `limits.body_timeout`) before anything goes upstream.

use super::Flow;
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use crate::validate::{check_body, is_json_media_type, RouteValidation};
use pingora_proxy::Session;

pub async fn read_body(
    session: &mut Session,
    ctx: &Ctx,
    limit: u64,
) -> Result<Vec<u8>, GatewayError> {
    // What is read here is kept by Pingora's retry buffer (up to 64 KiB) and sent upstream
    // as it was; a larger body goes through `relay`.
    session.as_mut().enable_retry_buffering();
    // A client that sent `Expect: 100-continue` waits for it before sending the body; the
    // upstream that would otherwise answer it is only asked once the body has been read, so
    // the gateway answers it, and the expectation does not go upstream.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && session.req_header().version == http::Version::HTTP_11 {
        let _ = session.as_mut().write_continue_response().await;
    }
    if expects_continue {
        session
            .req_header_mut()
            .remove_header(&http::header::EXPECT);
    }
    let deadline = tokio::time::Instant::now() + ctx.snapshot.settings.body_timeout;
    let mut body = Vec::with_capacity(
        session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .map_or(0, |n| n.min(limit as usize)),
    );
    loop {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Err(_) => return Err(GatewayError::RequestTimeout),
            Ok(Err(_)) => {
                return Err(GatewayError::BadRequest(
                    "the request body could not be read".into(),
                ))
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

async fn validate(
    session: &mut Session,
    ctx: &mut Ctx,
    v: &RouteValidation,
    limit: u64,
) -> Result<(), GatewayError> {
    if let Some(q) = &v.query {
        // The API-key query parameter is the gateway's credential, not the upstream's.
        let key_param = ctx
            .snapshot
            .identities
            .api_keys
            .as_ref()
            .and_then(|k| k.query.as_deref());
        q.check_except(session.req_header().uri.query(), key_param)?;
    }
    let Some(schema) = &v.body else {
        return Ok(());
    };
    // Methods without body semantics are validated only when they carry a body; POST, PUT
    // and PATCH always need one.
    let req = session.req_header();
    let bodyless_method = matches!(
        req.method,
        http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::OPTIONS
    );
    let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if bodyless_method && !has_body {
        return Ok(());
    }
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !is_json_media_type(content_type) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let body = read_body(session, ctx, limit).await?;
    check_body(schema, &body)?;
    // Kept for a backend-for-frontend call that forwards it, and for the relay when
    // Pingora's retry buffer could not hold it.
    ctx.body.relay = session.as_ref().retry_buffer_truncated();
    ctx.body.held = Some(body.into());
    Ok(())
}

/// Validates the request against its route's schemas; counts refusals.
pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let Some(v) = &route.validation else {
        return Ok(Flow::Next);
    };
    let result = validate(session, ctx, v, route.max_body).await;
    if let Err(
        GatewayError::Invalid { .. }
        | GatewayError::BadRequest(_)
        | GatewayError::UnsupportedMediaType,
    ) = &result
    {
        metrics::VALIDATION_FAILURES
            .with_label_values(&[&route.name])
            .inc();
    }
    result.map(|()| Flow::Next)
}
