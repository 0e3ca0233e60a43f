//! Flag evaluation with OpenFeature's reasons and error codes.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::{DataValue, Logic};
use serde_json::{Map, Value};

use super::json::number_value;
use super::logic::engine;
use super::model::{Flag, FlagState, FlagType};
use super::store::FlagStore;

/// Why a flag resolved the way it did (OpenFeature resolution reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No targeting rule: the default variant.
    Static,
    /// The targeting rule chose a variant.
    TargetingMatch,
    /// The targeting rule returned null, or the flag has no default variant.
    Default,
    /// The flag is disabled; the caller's default applies.
    Disabled,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenFeature error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    FlagNotFound,
    /// The flag's targeting rule could not be compiled or failed while running.
    ParseError,
    /// Typed evaluation asked for a type the flag's value does not have.
    TypeMismatch,
    /// Defined by OpenFeature and OFREP. This evaluator never answers it: like flagd, a
    /// `fractional` rule without a targeting key yields the default variant instead.
    TargetingKeyMissing,
    /// The context is not a JSON object, or its `targetingKey` is not a string.
    InvalidContext,
    /// The targeting rule returned something that is not one of the flag's variants.
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of evaluating one flag.
///
/// Untyped ([`FlagStore::evaluate`]): `value` is the variant's JSON value, or `Null` when the
/// caller's code default applies (an error, a disabled flag, or no default variant); `variant`
/// is then `None`. Typed ([`FlagStore::resolve`]): `value` is the caller's default in those
/// cases. `metadata` is the flag's metadata over the flag set's, also on errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<T = Value> {
    pub value: T,
    pub variant: Option<String>,
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    pub error_message: Option<String>,
    pub metadata: Map<String, Value>,
}

impl<T> Evaluation<T> {
    pub fn is_error(&self) -> bool {
        self.error_code.is_some()
    }

    /// Whether the caller's default applies (no variant was chosen).
    pub fn uses_code_default(&self) -> bool {
        self.variant.is_none()
    }
}

impl Evaluation {
    fn error(code: ErrorCode, message: String, metadata: &Map<String, Value>) -> Self {
        Evaluation {
            value: Value::Null,
            variant: None,
            reason: Reason::Error,
            error_code: Some(code),
            error_message: Some(message),
            metadata: metadata.clone(),
        }
    }
}

/// A Rust type a flag can be resolved to, for [`FlagStore::resolve`].
pub trait FlagValue: Sized {
    const TYPE: FlagType;
    /// The flag value as this type, or `None` on a type mismatch.
    fn from_json(value: &Value) -> Option<Self>;
}

impl FlagValue for bool {
    const TYPE: FlagType = FlagType::Boolean;
    fn from_json(value: &Value) -> Option<Self> {
        value.as_bool()
    }
}

impl FlagValue for String {
    const TYPE: FlagType = FlagType::String;
    fn from_json(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
}

impl FlagValue for i64 {
    const TYPE: FlagType = FlagType::Integer;
    fn from_json(value: &Value) -> Option<Self> {
        // 10.0 is an integer; 10.5 is not, and is a mismatch rather than a silent truncation.
        value.as_i64().or_else(|| {
            let f = value.as_f64()?;
            (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
        })
    }
}

impl FlagValue for f64 {
    const TYPE: FlagType = FlagType::Float;
    fn from_json(value: &Value) -> Option<Self> {
        value.as_f64()
    }
}

impl FlagValue for Map<String, Value> {
    const TYPE: FlagType = FlagType::Object;
    fn from_json(value: &Value) -> Option<Self> {
        value.as_object().cloned()
    }
}

impl FlagStore {
    /// Evaluates a flag against an evaluation context (a JSON object, or `null` for none).
    /// `targetingKey` is read from the context; `$flagd.flagKey` and `$flagd.timestamp`
    /// (unix seconds) are added for the targeting rule.
    pub fn evaluate(&self, key: &str, ctx: &Value) -> Evaluation {
        match self.get(key) {
            Some(flag) => evaluate_flag(flag, ctx),
            None => Evaluation::error(
                ErrorCode::FlagNotFound,
                format!("flag \"{key}\" not found"),
                &self.set_metadata,
            ),
        }
    }

    /// Evaluates a flag as type `T`, with `default` as the code default: it is returned on
    /// errors, for disabled flags and for flags without a default variant. A value of another
    /// type is a `TYPE_MISMATCH` error.
    pub fn resolve<T: FlagValue>(&self, key: &str, ctx: &Value, default: T) -> Evaluation<T> {
        let eval = self.evaluate(key, ctx);
        let typed = if eval.variant.is_some() {
            T::from_json(&eval.value)
        } else {
            None
        };
        match typed {
            Some(value) => Evaluation {
                value,
                variant: eval.variant,
                reason: eval.reason,
                error_code: eval.error_code,
                error_message: eval.error_message,
                metadata: eval.metadata,
            },
            None if eval.variant.is_some() => Evaluation {
                value: default,
                variant: None,
                reason: Reason::Error,
                error_code: Some(ErrorCode::TypeMismatch),
                error_message: Some(format!(
                    "flag \"{key}\" is {}, not {}",
                    describe(&eval.value),
                    T::TYPE
                )),
                metadata: eval.metadata,
            },
            None => Evaluation {
                value: default,
                variant: None,
                reason: eval.reason,
                error_code: eval.error_code,
                error_message: eval.error_message,
                metadata: eval.metadata,
            },
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string (\"{s}\")"),
        Value::Object(_) => "an object".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

pub(crate) fn evaluate_flag(flag: &Flag, ctx: &Value) -> Evaluation {
    if flag.state == FlagState::Disabled {
        return Evaluation {
            value: Value::Null,
            variant: None,
            reason: Reason::Disabled,
            error_code: None,
            error_message: None,
            metadata: flag.merged_metadata.clone(),
        };
    }
    if let Err(message) = check_context(ctx) {
        return Evaluation::error(ErrorCode::InvalidContext, message, &flag.merged_metadata);
    }
    let Some(targeting) = &flag.targeting else {
        return default_variant(flag, Reason::Static);
    };
    let rule = match &targeting.rule {
        Ok(rule) => rule,
        Err(message) => {
            return Evaluation::error(
                ErrorCode::ParseError,
                message.clone(),
                &flag.merged_metadata,
            );
        }
    };
    match run_targeting(rule, flag, ctx) {
        Ok(Outcome::Null) => default_variant(flag, Reason::Default),
        Ok(Outcome::Variant(i)) => chosen(flag, i, Reason::TargetingMatch),
        Ok(Outcome::Unknown(result)) => Evaluation::error(
            ErrorCode::General,
            format!(
                "targeting returned {result}, which is not one of the flag's variants ({})",
                flag.variant_list()
            ),
            &flag.merged_metadata,
        ),
        Err(e) => Evaluation::error(
            ErrorCode::ParseError,
            format!("targeting failed: {e}"),
            &flag.merged_metadata,
        ),
    }
}

/// A context must be `null` or an object, and its `targetingKey`, if any, a string.
pub(crate) fn check_context(ctx: &Value) -> Result<(), String> {
    match ctx {
        Value::Null => Ok(()),
        Value::Object(map) => match map.get("targetingKey") {
            None | Some(Value::String(_)) => Ok(()),
            Some(other) => Err(format!(
                "targetingKey must be a string, found {}",
                describe(other)
            )),
        },
        other => Err(format!(
            "the evaluation context must be a JSON object, found {}",
            describe(other)
        )),
    }
}

fn default_variant(flag: &Flag, reason: Reason) -> Evaluation {
    match flag.default_variant {
        Some(i) => chosen(flag, i, reason),
        // No default variant: defer to the caller's code default.
        None => Evaluation {
            value: Value::Null,
            variant: None,
            reason: Reason::Default,
            error_code: None,
            error_message: None,
            metadata: flag.merged_metadata.clone(),
        },
    }
}

fn chosen(flag: &Flag, index: usize, reason: Reason) -> Evaluation {
    let variant = &flag.variants[index];
    Evaluation {
        value: variant.value.clone(),
        variant: Some(variant.name.clone()),
        reason,
        error_code: None,
        error_message: None,
        metadata: flag.merged_metadata.clone(),
    }
}

/// What a targeting rule returned.
enum Outcome {
    /// `null`: use the default variant.
    Null,
    /// The index of the variant it named.
    Variant(usize),
    /// Something else, described for the error message.
    Unknown(String),
}

thread_local! {
    /// Per-thread scratch arena for rule evaluation, reset after each use: evaluation then
    /// allocates nothing on the heap in the common case.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::with_capacity(4096));
}

fn run_targeting(rule: &Logic, flag: &Flag, ctx: &Value) -> Result<Outcome, String> {
    ARENA.with(|cell| match cell.try_borrow_mut() {
        Ok(mut arena) => {
            let outcome = run_in(&arena, rule, flag, ctx);
            arena.reset();
            outcome
        }
        // Only reachable if evaluation re-entered itself on this thread; stay correct anyway.
        Err(_) => run_in(&Bump::new(), rule, flag, ctx),
    })
}

fn run_in(arena: &Bump, rule: &Logic, flag: &Flag, ctx: &Value) -> Result<Outcome, String> {
    let root = context_root(ctx, &flag.key, unix_now(), arena);
    let result = engine()
        .evaluate(rule, root, arena)
        .map_err(|e| e.to_string())?;
    // Like flagd, a boolean or number result names the variant by its text ("true", "1").
    let named = |name: &str| match flag.variant_index(name) {
        Some(i) => Outcome::Variant(i),
        None => Outcome::Unknown(format!("\"{name}\"")),
    };
    Ok(match result {
        DataValue::Null => Outcome::Null,
        DataValue::String(s) => named(s),
        DataValue::Bool(b) => named(if *b { "true" } else { "false" }),
        DataValue::Number(_) => named(&result.to_string()),
        other => Outcome::Unknown(format!("{other}")),
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The context as the rule sees it: the caller's fields plus `$flagd`, which replaces any
/// `$flagd` the caller sent. Strings are borrowed from `ctx`, not copied.
fn context_root<'a>(ctx: &'a Value, flag_key: &'a str, now: i64, arena: &'a Bump) -> DataValue<'a> {
    let flagd = DataValue::Object(arena.alloc_slice_copy(&[
        ("flagKey", DataValue::String(flag_key)),
        ("timestamp", DataValue::from_i64(now)),
    ]));
    let fields = match ctx {
        Value::Object(map) => map,
        _ => return DataValue::Object(arena.alloc_slice_copy(&[("$flagd", flagd)])),
    };
    let mut pairs =
        datalogic_rs::bumpalo::collections::Vec::with_capacity_in(fields.len() + 1, arena);
    for (k, v) in fields {
        if k != "$flagd" {
            pairs.push((k.as_str(), to_data(v, arena)));
        }
    }
    pairs.push(("$flagd", flagd));
    DataValue::Object(pairs.into_bump_slice())
}

fn to_data<'a>(value: &'a Value, arena: &'a Bump) -> DataValue<'a> {
    match value {
        Value::Null => DataValue::Null,
        Value::Bool(b) => DataValue::Bool(*b),
        Value::Number(n) => DataValue::Number(number_value(n)),
        Value::String(s) => DataValue::String(s),
        Value::Array(items) => {
            DataValue::Array(arena.alloc_slice_fill_iter(items.iter().map(|v| to_data(v, arena))))
        }
        Value::Object(map) => DataValue::Object(
            arena.alloc_slice_fill_iter(map.iter().map(|(k, v)| (k.as_str(), to_data(v, arena)))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FLAGS: &str = r#"{
      "flags": {
        "static": {"variants": {"on": true, "off": false}, "defaultVariant": "on",
                   "metadata": {"owner": "web"}},
        "off": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "no-default": {"variants": {"a": "A", "b": "B"}},
        "by-email": {
          "variants": {"staff": "s", "others": "o"}, "defaultVariant": "others",
          "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "staff", null]}
        },
        "bool-result": {
          "variants": {"true": 1, "false": 0}, "defaultVariant": "false",
          "targeting": {"==": [{"var": "tier"}, "gold"]}
        },
        "number-result": {
          "variants": {"1": "one", "2": "two"}, "defaultVariant": "1",
          "targeting": {"+": [{"var": "n"}, 1]}
        },
        "bad-variant": {
          "variants": {"a": "A"}, "defaultVariant": "a",
          "targeting": {"var": "pick"}
        },
        "flagd-props": {
          "variants": {"yes": "y", "no": "n"}, "defaultVariant": "no",
          "targeting": {"if": [{"and": [
             {"==": [{"var": "$flagd.flagKey"}, "flagd-props"]},
             {">": [{"var": "$flagd.timestamp"}, 1700000000]}
          ]}, "yes", "no"]}
        },
        "rollout": {
          "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
          "targeting": {"fractional": [["a", 50], ["b", 50]]}
        },
        "broken": {"variants": {"a": "a"}, "targeting": {"if": [{"$ref": "gone"}, "a"]}},
        "numbers": {"variants": {"int": 10, "float": 2.5}, "defaultVariant": "int",
                    "targeting": {"if": [{"var": "f"}, "float"]}},
        "objects": {"variants": {"o": {"k": 1}}, "defaultVariant": "o"}
      },
      "metadata": {"flagSetId": "test", "owner": "platform"}
    }"#;

    fn store() -> FlagStore {
        FlagStore::from_json_lenient(FLAGS).unwrap()
    }

    fn eval(key: &str, ctx: Value) -> Evaluation {
        store().evaluate(key, &ctx)
    }

    #[test]
    fn static_flag_with_merged_metadata() {
        let e = eval("static", Value::Null);
        assert_eq!(e.value, json!(true));
        assert_eq!(e.variant.as_deref(), Some("on"));
        assert_eq!(e.reason, Reason::Static);
        assert!(!e.is_error());
        assert_eq!(
            Value::Object(e.metadata),
            json!({"flagSetId": "test", "owner": "web"})
        );
    }

    #[test]
    fn not_found_disabled_and_code_default() {
        let e = eval("missing", json!({}));
        assert_eq!(e.error_code, Some(ErrorCode::FlagNotFound));
        assert_eq!(e.reason, Reason::Error);
        assert_eq!(
            e.error_message.as_deref(),
            Some("flag \"missing\" not found")
        );
        assert_eq!(
            Value::Object(e.metadata),
            json!({"flagSetId": "test", "owner": "platform"})
        );

        let e = eval("off", json!({}));
        assert_eq!(
            (e.reason, e.error_code, e.value, e.variant),
            (Reason::Disabled, None, Value::Null, None)
        );

        let e = eval("no-default", json!({}));
        assert!(e.uses_code_default());
        assert_eq!(
            (e.reason, e.error_code, e.value, e.variant),
            (Reason::Default, None, Value::Null, None)
        );
    }

    #[test]
    fn targeting_match_and_null_fallback() {
        let e = eval("by-email", json!({"email": "ann@example.com"}));
        assert_eq!(
            (e.reason, e.variant.as_deref(), e.value),
            (Reason::TargetingMatch, Some("staff"), json!("s"))
        );
        let e = eval("by-email", json!({"email": "bob@elsewhere.org"}));
        assert_eq!(
            (e.reason, e.variant.as_deref(), e.value),
            (Reason::Default, Some("others"), json!("o"))
        );
        let e = eval("by-email", Value::Null);
        assert_eq!(e.reason, Reason::Default);
    }

    #[test]
    fn boolean_and_number_results_name_variants() {
        assert_eq!(
            eval("bool-result", json!({"tier": "gold"}))
                .variant
                .as_deref(),
            Some("true")
        );
        assert_eq!(
            eval("bool-result", json!({"tier": "tin"}))
                .variant
                .as_deref(),
            Some("false")
        );
        assert_eq!(eval("number-result", json!({"n": 1})).value, json!("two"));
    }

    #[test]
    fn unknown_variant_is_a_general_error() {
        let e = eval("bad-variant", json!({"pick": "zzz"}));
        assert_eq!(e.error_code, Some(ErrorCode::General));
        assert_eq!(
            e.error_message.as_deref(),
            Some("targeting returned \"zzz\", which is not one of the flag's variants (a)")
        );
        assert_eq!(e.value, Value::Null);
        let e = eval("bad-variant", json!({"pick": [1, 2]}));
        assert_eq!(e.error_code, Some(ErrorCode::General));
        assert!(e.error_message.unwrap().contains("[1,2]"));
    }

    #[test]
    fn flagd_properties_are_in_the_context() {
        let e = eval(
            "flagd-props",
            json!({"$flagd": {"flagKey": "spoofed", "timestamp": 0}}),
        );
        assert_eq!(e.variant.as_deref(), Some("yes"));
    }

    #[test]
    fn fractional_is_sticky_per_targeting_key() {
        let s = store();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let ctx = json!({"targetingKey": format!("user-{i}")});
            let first = s.evaluate("rollout", &ctx);
            assert_eq!(s.evaluate("rollout", &ctx), first);
            assert_eq!(first.reason, Reason::TargetingMatch);
            seen.insert(first.variant.unwrap());
        }
        assert_eq!(seen.len(), 2, "both buckets are used");
        // No targeting key: fractional has nothing to bucket on and yields the default.
        assert_eq!(s.evaluate("rollout", &json!({})).reason, Reason::Default);
    }

    #[test]
    fn broken_targeting_is_a_parse_error() {
        let e = eval("broken", json!({}));
        assert_eq!(e.error_code, Some(ErrorCode::ParseError));
        assert!(e.error_message.unwrap().contains("\"gone\""));
    }

    #[test]
    fn invalid_context() {
        for ctx in [json!("user-1"), json!([1]), json!({"targetingKey": 7})] {
            let e = eval("static", ctx.clone());
            assert_eq!(e.error_code, Some(ErrorCode::InvalidContext), "{ctx}");
        }
    }

    #[test]
    fn typed_resolution() {
        let s = store();
        let e = s.resolve("static", &Value::Null, false);
        assert_eq!((e.value, e.reason), (true, Reason::Static));

        let e = s.resolve("static", &Value::Null, 5i64);
        assert_eq!(
            (e.value, e.reason, e.error_code),
            (5, Reason::Error, Some(ErrorCode::TypeMismatch))
        );
        assert_eq!(e.variant, None);
        assert_eq!(
            e.error_message.as_deref(),
            Some("flag \"static\" is a boolean (true), not integer")
        );

        assert_eq!(s.resolve("numbers", &json!({}), 0i64).value, 10);
        assert_eq!(s.resolve("numbers", &json!({}), 0.0f64).value, 10.0);
        let e = s.resolve("numbers", &json!({"f": true}), 0i64);
        assert_eq!(e.error_code, Some(ErrorCode::TypeMismatch));
        assert_eq!(s.resolve("numbers", &json!({"f": true}), 0.0f64).value, 2.5);

        let e = s.resolve("objects", &Value::Null, Map::new());
        assert_eq!(Value::Object(e.value), json!({"k": 1}));
        assert_eq!(
            s.resolve("by-email", &Value::Null, String::new()).value,
            "o"
        );

        // Code defaults: disabled, no default variant, not found.
        let e = s.resolve("off", &Value::Null, false);
        assert_eq!(
            (e.value, e.reason, e.error_code),
            (false, Reason::Disabled, None)
        );
        let e = s.resolve("no-default", &Value::Null, "code".to_owned());
        assert_eq!(
            (e.value.as_str(), e.reason, e.error_code),
            ("code", Reason::Default, None)
        );
        let e = s.resolve("missing", &Value::Null, 3.5);
        assert_eq!(
            (e.value, e.error_code),
            (3.5, Some(ErrorCode::FlagNotFound))
        );
    }

    #[test]
    fn integers_accept_whole_floats_only() {
        assert_eq!(i64::from_json(&json!(10.0)), Some(10));
        assert_eq!(i64::from_json(&json!(10.5)), None);
        assert_eq!(i64::from_json(&json!("10")), None);
    }
}
