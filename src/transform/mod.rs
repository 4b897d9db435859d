//! JSON transforms of request and response bodies (`request.transform`,
//! `response.transform`): `rename`, `remove`, `set` and `allow`, applied in that order,
//! with JSON Pointers (RFC 6901) in which `*` stands for every element of an array.
//! Everything is compiled at load time: pointers into segments, `set` templates into
//! parts, `allow` into a tree; applying a transform walks only what the pointers name.
//!
//! - `rename {from: to}` moves a value (taken out, then written, like JSON Patch `move`);
//!   both sides have the same `*`s with the same path up to the last one, and bind
//!   element by element. A missing source does nothing; missing objects on the way to the
//!   destination are created; a blocked destination (a scalar on the way) leaves the
//!   source where it was.
//! - `remove` deletes every match (`/items/0` an element, `/items/*` all of them).
//! - `set {pointer: value}` writes the value, creating missing objects (after the last
//!   `*`, inside every existing element); a string holding `{...}` is a text template.
//! - `allow` keeps only the listed paths, what is under them, and their parents (with only
//!   the kept children); arrays reached through `*` keep their length as long as their
//!   elements are objects or arrays; a scalar where only something below it is allowed
//!   is dropped. A scalar document is left as it is.
//!
//! Numeric segments index arrays and name keys of objects; `*` on an object is the key
//! `"*"`. Array elements are replaced or removed by index, never appended.

mod allow;
mod pointer;
mod schema;
mod text;

use crate::config::traffic::TransformDef;
use crate::template::{Scope, Values};
use pointer::{Pointer, Seg};
use serde_json::Value;

/// A compiled transform block.
#[derive(Debug)]
pub struct Transform {
    renames: Vec<Rename>,
    removes: Vec<Pointer>,
    sets: Vec<Set>,
    allow: Option<Allow>,
}

#[derive(Debug)]
struct Rename {
    from: Pointer,
    to: Pointer,
    /// Both sides share `from.segs[..split]` (up to and with the last `*`).
    split: usize,
}

#[derive(Debug)]
struct Set {
    at: Pointer,
    /// `at.segs[..split]` is matched (with `*`), the rest created when missing.
    split: usize,
    value: SetValue,
}

#[derive(Debug)]
enum SetValue {
    Json(Value),
    Text(text::Text),
}

#[derive(Debug)]
struct Allow {
    pointers: Vec<Pointer>,
    tree: allow::Node,
}

fn parse(op: &str, raw: &str) -> Result<Pointer, String> {
    pointer::parse(raw).map_err(|e| format!("transform {op} {raw:?}: {e}"))
}

impl Transform {
    /// Compiles a transform block; `scope` says which template variables the route allows.
    pub fn compile(def: &TransformDef, scope: &Scope<'_>) -> Result<Transform, String> {
        let mut renames = Vec::with_capacity(def.rename.len());
        for (from_raw, to_raw) in &def.rename {
            let from = parse("rename", from_raw)?;
            let to = parse("rename", to_raw)?;
            let split = from.after_last_wild();
            let wilds = |p: &Pointer| p.segs.iter().filter(|s| **s == Seg::Wild).count();
            if wilds(&from) != wilds(&to)
                || to.after_last_wild() != split
                || from.segs.get(..split) != to.segs.get(..split)
            {
                return Err(format!(
                    "transform rename {from_raw:?} -> {to_raw:?}: both sides must have the same number of `*` and the same path up to the last `*`"
                ));
            }
            renames.push(Rename { from, to, split });
        }
        let removes = def
            .remove
            .iter()
            .map(|raw| parse("remove", raw))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sets = Vec::with_capacity(def.set.len());
        for (raw, value) in &def.set {
            let at = parse("set", raw)?;
            let split = at.after_last_wild();
            let value = match value {
                Value::String(s) if s.contains('{') => SetValue::Text(
                    text::Text::compile(s, scope)
                        .map_err(|e| format!("transform set {raw:?}: {e}"))?,
                ),
                v => SetValue::Json(v.clone()),
            };
            sets.push(Set { at, split, value });
        }
        let allow = match &def.allow {
            None => None,
            Some(list) => {
                let pointers = list
                    .iter()
                    .map(|raw| parse("allow", raw))
                    .collect::<Result<Vec<_>, _>>()?;
                let tree = allow::Node::build(pointers.iter().map(|p| p.segs.as_slice()));
                Some(Allow { pointers, tree })
            }
        };
        Ok(Transform {
            renames,
            removes,
            sets,
            allow,
        })
    }

    /// Applies rename, remove, set and allow, in that order, in place.
    pub fn apply(&self, doc: &mut Value, values: &dyn Values) {
        for r in &self.renames {
            let (prefix, from) = r.from.segs.split_at(r.split.min(r.from.segs.len()));
            let to = r.to.segs.get(r.split..).unwrap_or(&[]);
            pointer::for_each_mut(doc, prefix, &mut |node| rename_in(node, from, to));
        }
        for p in &self.removes {
            if let Some((last, parents)) = p.segs.split_last() {
                pointer::for_each_mut(doc, parents, &mut |node| pointer::remove_child(node, last));
            }
        }
        for s in &self.sets {
            let value = match &s.value {
                SetValue::Json(v) => v.clone(),
                SetValue::Text(t) => Value::String(t.render(values)),
            };
            let (prefix, rest) = s.at.segs.split_at(s.split.min(s.at.segs.len()));
            if prefix.is_empty() {
                let _ = pointer::insert(doc, rest, value);
            } else {
                pointer::for_each_mut(doc, prefix, &mut |node| {
                    let _ = pointer::insert(node, rest, value.clone());
                });
            }
        }
        if let Some(a) = &self.allow {
            a.tree.filter_root(doc);
        }
    }

    /// The pointers this transform reads (rename sources, remove and allow paths) that no
    /// document valid under `schema` can hold, each with the reason. A pointer that an
    /// earlier operation may have written (a rename destination, a `set`) is not checked.
    pub fn impossible_paths(&self, schema: &Value) -> Vec<(String, String)> {
        let mut walker = schema::Walker::new(schema);
        let mut written: Vec<&[Seg]> = Vec::new();
        let mut out: Vec<(String, String)> = Vec::new();
        let mut check = |p: &Pointer, written: &[&[Seg]], out: &mut Vec<(String, String)>| {
            if written.iter().any(|w| pointer::overlap(w, &p.segs))
                || out.iter().any(|(raw, _)| *raw == p.raw)
            {
                return;
            }
            if let Some(reason) = walker.why_impossible(&p.segs) {
                out.push((p.raw.clone(), reason));
            }
        };
        for r in &self.renames {
            check(&r.from, &written, &mut out);
            written.push(&r.to.segs);
        }
        for p in &self.removes {
            check(p, &written, &mut out);
        }
        written.extend(self.sets.iter().map(|s| s.at.segs.as_slice()));
        for p in self.allow.iter().flat_map(|a| &a.pointers) {
            check(p, &written, &mut out);
        }
        out
    }

    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.renames.is_empty()
            && self.removes.is_empty()
            && self.sets.is_empty()
            && self.allow.is_none()
    }
}

/// Moves the value at `from` to `to`, both relative to `node`.
fn rename_in(node: &mut Value, from: &[Seg], to: &[Seg]) {
    if from.is_empty() {
        // `/x/*` -> `/x/*/y`: each element moves under a key of its own.
        let value = std::mem::take(node);
        *node = Value::Object(serde_json::Map::new());
        if let Err(value) = pointer::insert(node, to, value) {
            *node = value;
        }
        return;
    }
    let Some(value) = pointer::take(node, from) else {
        return;
    };
    if let Err(value) = pointer::insert(node, to, value) {
        pointer::put_back(node, from, value);
    }
}

/// Reads a JSON body, transforms it and writes it back (compact). Any JSON is accepted
/// (a repeated key keeps its last value, as it is the one written back); the error says
/// why the body is not JSON, and the caller then passes it on unchanged.
pub fn apply_bytes(
    t: &Transform,
    body: &[u8],
    values: &dyn Values,
) -> Result<bytes::Bytes, String> {
    let mut doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    t.apply(&mut doc, values);
    serde_json::to_vec(&doc)
        .map(bytes::Bytes::from)
        .map_err(|e| format!("cannot write the transformed body: {e}"))
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "allow_tests.rs"]
mod allow_tests;

#[cfg(test)]
#[path = "schema_tests.rs"]
mod schema_tests;
