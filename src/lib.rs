//! signalbox: a terminal release cockpit for API teams, and the gateway engine behind it.
//!
//! Pure domain types live in [`domain`]; everything that does I/O sits at the edges
//! ([`gateway`], [`metrics`], [`cli`]).

pub mod cli;
pub mod control;
pub mod domain;
pub mod flags;
pub mod gateway;
pub mod k8s;
pub mod metrics;
pub mod sandbox;
pub mod tui;
pub mod walk;
