//! `FlagStore`: a parsed, validated, immutable set of flags.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::domain::status::FlagStatus;

use super::error::{FlagEditError, FlagFileError};
use super::json::Json;
use super::model::{self, Flag, FlagFile, FlagState, FlagSummary};

/// A validated set of flags, immutable once built.
///
/// The gateway holds one behind an atomic pointer and swaps in a whole new store on reload or
/// edit; `with_state` and `with_default_variant` return a new store and leave this one alone.
/// Cloning is cheap (flags are shared).
#[derive(Clone)]
pub struct FlagStore {
    pub(crate) flags: Vec<Arc<Flag>>,
    index: HashMap<String, usize>,
    schema: Option<Json>,
    evaluators: Option<Vec<(String, Json)>>,
    metadata: Vec<(String, Json)>,
    pub(crate) set_metadata: Map<String, Value>,
    problems: Arc<[FlagFileError]>,
}

impl fmt::Debug for FlagStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagStore")
            .field("flags", &self.keys().collect::<Vec<_>>())
            .field("problems", &self.problems.len())
            .finish()
    }
}

impl FlagStore {
    /// Parses a flagd flag file. Any problem rejects the whole file, including a targeting rule
    /// that refers to a missing `$evaluators` entry or uses an unknown operator: a reload with
    /// a broken file should keep the old store rather than serve errors.
    pub fn from_json(text: &str) -> Result<Self, FlagFileError> {
        let file = model::parse_file(text)?;
        if let Some(problem) = file.problems.into_iter().next() {
            return Err(problem);
        }
        Ok(Self::build(FlagFile {
            problems: Vec::new(),
            ..file
        }))
    }

    /// Parses a flagd flag file the way flagd does: a flag whose targeting rule does not compile
    /// is kept and evaluates to `PARSE_ERROR`; [`problems`](Self::problems) lists those flags.
    /// Every other problem still rejects the file.
    pub fn from_json_lenient(text: &str) -> Result<Self, FlagFileError> {
        model::parse_file(text).map(Self::build)
    }

    /// [`from_json`](Self::from_json) on a file; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, FlagFileError> {
        let path = path.as_ref();
        Self::from_json(&read(path)?).map_err(|e| in_file(path, e))
    }

    /// [`from_json_lenient`](Self::from_json_lenient) on a file; errors name the file.
    pub fn from_file_lenient(path: impl AsRef<Path>) -> Result<Self, FlagFileError> {
        let path = path.as_ref();
        Self::from_json_lenient(&read(path)?).map_err(|e| in_file(path, e))
    }

    fn build(file: FlagFile) -> Self {
        let set_metadata = file
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.to_value()))
            .collect();
        let index = file
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.clone(), i))
            .collect();
        FlagStore {
            flags: file.flags.into_iter().map(Arc::new).collect(),
            index,
            schema: file.schema,
            evaluators: file.evaluators,
            metadata: file.metadata,
            set_metadata,
            problems: file.problems.into(),
        }
    }

    /// Flags kept by [`from_json_lenient`](Self::from_json_lenient) whose targeting does not
    /// compile. Always empty for a store from [`from_json`](Self::from_json).
    pub fn problems(&self) -> &[FlagFileError] {
        &self.problems
    }

    /// Flag keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| f.key.as_str())
    }

    /// Every flag, in file order, for display.
    pub fn summaries(&self) -> Vec<FlagSummary> {
        self.flags.iter().map(|f| f.summary()).collect()
    }

    /// Every flag, in file order, as an environment's status reports it.
    pub fn statuses(&self) -> Vec<FlagStatus> {
        self.flags
            .iter()
            .map(|f| {
                let s = f.summary();
                FlagStatus {
                    key: s.key,
                    state: s.state,
                    default_variant: s.default_variant,
                    variants: s.variants.into_iter().map(|(n, _)| n).collect(),
                    has_targeting: s.has_targeting,
                }
            })
            .collect()
    }

    /// One flag, for display.
    pub fn summary(&self, key: &str) -> Option<FlagSummary> {
        self.get(key).map(Flag::summary)
    }

    /// The flag-set (top-level) metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.set_metadata
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Flag> {
        self.index.get(key).map(|&i| &*self.flags[i])
    }

    /// A new store with one flag enabled or disabled.
    pub fn with_state(&self, key: &str, state: FlagState) -> Result<Self, FlagEditError> {
        self.edit(key, |flag| {
            flag.state = state;
            Ok(())
        })
    }

    /// A new store with one flag's default variant changed.
    pub fn with_default_variant(&self, key: &str, variant: &str) -> Result<Self, FlagEditError> {
        self.edit(key, |flag| {
            let index =
                flag.variant_index(variant)
                    .ok_or_else(|| FlagEditError::UnknownVariant {
                        flag: flag.key.clone(),
                        variant: variant.to_owned(),
                        variants: flag.variant_list(),
                    })?;
            flag.default_variant = Some(index);
            Ok(())
        })
    }

    fn edit(
        &self,
        key: &str,
        change: impl FnOnce(&mut Flag) -> Result<(), FlagEditError>,
    ) -> Result<Self, FlagEditError> {
        let i = *self
            .index
            .get(key)
            .ok_or_else(|| FlagEditError::UnknownFlag(key.to_owned()))?;
        let mut flag = Flag::clone(&self.flags[i]);
        change(&mut flag)?;
        let mut store = self.clone();
        store.flags[i] = Arc::new(flag);
        Ok(store)
    }

    /// The store as a flagd flag file (pretty-printed JSON), in the order it was read, with
    /// `$ref`s and `$evaluators` as written. Reading it back gives an equal store.
    pub fn to_json(&self) -> String {
        let file = FlagFile {
            schema: self.schema.clone(),
            flags: self.flags.iter().map(|f| Flag::clone(f)).collect(),
            evaluators: self.evaluators.clone(),
            metadata: self.metadata.clone(),
            problems: Vec::new(),
        };
        let mut text = serde_json::to_string_pretty(&file.to_json())
            .unwrap_or_else(|e| unreachable!("a JSON tree always serialises: {e}"));
        text.push('\n');
        text
    }
}

fn read(path: &Path) -> Result<String, FlagFileError> {
    std::fs::read_to_string(path).map_err(|error| FlagFileError::Read {
        path: path.to_owned(),
        error,
    })
}

fn in_file(path: &Path, e: FlagFileError) -> FlagFileError {
    FlagFileError::InFile {
        path: path.to_owned(),
        error: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r##"{
      "flags": {
        "new-checkout": {
          "state": "ENABLED",
          "variants": {"on": true, "off": false},
          "defaultVariant": "off",
          "targeting": {"if": [{"$ref": "staff"}, "on"]}
        },
        "banner": {
          "state": "DISABLED",
          "variants": {"red": "#f00", "blue": "#00f"},
          "defaultVariant": "red",
          "metadata": {"owner": "web"}
        }
      },
      "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
      "metadata": {"flagSetId": "shop"}
    }"##;

    #[test]
    fn stores_can_be_shared_across_threads() {
        // The gateway swaps stores behind an atomic pointer read by every worker thread.
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<FlagStore>();
        let store = std::sync::Arc::new(FlagStore::from_json(FILE).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let ctx = serde_json::json!({"email": format!("u{i}@example.com")});
                    store.evaluate("new-checkout", &ctx).variant
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap().as_deref(), Some("on"));
        }
    }

    #[test]
    fn lists_flags_in_file_order() {
        let store = FlagStore::from_json(FILE).unwrap();
        assert_eq!(store.keys().collect::<Vec<_>>(), ["new-checkout", "banner"]);
        let summaries = store.summaries();
        assert_eq!(summaries[0].default_variant.as_deref(), Some("off"));
        assert!(summaries[0].has_targeting);
        assert_eq!(summaries[1].state, FlagState::Disabled);
        assert!(!summaries[1].has_targeting);
        assert_eq!(
            summaries[1].variants,
            [
                ("red".to_owned(), Value::from("#f00")),
                ("blue".to_owned(), Value::from("#00f"))
            ]
        );
        assert_eq!(store.summary("banner"), Some(summaries[1].clone()));
        assert_eq!(store.summary("nope"), None);
        assert_eq!(
            store.metadata().get("flagSetId"),
            Some(&Value::from("shop"))
        );
    }

    #[test]
    fn strict_loading_rejects_what_lenient_loading_keeps() {
        let text = r#"{"flags": {
            "ok": {"variants": {"a": "a"}, "defaultVariant": "a"},
            "broken": {"variants": {"a": "a"}, "targeting": {"if": [{"$ref": "gone"}, "a"]}}
        }}"#;
        let err = FlagStore::from_json(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"flag "broken": targeting refers to evaluator "gone", which is not defined in $evaluators"#
        );
        let store = FlagStore::from_json_lenient(text).unwrap();
        assert_eq!(store.keys().count(), 2);
        assert_eq!(store.problems().len(), 1);
        assert!(FlagStore::from_json(FILE).unwrap().problems().is_empty());
    }

    #[test]
    fn edits_return_a_new_store() {
        let store = FlagStore::from_json(FILE).unwrap();
        let enabled = store.with_state("banner", FlagState::Enabled).unwrap();
        let blue = enabled.with_default_variant("banner", "blue").unwrap();
        assert_eq!(store.summary("banner").unwrap().state, FlagState::Disabled);
        assert_eq!(enabled.summary("banner").unwrap().state, FlagState::Enabled);
        assert_eq!(
            enabled
                .summary("banner")
                .unwrap()
                .default_variant
                .as_deref(),
            Some("red")
        );
        assert_eq!(
            blue.summary("banner").unwrap().default_variant.as_deref(),
            Some("blue")
        );
        assert_eq!(
            store.with_state("nope", FlagState::Enabled).unwrap_err(),
            FlagEditError::UnknownFlag("nope".to_owned())
        );
        assert_eq!(
            store
                .with_default_variant("banner", "green")
                .unwrap_err()
                .to_string(),
            r#"flag "banner": variant "green" is not one of its variants (red, blue)"#
        );
    }

    #[test]
    fn to_json_round_trips_edits() {
        let store = FlagStore::from_json(FILE)
            .unwrap()
            .with_state("banner", FlagState::Enabled)
            .unwrap();
        let text = store.to_json();
        let again = FlagStore::from_json(&text).unwrap();
        assert_eq!(again.summaries(), store.summaries());
        assert_eq!(again.to_json(), text);
        // $ref stays a $ref, and $evaluators are kept.
        assert!(text.contains(r#""$ref": "staff""#), "{text}");
        assert!(text.contains(r#""$evaluators""#), "{text}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = FlagStore::from_file(&missing).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read flag file "),
            "{err}"
        );
        assert!(err.to_string().contains("missing.json"), "{err}");

        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"{"flags": {"f": {"variants": {"a": 1}, "defaultVariant": "b"}}}"#,
        )
        .unwrap();
        let err = FlagStore::from_file_lenient(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                r#"{}: flag "f": defaultVariant "b" is not one of its variants (a)"#,
                bad.display()
            )
        );

        let good = dir.path().join("good.json");
        std::fs::write(&good, FILE).unwrap();
        assert_eq!(FlagStore::from_file(&good).unwrap().keys().count(), 2);
    }
}
