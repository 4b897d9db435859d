//! Steps 3 and 4 of a request: authentication and authorization, counted by reason.

use super::ctx::Ctx;
use crate::auth::{self, Failure, Reason};
use crate::error::GatewayError;
use crate::metrics;
use pingora_http::RequestHeader;

fn count(ctx: &Ctx, reason: Reason) {
    metrics::AUTH_FAILURES
        .with_label_values(&[ctx.route_name(), reason.as_str()])
        .inc();
}

/// Authenticates and authorizes the request for its route; the identity lands in `ctx`.
pub async fn check(req: &RequestHeader, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let snapshot = ctx.snapshot.clone();
    let Some(route) = ctx.route() else {
        return Ok(());
    };
    let route_auth = &route.auth;
    let cert = ctx.client_cert.as_deref();
    match snapshot
        .identities
        .authenticate(route_auth, req, cert)
        .await
    {
        Ok(id) => ctx.identity = id,
        Err(Failure { reason, token }) => {
            count(ctx, reason);
            return Err(GatewayError::Unauthorized { reason, token });
        }
    }
    let Some(route) = ctx.route() else {
        return Ok(());
    };
    if let Err(scope) = auth::authorize(&route.auth, ctx.identity.as_ref()) {
        let scope = scope.to_string();
        count(ctx, Reason::Scope);
        return Err(GatewayError::Forbidden { scope });
    }
    Ok(())
}
