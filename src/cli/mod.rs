//! One file per subcommand. `main.rs` only parses arguments and dispatches here.

pub mod config;
pub mod ctl;
pub mod flags;
pub mod gateway;
pub mod import_kong;
pub mod sandbox;
pub mod walk;

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

/// `signalbox` with no subcommand: the cockpit on the environments file, or an explanation
/// of how to get one.
pub fn cockpit(config: Option<&std::path::Path>, opts: crate::tui::TuiOptions) -> i32 {
    let Some(path) = crate::control::envfile::find(config) else {
        // Not a cockpit: exit 1, so `signalbox && …` in a script does not read it as one.
        eprintln!(
            "signalbox: no environments file yet.\n\n\
             Try it on your machine first: `signalbox sandbox` starts dev, stage and prod with live\n\
             traffic and writes a signalbox.toml for them.\n\n\
             For real environments, write ./signalbox.toml (or $XDG_CONFIG_HOME/signalbox/config.toml);\n\
             examples/signalbox.toml shows every field. Then run `signalbox` again, or\n\
             `signalbox --config FILE`."
        );
        return 1;
    };
    let cfg = match crate::control::envfile::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("signalbox: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signalbox: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(crate::tui::run(cfg, opts)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signalbox: {e:#}");
            1
        }
    }
}
