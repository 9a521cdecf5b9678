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

    fn serialize_bool(self, v: bool) -> Result<Value, SerError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, SerError> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, SerError> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, SerError> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, SerError> {
        Ok(Value::Number(v as f64))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, SerError> {
        Ok(Value::Number(v as f64))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, SerError> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, SerError> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, SerError> {
        Ok(Value::Number(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, SerError> {
        Ok(Value::Number(v as f64))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, SerError> {
        Ok(Value::Number(v as f64))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, SerError> {
        Ok(number(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, SerError> {
        Ok(number(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, SerError> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, SerError> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, SerError> {
        Ok(Value::List(v.iter().map(|b| Value::Number((*b).into())).collect()))
    }
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

struct SeqSer {
    items: Vec<Value>,
    variant: Option<&'static str>,
}

impl SeqSer {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.items.push(v.serialize(ValueSer)?);
        Ok(())
    }
    fn finish(self) -> Value {
        match self.variant {
            None => Value::List(self.items),
            Some(v) => tagged(v, Value::List(self.items)),
        }
    }
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerError> {
        self.push(v)
    }
    fn end(self) -> Result<Value, SerError> {
        Ok(self.finish())
    }
}

struct MapSer {
    map: BTreeMap<String, Value>,
    key: Option<String>,
    variant: Option<&'static str>,
}

impl MapSer {
    fn finish(self) -> Value {
        match self.variant {
            None => Value::Map(self.map),
            Some(v) => tagged(v, Value::Map(self.map)),
        }
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
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, k: &'static str, v: &T) -> Result<(), SerError> {
        self.map.insert(k.to_string(), v.serialize(ValueSer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapSer {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, k: &'static str, v: &T) -> Result<(), SerError> {
        self.map.insert(k.to_string(), v.serialize(ValueSer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, SerError> {
        Ok(self.finish())
    }
}

/// Map keys: strings, and what serde_json turns into strings (numbers,
/// bools, chars, unit variants); anything else is an error, as in serde_json.
struct KeySer;

fn key_error() -> SerError {
    SerError("map keys must be strings".into())
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

    fn serialize_bool(self, v: bool) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _: f32) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_f64(self, _: f64) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_char(self, v: char) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, SerError> {
        Ok(v.to_string())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<String, SerError> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<String, SerError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<String, SerError> {
        Err(key_error())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, SerError> {
        Err(key_error())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, SerError> {
        Err(key_error())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, SerError> {
        Err(key_error())
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeTupleVariant, SerError> {
        Err(key_error())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, SerError> {
        Err(key_error())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, SerError> {
        Err(key_error())
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeStructVariant, SerError> {
        Err(key_error())
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
