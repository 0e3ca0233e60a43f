//! Feature flags in the OpenFeature flagd format: store, evaluator and OFREP handler.
//!
//! A [`FlagStore`] is a validated, immutable set of flags read from a flagd JSON file
//! (`flags`, `$evaluators`, flag-set `metadata`). Targeting rules are JsonLogic, compiled once
//! at load time with datalogic-rs plus the flagd operators (`fractional`, `sem_ver`,
//! `starts_with`, `ends_with`). [`FlagStore::evaluate`] and [`FlagStore::resolve`] answer with
//! OpenFeature reasons and error codes; [`ofrep`] serves them over the remote protocol.
//!
//! ```
//! use serde_json::json;
//! use signalbox::flags::{FlagStore, Reason};
//!
//! let store = FlagStore::from_json(r#"{"flags": {"new-checkout": {
//!     "state": "ENABLED",
//!     "variants": {"on": true, "off": false},
//!     "defaultVariant": "off",
//!     "targeting": {"fractional": [["on", 10], ["off", 90]]}
//! }}}"#).unwrap();
//! let eval = store.resolve("new-checkout", &json!({"targetingKey": "user-42"}), false);
//! assert_eq!(eval.reason, Reason::TargetingMatch);
//! ```

mod error;
mod eval;
mod json;
mod logic;
mod model;
pub mod ofrep;
mod ops;
mod store;

pub use error::{FlagEditError, FlagFileError};
pub use eval::{ErrorCode, Evaluation, FlagValue, Reason};
pub use model::{FlagState, FlagSummary, FlagType};
pub use store::FlagStore;
