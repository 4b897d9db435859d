//! Text templates in `set` values, such as `"{consumer.id}"` or `"by {header.x-user}"`:
//! the variables of `crate::template` (same namespaces, same load-time checks), rendered
//! as plain text (no percent-encoding, no leading `/`).

use crate::template::{parse_var, var_value, Scope, Values, Var};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Text {
    parts: Vec<Part>,
    /// Length of the literal parts (a first guess at the rendered size).
    lit_len: usize,
}

impl Text {
    /// Compiles `src`; the error says what is wrong with it.
    pub(crate) fn compile(src: &str, scope: &Scope<'_>) -> Result<Text, String> {
        let mut parts = Vec::new();
        let mut lit_len = 0;
        let mut rest = src;
        while !rest.is_empty() {
            let Some(i) = rest.find(['{', '}']) else {
                lit_len += rest.len();
                parts.push(Part::Lit(rest.to_string()));
                break;
            };
            let (lit, tail) = rest.split_at(i);
            if tail.starts_with('}') {
                return Err(format!("unmatched `}}` in template {src:?}"));
            }
            if !lit.is_empty() {
                lit_len += lit.len();
                parts.push(Part::Lit(lit.to_string()));
            }
            let after = tail.get(1..).unwrap_or("");
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in template {src:?}"))?;
            let (expr, close) = after.split_at(end);
            parts.push(Part::Var(parse_var(expr, scope)?));
            rest = close.get(1..).unwrap_or("");
        }
        Ok(Text { parts, lit_len })
    }

    /// Renders the text; a missing value renders as an empty string.
    pub(crate) fn render(&self, values: &dyn Values) -> String {
        let mut out = String::with_capacity(self.lit_len + 16);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(var) => {
                    if let Some(v) = var_value(var, values) {
                        out.push_str(&v);
                    }
                }
            }
        }
        out
    }
}
