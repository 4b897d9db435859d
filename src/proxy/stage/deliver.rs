//! `deliver` routes: after the checks of steps 1 to 6, the request (its method, path after
//! the rewrite, headers as they would go upstream, and body) is written to the store's
//! queue, and only then answered 202 with its delivery id. A store that cannot take it is a
//! 503 whatever `on_error` says: nothing is accepted that could be lost.

use super::Flow;
use crate::deliver::queue::{Message, QueueError};
use crate::error::GatewayError;
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Headers that describe one connection or one message's framing, not the request.
const NOT_KEPT: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
    "expect",
    "proxy-connection",
    "idempotency-key",
];

pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let Some(d) = &route.deliver else {
        return Ok(Flow::Next);
    };
    let body = match &ctx.body.held {
        Some(b) => b.clone(),
        None => super::body::hold(session, ctx, route.max_body).await?,
    };
    let client = session.req_header().clone();
    let mut up = client.clone();
    crate::proxy::forward::upstream_request(&client, &mut up, ctx);
    let headers = up
        .headers
        .iter()
        .filter(|(n, _)| !NOT_KEPT.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let message = Message {
        id: id.clone(),
        route: route.name.to_string(),
        method: client.method.as_str().to_string(),
        path: up
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), ToString::to_string),
        headers,
        body,
        accepted_at: crate::deliver::now_ms(),
    };
    let queue = ctx.snapshot.state.queue.clone();
    match queue.accept(&message, d.max_queued).await {
        Ok(()) => {}
        Err(QueueError::Full) => return Err(GatewayError::QueueFull),
        Err(e) => {
            tracing::warn!(route = %route.name, error = %e, "a delivery could not be queued");
            return Err(GatewayError::StoreUnavailable);
        }
    }
    let answer = serde_json::json!({
        "id": id,
        "status": "queued",
        "status_url": format!("/deliveries/{id}"),
    });
    let body = bytes::Bytes::from(answer.to_string());
    let mut head = ResponseHeader::build(http::StatusCode::ACCEPTED, Some(4))
        .map_err(|_| GatewayError::Internal)?;
    let _ = head.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len());
    let _ = head.insert_known(&crate::proxy::ids::REQUEST_ID_HEADER, ctx.ids.id.clone());
    super::rate_limit::add_headers(&mut head, ctx);
    ctx.cors_headers(&mut head);
    // The message is in the store: a client that went away still has its delivery.
    if session
        .write_response_header(Box::new(head), false)
        .await
        .is_ok()
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
    Ok(Flow::Answered)
}
