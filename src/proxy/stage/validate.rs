//! Step 6 of a request: validation of the query and of the body, which is read whole
//! ([`super::body::hold`]) before anything goes upstream.

use super::Flow;
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use crate::validate::{check_body, is_json_media_type, RouteValidation};
use pingora_proxy::Session;

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
    let has_body = super::body::announced(req);
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
    let body = super::body::hold(session, ctx, limit).await?;
    check_body(schema, &body)?;
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
