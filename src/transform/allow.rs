//! `allow`: the allowed pointers as a tree, built once, so that filtering a document asks
//! one node per key or element. Object keys and array indices have separate children;
//! `*` (every element) is merged at load time into the children of explicit indices, so
//! `allow: [/items/*/id, /items/0/name]` keeps `id` and `name` of the first item.

use super::pointer::Seg;
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    /// An allowed pointer ends here: keep the value and everything under it.
    keep: bool,
    /// Children by object key (`*` is the key `"*"` on an object).
    keys: Vec<(String, Node)>,
    /// Children by array index (already holding what `every` allows).
    indices: Vec<(usize, Node)>,
    /// Children of every other array element (`*`).
    every: Option<Box<Node>>,
}

fn child<'a, K: PartialEq + Clone>(list: &'a mut Vec<(K, Node)>, k: &K) -> Option<&'a mut Node> {
    if !list.iter().any(|(x, _)| x == k) {
        list.push((k.clone(), Node::default()));
    }
    list.iter_mut().find(|(x, _)| x == k).map(|(_, n)| n)
}

impl Node {
    /// The tree of `pointers` (each a non-empty list of segments).
    pub(crate) fn build<'a>(pointers: impl IntoIterator<Item = &'a [Seg]>) -> Node {
        let mut root = Node::default();
        for segs in pointers {
            root.add(segs);
        }
        root.spread_every();
        root
    }

    fn add(&mut self, segs: &[Seg]) {
        if self.keep {
            return;
        }
        let Some((first, rest)) = segs.split_first() else {
            *self = Node {
                keep: true,
                ..Node::default()
            };
            return;
        };
        if let Some(n) = child(&mut self.keys, &first.key().to_string()) {
            n.add(rest);
        }
        match first {
            Seg::Wild => self.every.get_or_insert_with(Box::default).add(rest),
            Seg::Key { index: Some(i), .. } => {
                if let Some(n) = child(&mut self.indices, i) {
                    n.add(rest);
                }
            }
            Seg::Key { index: None, .. } => {}
        }
    }

    /// Adds everything `other` allows.
    fn merge(&mut self, other: &Node) {
        if self.keep {
            return;
        }
        if other.keep {
            *self = other.clone();
            return;
        }
        for (k, n) in &other.keys {
            if let Some(mine) = child(&mut self.keys, k) {
                mine.merge(n);
            }
        }
        for (i, n) in &other.indices {
            if let Some(mine) = child(&mut self.indices, i) {
                mine.merge(n);
            }
        }
        if let Some(n) = &other.every {
            self.every.get_or_insert_with(Box::default).merge(n);
        }
    }

    /// Merges `every` into the explicit indices, at every level.
    fn spread_every(&mut self) {
        if let Some(every) = &self.every {
            for (_, n) in &mut self.indices {
                n.merge(every);
            }
        }
        for (_, n) in &mut self.keys {
            n.spread_every();
        }
        for (_, n) in &mut self.indices {
            n.spread_every();
        }
        if let Some(n) = &mut self.every {
            n.spread_every();
        }
    }

    /// Keeps only what the tree allows in `doc` (a scalar root is left as it is).
    pub(crate) fn filter_root(&self, doc: &mut Value) {
        self.filter(doc);
    }

    /// Filters the children of a container; recursion follows the tree, not the document.
    fn filter(&self, node: &mut Value) {
        match node {
            Value::Object(map) => map.retain(|k, v| {
                self.keys
                    .iter()
                    .find(|(key, _)| key == k)
                    .is_some_and(|(_, n)| n.keeps(v))
            }),
            Value::Array(items) => {
                let mut i = 0;
                items.retain_mut(|v| {
                    let at = i;
                    i += 1;
                    self.indices
                        .iter()
                        .find(|(j, _)| *j == at)
                        .map(|(_, n)| n)
                        .or(self.every.as_deref())
                        .is_some_and(|n| n.keeps(v))
                });
            }
            _ => {}
        }
    }

    /// Whether `v`, reached through this node, stays (filtered when only part of it is
    /// allowed). A scalar where only something under it is allowed goes.
    fn keeps(&self, v: &mut Value) -> bool {
        if self.keep {
            return true;
        }
        match v {
            Value::Object(_) | Value::Array(_) => {
                self.filter(v);
                true
            }
            _ => false,
        }
    }
}
