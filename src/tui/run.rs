//! The event loop: the terminal (raw mode, alternate screen, always restored), one status
//! feed per environment (`control::feed`: polled or watched), and plan/execute tasks.
//! Everything reaches the UI as an [`Event`] on one channel, so drawing never waits on the
//! network.

use std::collections::HashMap;
use std::io::{self, Stdout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{Timelike, Utc};
use crossterm::event::{self as ct, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::app::{
    self, App, Command, Event, ExecResult, PlanView, WalkAnswer, WalkEnd, WalkEvent, WalkUi,
};
use super::diff;
use super::keymap::{Key, Keymap};
use super::theme::{self, Theme};
use super::views;
use crate::control::audit::Journal;
use crate::control::envfile::{self, CockpitConfig};
use crate::control::{self, Env, Plan, PlanError};
use crate::domain::metrics::{FeedError, MetricsFeed};
use crate::domain::{GatewayStatus, Outcome};
use crate::metrics::{CanaryRoles, MetricsPoller, MetricsSource};
use crate::walk::start::{self, Prepared, Resume, StartRequest};
use crate::walk::store::{DecisionRequest, Store};
use crate::walk::{ChannelOperator, Decision, RunEnd, WalkUpdate};

const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often the audit journal is checked for changes (a stat; read only when it changed).
const JOURNAL_EVERY: Duration = Duration::from_secs(1);
/// How much of the journal's tail History reads (about 2,000 entries).
const JOURNAL_TAIL: u64 = 1 << 20;
const TICK: Duration = Duration::from_millis(250);
/// How long quitting waits for a running walkthrough to reach a safe point.
const WALK_STOP: Duration = Duration::from_secs(15);

pub struct TuiOptions {
    /// The environment to open on (default: the first).
    pub env: Option<String>,
    /// Remove every mutating key.
    pub read_only: bool,
    /// Theme name; `NO_COLOR` forces monochrome.
    pub theme: Option<String>,
    /// Open on the walkthrough view, running this one (`signalbox walk` on a terminal).
    pub walk: Option<WalkStart>,
}

/// A walkthrough to run inside the cockpit.
pub struct WalkStart {
    /// Already loaded and locked (by `signalbox walk`, which reports problems before the
    /// terminal is taken); otherwise the cockpit loads it.
    pub prepared: Option<Box<start::Ready>>,
    pub runbook: PathBuf,
    /// Instead of the runbook's `env`.
    pub env: Option<String>,
    pub resume: Resume,
    pub state_dir: Option<PathBuf>,
    /// Default: the cockpit's actor.
    pub actor: Option<String>,
    /// The environments file, for the release note's hand-rollback commands.
    pub config_path: Option<PathBuf>,
    /// The command that reaches this walkthrough from a shell, for messages.
    pub hint: String,
    /// Changes need no confirmation (`--yes`).
    pub yes: bool,
}

impl WalkStart {
    /// A walk started from the palette.
    fn from_palette(runbook: &str, env: Option<String>, resume: bool) -> Self {
        let hint = format!(
            "signalbox walk {runbook}{}",
            env.as_ref()
                .map(|e| format!(" --env {e}"))
                .unwrap_or_default()
        );
        Self {
            prepared: None,
            runbook: PathBuf::from(runbook),
            env,
            resume: if resume { Resume::Ask } else { Resume::No },
            state_dir: None,
            actor: None,
            config_path: None,
            hint,
            yes: false,
        }
    }
}

/// The engine's questions wait here (by id) for the operator's answer from the UI loop.
enum Reply {
    Decide(oneshot::Sender<Decision>),
    Confirm(oneshot::Sender<bool>),
}

#[derive(Clone, Default)]
struct WalkBridge {
    replies: Arc<Mutex<HashMap<u64, Reply>>>,
    next: Arc<AtomicU64>,
}

impl WalkBridge {
    /// An engine update as an app event; a question's reply channel is kept under a new id.
    fn accept(&self, u: WalkUpdate) -> WalkEvent {
        let keep = |r: Reply| {
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            if let Ok(mut m) = self.replies.lock() {
                m.insert(id, r);
            }
            id
        };
        match u {
            WalkUpdate::State(st) => WalkEvent::State(st),
            WalkUpdate::Line(l) => WalkEvent::Line(l),
            WalkUpdate::Decide {
                kind,
                reason,
                reply,
            } => WalkEvent::Decide {
                id: keep(Reply::Decide(reply)),
                kind,
                reason,
            },
            WalkUpdate::Confirm { plan, reply } => WalkEvent::Confirm {
                plan: PlanView::from(plan.as_ref()),
                id: keep(Reply::Confirm(reply)),
            },
        }
    }

    /// Sends the answer to the engine; false when it no longer waits for one.
    fn answer(&self, id: u64, answer: WalkAnswer) -> bool {
        let Some(reply) = self.replies.lock().ok().and_then(|mut m| m.remove(&id)) else {
            return false;
        };
        match (reply, answer) {
            (Reply::Decide(tx), WalkAnswer::Decision(d)) => tx.send(d).is_ok(),
            (Reply::Confirm(tx), WalkAnswer::Confirm(yes)) => tx.send(yes).is_ok(),
            _ => false,
        }
    }

    /// Quitting: a change waiting for confirmation is declined (the walk pauses, saved,
    /// rather than failing for want of an answer); pauses are left to the cancellation.
    fn decline_all(&self) {
        let Ok(mut m) = self.replies.lock() else {
            return;
        };
        for (_, r) in m.drain() {
            if let Reply::Confirm(tx) = r {
                let _ = tx.send(false);
            }
        }
    }
}

/// The walkthrough's task and how to reach its engine.
struct WalkTask {
    cancel: CancellationToken,
    handle: JoinHandle<WalkEnd>,
    /// The store's directory and the state file, once loaded: an abort outside a pause is
    /// handed to the engine there, as from another terminal.
    target: Arc<Mutex<Option<(PathBuf, PathBuf)>>>,
    hint: String,
}

/// Loads and runs one walkthrough, forwarding the engine's updates to the UI in order.
async fn run_walk(
    start: WalkStart,
    cockpit: CockpitConfig,
    actor: String,
    bridge: WalkBridge,
    tx: mpsc::Sender<Msg>,
    cancel: CancellationToken,
    target: Arc<Mutex<Option<(PathBuf, PathBuf)>>>,
) -> WalkEnd {
    let prepared = match start.prepared {
        Some(r) => Ok(Prepared::Ready(r)),
        None => start::prepare(StartRequest {
            runbook: &start.runbook,
            env: start.env.as_deref(),
            cockpit: &cockpit,
            config_path: start.config_path.as_deref(),
            actor: &actor,
            state_dir: start.state_dir.as_deref(),
            resume: start.resume.clone(),
        }),
    };
    let ready = match prepared {
        Ok(Prepared::Ready(r)) => r,
        Ok(Prepared::Busy { .. }) => {
            return WalkEnd::Error(format!(
                "another signalbox walk is driving this walkthrough; decide there, or from a shell with `{} --resume` (or --retry, --skip REASON, --abort)",
                start.hint
            ));
        }
        Err(e) => return WalkEnd::Error(e),
    };
    if let Ok(mut t) = target.lock() {
        *t = Some((ready.store.dir().to_path_buf(), ready.state_path.clone()));
    }
    let started = WalkEvent::Started {
        env: ready.env.clone(),
        notice: ready.notice.clone(),
    };
    let first = WalkEvent::State(Box::new(ready.st.clone()));
    let (op, mut rx) = ChannelOperator::new();
    let (mut engine, _lock) =
        match ready.engine(cockpit, start.config_path.clone(), actor, op, cancel) {
            Ok(x) => x,
            Err(e) => return WalkEnd::Error(e),
        };
    for ev in [started, first] {
        let _ = tx.send(Msg::App(Event::Walk(ev))).await;
    }
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(u) = rx.recv().await {
                let ev = bridge.accept(u);
                if tx.send(Msg::App(Event::Walk(ev))).await.is_err() {
                    return;
                }
            }
        })
    };
    let result = engine.run().await;
    // The operator's channel closes with the engine; the last updates go out first.
    drop(engine);
    let _ = forward.await;
    match result {
        Ok(RunEnd::Finished { outcome, note }) => WalkEnd::Finished {
            outcome,
            note: note.display().to_string(),
        },
        Ok(RunEnd::Paused { reason }) => WalkEnd::Paused(reason),
        Ok(RunEnd::Interrupted) => WalkEnd::Interrupted,
        Err(e) => WalkEnd::Error(e),
    }
}

/// Paths for completing `walk RUNBOOK`: directories (to go into) and YAML files.
fn list_paths(prefix: &str) -> Vec<String> {
    let (dir, file) = match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    let Ok(entries) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else {
        return vec![];
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !name.starts_with(file) || (name.starts_with('.') && !file.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().ok()?.is_dir();
            if is_dir {
                Some(format!("{dir}{name}/"))
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                Some(format!("{dir}{name}"))
            } else {
                None
            }
        })
        .take(500)
        .collect();
    out.sort();
    out
}

enum Msg {
    App(Event),
    Redraw,
}

/// Set while the terminal is in raw mode / alternate screen, so restoring is idempotent
/// (drop, panic hook and signal paths may all try).
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = crossterm::execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
    }
}

struct TerminalGuard {
    term: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let guard = |e: io::Error| {
            restore_terminal();
            anyhow::Error::from(e)
        };
        crossterm::execute!(io::stdout(), EnterAlternateScreen, crossterm::cursor::Hide)
            .map_err(guard)?;
        let term = Terminal::new(CrosstermBackend::new(io::stdout())).map_err(guard)?;
        Ok(Self { term })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Leave the alternate screen first, or the message is lost with it.
        restore_terminal();
        prev(info);
    }));
}

fn key_from(ev: &ct::KeyEvent) -> Option<Key> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    Some(match ev.code {
        KeyCode::Char('c') if ev.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Reads the terminal on a plain thread (crossterm's reader blocks); stops when `stop` is set.
fn spawn_input(tx: mpsc::Sender<Msg>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match ct::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => return,
            }
            let msg = match ct::read() {
                Ok(ct::Event::Key(k)) => match key_from(&k) {
                    Some(k) => Msg::App(Event::Key(k)),
                    None => continue,
                },
                Ok(ct::Event::Resize(..)) => Msg::Redraw,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.blocking_send(msg).is_err() {
                return;
            }
        }
    })
}

/// Forwards an environment's status feed (polled gateway or watched namespace) to the UI.
fn spawn_feed(index: usize, env: Arc<Env>, tx: mpsc::Sender<Msg>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut feed = control::feed::follow(env, POLL_EVERY);
        while let Some(u) = feed.next().await {
            let ev = Event::EnvUpdate {
                env: index,
                status: u.status,
                revisions: u.revisions,
                watches: u.watches,
                at: u.at,
            };
            if tx.send(Msg::App(ev)).await.is_err() {
                return;
            }
        }
    })
}

/// Size and modification time: enough to tell that the journal changed.
fn journal_stamp(path: &std::path::Path) -> Result<Option<(u64, std::time::SystemTime)>, String> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.len(), m.modified().map_err(|e| e.to_string())?))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Follows the audit journal for History: re-reads its tail (on a blocking thread, never
/// the UI task) whenever its size or mtime changes, or when `poke` says a change was
/// just recorded.
fn spawn_journal(
    journal: Arc<Journal>,
    poke: Arc<tokio::sync::Notify>,
    tx: mpsc::Sender<Msg>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(JOURNAL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<Result<Option<(u64, std::time::SystemTime)>, String>> = None;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = poke.notified() => {}
            }
            let j = journal.clone();
            let stamp = tokio::task::spawn_blocking(move || journal_stamp(j.path()))
                .await
                .map_err(|e| e.to_string())
                .and_then(|s| s);
            if seen.as_ref() == Some(&stamp) {
                continue;
            }
            let result = match &stamp {
                Err(e) => Err(e.clone()),
                Ok(_) => {
                    let j = journal.clone();
                    tokio::task::spawn_blocking(move || j.read_recent(JOURNAL_TAIL))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| format!("{}: {e}", journal.path().display())))
                        .map(|r| app::JournalRead {
                            entries: r.entries,
                            skipped: r.skipped,
                        })
                }
            };
            seen = Some(stamp);
            if tx.send(Msg::App(Event::Journal(result))).await.is_err() {
                return;
            }
        }
    })
}

/// Starts the metrics poller of one environment and forwards every new feed to the UI. A
/// source that cannot even be built shows its error on the panel.
fn spawn_metrics(
    index: usize,
    def: &envfile::EnvDef,
    tx: mpsc::Sender<Msg>,
) -> (Option<MetricsPoller>, Option<JoinHandle<()>>) {
    let source = match MetricsSource::from_config(&def.name, &def.metrics_source()) {
        Ok(mut s) => {
            // The live panel draws route and environment sparklines, never an upstream's.
            s.keep_upstream_histories(false);
            s
        }
        Err(e) => {
            let mut feed = MetricsFeed::new(def.name.clone(), "metrics");
            feed.error = Some(FeedError {
                message: e.to_string(),
                failed_at: Utc::now(),
                consecutive_failures: 1,
            });
            let _ = tx.try_send(Msg::App(Event::Metrics {
                env: index,
                feed: Box::new(feed),
            }));
            return (None, None);
        }
    };
    let poller = MetricsPoller::spawn(source);
    let mut rx = poller.subscribe();
    let task = tokio::spawn(async move {
        loop {
            let feed = rx.borrow_and_update().clone();
            let ev = Event::Metrics {
                env: index,
                feed: Box::new(feed),
            };
            if tx.send(Msg::App(ev)).await.is_err() || rx.changed().await.is_err() {
                return;
            }
        }
    });
    (Some(poller), Some(task))
}

/// Stable and canary of every route with a canary side, for the verdict.
fn roles_of(status: &GatewayStatus) -> CanaryRoles {
    let mut roles = CanaryRoles::default();
    for r in &status.routes {
        if let Some((stable, canary)) = r.canary_pair() {
            roles.set(r.name.clone(), stable, canary);
        }
    }
    roles
}

struct Backends {
    /// In definition order (the app's environment index): name and connection.
    envs: Vec<(String, Result<Arc<Env>, String>)>,
    plans: Arc<Mutex<HashMap<u64, PendingPlan>>>,
    journal: Arc<Journal>,
    /// Tells the journal follower that an entry was just written.
    journal_poke: Arc<tokio::sync::Notify>,
    actor: Arc<str>,
    tx: mpsc::Sender<Msg>,
    /// For the walkthrough's engine, which connects on its own.
    cockpit: CockpitConfig,
    bridge: WalkBridge,
    walk: Option<WalkTask>,
}

struct PendingPlan {
    index: usize,
    env: Arc<Env>,
    plan: Plan,
}

impl Backends {
    fn env(&self, name: &str) -> Result<(usize, Arc<Env>), String> {
        match self.envs.iter().enumerate().find(|(_, (n, _))| n == name) {
            Some((i, (_, Ok(env)))) => Ok((i, env.clone())),
            Some((_, (_, Err(e)))) => Err(e.clone()),
            None => Err(format!("no environment {name:?}")),
        }
    }

    fn take(&self, id: u64) -> Option<PendingPlan> {
        self.plans.lock().ok()?.remove(&id)
    }

    fn start_walk(&mut self, start: WalkStart) {
        let cancel = CancellationToken::new();
        let target = Arc::new(Mutex::new(None));
        let actor = start
            .actor
            .clone()
            .unwrap_or_else(|| self.actor.to_string());
        let hint = start.hint.clone();
        let run = run_walk(
            start,
            self.cockpit.clone(),
            actor,
            self.bridge.clone(),
            self.tx.clone(),
            cancel.clone(),
            target.clone(),
        );
        let tx = self.tx.clone();
        let handle = tokio::spawn(async move {
            let end = run.await;
            let _ = tx
                .send(Msg::App(Event::Walk(WalkEvent::Ended(end.clone()))))
                .await;
            end
        });
        self.walk = Some(WalkTask {
            cancel,
            handle,
            target,
            hint,
        });
    }

    /// Tells the UI something about the walk (a line in its log).
    fn walk_line(&self, line: String) {
        let _ = self
            .tx
            .try_send(Msg::App(Event::Walk(WalkEvent::Line(line))));
    }

    /// Carries out one command off the UI task; returns false to quit.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Quit => return false,
            Command::StartWalk {
                runbook,
                env,
                resume,
            } => self.start_walk(WalkStart::from_palette(&runbook, env, resume)),
            Command::WalkAnswer { id, answer } => {
                if !self.bridge.answer(id, answer) {
                    self.walk_line("the walkthrough no longer waits for that answer".into());
                }
            }
            Command::WalkAbort { step, reason } => {
                let target = self
                    .walk
                    .as_ref()
                    .and_then(|w| w.target.lock().ok().and_then(|t| t.clone()));
                let Some((dir, path)) = target else {
                    self.walk_line("cannot abort: the walkthrough has not started".into());
                    return true;
                };
                let req = DecisionRequest {
                    step,
                    decision: "abort".into(),
                    reason: Some(reason),
                    actor: self.actor.to_string(),
                };
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = Store::new(dir).send_decision(&path, &req) {
                        let line = format!("cannot abort: {e}");
                        let _ = tx.try_send(Msg::App(Event::Walk(WalkEvent::Line(line))));
                    }
                });
            }
            Command::StopWalk => {
                self.bridge.decline_all();
                if let Some(w) = &self.walk {
                    w.cancel.cancel();
                }
            }
            Command::Plan { id, env, action } => {
                let tx = self.tx.clone();
                let plans = self.plans.clone();
                let env = self.env(&env);
                tokio::spawn(async move {
                    let result = match env {
                        Err(e) => Err(e),
                        Ok((index, env)) => {
                            match control::plan(&env, action, None, Utc::now()).await {
                                Ok(plan) => {
                                    let view = PlanView::from(&plan);
                                    if let Ok(mut m) = plans.lock() {
                                        m.insert(
                                            id,
                                            PendingPlan {
                                                index,
                                                env: env.clone(),
                                                plan,
                                            },
                                        );
                                    }
                                    Ok(view)
                                }
                                Err(PlanError::Invalid(m)) => Err(m),
                                Err(PlanError::Backend(e)) => Err(format!("{}: {e}", env.def.name)),
                            }
                        }
                    };
                    let _ = tx.send(Msg::App(Event::Planned { id, result })).await;
                });
            }
            Command::Execute { id } => {
                let tx = self.tx.clone();
                let journal = self.journal.clone();
                let poke = self.journal_poke.clone();
                let actor = self.actor.clone();
                let taken = self.take(id);
                tokio::spawn(async move {
                    let Some(PendingPlan { index, env, plan }) = taken else {
                        let result = ExecResult {
                            outcome: Outcome::Failed,
                            revision: None,
                            error: Some("the plan was lost before it could be applied".into()),
                        };
                        let _ = tx.send(Msg::App(Event::Executed { id, result })).await;
                        return;
                    };
                    let report = control::execute(&env, &plan, &journal, &actor).await;
                    poke.notify_one();
                    let result = ExecResult::from(&report);
                    let _ = tx.send(Msg::App(Event::Executed { id, result })).await;
                    // Show the new state at once rather than on the next poll. A watched
                    // environment's watches bring the change themselves.
                    if let Some(state) = report.state
                        && env.backend.as_gateway().is_some()
                    {
                        let ev = Event::EnvUpdate {
                            watches: Vec::new(),
                            env: index,
                            status: Ok(state),
                            revisions: env.backend.revisions().await.ok(),
                            at: Utc::now(),
                        };
                        let _ = tx.send(Msg::App(ev)).await;
                    }
                });
            }
            Command::LoadDiff { env: index, number } => {
                let tx = self.tx.clone();
                let env = match self.envs.get(index) {
                    Some((_, Ok(env))) => Ok(env.clone()),
                    Some((_, Err(e))) => Err(e.clone()),
                    None => Err(format!("no environment {index}")),
                };
                tokio::spawn(async move {
                    let result = match env {
                        Err(e) => Err(e),
                        Ok(env) => load_diff(&env, number).await,
                    };
                    let ev = Event::Diff {
                        env: index,
                        number,
                        result,
                    };
                    let _ = tx.send(Msg::App(ev)).await;
                });
            }
            Command::Cancel { id } => {
                if let Some(PendingPlan { plan, .. }) = self.take(id) {
                    let journal = self.journal.clone();
                    let poke = self.journal_poke.clone();
                    let actor = self.actor.clone();
                    tokio::task::spawn_blocking(move || {
                        control::not_applied(&plan, &journal, &actor, Outcome::Cancelled, None);
                        poke.notify_one();
                    });
                }
            }
        }
        true
    }
}

/// Reads revision `number` and the one before it and says what changed.
async fn load_diff(env: &Env, number: u64) -> Result<Vec<String>, String> {
    let value = |rec: crate::gateway::revisions::RevisionRecord| {
        serde_json::to_value(&rec.config)
            .map(|c| diff::revision_value(c, rec.flags))
            .map_err(|e| format!("cannot read revision {}: {e}", rec.info.number))
    };
    let after = value(
        env.backend
            .revision(number)
            .await
            .map_err(|e| e.to_string())?,
    )?;
    let before = if number > 1 {
        match env.backend.revision(number - 1).await {
            Ok(rec) => Some(value(rec)?),
            // Older revisions may have been pruned; say so rather than pretend it was first.
            Err(e) => return Err(format!("revision {} (the one before): {e}", number - 1)),
        }
    } else {
        None
    };
    Ok(diff::revision_diff(before.as_ref(), &after))
}

/// Runs the cockpit until the operator quits or SIGTERM/SIGHUP arrives. Returns the exit code.
pub async fn run(cfg: CockpitConfig, opts: TuiOptions) -> anyhow::Result<i32> {
    let theme = Theme::select(
        opts.theme.as_deref().or(cfg.theme.as_deref()),
        theme::no_color_from_env(),
        theme::user_theme_dir().as_deref(),
    )
    .map_err(|e| anyhow!(e))?;
    let keymap = Keymap::with_overrides(&cfg.keys);
    // Before the TUI takes the terminal, so they stay readable after exit too.
    for w in &keymap.warnings {
        eprintln!("signalbox: warning: {w}");
    }
    let sandbox_url = cfg.sandbox.as_ref().map(|s| s.control_url.clone());
    let names: Vec<String> = cfg.environments.iter().map(|e| e.name.clone()).collect();
    let current = match &opts.env {
        None => 0,
        Some(n) => names
            .iter()
            .position(|x| x == n)
            .ok_or_else(|| anyhow!("no environment {n:?}; known: {}", names.join(", ")))?,
    };
    let actor: Arc<str> = cfg
        .actor
        .clone()
        .unwrap_or_else(envfile::default_actor)
        .into();
    let journal = Arc::new(Journal::new(
        cfg.audit_log
            .clone()
            .unwrap_or_else(envfile::default_audit_log),
    ));

    // The terminal first: if it cannot be set up, no poller has been started.
    install_panic_hook();
    let mut guard = TerminalGuard::enter()?;
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let mut app = App::new(
        cfg.environments.clone(),
        current,
        opts.read_only,
        Utc::now(),
    )
    .with_keymap(keymap)
    .with_sandbox(sandbox_url.is_some());
    let mut pollers = Vec::new();
    let mut metrics = Vec::new();
    let mut envs = Vec::new();
    for (i, def) in cfg.environments.iter().enumerate() {
        let (poller, forward) = spawn_metrics(i, def, tx.clone());
        metrics.push((poller, CanaryRoles::default()));
        pollers.extend(forward);
        match Env::connect_in(def.clone(), &cfg.environments) {
            Ok(env) => {
                let env = match &sandbox_url {
                    Some(url) => env.with_sandbox(url),
                    None => env,
                };
                let env = Arc::new(env);
                pollers.push(spawn_feed(i, env.clone(), tx.clone()));
                envs.push((def.name.clone(), Ok(env)));
            }
            Err(e) => {
                app::update(
                    &mut app,
                    Event::EnvUpdate {
                        watches: Vec::new(),
                        env: i,
                        status: Err(e.clone()),
                        revisions: None,
                        at: Utc::now(),
                    },
                );
                envs.push((def.name.clone(), Err(e)));
            }
        }
    }
    let journal_poke = Arc::new(tokio::sync::Notify::new());
    pollers.push(spawn_journal(
        journal.clone(),
        journal_poke.clone(),
        tx.clone(),
    ));
    app.list_paths = list_paths;
    let mut backends = Backends {
        envs,
        plans: Arc::default(),
        journal,
        journal_poke,
        actor,
        tx: tx.clone(),
        cockpit: cfg.clone(),
        bridge: WalkBridge::default(),
        walk: None,
    };
    let walk_mode = opts.walk.is_some();
    if let Some(start) = opts.walk {
        app.walk = Some(WalkUi::new(start.runbook.display().to_string()));
        app.walk_yes = start.yes;
        app.view = super::keymap::View::Walk;
        backends.start_walk(start);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let input = spawn_input(tx.clone(), stop.clone());
    drop(tx);

    let mut term_sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut hup_sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let mut dirty = true;
    let result: anyhow::Result<i32> = loop {
        if dirty {
            if let Err(e) = guard.term.draw(|f| views::draw(f, &app, &theme)) {
                break Err(anyhow!(e).context("cannot draw to the terminal"));
            }
            dirty = false;
        }
        let cmds = tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::App(ev)) => {
                    // The verdict needs to know which side is the canary: tell the
                    // environment's metrics poller whenever the routes say otherwise.
                    if let Event::EnvUpdate { env, status: Ok(s), .. } = &ev
                        && let Some((Some(p), known)) = metrics.get_mut(*env)
                    {
                        let roles = roles_of(s);
                        if roles != *known {
                            p.set_roles(roles.clone());
                            p.refresh_now();
                            *known = roles;
                        }
                    }
                    dirty = true;
                    app::update(&mut app, ev)
                }
                Some(Msg::Redraw) => {
                    let _ = guard.term.autoresize();
                    dirty = true;
                    vec![]
                }
                None => break Ok(0),
            },
            _ = tick.tick() => {
                let now = Utc::now();
                let toasts = app.toasts.len();
                let second = app.now.second();
                app::update(&mut app, Event::Tick(now));
                // The clock and data ages move once a second; redraw then, not every tick.
                dirty |= now.second() != second || app.toasts.len() != toasts;
                vec![]
            }
            _ = term_sig.recv() => break Ok(0),
            _ = hup_sig.recv() => break Ok(0),
        };
        if !cmds.into_iter().all(|c| backends.handle(c)) {
            break Ok(0);
        }
    };

    stop.store(true, Ordering::Relaxed);
    for p in &pollers {
        p.abort();
    }
    drop(metrics);
    // A walk still running stops at its next safe point and saves itself; nobody reads
    // its updates any more.
    drop(rx);
    let walk_end = match backends.walk.take() {
        Some(w) => {
            backends.bridge.decline_all();
            w.cancel.cancel();
            let end = match tokio::time::timeout(WALK_STOP, w.handle).await {
                Ok(Ok(end)) => end,
                Ok(Err(e)) => WalkEnd::Error(format!("the walkthrough's task failed: {e}")),
                Err(_) => WalkEnd::Error(format!(
                    "the walkthrough did not stop within {}s; its state is saved after every step",
                    WALK_STOP.as_secs()
                )),
            };
            Some((end, w.hint))
        }
        None => None,
    };
    drop(guard);
    // Once the terminal is gone (SIGHUP, a killed tmux or SSH session), crossterm's
    // poll spins on the dead tty and never returns (crossterm#793): give the reader a
    // moment to see `stop`, then leave it to die with the process instead of joining it.
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    while !input.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if input.is_finished() {
        let _ = input.join();
    }
    let code = result?;
    // After the terminal is back: where the note is, or how to carry on.
    match &walk_end {
        Some((WalkEnd::Finished { note, .. }, _)) => println!("release note: {note}"),
        Some((WalkEnd::Paused(_) | WalkEnd::Interrupted, hint)) => println!(
            "walkthrough saved: resume with `{hint} --resume`, or roll back with `{hint} --abort`"
        ),
        Some((WalkEnd::Error(e), _)) => eprintln!("signalbox walk: {e}"),
        None => {}
    }
    Ok(match walk_end {
        Some((end, _)) if walk_mode => end.exit_code(),
        _ => code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole way from a key to the engine: the engine's question crosses the bridge
    /// as an event, `c` in the walk view becomes an answer, and the engine's `decide`
    /// returns it.
    #[tokio::test]
    async fn a_key_answers_the_engine_through_the_bridge() {
        use crate::control::envfile::ConfirmPolicy;
        use crate::walk::engine::Operator;
        use crate::walk::{PauseKind, WalkState};
        let rb = crate::walk::runbook::parse_str(
            "name: t\nenv: dev\nroute: users\nsteps:\n  - pause: { message: ok? }\n",
            "t.yaml",
        )
        .expect("runbook");
        let st = WalkState::new(
            "id".into(),
            &rb,
            "t.yaml",
            "sha",
            "ui",
            &rb.expand("dev"),
            Utc::now(),
        );
        let bridge = WalkBridge::default();
        let (mut op, mut rx) = ChannelOperator::new();
        let asking = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            op.decide(&st, PauseKind::Approval, "ok?", &cancel).await
        });
        let update = rx.recv().await.expect("the engine asks");
        let ev = bridge.accept(update);
        let mut app = App::new(
            vec![crate::tui::app::tests::def(
                "dev",
                ConfirmPolicy::Yes,
                false,
            )],
            0,
            false,
            Utc::now(),
        );
        app.walk = Some(WalkUi::new("t.yaml"));
        app.view = crate::tui::keymap::View::Walk;
        assert!(app::update(&mut app, Event::Walk(ev)).is_empty());
        let cmds = app::update(&mut app, Event::Key(Key::Char('c')));
        let [Command::WalkAnswer { id, answer }] = cmds.as_slice() else {
            panic!("one answer: {cmds:?}");
        };
        assert!(bridge.answer(*id, answer.clone()));
        assert_eq!(
            asking.await.expect("task"),
            Some(Decision::Continue),
            "the engine got the operator's decision"
        );
        assert!(!bridge.answer(*id, answer.clone()), "an answer counts once");
    }

    #[test]
    fn runbook_paths_complete_from_the_file_system() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("runbooks")).expect("mkdir");
        for f in [
            "runbooks/a.yaml",
            "runbooks/b.yml",
            "runbooks/notes.txt",
            "run.yaml",
        ] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let base = format!("{}/", dir.path().display());
        assert_eq!(
            list_paths(&format!("{base}run")),
            [format!("{base}run.yaml"), format!("{base}runbooks/")]
        );
        assert_eq!(
            list_paths(&format!("{base}runbooks/")),
            [
                format!("{base}runbooks/a.yaml"),
                format!("{base}runbooks/b.yml")
            ],
            "YAML files only"
        );
        assert!(list_paths(&format!("{base}nope/")).is_empty());
    }

    fn press(code: KeyCode, modifiers: KeyModifiers) -> ct::KeyEvent {
        ct::KeyEvent::new(code, modifiers)
    }

    #[test]
    fn terminal_keys_map_to_cockpit_keys() {
        assert_eq!(
            key_from(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Interrupt)
        );
        assert_eq!(
            key_from(&press(KeyCode::Char('c'), KeyModifiers::NONE)),
            Some(Key::Char('c'))
        );
        assert_eq!(
            key_from(&press(KeyCode::Char('R'), KeyModifiers::SHIFT)),
            Some(Key::Char('R'))
        );
        assert_eq!(key_from(&press(KeyCode::F(1), KeyModifiers::NONE)), None);
        let mut release = press(KeyCode::Char('f'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(key_from(&release), None, "a key counts once, on press");
    }
}
