//! `signalbox flags`: work with flagd flag files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use crate::flags::FlagStore;

#[derive(Debug, clap::Subcommand)]
pub enum FlagsCommand {
    /// Evaluate one flag and print {"value","variant","reason"} as JSON, plus "errorCode" and
    /// "errorMessage" on error and "metadata" when there is any.
    Eval {
        /// flagd flag file (JSON).
        file: PathBuf,
        /// Flag key.
        key: String,
        /// Evaluation context, a JSON object, e.g. '{"targetingKey":"user-1","email":"a@b.c"}'.
        #[arg(long)]
        context: Option<String>,
    },
}

/// Runs a `flags` subcommand and returns the process exit code: 0 when the flag evaluated,
/// 1 when the evaluation result is an error (unknown flag, broken targeting, bad context).
/// An unreadable or invalid flag file, or `--context` that is not JSON, is an `Err`.
pub fn run(cmd: FlagsCommand) -> anyhow::Result<i32> {
    match cmd {
        FlagsCommand::Eval { file, key, context } => {
            let (output, code) = eval(&file, &key, context.as_deref())?;
            println!("{output}");
            Ok(code)
        }
    }
}

/// The JSON that `flags eval` prints, and its exit code.
pub fn eval(file: &Path, key: &str, context: Option<&str>) -> anyhow::Result<(Value, i32)> {
    // Lenient, like flagd: one flag's broken targeting should not stop evaluating the others.
    let store = FlagStore::from_file_lenient(file)?;
    for problem in store.problems() {
        eprintln!("warning: {problem}");
    }
    let ctx = match context {
        None => Value::Null,
        Some(text) => {
            let ctx: Value = serde_json::from_str(text).context("--context is not valid JSON")?;
            if !ctx.is_object() {
                bail!("--context must be a JSON object, e.g. '{{\"targetingKey\":\"user-1\"}}'");
            }
            ctx
        }
    };
    let eval = store.evaluate(key, &ctx);
    let mut out = Map::new();
    out.insert("value".to_owned(), eval.value);
    out.insert(
        "variant".to_owned(),
        eval.variant.map_or(Value::Null, Value::String),
    );
    out.insert("reason".to_owned(), Value::from(eval.reason.as_str()));
    if let Some(code) = eval.error_code {
        out.insert("errorCode".to_owned(), Value::from(code.as_str()));
    }
    if let Some(message) = eval.error_message {
        out.insert("errorMessage".to_owned(), Value::String(message));
    }
    if !eval.metadata.is_empty() {
        out.insert("metadata".to_owned(), Value::Object(eval.metadata));
    }
    let code = i32::from(eval.error_code.is_some());
    Ok((Value::Object(out), code))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flag_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            r#"{"flags": {
                "checkout": {"variants": {"new": "v2", "old": "v1"}, "defaultVariant": "old",
                             "targeting": {"if": [{"==": [{"var": "targetingKey"}, "qa"]}, "new"]},
                             "metadata": {"owner": "payments"}},
                "plain": {"variants": {"on": true}, "defaultVariant": "on"},
                "broken": {"variants": {"on": true}, "targeting": {"if": [{"$ref": "x"}, "on"]}}
            }}"#,
        )
        .unwrap();
        file
    }

    #[test]
    fn prints_value_variant_reason_and_metadata() {
        let file = flag_file();
        let (out, code) = eval(file.path(), "checkout", Some(r#"{"targetingKey": "qa"}"#)).unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            out,
            json!({"value": "v2", "variant": "new", "reason": "TARGETING_MATCH",
                   "metadata": {"owner": "payments"}})
        );
        let (out, code) = eval(file.path(), "plain", None).unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            out,
            json!({"value": true, "variant": "on", "reason": "STATIC"})
        );
    }

    #[test]
    fn errors_exit_1_with_code_and_message() {
        let file = flag_file();
        let (out, code) = eval(file.path(), "nope", None).unwrap();
        assert_eq!(code, 1);
        assert_eq!(
            out,
            json!({"value": null, "variant": null, "reason": "ERROR",
                   "errorCode": "FLAG_NOT_FOUND", "errorMessage": "flag \"nope\" not found"})
        );
        let (out, code) = eval(file.path(), "broken", None).unwrap();
        assert_eq!(code, 1);
        assert_eq!(out["errorCode"], "PARSE_ERROR");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let file = flag_file();
        let err = eval(file.path(), "plain", Some("{oops")).unwrap_err();
        assert!(
            err.to_string().contains("--context is not valid JSON"),
            "{err:#}"
        );
        let err = eval(file.path(), "plain", Some("[1]")).unwrap_err();
        assert!(
            err.to_string().contains("--context must be a JSON object"),
            "{err:#}"
        );
        let err = eval(Path::new("/nonexistent/flags.json"), "plain", None).unwrap_err();
        assert!(err.to_string().contains("cannot read flag file"), "{err:#}");
        // As printed (with its causes): the OS error once, not twice.
        let shown = format!("{err:#}");
        assert_eq!(
            shown.matches("No such file or directory").count(),
            1,
            "{shown}"
        );
    }

    #[test]
    fn run_returns_the_exit_code() {
        let file = flag_file();
        let cmd = |key: &str| FlagsCommand::Eval {
            file: file.path().to_owned(),
            key: key.to_owned(),
            context: None,
        };
        assert_eq!(run(cmd("plain")).unwrap(), 0);
        assert_eq!(run(cmd("nope")).unwrap(), 1);
    }
}
