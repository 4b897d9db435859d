//! Compiles a route's `request` validation: body and query schemas, and the body limit
//! that goes with them.

use super::snapshot::Settings;
use crate::config::policy::RequestDef;
use crate::config::PolicySource;
use crate::validate::{query::QueryValidator, schema, RouteValidation};
use std::path::PathBuf;
use std::sync::Arc;

/// The route's validation (if any) and its body limit. Problems go to `err` as
/// (field, message).
pub fn compile(
    src: &PolicySource,
    req: &RequestDef,
    settings: &Settings,
    referenced: &mut Vec<PathBuf>,
    err: &mut impl FnMut(&'static str, String),
) -> (Option<Arc<RouteValidation>>, u64) {
    // Bodies are validated whole before anything goes upstream, so memory per request is
    // bounded by this limit.
    let max_body = req.max_body.map_or(settings.max_body, |s| s.0);
    let body = req
        .schema
        .as_ref()
        .and_then(|s| match schema::compile(s, src.dir()) {
            Ok(c) => {
                referenced.extend(c.files);
                Some(c.validator)
            }
            Err(e) => {
                err(".request.schema", e);
                None
            }
        });
    let query = req.query_schema.as_ref().and_then(|s| {
        let compiled = schema::compile(s, src.dir())
            .map_err(|e| err(".request.query_schema", e))
            .ok()?;
        referenced.extend(compiled.files);
        let json = schema_json(src, s).unwrap_or_default();
        Some(QueryValidator::new(compiled.validator, &json))
    });
    let validation =
        (body.is_some() || query.is_some()).then(|| Arc::new(RouteValidation { body, query }));
    (validation, max_body)
}

/// A schema as written in a policy (inline, or a file relative to it) as JSON.
pub fn schema_json(src: &PolicySource, s: &serde_yaml::Value) -> Option<serde_json::Value> {
    match s {
        serde_yaml::Value::String(rel) => std::fs::read(src.dir().join(rel)).ok().and_then(|t| {
            serde_json::from_slice(&t)
                .or_else(|_| serde_yaml::from_slice(&t))
                .ok()
        }),
        other => serde_json::to_value(other).ok(),
    }
}
