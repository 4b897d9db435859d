//! Several routes on one path and method (told apart by `match.headers`/`match.query` or
//! by host) become one operation: OpenAPI has one per path and method. The first route
//! names it; parameters, bodies, security and responses are the union, loosened where the
//! routes differ (a value that picks one route is optional when another takes any).

use serde_json::{json, Map, Value};

/// One route's operation on a path and method.
pub struct Part {
    pub route: String,
    pub operation: Map<String, Value>,
}

pub fn operations(mut parts: Vec<Part>) -> Value {
    if parts.len() < 2 {
        return parts
            .pop()
            .map(|p| Value::Object(p.operation))
            .unwrap_or_default();
    }
    let ops: Vec<&Map<String, Value>> = parts.iter().map(|p| &p.operation).collect();
    let names: Vec<&str> = parts.iter().map(|p| p.route.as_str()).collect();
    let mut op = parts[0].operation.clone();
    op.insert("summary".into(), json!(names.join(" | ")));
    let lines: Vec<String> = ops
        .iter()
        .map(|o| {
            format!(
                "- {}",
                o.get("description").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    op.insert(
        "description".into(),
        json!(format!(
            "Several routes share this path and method; the most specific one that matches the request is chosen.\n\n{}",
            lines.join("\n")
        )),
    );
    op.insert("parameters".into(), Value::Array(parameters(&ops)));
    match request_body(&ops) {
        Some(b) => op.insert("requestBody".into(), b),
        None => op.remove("requestBody"),
    };
    op.insert("security".into(), Value::Array(security(&ops)));
    let mut responses = Map::new();
    for o in &ops {
        if let Some(Value::Object(r)) = o.get("responses") {
            for (status, v) in r {
                responses.entry(status.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    // `no_route` only when every route of the path looks at some value: otherwise a
    // request without them falls to the one that does not.
    let all_constrained = ops
        .iter()
        .all(|o| o.get("responses").and_then(|r| r.get("404")).is_some());
    if !all_constrained {
        responses.remove("404");
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert("x-gateway-routes".into(), json!(names));
    Value::Object(op)
}

fn id(p: &Value) -> (String, String) {
    let place = p["in"].as_str().unwrap_or("").to_string();
    let name = p["name"].as_str().unwrap_or("");
    let name = if place == "header" {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    };
    (place, name)
}

fn params_of(o: &Map<String, Value>) -> Vec<Value> {
    o.get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn parameters(ops: &[&Map<String, Value>]) -> Vec<Value> {
    let all: Vec<Vec<Value>> = ops.iter().map(|o| params_of(o)).collect();
    let mut order: Vec<(String, String)> = Vec::new();
    for p in all.iter().flatten() {
        if !order.contains(&id(p)) {
            order.push(id(p));
        }
    }
    order
        .iter()
        .filter_map(|key| {
            let found: Vec<&Value> = all
                .iter()
                .filter_map(|ps| ps.iter().find(|p| id(p) == *key))
                .collect();
            let mut merged = (*found.first()?).clone();
            let everywhere = found.len() == all.len();
            let required = everywhere && found.iter().all(|p| p["required"] == json!(true));
            merged["required"] = json!(required);
            let enums: Option<Vec<Value>> = found
                .iter()
                .map(|p| p["schema"]["enum"].as_array().cloned())
                .collect::<Option<Vec<_>>>()
                .map(|e| e.concat());
            match enums {
                // Values that pick a route: any value when some route does not look.
                Some(all_values) if found.len() > 1 || !everywhere => {
                    let mut values: Vec<Value> = Vec::new();
                    for v in all_values {
                        if !values.contains(&v) {
                            values.push(v);
                        }
                    }
                    merged["schema"] = if everywhere {
                        json!({"type": "string", "enum": values})
                    } else {
                        json!({"type": "string"})
                    };
                    merged["description"] = json!(format!(
                        "Picks the route: {} (requests without a matching value go to the route that does not look at it).",
                        values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                    ));
                }
                _ => {}
            }
            Some(merged)
        })
        .collect()
}

fn request_body(ops: &[&Map<String, Value>]) -> Option<Value> {
    let bodies: Vec<&Value> = ops.iter().filter_map(|o| o.get("requestBody")).collect();
    let first = (*bodies.first()?).clone();
    if bodies.iter().all(|b| **b == first) && bodies.len() == ops.len() {
        return Some(first);
    }
    let required = bodies.len() == ops.len() && bodies.iter().all(|b| b["required"] == json!(true));
    let mut content = Map::new();
    for b in &bodies {
        if let Some(Value::Object(c)) = b.get("content") {
            for (media, v) in c {
                let schema = v.get("schema").cloned().unwrap_or_else(|| json!({}));
                match content.get_mut(media) {
                    None => {
                        content.insert(media.clone(), json!({"schema": schema}));
                    }
                    Some(existing) if existing["schema"] != schema => {
                        let before = existing["schema"].clone();
                        let mut any = before["anyOf"].as_array().cloned().unwrap_or(vec![before]);
                        if !any.contains(&schema) {
                            any.push(schema);
                        }
                        existing["schema"] = json!({"anyOf": any});
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Some(json!({
        "required": required,
        "description": "What each route takes (see the description).",
        "content": content,
    }))
}

/// Any requirement of any route suffices; a public route among them makes it optional.
fn security(ops: &[&Map<String, Value>]) -> Vec<Value> {
    let lists: Vec<Vec<Value>> = ops
        .iter()
        .map(|o| {
            o.get("security")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    if lists.iter().all(Vec::is_empty) {
        return Vec::new();
    }
    let mut out: Vec<Value> = Vec::new();
    for r in lists.iter().flatten() {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    if lists.iter().any(Vec::is_empty) {
        out.push(json!({}));
    }
    out
}
