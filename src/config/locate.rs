//! Maps a dotted path inside a YAML document (`routes.3.upstream`) to the line it is on,
//! so that checks made after deserialization can still report `file:line`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers (1-based) of every node of one YAML document, by dotted path.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    lines: HashMap<String, usize>,
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    path: Vec<String>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// Called when a complete value (scalar, alias or closed container) has been seen.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => {
                let had_key = key.take().is_some();
                if had_key {
                    self.path.pop();
                }
            }
            Some(Frame::Seq { index }) => {
                *index += 1;
                self.path.pop();
            }
            _ => {}
        }
    }

    /// Called at the start of any node; returns true when the node is a mapping key.
    fn node_start(&mut self, line: usize, scalar: Option<&str>) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) if key.is_none() => {
                let k = scalar.unwrap_or("?").to_string();
                *key = Some(k.clone());
                self.path.push(k);
                self.lines.entry(self.path.join(".")).or_insert(line);
                true
            }
            Some(Frame::Seq { index }) => {
                self.path.push(index.to_string());
                self.lines.entry(self.path.join(".")).or_insert(line);
                false
            }
            _ => false,
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(ref s, ..) if !self.node_start(line, Some(s)) => self.value_done(),
            Event::Alias(_) if !self.node_start(line, None) => self.value_done(),
            Event::MappingStart(..) => {
                self.node_start(line, None);
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.node_start(line, None);
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Builds the locator; a document that does not parse yields an empty locator
    /// (serde_yaml reports the syntax error with its own line).
    pub fn new(source: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(source);
        let _ = parser.load(&mut walker, false);
        Locator {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_lines() {
        let src = "upstreams:\n  users:\n    targets: [\"a:1\"]\nroutes:\n  - name: a\n    upstream: users\n  - name: b\n    match: { path: /x }\n    upstream: nope\n";
        let l = Locator::new(src);
        assert_eq!(l.line("upstreams.users.targets"), Some(3));
        assert_eq!(l.line("routes.0.upstream"), Some(6));
        assert_eq!(l.line("routes.1"), Some(7));
        assert_eq!(l.line("routes.1.upstream"), Some(9));
        assert_eq!(l.line("routes.1.match.path"), Some(8));
        assert_eq!(l.line("routes.1.missing"), Some(7));
        assert_eq!(l.line("nothing"), None);
    }

    #[test]
    fn tolerates_garbage() {
        let l = Locator::new("a: [b\n  c: {");
        assert_eq!(l.line("zzz"), None);
    }
}
