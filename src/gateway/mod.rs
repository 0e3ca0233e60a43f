//! The data plane: an HTTP API gateway on tokio and hyper.

pub mod config;
pub mod filters;
pub mod secrets;
