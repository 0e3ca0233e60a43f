//! `signalbox gateway --config FILE [--listen ADDR] [--admin-listen ADDR] [--state-dir DIR]`

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::gateway::{GatewayOptions, RunningGateway, StartError, config, watch};

#[derive(Clone, Debug, clap::Args)]
pub struct GatewayArgs {
    /// Gateway config (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// Client listener; overrides the config's `listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listener; overrides the config's `admin.listen`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Where revisions and the audit journal are kept.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Serve the config file even when the state dir holds a later revision.
    #[arg(long)]
    pub reset_to_file: bool,
}

/// Runs until SIGTERM or SIGINT, then drains and exits 0. SIGHUP reloads the config.
pub async fn run(args: GatewayArgs) -> anyhow::Result<i32> {
    // Log with the file's settings before anything else can go wrong.
    let log = config::load_file(&args.config)
        .map(|l| l.config.log)
        .unwrap_or_default();
    super::init_logging(&log.level, log.format);

    let gw = match RunningGateway::start(GatewayOptions {
        config: args.config.clone(),
        listen: args.listen,
        admin_listen: args.admin_listen,
        state_dir: args.state_dir.clone(),
        watch_config: true,
        reset_to_file: args.reset_to_file,
    })
    .await
    {
        Ok(gw) => gw,
        Err(StartError::Config(e)) => {
            eprintln!("{e}");
            return Ok(1);
        }
        Err(e) => {
            eprintln!("signalbox gateway: {e}");
            return Ok(1);
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => watch::reload(&gw.state, "SIGHUP"),
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    gw.shutdown().await;
    Ok(0)
}
