//! Pure domain types shared by every part of signalbox. Nothing in here does I/O.

pub mod action;
pub mod kube;
pub mod metrics;
pub mod secret;
pub mod status;

pub use action::{Action, Check, FaultSpec, FlagState, Outcome};
pub use secret::Secret;
pub use status::{Change, GatewayStatus, RevisionInfo, RouteStatus};
