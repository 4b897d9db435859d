//! `request.transform`: the JSON body, read whole (and validated, when the route has a
//! schema, by the stage before), edited and sent upstream by the gateway with its new
//! length ([`super::relay`]: Pingora's retry buffer would send the bytes as they came).
//! A request without a body, or whose body is not JSON, goes on untouched.

use super::Flow;
use crate::error::GatewayError;
use crate::proxy::ctx::Ctx;
use crate::proxy::forward::RequestValues;
use crate::runtime::Route;
use crate::validate::is_json_media_type;
use pingora_proxy::Session;

pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let Some(t) = route.request_transform.clone() else {
        return Ok(Flow::Next);
    };
    let req = session.req_header();
    let has_body = super::body::announced(req);
    let json = is_json_media_type(
        req.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if !has_body || !json {
        return Ok(Flow::Next);
    }
    let body = super::body::hold(session, ctx, route.max_body).await?;
    let client = session.req_header();
    let values = RequestValues { req: client, ctx };
    let Ok(edited) = crate::transform::apply_bytes(&t, &body, &values) else {
        // Not JSON after all (a schema would have refused it): sent as it came.
        return Ok(Flow::Next);
    };
    ctx.body.held = Some(edited);
    ctx.body.relay = true;
    Ok(Flow::Next)
}
