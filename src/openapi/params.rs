//! An operation's parameters and request body: path templates (the rest included),
//! the values a route is chosen by, the query schema's properties, the body schema.

use super::export::{carries_body, Template};
use super::facts::RouteFacts;
use crate::runtime::Route;
use http::Method;
use serde_json::{json, Value};

pub fn path_parameters(t: &Template) -> Vec<Value> {
    t.params
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if t.rest && i + 1 == t.params.len() {
                json!({
                    "name": name, "in": "path", "required": true,
                    "description": "Matches the rest of the path (the route's final `/*`): any number of segments, slashes included, or none.",
                    "schema": {"type": "string"},
                })
            } else {
                json!({"name": name, "in": "path", "required": true, "description": "One path segment.", "schema": {"type": "string"}})
            }
        })
        .collect()
}

/// `match.headers` and `match.query`: the exact values this route is chosen by.
pub fn constraints(facts: &RouteFacts) -> Vec<Value> {
    let one = |name: &str, place: &str, value: &str| {
        json!({
            "name": name, "in": place, "required": true,
            "description": format!("This route is chosen when the request carries {name} = {value:?}."),
            "schema": {"type": "string", "enum": [value]},
        })
    };
    let mut out: Vec<Value> = facts
        .headers
        .iter()
        .map(|(k, v)| one(k, "header", v))
        .collect();
    out.extend(facts.query.iter().map(|(k, v)| one(k, "query", v)));
    out
}

/// `request.query_schema` as query parameters, one per property.
pub fn query_parameters(schema: Option<&Value>) -> Vec<Value> {
    let Some(schema) = schema else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, s)| {
            let mut p = json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": s});
            if s.get("type").and_then(Value::as_str) == Some("array") {
                // Repeated parameters: `?tag=a&tag=b`.
                p["style"] = json!("form");
                p["explode"] = json!(true);
            }
            p
        })
        .collect()
}

/// One parameter per (location, name): the first wins (a `match.query` value over the
/// query schema's property of the same name, which would otherwise be listed twice).
pub fn dedupe(params: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    params
        .into_iter()
        .filter(|p| {
            let name = p["name"].as_str().unwrap_or("");
            let place = p["in"].as_str().unwrap_or("");
            // Header names are case-insensitive.
            let name = if place == "header" {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            };
            seen.insert((place.to_string(), name))
        })
        .collect()
}

pub fn request_body(route: &Route, m: &Method, schema: Option<&str>) -> Option<Value> {
    if !carries_body(m) {
        return None;
    }
    if let Some(name) = schema {
        let required = *m != Method::DELETE;
        return Some(json!({
            "required": required,
            "description": "Validated against the route's JSON Schema before anything goes upstream (strict JSON; `application/*+json` is accepted too), then forwarded byte for byte.",
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}},
        }));
    }
    let (required, text) = if route.auth.webhook.is_some() {
        (
            true,
            "The event, exactly as signed; forwarded byte for byte.",
        )
    } else if route.aggregate.is_some() {
        (
            false,
            "Sent to the calls that forward the client's body, if any.",
        )
    } else {
        (false, "Streamed to the upstream as it is.")
    };
    Some(json!({"required": required, "description": text, "content": {"*/*": {"schema": {}}}}))
}
