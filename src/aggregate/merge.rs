//! Merging the calls' answers into one JSON document.
//!
//! `nest`: `{"profile": ..., "orders": ...}`. `root`: the answers (JSON objects) merged key
//! by key in call order, a later call winning a clash. Failed optional calls are left out
//! and listed in `"_errors": {"orders": "timeout"}`; a failed required call fails the whole.

use super::{Aggregate, Failure, Outcome};
use crate::config::policy::Merge;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The merged document, and whether an optional call is missing from it.
#[derive(Debug, PartialEq)]
pub struct Merged {
    pub body: Value,
    pub partial: bool,
}

/// A required call that failed: its name and why.
#[derive(Debug, PartialEq)]
pub struct RequiredFailed {
    pub call: Arc<str>,
    pub failure: Failure,
}

/// `outcomes` in call order; `None` for a call abandoned after a required one failed.
pub fn merge(agg: &Aggregate, outcomes: &[Option<Arc<Outcome>>]) -> Result<Merged, RequiredFailed> {
    let mut out = Map::new();
    let mut errors = Map::new();
    for (call, outcome) in agg.calls.iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        let value = match (&**outcome, agg.merge) {
            (Ok(Value::Object(m)), Merge::Root) => Ok(Some(m.clone())),
            (Ok(_), Merge::Root) => Err(Failure::NotAnObject),
            (Ok(v), Merge::Nest) => {
                out.insert(call.name.to_string(), v.clone());
                Ok(None)
            }
            (Err(f), _) => Err(f.clone()),
        };
        match value {
            Ok(Some(fields)) => out.extend(fields),
            Ok(None) => {}
            Err(failure) if call.required => {
                return Err(RequiredFailed {
                    call: call.name.clone(),
                    failure,
                })
            }
            Err(failure) => {
                errors.insert(call.name.to_string(), Value::String(failure.to_string()));
            }
        }
    }
    let partial = !errors.is_empty();
    if partial {
        out.insert("_errors".into(), Value::Object(errors));
    }
    Ok(Merged {
        body: Value::Object(out),
        partial,
    })
}
