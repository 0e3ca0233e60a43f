//! An order-preserving JSON tree for flag files.
//!
//! `serde_json::Value` sorts object keys (the crate is built without `preserve_order`), which
//! would reorder an operator's file every time the control plane persists a change, and it
//! silently keeps the last of two duplicate keys. Flag files are read into this tree instead:
//! objects keep their order, a duplicate key is an error with its line and column, and the
//! tree serialises back exactly as it was read.

use std::fmt;

use datalogic_rs::datavalue::{NumberValue, OwnedDataValue};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// A short name for the kind of value, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The value as a `serde_json::Value` (object keys end up sorted).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// The value as a JsonLogic rule for datalogic-rs.
    pub(crate) fn to_logic(&self) -> OwnedDataValue {
        match self {
            Json::Null => OwnedDataValue::Null,
            Json::Bool(b) => OwnedDataValue::Bool(*b),
            Json::Number(n) => OwnedDataValue::Number(number_value(n)),
            Json::String(s) => OwnedDataValue::String(s.clone()),
            Json::Array(items) => OwnedDataValue::Array(items.iter().map(Json::to_logic).collect()),
            Json::Object(pairs) => OwnedDataValue::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_logic()))
                    .collect(),
            ),
        }
    }
}

/// Converts a JSON number into datalogic's number type. Integers that fit `i64` stay exact;
/// everything else (large `u64`, fractions) becomes a float, which is what JSON means anyway.
pub(crate) fn number_value(n: &Number) -> NumberValue {
    if let Some(i) = n.as_i64() {
        NumberValue::from_i64(i)
    } else {
        NumberValue::from_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs: Vec<(String, Json)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            // Linear scan: flag files hold tens to hundreds of keys per object, and this runs
            // at load time only. serde_json adds the line and column to the error.
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
            }
            let value = map.next_value()?;
            pairs.push((key, value));
        }
        Ok(Json::Object(pairs))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(pairs) => {
                let mut map = serializer.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_object_order_through_a_round_trip() {
        let text = r#"{"zeta":1,"alpha":{"b":true,"a":null},"mid":[1.5,"x"]}"#;
        let json: Json = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), text);
    }

    #[test]
    fn rejects_duplicate_keys_with_their_position() {
        let err = serde_json::from_str::<Json>("{\n  \"a\": 1,\n  \"a\": 2\n}").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("duplicate key \"a\""), "{msg}");
        assert_eq!(err.line(), 3, "{msg}");
    }

    #[test]
    fn converts_to_serde_and_logic_values() {
        let json: Json = serde_json::from_str(r#"{"n":[1,-2,2.5,18446744073709551615]}"#).unwrap();
        assert_eq!(
            json.to_value(),
            serde_json::json!({"n": [1, -2, 2.5, 18446744073709551615u64]})
        );
        let logic = json.to_logic();
        let OwnedDataValue::Object(pairs) = logic else {
            panic!("object expected")
        };
        let OwnedDataValue::Array(items) = &pairs[0].1 else {
            panic!("array expected")
        };
        assert_eq!(items[1].as_i64(), Some(-2));
        assert_eq!(items[2].as_f64(), Some(2.5));
        assert!(items[3].as_f64().is_some_and(|f| f > 1e19));
    }
}
