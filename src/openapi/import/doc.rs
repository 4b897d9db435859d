//! Reading the document (YAML or JSON, as a `serde_json::Value`) and walking it: JSON
//! pointers and local `$ref`s, with every chain of references bounded.

use super::ImportError;
use serde_json::{Map, Value};
use std::path::Path;

/// How many `$ref` hops a parameter, request body or security scheme may take: enough
/// for any real document, and a cycle ends here instead of looping.
pub const MAX_REF_HOPS: usize = 32;

/// Reads and parses the document; errors name the file.
pub fn read(path: &Path) -> Result<Value, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::Read(path.to_path_buf(), e))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ImportError::NotUtf8(path.to_path_buf(), e.valid_up_to()))?;
    // YAML is a superset of JSON, and serde_yaml bounds nesting and alias expansion, so a
    // hostile document fails here rather than exhausting the stack or memory.
    let yaml: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| ImportError::Parse(path.to_path_buf(), e.to_string()))?;
    to_json(yaml).map_err(|m| ImportError::Parse(path.to_path_buf(), m))
}

/// YAML to JSON. Written out rather than deserialising straight into `serde_json::Value`
/// because YAML documents have non-string keys (`200:` under `responses`), which JSON
/// cannot; they become strings, as they are in the JSON form of the same document.
fn to_json(v: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("the number {n} has no JSON form"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_string(),
                    other => return Err(format!("a mapping key must be a scalar, not {other:?}")),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => to_json(t.value)?,
    })
}

/// `true` for a 3.0 document, `false` for 3.1; anything else is refused.
pub fn version(root: &Value) -> Result<bool, String> {
    if root.get("swagger").is_some() {
        return Err("a Swagger 2.0 document: only OpenAPI 3.0 and 3.1 are imported".into());
    }
    match root.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0") => Ok(true),
        Some(v) if v.starts_with("3.1") => Ok(false),
        Some(v) => Err(format!(
            "openapi {v:?}: only OpenAPI 3.0 and 3.1 documents are imported"
        )),
        None => Err("not an OpenAPI document (no `openapi` version at the top)".into()),
    }
}

/// One JSON pointer token, escaped (`~` as `~0`, `/` as `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `ptr` extended by one token.
pub fn child(ptr: &str, token: &str) -> String {
    format!("{ptr}/{}", escape(token))
}

/// The value at a local reference (`#/components/...`), or `None`. The fragment may be
/// percent-encoded, as URI fragments are.
pub fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let frag = reference.strip_prefix('#')?;
    let decoded = percent_encoding::percent_decode_str(frag)
        .decode_utf8()
        .ok()?;
    root.pointer(&decoded)
}

/// `v` with `$ref`s followed (local ones only, at most [`MAX_REF_HOPS`]); the second
/// value is the pointer of what was reached, for messages.
pub fn deref<'a>(root: &'a Value, v: &'a Value, ptr: &str) -> Result<(&'a Value, String), String> {
    let mut cur = v;
    let mut at = ptr.to_string();
    for _ in 0..MAX_REF_HOPS {
        let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
            return Ok((cur, at));
        };
        if !r.starts_with("#/") {
            return Err(format!(
                "$ref {r:?} points outside the document; only local references are followed"
            ));
        }
        cur = resolve(root, r).ok_or_else(|| format!("$ref {r:?} does not resolve"))?;
        at = r.to_string();
    }
    Err(format!(
        "$ref chain longer than {MAX_REF_HOPS} hops (a cycle?)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integer_keys_become_strings() {
        let y: serde_yaml::Value = serde_yaml::from_str("responses:\n  200: {description: ok}\n")
            .unwrap_or(serde_yaml::Value::Null);
        let j = to_json(y).unwrap_or(Value::Null);
        assert_eq!(j, json!({"responses": {"200": {"description": "ok"}}}));
    }

    #[test]
    fn ref_cycles_end() {
        let root = json!({"a": {"$ref": "#/b"}, "b": {"$ref": "#/a"}});
        let r = deref(&root, &root["a"], "#/a");
        assert!(r.is_err_and(|e| e.contains("cycle")));
        assert_eq!(resolve(&root, "#/a~1x"), None);
    }
}
