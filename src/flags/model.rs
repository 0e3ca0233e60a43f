//! The flagd flag-file model: parsing and validating a file into flags, and writing it back.

use std::fmt;
use std::sync::Arc;

use datalogic_rs::Logic;
use serde_json::{Map, Value};

use super::error::FlagFileError;
use super::json::Json;
use super::logic;

pub use crate::domain::FlagState;

/// The type of a flag's values, as OpenFeature's typed evaluation sees it. A flag whose number
/// variants are all whole is `Integer`, otherwise `Float`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagType {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

impl FlagType {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagType::Boolean => "boolean",
            FlagType::String => "string",
            FlagType::Integer => "integer",
            FlagType::Float => "float",
            FlagType::Object => "object",
        }
    }
}

impl fmt::Display for FlagType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One flag, for listing in the cockpit.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagSummary {
    pub key: String,
    pub state: FlagState,
    pub default_variant: Option<String>,
    pub has_targeting: bool,
    pub value_type: FlagType,
    /// Variant names and values, in file order.
    pub variants: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub(crate) name: String,
    pub(crate) raw: Json,
    pub(crate) value: Value,
}

#[derive(Clone)]
pub(crate) struct Targeting {
    /// As written, `$ref`s included, so the file can be written back unchanged.
    pub(crate) raw: Json,
    /// The compiled rule, or why it could not be compiled (only kept by lenient loading;
    /// evaluation then answers `PARSE_ERROR` with this message).
    pub(crate) rule: Result<Arc<Logic>, String>,
}

impl fmt::Debug for Targeting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targeting")
            .field("raw", &self.raw)
            .field("compiled", &self.rule.as_ref().map(|_| ()))
            .finish()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Flag {
    pub(crate) key: String,
    pub(crate) state: FlagState,
    pub(crate) variants: Vec<Variant>,
    /// Index into `variants`; `None` defers to the caller's code default.
    pub(crate) default_variant: Option<usize>,
    pub(crate) targeting: Option<Targeting>,
    pub(crate) metadata: Vec<(String, Json)>,
    /// Flag metadata over flag-set metadata, ready to hand out with every evaluation.
    pub(crate) merged_metadata: Map<String, Value>,
    pub(crate) value_type: FlagType,
}

impl Flag {
    pub(crate) fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }

    /// `on, off`: the variant names in file order, for messages.
    pub(crate) fn variant_list(&self) -> String {
        let names: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
        names.join(", ")
    }

    pub(crate) fn summary(&self) -> FlagSummary {
        FlagSummary {
            key: self.key.clone(),
            state: self.state,
            default_variant: self.default_variant.map(|i| self.variants[i].name.clone()),
            has_targeting: self.targeting.is_some(),
            value_type: self.value_type,
            variants: self
                .variants
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect(),
        }
    }

    pub(crate) fn to_json(&self) -> Json {
        let mut pairs = vec![
            (
                "state".to_owned(),
                Json::String(self.state.as_str().to_owned()),
            ),
            (
                "variants".to_owned(),
                Json::Object(
                    self.variants
                        .iter()
                        .map(|v| (v.name.clone(), v.raw.clone()))
                        .collect(),
                ),
            ),
            (
                "defaultVariant".to_owned(),
                self.default_variant
                    .map_or(Json::Null, |i| Json::String(self.variants[i].name.clone())),
            ),
        ];
        if let Some(t) = &self.targeting {
            pairs.push(("targeting".to_owned(), t.raw.clone()));
        }
        if !self.metadata.is_empty() {
            pairs.push(("metadata".to_owned(), Json::Object(self.metadata.clone())));
        }
        Json::Object(pairs)
    }
}

/// A parsed flag file.
pub(crate) struct FlagFile {
    pub(crate) schema: Option<Json>,
    pub(crate) flags: Vec<Flag>,
    pub(crate) evaluators: Option<Vec<(String, Json)>>,
    pub(crate) metadata: Vec<(String, Json)>,
    /// Targeting rules that did not compile. Their flags evaluate to `PARSE_ERROR`.
    pub(crate) problems: Vec<FlagFileError>,
}

impl FlagFile {
    pub(crate) fn to_json(&self) -> Json {
        let mut pairs = Vec::new();
        if let Some(schema) = &self.schema {
            pairs.push(("$schema".to_owned(), schema.clone()));
        }
        pairs.push((
            "flags".to_owned(),
            Json::Object(
                self.flags
                    .iter()
                    .map(|f| (f.key.clone(), f.to_json()))
                    .collect(),
            ),
        ));
        if let Some(evaluators) = &self.evaluators {
            pairs.push(("$evaluators".to_owned(), Json::Object(evaluators.clone())));
        }
        if !self.metadata.is_empty() {
            pairs.push(("metadata".to_owned(), Json::Object(self.metadata.clone())));
        }
        Json::Object(pairs)
    }
}

const TOP_LEVEL_FIELDS: [&str; 4] = ["flags", "$evaluators", "metadata", "$schema"];
const FLAG_FIELDS: [&str; 5] = [
    "state",
    "variants",
    "defaultVariant",
    "targeting",
    "metadata",
];

/// Integers beyond ±(2^53 - 1) do not survive JSON parsers that use doubles, as most
/// OpenFeature SDKs do; the flagd schema rejects them.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Parses and validates a flag file. Problems with the file's shape are errors; a targeting
/// rule that does not compile is recorded in `problems` and its flag kept.
pub(crate) fn parse_file(text: &str) -> Result<FlagFile, FlagFileError> {
    let root: Json = serde_json::from_str(text)?;
    let Json::Object(fields) = root else {
        return Err(FlagFileError::Structure(format!(
            "a flag file must be a JSON object, found {}",
            root.kind()
        )));
    };
    let mut file = FlagFile {
        schema: None,
        flags: Vec::new(),
        evaluators: None,
        metadata: Vec::new(),
        problems: Vec::new(),
    };
    let mut flags = None;
    for (name, value) in fields {
        match name.as_str() {
            "flags" => flags = Some(value),
            "$evaluators" => file.evaluators = Some(parse_evaluators(value)?),
            "metadata" => {
                file.metadata = parse_metadata(value)
                    .map_err(|p| FlagFileError::Structure(format!("metadata: {p}")))?;
            }
            "$schema" => file.schema = Some(value),
            other => {
                return Err(FlagFileError::Structure(format!(
                    "unknown top-level field \"{other}\" (expected {})",
                    TOP_LEVEL_FIELDS.join(", ")
                )));
            }
        }
    }
    let flags = match flags {
        Some(Json::Object(flags)) => flags,
        Some(other) => {
            return Err(FlagFileError::Structure(format!(
                "\"flags\" must be an object keyed by flag key, found {}",
                other.kind()
            )));
        }
        None => return Err(FlagFileError::Structure("\"flags\" is missing".to_owned())),
    };
    let set_metadata = metadata_map(&file.metadata);
    let evaluators = file.evaluators.as_deref().unwrap_or_default();
    for (key, definition) in flags {
        if key.is_empty() {
            return Err(FlagFileError::Structure(
                "a flag key must not be empty".to_owned(),
            ));
        }
        let (flag, problem) = parse_flag(key, definition, &set_metadata, evaluators)?;
        file.flags.push(flag);
        file.problems.extend(problem);
    }
    Ok(file)
}

fn parse_evaluators(value: Json) -> Result<Vec<(String, Json)>, FlagFileError> {
    let Json::Object(evaluators) = value else {
        return Err(FlagFileError::Structure(format!(
            "\"$evaluators\" must be an object keyed by evaluator name, found {}",
            value.kind()
        )));
    };
    for (name, rule) in &evaluators {
        if !matches!(rule, Json::Object(pairs) if !pairs.is_empty()) {
            return Err(FlagFileError::Evaluator {
                name: name.clone(),
                problem: format!(
                    "must be a JsonLogic rule (an object), found {}",
                    rule.kind()
                ),
            });
        }
    }
    Ok(evaluators)
}

/// Metadata values must be booleans, strings or numbers (flagd schema, OFREP).
fn parse_metadata(value: Json) -> Result<Vec<(String, Json)>, String> {
    let Json::Object(pairs) = value else {
        return Err(format!("must be an object, found {}", value.kind()));
    };
    for (k, v) in &pairs {
        if !matches!(v, Json::Bool(_) | Json::String(_) | Json::Number(_)) {
            return Err(format!(
                "\"{k}\" must be a boolean, string or number, found {}",
                v.kind()
            ));
        }
    }
    Ok(pairs)
}

fn metadata_map(pairs: &[(String, Json)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), v.to_value()))
        .collect()
}

fn parse_flag(
    key: String,
    definition: Json,
    set_metadata: &Map<String, Value>,
    evaluators: &[(String, Json)],
) -> Result<(Flag, Option<FlagFileError>), FlagFileError> {
    let bad = |problem: String| FlagFileError::flag(&key, problem);
    let Json::Object(fields) = definition else {
        return Err(bad(format!(
            "must be an object, found {}",
            definition.kind()
        )));
    };
    let mut state = FlagState::Enabled;
    let mut variants = None;
    let mut default_name = None;
    let mut targeting_raw = None;
    let mut metadata = Vec::new();
    for (field, value) in fields {
        match field.as_str() {
            "state" => {
                state = match &value {
                    Json::String(s) => s.parse().map_err(bad)?,
                    other => {
                        return Err(bad(format!(
                            "state must be a string, found {}",
                            other.kind()
                        )));
                    }
                };
            }
            "variants" => variants = Some(parse_variants(value).map_err(bad)?),
            "defaultVariant" => {
                default_name = match value {
                    Json::Null => None,
                    Json::String(s) => Some(s),
                    other => {
                        return Err(bad(format!(
                            "defaultVariant must be a variant name or null, found {}",
                            other.kind()
                        )));
                    }
                };
            }
            "targeting" => targeting_raw = Some(value),
            "metadata" => {
                metadata = parse_metadata(value).map_err(|p| bad(format!("metadata: {p}")))?
            }
            other => {
                return Err(bad(format!(
                    "unknown field \"{other}\" (expected {})",
                    FLAG_FIELDS.join(", ")
                )));
            }
        }
    }
    // flagd's schema default: a boolean flag with variants "true" and "false".
    let variants = variants.unwrap_or_else(|| {
        [("true", true), ("false", false)]
            .into_iter()
            .map(|(name, b)| Variant {
                name: name.to_owned(),
                raw: Json::Bool(b),
                value: Value::Bool(b),
            })
            .collect()
    });
    let value_type = value_type(&variants).map_err(bad)?;
    let mut merged_metadata = set_metadata.clone();
    merged_metadata.extend(metadata_map(&metadata));
    let mut flag = Flag {
        key,
        state,
        variants,
        default_variant: None,
        targeting: None,
        metadata,
        merged_metadata,
        value_type,
    };
    if let Some(name) = default_name {
        flag.default_variant = Some(flag.variant_index(&name).ok_or_else(|| {
            FlagFileError::flag(
                &flag.key,
                format!(
                    "defaultVariant \"{name}\" is not one of its variants ({})",
                    flag.variant_list()
                ),
            )
        })?);
    }
    let mut problem = None;
    match targeting_raw {
        None | Some(Json::Null) => {}
        Some(Json::Object(pairs)) if pairs.is_empty() => {}
        Some(raw @ Json::Object(_)) => {
            let rule = logic::compile_targeting(&raw, evaluators).map(Arc::new);
            if let Err(e) = &rule {
                problem = Some(FlagFileError::flag(&flag.key, e.clone()));
            }
            flag.targeting = Some(Targeting { raw, rule });
        }
        Some(other) => {
            return Err(FlagFileError::flag(
                &flag.key,
                format!(
                    "targeting must be a JsonLogic rule (an object), found {}",
                    other.kind()
                ),
            ));
        }
    }
    Ok((flag, problem))
}

fn parse_variants(value: Json) -> Result<Vec<Variant>, String> {
    let Json::Object(pairs) = value else {
        return Err(format!(
            "variants must be an object, found {}",
            value.kind()
        ));
    };
    if pairs.is_empty() {
        return Err("variants must not be empty".to_owned());
    }
    let mut variants = Vec::with_capacity(pairs.len());
    for (name, raw) in pairs {
        if name.is_empty() {
            return Err("a variant name must not be empty".to_owned());
        }
        match &raw {
            Json::Bool(_) | Json::String(_) | Json::Object(_) => {}
            Json::Number(n) => {
                let out_of_range = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                    (None, Some(_)) => true,
                    (None, None) => false,
                };
                if out_of_range {
                    return Err(format!(
                        "variant \"{name}\" is {n}, beyond the integers JSON clients can represent exactly (±{MAX_SAFE_INTEGER})"
                    ));
                }
            }
            Json::Null | Json::Array(_) => {
                return Err(format!(
                    "variant \"{name}\" is {}; variants must be booleans, strings, numbers or objects",
                    raw.kind()
                ));
            }
        }
        let value = raw.to_value();
        variants.push(Variant { name, raw, value });
    }
    Ok(variants)
}

/// All variants must share a type.
fn value_type(variants: &[Variant]) -> Result<FlagType, String> {
    let first = &variants[0];
    for v in &variants[1..] {
        if std::mem::discriminant(&v.raw) != std::mem::discriminant(&first.raw) {
            return Err(format!(
                "variants mix types: \"{}\" is {} but \"{}\" is {}",
                first.name,
                first.raw.kind(),
                v.name,
                v.raw.kind()
            ));
        }
    }
    Ok(match &first.raw {
        Json::Bool(_) => FlagType::Boolean,
        Json::String(_) => FlagType::String,
        Json::Object(_) => FlagType::Object,
        _ if variants
            .iter()
            .all(|v| v.value.is_i64() || v.value.is_u64()) =>
        {
            FlagType::Integer
        }
        _ => FlagType::Float,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FlagFile, FlagFileError> {
        parse_file(text)
    }

    fn flag_error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_full_flag() {
        let file = parse(
            r#"{
              "$schema": "https://flagd.dev/schema/v0/flags.json",
              "flags": {
                "new-checkout": {
                  "state": "ENABLED",
                  "variants": {"on": true, "off": false},
                  "defaultVariant": "off",
                  "targeting": {"if": [{"$ref": "staff"}, "on"]},
                  "metadata": {"owner": "payments", "version": 2}
                }
              },
              "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
              "metadata": {"flagSetId": "shop", "owner": "platform"}
            }"#,
        )
        .unwrap();
        assert!(file.problems.is_empty());
        let flag = &file.flags[0];
        assert_eq!(flag.key, "new-checkout");
        assert_eq!(flag.state, FlagState::Enabled);
        assert_eq!(flag.variant_list(), "on, off");
        assert_eq!(flag.default_variant, Some(1));
        assert_eq!(flag.value_type, FlagType::Boolean);
        assert!(flag.targeting.as_ref().is_some_and(|t| t.rule.is_ok()));
        assert_eq!(
            Value::Object(flag.merged_metadata.clone()),
            serde_json::json!({"flagSetId": "shop", "owner": "payments", "version": 2})
        );
    }

    #[test]
    fn applies_flagd_defaults() {
        let file = parse(r#"{"flags": {"f": {"defaultVariant": "true"}, "g": {"variants": {"a": 1, "b": 2.5}, "targeting": {}}}}"#).unwrap();
        let f = &file.flags[0];
        assert_eq!(f.state, FlagState::Enabled);
        assert_eq!(f.variant_list(), "true, false");
        assert_eq!(f.value_type, FlagType::Boolean);
        let g = &file.flags[1];
        assert_eq!(g.default_variant, None);
        assert_eq!(g.value_type, FlagType::Float);
        assert!(g.targeting.is_none(), "empty targeting means none");
    }

    #[test]
    fn names_the_flag_and_the_problem() {
        let cases = [
            (
                r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "blue"}}}"#,
                r#"flag "new-checkout": defaultVariant "blue" is not one of its variants (on, off)"#,
            ),
            (
                r#"{"flags": {"f": {"state": "enabled", "variants": {"on": true}}}}"#,
                r#"flag "f": state must be "ENABLED" or "DISABLED", found "enabled""#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"on": true}, "defaultVarient": "on"}}}"#,
                r#"flag "f": unknown field "defaultVarient" (expected state, variants, defaultVariant, targeting, metadata)"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"on": true, "n": "x"}}}}"#,
                r#"flag "f": variants mix types: "on" is a boolean but "n" is a string"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {}}}}"#,
                r#"flag "f": variants must not be empty"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"a": [1]}}}}"#,
                r#"flag "f": variant "a" is an array; variants must be booleans, strings, numbers or objects"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"a": 9007199254740993}}}}"#,
                r#"flag "f": variant "a" is 9007199254740993, beyond the integers JSON clients can represent exactly (±9007199254740991)"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"a": 1}, "defaultVariant": 1}}}"#,
                r#"flag "f": defaultVariant must be a variant name or null, found a number"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"a": 1}, "targeting": "a"}}}"#,
                r#"flag "f": targeting must be a JsonLogic rule (an object), found a string"#,
            ),
            (
                r#"{"flags": {"f": {"variants": {"a": 1}, "metadata": {"team": {"x": 1}}}}}"#,
                r#"flag "f": metadata: "team" must be a boolean, string or number, found an object"#,
            ),
            (
                r#"{"flags": {"f": true}}"#,
                r#"flag "f": must be an object, found a boolean"#,
            ),
            (
                r#"{"flag": {}}"#,
                r#"unknown top-level field "flag" (expected flags, $evaluators, metadata, $schema)"#,
            ),
            (r#"{}"#, r#""flags" is missing"#),
            (
                r#"[]"#,
                r#"a flag file must be a JSON object, found an array"#,
            ),
            (
                r#"{"flags": [{"key": "f"}]}"#,
                r#""flags" must be an object keyed by flag key, found an array"#,
            ),
            (
                r#"{"flags": {}, "$evaluators": {"e": "x"}}"#,
                r#"evaluator "e": must be a JsonLogic rule (an object), found a string"#,
            ),
            (
                r#"{"flags": {}, "metadata": {"v": null}}"#,
                r#"metadata: "v" must be a boolean, string or number, found null"#,
            ),
            (r#"{"flags": {"": {}}}"#, "a flag key must not be empty"),
        ];
        for (text, want) in cases {
            assert_eq!(flag_error(text), want, "{text}");
        }
        let msg = flag_error("{\"flags\": {\n\"a\": {}, \"a\": {}}}");
        assert!(
            msg.starts_with("invalid JSON: duplicate key \"a\" at line 2"),
            "{msg}"
        );
        let msg = flag_error("{\"flags\": ");
        assert!(msg.starts_with("invalid JSON: EOF while parsing"), "{msg}");
    }

    #[test]
    fn keeps_flags_with_broken_targeting_as_problems() {
        let file = parse(
            r#"{"flags": {
                "a": {"variants": {"x": 1}, "targeting": {"if": [{"$ref": "nope"}, "x"]}},
                "b": {"variants": {"x": 1}, "targeting": {"start_with": [{"var": "id"}, "x"]}}
            }}"#,
        )
        .unwrap();
        let problems: Vec<String> = file.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                r#"flag "a": targeting refers to evaluator "nope", which is not defined in $evaluators"#,
                r#"flag "b": targeting uses unknown operator "start_with""#,
            ]
        );
        assert!(
            file.flags
                .iter()
                .all(|f| f.targeting.as_ref().is_some_and(|t| t.rule.is_err()))
        );
    }

    #[test]
    fn writes_back_what_it_read() {
        let text = r#"{"$schema":"s","flags":{"z":{"state":"DISABLED","variants":{"b":{"k":2,"a":1},"a":{}},"defaultVariant":"a","targeting":{"if":[{"$ref":"e"},"b",null]},"metadata":{"m":1}},"a":{"state":"ENABLED","variants":{"x":"1"},"defaultVariant":null}},"$evaluators":{"e":{"var":"q"}},"metadata":{"id":"set"}}"#;
        let file = parse(text).unwrap();
        assert_eq!(serde_json::to_string(&file.to_json()).unwrap(), text);
    }
}
