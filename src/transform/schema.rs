//! Whether a pointer can exist in a document valid under a JSON Schema (for `gateway
//! check`). Sound, not complete: a pointer is called impossible only when the keywords
//! understood here prove it (`properties` with `additionalProperties: false` and no
//! `patternProperties`, `type`, `items` / `prefixItems` / `additionalItems`, `allOf`,
//! `anyOf`, `oneOf`, boolean schemas, local `#/...` references); anything else, or a walk
//! that runs too deep or too long, counts as "can exist".

use super::pointer::{show, Seg};
use serde_json::{Map, Value};

/// Nesting of subschemas followed before giving up (references can loop).
const MAX_DEPTH: usize = 64;
/// Subschemas visited per pointer before giving up (combinators can branch).
const MAX_STEPS: usize = 10_000;

pub(crate) struct Walker<'s> {
    root: &'s Value,
    /// `#/...` references resolve against the root (false when a nested `$id` could move
    /// the base).
    resolve_refs: bool,
    /// Draft 2020-12 array keywords (`prefixItems`, `items`), or the older `items` /
    /// `additionalItems`.
    modern: bool,
    steps: usize,
}

/// What the object keywords say about one key.
enum Child<'s> {
    Unknown,
    Schema(&'s Value),
    Forbidden(String),
}

impl<'s> Walker<'s> {
    pub(crate) fn new(root: &'s Value) -> Walker<'s> {
        let legacy = root
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("draft-0") || s.contains("2019-09"));
        Walker {
            root,
            resolve_refs: !has_nested_id(root),
            modern: !legacy,
            steps: 0,
        }
    }

    /// Why no valid document can hold `segs`, or None when one may.
    pub(crate) fn why_impossible(&mut self, segs: &[Seg]) -> Option<String> {
        self.steps = 0;
        self.check(self.root, segs, 0, 0)
    }

    fn check(
        &mut self,
        schema: &'s Value,
        segs: &[Seg],
        at: usize,
        depth: usize,
    ) -> Option<String> {
        self.steps += 1;
        if depth > MAX_DEPTH || self.steps > MAX_STEPS {
            return None;
        }
        let o = match schema {
            Value::Bool(false) => {
                let here = segs.get(..at).unwrap_or(segs);
                return Some(format!("the schema allows no value at {}", show(here)));
            }
            Value::Object(o) => o,
            _ => return None,
        };
        if let Some(r) = o.get("$ref") {
            // Siblings of `$ref` are ignored: draft 7 ignores them, and for 2020-12 (where
            // they also apply) ignoring a constraint can only make more paths possible.
            return self
                .resolve(r)
                .and_then(|target| self.check(target, segs, at, depth + 1));
        }
        if o.contains_key("$dynamicRef") || o.contains_key("$recursiveRef") {
            return None;
        }
        if let Some(Value::Array(all)) = o.get("allOf") {
            for branch in all {
                if let Some(r) = self.check(branch, segs, at, depth + 1) {
                    return Some(r);
                }
            }
        }
        for kw in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = o.get(kw) {
                let mut first = None;
                let mut all_impossible = !branches.is_empty();
                for branch in branches {
                    match self.check(branch, segs, at, depth + 1) {
                        None => {
                            all_impossible = false;
                            break;
                        }
                        Some(r) => {
                            first.get_or_insert(r);
                        }
                    }
                }
                if all_impossible {
                    return first.map(|r| format!("no branch of {kw} allows it: {r}"));
                }
            }
        }
        let seg = segs.get(at)?;
        self.local(o, segs, at, seg, depth)
    }

    /// `type`, the object keywords and the array keywords, for the segment at `at`.
    fn local(
        &mut self,
        o: &'s Map<String, Value>,
        segs: &[Seg],
        at: usize,
        seg: &Seg,
        depth: usize,
    ) -> Option<String> {
        let here = show(segs.get(..at).unwrap_or(segs));
        let (object_ok, array_ok, types) = allowed_types(o.get("type"));
        let mut reason = None;
        if object_ok {
            match object_child(o, seg.key(), &here) {
                Child::Unknown => return None,
                Child::Schema(s) => reason = Some(self.check(s, segs, at + 1, depth + 1)?),
                Child::Forbidden(r) => reason = Some(r),
            }
        }
        let is_index = matches!(seg, Seg::Wild | Seg::Key { index: Some(_), .. });
        if array_ok && is_index {
            let r = self.array_child(o, segs, at, seg, &here, depth)?;
            reason.get_or_insert(r);
        }
        Some(reason.unwrap_or_else(|| match (array_ok, types) {
            (true, _) => format!(
                "{here} is an array in the schema: {:?} is no index",
                seg.key()
            ),
            (false, t) => format!("{here} is {t} in the schema: it has no children"),
        }))
    }

    /// None when some element of the array at `here` may hold the rest of the pointer.
    fn array_child(
        &mut self,
        o: &'s Map<String, Value>,
        segs: &[Seg],
        at: usize,
        seg: &Seg,
        here: &str,
        depth: usize,
    ) -> Option<String> {
        let empty: &'s [Value] = &[];
        let (elems, rest) = match (o.get("items"), self.modern) {
            (Some(Value::Array(tuple)), false) => (tuple.as_slice(), o.get("additionalItems")),
            (items, true) => (
                o.get("prefixItems")
                    .and_then(Value::as_array)
                    .map_or(empty, Vec::as_slice),
                items,
            ),
            (items, false) => (empty, items),
        };
        match seg {
            Seg::Key { index: Some(i), .. } => match elems.get(*i) {
                Some(s) => self.check(s, segs, at + 1, depth + 1),
                None => match rest {
                    Some(Value::Bool(false)) => Some(format!(
                        "{here} holds at most {} items in the schema",
                        elems.len()
                    )),
                    Some(s) => self.check(s, segs, at + 1, depth + 1),
                    None => None,
                },
            },
            _ => {
                if elems.is_empty() && rest == Some(&Value::Bool(false)) {
                    return Some(format!("{here} must be an empty array in the schema"));
                }
                let rest = match rest {
                    None | Some(Value::Bool(true)) => return None,
                    Some(Value::Bool(false)) => None,
                    Some(s) => Some(s),
                };
                let mut first = None;
                for s in elems.iter().chain(rest) {
                    match self.check(s, segs, at + 1, depth + 1) {
                        None => return None,
                        Some(r) => {
                            first.get_or_insert(r);
                        }
                    }
                }
                first
            }
        }
    }

    /// The target of a local reference (`#` or `#/json/pointer`), if it can be trusted.
    fn resolve(&self, r: &Value) -> Option<&'s Value> {
        if !self.resolve_refs {
            return None;
        }
        let frag = r.as_str()?.strip_prefix('#')?;
        let decoded = percent_encoding::percent_decode_str(frag)
            .decode_utf8()
            .ok()?;
        if decoded.is_empty() {
            return Some(self.root);
        }
        if !decoded.starts_with('/') {
            return None;
        }
        self.root.pointer(&decoded)
    }
}

fn object_child<'s>(o: &'s Map<String, Value>, key: &str, here: &str) -> Child<'s> {
    if let Some(s) = o.get("properties").and_then(|p| p.get(key)) {
        return Child::Schema(s);
    }
    if o.contains_key("patternProperties") {
        return Child::Unknown;
    }
    match o.get("additionalProperties") {
        None | Some(Value::Bool(true)) => Child::Unknown,
        Some(Value::Bool(false)) => Child::Forbidden(format!(
            "the schema allows no property {key:?} at {here} (additionalProperties is false)"
        )),
        Some(s) => Child::Schema(s),
    }
}

/// Whether `type` allows an object, an array, and the types as text (for messages).
fn allowed_types(t: Option<&Value>) -> (bool, bool, String) {
    match t {
        Some(Value::String(s)) => (s == "object", s == "array", format!("a {s}")),
        Some(Value::Array(list)) => {
            let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            if names.len() != list.len() {
                return (true, true, String::new());
            }
            (
                names.contains(&"object"),
                names.contains(&"array"),
                format!("one of {}", names.join(", ")),
            )
        }
        _ => (true, true, String::new()),
    }
}

/// Whether a subschema below the root carries `$id` (or draft 4's `id`) as a string.
fn has_nested_id(root: &Value) -> bool {
    let mut stack: Vec<&Value> = match root {
        Value::Object(o) => o.values().collect(),
        Value::Array(a) => a.iter().collect(),
        _ => return false,
    };
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if ["$id", "id"]
                    .iter()
                    .any(|k| o.get(*k).is_some_and(Value::is_string))
                {
                    return true;
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    false
}
