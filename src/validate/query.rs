//! `request.query_schema`: the query string as a JSON object, each value typed from its
//! string by what the schema's `properties` declare (integer, number, boolean, array),
//! then validated like a body.

use super::errors;
use crate::error::GatewayError;
use jsonschema::Validator;
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    Array(Box<Kind>),
}

fn kind_of(schema: &Value) -> Kind {
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => Kind::Integer,
        Some("number") => Kind::Number,
        Some("boolean") => Kind::Boolean,
        Some("array") => Kind::Array(Box::new(schema.get("items").map_or(Kind::String, kind_of))),
        _ => Kind::String,
    }
}

/// A string typed as `kind`; a string that does not parse stays a string (and fails the
/// schema with a clear message).
fn typed(kind: &Kind, s: &str) -> Value {
    let parsed = match kind {
        Kind::Integer => s.parse::<i64>().ok().map(Value::from),
        Kind::Number => s
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        Kind::Boolean => match s {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Kind::String | Kind::Array(_) => None,
    };
    parsed.unwrap_or_else(|| Value::String(s.to_string()))
}

pub struct QueryValidator {
    validator: Validator,
    kinds: HashMap<String, Kind>,
}

impl QueryValidator {
    pub fn new(validator: Validator, schema: &Value) -> QueryValidator {
        let kinds = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| props.iter().map(|(k, v)| (k.clone(), kind_of(v))).collect())
            .unwrap_or_default();
        QueryValidator { validator, kinds }
    }

    /// The query as a typed JSON object; repeated parameters become arrays where the schema
    /// says so, otherwise the last one wins. `credential` (the API-key parameter) is left
    /// out: it is the gateway's, and an error must never echo it.
    fn object(&self, query: Option<&str>, credential: Option<&str>) -> Value {
        let mut obj = Map::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if credential.is_some_and(|c| c == k) {
                continue;
            }
            let kind = self.kinds.get(k.as_ref()).unwrap_or(&Kind::String);
            match kind {
                Kind::Array(item) => {
                    let entry = obj
                        .entry(k.into_owned())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(a) = entry {
                        a.push(typed(item, &v));
                    }
                }
                other => {
                    obj.insert(k.into_owned(), typed(other, &v));
                }
            }
        }
        Value::Object(obj)
    }

    pub fn check(&self, query: Option<&str>) -> Result<(), GatewayError> {
        self.check_except(query, None)
    }

    /// Like [`check`](Self::check), without the parameter named `credential`.
    pub fn check_except(
        &self,
        query: Option<&str>,
        credential: Option<&str>,
    ) -> Result<(), GatewayError> {
        let details = errors(&self.validator, &self.object(query, credential));
        if details.is_empty() {
            Ok(())
        } else {
            Err(GatewayError::Invalid {
                message: "query parameters do not match the schema".into(),
                details,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_parameters() {
        let schema = serde_json::json!({
            "type": "object", "required": ["limit"], "additionalProperties": false,
            "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "active": {"type": "boolean"},
                "tag": {"type": "array", "items": {"type": "string"}},
                "q": {"type": "string"}
            }
        });
        let v = QueryValidator::new(jsonschema::validator_for(&schema).unwrap(), &schema);
        assert!(v
            .check(Some("limit=10&active=true&tag=a&tag=b&q=x%20y"))
            .is_ok());
        assert!(v.check(Some("limit=0")).is_err());
        assert!(v.check(Some("limit=ten")).is_err());
        assert!(v.check(Some("limit=5&other=1")).is_err());
        assert!(v.check(None).is_err());
    }
}
