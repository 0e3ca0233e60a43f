//! `signalbox walk RUNBOOK [--env NAME] [--headless | --prompt] [--yes] [--check] [--no-wait]
//! [--resume | --retry | --skip REASON | --abort]`
//!
//! On a terminal (and without `--headless` or `--prompt`) the walkthrough runs in the
//! cockpit's walkthrough view; otherwise progress lines go to stdout.
//!
//! Exit codes: 0 released (or `--check` passed), 1 error, 2 rolled back (a gate or step
//! failed, or the operator aborted), 3 paused awaiting an operator (or interrupted).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::control::Plan;
use crate::control::envfile::{self, ConfirmPolicy};
use crate::walk::machine::WalkStatus;
use crate::walk::runbook;
use crate::walk::start::{self, Prepared, Resume, StartRequest, describe};
use crate::walk::store::Store;
use crate::walk::{Confirm, Decision, Operator, PauseKind, RunEnd, WalkState};

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_ROLLED_BACK: i32 = 2;
pub const EXIT_PAUSED: i32 = 3;

#[derive(Debug, clap::Args)]
pub struct WalkArgs {
    /// The runbook (YAML).
    pub runbook: PathBuf,
    /// Environments file (default: ./signalbox.toml, then $XDG_CONFIG_HOME/signalbox/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run against this environment instead of the runbook's `env`.
    #[arg(long)]
    pub env: Option<String>,
    /// No prompts: progress lines on stdout, for CI.
    #[arg(long)]
    pub headless: bool,
    /// On a terminal, ask at line prompts instead of opening the cockpit's walkthrough view.
    #[arg(long, conflicts_with = "headless")]
    pub prompt: bool,
    /// Apply changes without asking for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Validate the runbook and exit: 0, or 1 with FILE:LINE:COL: field.path: message.
    #[arg(long)]
    pub check: bool,
    /// At a pause or an inconclusive analysis, save and exit 3 instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Continue a saved walkthrough: approves the pause it stopped at, or re-runs an
    /// inconclusive analysis.
    #[arg(long)]
    pub resume: bool,
    /// Resume by running the step the walkthrough stopped at again.
    #[arg(long, conflicts_with_all = ["skip", "abort"])]
    pub retry: bool,
    /// Resume by skipping the step the walkthrough stopped at (the reason is recorded).
    #[arg(long, value_name = "REASON", conflicts_with = "abort")]
    pub skip: Option<String>,
    /// Roll back a saved walkthrough and finish it.
    #[arg(long)]
    pub abort: bool,
    /// Who the changes are recorded as (default: the file's `actor`, else $USER@hostname).
    #[arg(long)]
    pub actor: Option<String>,
    /// Where progress and release notes go (default: `walks/` beside the audit journal).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

pub async fn run(args: WalkArgs) -> i32 {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signalbox walk: {e}");
            EXIT_ERROR
        }
    }
}

/// `--check`: every problem at once — the runbook's own and, with `--config`, each
/// environment it reaches that the file does not define — in file order.
fn check(args: &WalkArgs) -> Result<i32, String> {
    let loaded = runbook::load(&args.runbook);
    let mut issues = match &loaded {
        Ok(_) => Vec::new(),
        Err(e) => e.0.clone(),
    };
    let mut flag_issue = None;
    if let Some(cfg_path) = &args.config {
        let cfg = envfile::load(cfg_path)?;
        // Read from the text, not the runbook: a runbook with other problems does not load,
        // and its environment names are still worth checking.
        let text = std::fs::read_to_string(&args.runbook).unwrap_or_default();
        let known = cfg
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let positions = crate::gateway::config::locate_paths(&text);
        let mut seen: Vec<String> = Vec::new();
        for (field, name) in env_fields(&text, args.env.as_deref()) {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            if cfg.env(&name).is_some() {
                continue;
            }
            let message = format!(
                "no environment {name:?} in {} (known: {known})",
                cfg_path.display()
            );
            match field {
                None => flag_issue = Some(format!("--env {name}: {message}")),
                Some(path) => {
                    let (line, col) = value_position(
                        &text,
                        crate::gateway::config::position_of(&positions, &path),
                    );
                    issues.push(crate::gateway::config::ConfigIssue {
                        file: args.runbook.display().to_string(),
                        line,
                        col,
                        path,
                        message,
                    });
                }
            }
        }
    }
    issues.sort_by_key(|i| (i.line, i.col));
    if let Some(f) = &flag_issue {
        eprintln!("{f}");
    }
    for i in &issues {
        eprintln!("{i}");
    }
    let rb = match loaded {
        Ok((rb, _)) if issues.is_empty() && flag_issue.is_none() => rb,
        _ => return Ok(EXIT_ERROR),
    };
    let env = args.env.clone().unwrap_or_else(|| rb.env.clone());
    let steps = rb.expand(&env);
    let mut envs: Vec<&str> = Vec::new();
    for s in &steps {
        if !envs.contains(&s.env.as_str()) {
            envs.push(&s.env);
        }
    }
    println!(
        "{}: ok: {:?}, {} steps against {}",
        args.runbook.display(),
        rb.name,
        steps.len(),
        envs.join(" → ")
    );
    Ok(EXIT_OK)
}

/// The environments a runbook reaches, in order, with the field naming each (None for
/// `--env`, which replaces the runbook's `env`). Unreadable parts are skipped: loading the
/// runbook reports them.
fn env_fields(text: &str, flag: Option<&str>) -> Vec<(Option<String>, String)> {
    let doc: serde_json::Value = serde_saphyr::from_str(text).unwrap_or_default();
    let mut out = Vec::new();
    match (flag, doc["env"].as_str()) {
        (Some(f), _) => out.push((None, f.to_string())),
        (None, Some(e)) => out.push((Some("env".to_string()), e.to_string())),
        (None, None) => {}
    }
    for (i, step) in doc["steps"].as_array().into_iter().flatten().enumerate() {
        if let Some(e) = step["promote"]["env"].as_str() {
            out.push((Some(format!("steps[{i}].promote.env")), e.to_string()));
        }
    }
    out
}

/// Positions are kept for keys; a wrong name is in the value after `key:`.
fn value_position(text: &str, (line, col): (usize, usize)) -> (usize, usize) {
    let Some(l) = text.lines().nth(line.saturating_sub(1)) else {
        return (line, col);
    };
    let from = l
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(l.len(), |(i, _)| i);
    let Some(colon) = l[from..].find(':') else {
        return (line, col);
    };
    let rest = &l[from + colon + 1..];
    let skip = rest.len() - rest.trim_start().len();
    if rest.trim().is_empty() {
        return (line, col);
    }
    (line, l[..from + colon + 1 + skip].chars().count() + 1)
}

async fn run_inner(args: WalkArgs) -> Result<i32, String> {
    if args.check {
        return check(&args);
    }
    let (rb, _) = match runbook::load(&args.runbook) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_ERROR);
        }
    };
    let env = args.env.clone().unwrap_or_else(|| rb.env.clone());

    let path = envfile::find(args.config.as_deref()).ok_or("no environments file: pass --config FILE, create ./signalbox.toml (see examples/signalbox.toml), or start `signalbox sandbox`, which writes one")?;
    let cfg = envfile::load(&path)?;
    let actor = args
        .actor
        .clone()
        .or(cfg.actor.clone())
        .unwrap_or_else(envfile::default_actor);
    let resume = if args.abort {
        Resume::Abort
    } else if args.retry {
        Resume::Retry
    } else if let Some(r) = &args.skip {
        Resume::Skip(r.clone())
    } else if args.resume {
        Resume::Continue
    } else {
        Resume::No
    };
    let hint = format!(
        "signalbox walk {}{} --env {env}",
        args.runbook.display(),
        args.config
            .as_ref()
            .map(|c| format!(" --config {}", c.display()))
            .unwrap_or_default()
    );
    let interactive = !args.headless && std::io::stdin().is_terminal();
    // In the cockpit on a terminal (unless line prompts are asked for), the operator
    // decides at the pause it stopped at rather than `--resume` approving it blindly.
    let in_cockpit =
        interactive && !args.prompt && !args.no_wait && std::io::stdout().is_terminal();
    let resume = match resume {
        Resume::Continue if in_cockpit => Resume::Ask,
        r => r,
    };
    let ready = match start::prepare(StartRequest {
        runbook: &args.runbook,
        env: args.env.as_deref(),
        cockpit: &cfg,
        config_path: args.config.as_deref(),
        actor: &actor,
        state_dir: args.state_dir.as_deref(),
        resume: resume.clone(),
    })? {
        Prepared::Ready(r) => r,
        Prepared::Busy {
            store, state_path, ..
        } => return send_to_running(&store, &state_path, &args, &actor),
    };
    if in_cockpit {
        let opts = crate::tui::TuiOptions {
            env: Some(ready.env.clone()),
            read_only: false,
            theme: None,
            walk: Some(crate::tui::run::WalkStart {
                prepared: Some(ready),
                runbook: args.runbook.clone(),
                env: args.env.clone(),
                resume,
                state_dir: args.state_dir.clone(),
                actor: Some(actor),
                config_path: args.config.clone(),
                hint,
                yes: args.yes,
            }),
        };
        return crate::tui::run(cfg, opts)
            .await
            .map_err(|e| format!("{e:#}"));
    }
    if let Some(n) = &ready.notice {
        println!("{n}");
    }
    let op = CliOperator {
        yes: args.yes,
        interactive,
        no_wait: args.no_wait,
        hint: hint.clone(),
        input: std::sync::OnceLock::new(),
    };
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let (mut engine, _lock) = ready.engine(cfg, args.config.clone(), actor, op, cancel)?;
    match engine.run().await? {
        RunEnd::Finished { outcome, note } => {
            println!("release note: {}", note.display());
            Ok(outcome.exit_code())
        }
        RunEnd::Paused { reason } => {
            println!("paused awaiting an operator: {reason}");
            println!("continue with `{hint} --resume` (or --retry, --skip REASON, --abort)");
            Ok(EXIT_PAUSED)
        }
        RunEnd::Interrupted => {
            println!(
                "interrupted: resume with `{hint} --resume`, or roll back with `{hint} --abort`"
            );
            Ok(EXIT_PAUSED)
        }
    }
}

/// Another process (a headless run waiting at a pause) drives this walkthrough: hand it
/// the operator's decision instead.
fn send_to_running(
    store: &Store,
    state_path: &std::path::Path,
    args: &WalkArgs,
    actor: &str,
) -> Result<i32, String> {
    let busy = "another signalbox walk is driving this walkthrough";
    let st = store
        .load(state_path)?
        .ok_or_else(|| format!("{busy}, and it has no saved state yet"))?;
    let (decision, reason) = if args.abort {
        (
            "abort",
            Some("aborted by the operator from another terminal".to_string()),
        )
    } else {
        let WalkStatus::AwaitingOperator { kind, reason } = &st.status else {
            return Err(format!(
                "{busy} and it is not paused ({}); to stop it, pass --abort",
                describe(&st)
            ));
        };
        match (args.retry, &args.skip, kind) {
            (true, _, _) => ("retry", None),
            (_, Some(r), _) if !r.trim().is_empty() => ("skip", Some(r.clone())),
            (_, Some(_), _) => return Err("--skip needs a reason".into()),
            (_, None, PauseKind::Approval) if args.resume => ("continue", None),
            (_, None, PauseKind::Inconclusive) if args.resume => ("retry", None),
            _ if args.resume => {
                return Err(format!(
                    "{busy}; it is paused ({reason}): say --retry, --skip REASON or --abort"
                ));
            }
            _ => {
                return Err(format!(
                    "{busy} (paused: {reason}); to decide from here pass --resume, --retry, --skip REASON or --abort"
                ));
            }
        }
    };
    store.send_decision(
        state_path,
        &crate::walk::store::DecisionRequest {
            step: st.cursor,
            decision: decision.into(),
            reason,
            actor: actor.to_string(),
        },
    )?;
    println!(
        "sent {decision} to the running walkthrough (at step {}: {})",
        st.progress(),
        describe(&st)
    );
    Ok(EXIT_OK)
}

/// Ctrl-C and SIGTERM stop the walk at the next safe point (never in the middle of a
/// change) and save it.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.cancel();
    });
}

struct CliOperator {
    yes: bool,
    interactive: bool,
    no_wait: bool,
    /// The command that reaches this walkthrough, for messages.
    hint: String,
    input: std::sync::OnceLock<Input>,
}

impl CliOperator {
    fn input(&self) -> &Input {
        self.input.get_or_init(Input::spawn)
    }
}

/// Terminal input, read by one thread for the whole run. A prompt given up on (a decision
/// arrived from another terminal) leaves no reader behind to swallow the next answer.
struct Input {
    lines: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>,
}

impl Input {
    fn spawn() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line.trim().to_string()).is_err() {
                    break;
                }
            }
        });
        Self {
            lines: tokio::sync::Mutex::new(rx),
        }
    }

    /// Prints the prompt and waits for a line; `None` at end of input.
    async fn ask(&self, prompt: &str) -> Option<String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        self.lines.lock().await.recv().await
    }
}

impl Operator for CliOperator {
    async fn confirm(&mut self, plan: &Plan) -> Confirm {
        if self.yes || plan.confirm == ConfirmPolicy::None {
            return Confirm::Yes;
        }
        if !self.interactive {
            return Confirm::Unavailable;
        }
        eprintln!("  {}: {}", plan.env, plan.description);
        eprintln!("  before: {}", plan.before);
        eprintln!("  after:  {}", plan.after);
        let (prompt, want) = match plan.confirm {
            ConfirmPolicy::TypeName => (
                format!("  type the environment's name ({}) to apply: ", plan.env),
                plan.env.clone(),
            ),
            _ => (format!("  apply to {}? [y/N] ", plan.env), "y".into()),
        };
        match self.input().ask(&prompt).await {
            Some(a) if a == want || (want == "y" && a.eq_ignore_ascii_case("yes")) => Confirm::Yes,
            _ => Confirm::No,
        }
    }

    async fn decide(
        &mut self,
        st: &WalkState,
        kind: PauseKind,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Option<Decision> {
        if !self.interactive {
            if kind == PauseKind::Error {
                // Nobody to ask whether to retry: undo the release.
                return Some(Decision::Abort(
                    crate::walk::Cause::Error,
                    reason.to_string(),
                ));
            }
            if self.no_wait {
                return None;
            }
            // Wait: for the pause's timeout (the engine enforces it), a decision sent from
            // another terminal (the engine watches for it), or a signal.
            let timeout = st
                .steps
                .get(st.cursor)
                .and_then(|s| s.deadline)
                .filter(|_| kind == PauseKind::Approval)
                .map(|d| format!(" (timeout at {} UTC)", d.format("%H:%M:%S")))
                .unwrap_or_default();
            self.progress(
                &format!(
                    "waiting for an operator{timeout}: from another terminal run `{} --resume` (or --retry, --skip REASON, --abort)",
                    self.hint
                ),
                st,
            );
            cancel.cancelled().await;
            return None;
        }
        if self.no_wait {
            return None;
        }
        let options = match kind {
            PauseKind::Approval | PauseKind::Inconclusive => "[c]ontinue, [r]etry, [s]kip, [a]bort",
            PauseKind::Error | PauseKind::Interrupted => "[r]etry, [s]kip, [a]bort",
        };
        loop {
            let prompt = format!("  {reason}\n  {options}? ");
            let answer = tokio::select! {
                a = self.input().ask(&prompt) => a,
                _ = cancel.cancelled() => return None,
            };
            let answer = answer?;
            match answer.as_str() {
                "c" | "continue" if options.contains("[c]") => return Some(Decision::Continue),
                "r" | "retry" => return Some(Decision::Retry),
                "s" | "skip" => {
                    let why = self
                        .input()
                        .ask("  reason for skipping (recorded): ")
                        .await?;
                    if !why.trim().is_empty() {
                        return Some(Decision::Skip(why));
                    }
                }
                "a" | "abort" => {
                    let why = self
                        .input()
                        .ask("  reason for aborting (recorded): ")
                        .await?;
                    return Some(Decision::Abort(
                        crate::walk::Cause::Operator,
                        if why.trim().is_empty() {
                            "aborted by the operator".into()
                        } else {
                            why
                        },
                    ));
                }
                _ => {}
            }
        }
    }

    fn progress(&mut self, line: &str, _st: &WalkState) {
        if !line.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{} {line}", chrono::Utc::now().format("%H:%M:%S"));
            let _ = out.flush();
        }
    }
}
