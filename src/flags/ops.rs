//! The flagd custom JsonLogic operators: `fractional`, `sem_ver`, `starts_with`, `ends_with`.
//!
//! datalogic-rs evaluates every argument before calling an operator, so nested rules (a bucket
//! name that is itself an `if`, a weight that depends on the context) need no special handling.
//! Following flagd, malformed input makes an operator return `null` rather than fail: the flag
//! then resolves to its default variant instead of an error.

use std::borrow::Cow;

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{ArenaExt, CustomOperator, DataValue, Result};

pub(crate) const FRACTIONAL: &str = "fractional";
pub(crate) const SEM_VER: &str = "sem_ver";
pub(crate) const STARTS_WITH: &str = "starts_with";
pub(crate) const ENDS_WITH: &str = "ends_with";
pub(crate) const ALL: [&str; 4] = [FRACTIONAL, SEM_VER, STARTS_WITH, ENDS_WITH];

/// The implicit bucketing key reads these from the evaluation context.
const TARGETING_KEY: &str = "targetingKey";
const FLAGD: &str = "$flagd";
const FLAG_KEY: &str = "flagKey";

/// `{"fractional": [bucketKey?, [variant, weight?], ...]}`: deterministic weighted buckets.
///
/// The bucket key is the first argument when it is a string; otherwise (absent, or `null`
/// from a missing `var`) it is `$flagd.flagKey` + `targetingKey`. This is flagd's v2 algorithm:
/// `bucket = (murmur3_x86_32(key, seed 0) * totalWeight) >> 32`, then the first variant whose
/// cumulative weight exceeds `bucket`. A missing weight counts as 1, a negative one as 0.
pub(crate) struct Fractional;

impl CustomOperator for Fractional {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> Result<&'a DataValue<'a>> {
        let (key, buckets): (Cow<'a, str>, &[&'a DataValue<'a>]) = match args.first() {
            Some(DataValue::String(s)) => (Cow::Borrowed(*s), &args[1..]),
            Some(DataValue::Null) => match implicit_key(ctx.root_input()) {
                Some(key) => (key, &args[1..]),
                None => return Ok(arena.null()),
            },
            Some(DataValue::Array(_)) => match implicit_key(ctx.root_input()) {
                Some(key) => (key, args),
                None => return Ok(arena.null()),
            },
            _ => return Ok(arena.null()),
        };
        Ok(pick_bucket(&key, buckets).unwrap_or_else(|| arena.null()))
    }
}

/// `$flagd.flagKey` + `targetingKey`, or `None` without a string `targetingKey`.
fn implicit_key<'a>(root: &'a DataValue<'a>) -> Option<Cow<'a, str>> {
    let targeting_key = field(root, TARGETING_KEY)?.as_str()?;
    let flag_key = field(root, FLAGD)
        .and_then(|flagd| field(flagd, FLAG_KEY))
        .and_then(DataValue::as_str)
        .unwrap_or("");
    Some(if flag_key.is_empty() {
        Cow::Borrowed(targeting_key)
    } else {
        Cow::Owned(format!("{flag_key}{targeting_key}"))
    })
}

fn field<'a>(value: &'a DataValue<'a>, name: &str) -> Option<&'a DataValue<'a>> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The chosen bucket's variant (a string, boolean, number or null), or `None` when the
/// buckets are malformed or all weights are zero.
fn pick_bucket<'a>(key: &str, buckets: &[&'a DataValue<'a>]) -> Option<&'a DataValue<'a>> {
    let mut parsed: Vec<(&'a DataValue<'a>, u64)> = Vec::with_capacity(buckets.len());
    let mut total: u64 = 0;
    for bucket in buckets {
        let entry = bucket.as_array()?;
        let variant = entry.first()?;
        if !matches!(
            variant,
            DataValue::String(_) | DataValue::Bool(_) | DataValue::Number(_) | DataValue::Null
        ) {
            return None;
        }
        let weight = match entry.get(1) {
            None | Some(DataValue::Null) => 1,
            Some(w) => whole_weight(w)?,
        };
        total += weight;
        parsed.push((variant, weight));
    }
    if parsed.is_empty() || total == 0 || total > i32::MAX as u64 {
        return None;
    }
    let bucket = (u64::from(murmur3_x86_32(key)) * total) >> 32;
    let mut end = 0;
    for (variant, weight) in parsed {
        end += weight;
        if bucket < end {
            return Some(variant);
        }
    }
    None
}

/// A weight must be a whole number no larger than `i32::MAX`; negatives count as zero.
fn whole_weight(w: &DataValue<'_>) -> Option<u64> {
    let f = w.as_f64()?;
    if f.fract() != 0.0 || f > f64::from(i32::MAX) {
        return None;
    }
    Some(if f < 0.0 { 0 } else { f as u64 })
}

pub(crate) fn murmur3_x86_32(key: &str) -> u32 {
    // Reading from a byte slice cannot fail.
    murmur3::murmur3_32(&mut key.as_bytes(), 0).unwrap_or(0)
}

/// `{"sem_ver": [version, op, version]}` with op one of `= != < <= > >= ^ ~`.
/// `^` means same major version, `~` same major and minor. Versions may carry a leading `v`,
/// omit minor and patch (`1`, `1.2`), or be numbers; build metadata is ignored.
pub(crate) struct SemVer;

impl CustomOperator for SemVer {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> Result<&'a DataValue<'a>> {
        let result = match args {
            [left, op, right] => compare_versions(left, op.as_str(), right),
            _ => None,
        };
        Ok(result.map_or_else(|| arena.null(), |b| arena.bool(b)))
    }
}

fn compare_versions(left: &DataValue<'_>, op: Option<&str>, right: &DataValue<'_>) -> Option<bool> {
    let (a, b) = (parse_version(left)?, parse_version(right)?);
    Some(match op? {
        "=" => a == b,
        "!=" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        ">=" => a >= b,
        "^" => a.major == b.major,
        "~" => a.major == b.major && a.minor == b.minor,
        _ => return None,
    })
}

pub(crate) fn parse_version(value: &DataValue<'_>) -> Option<semver::Version> {
    let text: Cow<'_, str> = match value {
        DataValue::String(s) => Cow::Borrowed(*s),
        DataValue::Number(n) => Cow::Owned(match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().to_string(),
        }),
        _ => return None,
    };
    let text = text.strip_prefix(['v', 'V']).unwrap_or(&text);
    // Build metadata does not take part in precedence, but `semver::Version` compares it.
    let text = text.split_once('+').map_or(text, |(core, _)| core);
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let padded = match core.matches('.').count() {
        0 => format!("{core}.0.0"),
        1 => format!("{core}.0"),
        _ => core.to_owned(),
    };
    let full = match pre {
        Some(pre) => format!("{padded}-{pre}"),
        None => padded,
    };
    semver::Version::parse(&full).ok()
}

/// `{"starts_with": [string, prefix]}`; `null` unless both are strings.
pub(crate) struct StartsWith;

impl CustomOperator for StartsWith {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> Result<&'a DataValue<'a>> {
        Ok(match string_pair(args) {
            Some((s, prefix)) => arena.bool(s.starts_with(prefix)),
            None => arena.null(),
        })
    }
}

/// `{"ends_with": [string, suffix]}`; `null` unless both are strings.
pub(crate) struct EndsWith;

impl CustomOperator for EndsWith {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> Result<&'a DataValue<'a>> {
        Ok(match string_pair(args) {
            Some((s, suffix)) => arena.bool(s.ends_with(suffix)),
            None => arena.null(),
        })
    }
}

fn string_pair<'a>(args: &[&'a DataValue<'a>]) -> Option<(&'a str, &'a str)> {
    match args {
        [a, b] => Some((a.as_str()?, b.as_str()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::logic::engine;

    /// Evaluates `rule` against `data` with the flagd engine; returns the result as JSON text.
    fn eval(rule: &str, data: &str) -> String {
        engine().eval_str(rule, data).unwrap()
    }

    #[test]
    fn murmur3_matches_reference_vectors() {
        // SMHasher MurmurHash3_x86_32, seed 0.
        assert_eq!(murmur3_x86_32(""), 0);
        assert_eq!(murmur3_x86_32("hello"), 0x248b_fa47);
        assert_eq!(
            murmur3_x86_32("The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    #[test]
    fn fractional_uses_v2_integer_scaling() {
        // The flagd testbed's hash edge cases: keys whose hashes sit on a 50/50 boundary.
        let rule = r#"{"fractional": [{"var": "k"}, ["lower", 50], ["upper", 50]]}"#;
        for (key, want) in [
            ("ejOoVL", "lower"),
            ("bY9fO-", "lower"),
            ("SI7p-", "lower"),
            ("6LvT0", "upper"),
            ("ceQdGm", "upper"),
        ] {
            let got = eval(rule, &format!(r#"{{"k": "{key}"}}"#));
            assert_eq!(got, format!("\"{want}\""), "key {key}");
            let bucket = (u64::from(murmur3_x86_32(key)) * 100) >> 32;
            assert_eq!(bucket < 50, want == "lower", "key {key}");
        }
    }

    #[test]
    fn fractional_implicit_key_is_flag_key_plus_targeting_key() {
        let rule = r#"{"fractional": [["a", 50], ["b", 50]]}"#;
        let data = r#"{"targetingKey": "user-7", "$flagd": {"flagKey": "my-flag"}}"#;
        let explicit = eval(
            r#"{"fractional": ["my-flaguser-7", ["a", 50], ["b", 50]]}"#,
            "{}",
        );
        assert_eq!(eval(rule, data), explicit);
        // Without a targeting key there is nothing to bucket on.
        assert_eq!(eval(rule, r#"{"$flagd": {"flagKey": "f"}}"#), "null");
        assert_eq!(
            eval(r#"{"fractional": [{"var": "missing"}, ["a", 1]]}"#, "{}"),
            "null"
        );
    }

    #[test]
    fn fractional_weights() {
        let data = r#"{"targetingKey": "someone"}"#;
        // A missing weight is 1; a zero weight is never picked.
        assert_eq!(eval(r#"{"fractional": [["a"], ["b", 0]]}"#, data), "\"a\"");
        // Negative weights count as zero.
        assert_eq!(
            eval(r#"{"fractional": [["a", -5], ["b", 1]]}"#, data),
            "\"b\""
        );
        // Booleans may be bucket values, so fractional can be a condition.
        assert_eq!(
            eval(r#"{"fractional": [[false, 0], [true, 1]]}"#, data),
            "true"
        );
        for bad in [
            r#"{"fractional": [["a", 0], ["b", 0]]}"#,
            r#"{"fractional": [["a", 1.5]]}"#,
            r#"{"fractional": [["a", "x"]]}"#,
            r#"{"fractional": [["a", 2147483647], ["b", 1]]}"#,
            r#"{"fractional": [[]]}"#,
            r#"{"fractional": [[["nested"], 1]]}"#,
            r#"{"fractional": ["key"]}"#,
            r#"{"fractional": [42, ["a", 1]]}"#,
        ] {
            assert_eq!(eval(bad, data), "null", "{bad}");
        }
    }

    #[test]
    fn sem_ver_operators() {
        let cases = [
            ("1.2.3", "=", "1.2.3", "true"),
            ("1.2.3", "!=", "1.2.4", "true"),
            ("1.2.3", "<", "1.10.0", "true"),
            ("2.0.0-alpha", "<", "2.0.0", "true"),
            ("1.2.3", "<=", "1.2.3", "true"),
            ("1.2.3", ">", "1.2.3", "false"),
            ("1.3.0", ">=", "1.2.9", "true"),
            ("3.9.1", "^", "3.0.0", "true"),
            ("4.0.0", "^", "3.0.0", "false"),
            ("3.0.7", "~", "3.0.0", "true"),
            ("3.1.0", "~", "3.0.0", "false"),
            ("v1.0.0", "=", "V1.0.0", "true"),
            ("1", "=", "1.0.0", "true"),
            ("1.2", "=", "1.2.0", "true"),
            ("1.0.0+a", "=", "1.0.0+b", "true"),
            ("1.0-rc.1", "<", "1.0.0", "true"),
            ("2.0.0.0", "=", "2.0.0", "null"),
            ("not-a-version", "=", "1.0.0", "null"),
            ("1.0.0", "===", "1.0.0", "null"),
        ];
        for (a, op, b, want) in cases {
            let rule = format!(r#"{{"sem_ver": ["{a}", "{op}", "{b}"]}}"#);
            assert_eq!(eval(&rule, "{}"), want, "{a} {op} {b}");
        }
        // Numbers are read as versions.
        assert_eq!(
            eval(
                r#"{"sem_ver": [{"var": "v"}, ">", "1.1"]}"#,
                r#"{"v": 1.2}"#
            ),
            "true"
        );
        assert_eq!(
            eval(r#"{"sem_ver": [{"var": "v"}, "^", "2"]}"#, r#"{"v": 2}"#),
            "true"
        );
        assert_eq!(eval(r#"{"sem_ver": ["1.0.0", "="]}"#, "{}"), "null");
        assert_eq!(eval(r#"{"sem_ver": [true, "=", "1.0.0"]}"#, "{}"), "null");
    }

    #[test]
    fn starts_and_ends_with() {
        let data = r#"{"id": "abcxyz", "n": 123}"#;
        assert_eq!(
            eval(r#"{"starts_with": [{"var": "id"}, "abc"]}"#, data),
            "true"
        );
        assert_eq!(
            eval(r#"{"starts_with": [{"var": "id"}, "xyz"]}"#, data),
            "false"
        );
        assert_eq!(
            eval(r#"{"ends_with": [{"var": "id"}, "xyz"]}"#, data),
            "true"
        );
        assert_eq!(
            eval(r#"{"ends_with": [{"var": "id"}, "abc"]}"#, data),
            "false"
        );
        assert_eq!(
            eval(r#"{"starts_with": [{"var": "n"}, "1"]}"#, data),
            "null"
        );
        assert_eq!(eval(r#"{"ends_with": ["abc"]}"#, data), "null");
        assert_eq!(eval(r#"{"starts_with": ["a", "b", "c"]}"#, data), "null");
    }
}
