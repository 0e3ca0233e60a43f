//! The walkthrough inside the cockpit: what the engine reported (state, progress lines, a
//! question or a change to confirm) and how keys answer it. The engine runs on its own
//! task (`run`); answers leave as [`Command::WalkAnswer`], keyed by the question's id.

use std::collections::VecDeque;

use super::{App, Command, ConfirmDialog, PlanView, ToastKind};
use crate::control::envfile::ConfirmPolicy;
use crate::tui::keymap::{Key, KeyAction, View};
use crate::walk::machine::{Cause, Decision, PauseKind, WalkOutcome, WalkState};

/// Progress lines kept for the log panel.
const MAX_LINES: usize = 200;
const MAX_REASON: usize = 200;

/// What the walkthrough's task tells the cockpit.
#[derive(Clone, Debug)]
pub enum WalkEvent {
    /// The runbook loaded, its lock is held, the engine is connected.
    Started {
        env: String,
        notice: Option<String>,
    },
    State(Box<WalkState>),
    Line(String),
    /// The walk is paused: answer with a decision.
    Decide {
        id: u64,
        kind: PauseKind,
        reason: String,
    },
    /// A change is about to be applied: yes or no.
    Confirm {
        id: u64,
        plan: PlanView,
    },
    Ended(WalkEnd),
}

/// How the engine's run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum WalkEnd {
    Finished {
        outcome: WalkOutcome,
        note: String,
    },
    /// Saved at a pause nobody could answer.
    Paused(String),
    /// Stopped at a safe point (the cockpit quit); saved for `--resume`.
    Interrupted,
    /// It could not start, or failed outside any step.
    Error(String),
}

impl WalkEnd {
    /// `signalbox walk`'s exit code: 0 released, 2 rolled back, 1 error, 3 paused.
    pub fn exit_code(&self) -> i32 {
        match self {
            WalkEnd::Finished { outcome, .. } => outcome.exit_code(),
            WalkEnd::Paused(_) | WalkEnd::Interrupted => 3,
            WalkEnd::Error(_) => 1,
        }
    }
}

/// The operator's answer to a question of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkAnswer {
    Decision(Decision),
    Confirm(bool),
}

/// A pause waiting for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub id: u64,
    pub kind: PauseKind,
    pub reason: String,
}

impl Question {
    /// Continue approves a pause or accepts an inconclusive analysis; a failed or
    /// interrupted step can only be retried, skipped or aborted.
    pub fn can_continue(&self) -> bool {
        matches!(self.kind, PauseKind::Approval | PauseKind::Inconclusive)
    }
}

/// A popup of the walkthrough view that needs an answer first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkPrompt {
    /// Skipping needs a reason; it goes in the audit journal.
    Skip { reason: String },
    /// Aborting rolls back; the reason (optional) goes in the release note.
    Abort { reason: String },
    /// Quitting while the walk runs: it stops at its next safe point, saved.
    Quit,
}

pub struct WalkUi {
    /// The runbook as the operator named it.
    pub runbook: String,
    /// The environment it runs against (known once started).
    pub env: Option<String>,
    pub state: Option<WalkState>,
    pub lines: VecDeque<String>,
    pub question: Option<Question>,
    /// A change to confirm while another dialog was open, or set aside by the operator.
    pub queued_confirm: Option<(u64, PlanView)>,
    /// The operator set the confirmation aside to look around: it comes back in the
    /// walkthrough view, not wherever they are.
    pub confirm_aside: bool,
    pub prompt: Option<WalkPrompt>,
    /// `None` while the engine runs.
    pub end: Option<WalkEnd>,
}

impl WalkUi {
    pub fn new(runbook: impl Into<String>) -> Self {
        Self {
            runbook: runbook.into(),
            env: None,
            state: None,
            lines: VecDeque::new(),
            question: None,
            queued_confirm: None,
            confirm_aside: false,
            prompt: None,
            end: None,
        }
    }

    pub fn running(&self) -> bool {
        self.end.is_none()
    }

    /// The environment whose live panel goes beside the walk: the current step's.
    pub fn live_env(&self) -> Option<&str> {
        let st = self.state.as_ref()?;
        st.steps
            .get(st.cursor)
            .or(st.steps.last())
            .map(|s| s.env.as_str())
            .or(self.env.as_deref())
    }

    fn push_line(&mut self, line: String) {
        if self.lines.len() >= MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

impl App {
    /// The label of an action's key(s), for messages.
    pub(crate) fn key_label(&self, a: KeyAction) -> String {
        self.keymap
            .binding(a)
            .map_or_else(|| "?".into(), |b| b.label.clone())
    }

    /// What the walk view offers at a pause, from the keymap in force.
    pub fn walk_actions_text(&self) -> String {
        let Some(q) = self.walk.as_ref().and_then(|w| w.question.as_ref()) else {
            return String::new();
        };
        let mut v = Vec::new();
        if q.can_continue() {
            v.push(format!(
                "{} continue",
                self.key_label(KeyAction::WalkContinue)
            ));
        }
        v.push(format!("{} skip", self.key_label(KeyAction::WalkSkip)));
        v.push(format!("{} retry", self.key_label(KeyAction::WalkRetry)));
        v.push(format!("{} abort", self.key_label(KeyAction::WalkAbort)));
        v.join(" · ")
    }

    /// `walk RUNBOOK`: one walkthrough at a time.
    pub(crate) fn start_walk(
        &mut self,
        runbook: String,
        env: Option<String>,
        resume: bool,
    ) -> Vec<Command> {
        if self.walk.as_ref().is_some_and(WalkUi::running) {
            let key = self.key_label(KeyAction::WalkView);
            self.toast(
                ToastKind::Info,
                format!("a walkthrough is already running ({key} shows it)"),
            );
            self.view = View::Walk;
            return vec![];
        }
        self.walk = Some(WalkUi::new(runbook.clone()));
        self.view = View::Walk;
        vec![Command::StartWalk {
            runbook,
            env,
            resume,
        }]
    }

    /// q: with a walk running, ask first.
    pub(crate) fn quit(&mut self) -> Vec<Command> {
        match self.walk.as_mut() {
            Some(w) if w.running() => {
                w.prompt = Some(WalkPrompt::Quit);
                self.view = View::Walk;
                vec![]
            }
            _ => vec![Command::Quit],
        }
    }

    fn no_walk(&mut self) {
        self.toast(
            ToastKind::Info,
            "no walkthrough: start one with :walk RUNBOOK",
        );
    }

    /// The pause being answered, or a toast saying why there is none.
    fn question(&mut self, what: &str) -> Option<Question> {
        let Some(w) = self.walk.as_ref() else {
            self.no_walk();
            return None;
        };
        if let Some(q) = &w.question {
            return Some(q.clone());
        }
        let msg = match &w.end {
            Some(_) => format!("cannot {what}: the walkthrough is over"),
            None => format!("nothing to {what}: the walkthrough is not waiting for an operator"),
        };
        self.toast(ToastKind::Info, msg);
        None
    }

    fn answer(&mut self, id: u64, d: Decision) -> Vec<Command> {
        if let Some(w) = self.walk.as_mut() {
            w.question = None;
            w.prompt = None;
        }
        vec![Command::WalkAnswer {
            id,
            answer: WalkAnswer::Decision(d),
        }]
    }

    pub(crate) fn walk_action(&mut self, action: KeyAction) -> Vec<Command> {
        match action {
            KeyAction::WalkContinue => {
                let Some(q) = self.question("continue") else {
                    return vec![];
                };
                if !q.can_continue() {
                    let (r, s, a) = (
                        self.key_label(KeyAction::WalkRetry),
                        self.key_label(KeyAction::WalkSkip),
                        self.key_label(KeyAction::WalkAbort),
                    );
                    self.toast(
                        ToastKind::Info,
                        format!("this step did not pass: retry ({r}), skip ({s}) or abort ({a})"),
                    );
                    return vec![];
                }
                self.answer(q.id, Decision::Continue)
            }
            KeyAction::WalkRetry => match self.question("retry") {
                Some(q) => self.answer(q.id, Decision::Retry),
                None => vec![],
            },
            KeyAction::WalkSkip => {
                if self.question("skip").is_some()
                    && let Some(w) = self.walk.as_mut()
                {
                    w.prompt = Some(WalkPrompt::Skip {
                        reason: String::new(),
                    });
                }
                vec![]
            }
            KeyAction::WalkAbort => {
                match self.walk.as_mut() {
                    None => self.no_walk(),
                    Some(w) if !w.running() => {
                        self.toast(ToastKind::Info, "the walkthrough is over");
                    }
                    Some(w) => {
                        w.prompt = Some(WalkPrompt::Abort {
                            reason: String::new(),
                        })
                    }
                }
                vec![]
            }
            _ => vec![],
        }
    }

    /// Keys while a walk popup is open: typing, Enter to go ahead, Esc to go back.
    pub(crate) fn walk_prompt_key(&mut self, key: Key) -> Vec<Command> {
        let Some(w) = self.walk.as_mut() else {
            return vec![];
        };
        let Some(prompt) = w.prompt.as_mut() else {
            return vec![];
        };
        match (prompt, key) {
            (_, Key::Esc) => {
                w.prompt = None;
                vec![]
            }
            (WalkPrompt::Quit, Key::Enter | Key::Char('y')) => {
                w.prompt = None;
                vec![Command::StopWalk, Command::Quit]
            }
            // A second Ctrl-C means it.
            (WalkPrompt::Quit, Key::Interrupt) => vec![Command::StopWalk, Command::Quit],
            (WalkPrompt::Quit, _) => vec![],
            (_, Key::Interrupt) => {
                w.prompt = None;
                vec![]
            }
            (WalkPrompt::Skip { reason } | WalkPrompt::Abort { reason }, Key::Backspace) => {
                reason.pop();
                vec![]
            }
            (WalkPrompt::Skip { reason } | WalkPrompt::Abort { reason }, Key::Char(c))
                if reason.chars().count() < MAX_REASON =>
            {
                reason.push(c);
                vec![]
            }
            (WalkPrompt::Skip { reason }, Key::Enter) => {
                let reason = reason.trim().to_string();
                if reason.is_empty() {
                    return vec![];
                }
                match w.question.as_ref().map(|q| q.id) {
                    Some(id) => self.answer(id, Decision::Skip(reason)),
                    None => {
                        w.prompt = None;
                        vec![]
                    }
                }
            }
            (WalkPrompt::Abort { reason }, Key::Enter) => {
                let reason = match reason.trim() {
                    "" => "aborted by the operator".to_string(),
                    r => r.to_string(),
                };
                w.prompt = None;
                if let Some(id) = w.question.as_ref().map(|q| q.id) {
                    return self.answer(id, Decision::Abort(Cause::Operator, reason));
                }
                // Not paused (a wait, an analysis): handed to the engine, which stops at
                // its next safe point and rolls back.
                let step = w.state.as_ref().map_or(0, |s| s.cursor);
                self.toast(
                    ToastKind::Info,
                    "aborting: rolling back at the next safe point",
                );
                vec![Command::WalkAbort { step, reason }]
            }
            _ => vec![],
        }
    }

    /// Enter/y and Esc on a change the walk wants to make.
    pub(crate) fn walk_dialog_key(&mut self, d: &ConfirmDialog, key: Key) -> Vec<Command> {
        let typed = d.plan.confirm == ConfirmPolicy::TypeName;
        // The confirmation can be set aside to look at the live data first: the walk waits,
        // and its view brings the confirmation back. Tab always; the overview key too where
        // it cannot be part of a name being typed.
        let overview_key = self
            .keymap
            .lookup(key)
            .is_some_and(|b| b.action == KeyAction::Overview);
        if (key == Key::Tab || (!typed && overview_key))
            && let Some(w) = self.walk.as_mut()
        {
            w.queued_confirm = Some((d.id, d.plan.clone()));
            w.confirm_aside = true;
            self.dialog = None;
            self.view = View::Overview;
            let back = self.key_label(KeyAction::WalkView);
            self.toast(
                ToastKind::Info,
                format!("the walkthrough waits for your confirmation: {back} brings it back"),
            );
            return vec![];
        }
        let yes = match key {
            Key::Esc | Key::Interrupt => false,
            Key::Char('n') if !typed => false,
            Key::Enter if d.can_confirm() => true,
            Key::Char('y') if !typed && d.can_confirm() => true,
            Key::Enter => {
                if let Some(dd) = self.dialog.as_mut() {
                    dd.wrong_name = d.plan.allowed() && typed;
                }
                return vec![];
            }
            Key::Backspace => {
                if let Some(dd) = self.dialog.as_mut() {
                    dd.typed.pop();
                    dd.wrong_name = false;
                }
                return vec![];
            }
            Key::Char(c) if typed && d.typed.len() < 64 => {
                if let Some(dd) = self.dialog.as_mut() {
                    dd.typed.push(c);
                    dd.wrong_name = false;
                }
                return vec![];
            }
            _ => return vec![],
        };
        self.dialog = None;
        if !yes {
            self.toast(
                ToastKind::Info,
                "declined: nothing was changed; the walkthrough pauses",
            );
        }
        vec![Command::WalkAnswer {
            id: d.id,
            answer: WalkAnswer::Confirm(yes),
        }]
    }

    pub(crate) fn walk_event(&mut self, ev: WalkEvent) -> Vec<Command> {
        let in_view = self.view == View::Walk;
        let view_key = self.key_label(KeyAction::WalkView);
        let yes = self.walk_yes;
        let Some(w) = self.walk.as_mut() else {
            // Answers nobody asked for: decline a change, leave a pause paused.
            return match ev {
                WalkEvent::Confirm { id, .. } => vec![Command::WalkAnswer {
                    id,
                    answer: WalkAnswer::Confirm(false),
                }],
                _ => vec![],
            };
        };
        match ev {
            WalkEvent::Started { env, notice } => {
                w.env = Some(env);
                if let Some(n) = notice {
                    w.push_line(n.clone());
                    self.toast(ToastKind::Info, n);
                }
            }
            WalkEvent::State(st) => w.state = Some(*st),
            WalkEvent::Line(l) => w.push_line(l),
            WalkEvent::Decide { id, kind, reason } => {
                w.question = Some(Question {
                    id,
                    kind,
                    reason: reason.clone(),
                });
                if !in_view {
                    self.toast(
                        ToastKind::Info,
                        format!("walkthrough paused: {reason} ({view_key} to decide)"),
                    );
                }
            }
            WalkEvent::Confirm { id, plan } => {
                // As for manual changes: an environment that asks for no confirmation (or
                // `--yes`) goes ahead; the engine never asks past a failed check.
                if plan.allowed() && (yes || plan.confirm == ConfirmPolicy::None) {
                    return vec![Command::WalkAnswer {
                        id,
                        answer: WalkAnswer::Confirm(true),
                    }];
                }
                w.queued_confirm = Some((id, plan));
                if !in_view {
                    self.toast(
                        ToastKind::Info,
                        "the walkthrough asks to confirm a change".to_string(),
                    );
                }
            }
            WalkEvent::Ended(end) => {
                w.question = None;
                if matches!(
                    w.prompt,
                    Some(WalkPrompt::Abort { .. } | WalkPrompt::Skip { .. })
                ) {
                    w.prompt = None;
                }
                let (kind, text) = match &end {
                    WalkEnd::Finished {
                        outcome: WalkOutcome::Released,
                        note,
                    } => (ToastKind::Success, format!("✓ released — note: {note}")),
                    WalkEnd::Finished { outcome, note } => (
                        ToastKind::Failure,
                        format!("✗ {} — note: {note}", outcome.summary()),
                    ),
                    WalkEnd::Paused(r) => (ToastKind::Info, format!("walkthrough saved: {r}")),
                    WalkEnd::Interrupted => (ToastKind::Info, "walkthrough saved".into()),
                    WalkEnd::Error(e) => (ToastKind::Failure, format!("walkthrough: {e}")),
                };
                w.push_line(text.clone());
                w.end = Some(end);
                self.toast(kind, text);
            }
        }
        vec![]
    }

    /// A change the walk wants confirmed is shown once no other dialog is open.
    pub(crate) fn show_queued_confirm(&mut self) {
        if self.dialog.is_some() {
            return;
        }
        let in_view = self.view == View::Walk;
        let Some(w) = self.walk.as_mut() else { return };
        if w.confirm_aside && !in_view {
            return;
        }
        w.confirm_aside = false;
        if let Some((id, plan)) = w.queued_confirm.take() {
            self.dialog = Some(ConfirmDialog {
                id,
                plan,
                typed: String::new(),
                wrong_name: false,
                walk: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{app_with, def, plan_view, t0};
    use super::super::{Event, update};
    use super::*;
    use crate::walk::runbook::parse_str;

    fn keys(app: &mut App, ks: &[Key]) -> Vec<Command> {
        ks.iter()
            .flat_map(|k| update(app, Event::Key(*k)))
            .collect()
    }

    fn type_text(app: &mut App, s: &str) -> Vec<Command> {
        s.chars()
            .flat_map(|c| update(app, Event::Key(Key::Char(c))))
            .collect()
    }

    pub(crate) fn state() -> WalkState {
        let rb = parse_str(
            "name: users to green\nenv: stage\nroute: users\nsteps:\n  - flip: { to: users-green }\n  - pause: { message: looks fine? }\n  - wait: 5s\n",
            "rb.yaml",
        )
        .unwrap();
        WalkState::new(
            "w1".into(),
            &rb,
            "rb.yaml",
            "sha",
            "alice@bastion",
            &rb.expand("stage"),
            t0(),
        )
    }

    /// A cockpit with a walk started from the palette, the engine reporting its state.
    fn walking(confirm: ConfirmPolicy) -> App {
        let mut app = app_with(vec![def("stage", confirm, false)], false);
        keys(&mut app, &[Key::Char(':')]);
        let cmds = type_text(&mut app, "walk rb.yaml --env stage");
        assert!(cmds.is_empty());
        let cmds = keys(&mut app, &[Key::Enter]);
        assert_eq!(
            cmds,
            vec![Command::StartWalk {
                runbook: "rb.yaml".into(),
                env: Some("stage".into()),
                resume: false
            }]
        );
        assert_eq!(app.view, View::Walk);
        update(
            &mut app,
            Event::Walk(WalkEvent::Started {
                env: "stage".into(),
                notice: None,
            }),
        );
        update(&mut app, Event::Walk(WalkEvent::State(Box::new(state()))));
        app
    }

    fn ask(app: &mut App, id: u64, kind: PauseKind) {
        update(
            app,
            Event::Walk(WalkEvent::Decide {
                id,
                kind,
                reason: "looks fine?".into(),
            }),
        );
    }

    fn answer(id: u64, d: Decision) -> Vec<Command> {
        vec![Command::WalkAnswer {
            id,
            answer: WalkAnswer::Decision(d),
        }]
    }

    #[test]
    fn the_palette_starts_one_walk_at_a_time_and_read_only_refuses_it() {
        let mut app = walking(ConfirmPolicy::Yes);
        keys(&mut app, &[Key::Char('o'), Key::Char(':')]);
        type_text(&mut app, "walk other.yaml");
        assert!(keys(&mut app, &[Key::Enter]).is_empty());
        assert_eq!(app.view, View::Walk, "shows the running one instead");
        assert!(
            app.toasts
                .iter()
                .any(|t| t.text.contains("already running"))
        );

        let mut ro = app_with(vec![def("stage", ConfirmPolicy::Yes, false)], true);
        keys(&mut ro, &[Key::Char(':')]);
        type_text(&mut ro, "walk rb.yaml");
        assert!(keys(&mut ro, &[Key::Enter]).is_empty());
        assert!(ro.walk.is_none());
        assert!(
            ro.input
                .as_ref()
                .and_then(|i| i.error.as_deref())
                .is_some_and(|e| e.contains("read-only"))
        );
        // Usage mistakes are explained in the palette.
        let mut app = app_with(vec![def("stage", ConfirmPolicy::Yes, false)], false);
        keys(&mut app, &[Key::Char(':')]);
        type_text(&mut app, "walk rb.yaml --env");
        assert!(keys(&mut app, &[Key::Enter]).is_empty());
        assert!(
            app.input
                .as_ref()
                .and_then(|i| i.error.as_deref())
                .is_some_and(|e| e.contains("usage: walk RUNBOOK")),
            "{:?}",
            app.input
        );
    }

    #[test]
    fn continue_and_retry_answer_the_pause() {
        let mut app = walking(ConfirmPolicy::Yes);
        // Nothing to answer yet.
        assert!(keys(&mut app, &[Key::Char('c')]).is_empty());
        assert!(app.toasts.iter().any(|t| t.text.contains("not waiting")));
        ask(&mut app, 7, PauseKind::Approval);
        assert_eq!(
            keys(&mut app, &[Key::Char('c')]),
            answer(7, Decision::Continue)
        );
        assert!(
            keys(&mut app, &[Key::Char('c')]).is_empty(),
            "answered once"
        );
        // A failed step cannot be continued past, only retried.
        ask(&mut app, 8, PauseKind::Error);
        assert!(keys(&mut app, &[Key::Char('c')]).is_empty());
        assert!(app.toasts.iter().any(|t| t.text.contains("did not pass")));
        assert_eq!(
            keys(&mut app, &[Key::Char('e')]),
            answer(8, Decision::Retry)
        );
    }

    #[test]
    fn skip_needs_a_typed_reason_and_esc_backs_out() {
        let mut app = walking(ConfirmPolicy::Yes);
        ask(&mut app, 3, PauseKind::Approval);
        assert!(keys(&mut app, &[Key::Char('s')]).is_empty());
        assert_eq!(
            app.walk.as_ref().and_then(|w| w.prompt.clone()),
            Some(WalkPrompt::Skip {
                reason: String::new()
            })
        );
        // Enter without a reason does nothing; typed keys go to the reason, not the keymap.
        assert!(keys(&mut app, &[Key::Enter]).is_empty());
        assert!(keys(&mut app, &[Key::Char(' '), Key::Enter]).is_empty());
        assert!(type_text(&mut app, "q").is_empty(), "q is typed, not quit");
        keys(&mut app, &[Key::Esc]);
        assert!(app.walk.as_ref().is_some_and(|w| w.prompt.is_none()));
        assert!(app.walk.as_ref().is_some_and(|w| w.question.is_some()));
        keys(&mut app, &[Key::Char('s')]);
        type_text(&mut app, "dashboards are down");
        assert_eq!(
            keys(&mut app, &[Key::Enter]),
            answer(3, Decision::Skip("dashboards are down".into()))
        );
    }

    #[test]
    fn abort_asks_first_and_rolls_back_paused_or_not() {
        let mut app = walking(ConfirmPolicy::Yes);
        // Running (no question): handed to the engine for its next safe point.
        assert!(keys(&mut app, &[Key::Char('A')]).is_empty());
        assert!(matches!(
            app.walk.as_ref().and_then(|w| w.prompt.clone()),
            Some(WalkPrompt::Abort { .. })
        ));
        assert!(keys(&mut app, &[Key::Esc]).is_empty(), "Esc keeps it going");
        keys(&mut app, &[Key::Char('A')]);
        type_text(&mut app, "wrong build");
        assert_eq!(
            keys(&mut app, &[Key::Enter]),
            vec![Command::WalkAbort {
                step: 0,
                reason: "wrong build".into()
            }]
        );
        // Paused: the answer to the pause, with the default reason.
        ask(&mut app, 4, PauseKind::Inconclusive);
        keys(&mut app, &[Key::Char('A')]);
        assert_eq!(
            keys(&mut app, &[Key::Enter]),
            answer(
                4,
                Decision::Abort(Cause::Operator, "aborted by the operator".into())
            )
        );
    }

    #[test]
    fn a_change_to_confirm_opens_the_dialog_enter_or_y_says_yes_esc_says_no() {
        let mut app = walking(ConfirmPolicy::Yes);
        let confirm = |app: &mut App, id| {
            update(
                app,
                Event::Walk(WalkEvent::Confirm {
                    id,
                    plan: plan_view("stage", ConfirmPolicy::Yes, true),
                }),
            )
        };
        assert!(confirm(&mut app, 1).is_empty());
        assert!(app.dialog.as_ref().is_some_and(|d| d.walk));
        let yes = |id| {
            vec![Command::WalkAnswer {
                id,
                answer: WalkAnswer::Confirm(true),
            }]
        };
        assert_eq!(keys(&mut app, &[Key::Enter]), yes(1));
        assert!(app.dialog.is_none());
        confirm(&mut app, 2);
        assert_eq!(keys(&mut app, &[Key::Char('y')]), yes(2));
        confirm(&mut app, 3);
        assert_eq!(
            keys(&mut app, &[Key::Esc]),
            vec![Command::WalkAnswer {
                id: 3,
                answer: WalkAnswer::Confirm(false)
            }]
        );
        // Type-name environments: the name, then Enter; y is just a letter.
        let mut app = walking(ConfirmPolicy::TypeName);
        update(
            &mut app,
            Event::Walk(WalkEvent::Confirm {
                id: 9,
                plan: plan_view("stage", ConfirmPolicy::TypeName, true),
            }),
        );
        assert!(keys(&mut app, &[Key::Char('y'), Key::Enter]).is_empty());
        keys(&mut app, &[Key::Backspace]);
        type_text(&mut app, "stage");
        assert_eq!(keys(&mut app, &[Key::Enter]), yes(9));
        // An environment without confirmation goes ahead at once.
        let c = update(
            &mut app,
            Event::Walk(WalkEvent::Confirm {
                id: 10,
                plan: plan_view("stage", ConfirmPolicy::None, true),
            }),
        );
        assert_eq!(c, yes(10));
        assert!(app.dialog.is_none());
    }

    #[test]
    fn a_confirm_can_be_set_aside_to_look_at_the_live_data_and_comes_back_in_the_walk_view() {
        for (policy, look) in [
            (ConfirmPolicy::Yes, Key::Char('o')),
            (ConfirmPolicy::TypeName, Key::Tab),
        ] {
            let mut app = walking(policy);
            update(
                &mut app,
                Event::Walk(WalkEvent::Confirm {
                    id: 3,
                    plan: plan_view("stage", policy, true),
                }),
            );
            assert!(app.dialog.as_ref().is_some_and(|d| d.walk));
            assert!(keys(&mut app, &[look]).is_empty(), "nothing is answered");
            assert!(app.dialog.is_none(), "{policy:?}: set aside");
            assert_eq!(app.view, View::Overview);
            // It stays aside while the operator looks around.
            keys(&mut app, &[Key::Char('a')]);
            assert!(app.dialog.is_none());
            keys(&mut app, &[Key::Char('W')]);
            assert!(app.dialog.as_ref().is_some_and(|d| d.walk && d.id == 3));
            assert_eq!(app.view, View::Walk);
        }
        // With type-name, `o` is part of the name, not a way out.
        let mut app = walking(ConfirmPolicy::TypeName);
        update(
            &mut app,
            Event::Walk(WalkEvent::Confirm {
                id: 4,
                plan: plan_view("stage", ConfirmPolicy::TypeName, true),
            }),
        );
        keys(&mut app, &[Key::Char('o')]);
        assert_eq!(app.dialog.as_ref().map(|d| d.typed.as_str()), Some("o"));
    }

    #[test]
    fn a_confirm_waits_for_an_open_manual_dialog() {
        let mut app = walking(ConfirmPolicy::Yes);
        app.dialog = Some(ConfirmDialog {
            id: 50,
            plan: plan_view("stage", ConfirmPolicy::Yes, true),
            typed: String::new(),
            wrong_name: false,
            walk: false,
        });
        update(
            &mut app,
            Event::Walk(WalkEvent::Confirm {
                id: 2,
                plan: plan_view("stage", ConfirmPolicy::Yes, true),
            }),
        );
        assert_eq!(app.dialog.as_ref().map(|d| d.id), Some(50));
        assert_eq!(
            keys(&mut app, &[Key::Esc]),
            vec![Command::Cancel { id: 50 }]
        );
        assert!(app.dialog.as_ref().is_some_and(|d| d.walk && d.id == 2));
    }

    #[test]
    fn quitting_a_running_walk_asks_and_stops_it_safely() {
        let mut app = walking(ConfirmPolicy::Yes);
        keys(&mut app, &[Key::Char('o')]);
        assert!(keys(&mut app, &[Key::Char('q')]).is_empty());
        assert_eq!(app.view, View::Walk);
        assert!(keys(&mut app, &[Key::Esc]).is_empty(), "stay");
        keys(&mut app, &[Key::Char('q')]);
        assert_eq!(
            keys(&mut app, &[Key::Char('y')]),
            vec![Command::StopWalk, Command::Quit]
        );
        // Once it has ended, q quits at once.
        update(
            &mut app,
            Event::Walk(WalkEvent::Ended(WalkEnd::Finished {
                outcome: WalkOutcome::Released,
                note: "/tmp/note.md".into(),
            })),
        );
        assert!(app.toasts.iter().any(|t| t.text.contains("✓ released")));
        assert_eq!(keys(&mut app, &[Key::Char('q')]), vec![Command::Quit]);
    }

    #[test]
    fn walk_keys_work_only_in_the_walk_view_and_manual_rollback_not_there() {
        let mut app = walking(ConfirmPolicy::Yes);
        ask(&mut app, 5, PauseKind::Approval);
        keys(&mut app, &[Key::Char('o')]);
        assert!(keys(&mut app, &[Key::Char('c')]).is_empty());
        keys(&mut app, &[Key::Char('W')]);
        assert_eq!(app.view, View::Walk);
        assert!(keys(&mut app, &[Key::Char('r'), Key::Char('+')]).is_empty());
        assert!(app.busy.is_none(), "no manual change from the walk view");
        assert_eq!(
            keys(&mut app, &[Key::Char('c')]),
            answer(5, Decision::Continue)
        );
    }

    #[test]
    fn exit_codes_follow_the_cli_contract() {
        let released = WalkEnd::Finished {
            outcome: WalkOutcome::Released,
            note: String::new(),
        };
        let rolled = WalkEnd::Finished {
            outcome: WalkOutcome::RolledBack {
                cause: Cause::Gate,
                reason: "x".into(),
            },
            note: String::new(),
        };
        assert_eq!(released.exit_code(), 0);
        assert_eq!(rolled.exit_code(), 2);
        assert_eq!(WalkEnd::Error("x".into()).exit_code(), 1);
        assert_eq!(WalkEnd::Interrupted.exit_code(), 3);
        assert_eq!(WalkEnd::Paused("x".into()).exit_code(), 3);
    }
}
