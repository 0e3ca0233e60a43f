//! The running config: the current snapshot behind an atomic pointer, the revision
//! history, and the one way a change gets in (validate → compile → persist → swap; on any
//! error the running config is untouched).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::config::{self, ConfigError, ConfigIssue, FlagsSource, GatewayConfig};
use super::revisions::{RevisionRecord, RevisionStore};
use super::snapshot::{self, Shared, Snapshot};
use crate::domain::{Change, FlagState, RevisionInfo};
use crate::flags::FlagStore;

/// What a change asks for.
#[derive(Clone, Debug)]
pub enum ChangeKind {
    /// Read the config file again.
    Reload,
    /// A whole new config (admin API); `text` locates errors.
    Replace {
        config: Box<GatewayConfig>,
        text: Option<String>,
    },
    SetSplit {
        route: String,
        weights: BTreeMap<String, u32>,
    },
    Flip {
        route: String,
        to: Option<String>,
    },
    SetFlag {
        key: String,
        state: Option<FlagState>,
        variant: Option<String>,
    },
    Rollback {
        to: Option<u64>,
    },
    Rollforward,
}

#[derive(Clone, Debug)]
pub struct ChangeRequest {
    pub actor: String,
    /// The revision the caller based the change on; a different head is a conflict.
    pub if_match: Option<u64>,
    pub kind: ChangeKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(
        "the gateway is at revision {current}, not {expected}: someone else changed it; reload and retry"
    )]
    Conflict { current: u64, expected: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot persist the revision: {0}")]
    Storage(String),
}

/// What a reload from the config file did.
pub enum Reloaded {
    Applied(RevisionInfo, Arc<Snapshot>),
    /// The file is what is running: no new revision (the one still running is given).
    Unchanged(u64),
}

/// Addresses given on the command line; they win over every config that comes later.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

impl Overrides {
    fn apply(&self, c: &mut GatewayConfig) {
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(a) = self.admin_listen {
            c.admin.listen = a;
        }
    }
}

pub struct GatewayState {
    current: ArcSwap<Snapshot>,
    pub shared: Arc<Shared>,
    /// The config file, for reloads on SIGHUP or change.
    pub source: Option<PathBuf>,
    overrides: Overrides,
    /// Serialises changes and guards the history; the request path never takes it.
    revisions: Mutex<RevisionStore>,
}

pub struct StartOptions {
    pub source: Option<PathBuf>,
    pub text: Option<String>,
    pub overrides: Overrides,
    pub state_dir: Option<PathBuf>,
    /// Apply the file even when the state dir holds a later revision.
    pub reset_to_file: bool,
}

impl GatewayState {
    /// Starts from the state dir's last revision when there is one, else from `cfg`.
    pub fn start(mut cfg: GatewayConfig, opts: StartOptions) -> Result<Arc<Self>, ConfigError> {
        opts.overrides.apply(&mut cfg);
        let store = RevisionStore::open(opts.state_dir.as_deref())
            .map_err(|e| single(&opts.source, e.to_string()))?;
        let shared = Shared::new(cfg.server.worker_count());
        let source_name = opts
            .source
            .as_ref()
            .map_or_else(|| "<config>".into(), |p| p.display().to_string());
        let file_hash = snapshot::config_hash(&cfg);
        let base_dir = opts
            .source
            .as_ref()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf());
        let (config, pending, flags) = match store.head() {
            Some(head) if !opts.reset_to_file => {
                if head.info.hash != file_hash {
                    tracing::warn!(
                        revision = head.info.number,
                        file = %source_name,
                        "the config file differs from the last applied revision; serving the revision (restart with --reset-to-file, or reload, to apply the file)"
                    );
                }
                let mut c = head.config.clone();
                opts.overrides.apply(&mut c);
                let flags =
                    flags_from_doc(head.flags.as_ref()).map_err(|e| single(&opts.source, e))?;
                (c, None, flags)
            }
            prior => {
                let change = if prior.is_some() {
                    Change::Reload {
                        source: source_name.clone(),
                    }
                } else {
                    Change::Start {
                        source: source_name.clone(),
                    }
                };
                let description = if prior.is_some() {
                    format!("reset to {source_name}")
                } else {
                    format!("start from {source_name}")
                };
                let flags = load_flags(&cfg, base_dir.as_deref()).map_err(|(p, m)| {
                    locate(vec![(p, m)], opts.source.as_ref(), opts.text.as_deref())
                })?;
                (cfg, Some((change, description)), flags)
            }
        };
        let mut store = store;
        let mut snap = compile(
            config,
            &shared,
            opts.source.as_ref(),
            opts.text.as_deref(),
            flags,
        )?;
        if let Some((change, description)) = pending {
            let record = new_record(&store, "signalbox", description, change, &snap);
            store
                .append(record)
                .map_err(|e| single(&opts.source, e.to_string()))?;
        }
        snap.revision = store.head_number();
        let state = Arc::new(Self {
            current: ArcSwap::from_pointee(snap),
            shared,
            source: opts.source,
            overrides: opts.overrides,
            revisions: Mutex::new(store),
        });
        state.after_swap();
        Ok(state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RevisionStore> {
        self.revisions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot to serve a request from. Cheap: one atomic increment.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn revisions(&self) -> Vec<RevisionInfo> {
        self.lock().list()
    }

    pub fn revision(&self, n: u64) -> Option<RevisionRecord> {
        self.lock().get(n).cloned()
    }

    /// The one way anything changes the running gateway.
    pub fn change(&self, req: ChangeRequest) -> Result<(RevisionInfo, Arc<Snapshot>), ChangeError> {
        let mut store = self.lock();
        let head = store.head_number();
        if let Some(expected) = req.if_match
            && expected != head
        {
            return Err(ChangeError::Conflict {
                current: head,
                expected,
            });
        }
        let cur = self.snapshot();
        let mut text = None;
        let base_dir = self
            .source
            .as_ref()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf());
        let mut flags = cur.flags.clone();
        let mut reload_flags = false;
        let (config, change, description) = match req.kind {
            ChangeKind::Reload => {
                let path = self.source.clone().ok_or_else(|| {
                    ChangeError::Invalid("this gateway was not started from a file".into())
                })?;
                let loaded = config::load_file(&path)?;
                text = Some(loaded.text);
                let source = path.display().to_string();
                reload_flags = true;
                (
                    loaded.config,
                    Change::Reload {
                        source: source.clone(),
                    },
                    format!("reload {source}"),
                )
            }
            ChangeKind::Replace { config, text: t } => {
                text = t;
                reload_flags = true;
                (
                    *config,
                    Change::ReplaceConfig,
                    "replace the config".to_string(),
                )
            }
            ChangeKind::SetSplit { route, weights } => {
                let c = with_split(&cur.config, &route, weights.clone())?;
                let description = format!(
                    "set {route} weights to {}",
                    crate::domain::action::weights_text(&weights)
                );
                (c, Change::SetSplit { route, weights }, description)
            }
            ChangeKind::Flip { route, to } => {
                let r = cur
                    .config
                    .routes
                    .iter()
                    .find(|r| r.name == route)
                    .ok_or_else(|| ChangeError::NotFound(format!("no route {route:?}")))?;
                let target = crate::domain::status::flip_target(&r.split, to.as_deref())
                    .map_err(ChangeError::Invalid)?;
                let weights: BTreeMap<String, u32> = r
                    .split
                    .keys()
                    .map(|k| (k.clone(), if *k == target { 100 } else { 0 }))
                    .collect();
                let c = with_split(&cur.config, &route, weights.clone())?;
                (
                    c,
                    Change::SetSplit {
                        route: route.clone(),
                        weights,
                    },
                    format!("flip {route} to {target}"),
                )
            }
            ChangeKind::SetFlag {
                key,
                state,
                variant,
            } => {
                let Some(current) = &cur.flags else {
                    return Err(ChangeError::NotFound(format!(
                        "no flag {key:?}: this gateway serves no flags"
                    )));
                };
                let mut next = (**current).clone();
                if let Some(st) = state {
                    next = next.with_state(&key, st).map_err(flag_edit_error)?;
                }
                if let Some(v) = &variant {
                    next = next
                        .with_default_variant(&key, v)
                        .map_err(flag_edit_error)?;
                }
                flags = Some(Arc::new(next));
                let description = crate::domain::Action::SetFlag {
                    key: key.clone(),
                    state,
                    variant: variant.clone(),
                }
                .to_string();
                (
                    cur.config.as_ref().clone(),
                    Change::SetFlag {
                        key,
                        state,
                        variant,
                    },
                    description,
                )
            }
            ChangeKind::Rollback { to } => {
                let target = to.unwrap_or(head.saturating_sub(1));
                if target == head {
                    return Err(ChangeError::Invalid(format!(
                        "revision {target} is already the current one"
                    )));
                }
                let rec = store.get(target).ok_or_else(|| {
                    ChangeError::NotFound(format!(
                        "revision {target} is not in the history (kept: the last {})",
                        super::revisions::KEEP
                    ))
                })?;
                flags = flags_from_doc(rec.flags.as_ref()).map_err(ChangeError::Invalid)?;
                (
                    rec.config.clone(),
                    Change::Rollback {
                        to: target,
                        from: head,
                    },
                    format!("roll back to revision {target}"),
                )
            }
            ChangeKind::Rollforward => {
                let Some(Change::Rollback { from, .. }) =
                    store.head().map(|h| h.info.change.clone())
                else {
                    return Err(ChangeError::Invalid(
                        "nothing to roll forward: the current revision is not a rollback".into(),
                    ));
                };
                let rec = store.get(from).ok_or_else(|| {
                    ChangeError::NotFound(format!("revision {from} is no longer in the history"))
                })?;
                flags = flags_from_doc(rec.flags.as_ref()).map_err(ChangeError::Invalid)?;
                (
                    rec.config.clone(),
                    Change::Rollforward {
                        to: from,
                        from: head,
                    },
                    format!("roll forward to revision {from}"),
                )
            }
        };
        let mut config = config;
        self.overrides.apply(&mut config);
        if config.listen != cur.config.listen || config.admin.listen != cur.config.admin.listen {
            return Err(ChangeError::Invalid(format!(
                "listen addresses cannot change at run time (running on {} and {}); restart the gateway to move them",
                cur.config.listen, cur.config.admin.listen
            )));
        }
        // Problems are placed in the text they came from: the file, or an API request's body.
        let origin = match (&change, &text) {
            (Change::ReplaceConfig, Some(_)) => Some(PathBuf::from("<request>")),
            _ => self.source.clone(),
        };
        let issues = config::validate(&config);
        if !issues.is_empty() {
            return Err(locate(issues, origin.as_ref(), text.as_deref()).into());
        }
        if reload_flags {
            // A bad flag file rejects the whole change: the old flags stay.
            flags = load_flags(&config, base_dir.as_deref())
                .map_err(|(p, m)| locate(vec![(p, m)], origin.as_ref(), text.as_deref()))?;
        }
        let mut snap =
            snapshot::compile(Arc::new(config), &self.shared, base_dir.as_deref(), flags)
                .map_err(|(p, m)| locate(vec![(p, m)], origin.as_ref(), text.as_deref()))?;
        // A reload that finds what is already running (a save without edits, a SIGHUP) is
        // not a new revision: it would push real ones out of the history.
        if matches!(change, Change::Reload { .. })
            && snap.hash == cur.hash
            && snap.flags.as_ref().map(|f| f.to_json()) == cur.flags.as_ref().map(|f| f.to_json())
            && let Some(head) = store.head()
        {
            return Ok((head.info.clone(), cur));
        }
        let record = new_record(&store, &req.actor, description, change, &snap);
        let info = record.info.clone();
        store
            .append(record)
            .map_err(|e| ChangeError::Storage(e.to_string()))?;
        snap.revision = info.number;
        let snap = Arc::new(snap);
        self.current.store(snap.clone());
        drop(store);
        self.after_swap();
        tracing::info!(revision = info.number, actor = %info.actor, change = %info.description, "revision applied");
        Ok((info, snap))
    }

    /// Re-reads the config file as a new revision, unless it is what is running already. A
    /// bad file leaves everything as it was.
    pub fn reload_from_file(&self, actor: &str) -> Result<Reloaded, ChangeError> {
        let before = self.snapshot();
        let (info, snap) = self.change(ChangeRequest {
            actor: actor.into(),
            if_match: None,
            kind: ChangeKind::Reload,
        })?;
        Ok(if Arc::ptr_eq(&before, &snap) {
            Reloaded::Unchanged(info.number)
        } else {
            Reloaded::Applied(info, snap)
        })
    }

    fn after_swap(&self) {
        let snap = self.snapshot();
        self.shared.metrics.set_revision(snap.revision);
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

fn new_record(
    store: &RevisionStore,
    actor: &str,
    description: String,
    change: Change,
    snap: &Snapshot,
) -> RevisionRecord {
    RevisionRecord {
        info: RevisionInfo {
            number: store.next_number(),
            time: chrono::Utc::now(),
            actor: actor.to_string(),
            description,
            change,
            hash: snap.hash.clone(),
        },
        config: snap.config.as_ref().clone(),
        flags: snap
            .flags
            .as_ref()
            .and_then(|f| serde_json::from_str(&f.to_json()).ok()),
    }
}

/// Reads the flags a config names (a file, relative to the config, or inline).
fn load_flags(
    cfg: &GatewayConfig,
    base_dir: Option<&std::path::Path>,
) -> Result<Option<Arc<FlagStore>>, (String, String)> {
    let store = match &cfg.flags {
        None => return Ok(None),
        Some(FlagsSource::File(p)) => {
            let path = match base_dir {
                Some(d) if p.is_relative() => d.join(p),
                _ => p.clone(),
            };
            FlagStore::from_file(&path)
                .map_err(|e| ("flags".to_string(), format!("{}: {e}", path.display())))?
        }
        Some(FlagsSource::Inline(v)) => FlagStore::from_json(&v.to_string())
            .map_err(|e| ("flags".to_string(), e.to_string()))?,
    };
    Ok(Some(Arc::new(store)))
}

fn flags_from_doc(doc: Option<&serde_json::Value>) -> Result<Option<Arc<FlagStore>>, String> {
    match doc {
        None => Ok(None),
        Some(v) => FlagStore::from_json(&v.to_string())
            .map(|s| Some(Arc::new(s)))
            .map_err(|e| format!("the revision's flags do not load: {e}")),
    }
}

fn flag_edit_error(e: crate::flags::FlagEditError) -> ChangeError {
    match e {
        crate::flags::FlagEditError::UnknownFlag(_) => ChangeError::NotFound(e.to_string()),
        other => ChangeError::Invalid(other.to_string()),
    }
}

fn with_split(
    cfg: &GatewayConfig,
    route: &str,
    weights: BTreeMap<String, u32>,
) -> Result<GatewayConfig, ChangeError> {
    let mut c = cfg.clone();
    let r = c
        .routes
        .iter_mut()
        .find(|r| r.name == route)
        .ok_or_else(|| ChangeError::NotFound(format!("no route {route:?}")))?;
    r.split = weights;
    Ok(c)
}

fn compile(
    cfg: GatewayConfig,
    shared: &Shared,
    source: Option<&PathBuf>,
    text: Option<&str>,
    flags: Option<Arc<FlagStore>>,
) -> Result<Snapshot, ConfigError> {
    snapshot::compile(
        Arc::new(cfg),
        shared,
        source.and_then(|p| p.parent()),
        flags,
    )
    .map_err(|(path, msg)| locate(vec![(path, msg)], source, text))
}

fn single(source: &Option<PathBuf>, message: String) -> ConfigError {
    ConfigError(vec![ConfigIssue {
        file: source
            .as_ref()
            .map_or_else(|| "<config>".into(), |p| p.display().to_string()),
        line: 1,
        col: 1,
        path: String::new(),
        message,
    }])
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
                let (line, col) = match text {
                    Some(_) => config::position_of(&positions, &path),
                    None => (0, 0),
                };
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
