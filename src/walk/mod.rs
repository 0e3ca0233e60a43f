//! Release walkthroughs: a runbook (YAML) stepped through by an operator or run headless
//! in CI, with metric gates that roll a bad release back on their own.
//!
//! - [`runbook`]: the format and its validation (`signalbox walk RUNBOOK --check`).
//! - [`machine`]: the pure state machine and gate evaluation.
//! - [`engine`]: the I/O edge; every change goes through `control`.
//! - [`store`]: progress saved (fsynced) after every step, for resume and abort.
//! - [`note`]: the Markdown release note and the webhook message.
//! - [`channel`]: an operator over channels, for driving a walkthrough from the cockpit.

pub mod channel;
pub mod engine;
pub mod machine;
pub mod note;
pub mod runbook;
pub mod start;
pub mod store;

pub use channel::{ChannelOperator, WalkUpdate};
pub use engine::{Confirm, Engine, EngineOptions, Operator, RunEnd};
pub use machine::{Cause, Decision, PauseKind, WalkOutcome, WalkState};
pub use runbook::Runbook;
