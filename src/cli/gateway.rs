//! `signalbox gateway --config FILE [--listen ADDR] [--admin-listen ADDR] [--state-dir DIR]`
//! `signalbox gateway --config-map NAMESPACE/NAME [--config-key KEY] ...` (in a cluster)

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::gateway::{GatewayOptions, RunningGateway, StartError, config, watch};

#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "config_map"])))]
pub struct GatewayArgs {
    /// Gateway config (YAML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Take the config (and the flag file it names) from this ConfigMap, NAMESPACE/NAME,
    /// and reload whenever it changes. In a pod this uses the service account.
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "config")]
    pub config_map: Option<crate::k8s::config_source::ConfigMapRef>,
    /// The ConfigMap key holding the gateway config.
    #[arg(long, default_value = "config.yaml", requires = "config_map")]
    pub config_key: String,
    /// Kubeconfig for --config-map (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, requires = "config_map")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context for --config-map.
    #[arg(long, requires = "config_map")]
    pub context: Option<String>,
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
    // From a ConfigMap: its files are written to a directory the gateway reads like any
    // config file; the ConfigMap watch replaces the file watch.
    let mut from_cm = None;
    let config_path = match (&args.config, &args.config_map) {
        (Some(p), _) => p.clone(),
        (None, Some(cm)) => {
            let client = match kube_client(&args).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("signalbox gateway: {cm}: {e}");
                    return Ok(1);
                }
            };
            let dir = match &args.state_dir {
                Some(d) => d.join("configmap"),
                None => {
                    std::env::temp_dir().join(format!("signalbox-configmap-{}", std::process::id()))
                }
            };
            std::fs::create_dir_all(&dir)?;
            match crate::k8s::config_source::fetch(&client, cm, &args.config_key, &dir).await {
                Ok(p) => {
                    from_cm = Some((client, cm.clone(), dir));
                    p
                }
                Err(e) => {
                    eprintln!("signalbox gateway: {e}");
                    return Ok(1);
                }
            }
        }
        (None, None) => {
            eprintln!("signalbox gateway: pass --config FILE or --config-map NAMESPACE/NAME");
            return Ok(1);
        }
    };
    // Log with the file's settings before anything else can go wrong.
    let log = config::load_file(&config_path)
        .map(|l| l.config.log)
        .unwrap_or_default();
    super::init_logging(&log.level, log.format);

    let gw = match RunningGateway::start(GatewayOptions {
        config: config_path.clone(),
        listen: args.listen,
        admin_listen: args.admin_listen,
        state_dir: args.state_dir.clone(),
        watch_config: from_cm.is_none(),
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
    if let Some((client, cm, dir)) = from_cm {
        tracing::info!(%cm, dir = %dir.display(), "following the configmap");
        tokio::spawn(crate::k8s::config_source::follow(
            client,
            cm,
            dir,
            gw.state.clone(),
            gw.shutdown_token(),
        ));
    }
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

async fn kube_client(args: &GatewayArgs) -> Result<kube::Client, String> {
    let source = match &args.kubeconfig {
        Some(p) => crate::k8s::client::KubeconfigSource::File(p.clone()),
        None => crate::k8s::client::KubeconfigSource::Default,
    };
    let ns = args
        .config_map
        .as_ref()
        .map(|c| c.namespace.clone())
        .unwrap_or_default();
    crate::k8s::KubeBackend::new(source, args.context.clone(), ns, Default::default())
        .client()
        .await
        .map_err(|e| e.to_string())
}
