//! Pure domain types shared by every part of signalbox. Nothing in here does I/O.

pub mod metrics;
pub mod secret;

pub use secret::Secret;
