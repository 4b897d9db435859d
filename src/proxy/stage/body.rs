//! The request body, read whole before anything goes upstream, by the stages that need
//! it (validation, webhook signatures, idempotency fingerprints, aggregate calls): read
//! once, bounded by the route's limit and `limits.body_timeout`, and held in `ctx.body`.

use crate::error::GatewayError;
use crate::proxy::ctx::Ctx;
use bytes::Bytes;
use pingora_proxy::Session;

/// Whether the request comes with a body (chunked, or a Content-Length other than 0).
pub fn announced(req: &pingora_http::RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The whole body: the one already held, or read now and held. Pingora's retry buffer
/// keeps up to 64 KiB of it to send upstream as it was; a larger one is sent by
/// [`super::relay`] (`ctx.body.relay`).
pub async fn hold(session: &mut Session, ctx: &mut Ctx, limit: u64) -> Result<Bytes, GatewayError> {
    if let Some(b) = &ctx.body.held {
        return Ok(b.clone());
    }
    let body = Bytes::from(read_body(session, ctx, limit).await?);
    ctx.body.relay = session.as_ref().retry_buffer_truncated();
    ctx.body.held = Some(body.clone());
    Ok(body)
}

async fn read_body(session: &mut Session, ctx: &Ctx, limit: u64) -> Result<Vec<u8>, GatewayError> {
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
