//! Compiles a route's `request.transform` and `response.transform`, checking request
//! pointers against the route's request schema.

use crate::config::policy::RouteDef;
use crate::config::PolicySource;
use crate::template::Scope;
use crate::transform::Transform;
use std::sync::Arc;

/// The route's (request, response) transforms. Problems go to `err`; `warnings` gets
/// what cannot be checked (`file:line: warning: ...`).
pub fn compile(
    src: &PolicySource,
    at: &str,
    def: &RouteDef,
    scope: &Scope<'_>,
    err: &mut dyn FnMut(&'static str, String),
    warnings: &mut Vec<String>,
) -> (Option<Arc<Transform>>, Option<Arc<Transform>>) {
    let request = def.request.as_ref().and_then(|r| {
        let t = Transform::compile(r.transform.as_ref()?, scope)
            .map_err(|e| err(".request.transform", e))
            .ok()
            // An empty block edits nothing: no stage, no body held for it.
            .filter(|t| !t.is_empty())?;
        let schema = r
            .schema
            .as_ref()
            .and_then(|s| super::validation::schema_json(src, s));
        if let Some(schema) = schema {
            let impossible = t.impossible_paths(&schema);
            for (pointer, reason) in &impossible {
                err(
                    ".request.transform",
                    format!(
                        "{pointer} cannot exist in a body valid under the route's schema: {reason}"
                    ),
                );
            }
            if !impossible.is_empty() {
                return None;
            }
        }
        Some(Arc::new(t))
    });
    let response = def.response.as_ref().and_then(|r| {
        let t = Transform::compile(r.transform.as_ref()?, scope)
            .map_err(|e| err(".response.transform", e))
            .ok()
            .filter(|t| !t.is_empty())?;
        warnings.push(
            src.problem(
                &format!("{at}.response.transform"),
                format!(
                    "warning: route {:?}: response.transform is not checked (answers have no schema); absent pointers change nothing",
                    def.name
                ),
            )
            .to_string(),
        );
        Some(Arc::new(t))
    });
    (request, response)
}
