//! The data plane: an HTTP API gateway on tokio and hyper.
//!
//! [`RunningGateway::start`] brings one gateway up (client listener, admin listener,
//! health checks, config watching); the CLI, the sandbox and the tests all use it.

pub mod admin;
pub mod config;
pub mod error;
pub mod filters;
pub mod h1;
pub mod h1_server;
pub mod head_timeout;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod revisions;
pub mod router;
pub mod secrets;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod state;
pub mod status;
pub mod upstream;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::config::ConfigError;
use self::state::{GatewayState, Overrides, StartOptions};

#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    pub config: PathBuf,
    /// Overrides the config's `listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides the config's `admin.listen`.
    pub admin_listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    /// Reload when the config file changes.
    pub watch_config: bool,
    /// Apply the config file even when the state dir holds a later revision.
    pub reset_to_file: bool,
}

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

pub struct RunningGateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<GatewayState>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    pub async fn start(opts: GatewayOptions) -> Result<Self, StartError> {
        let loaded = config::load_file(&opts.config)?;
        let state = GatewayState::start(
            loaded.config,
            StartOptions {
                source: Some(opts.config.clone()),
                text: Some(loaded.text),
                overrides: Overrides {
                    listen: opts.listen,
                    admin_listen: opts.admin_listen,
                },
                state_dir: opts.state_dir.clone(),
                reset_to_file: opts.reset_to_file,
            },
        )?;
        Self::serve(state, opts).await
    }

    async fn serve(state: Arc<GatewayState>, opts: GatewayOptions) -> Result<Self, StartError> {
        let snap = state.snapshot();
        let listen = snap.config.listen;
        let admin_listen = snap.config.admin.listen;
        let token = admin_token(&snap.config.admin)?;
        if token.is_none() && !admin_listen.ip().is_loopback() {
            return Err(StartError::Other(anyhow::anyhow!(
                "refusing to serve the admin API on {admin_listen} without a token: set admin.token_env or admin.token_file, or listen on loopback"
            )));
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (gateway)"))?;
        let admin_listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
        let addr = listener.local_addr().context("listener address")?;
        let admin_addr = admin_listener
            .local_addr()
            .context("admin listener address")?;
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let workers = server::Workers::start(&state, &snap.config.server)
            .context("cannot start the serving threads")?;
        tasks.push(tokio::spawn(server::serve(
            listener,
            workers,
            shutdown.clone(),
        )));
        let admin = admin::router(state.clone(), token);
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(admin_listener, admin)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "admin listener failed");
            }
        }));
        if opts.watch_config {
            tasks.push(tokio::spawn(watch::watch_config(
                state.clone(),
                shutdown.clone(),
            )));
        }
        tracing::info!(%addr, %admin_addr, config_hash = %snap.hash, "gateway listening");
        Ok(Self {
            addr,
            admin_addr,
            state,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, drains in-flight requests (up to `server.shutdown_timeout`), stops
    /// health checks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.state.stop();
    }

    /// A token that, when cancelled, shuts the gateway down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

fn admin_token(a: &config::AdminConfig) -> Result<Option<crate::domain::Secret>, StartError> {
    let r = match (&a.token_env, &a.token_file) {
        (Some(e), _) => config::SecretRef::Env(e.clone()),
        (None, Some(f)) => config::SecretRef::File(f.clone()),
        (None, None) => return Ok(None),
    };
    secrets::resolve(&r)
        .map(Some)
        .map_err(|e| StartError::Other(anyhow::anyhow!("admin token: {e}")))
}
