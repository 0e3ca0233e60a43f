//! Starting or resuming a walkthrough: load the runbook, take its lock, load or create its
//! saved state, and work out the decision a resume carries. Shared by `signalbox walk` and
//! the cockpit's `walk` command, so both refuse the same things with the same words.

use std::path::{Path, PathBuf};

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, EngineOptions, Operator};
use super::machine::{Decision, PauseKind, StepStatus, WalkState, WalkStatus};
use super::runbook::{self, Runbook};
use super::store::{self, Lock, Store};
use crate::control::audit::Journal;
use crate::control::envfile::{self, CockpitConfig};

/// What to do with a walkthrough that was saved unfinished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Start afresh; a saved unfinished walkthrough is an error.
    No,
    /// Continue it and let the operator decide at the pause it stopped at (the cockpit).
    Ask,
    /// Continue it, approving the pause it stopped at (or re-running an inconclusive
    /// analysis): `--resume`.
    Continue,
    /// `--retry`: run the step it stopped at again.
    Retry,
    /// `--skip REASON`.
    Skip(String),
    /// `--abort`: roll it back and finish it.
    Abort,
}

pub struct StartRequest<'a> {
    pub runbook: &'a Path,
    /// Instead of the runbook's `env`.
    pub env: Option<&'a str>,
    pub cockpit: &'a CockpitConfig,
    /// The environments file, for the release note's hand-rollback commands.
    pub config_path: Option<&'a Path>,
    pub actor: &'a str,
    pub state_dir: Option<&'a Path>,
    pub resume: Resume,
}

/// A walkthrough ready to run: its lock is held until this (or the engine's owner) drops.
pub struct Ready {
    pub rb: Runbook,
    pub env: String,
    pub store: Store,
    pub state_path: PathBuf,
    pub st: WalkState,
    pub initial: Option<Decision>,
    /// Something the operator should read before it runs (e.g. a note being finished).
    pub notice: Option<String>,
    pub lock: Lock,
}

pub enum Prepared {
    Ready(Box<Ready>),
    /// Another process drives this walkthrough (decisions can be handed to it).
    Busy {
        rb: Box<Runbook>,
        env: String,
        store: Store,
        state_path: PathBuf,
    },
}

/// Where walkthroughs of this cockpit keep their state.
pub fn store_for(cockpit: &CockpitConfig, state_dir: Option<&Path>) -> Store {
    let audit = cockpit
        .audit_log
        .clone()
        .unwrap_or_else(envfile::default_audit_log);
    Store::new(
        state_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| store::default_dir(&audit)),
    )
}

pub fn prepare(req: StartRequest<'_>) -> Result<Prepared, String> {
    let (rb, text) = runbook::load(req.runbook).map_err(|e| e.to_string())?;
    let env = req.env.map(String::from).unwrap_or_else(|| rb.env.clone());
    let store = store_for(req.cockpit, req.state_dir);
    let state_path = store.state_path(&rb.name, &env);
    let Some(lock) = store.lock(&state_path)? else {
        return Ok(Prepared::Busy {
            rb: Box::new(rb),
            env,
            store,
            state_path,
        });
    };
    let resuming = req.resume != Resume::No;
    let sha = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let now = chrono::Utc::now();
    let mut initial = None;
    let mut notice = None;
    let st = match store.load(&state_path)? {
        // Ended, but the process stopped before writing the note: the engine finishes the
        // paperwork (note, notification, archive) and nothing else.
        Some(st) if st.is_finished() => {
            notice = Some(format!(
                "the previous walkthrough of {:?} in {env} ended without its release note; writing it now",
                rb.name
            ));
            st
        }
        Some(mut st) => {
            if !resuming {
                return Err(format!(
                    "an unfinished walkthrough of {:?} in {env} (started {}, at step {}: {}) is saved in {}; pass --resume to continue it or --abort to roll it back",
                    rb.name,
                    st.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    st.progress(),
                    describe(&st),
                    state_path.display()
                ));
            }
            if st.runbook_sha256 != sha && req.resume != Resume::Abort {
                return Err(format!(
                    "{} changed since this walkthrough started (steps are resumed by position); restore it, or --abort the walkthrough",
                    req.runbook.display()
                ));
            }
            st.resume(now);
            match &req.resume {
                Resume::Abort => {
                    st.abort(req.actor, "aborted by the operator (--abort)", now)?;
                }
                Resume::Retry => initial = Some(Decision::Retry),
                Resume::Skip(reason) => {
                    if reason.trim().is_empty() {
                        return Err("--skip needs a reason".into());
                    }
                    initial = Some(Decision::Skip(reason.clone()));
                }
                Resume::Continue => {
                    if let WalkStatus::AwaitingOperator { kind, .. } = &st.status {
                        initial = match kind {
                            PauseKind::Approval => Some(Decision::Continue),
                            PauseKind::Inconclusive => Some(Decision::Retry),
                            PauseKind::Error | PauseKind::Interrupted => None,
                        };
                    }
                }
                Resume::Ask | Resume::No => {}
            }
            st
        }
        None if resuming => {
            return Err(format!(
                "no unfinished walkthrough of {:?} in {env} to resume (looked in {})",
                rb.name,
                state_path.display()
            ));
        }
        None => WalkState::new(
            uuid::Uuid::new_v4().simple().to_string(),
            &rb,
            &req.runbook.display().to_string(),
            &sha,
            req.actor,
            &rb.expand(&env),
            now,
        ),
    };
    store.save(&state_path, &st)?;
    Ok(Prepared::Ready(Box::new(Ready {
        rb,
        env,
        store,
        state_path,
        st,
        initial,
        notice,
        lock,
    })))
}

impl Ready {
    /// The engine for this walkthrough (it connects to every environment it touches), and
    /// the lock, which the caller keeps for as long as the engine runs.
    pub fn engine<O: Operator>(
        self,
        cockpit: CockpitConfig,
        config_path: Option<PathBuf>,
        actor: String,
        op: O,
        cancel: CancellationToken,
    ) -> Result<(Engine<O>, Lock), String> {
        let audit = cockpit
            .audit_log
            .clone()
            .unwrap_or_else(envfile::default_audit_log);
        let opts = EngineOptions {
            cockpit,
            config_path: config_path.map(|p| std::fs::canonicalize(&p).unwrap_or(p)),
            actor,
            journal: Journal::new(audit),
            initial_decision: self.initial,
        };
        let engine = Engine::new(
            self.rb,
            &self.env,
            opts,
            self.store,
            self.state_path,
            self.st,
            op,
            cancel,
        )?;
        Ok((engine, self.lock))
    }
}

/// Where a walkthrough stands, in a few words.
pub fn describe(st: &WalkState) -> String {
    match &st.status {
        WalkStatus::AwaitingOperator { reason, .. } => format!("paused: {reason}"),
        WalkStatus::RollingBack { reason, .. } => format!("rolling back: {reason}"),
        _ => st
            .steps
            .get(st.cursor)
            .map(|s| {
                format!(
                    "{}{}",
                    s.title,
                    if s.status == StepStatus::Running {
                        " (was running)"
                    } else {
                        ""
                    }
                )
            })
            .unwrap_or_else(|| "all steps done".into()),
    }
}
