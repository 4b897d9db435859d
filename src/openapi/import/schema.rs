//! OpenAPI schema objects as standalone JSON Schema 2020-12 files.
//!
//! Every local `$ref` becomes a `$defs` entry of the file (recursive schemas stay
//! recursive, through `$defs`), so nothing is inlined twice and no reference is followed
//! more than once: the work is a queue, not recursion through references. A cycle of
//! references that never descends into the instance (`A: {$ref: B}`, `B: {allOf: [$ref:
//! A]}`) would make validation recurse forever, so it is reported and left out. OpenAPI
//! 3.0's dialect is translated where it changes what validates: `nullable`, the boolean
//! `exclusiveMinimum`/`exclusiveMaximum`, `$ref` siblings; `readOnly` properties are not
//! required in a request.

use super::doc::{deref, escape};
use super::Note;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Nesting within one schema object (references do not count: they are queued). Deeper
/// input cannot be parsed anyway (serde_yaml stops at 128), this keeps the walk's own
/// bound explicit.
const MAX_DEPTH: usize = 100;

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
];
/// Keywords whose value is a list of subschemas.
const LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const MAP: &[&str] = &["properties", "patternProperties", "dependentSchemas"];
/// Keywords that validate the same instance, not a part of it: a cycle only through these
/// never ends.
const IN_PLACE: &[&str] = &["allOf", "anyOf", "oneOf", "not", "if", "then", "else"];

/// Builds one schema file from one or more schema objects of the document.
pub struct Translator<'a> {
    root: &'a Value,
    v30: bool,
    defs: BTreeMap<String, Value>,
    /// Decoded JSON pointer in the document -> name under `$defs`.
    by_pointer: HashMap<String, String>,
    /// Pointers still to translate.
    queue: Vec<String>,
    pub notes: Vec<Note>,
}

impl<'a> Translator<'a> {
    pub fn new(root: &'a Value, v30: bool) -> Translator<'a> {
        Translator {
            root,
            v30,
            defs: BTreeMap::new(),
            by_pointer: HashMap::new(),
            queue: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// `v` (at `ptr`) as JSON Schema 2020-12; references become `#/$defs/...`.
    pub fn translate(&mut self, v: &Value, ptr: &str) -> Value {
        self.walk(v, ptr, 0)
    }

    /// The file: `schema` with `$schema` and every referenced definition.
    pub fn finish(mut self, schema: Value) -> (Value, Vec<Note>) {
        while let Some(p) = self.queue.pop() {
            let Some(v) = self.root.pointer(&p) else {
                continue;
            };
            let name = self.by_pointer.get(&p).cloned().unwrap_or_default();
            let t = self.walk(v, &format!("#{p}"), 0);
            self.defs.insert(name, t);
        }
        self.break_cycles();
        let mut out = match schema {
            Value::Object(m) => m,
            Value::Bool(false) => json!({"not": {}}).as_object().cloned().unwrap_or_default(),
            _ => Map::new(),
        };
        out.insert("$schema".into(), Value::from(DIALECT));
        if !self.defs.is_empty() {
            out.insert(
                "$defs".into(),
                Value::Object(self.defs.into_iter().collect()),
            );
        }
        (Value::Object(out), self.notes)
    }

    fn walk(&mut self, v: &Value, ptr: &str, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            self.notes.push(Note::unsupported(
                ptr,
                format!("schema nested deeper than {MAX_DEPTH} levels; not enforced"),
            ));
            return json!({});
        }
        match v {
            Value::Bool(_) => v.clone(),
            Value::Object(m) => self.object(m, ptr, depth),
            _ => {
                self.notes
                    .push(Note::unsupported(ptr, "not a schema object; not enforced"));
                json!({})
            }
        }
    }

    fn object(&mut self, m: &Map<String, Value>, ptr: &str, depth: usize) -> Value {
        let at = |k: &str| format!("{ptr}/{}", escape(k));
        let nullable = self.v30 && m.get("nullable") == Some(&Value::Bool(true));
        let reference = m
            .get("$ref")
            .and_then(Value::as_str)
            .map(|r| self.reference(r, &at("$ref")));
        if let (true, Some(reference)) = (self.v30, &reference) {
            // In 3.0 a `$ref`'s siblings are ignored; `nullable` next to one is honoured
            // anyway, since that is what its authors mean (and it only lets more through).
            return if nullable {
                json!({"anyOf": [reference, {"type": "null"}]})
            } else {
                reference.clone()
            };
        }
        // 3.1: a `$ref` applies together with its siblings, as in 2020-12.
        let mut out = match reference {
            Some(Value::Object(r)) => r,
            _ => Map::new(),
        };
        for (k, v) in m {
            let key = k.as_str();
            if key == "$ref" {
                continue;
            } else if MAP.contains(&key) {
                let mut sub = Map::new();
                for (name, s) in v.as_object().into_iter().flatten() {
                    let p = format!("{}/{}", at(k), escape(name));
                    sub.insert(name.clone(), self.walk(s, &p, depth + 1));
                }
                out.insert(k.clone(), Value::Object(sub));
            } else if LIST.contains(&key) {
                let items = v.as_array().map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, s)| self.walk(s, &format!("{}/{i}", at(k)), depth + 1))
                        .collect::<Vec<_>>()
                });
                match items {
                    Some(items) => {
                        out.insert(k.clone(), Value::Array(items));
                    }
                    None => self
                        .notes
                        .push(Note::unsupported(&at(k), "not a list of schemas; dropped")),
                }
            } else if ONE.contains(&key) {
                if key == "items" && v.is_array() {
                    self.notes.push(Note::unsupported(
                        &at(k),
                        "a list under `items` (tuple form); not enforced",
                    ));
                    continue;
                }
                out.insert(k.clone(), self.walk(v, &at(k), depth + 1));
            } else if key == "type" && v == "file" {
                self.notes.push(Note::unsupported(
                    &at(k),
                    "type `file` has no JSON Schema form; not enforced",
                ));
            } else if matches!(
                key,
                "$id" | "$anchor" | "$dynamicRef" | "$dynamicAnchor" | "$recursiveRef"
            ) {
                self.notes.push(Note::unsupported(
                    &at(k),
                    format!("`{key}` is not carried into the schema file"),
                ));
            } else if !dropped(key, v) {
                out.insert(k.clone(), v.clone());
            }
        }
        // The boolean form (3.0, draft 4): `minimum: 0, exclusiveMinimum: true` is
        // `exclusiveMinimum: 0` in 2020-12.
        for (ex, base) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            if m.get(ex) == Some(&Value::Bool(true)) {
                if let Some(b) = out.remove(base) {
                    out.insert(ex.into(), b);
                }
            }
        }
        if let Some(Value::Array(req)) = out.get_mut("required") {
            // readOnly properties are sent by the server only; a request need not (and
            // should not) carry them, even when a shared schema lists them as required.
            let props = m.get("properties");
            req.retain(|n| {
                let p = n.as_str().and_then(|n| props.and_then(|ps| ps.get(n)));
                !p.is_some_and(|p| self.read_only(p))
            });
        }
        if nullable {
            match out.get_mut("type") {
                Some(Value::String(t)) => {
                    let t = std::mem::take(t);
                    out.insert("type".into(), json!([t, "null"]));
                }
                Some(Value::Array(ts)) => {
                    if !ts.contains(&Value::from("null")) {
                        ts.push(Value::from("null"));
                    }
                }
                _ => return json!({"anyOf": [Value::Object(out), {"type": "null"}]}),
            }
            if let Some(Value::Array(e)) = out.get_mut("enum") {
                if !e.contains(&Value::Null) {
                    e.push(Value::Null);
                }
            }
        }
        Value::Object(out)
    }

    fn read_only(&self, prop: &Value) -> bool {
        deref(self.root, prop, "").is_ok_and(|(p, _)| p.get("readOnly") == Some(&Value::Bool(true)))
    }

    /// A `$ref` as a reference into the file's `$defs`, queued for translation.
    fn reference(&mut self, r: &str, ptr: &str) -> Value {
        let decoded = r
            .strip_prefix('#')
            .filter(|f| f.starts_with('/'))
            .and_then(|f| percent_encoding::percent_decode_str(f).decode_utf8().ok());
        let Some(p) = decoded.map(|d| d.into_owned()) else {
            self.notes.push(Note::unsupported(
                ptr,
                format!("$ref {r:?} points outside the document; not enforced"),
            ));
            return json!({});
        };
        if self.root.pointer(&p).is_none() {
            self.notes.push(Note::unsupported(
                ptr,
                format!("$ref {r:?} does not resolve; not enforced"),
            ));
            return json!({});
        }
        let name = match self.by_pointer.get(&p) {
            Some(n) => n.clone(),
            None => {
                let n = self.name_for(&p);
                self.by_pointer.insert(p.clone(), n.clone());
                self.queue.push(p);
                n
            }
        };
        json!({"$ref": format!("#/$defs/{name}")})
    }

    /// A `$defs` name for a pointer: the component's name when it is one, else the whole
    /// pointer; only characters that need no escaping in a URI fragment, and unique.
    fn name_for(&self, p: &str) -> String {
        let raw = match p.strip_prefix("/components/schemas/") {
            Some(n) if !n.contains('/') => n.replace("~1", "/").replace("~0", "~"),
            _ => p.trim_start_matches('/').to_string(),
        };
        let mut base: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if base.is_empty() {
            base = "schema".into();
        }
        let taken = |n: &str| self.by_pointer.values().any(|v| v == n);
        let mut name = base.clone();
        let mut i = 2;
        while taken(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        name
    }

    /// Replaces every definition on an in-place reference cycle with `{}` (not enforced).
    fn break_cycles(&mut self) {
        let edges: BTreeMap<&String, Vec<String>> = self
            .defs
            .iter()
            .map(|(n, v)| {
                let mut out = Vec::new();
                in_place_refs(v, &mut out);
                (n, out)
            })
            .collect();
        let mut cyclic = Vec::new();
        for start in edges.keys() {
            // Iterative search: a long chain of definitions cannot overflow the stack.
            let mut seen: Vec<&str> = Vec::new();
            let mut stack: Vec<&str> = edges[start].iter().map(String::as_str).collect();
            while let Some(n) = stack.pop() {
                if n == start.as_str() {
                    cyclic.push((*start).clone());
                    break;
                }
                if seen.contains(&n) {
                    continue;
                }
                seen.push(n);
                if let Some(next) = edges.get(&n.to_string()) {
                    stack.extend(next.iter().map(String::as_str));
                }
            }
        }
        let pointer_of: HashMap<&String, &String> =
            self.by_pointer.iter().map(|(p, n)| (n, p)).collect();
        for name in &cyclic {
            let at = pointer_of
                .get(name)
                .map_or(String::new(), |p| format!("#{p}"));
            self.notes.push(Note::unsupported(
                &at,
                format!(
                    "cyclic $ref ({}) never reaches a value to validate; not enforced",
                    cyclic.join(", ")
                ),
            ));
        }
        for name in cyclic {
            self.defs.insert(name, json!({}));
        }
    }
}

/// OpenAPI-only keywords, extensions and examples: annotations with no effect on what
/// validates (2020-12 would ignore most of them; dropping keeps the files plain).
fn dropped(key: &str, v: &Value) -> bool {
    matches!(
        key,
        "nullable"
            | "example"
            | "discriminator"
            | "xml"
            | "externalDocs"
            | "$schema"
            | "$defs"
            | "definitions"
    ) || key.starts_with("x-")
        || (key == "examples" && !v.is_array())
        || (matches!(key, "exclusiveMinimum" | "exclusiveMaximum") && v.is_boolean())
}

/// Names of the `$defs` a schema refers to without descending into the instance.
fn in_place_refs(v: &Value, out: &mut Vec<String>) {
    let Some(m) = v.as_object() else { return };
    if let Some(name) = m
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        out.push(name.to_string());
    }
    for k in IN_PLACE {
        match m.get(*k) {
            Some(Value::Array(items)) => items.iter().for_each(|s| in_place_refs(s, out)),
            Some(s) => in_place_refs(s, out),
            None => {}
        }
    }
}
