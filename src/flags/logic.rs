//! Targeting rules: `$ref` expansion, operator checks and compilation with datalogic-rs.
//!
//! Everything here runs once at load time, so evaluation only runs precompiled rules.

use std::collections::HashSet;
use std::sync::LazyLock;

use datalogic_rs::{Engine, Logic};

use super::json::Json;
use super::ops;

/// One engine for the process: the flagd operators are stateless, and a `Logic` must be
/// evaluated by the engine that compiled it.
static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::builder()
        .add_operator(ops::FRACTIONAL, ops::Fractional)
        .add_operator(ops::SEM_VER, ops::SemVer)
        .add_operator(ops::STARTS_WITH, ops::StartsWith)
        .add_operator(ops::ENDS_WITH, ops::EndsWith)
        .build()
});

static KNOWN_OPERATORS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    ENGINE
        .builtin_operator_names()
        .chain(ops::ALL.iter().copied())
        .collect()
});

pub(crate) fn engine() -> &'static Engine {
    &ENGINE
}

/// `$ref` expansion may not grow a rule beyond this many JSON nodes; evaluators that refer to
/// each other several times could otherwise blow up exponentially.
const MAX_EXPANDED_NODES: usize = 100_000;

/// Replaces every `{"$ref": "name"}` with the named evaluator from `$evaluators`, recursively
/// (an evaluator may refer to another one). Done on the parsed tree rather than on text, so
/// whitespace around the colon does not matter.
pub(crate) fn expand_refs(rule: &Json, evaluators: &[(String, Json)]) -> Result<Json, String> {
    let mut stack = Vec::new();
    let mut budget = MAX_EXPANDED_NODES;
    expand(rule, evaluators, &mut stack, &mut budget)
}

fn expand(
    node: &Json,
    evaluators: &[(String, Json)],
    stack: &mut Vec<String>,
    budget: &mut usize,
) -> Result<Json, String> {
    *budget = budget
        .checked_sub(1)
        .ok_or("targeting is too large after $ref expansion")?;
    match node {
        Json::Object(pairs) if pairs.len() == 1 && pairs[0].0 == "$ref" => {
            let Json::String(name) = &pairs[0].1 else {
                return Err(format!(
                    "\"$ref\" must name an evaluator, found {}",
                    pairs[0].1.kind()
                ));
            };
            if stack.contains(name) {
                return Err(format!(
                    "evaluator \"{name}\" refers to itself ({} -> {name})",
                    stack.join(" -> ")
                ));
            }
            let Some((_, body)) = evaluators.iter().find(|(n, _)| n == name) else {
                return Err(format!(
                    "targeting refers to evaluator \"{name}\", which is not defined in $evaluators"
                ));
            };
            stack.push(name.clone());
            let expanded = expand(body, evaluators, stack, budget);
            stack.pop();
            expanded
        }
        Json::Object(pairs) => pairs
            .iter()
            .map(|(k, v)| Ok((k.clone(), expand(v, evaluators, stack, budget)?)))
            .collect::<Result<_, String>>()
            .map(Json::Object),
        Json::Array(items) => items
            .iter()
            .map(|v| expand(v, evaluators, stack, budget))
            .collect::<Result<_, String>>()
            .map(Json::Array),
        other => Ok(other.clone()),
    }
}

/// Rejects operators the engine does not know. datalogic-rs compiles an unknown key into a call
/// that fails only when evaluated; a typo like `start_with` should fail when the file loads.
pub(crate) fn check_operators(node: &Json) -> Result<(), String> {
    match node {
        Json::Object(pairs) if pairs.len() > 1 => {
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            Err(format!(
                "targeting has an object with several keys ({}); a JsonLogic operation has exactly one",
                keys.join(", ")
            ))
        }
        Json::Object(pairs) => {
            for (op, args) in pairs {
                if !KNOWN_OPERATORS.contains(op.as_str()) {
                    return Err(format!("targeting uses unknown operator \"{op}\""));
                }
                check_operators(args)?;
            }
            Ok(())
        }
        Json::Array(items) => items.iter().try_for_each(check_operators),
        _ => Ok(()),
    }
}

/// Expands, checks and compiles one flag's targeting rule.
pub(crate) fn compile_targeting(
    rule: &Json,
    evaluators: &[(String, Json)],
) -> Result<Logic, String> {
    let expanded = expand_refs(rule, evaluators)?;
    check_operators(&expanded)?;
    engine()
        .compile(expanded.to_logic())
        .map_err(|e| format!("targeting does not compile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Json {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn expands_nested_refs() {
        let evaluators = vec![
            ("a".to_owned(), json(r#"{"==": [{"var": "x"}, 1]}"#)),
            ("b".to_owned(), json(r#"{"and": [{"$ref": "a"}, true]}"#)),
        ];
        let out = expand_refs(
            &json(r#"{"if": [{"$ref" : "b"}, "on", "off"]}"#),
            &evaluators,
        )
        .unwrap();
        assert_eq!(
            out,
            json(r#"{"if": [{"and": [{"==": [{"var": "x"}, 1]}, true]}, "on", "off"]}"#)
        );
    }

    #[test]
    fn reports_missing_and_cyclic_refs() {
        let evaluators = vec![
            ("a".to_owned(), json(r#"{"!": {"$ref": "b"}}"#)),
            ("b".to_owned(), json(r#"{"!": {"$ref": "a"}}"#)),
        ];
        let err = expand_refs(&json(r#"{"$ref": "nope"}"#), &evaluators).unwrap_err();
        assert!(err.contains("\"nope\", which is not defined"), "{err}");
        let err = expand_refs(&json(r#"{"$ref": "a"}"#), &evaluators).unwrap_err();
        assert!(err.contains("a -> b -> a"), "{err}");
        let err = expand_refs(&json(r#"{"$ref": 3}"#), &evaluators).unwrap_err();
        assert!(err.contains("must name an evaluator"), "{err}");
    }

    #[test]
    fn bounds_exponential_expansion() {
        // Each level doubles the size: 2^30 nodes if nothing stopped it.
        let mut evaluators = vec![("e0".to_owned(), json(r#"{"var": "x"}"#))];
        for i in 1..30 {
            let body = format!(
                r#"{{"and": [{{"$ref": "e{0}"}}, {{"$ref": "e{0}"}}]}}"#,
                i - 1
            );
            evaluators.push((format!("e{i}"), json(&body)));
        }
        let err = expand_refs(&json(r#"{"$ref": "e29"}"#), &evaluators).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn rejects_unknown_operators_and_multi_key_objects() {
        let err =
            check_operators(&json(r#"{"if": [{"start_with": ["a", "b"]}, "x"]}"#)).unwrap_err();
        assert_eq!(err, "targeting uses unknown operator \"start_with\"");
        let err = check_operators(&json(r#"{"var": "a", "==": 1}"#)).unwrap_err();
        assert!(err.contains("several keys (var, ==)"), "{err}");
        for ok in [
            r#"{"fractional": [["a", 1]]}"#,
            r#"{"sem_ver": [{"var": "v"}, ">=", "1.0.0"]}"#,
            r#"{"starts_with": [{"var": "id"}, "a"]}"#,
            r#"{"ends_with": [{"var": "id"}, "z"]}"#,
            r#"{"in": ["a", {"cat": ["b", "a"]}]}"#,
            r#"{"if": [true, {}, null]}"#,
        ] {
            check_operators(&json(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn compiles_a_rule_with_refs() {
        let evaluators = vec![("is_x".to_owned(), json(r#"{"==": [{"var": "x"}, 1]}"#))];
        compile_targeting(
            &json(r#"{"if": [{"$ref": "is_x"}, "on", "off"]}"#),
            &evaluators,
        )
        .unwrap();
    }
}
