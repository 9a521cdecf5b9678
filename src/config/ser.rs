//! A serde `Serializer` into [`Value`]: the exported object of a resource is
//! its spec serialized this way.
//!
//! Invariant: the result is exactly `Value::from_json(&serde_json::to_value(x))`
//! (numbers become f64, non-finite floats null, enums in serde's externally
//! tagged form, map keys strings), without building the JSON tree first
//! (that round trip was a tenth of loading 3,000 resources).

use super::value::Value;
use serde::ser::{self, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct SerError(pub String);

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerError(msg.to_string())
    }
}

/// Serializes `v` into a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, SerError> {
    v.serialize(ValueSer)
}

fn number(n: f64) -> Value {
    if n.is_finite() { Value::Number(n) } else { Value::Null }
}

fn tagged(variant: &str, v: Value) -> Value {
    Value::Map(BTreeMap::from([(variant.to_string(), v)]))
}

/// `fn serialize_x(self, v: X) -> Result<Ok, SerError> { Ok(body) }` for
/// each (method, type), `v` bound in the body.
macro_rules! scalars {
    ($ok:ty; $($m:ident: $t:ty),* => |$v:ident| $body:expr) => {$(
        fn $m(self, $v: $t) -> Result<$ok, SerError> {
            Ok($body)
        }
    )*};
}

struct ValueSer;

impl ser::Serializer for ValueSer {
    type Ok = Value;
    type Error = SerError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = SeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = MapSer;

    scalars!(Value; serialize_bool: bool => |v| Value::Bool(v));
    scalars!(Value; serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32 => |v| Value::Number(v.into()));
    // As serde_json: 64- and 128-bit integers as the nearest f64.
    scalars!(Value; serialize_i64: i64, serialize_i128: i128, serialize_u64: u64, serialize_u128: u128 => |v| Value::Number(v as f64));
    scalars!(Value; serialize_f32: f32 => |v| number(v.into()));
    scalars!(Value; serialize_f64: f64 => |v| number(v));
    scalars!(Value; serialize_char: char => |v| Value::String(v.to_string()));
    scalars!(Value; serialize_str: &str => |v| Value::String(v.to_string()));
    scalars!(Value; serialize_bytes: &[u8] => |v| Value::List(v.iter().map(|b| Value::Number((*b).into())).collect()));

    fn serialize_none(self) -> Result<Value, SerError> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, SerError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, SerError> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, SerError> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<Value, SerError> {
        Ok(Value::String(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<Value, SerError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, variant: &'static str, v: &T) -> Result<Value, SerError> {
        Ok(tagged(variant, v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, SerError> {
        Ok(SeqSer { items: Vec::with_capacity(len.unwrap_or(0)), variant: None })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqSer, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, variant: &'static str, len: usize) -> Result<SeqSer, SerError> {
        Ok(SeqSer { items: Vec::with_capacity(len), variant: Some(variant) })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapSer, SerError> {
        Ok(MapSer { map: BTreeMap::new(), key: None, variant: None })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapSer, SerError> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<MapSer, SerError> {
        Ok(MapSer { map: BTreeMap::new(), key: None, variant: Some(variant) })
    }
}

/// A list being built (a tuple variant's under its variant's name).
struct SeqSer {
    items: Vec<Value>,
    variant: Option<&'static str>,
}

/// serde's four sequence traits are the same thing here.
macro_rules! seq_traits {
    ($($tr:ident :: $m:ident),*) => {$(
        impl ser::$tr for SeqSer {
            type Ok = Value;
            type Error = SerError;
            fn $m<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
                self.items.push(v.serialize(ValueSer)?);
                Ok(())
            }
            fn end(self) -> Result<Value, SerError> {
                Ok(match self.variant {
                    None => Value::List(self.items),
                    Some(v) => tagged(v, Value::List(self.items)),
                })
            }
        }
    )*};
}
seq_traits!(SerializeSeq::serialize_element, SerializeTuple::serialize_element, SerializeTupleStruct::serialize_field, SerializeTupleVariant::serialize_field);

/// A map or struct being built (a struct variant's under its variant's name).
struct MapSer {
    map: BTreeMap<String, Value>,
    key: Option<String>,
    variant: Option<&'static str>,
}

impl MapSer {
    fn finish(self) -> Result<Value, SerError> {
        Ok(match self.variant {
            None => Value::Map(self.map),
            Some(v) => tagged(v, Value::Map(self.map)),
        })
    }
}

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), SerError> {
        self.key = Some(k.serialize(KeySer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        let k = self.key.take().ok_or_else(|| SerError("a map value without a key".into()))?;
        self.map.insert(k, v.serialize(ValueSer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, SerError> {
        self.finish()
    }
}

/// Structs and struct variants are the same thing here.
macro_rules! struct_traits {
    ($($tr:ident),*) => {$(
        impl ser::$tr for MapSer {
            type Ok = Value;
            type Error = SerError;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, k: &'static str, v: &T) -> Result<(), SerError> {
                self.map.insert(k.to_string(), v.serialize(ValueSer)?);
                Ok(())
            }
            fn end(self) -> Result<Value, SerError> {
                self.finish()
            }
        }
    )*};
}
struct_traits!(SerializeStruct, SerializeStructVariant);

/// Map keys: strings, and what serde_json turns into strings (integers,
/// bools, chars, unit variants); anything else is an error, as in serde_json.
struct KeySer;

fn key_error<T>() -> Result<T, SerError> {
    Err(SerError("map keys must be strings".into()))
}

impl ser::Serializer for KeySer {
    type Ok = String;
    type Error = SerError;
    type SerializeSeq = ser::Impossible<String, SerError>;
    type SerializeTuple = ser::Impossible<String, SerError>;
    type SerializeTupleStruct = ser::Impossible<String, SerError>;
    type SerializeTupleVariant = ser::Impossible<String, SerError>;
    type SerializeMap = ser::Impossible<String, SerError>;
    type SerializeStruct = ser::Impossible<String, SerError>;
    type SerializeStructVariant = ser::Impossible<String, SerError>;

    scalars!(String; serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char, serialize_str: &str
        => |v| v.to_string());

    fn serialize_f32(self, _: f32) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_f64(self, _: f64) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_none(self) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_unit(self) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<String, SerError> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<String, SerError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<String, SerError> {
        key_error()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, SerError> {
        key_error()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, SerError> {
        key_error()
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, SerError> {
        key_error()
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeTupleVariant, SerError> {
        key_error()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, SerError> {
        key_error()
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, SerError> {
        key_error()
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeStructVariant, SerError> {
        key_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::HashMap;

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum E {
        Unit,
        New(u8),
        Tup(u8, String),
        Strukt { a: Option<u32>, b: Vec<bool> },
    }

    #[derive(Serialize)]
    struct Inner(String);

    #[derive(Serialize)]
    struct S {
        s: String,
        n: u64,
        i: i64,
        f: f64,
        nan: f64,
        c: char,
        none: Option<String>,
        some: Option<Inner>,
        list: Vec<E>,
        tuple: (u8, &'static str),
        unit: (),
        bytes: &'static [u8],
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        #[serde(rename = "renamed-field")]
        renamed: bool,
        map_num_keys: BTreeMap<u32, &'static str>,
        map_str_keys: HashMap<String, Vec<u16>>,
        #[serde(flatten)]
        flat: BTreeMap<String, i32>,
    }

    /// Matches serde_json's `to_value` followed by `Value::from_json` on
    /// every serde shape the specs use (and some they do not).
    #[test]
    fn same_as_the_json_round_trip() {
        let x = S {
            s: "a \"q\" \u{1F600}".into(),
            n: u64::MAX,
            i: -42,
            f: 1.5,
            nan: f64::NAN,
            c: 'x',
            none: None,
            some: Some(Inner("in".into())),
            list: vec![E::Unit, E::New(7), E::Tup(1, "t".into()), E::Strukt { a: Some(3), b: vec![true, false] }, E::Strukt { a: None, b: vec![] }],
            tuple: (9, "nine"),
            unit: (),
            bytes: b"ab",
            skipped: None,
            renamed: true,
            map_num_keys: BTreeMap::from([(10, "ten"), (2, "two")]),
            map_str_keys: HashMap::from([("k".to_string(), vec![1, 2])]),
            flat: BTreeMap::from([("extra".to_string(), -1)]),
        };
        let want = Value::from_json(&serde_json::to_value(&x).unwrap());
        assert_eq!(to_value(&x).unwrap(), want);
        assert!(matches!(&want, Value::Map(m) if m.contains_key("renamed-field") && m.contains_key("extra") && !m.contains_key("skipped")));
        // Every resource kind's spec, as the loader serializes them.
        for v in [serde_json::json!(null), serde_json::json!([1, "a", {"b": [true]}])] {
            assert_eq!(to_value(&v).unwrap(), Value::from_json(&v));
        }
    }

    #[test]
    fn non_string_map_keys_are_an_error() {
        let m: BTreeMap<Vec<u8>, u8> = BTreeMap::from([(vec![1], 1)]);
        assert!(to_value(&m).is_err());
        assert!(serde_json::to_value(&m).is_err());
    }
}
