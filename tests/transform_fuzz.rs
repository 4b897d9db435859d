//! Property tests of `gateway::transform`: random JSON documents (nested objects and
//! arrays, awkward keys such as `*`, `0`, `01`, `x/y`, `t~`, ``) and random transforms
//! whose pointers come from the document's own paths (some indices turned into `*`) or
//! are made up. Checked: nothing panics; `remove` of a concrete pointer removes exactly
//! it; `allow` leaves only what is allowed (and matches a naive model); `rename` of an
//! existing concrete path moves exactly that value; `set` writes all or nothing;
//! `apply_bytes` takes any bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway::config::traffic::TransformDef;
use gateway::template::{Scope, Values};
use gateway::transform::{apply_bytes, Transform};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

struct V;
impl Values for V {
    fn path_param(&self, _: usize) -> Option<&str> {
        None
    }
    fn query(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
    fn header(&self, _: &http::HeaderName) -> Option<&str> {
        Some("h")
    }
    fn claim(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
    fn consumer_id(&self) -> Option<&str> {
        Some("acme")
    }
}

fn compile(def: Value) -> Result<Transform, String> {
    let def: TransformDef = serde_json::from_value(def).unwrap();
    let scope = Scope {
        path_params: &[],
        claims: false,
        consumer: true,
        calls: &[],
    };
    Transform::compile(&def, &scope)
}

fn run(def: Value, doc: &Value) -> Value {
    let mut out = doc.clone();
    compile(def).unwrap().apply(&mut out, &V);
    out
}

// ---- generators ----

const KEYS: &[&str] = &["a", "b", "c", "0", "1", "01", "*", "x/y", "t~", ""];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(String::from)
}

fn any_doc() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..100).prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Mostly objects at the root, as bodies usually are.
fn doc() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::btree_map(key(), any_doc(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => any_doc(),
    ]
}

/// Segments of a made-up pointer (unescaped; `*` is the wildcard).
fn random_segs() -> impl Strategy<Value = Vec<String>> {
    let seg = prop_oneof![
        4 => key(),
        1 => Just("*".to_string()),
        1 => (0usize..4).prop_map(|i| i.to_string()),
    ];
    prop::collection::vec(seg, 1..5)
}

/// How to pick a pointer: from the document's paths (index `pick`, indices turned into
/// `*` when `wild`), or `random` when the document has none or `own` is false.
#[derive(Debug, Clone)]
struct Pick {
    own: bool,
    pick: usize,
    wild: bool,
    random: Vec<String>,
}

fn pick() -> impl Strategy<Value = Pick> {
    (any::<bool>(), any::<usize>(), any::<bool>(), random_segs()).prop_map(
        |(own, pick, wild, random)| Pick {
            own,
            pick,
            wild,
            random,
        },
    )
}

// ---- paths ----

#[derive(Debug, Clone, PartialEq)]
enum P {
    Key(String),
    Idx(usize),
}

fn paths(doc: &Value) -> Vec<Vec<P>> {
    let mut out = Vec::new();
    let mut stack = vec![(Vec::new(), doc)];
    while let Some((path, v)) = stack.pop() {
        let children: Vec<(P, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (P::Key(k.clone()), c)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, c)| (P::Idx(i), c)).collect(),
            _ => continue,
        };
        for (seg, c) in children {
            let mut p: Vec<P> = path.clone();
            p.push(seg);
            out.push(p.clone());
            stack.push((p, c));
        }
    }
    out
}

/// Every path of a scalar or an empty container, with the value.
fn leaves(doc: &Value) -> Vec<(Vec<P>, &Value)> {
    let mut out = Vec::new();
    let mut stack = vec![(Vec::new(), doc)];
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    let mut p = path.clone();
                    p.push(P::Key(k.clone()));
                    stack.push((p, c));
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, c) in a.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(P::Idx(i));
                    stack.push((p, c));
                }
            }
            _ => out.push((path, v)),
        }
    }
    out
}

fn seg_text(p: &P, wild: bool) -> String {
    match p {
        P::Key(k) => k.clone(),
        P::Idx(_) if wild => "*".to_string(),
        P::Idx(i) => i.to_string(),
    }
}

fn choose(doc: &Value, p: &Pick) -> Vec<String> {
    let all = paths(doc);
    if !p.own || all.is_empty() {
        return p.random.clone();
    }
    all[p.pick % all.len()]
        .iter()
        .map(|s| seg_text(s, p.wild))
        .collect()
}

fn pointer(segs: &[String]) -> String {
    segs.iter()
        .map(|s| {
            if s == "*" {
                "/*".to_string()
            } else {
                format!("/{}", s.replace('~', "~0").replace('/', "~1"))
            }
        })
        .collect()
}

fn is_index(s: &str) -> Option<usize> {
    let ok =
        s == "0" || (!s.starts_with('0') && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// Whether pattern segment `pat` names path segment `seg`.
fn seg_matches(pat: &str, seg: &P) -> bool {
    match seg {
        P::Key(k) => pat == k,
        P::Idx(i) => pat == "*" || is_index(pat) == Some(*i),
    }
}

// ---- models ----

/// `allow` written the obvious way: recursion over the document with the live patterns.
fn model_allow(v: &Value, pats: &[&[String]]) -> Option<Value> {
    if pats.iter().any(|p| p.is_empty()) {
        return Some(v.clone());
    }
    let sub = |seg: &P| -> Vec<&[String]> {
        pats.iter()
            .filter(|p| seg_matches(&p[0], seg))
            .map(|p| &p[1..])
            .collect()
    };
    match v {
        Value::Object(m) => Some(Value::Object(
            m.iter()
                .filter_map(|(k, c)| {
                    let s = sub(&P::Key(k.clone()));
                    if s.is_empty() {
                        None
                    } else {
                        model_allow(c, &s).map(|x| (k.clone(), x))
                    }
                })
                .collect(),
        )),
        Value::Array(a) => Some(Value::Array(
            a.iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let s = sub(&P::Idx(i));
                    if s.is_empty() {
                        None
                    } else {
                        model_allow(c, &s)
                    }
                })
                .collect(),
        )),
        _ => None,
    }
}

/// Takes the value at a concrete, non-empty path.
fn model_take(d: &mut Value, segs: &[String]) -> Option<Value> {
    let (last, parents) = segs.split_last()?;
    match d.pointer_mut(&pointer(parents))? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => {
            let i = is_index(last).filter(|i| *i < a.len())?;
            Some(a.remove(i))
        }
        _ => None,
    }
}

/// Writes at a concrete path, creating objects below missing keys; false when blocked.
fn model_insert(d: &mut Value, segs: &[String], v: Value) -> bool {
    let mut cur = d;
    for (n, seg) in segs.iter().enumerate() {
        let last = n + 1 == segs.len();
        cur = match cur {
            Value::Object(m) if last => {
                m.insert(seg.clone(), v);
                return true;
            }
            Value::Object(m) => m.entry(seg.clone()).or_insert_with(|| json!({})),
            Value::Array(a) => match is_index(seg).filter(|i| *i < a.len()) {
                Some(i) if last => {
                    a[i] = v;
                    return true;
                }
                Some(i) => &mut a[i],
                None => return false,
            },
            _ => return false,
        };
    }
    false
}

fn model_rename(doc: &Value, from: &[String], to: &[String]) -> Value {
    let mut d = doc.clone();
    let Some(v) = model_take(&mut d, from) else {
        return doc.clone();
    };
    if model_insert(&mut d, to, v) {
        d
    } else {
        doc.clone()
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_transforms_never_panic(
        doc in doc(),
        renames in prop::collection::vec((pick(), random_segs(), any::<bool>()), 0..3),
        removes in prop::collection::vec(pick(), 0..3),
        sets in prop::collection::vec((pick(), any::<bool>()), 0..3),
        allow in prop::option::of(prop::collection::vec(pick(), 0..3)),
    ) {
        let mut rename = Map::new();
        for (from, tail, keep_shape) in &renames {
            let from = choose(&doc, from);
            let to = if *keep_shape {
                let cut = from.iter().rposition(|s| s == "*").map_or(0, |i| i + 1);
                let mut to = from[..cut].to_vec();
                to.extend(tail.iter().filter(|s| *s != "*").cloned());
                to
            } else {
                tail.clone()
            };
            rename.insert(pointer(&from), Value::from(pointer(&to)));
        }
        let remove: Vec<String> = removes.iter().map(|p| pointer(&choose(&doc, p))).collect();
        let mut set = Map::new();
        for (p, template) in &sets {
            let v = if *template { json!("by {consumer.id} {header.x}") } else { json!({"k": [1]}) };
            set.insert(pointer(&choose(&doc, p)), v);
        }
        let allow: Option<Vec<String>> =
            allow.map(|l| l.iter().map(|p| pointer(&choose(&doc, p))).collect());
        let def = json!({"rename": rename, "remove": remove, "set": set, "allow": allow});
        if let Ok(t) = compile(def) {
            let mut out = doc.clone();
            t.apply(&mut out, &V);
            let _ = t.impossible_paths(&json!({"type": "object", "additionalProperties": false}));
            let bytes = serde_json::to_vec(&doc).unwrap();
            prop_assert!(apply_bytes(&t, &bytes, &V).is_ok());
        }
    }

    #[test]
    fn remove_of_a_concrete_pointer_removes_exactly_it(doc in doc(), p in pick()) {
        let segs = choose(&doc, &Pick { wild: false, ..p });
        if segs.iter().any(|s| s == "*") {
            return Ok(());
        }
        let ptr = pointer(&segs);
        let out = run(json!({"remove": [ptr]}), &doc);
        let (last, parents) = segs.split_last().unwrap();
        match doc.pointer(&pointer(parents)) {
            Some(Value::Object(_)) => {
                prop_assert!(out.pointer(&ptr).is_none());
                prop_assert_eq!(&model_rename_free_remove(&doc, &segs), &out);
            }
            Some(Value::Array(a)) => {
                let mut expected = a.clone();
                if let Some(i) = is_index(last).filter(|i| *i < a.len()) {
                    expected.remove(i);
                }
                prop_assert_eq!(out.pointer(&pointer(parents)), Some(&Value::Array(expected)));
            }
            _ => prop_assert_eq!(&out, &doc),
        }
    }

    #[test]
    fn allow_keeps_only_allowed_leaves(
        doc in doc(),
        picks in prop::collection::vec(pick(), 0..4),
    ) {
        // Indices become `*`, so that dropped elements cannot shift what a pattern names.
        let pats: Vec<Vec<String>> = picks
            .iter()
            .map(|p| choose(&doc, &Pick { wild: true, ..p.clone() })
                .into_iter()
                .map(|s| if is_index(&s).is_some() { "*".to_string() } else { s })
                .collect())
            .collect();
        let allow: Vec<String> = pats.iter().map(|p| pointer(p)).collect();
        let out = run(json!({"allow": allow}), &doc);
        if !(doc.is_object() || doc.is_array()) {
            prop_assert_eq!(&out, &doc);
            return Ok(());
        }
        let under = |path: &[P]| pats.iter().any(|pat| {
            pat.len() <= path.len() && pat.iter().zip(path).all(|(s, p)| seg_matches(s, p))
        });
        let on_the_way = |path: &[P]| pats.iter().any(|pat| {
            path.len() <= pat.len() && pat.iter().zip(path).all(|(s, p)| seg_matches(s, p))
        });
        for (path, v) in leaves(&out) {
            if path.is_empty() {
                continue;
            }
            let scalar = !(v.is_object() || v.is_array());
            if scalar {
                prop_assert!(under(&path), "{path:?} = {v} left by {allow:?}: {out}");
            } else {
                prop_assert!(under(&path) || on_the_way(&path), "{path:?} left by {allow:?}: {out}");
            }
        }
        let refs: Vec<&[String]> = pats.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(Some(out), model_allow(&doc, &refs));
    }

    #[test]
    fn allow_matches_the_model_with_indices(
        doc in doc(),
        picks in prop::collection::vec(pick(), 0..4),
    ) {
        let pats: Vec<Vec<String>> = picks.iter().map(|p| choose(&doc, p)).collect();
        let allow: Vec<String> = pats.iter().map(|p| pointer(p)).collect();
        let out = run(json!({"allow": allow}), &doc);
        let refs: Vec<&[String]> = pats.iter().map(Vec::as_slice).collect();
        let expected = if doc.is_object() || doc.is_array() { model_allow(&doc, &refs) } else { Some(doc.clone()) };
        prop_assert_eq!(Some(out), expected);
    }

    #[test]
    fn rename_moves_exactly_the_value(doc in doc(), from in pick(), to in pick()) {
        let from = choose(&doc, &Pick { own: true, wild: false, ..from });
        let to = choose(&doc, &Pick { wild: false, ..to });
        if from.iter().chain(&to).any(|s| s == "*") {
            return Ok(());
        }
        let out = run(json!({"rename": {pointer(&from): pointer(&to)}}), &doc);
        prop_assert_eq!(&out, &model_rename(&doc, &from, &to));
        if let (Some(v), true) = (doc.pointer(&pointer(&from)), out != doc) {
            prop_assert_eq!(out.pointer(&pointer(&to)), Some(v));
        }
    }

    #[test]
    fn rename_with_a_wildcard_renames_in_every_element(
        doc in doc(),
        from in pick(),
        tail in prop::collection::vec(key(), 1..3),
    ) {
        // `prefix/*/rest` -> `prefix/*/tail`, the last index of a path of the document.
        let path = choose(&doc, &Pick { own: true, wild: false, ..from });
        let Some(cut) = path.iter().rposition(|s| is_index(s).is_some()) else { return Ok(()) };
        let (prefix, rest) = (&path[..cut], &path[cut + 1..]);
        let tail: Vec<String> = tail
            .into_iter()
            .filter(|s| s != "*" && is_index(s).is_none())
            .collect();
        if path.iter().any(|s| s == "*") || rest.is_empty() || tail.is_empty() {
            return Ok(());
        }
        let star = |r: &[String]| format!("{}/*{}", pointer(prefix), pointer(r));
        let out = run(json!({"rename": {star(rest): star(&tail)}}), &doc);
        let mut expected = doc.clone();
        match expected.pointer_mut(&pointer(prefix)) {
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    *item = model_rename(item, rest, &tail);
                }
            }
            // On an object, `*` is the key "*".
            Some(Value::Object(m)) => {
                if let Some(item) = m.get_mut("*") {
                    *item = model_rename(item, rest, &tail);
                }
            }
            _ => {}
        }
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn set_writes_all_or_nothing(doc in doc(), p in pick()) {
        let segs = choose(&doc, &Pick { wild: false, ..p });
        if segs.iter().any(|s| s == "*") {
            return Ok(());
        }
        let ptr = pointer(&segs);
        let out = run(json!({"set": {ptr.clone(): "{consumer.id}"}}), &doc);
        let mut expected = doc.clone();
        if model_insert(&mut expected, &segs, json!("acme")) {
            prop_assert_eq!(out.pointer(&ptr), Some(&json!("acme")));
            prop_assert_eq!(out, expected);
        } else {
            prop_assert_eq!(out, doc);
        }
    }

    #[test]
    fn apply_bytes_takes_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        doc in doc(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let t = compile(json!({
            "rename": {"/a/*/b": "/a/*/c"},
            "remove": ["/b", "/*/0"],
            "set": {"/s": "{consumer.id}", "/a/*/x": 1},
            "allow": ["/a/*/c", "/s", "/0"]
        })).unwrap();
        let _ = apply_bytes(&t, &bytes, &V);
        let mut text = serde_json::to_vec(&doc).unwrap();
        let len = text.len();
        for (at, b) in flips {
            text[at % len] = b;
        }
        if let Ok(out) = apply_bytes(&t, &text, &V) {
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }
}

/// `remove` of a key of an object: the same document without it.
fn model_rename_free_remove(doc: &Value, segs: &[String]) -> Value {
    let mut d = doc.clone();
    model_take(&mut d, segs);
    d
}
