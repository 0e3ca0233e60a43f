//! One file per subcommand. `main.rs` only parses arguments and dispatches here.

pub mod config;
pub mod ctl;
pub mod flags;
pub mod gateway;
pub mod import_kong;
pub mod sandbox;

use tracing_subscriber::EnvFilter;

use crate::gateway::config::LogFormat;

/// Logs go to stderr. `RUST_LOG` wins over the configured level.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        );
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
