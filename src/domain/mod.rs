//! Pure domain types shared by every part of signalbox. Nothing in here does I/O.

pub mod secret;

pub use secret::Secret;
