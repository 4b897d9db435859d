//! Backend-for-frontend routes: after the checks of steps 1 to 6, the route's aggregate
//! calls are made, merged, and answered here; nothing is proxied.

use super::ctx::Ctx;
use super::forward::{gateway_headers, RequestValues};
use crate::aggregate::merge::merge;
use crate::aggregate::run::{run, Inputs};
use crate::aggregate::Aggregate;
use crate::error::GatewayError;
use crate::metrics;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

pub async fn answer(
    session: &mut Session,
    ctx: &mut Ctx,
    agg: &Aggregate,
) -> Result<(), GatewayError> {
    let body = match (&ctx.body, agg.forwards_body) {
        (Some(b), true) => Some(b.clone()),
        (None, true) => {
            let limit = ctx.route().map_or(0, |r| r.max_body);
            Some(bytes::Bytes::from(
                super::inspect::read_body(session, ctx, limit).await?,
            ))
        }
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
            true => super::client::hash_key(&client, ctx, &c.upstream.hash_key),
            false => Vec::new(),
        })
        .collect();
    let values = RequestValues { req: &client, ctx };
    let inputs = Inputs {
        values: &values,
        headers: &headers,
        body: body.map(|b| (b, content_type)),
        keys,
        span: ctx.span.as_ref(),
    };
    let outcomes = run(agg, &inputs).await;
    let route = ctx.route_name();
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
    let merged = merge(agg, &outcomes).map_err(|f| GatewayError::CallFailed {
        call: f.call.to_string(),
        reason: f.failure.to_string(),
    })?;
    let body = bytes::Bytes::from(serde_json::to_vec(&merged.body).unwrap_or_default());
    let mut head =
        ResponseHeader::build(http::StatusCode::OK, Some(6)).map_err(|_| GatewayError::Internal)?;
    let _ = head.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len());
    let _ = head.insert_header("X-Request-Id", ctx.request_id.clone());
    if merged.partial {
        let _ = head.insert_header("x-gateway-partial", "true");
    }
    super::throttle::add_headers(&mut head, ctx);
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
