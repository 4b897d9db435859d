//! Compiles a route's `aggregate` section: every call's upstream, path template and
//! dependencies checked, problems reported at the call's own line.

use super::{Aggregate, Call};
use crate::config::policy::{AggregateDef, CallBody};
use crate::config::{PolicySource, Problems};
use crate::template::{Scope, Template};
use crate::upstream::Upstream;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `at` is the section's dotted path (`routes.3.aggregate`); `scope` is the route's
/// template scope (its `calls` are ignored: each call gets its own dependencies).
pub fn compile(
    src: &PolicySource,
    at: &str,
    def: &AggregateDef,
    scope: &Scope<'_>,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    p: &mut Problems,
) -> Option<Aggregate> {
    let before = p.len();
    let mut bad = |field: &str, msg: String| p.push(src.problem(&format!("{at}{field}"), msg));
    if def.timeout.0.is_zero() {
        bad(
            ".timeout",
            "the aggregate timeout must be longer than zero".into(),
        );
    }
    if def.calls.is_empty() {
        bad(".calls", "an aggregate needs at least one call".into());
    }
    let mut names: Vec<String> = Vec::new();
    let mut calls = Vec::new();
    for (i, c) in def.calls.iter().enumerate() {
        let here = format!(".calls.{i}");
        if c.name.is_empty() || c.name.starts_with('_') {
            bad(
                &format!("{here}.name"),
                format!(
                    "call name {:?} must be non-empty and not start with `_`",
                    c.name
                ),
            );
        } else if names.contains(&c.name) {
            bad(
                &format!("{here}.name"),
                format!("call name {:?} is used twice", c.name),
            );
        }
        let upstream = upstreams.get(&c.upstream).cloned();
        if upstream.is_none() {
            bad(
                &format!("{here}.upstream"),
                format!("unknown upstream {:?}", c.upstream),
            );
        }
        let mut deps = Vec::new();
        for d in &c.depends_on {
            match names.iter().position(|n| n == d) {
                Some(j) => deps.push(j),
                None => bad(
                    &format!("{here}.depends_on"),
                    format!(
                        "call {:?} depends on {d:?}, which is not an earlier call",
                        c.name
                    ),
                ),
            }
        }
        let call_scope = Scope {
            path_params: scope.path_params,
            claims: scope.claims,
            consumer: scope.consumer,
            calls: &c.depends_on,
        };
        let path = Template::compile(&c.path, &call_scope)
            .map_err(|e| {
                let hint = if e.contains("calls.") {
                    " (name the call in depends_on)"
                } else {
                    ""
                };
                bad(&format!("{here}.path"), format!("{e}{hint}"))
            })
            .ok();
        if matches!(c.timeout, Some(t) if t.0.is_zero()) {
            bad(
                &format!("{here}.timeout"),
                "a call timeout must be longer than zero".into(),
            );
        }
        names.push(c.name.clone());
        if let (Some(upstream), Some(path)) = (upstream, path) {
            calls.push(Call {
                name: c.name.as_str().into(),
                upstream,
                path,
                required: c.required,
                timeout: c.timeout.map(|t| t.0),
                method: c.method.as_ref().map_or(http::Method::GET, |m| m.0.clone()),
                forward_body: c.body == Some(CallBody::Forward),
                deps,
            });
        }
    }
    if p.len() > before {
        return None;
    }
    Some(Aggregate {
        timeout: def.timeout.0,
        merge: def.merge,
        forwards_body: calls.iter().any(|c| c.forward_body),
        calls,
    })
}
