//! The request pipeline after routing and size limits: the stages a route lists
//! (`Route::stages`, compiled from what the route uses, so a route pays only for its
//! features), run in order with one signature. A stage either lets the request go on or
//! answers it itself; a refusal is a [`GatewayError`], answered by `respond`.
//!
//! A new feature is a new file here, a variant of [`Stage`] and its line in
//! `runtime::compile::stages`.

pub mod aggregate;
pub mod authenticate;
pub mod body;
pub mod deliver;
pub mod idempotency;
pub mod rate_limit;
pub mod relay;
pub mod transform;
pub mod validate;
pub mod webhook;

use super::ctx::Ctx;
use crate::error::GatewayError;
use crate::runtime::{Route, Stage};
use pingora_proxy::Session;

/// What a stage did with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// On to the next stage, and then upstream.
    Next,
    /// The stage answered the client itself; nothing is proxied.
    Answered,
}

/// Runs one stage.
pub async fn run(
    stage: Stage,
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    match stage {
        Stage::Authenticate => authenticate::run(route, session, ctx).await,
        Stage::RateLimit => rate_limit::run(route, session, ctx).await,
        Stage::Webhook => webhook::run(route, session, ctx).await,
        Stage::Validate => validate::run(route, session, ctx).await,
        Stage::Transform => transform::run(route, session, ctx).await,
        Stage::Idempotency => idempotency::run(route, session, ctx).await,
        Stage::Aggregate => aggregate::run(route, session, ctx).await,
        Stage::Deliver => deliver::run(route, session, ctx).await,
        Stage::Relay => relay::run(route, session, ctx).await,
    }
}

/// Runs every stage of the route, in order, until one answers or refuses.
pub async fn all(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    for stage in &route.stages {
        if run(*stage, route, session, ctx).await? == Flow::Answered {
            return Ok(Flow::Answered);
        }
    }
    Ok(Flow::Next)
}
