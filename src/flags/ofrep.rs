//! OpenFeature Remote Evaluation Protocol (OFREP) handlers, without the HTTP server.
//!
//! `POST /ofrep/v1/evaluate/flags/{key}` maps to [`evaluate_one`] and
//! `POST /ofrep/v1/evaluate/flags` to [`evaluate_all`]; the caller mounts them and writes the
//! returned status and JSON body. The request body is `{"context": {...}}`; an empty body
//! means an empty context.
//!
//! When the caller's code default applies (a disabled flag, or no default variant) the success
//! response carries no `value` and no `variant`, as OFREP's "code default" response does.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::eval::{ErrorCode, Evaluation, check_context, evaluate_flag};
use super::model::FlagState;
use super::store::FlagStore;

/// Evaluates one flag: 200 with `{key, value, variant, reason, metadata}`; 404 with
/// `{key, errorCode: "FLAG_NOT_FOUND", errorDetails}`; 400 with `{key, errorCode,
/// errorDetails}` for a bad request body or context and for evaluation errors.
pub fn evaluate_one(store: &FlagStore, key: &str, body: &[u8]) -> (StatusCode, Value) {
    let ctx = match read_context(body) {
        Ok(ctx) => ctx,
        Err(details) => {
            return (
                StatusCode::BAD_REQUEST,
                failure(key, ErrorCode::InvalidContext, &details),
            );
        }
    };
    let eval = store.evaluate(key, &ctx);
    match eval.error_code {
        None => (StatusCode::OK, success(key, eval)),
        Some(code) => {
            let status = if code == ErrorCode::FlagNotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            let details = eval.error_message.unwrap_or_default();
            (status, failure(key, code, &details))
        }
    }
}

/// Evaluates every enabled flag: 200 with `{"flags": [...]}`, one success or failure object per
/// flag (as in [`evaluate_one`]), plus the flag set's `metadata` when it has any. Disabled flags
/// are left out, as flagd does. 400 with `{errorCode, errorDetails}` for a bad body or context.
pub fn evaluate_all(store: &FlagStore, body: &[u8]) -> (StatusCode, Value) {
    let ctx = match read_context(body) {
        Ok(ctx) => ctx,
        Err(details) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"errorCode": ErrorCode::InvalidContext.as_str(), "errorDetails": details}),
            );
        }
    };
    let flags: Vec<Value> = store
        .flags
        .iter()
        .filter(|flag| flag.state == FlagState::Enabled)
        .map(|flag| {
            let eval = evaluate_flag(flag, &ctx);
            match eval.error_code {
                None => success(&flag.key, eval),
                Some(code) => failure(&flag.key, code, eval.error_message.as_deref().unwrap_or("")),
            }
        })
        .collect();
    let mut body = Map::new();
    body.insert("flags".to_owned(), Value::Array(flags));
    if !store.metadata().is_empty() {
        body.insert(
            "metadata".to_owned(),
            Value::Object(store.metadata().clone()),
        );
    }
    (StatusCode::OK, Value::Object(body))
}

/// The `context` of a request body, checked as evaluation would check it, so that a bad
/// context fails the whole request rather than each flag of a bulk evaluation.
fn read_context(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let ctx = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut request)) => request.remove("context").unwrap_or(Value::Null),
        Ok(_) => {
            return Err(
                "the request body must be a JSON object with a \"context\" field".to_owned(),
            );
        }
        Err(e) => return Err(format!("the request body is not valid JSON: {e}")),
    };
    check_context(&ctx)?;
    Ok(ctx)
}

fn success(key: &str, eval: Evaluation) -> Value {
    let mut out = Map::new();
    out.insert("key".to_owned(), Value::from(key));
    if let Some(variant) = eval.variant {
        out.insert("value".to_owned(), eval.value);
        out.insert("variant".to_owned(), Value::String(variant));
    }
    out.insert("reason".to_owned(), Value::from(eval.reason.as_str()));
    out.insert("metadata".to_owned(), Value::Object(eval.metadata));
    Value::Object(out)
}

fn failure(key: &str, code: ErrorCode, details: &str) -> Value {
    json!({"key": key, "errorCode": code.as_str(), "errorDetails": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> FlagStore {
        FlagStore::from_json_lenient(
            r#"{
              "flags": {
                "greeting": {"variants": {"hi": "hello", "yo": "yo!"}, "defaultVariant": "hi",
                             "targeting": {"if": [{"==": [{"var": "targetingKey"}, "bob"]}, "yo"]},
                             "metadata": {"team": "web"}},
                "dark": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
                "deferred": {"variants": {"a": 1, "b": 2}},
                "broken": {"variants": {"a": 1}, "targeting": {"if": [{"$ref": "gone"}, "a"]}}
              },
              "metadata": {"flagSetId": "demo"}
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn single_success() {
        let (status, body) = evaluate_one(
            &store(),
            "greeting",
            br#"{"context": {"targetingKey": "bob"}}"#,
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"key": "greeting", "value": "yo!", "variant": "yo", "reason": "TARGETING_MATCH",
                   "metadata": {"flagSetId": "demo", "team": "web"}})
        );
        let (status, body) = evaluate_one(&store(), "greeting", b"");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["reason"], "DEFAULT");
        assert_eq!(body["value"], "hello");
    }

    #[test]
    fn code_default_has_no_value() {
        for (key, reason) in [("dark", "DISABLED"), ("deferred", "DEFAULT")] {
            let (status, body) = evaluate_one(&store(), key, b"{}");
            assert_eq!(status, StatusCode::OK, "{key}");
            assert_eq!(
                body,
                json!({"key": key, "reason": reason, "metadata": {"flagSetId": "demo"}}),
                "{key}"
            );
        }
    }

    #[test]
    fn single_errors() {
        let (status, body) = evaluate_one(&store(), "nope", b"{}");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag \"nope\" not found"})
        );

        let (status, body) = evaluate_one(&store(), "broken", b"{}");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errorCode"], "PARSE_ERROR");
        assert_eq!(body["key"], "broken");

        for bad in [
            &b"{not json"[..],
            b"[1]",
            br#"{"context": 5}"#,
            br#"{"context": {"targetingKey": 1}}"#,
        ] {
            let (status, body) = evaluate_one(&store(), "greeting", bad);
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(body["errorCode"], "INVALID_CONTEXT");
            assert_eq!(body["key"], "greeting");
            assert!(body["errorDetails"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }

    #[test]
    fn bulk() {
        let (status, body) = evaluate_all(&store(), br#"{"context": {"targetingKey": "amy"}}"#);
        assert_eq!(status, StatusCode::OK);
        let broken_details =
            "targeting refers to evaluator \"gone\", which is not defined in $evaluators";
        assert_eq!(
            body,
            json!({
                "flags": [
                    {"key": "greeting", "value": "hello", "variant": "hi", "reason": "DEFAULT",
                     "metadata": {"flagSetId": "demo", "team": "web"}},
                    {"key": "deferred", "reason": "DEFAULT", "metadata": {"flagSetId": "demo"}},
                    {"key": "broken", "errorCode": "PARSE_ERROR", "errorDetails": broken_details}
                ],
                "metadata": {"flagSetId": "demo"}
            })
        );
        for bad in [&b"nope"[..], br#"{"context": {"targetingKey": false}}"#] {
            let (status, body) = evaluate_all(&store(), bad);
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(body["errorCode"], "INVALID_CONTEXT");
            assert!(body.get("key").is_none());
        }
    }
}
