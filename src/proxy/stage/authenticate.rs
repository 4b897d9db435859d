//! Steps 3 and 4 of a request: authentication and authorization, counted by reason.

use super::Flow;
use crate::auth::{self, Failure, Reason};
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use pingora_proxy::Session;

fn count(route: &Route, reason: Reason) {
    metrics::AUTH_FAILURES
        .with_label_values(&[&route.name, reason.as_str()])
        .inc();
}

/// Authenticates and authorizes the request for its route; the identity lands in `ctx`.
pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let cert = ctx.client.cert.as_deref();
    let req = session.req_header();
    match ctx
        .snapshot
        .identities
        .authenticate(&route.auth, req, cert)
        .await
    {
        Ok(id) => ctx.identity = id,
        Err(Failure { reason, token }) => {
            count(route, reason);
            return Err(GatewayError::Unauthorized { reason, token });
        }
    }
    if let Err(scope) = auth::authorize(&route.auth, ctx.identity.as_ref()) {
        let scope = scope.to_string();
        count(route, Reason::Scope);
        return Err(GatewayError::Forbidden { scope });
    }
    Ok(Flow::Next)
}
