//! Dynamic values produced by evaluating HCL expressions.
//!
//! Invariants:
//! - `Set` holds its elements sorted (by [`Value::sort_key`]) and without duplicates.
//! - `Unknown` is a value that only exists after apply (a DHCP address, …). It is
//!   carried through every operation that depends on it and is never guessed.
//! - Numbers are `f64`; integral numbers print without a fraction.

use std::collections::BTreeMap;
use std::fmt;

/// A value of the configuration language.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    /// A list or tuple, in order.
    List(Vec<Value>),
    /// A set: sorted, no duplicates (see [`Value::set`]).
    Set(Vec<Value>),
    /// A map or object, keyed by string.
    Map(BTreeMap<String, Value>),
    /// Known only after apply.
    Unknown,
}

/// How deeply lists, sets and maps may nest in a value built by the
/// configuration (the parser already stops at 64 levels per expression).
pub const MAX_DEPTH: usize = 256;

impl Value {
    /// Whether lists, sets and maps nest more than `limit` levels (walked
    /// with an explicit stack: the point is to never recurse that deep).
    pub fn deeper_than(&self, limit: usize) -> bool {
        let mut stack: Vec<(&Value, usize)> = vec![(self, 0)];
        while let Some((v, d)) = stack.pop() {
            let children: Box<dyn Iterator<Item = &Value>> = match v {
                Value::List(xs) | Value::Set(xs) => Box::new(xs.iter()),
                Value::Map(m) => Box::new(m.values()),
                _ => continue,
            };
            if d >= limit {
                return true;
            }
            stack.extend(children.map(|c| (c, d + 1)));
        }
        false
    }

    /// Builds a set: sorts and removes duplicates.
    pub fn set(mut items: Vec<Value>) -> Value {
        items.sort_by_cached_key(Value::sort_key);
        items.dedup();
        Value::Set(items)
    }

    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The language's name for this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Map(_) => "map",
            Value::Unknown => "unknown",
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// True when this value or anything inside it is unknown.
    pub fn contains_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::List(v) | Value::Set(v) => v.iter().any(Value::contains_unknown),
            Value::Map(m) => m.values().any(Value::contains_unknown),
            _ => false,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The number as an exact integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(*n as i64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Elements of a list or set.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Converts a primitive to its string form the way HCL does for interpolation
    /// and for `string`-typed attributes: numbers and bools convert, others do not.
    pub fn to_string_lossless(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(format_number(*n)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A total order used for sets and for sorting keys deterministically.
    pub fn sort_key(&self) -> String {
        match self {
            Value::String(s) => format!("s{s}"),
            Value::Number(n) => format!("n{:024.6}", n + 1.0e15),
            other => format!("x{}", other.to_json()),
        }
    }

    /// JSON form (unknown becomes the string `"(known after apply)"`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    J::from(*n as i64)
                } else {
                    serde_json::Number::from_f64(*n).map(J::Number).unwrap_or(J::Null)
                }
            }
            Value::String(s) => J::String(s.clone()),
            Value::List(v) | Value::Set(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            Value::Unknown => J::String("(known after apply)".into()),
        }
    }

    /// Converts JSON (e.g. from `jsondecode` or a `.json` var file) into a value.
    pub fn from_json(j: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect()),
        }
    }
}

/// Formats a number the way HCL prints it: integers without a fraction.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// HCL-like rendering, used in messages, `validate --json` and plan text.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => f.write_str(&format_number(*n)),
            Value::String(s) => write_quoted(f, s),
            Value::List(v) | Value::Set(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_quoted(f, k)?;
                    write!(f, " = {v}")?;
                }
                f.write_str("}")
            }
            Value::Unknown => f.write_str("(known after apply)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let s = Value::set(vec![Value::string("b"), Value::string("a"), Value::string("b")]);
        assert_eq!(s, Value::Set(vec![Value::string("a"), Value::string("b")]));
    }

    #[test]
    fn numbers_sort_numerically_in_sets() {
        let s = Value::set(vec![Value::Number(10.0), Value::Number(9.0), Value::Number(-1.0)]);
        assert_eq!(s, Value::Set(vec![Value::Number(-1.0), Value::Number(9.0), Value::Number(10.0)]));
    }

    #[test]
    fn display_is_hcl_like() {
        let v = Value::map([("a", Value::List(vec![Value::Number(1.0), Value::string("x\"y")]))]);
        assert_eq!(v.to_string(), r#"{"a" = [1, "x\"y"]}"#);
        assert_eq!(Value::Number(1.5).to_string(), "1.5");
    }

    #[test]
    fn unknown_is_found_deep() {
        let v = Value::List(vec![Value::map([("ip", Value::Unknown)])]);
        assert!(v.contains_unknown());
        assert!(!Value::List(vec![]).contains_unknown());
    }

    #[test]
    fn json_round_trip() {
        let v = Value::map([("n", Value::Number(3.0)), ("l", Value::List(vec![Value::Bool(true), Value::Null]))]);
        assert_eq!(Value::from_json(&v.to_json()), v);
    }
}
