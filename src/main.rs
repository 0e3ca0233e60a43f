use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signalbox::cli;

/// signalbox: the release cockpit for API teams, and the gateway behind it.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Environments file (default: ./signalbox.toml, then $XDG_CONFIG_HOME/signalbox/config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Environment to open on.
    #[arg(long)]
    env: Option<String>,
    /// Colour theme (NO_COLOR forces monochrome).
    #[arg(long)]
    theme: Option<String>,
    /// Remove every key that changes anything.
    #[arg(long)]
    read_only: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Three local environments with live traffic: the place to start.
    Sandbox(cli::sandbox::SandboxArgs),
    /// Run the API gateway.
    Gateway(cli::gateway::GatewayArgs),
    /// Check or convert gateway configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and change environments from scripts and pipelines.
    Ctl(cli::ctl::CtlArgs),
    /// Evaluate feature flags (OpenFeature flagd format).
    #[command(subcommand)]
    Flags(cli::flags::FlagsCommand),
    /// Walk a release runbook: steps, metric gates, automatic rollback, a release note.
    Walk(cli::walk::WalkArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a gateway config: exit 0, or exit 1 with FILE:LINE:COL: field.path: message.
    Check { file: PathBuf },
    /// Convert a Kong declarative config (3.0) to native YAML on stdout.
    ImportKong {
        file: PathBuf,
        /// Write inline credentials here as NAME=value lines (mode 0600); else their names go to stderr.
        #[arg(long)]
        secrets_out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap exits 2, but 2 is "refused" for ctl and "rolled back" for walk: a usage
        // error is an error (1). Help and --version still exit 0.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let Some(command) = cli.command else {
        let opts = signalbox::tui::TuiOptions {
            env: cli.env,
            read_only: cli.read_only,
            theme: cli.theme,
            walk: None,
        };
        return ExitCode::from(
            u8::try_from(cli::cockpit(cli.config.as_deref(), opts)).unwrap_or(1),
        );
    };
    let code = match command {
        Command::Config(ConfigCommand::Check { file }) => cli::config::check(&file),
        Command::Config(ConfigCommand::ImportKong { file, secrets_out }) => {
            match cli::import_kong::run_import(&file, secrets_out.as_deref()) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("signalbox config import-kong: {e:#}");
                    1
                }
            }
        }
        Command::Sandbox(args) => run_async(cli::sandbox::run(args)),
        Command::Gateway(args) => run_async(cli::gateway::run(args)),
        Command::Flags(cmd) => match cli::flags::run(cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("signalbox flags: {e:#}");
                1
            }
        },
        Command::Ctl(args) => run_async(async { Ok(cli::ctl::run(args).await) }),
        Command::Walk(args) => run_async(async { Ok(cli::walk::run(args).await) }),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signalbox: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signalbox: {e:#}");
            1
        }
    }
}
