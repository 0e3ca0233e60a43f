//! The running config: the current snapshot behind an atomic pointer, and how a new
//! config replaces it (validate → compile → swap, or keep the old one and say why).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::config::{self, ConfigError, ConfigIssue, GatewayConfig};
use super::snapshot::{self, Shared, Snapshot};

pub struct GatewayState {
    current: ArcSwap<Snapshot>,
    pub shared: Arc<Shared>,
    /// The config file, for reloads on SIGHUP or change.
    pub source: Option<PathBuf>,
    generation: AtomicU64,
    /// Serialises config changes; the request path never takes it.
    change: std::sync::Mutex<()>,
}

impl GatewayState {
    /// Compiles the first config. Errors are located in `text` when given.
    pub fn new(
        cfg: GatewayConfig,
        source: Option<PathBuf>,
        text: Option<&str>,
    ) -> Result<Arc<Self>, ConfigError> {
        let shared = Shared::new();
        let snap = compile(cfg, &shared, source.as_ref(), text)?;
        let state = Arc::new(Self {
            current: ArcSwap::from_pointee(snap),
            shared,
            source,
            generation: AtomicU64::new(1),
            change: std::sync::Mutex::new(()),
        });
        state.after_swap();
        Ok(state)
    }

    /// The snapshot to serve a request from. Cheap: one atomic increment.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How many configs have been applied (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Validates, compiles and swaps in `cfg`. On error the running config is untouched.
    pub fn apply(
        &self,
        cfg: GatewayConfig,
        text: Option<&str>,
    ) -> Result<Arc<Snapshot>, ConfigError> {
        let _guard = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let issues = config::validate(&cfg);
        if !issues.is_empty() {
            return Err(locate(issues, self.source.as_ref(), text));
        }
        let snap = Arc::new(compile(cfg, &self.shared, self.source.as_ref(), text)?);
        self.current.store(snap.clone());
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.after_swap();
        Ok(snap)
    }

    /// Re-reads the config file. A bad file leaves the running config as it was.
    pub fn reload_from_file(&self) -> Result<Arc<Snapshot>, ConfigError> {
        let Some(path) = &self.source else {
            return Err(ConfigError(vec![ConfigIssue {
                file: "<none>".into(),
                line: 1,
                col: 1,
                path: String::new(),
                message: "this gateway was not started from a file".into(),
            }]));
        };
        let loaded = config::load_file(path)?;
        self.apply(loaded.config, Some(&loaded.text))
    }

    fn after_swap(&self) {
        let snap = self.snapshot();
        self.shared
            .targets
            .sync_health_checks(&snap.config.upstreams);
        let names: std::collections::HashSet<String> =
            snap.config.routes.iter().map(|r| r.name.clone()).collect();
        self.shared.limiters.sweep(&|r| names.contains(r));
    }

    pub fn stop(&self) {
        self.shared.targets.stop_health_checks();
    }
}

fn compile(
    cfg: GatewayConfig,
    shared: &Shared,
    source: Option<&PathBuf>,
    text: Option<&str>,
) -> Result<Snapshot, ConfigError> {
    snapshot::compile(Arc::new(cfg), shared)
        .map_err(|(path, msg)| locate(vec![(path, msg)], source, text))
}

fn locate(
    issues: Vec<(String, String)>,
    source: Option<&PathBuf>,
    text: Option<&str>,
) -> ConfigError {
    let file = source.map_or_else(|| "<config>".to_string(), |p| p.display().to_string());
    let positions = text.map(config::locate_paths).unwrap_or_default();
    ConfigError(
        issues
            .into_iter()
            .map(|(path, message)| {
                let (line, col) = config::position_of(&positions, &path);
                ConfigIssue {
                    file: file.clone(),
                    line,
                    col,
                    path,
                    message,
                }
            })
            .collect(),
    )
}
