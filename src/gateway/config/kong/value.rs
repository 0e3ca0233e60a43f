//! Typed reads from the parsed Kong document. Errors name the entity and field and the
//! kind of value found, never the value itself: a credential in the wrong place must not
//! end up on a terminal.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::KongError;

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// One mapping of the document (an entity or a nested `config`), remembering which keys
/// were read so that whatever the importer does not understand can be reported.
pub(super) struct Obj<'a> {
    entity: String,
    prefix: String,
    map: &'a Map<String, Value>,
    seen: RefCell<BTreeSet<&'a str>>,
}

impl<'a> Obj<'a> {
    pub fn new(entity: impl Into<String>, prefix: &str, v: &'a Value) -> Result<Self, KongError> {
        let entity = entity.into();
        match v {
            Value::Object(map) => Ok(Obj {
                entity,
                prefix: prefix.to_string(),
                map,
                seen: RefCell::new(BTreeSet::new()),
            }),
            other => Err(KongError::Invalid {
                entity,
                field: if prefix.is_empty() {
                    "<root>".into()
                } else {
                    prefix.trim_end_matches('.').to_string()
                },
                message: format!("expected a mapping, found {}", kind(other)),
            }),
        }
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// Renames the entity once its name is known (errors before that use its index).
    pub fn set_entity(&mut self, entity: impl Into<String>) {
        self.entity = entity.into();
    }

    pub fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn err(&self, key: &str, message: impl Into<String>) -> KongError {
        KongError::Invalid {
            entity: self.entity.clone(),
            field: self.field(key),
            message: message.into(),
        }
    }

    fn wrong(&self, key: &str, want: &str, got: &Value) -> KongError {
        self.err(key, format!("expected {want}, found {}", kind(got)))
    }

    /// The value under `key`; `null` counts as absent, as Kong treats it.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.borrow_mut().insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// Marks keys as handled without reading them (metadata such as ids and tags).
    pub fn ignore(&self, keys: &[&str]) {
        self.ignore_where(|k| keys.contains(&k));
    }

    /// Marks every key the predicate accepts as handled.
    pub fn ignore_where(&self, keep: impl Fn(&str) -> bool) {
        let mut seen = self.seen.borrow_mut();
        for (k, _) in self.map.iter() {
            if keep(k) {
                seen.insert(k.as_str());
            }
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, KongError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, KongError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "true or false", v)),
        }
    }

    /// A non-negative whole number (Kong writes some as `5.0` in JSON dumps).
    pub fn u64(&self, key: &str) -> Result<Option<u64>, KongError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    return Ok(Some(u));
                }
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as u64)),
                    _ => Err(self.err(key, "expected a non-negative whole number")),
                }
            }
            Some(v) => Err(self.wrong(key, "a whole number", v)),
        }
    }

    /// A non-negative number, possibly fractional (Kong's health check intervals).
    pub fn f64(&self, key: &str) -> Result<Option<f64>, KongError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
                _ => Err(self.err(key, "expected a non-negative number")),
            },
            Some(v) => Err(self.wrong(key, "a number", v)),
        }
    }

    /// A list of strings; absent means empty.
    pub fn strs(&self, key: &str) -> Result<Vec<&'a str>, KongError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(self.wrong(&format!("{key}[{i}]"), "a string", other)),
                })
                .collect(),
            Some(v) => Err(self.wrong(key, "a list of strings", v)),
        }
    }

    /// A list of whole numbers; absent means empty.
    pub fn u64s(&self, key: &str) -> Result<Vec<u64>, KongError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_u64() {
                    Some(n) => Ok(n),
                    None => Err(self.wrong(&format!("{key}[{i}]"), "a whole number", v)),
                })
                .collect(),
            Some(v) => Err(self.wrong(key, "a list of numbers", v)),
        }
    }

    /// A nested mapping, read under the same entity with a longer field path.
    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, KongError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                Obj::new(self.entity.clone(), &format!("{}{key}.", self.prefix), v).map(Some)
            }
        }
    }

    /// The raw list under `key` (absent means empty), for entity lists whose items get
    /// their own entity names.
    pub fn list(&self, key: &str) -> Result<&'a [Value], KongError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(self.wrong(key, "a list", v)),
        }
    }

    /// Keys present with a non-null value that nobody read, as full field paths.
    pub fn unread(&self) -> Vec<String> {
        let seen = self.seen.borrow();
        self.map
            .iter()
            .filter(|(k, v)| !v.is_null() && !seen.contains(k.as_str()))
            .map(|(k, _)| self.field(k))
            .collect()
    }
}

/// A reference to another entity: its name or id as a string, or `{ id: .. }` /
/// `{ name: .. }` as deck writes it.
pub(super) fn reference(o: &Obj<'_>, key: &str) -> Result<Option<String>, KongError> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(m)) => {
            for k in ["name", "username", "id", "custom_id"] {
                if let Some(Value::String(s)) = m.get(k) {
                    return Ok(Some(s.clone()));
                }
            }
            Err(o.err(key, "a reference needs a `name` or `id`"))
        }
        Some(v) => Err(o.err(key, format!("expected a name or id, found {}", kind(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_field_but_not_the_value() {
        let v: Value = serde_json::json!({ "key": 12345678, "paths": ["/a", 7], "n": -1 });
        let o = Obj::new("consumer \"alice\"", "keyauth_credentials[0].", &v).unwrap();
        let e = o.str("key").unwrap_err().to_string();
        assert_eq!(
            e,
            "consumer \"alice\": keyauth_credentials[0].key: expected a string, found a number"
        );
        assert!(!e.contains("12345678"));
        let e = o.strs("paths").unwrap_err().to_string();
        assert!(e.contains("keyauth_credentials[0].paths[1]"), "{e}");
        assert!(o.u64("n").is_err());
    }

    #[test]
    fn unread_lists_what_was_not_handled() {
        let v: Value = serde_json::json!({ "name": "a", "tags": ["x"], "snis": ["h"], "z": null });
        let o = Obj::new("route", "", &v).unwrap();
        o.str("name").unwrap();
        o.ignore(&["tags"]);
        assert_eq!(o.unread(), vec!["snis".to_string()]);
    }
}
