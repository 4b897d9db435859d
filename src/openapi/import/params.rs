//! Parameters: query parameters with schemas become one object schema for
//! `request.query_schema`; path, header and cookie parameters are listed as not enforced.

use super::doc::{child, deref};
use super::schema::Translator;
use super::Note;
use serde_json::{json, Map, Value};

/// Header parameters OpenAPI itself says to ignore: described by other fields.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

/// A parameter, resolved, with the pointer where the operation lists it.
pub struct Param<'a> {
    pub ptr: String,
    pub v: &'a Value,
}

impl<'a> Param<'a> {
    pub fn field(&self, k: &str) -> &'a str {
        self.v.get(k).and_then(Value::as_str).unwrap_or("")
    }
}

/// A `parameters` list, each followed through `$ref`s.
pub fn collect<'a>(
    root: &'a Value,
    list: Option<&'a Value>,
    ptr: &str,
    notes: &mut Vec<Note>,
) -> Vec<Param<'a>> {
    let mut out = Vec::new();
    for (i, p) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = child(ptr, &i.to_string());
        match deref(root, p, &at) {
            Ok((v, _)) => out.push(Param { ptr: at, v }),
            Err(e) => notes.push(Note::unsupported(
                &at,
                format!("{e}; parameter not enforced"),
            )),
        }
    }
    out
}

/// Query parameters with schemas as one object schema (`request.query_schema`).
pub fn query_schema(
    root: &Value,
    v30: bool,
    params: &[Param<'_>],
    notes: &mut Vec<Note>,
) -> Option<Value> {
    let mut t = Translator::new(root, v30);
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in params.iter().filter(|p| p.field("in") == "query") {
        let pname = p.field("name");
        let is_required = p.v.get("required") == Some(&Value::Bool(true));
        if is_required {
            required.push(Value::from(pname));
        }
        let Some(schema) = p.v.get("schema") else {
            notes.push(Note::unsupported(
                &p.ptr,
                "a query parameter without `schema` (`content`) is not validated",
            ));
            if is_required {
                props.insert(pname.into(), json!({}));
            }
            continue;
        };
        // The query validator types each value from the property's own `type`, so
        // references at the top are followed here rather than kept as `$ref`.
        let (s, sptr) = match deref(root, schema, &child(&p.ptr, "schema")) {
            Ok(r) => r,
            Err(e) => {
                notes.push(Note::unsupported(&p.ptr, format!("{e}; not validated")));
                continue;
            }
        };
        let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
        let style = p.v.get("style").and_then(Value::as_str).unwrap_or("form");
        let explode =
            p.v.get("explode")
                .and_then(Value::as_bool)
                .unwrap_or(style == "form");
        let shape_ok = style == "form" && ty != "object" && (ty != "array" || explode);
        if !shape_ok {
            notes.push(Note::unsupported(
                &p.ptr,
                format!("query parameter {pname:?} (style {style}, explode {explode}, type {ty}): only single values and repeated parameters are validated"),
            ));
            if is_required {
                props.insert(pname.into(), json!({}));
            }
            continue;
        }
        let mut v = t.translate(s, &sptr);
        // A query value is never null: `nullable` would only hide the type from the
        // validator's typing.
        if let Some(Value::Array(ts)) = v.get_mut("type") {
            ts.retain(|x| x != "null");
            if let [one] = ts.as_slice() {
                let one = one.clone();
                v["type"] = one;
            }
        }
        props.insert(pname.into(), v);
    }
    if props.is_empty() {
        return None;
    }
    let mut schema = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    let (schema, more) = t.finish(schema);
    notes.extend(more);
    Some(schema)
}

/// Path, header and cookie parameters: none of them is enforced by the route.
pub fn not_enforced(params: &[Param<'_>], notes: &mut Vec<Note>) {
    for p in params {
        let name = p.field("name");
        let msg = match p.field("in") {
            "header" if IGNORED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) => continue,
            "header" => {
                format!("header parameter {name:?} is not enforced (the route is still written)")
            }
            "cookie" => {
                format!("cookie parameter {name:?} is not enforced (the route is still written)")
            }
            "path" => {
                let trivial = p.v.get("schema").is_none_or(|s| {
                    s.as_object().is_some_and(|m| {
                        m.keys().all(|k| {
                            matches!(k.as_str(), "type" | "description" | "example" | "title")
                        }) && m.get("type").is_none_or(|t| t == "string")
                    })
                });
                if trivial {
                    continue;
                }
                format!("the schema of path parameter {name:?} is not enforced (the route matches any segment)")
            }
            _ => continue,
        };
        notes.push(Note::unsupported(&p.ptr, msg));
    }
}
