//! Errors from loading and editing flag files.

use std::path::PathBuf;

/// Why a flag file was rejected. The message names the flag (or evaluator) and the problem, so
/// it can be shown to an operator as is.
#[derive(Debug, thiserror::Error)]
pub enum FlagFileError {
    // The cause is in the message, and not also a `source`: `{:#}` would print it twice.
    #[error("cannot read flag file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not JSON at all, or a duplicate key. `message` carries serde_json's line and column.
    #[error("invalid JSON: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem with the file's top-level shape, e.g. `"flags"` missing.
    #[error("{0}")]
    Structure(String),
    #[error("flag \"{key}\": {problem}")]
    Flag { key: String, problem: String },
    #[error("evaluator \"{name}\": {problem}")]
    Evaluator { name: String, problem: String },
    /// Any of the above, in the named file.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<FlagFileError>,
    },
}

impl FlagFileError {
    pub(crate) fn flag(key: &str, problem: impl Into<String>) -> Self {
        FlagFileError::Flag {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

impl From<serde_json::Error> for FlagFileError {
    fn from(e: serde_json::Error) -> Self {
        FlagFileError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        }
    }
}

/// Why a run-time change to a store was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagEditError {
    #[error("flag \"{0}\" not found")]
    UnknownFlag(String),
    #[error("flag \"{flag}\": variant \"{variant}\" is not one of its variants ({variants})")]
    UnknownVariant {
        flag: String,
        variant: String,
        /// The flag's variants, comma separated, in file order.
        variants: String,
    },
}
