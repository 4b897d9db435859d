//! Strict JSON parsing for validated bodies: duplicate keys are refused (a validator and an
//! upstream could otherwise read different values), nesting is bounded by serde_json's
//! recursion limit, and errors carry their position.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A JSON value that refuses objects with a repeated key.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One search of the map per key: the check and the insert share it.
            match out.entry(key) {
                serde_json::map::Entry::Occupied(seen) => {
                    return Err(de::Error::custom(format!(
                        "duplicate key {:?}",
                        truncate(seen.key(), 64)
                    )));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    let Strict(v) = map.next_value()?;
                    slot.insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Shortens text for an error message, on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses a body strictly; the error says what is wrong and where.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    // JSON is UTF-8 as a whole (RFC 8259 §8.1): checked once here, so that the parser,
    // given a `&str`, does not check each string again (a fifth of the parse's cost).
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            let (line, column) = position(body, e.valid_up_to());
            return Err(format!(
                "the body is not valid JSON: invalid UTF-8 at line {line} column {column}"
            ));
        }
    };
    match serde_json::from_str::<Strict>(text) {
        Ok(Strict(v)) => Ok(v),
        Err(e) => {
            let what = e.to_string();
            let what = what.split(" at line ").next().unwrap_or(&what).to_string();
            Err(format!(
                "the body is not valid JSON: {what} at line {} column {}",
                e.line(),
                e.column()
            ))
        }
    }
}

/// Line and column (1-based, in bytes, as serde_json counts them) of byte `at`.
fn position(body: &[u8], at: usize) -> (usize, usize) {
    let before = &body[..at.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.len()
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        assert_eq!(
            parse(br#"{"a":[1,2.5,"x",null,true]}"#).unwrap()["a"][1],
            2.5
        );
        let e = parse(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(
            e.contains("duplicate key \"a\"") && e.contains("line 1"),
            "{e}"
        );
        let e = parse(b"{\n  \"a\": tru }").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse(b"1e400").is_err(), "huge numbers are refused");
        assert!(parse(b"\"\xff\"").is_err(), "invalid UTF-8");
        let e = parse(b"{\n  \"a\": \"x\xffy\"}").unwrap_err();
        assert!(e.contains("invalid UTF-8 at line 2 column 10"), "{e}");
        let deep = "[".repeat(1_000_000);
        assert!(parse(deep.as_bytes())
            .unwrap_err()
            .contains("recursion limit"));
        assert!(parse(b"").is_err());
        assert!(parse(b"{} x").is_err(), "trailing data");
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
