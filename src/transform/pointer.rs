//! JSON Pointers (RFC 6901) with `*` for every element of an array, parsed once at load
//! time, and the in-place edits the operations are made of. Every walk recurses at most
//! once per segment of a compiled pointer (bounded by [`MAX_SEGMENTS`]), never by the
//! document's own depth.

use serde_json::{Map, Value};

/// Longest pointer accepted (serde_json parses documents at most 128 levels deep).
pub(crate) const MAX_SEGMENTS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// An object key; also an array index when it is one (`0`, `17`: no sign, no leading zero).
    Key { key: String, index: Option<usize> },
    /// `*`: every element of an array; on an object, the key `"*"`.
    Wild,
}

impl Seg {
    /// The segment as an object key.
    pub(crate) fn key(&self) -> &str {
        match self {
            Seg::Key { key, .. } => key,
            Seg::Wild => "*",
        }
    }

    fn index(&self) -> Option<usize> {
        match self {
            Seg::Key { index, .. } => *index,
            Seg::Wild => None,
        }
    }
}

/// A parsed pointer and its text as written in the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Pointer {
    pub raw: String,
    pub segs: Vec<Seg>,
}

impl Pointer {
    /// Where the part after the last `*` starts (0 without `*`).
    pub(crate) fn after_last_wild(&self) -> usize {
        self.segs
            .iter()
            .rposition(|s| *s == Seg::Wild)
            .map_or(0, |i| i + 1)
    }
}

/// Parses `raw`; the whole document (`""`) is refused.
pub(crate) fn parse(raw: &str) -> Result<Pointer, String> {
    if raw.is_empty() {
        return Err("pointer \"\" (the whole document) is not allowed here".to_string());
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(format!(
            "{raw:?} is not a JSON Pointer: it must start with `/`"
        ));
    };
    let mut segs = Vec::new();
    for part in rest.split('/') {
        if part == "*" {
            segs.push(Seg::Wild);
            continue;
        }
        let key =
            unescape(part).ok_or_else(|| format!("{raw:?}: `~` must be followed by `0` or `1`"))?;
        let index = array_index(&key);
        segs.push(Seg::Key { key, index });
    }
    if segs.len() > MAX_SEGMENTS {
        return Err(format!("{raw:?}: more than {MAX_SEGMENTS} segments"));
    }
    Ok(Pointer {
        raw: raw.to_string(),
        segs,
    })
}

fn unescape(part: &str) -> Option<String> {
    if !part.contains('~') {
        return Some(part.to_string());
    }
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn array_index(key: &str) -> Option<usize> {
    let canonical = key == "0"
        || (!key.is_empty() && !key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if canonical {
        key.parse().ok()
    } else {
        None
    }
}

/// The text of a pointer made of `segs` (for messages).
pub(crate) fn show(segs: &[Seg]) -> String {
    if segs.is_empty() {
        return "the document root".to_string();
    }
    let mut out = String::new();
    for s in segs {
        out.push('/');
        out.push_str(&s.key().replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// Calls `f` on every value `segs` leads to from `node`, `*` expanding over array elements.
pub(crate) fn for_each_mut<F: FnMut(&mut Value)>(node: &mut Value, segs: &[Seg], f: &mut F) {
    let Some((first, rest)) = segs.split_first() else {
        f(node);
        return;
    };
    match node {
        Value::Array(items) => match first {
            Seg::Wild => {
                for item in items {
                    for_each_mut(item, rest, f);
                }
            }
            Seg::Key { index, .. } => {
                if let Some(item) = index.and_then(|i| items.get_mut(i)) {
                    for_each_mut(item, rest, f);
                }
            }
        },
        Value::Object(map) => {
            if let Some(v) = map.get_mut(first.key()) {
                for_each_mut(v, rest, f);
            }
        }
        _ => {}
    }
}

/// The value at `segs` (no `*` expansion: `*` is a key), if any.
fn get_mut<'a>(mut node: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    for seg in segs {
        node = match node {
            Value::Object(map) => map.get_mut(seg.key())?,
            Value::Array(items) => items.get_mut(seg.index()?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Deletes what the last segment names in `node` (`*` empties an array).
pub(crate) fn remove_child(node: &mut Value, last: &Seg) {
    match node {
        Value::Object(map) => {
            map.remove(last.key());
        }
        Value::Array(items) => match last {
            Seg::Wild => items.clear(),
            Seg::Key { index, .. } => {
                if let Some(i) = index.filter(|i| *i < items.len()) {
                    items.remove(i);
                }
            }
        },
        _ => {}
    }
}

/// Takes the value at the non-empty path `segs` out of `node`.
pub(crate) fn take(node: &mut Value, segs: &[Seg]) -> Option<Value> {
    let (last, parents) = segs.split_last()?;
    match get_mut(node, parents)? {
        Value::Object(map) => map.remove(last.key()),
        Value::Array(items) => {
            let i = last.index().filter(|i| *i < items.len())?;
            Some(items.remove(i))
        }
        _ => None,
    }
}

/// Puts back what [`take`] took (same place, arrays shifted back).
pub(crate) fn put_back(node: &mut Value, segs: &[Seg], value: Value) {
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    match get_mut(node, parents) {
        Some(Value::Object(map)) => {
            map.insert(last.key().to_string(), value);
        }
        Some(Value::Array(items)) => {
            if let Some(i) = last.index().filter(|i| *i <= items.len()) {
                items.insert(i, value);
            }
        }
        _ => {}
    }
}

/// Writes `value` at `segs` under `node`, creating missing intermediate objects; an
/// existing array element is replaced, never appended. When the path is blocked (a
/// scalar on the way, an index out of range), nothing changes and `value` comes back.
/// Objects are only created below a missing key, after which nothing can block, so a
/// failed insert never leaves half-made objects behind.
pub(crate) fn insert(node: &mut Value, segs: &[Seg], value: Value) -> Result<(), Value> {
    let Some((last, parents)) = segs.split_last() else {
        *node = value;
        return Ok(());
    };
    let mut cur = node;
    for seg in parents {
        cur = match cur {
            Value::Object(map) => {
                let key = seg.key();
                if !map.contains_key(key) {
                    map.insert(key.to_string(), Value::Object(Map::new()));
                }
                match map.get_mut(key) {
                    Some(v) => v,
                    None => return Err(value),
                }
            }
            Value::Array(items) => match seg.index().and_then(|i| items.get_mut(i)) {
                Some(v) => v,
                None => return Err(value),
            },
            _ => return Err(value),
        };
    }
    match cur {
        Value::Object(map) => {
            map.insert(last.key().to_string(), value);
            Ok(())
        }
        Value::Array(items) => match last.index().and_then(|i| items.get_mut(i)) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(value),
        },
        _ => Err(value),
    }
}

/// Whether two pointers may name the same place or one a place under the other
/// (`*` taken to match any segment).
pub(crate) fn overlap(a: &[Seg], b: &[Seg]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| *x == Seg::Wild || *y == Seg::Wild || x.key() == y.key())
}
