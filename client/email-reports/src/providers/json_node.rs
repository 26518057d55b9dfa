//! A JSON value together with its path from the body's root, so that every field a parser
//! reads can fail with a [`ParseError`] that names exactly where it is.

use super::json::{Json, Object};
use smallvec::SmallVec;

use crate::error::ParseError;
use crate::time::EventTime;

/// Parses JSON text found at `path` (`$` for a body, `$.Message` for SNS's inner string).
pub(crate) fn parse_json<'a>(text: &'a [u8], path: &str) -> Result<Json<'a>, ParseError> {
    serde_json::from_slice(text).map_err(|error| ParseError::InvalidJson {
        path: path.to_owned(),
        detail: error.to_string(),
    })
}

/// A borrowed JSON value and where it is. The path is kept as the steps from the root (keys
/// borrowed from the parsed value) and rendered only when an error needs it: formatting a
/// path string for every field read was a tenth of the ingest's CPU.
#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    value: &'a Json<'a>,
    root: &'a str,
    steps: SmallVec<[Step<'a>; 6]>,
}

/// One step of a path: a field of an object or an element of an array.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn type_name(value: &Json<'_>) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

impl<'a> Node<'a> {
    pub(crate) fn root(value: &'a Json<'a>, path: &'a str) -> Self {
        Node {
            value,
            root: path,
            steps: SmallVec::new(),
        }
    }

    pub(crate) fn value(&self) -> &'a Json<'a> {
        self.value
    }

    /// Where the value is, as `$.a[0].b`.
    pub(crate) fn path(&self) -> String {
        let mut path = self.root.to_owned();
        for step in &self.steps {
            match step {
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(key);
                }
                Step::Index(index) => {
                    use std::fmt::Write;
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        path
    }

    fn child(&self, value: &'a Json<'a>, step: Step<'a>) -> Node<'a> {
        let mut steps = self.steps.clone();
        steps.push(step);
        Node {
            value,
            root: self.root,
            steps,
        }
    }

    fn child_path(&self, key: &str) -> String {
        format!("{}.{}", self.path(), key)
    }

    pub(crate) fn wrong_type(&self, expected: &'static str) -> ParseError {
        ParseError::WrongType {
            path: self.path(),
            expected,
            found: type_name(self.value),
        }
    }

    pub(crate) fn invalid(&self, detail: impl Into<String>) -> ParseError {
        ParseError::InvalidValue {
            path: self.path(),
            detail: detail.into(),
        }
    }

    pub(crate) fn object(&self) -> Result<&'a Object<'a>, ParseError> {
        self.value.as_object().ok_or_else(|| self.wrong_type("object"))
    }

    /// The field `key`, which must be present and not `null`.
    pub(crate) fn get(&self, key: &str) -> Result<Node<'a>, ParseError> {
        self.get_opt(key)?.ok_or_else(|| ParseError::Missing {
            path: self.child_path(key),
        })
    }

    /// The field `key`; `None` when absent or `null`. `self` must be an object.
    pub(crate) fn get_opt(&self, key: &str) -> Result<Option<Node<'a>>, ParseError> {
        Ok(match self.object()?.get_key_value(key) {
            None | Some((_, Json::Null)) => None,
            Some((key, value)) => Some(self.child(value, Step::Key(key))),
        })
    }

    /// The elements of an array.
    pub(crate) fn elements(&self) -> Result<Vec<Node<'a>>, ParseError> {
        let items = self.value.as_array().ok_or_else(|| self.wrong_type("array"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| self.child(value, Step::Index(i)))
            .collect())
    }

    pub(crate) fn str(&self) -> Result<&'a str, ParseError> {
        self.value.as_str().ok_or_else(|| self.wrong_type("string"))
    }

    pub(crate) fn bool(&self) -> Result<bool, ParseError> {
        self.value.as_bool().ok_or_else(|| self.wrong_type("boolean"))
    }

    /// A non-empty string, trimmed.
    pub(crate) fn text(&self) -> Result<&'a str, ParseError> {
        let text = self.str()?.trim();
        if text.is_empty() {
            return Err(self.invalid("empty"));
        }
        Ok(text)
    }

    /// A string, trimmed; `None` when that leaves it empty.
    pub(crate) fn trimmed(&self) -> Result<Option<String>, ParseError> {
        let text = self.str()?.trim();
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }

    /// An identifier written as a string or as an integer (Postmark's int64 `ID`, SendGrid's
    /// integer `marketing_campaign_id`); integers are kept exact, never through `f64`.
    pub(crate) fn id_text(&self) -> Result<String, ParseError> {
        match self.value {
            Json::String(_) => self.text().map(str::to_owned),
            Json::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
            _ => Err(self.wrong_type("string or integer")),
        }
    }

    /// The value as the provider wrote it, for a synthesised key: strings as they are, numbers
    /// in serde_json's (deterministic) rendering.
    pub(crate) fn raw_text(&self) -> Result<String, ParseError> {
        match self.value {
            Json::String(text) => Ok(text.to_string()),
            Json::Number(number) => Ok(number.to_string()),
            _ => Err(self.wrong_type("string or number")),
        }
    }

    /// A recipient address: non-empty, trimmed, lower-cased. Not validated further: a
    /// provider reports drops *because* an address is invalid (SendGrid's `Invalid`), and
    /// rejecting that entry would fail its whole batch.
    pub(crate) fn email(&self) -> Result<String, ParseError> {
        Ok(self.text()?.to_lowercase())
    }

    /// Unix seconds written as a number or as a numeric string.
    pub(crate) fn unix_seconds(&self) -> Result<EventTime, ParseError> {
        let text = match self.value {
            Json::Number(number) => number.to_string(),
            Json::String(text) => text.to_string(),
            _ => return Err(self.wrong_type("Unix seconds (number or numeric string)")),
        };
        EventTime::parse_unix_seconds(&text)
            .ok_or_else(|| self.invalid(format!("{text:?} is not a Unix time in seconds")))
    }

    /// An RFC 3339 date-time string.
    pub(crate) fn rfc3339(&self) -> Result<EventTime, ParseError> {
        let text = self.str()?;
        EventTime::parse_rfc3339(text).ok_or_else(|| self.invalid(format!("{text:?} is not an RFC 3339 date-time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path() {
        let value = parse_json(br#"{"a":[{"b":1},{"c":null}],"s":" "}"#, "$").unwrap();
        let root = Node::root(&value, "$");
        let items = root.get("a").unwrap().elements().unwrap();
        assert_eq!(
            items[0].get("b").unwrap().str().unwrap_err(),
            ParseError::WrongType {
                path: "$.a[0].b".into(),
                expected: "string",
                found: "number"
            }
        );
        assert_eq!(
            items[1].get("c").unwrap_err(),
            ParseError::Missing {
                path: "$.a[1].c".into()
            }
        );
        assert_eq!(root.get("s").unwrap().text().unwrap_err().path(), "$.s");
        assert_eq!(root.get("a").unwrap().get("x").unwrap_err().path(), "$.a");
    }

    #[test]
    fn integer_ids_stay_exact() {
        let value = parse_json(br#"{"id":4323372036854775807}"#, "$").unwrap();
        assert_eq!(
            Node::root(&value, "$").get("id").unwrap().id_text().unwrap(),
            "4323372036854775807"
        );
    }
}
