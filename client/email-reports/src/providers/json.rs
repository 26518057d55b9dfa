//! A JSON tree that borrows its strings from the request body ([`Json`]): what the provider
//! parsers read. `serde_json::Value` allocates a `String` for every key and string and a
//! B-tree node per object, most of it for fields no parser reads; here a key or string without
//! escapes is a slice of the body, and an object is one vector of its fields.
//!
//! Semantics follow `serde_json::Value` where the parsers can tell: the last of duplicate keys
//! wins, numbers keep their exact integer or their `f64`, and render as serde_json renders them.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

/// A JSON value borrowing from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// The fields of a JSON object, in the order written.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The field `key` (the last one, if written more than once) with the key as stored.
    pub(crate) fn get_key_value(&self, key: &str) -> Option<(&str, &Json<'a>)> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(k, v)| (k.as_ref(), v))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.get_key_value(key).map(|(_, value)| value)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get_key_value(key).is_some()
    }

    /// The distinct keys, each once (the last value of a repeated key).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| !self.0[i + 1..].iter().any(|(later, _)| later == key))
            .map(|(_, (key, value))| (key.as_ref(), value))
    }

    /// The number of distinct keys.
    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }
}

impl<'a> Json<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&Vec<Json<'a>>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(value) => Some(*value),
            _ => None,
        }
    }

    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(number) => number.as_i64(),
            _ => None,
        }
    }

    /// The field `key` of an object; `None` for anything else.
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object().and_then(|object| object.get(key))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json<'de>, E> {
        // As serde_json::Value: a non-finite number (which JSON text cannot hold) is null.
        Ok(Number::from_f64(value).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(Key(key)) = map.next_key()? {
            fields.push((key, map.next_value()?));
        }
        Ok(Json::Object(Object(fields)))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(value)))
            }

            fn visit_str<E>(self, value: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(value.to_owned())))
            }

            fn visit_string<E>(self, value: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Json<'_> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_like_serde_json_value() {
        let text = r#"{"a":[1,-2,3.5,"x\"y",true,null],"b":{"c":"d"},"b":{"c":"e"},"big":18446744073709551615}"#;
        let json = parse(text);
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let items = json.get("a").unwrap().as_array().unwrap();
        let expected = value["a"].as_array().unwrap();
        for (ours, theirs) in items.iter().zip(expected) {
            match (ours, theirs) {
                (Json::Number(a), serde_json::Value::Number(b)) => assert_eq!(a.to_string(), b.to_string()),
                (Json::String(a), serde_json::Value::String(b)) => assert_eq!(a, b),
                (Json::Bool(a), serde_json::Value::Bool(b)) => assert_eq!(a, b),
                (Json::Null, serde_json::Value::Null) => {}
                other => panic!("differs: {other:?}"),
            }
        }
        // The last of repeated keys wins, and counts once.
        assert_eq!(json.get("b").unwrap().get("c").unwrap().as_str(), Some("e"));
        assert_eq!(json.as_object().unwrap().len(), 3);
        assert_eq!(
            json.get("big").map(|n| match n {
                Json::Number(n) => n.to_string(),
                _ => String::new(),
            }),
            Some("18446744073709551615".to_string())
        );
    }

    #[test]
    fn strings_without_escapes_borrow_from_the_text() {
        let json = parse(r#"{"plain":"abc","escaped":"a\nb"}"#);
        assert!(matches!(json.get("plain"), Some(Json::String(Cow::Borrowed("abc")))));
        assert!(matches!(json.get("escaped"), Some(Json::String(Cow::Owned(text))) if text == "a\nb"));
    }
}
