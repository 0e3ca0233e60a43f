//! The cockpit: one glance at what is live where and whether it is healthy, and a few
//! keystrokes to move traffic safely. [`app`] is the pure state machine, [`views`] draw it,
//! [`run`] is the event loop with the terminal and the backends.

pub mod app;
pub mod diff;
pub mod keymap;
pub mod run;
pub mod theme;
pub mod views;

pub use run::{TuiOptions, run};
