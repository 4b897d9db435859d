//! Request validation (step 6): JSON Schema for bodies and query strings, content types.

pub mod json;
pub mod query;
pub mod schema;

use crate::error::{Detail, GatewayError};
use jsonschema::Validator;
use serde_json::Value;

/// Most schema errors reported in one answer.
pub const MAX_DETAILS: usize = 20;

/// What a route validates.
pub struct RouteValidation {
    pub body: Option<Validator>,
    pub query: Option<query::QueryValidator>,
}

impl std::fmt::Debug for RouteValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteValidation")
            .field("body", &self.body.is_some())
            .field("query", &self.query.is_some())
            .finish()
    }
}

/// `application/json` or `application/*+json`, with any parameters.
pub fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && sub.len() > 5)
}

/// Every schema error of `instance`, at most [`MAX_DETAILS`], as JSON Pointer and message.
pub fn errors(validator: &Validator, instance: &Value) -> Vec<Detail> {
    validator
        .iter_errors(instance)
        .take(MAX_DETAILS)
        .map(|e| Detail {
            path: e.instance_path().to_string(),
            message: json::truncate(&e.to_string(), 200),
        })
        .collect()
}

/// Validates a whole body: JSON (strictly parsed), then the schema.
pub fn check_body(validator: &Validator, body: &[u8]) -> Result<(), GatewayError> {
    let value = json::parse(body).map_err(GatewayError::BadRequest)?;
    // Most bodies are valid: `is_valid` stops at nothing and builds no error; the details
    // are collected (a second pass) only for a body that fails.
    if validator.is_valid(&value) {
        return Ok(());
    }
    let details = errors(validator, &value);
    if details.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::Invalid {
            message: "request body does not match the schema".into(),
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(Some(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/+json",
            "json",
            "",
        ] {
            assert!(!is_json_media_type(Some(bad)), "{bad}");
        }
        assert!(!is_json_media_type(None));
    }

    #[test]
    fn body_errors_are_pointers() {
        let schema = serde_json::json!({
            "type": "object", "required": ["email"],
            "properties": {"email": {"type": "string", "format": "email"}, "tags": {"type": "array", "items": {"type": "integer"}}}
        });
        let v = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        assert!(check_body(&v, br#"{"email":"a@example.com"}"#).is_ok());
        let Err(GatewayError::Invalid { details, .. }) =
            check_body(&v, br#"{"email":"x","tags":[1,"a"]}"#)
        else {
            panic!("expected schema errors");
        };
        let paths: Vec<&str> = details.iter().map(|d| d.path.as_str()).collect();
        assert!(
            paths.contains(&"/email") && paths.contains(&"/tags/1"),
            "{paths:?}"
        );
        assert!(matches!(
            check_body(&v, b"{"),
            Err(GatewayError::BadRequest(_))
        ));
        let many: String = format!("[{}]", vec!["\"x\""; 100].join(","));
        let list = jsonschema::options()
            .build(&serde_json::json!({"items": {"type": "integer"}}))
            .unwrap();
        let Err(GatewayError::Invalid { details, .. }) = check_body(&list, many.as_bytes()) else {
            panic!("expected schema errors");
        };
        assert_eq!(details.len(), MAX_DETAILS);
    }
}
