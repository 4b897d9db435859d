//! `response.transform` on the answers Pingora proxies (and serves from the cache): a 2xx
//! JSON answer of at most 8 MiB is collected, edited, and sent whole (before compression);
//! any other answer, or one that turns out larger, streams untouched.

use super::ctx::Ctx;
use super::forward::RequestValues;
use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use pingora_http::{RequestHeader, ResponseHeader};

/// Larger answers pass untouched.
pub const MAX_ANSWER: usize = 8 << 20;

/// An answer being collected for the route's response transform.
#[derive(Default)]
pub struct Reshape {
    buf: BytesMut,
    /// Over [`MAX_ANSWER`]: what was collected went out as it was; the rest streams.
    passthrough: bool,
}

/// Whether an answer is one the transform edits: 2xx with a body, JSON, not encoded, not
/// known to be over the bound.
fn editable(resp: &ResponseHeader, head_only: bool) -> bool {
    let status = resp.status.as_u16();
    if !(200..300).contains(&status) || matches!(status, 204 | 206) || head_only {
        return false;
    }
    let json = crate::validate::is_json_media_type(
        resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
    );
    let encoded = resp
        .headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let too_large = resp
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .is_some_and(|n| n > MAX_ANSWER as u64);
    json && !encoded && !too_large
}

/// `response_filter`: starts collecting when the route transforms this answer; the head
/// loses what the edit changes (validators, ranges, and the length: at once, or with
/// `compression_follows` after the compression has decided on the upstream's length, so
/// that `min_size` still counts; then [`unframe`] follows it).
#[inline(never)]
pub fn start(
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
    compression_follows: bool,
) {
    if ctx
        .route()
        .and_then(|r| r.response_transform.as_ref())
        .is_none()
    {
        return;
    }
    if !editable(resp, req.method == http::Method::HEAD) {
        return;
    }
    resp.remove_header(&ETAG);
    resp.remove_header(&ACCEPT_RANGES);
    if !compression_follows {
        unframe(resp);
    }
    ctx.reshape = Some(Box::default());
}

/// The edited answer's length is known only at its end: it goes chunked.
pub fn unframe(resp: &mut ResponseHeader) {
    resp.remove_header(&CONTENT_LENGTH);
    let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
}

/// `response_body_filter`: collects the answer; at its end, the edited answer takes the
/// place of the last piece.
#[inline(never)]
pub fn body(req: &RequestHeader, body: &mut Option<Bytes>, end: bool, ctx: &mut Ctx) {
    let Some(mut r) = ctx.reshape.take() else {
        return;
    };
    if r.passthrough {
        ctx.reshape = Some(r);
        return;
    }
    if let Some(piece) = body.take() {
        if r.buf.len() + piece.len() > MAX_ANSWER {
            let mut all = std::mem::take(&mut r.buf);
            all.extend_from_slice(&piece);
            *body = Some(all.freeze());
            r.passthrough = true;
            ctx.reshape = Some(r);
            return;
        }
        r.buf.extend_from_slice(&piece);
    }
    if !end {
        ctx.reshape = Some(r);
        return;
    }
    let collected = r.buf.freeze();
    let Some(t) = ctx
        .route()
        .and_then(|route| route.response_transform.clone())
    else {
        *body = Some(collected);
        return;
    };
    let values = RequestValues { req, ctx };
    // An answer that says JSON but is not is sent as it came.
    *body = Some(crate::transform::apply_bytes(&t, &collected, &values).unwrap_or(collected));
}
