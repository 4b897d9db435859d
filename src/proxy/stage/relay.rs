//! Forwarding a request whose body the gateway has already read whole and that Pingora
//! cannot send again: Pingora re-sends a body read before proxying only from its retry
//! buffer, which holds 64 KiB. A validated body larger than that is sent here, through the
//! same upstream selection, retry policy, breakers and connection pool, and the answer is
//! streamed back to the client as it arrives.

use super::Flow;
use crate::error::GatewayError;
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use crate::upstream::client::{self, CallError};
use http::header;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Request headers that describe the client's connection or its framing; the gateway sends
/// the body it holds with its own Content-Length.
const NOT_FORWARDED: [header::HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    header::CONTENT_LENGTH,
    header::PROXY_AUTHORIZATION,
];

/// The request as it goes upstream: the proxy's edits, then framing for `len` body bytes.
pub(crate) fn upstream_request(client: &RequestHeader, ctx: &Ctx, len: usize) -> RequestHeader {
    let mut up = client.clone();
    let nominated: Vec<header::HeaderName> = client
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| header::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in NOT_FORWARDED.iter().chain(&nominated) {
        up.remove_header(h);
    }
    up.remove_header("keep-alive");
    up.remove_header("proxy-connection");
    crate::proxy::forward::upstream_request(client, &mut up, ctx);
    let _ = up.insert_header(header::CONTENT_LENGTH, len);
    up
}

fn failure(e: CallError) -> GatewayError {
    match e {
        CallError::Unavailable => GatewayError::UpstreamUnavailable,
        CallError::Timeout => GatewayError::UpstreamTimeout,
        CallError::Connect | CallError::Reset | CallError::TooLarge => GatewayError::BadGateway,
    }
}

/// When the validated body is too large for Pingora to send: sends the request with it
/// and streams the answer to the client.
pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    if !ctx.body.relay {
        return Ok(Flow::Next);
    }
    forward(route, session, ctx).await.map(|()| Flow::Answered)
}

/// Sends the request with the body in `ctx.body.held` and streams the answer to the
/// client. An error is returned only while nothing has been written to the client.
async fn forward(route: &Route, session: &mut Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
    crate::proxy::traffic::choose(session.req_header(), ctx);
    crate::proxy::traffic::mirror(session, ctx);
    crate::proxy::traffic::count_upstream_request(ctx);
    let _ = route;
    let upstream = ctx.upstream().cloned().ok_or(GatewayError::NoRoute)?;
    let body = ctx.body.held.clone().unwrap_or_default();
    let req = upstream_request(session.req_header(), ctx, body.len());
    let key = match upstream.hashes() {
        true => crate::proxy::client::hash_key(session.req_header(), ctx, &upstream.hash_key),
        false => Vec::new(),
    };
    ctx.tries.started = Some(std::time::Instant::now());
    let mut live = client::open(&upstream, &key, &req, body)
        .await
        .map_err(failure)?;
    ctx.tries.target = Some(live.target.clone());
    ctx.tries.status = Some(live.header.status.as_u16());
    let mut head = live.header.clone();
    crate::proxy::forward::client_response(&mut head, ctx);
    // The route's response transform applies here as on answers Pingora proxies.
    let client = ctx
        .route()
        .is_some_and(|r| r.response_transform.is_some())
        .then(|| session.req_header().clone());
    if let Some(req) = &client {
        crate::proxy::reshape::start(req, &mut head, ctx, false);
    }
    crate::proxy::after::on_response(&head, ctx);
    if session
        .write_response_header(Box::new(head), false)
        .await
        .is_err()
    {
        return Ok(());
    }
    loop {
        match live.chunk().await {
            Ok(Some(chunk)) => {
                let mut piece = Some(chunk);
                if let (Some(req), true) = (&client, ctx.reshape.is_some()) {
                    crate::proxy::reshape::body(req, &mut piece, false, ctx);
                }
                let Some(chunk) = piece else { continue };
                crate::proxy::after::on_body(Some(&chunk), false, ctx);
                if session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok(None) => break,
            Err(_) => {
                // The answer broke off after it started: the client sees the connection
                // close rather than a complete-looking answer.
                session.set_keepalive(None);
                return Ok(());
            }
        }
    }
    // A transformed answer is sent whole at its end.
    let mut last = None;
    if let (Some(req), true) = (&client, ctx.reshape.is_some()) {
        crate::proxy::reshape::body(req, &mut last, true, ctx);
    }
    crate::proxy::after::on_body(last.as_ref(), true, ctx);
    if session.write_response_body(last, true).await.is_ok() {
        live.finish().await;
    }
    Ok(())
}
