//! Backend-for-frontend routes: after the checks of steps 1 to 6, the route's aggregate
//! calls are made, merged, and answered here; nothing is proxied.

use super::Flow;
use crate::aggregate::merge::merge;
use crate::aggregate::run::{self as calls, Inputs};
use crate::aggregate::Aggregate;
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::proxy::forward::{gateway_headers, RequestValues};
use crate::runtime::Route;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let Some(agg) = &route.aggregate else {
        return Ok(Flow::Next);
    };
    answer(route, session, ctx, agg)
        .await
        .map(|()| Flow::Answered)
}

async fn answer(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
    agg: &Aggregate,
) -> Result<(), GatewayError> {
    let body = match (&ctx.body.held, agg.forwards_body) {
        (Some(b), true) => Some(b.clone()),
        (None, true) => Some(super::body::hold(session, ctx, route.max_body).await?),
        (_, false) => None,
    };
    let client = session.req_header().clone();
    let content_type = client.headers.get(http::header::CONTENT_TYPE).cloned();
    let mut headers =
        RequestHeader::build(http::Method::GET, b"/", None).map_err(|_| GatewayError::Internal)?;
    gateway_headers(&client, &mut headers, ctx);
    let keys = agg
        .calls
        .iter()
        .map(|c| match c.upstream.hashes() {
            true => crate::proxy::client::hash_key(&client, ctx, &c.upstream.hash_key),
            false => Vec::new(),
        })
        .collect();
    let values = RequestValues { req: &client, ctx };
    let inputs = Inputs {
        values: &values,
        headers: &headers,
        body: body.map(|b| (b, content_type)),
        keys,
        span: ctx.trace.request.as_ref(),
    };
    let outcomes = calls::run(agg, &inputs).await;
    let transform = route.response_transform.clone();
    let header_ops = route.traffic.response_headers.as_ref();
    let route = &*route.name;
    for (call, outcome) in agg.calls.iter().zip(&outcomes) {
        let Some(outcome) = outcome else { continue };
        let label = match &**outcome {
            Ok(_) => "ok",
            Err(f) => f.outcome(),
        };
        metrics::AGGREGATE_CALLS
            .with_label_values(&[route, &call.name, label])
            .inc();
    }
    let mut merged = merge(agg, &outcomes).map_err(|f| GatewayError::CallFailed {
        call: f.call.to_string(),
        reason: f.failure.to_string(),
    })?;
    if let Some(t) = &transform {
        t.apply(&mut merged.body, &values);
    }
    let body = bytes::Bytes::from(serde_json::to_vec(&merged.body).unwrap_or_default());
    let mut head =
        ResponseHeader::build(http::StatusCode::OK, Some(6)).map_err(|_| GatewayError::Internal)?;
    let _ = head.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len());
    let _ = head.insert_known(&crate::proxy::ids::REQUEST_ID_HEADER, ctx.ids.id.clone());
    if merged.partial {
        let _ = head.insert_header("x-gateway-partial", "true");
    }
    super::rate_limit::add_headers(&mut head, ctx);
    ctx.cors_headers(&mut head);
    if let Some(ops) = header_ops {
        ops.apply(&mut head);
    }
    let head_only = client.method == http::Method::HEAD;
    // A client that went away is reported by the access log (status 0), not here.
    if session
        .write_response_header(Box::new(head), head_only)
        .await
        .is_ok()
        && !head_only
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
    Ok(())
}
