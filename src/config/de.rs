//! A serde `Deserializer` over [`Value`], with HCL's lenient conversions
//! (numeric strings to numbers, numbers and bools to strings).
//!
//! Invariant: an `Unknown` value deserializes as `None` into an `Option` and is
//! an error anywhere else ("not known until apply"), so a typed spec never holds
//! a guessed value.

use super::value::{format_number, Value};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct DeError(pub String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError(format!("expected {exp}, got {}", describe_unexpected(unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError(format!("invalid value {}: expected {exp}", describe_unexpected(unexp)))
    }
}

fn describe_unexpected(u: de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Str(s) => format!("the string \"{s}\""),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Map => "a map".into(),
        de::Unexpected::Unit => "null".into(),
        de::Unexpected::Float(f) => format!("the number {}", format_number(f)),
        de::Unexpected::Signed(i) => format!("the number {i}"),
        de::Unexpected::Unsigned(i) => format!("the number {i}"),
        de::Unexpected::Bool(b) => format!("the bool {b}"),
        other => other.to_string(),
    }
}

pub const UNKNOWN_MSG: &str = "this value is not known until apply, but must be known to plan";

/// Deserializes `T` from a value, reporting the path of the first error.
pub fn from_value<T: de::DeserializeOwned>(v: &Value) -> Result<T, (String, DeError)> {
    serde_path_to_error::deserialize(ValueDe(v)).map_err(|e| (e.path().to_string(), e.into_inner()))
}

#[derive(Clone, Copy)]
pub struct ValueDe<'a>(pub &'a Value);

impl<'de> IntoDeserializer<'de, DeError> for ValueDe<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

fn whole(n: f64) -> Option<i128> {
    (n.fract() == 0.0 && n.abs() < 1.0e18).then_some(n as i128)
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

macro_rules! de_int {
    ($name:ident, $visit:ident, $t:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.0 {
                Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
                v => match number_of(v) {
                    Some(n) => match whole(n).and_then(|i| <$t>::try_from(i).ok()) {
                        Some(i) => visitor.$visit(i),
                        None if n.fract() != 0.0 => Err(DeError(format!("expected a whole number, got {}", format_number(n)))),
                        None => Err(DeError(format!("the number {} is out of range", format_number(n)))),
                    },
                    None => Err(DeError(format!("expected a number, got {} {}", v.type_name(), v))),
                },
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match whole(*n).and_then(|i| i64::try_from(i).ok()) {
                Some(i) => visitor.visit_i64(i),
                None => visitor.visit_f64(*n),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::List(v) | Value::Set(v) => visitor.visit_seq(Seq(v.iter())),
            Value::Map(m) => visitor.visit_map(Map { it: m.iter(), value: None }),
            Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null | Value::Unknown => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::String(s) if s == "true" => visitor.visit_bool(true),
            Value::String(s) if s == "false" => visitor.visit_bool(false),
            Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
            v => Err(DeError(format!("expected a bool, got {} {}", v.type_name(), v))),
        }
    }

    de_int!(deserialize_u8, visit_u8, u8);
    de_int!(deserialize_u16, visit_u16, u16);
    de_int!(deserialize_u32, visit_u32, u32);
    de_int!(deserialize_u64, visit_u64, u64);
    de_int!(deserialize_i8, visit_i8, i8);
    de_int!(deserialize_i16, visit_i16, i16);
    de_int!(deserialize_i32, visit_i32, i32);
    de_int!(deserialize_i64, visit_i64, i64);

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match number_of(self.0) {
            Some(n) => visitor.visit_f64(n),
            None if self.0.is_unknown() => Err(DeError(UNKNOWN_MSG.into())),
            None => Err(DeError(format!("expected a number, got {} {}", self.0.type_name(), self.0))),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Number(_) | Value::Bool(_) => visitor.visit_string(self.0.to_string_lossless().unwrap_or_default()),
            Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
            v => Err(DeError(format!("expected a string, got {} {}", v.type_name(), v))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::List(v) | Value::Set(v) => visitor.visit_seq(Seq(v.iter())),
            Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
            v => Err(DeError(format!("expected a list, got {} {}", v.type_name(), v))),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Map(m) => visitor.visit_map(Map { it: m.iter(), value: None }),
            Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
            v => Err(DeError(format!("expected a block or map, got {} {}", v.type_name(), v))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _n: &'static str, _f: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _n: &'static str, _v: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Unknown => Err(DeError(UNKNOWN_MSG.into())),
            v => Err(DeError(format!("expected a string, got {} {}", v.type_name(), v))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        // A reference to a resource is the resource's whole exported
        // object; only its address entry matters, so only that is offered
        // (walking the rest was 2 % of a plan over 1,000 instances).
        if name == crate::model::common::REF_NEWTYPE
            && let Value::Map(m) = self.0
            && let Some(Value::String(addr)) = m.get(crate::model::common::REF_KEY)
        {
            return visitor.visit_map(de::value::MapDeserializer::new(std::iter::once((crate::model::common::REF_KEY, addr.as_str()))));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        self.0.next().map(|v| seed.deserialize(ValueDe(v))).transpose()
    }
}

struct Map<'a> {
    it: std::collections::btree_map::Iter<'a, String, Value>,
    value: Option<&'a Value>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.it.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(de::value::BorrowedStrDeserializer::new(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = self.value.take().ok_or_else(|| DeError("value without key".into()))?;
        seed.deserialize(ValueDe(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        n: u32,
        s: String,
        o: Option<String>,
        #[serde(default)]
        l: Vec<u8>,
        e: Option<E>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum E {
        Bridge,
        OvsHybrid,
    }

    #[test]
    fn lenient_conversions() {
        let v = Value::map([
            ("n", Value::string("4")),
            ("s", Value::Number(5.0)),
            ("o", Value::Unknown),
            ("e", Value::string("ovs_hybrid")),
        ]);
        let s: S = from_value(&v).unwrap();
        assert_eq!(s, S { n: 4, s: "5".into(), o: None, l: vec![], e: Some(E::OvsHybrid) });
    }

    #[test]
    fn errors_have_paths_and_plain_messages() {
        let v = Value::map([("n", Value::Number(1.5)), ("s", Value::string("x"))]);
        let (path, e) = from_value::<S>(&v).unwrap_err();
        assert_eq!(path, "n");
        assert!(e.0.contains("whole number"), "{}", e.0);
        let v = Value::map([("n", Value::Number(1.0)), ("s", Value::string("x")), ("l", Value::List(vec![Value::Number(1.0), Value::string("z")]))]);
        let (path, e) = from_value::<S>(&v).unwrap_err();
        assert_eq!(path, "l[1]");
        assert!(e.0.contains("expected a number"), "{}", e.0);
        let v = Value::map([("n", Value::Number(1.0)), ("s", Value::string("x")), ("zz", Value::Null)]);
        let (_, e) = from_value::<S>(&v).unwrap_err();
        assert!(e.0.contains("unknown field `zz`"), "{}", e.0);
        let v = Value::map([("n", Value::Number(1.0)), ("s", Value::Unknown)]);
        let (_, e) = from_value::<S>(&v).unwrap_err();
        assert_eq!(e.0, UNKNOWN_MSG);
    }
}
