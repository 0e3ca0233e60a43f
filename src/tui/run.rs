//! The event loop: the terminal (raw mode, alternate screen, always restored), one status
//! feed per environment (`control::feed`: polled or watched), and plan/execute tasks.
//! Everything reaches the UI as an [`Event`] on one channel, so drawing never waits on the
//! network.

use std::collections::HashMap;
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{Timelike, Utc};
use crossterm::event::{self as ct, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::app::{self, App, Command, Event, ExecResult, PlanView};
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

const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often the audit journal is checked for changes (a stat; read only when it changed).
const JOURNAL_EVERY: Duration = Duration::from_secs(1);
/// How much of the journal's tail History reads (about 2,000 entries).
const JOURNAL_TAIL: u64 = 1 << 20;
const TICK: Duration = Duration::from_millis(250);

pub struct TuiOptions {
    /// The environment to open on (default: the first).
    pub env: Option<String>,
    /// Remove every mutating key.
    pub read_only: bool,
    /// Theme name; `NO_COLOR` forces monochrome.
    pub theme: Option<String>,
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
        Ok(s) => s,
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

    /// Carries out one command off the UI task; returns false to quit.
    fn handle(&self, cmd: Command) -> bool {
        match cmd {
            Command::Quit => return false,
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
    let backends = Backends {
        envs,
        plans: Arc::default(),
        journal,
        journal_poke,
        actor,
        tx: tx.clone(),
    };

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
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
