//! The cockpit's state and how events change it. Pure: no I/O, no clock reads. `run` feeds
//! events in (keys, ticks carrying the time, backend results) and carries out the commands
//! that come back. A change goes ConfirmAction → plan → dialog → ConfirmedAction → execute.

use chrono::{DateTime, Utc};

use super::keymap::{self, Key, KeyAction};
use crate::control::envfile::{ConfirmPolicy, EnvDef};
use crate::control::{Plan, Report};
use crate::domain::{Action, Check, GatewayStatus, Outcome, RevisionInfo};

/// Data older than this is marked stale.
pub const STALE_AFTER_SECS: i64 = 3;
const TOAST_OK_SECS: i64 = 5;
const TOAST_FAIL_SECS: i64 = 12;
const MAX_TOASTS: usize = 3;

#[derive(Clone, Debug)]
pub enum Event {
    Key(Key),
    Tick(DateTime<Utc>),
    /// A poll of one environment (index into `App::envs`).
    EnvUpdate {
        env: usize,
        status: Result<GatewayStatus, String>,
        /// `None` when the revisions could not be read this time (the old ones are kept).
        revisions: Option<Vec<RevisionInfo>>,
        at: DateTime<Utc>,
    },
    Planned {
        id: u64,
        result: Result<PlanView, String>,
    },
    Executed {
        id: u64,
        result: ExecResult,
    },
}

/// What the app asks `run` to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// ConfirmAction: work out the plan (preflight, before → after) for `action`.
    Plan {
        id: u64,
        env: String,
        action: Action,
    },
    /// ConfirmedAction: the operator confirmed plan `id`; apply it.
    Execute {
        id: u64,
    },
    /// The operator declined plan `id` (recorded in the journal as cancelled).
    Cancel {
        id: u64,
    },
    Quit,
}

/// A plan as the dialog shows it; the plan itself stays with `run`, keyed by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanView {
    pub env: String,
    pub description: String,
    pub before: String,
    pub after: String,
    pub checks: Vec<Check>,
    pub confirm: ConfirmPolicy,
    pub base_revision: u64,
}

impl PlanView {
    pub fn allowed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> Self {
        Self {
            env: p.env.clone(),
            description: p.description.clone(),
            before: p.before.clone(),
            after: p.after.clone(),
            checks: p.checks.clone(),
            confirm: p.confirm,
            base_revision: p.base_revision,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    pub outcome: Outcome,
    pub revision: Option<u64>,
    pub error: Option<String>,
}

impl From<&Report> for ExecResult {
    fn from(r: &Report) -> Self {
        Self {
            outcome: r.outcome,
            revision: r.revision,
            error: r.error.clone(),
        }
    }
}

/// The confirmation popup for one plan.
#[derive(Clone, Debug)]
pub struct ConfirmDialog {
    pub id: u64,
    pub plan: PlanView,
    /// What the operator has typed (for `confirm = "type-name"`).
    pub typed: String,
}

impl ConfirmDialog {
    /// Enter goes through only when every check passed and, for type-name environments,
    /// the name was typed exactly.
    pub fn can_confirm(&self) -> bool {
        self.plan.allowed()
            && (self.plan.confirm != ConfirmPolicy::TypeName || self.typed == self.plan.env)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToastKind {
    Success,
    Info,
    Failure,
}

#[derive(Clone, Debug)]
pub struct Toast {
    pub kind: ToastKind,
    pub text: String,
    pub until: DateTime<Utc>,
}

/// A change between key press and result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Busy {
    Planning { id: u64, what: String },
    Applying { id: u64, what: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No answer yet.
    Unknown,
    Ok,
    /// Answering, but an upstream that gets traffic has no healthy target.
    Degraded,
    /// The last poll failed.
    Down,
}

pub struct EnvState {
    pub def: EnvDef,
    pub status: Option<GatewayStatus>,
    pub revisions: Vec<RevisionInfo>,
    /// The last poll's error, cleared by the next success.
    pub error: Option<String>,
    /// When `status` was last read successfully.
    pub updated: Option<DateTime<Utc>>,
    pub selected: usize,
}

impl EnvState {
    pub fn new(def: EnvDef) -> Self {
        Self {
            def,
            status: None,
            revisions: Vec::new(),
            error: None,
            updated: None,
            selected: 0,
        }
    }

    pub fn health(&self) -> Health {
        if self.error.is_some() {
            return Health::Down;
        }
        let Some(s) = &self.status else {
            return Health::Unknown;
        };
        let starved = s.routes.iter().any(|r| {
            r.split
                .iter()
                .any(|(up, w)| *w > 0 && s.upstream(up).is_none_or(|u| u.healthy_targets() == 0))
        });
        if starved {
            Health::Degraded
        } else {
            Health::Ok
        }
    }

    /// Seconds since the last good read.
    pub fn age_secs(&self, now: DateTime<Utc>) -> Option<i64> {
        self.updated.map(|t| (now - t).num_seconds().max(0))
    }

    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.age_secs(now).is_some_and(|a| a > STALE_AFTER_SECS)
    }

    pub fn selected_route(&self) -> Option<&crate::domain::RouteStatus> {
        self.status.as_ref()?.routes.get(self.selected)
    }
}

pub struct App {
    pub envs: Vec<EnvState>,
    pub current: usize,
    /// `--read-only`: every environment is read-only.
    pub read_only: bool,
    pub now: DateTime<Utc>,
    pub dialog: Option<ConfirmDialog>,
    pub busy: Option<Busy>,
    pub toasts: Vec<Toast>,
    pub help: bool,
    next_id: u64,
}

impl App {
    pub fn new(defs: Vec<EnvDef>, current: usize, read_only: bool, now: DateTime<Utc>) -> Self {
        let current = current.min(defs.len().saturating_sub(1));
        Self {
            envs: defs.into_iter().map(EnvState::new).collect(),
            current,
            read_only,
            now,
            dialog: None,
            busy: None,
            toasts: Vec::new(),
            help: false,
            next_id: 1,
        }
    }

    pub fn env(&self) -> Option<&EnvState> {
        self.envs.get(self.current)
    }

    /// Read-only for the current environment: globally, or by the environment's own setting.
    pub fn is_read_only(&self) -> bool {
        self.read_only || self.env().is_some_and(|e| e.def.read_only)
    }

    fn toast(&mut self, kind: ToastKind, text: impl Into<String>) {
        let secs = if kind == ToastKind::Failure {
            TOAST_FAIL_SECS
        } else {
            TOAST_OK_SECS
        };
        self.toasts.push(Toast {
            kind,
            text: text.into(),
            until: self.now + chrono::Duration::seconds(secs),
        });
        if self.toasts.len() > MAX_TOASTS {
            self.toasts.remove(0);
        }
    }

    fn request(&mut self, action: Action) -> Vec<Command> {
        let Some(env) = self.env() else {
            return vec![];
        };
        if self.busy.is_some() {
            self.toast(
                ToastKind::Info,
                "another change is in progress; wait for its result",
            );
            return vec![];
        }
        let env = env.def.name.clone();
        let id = self.next_id;
        self.next_id += 1;
        self.busy = Some(Busy::Planning {
            id,
            what: format!("{env}: {action}"),
        });
        vec![Command::Plan { id, env, action }]
    }

    fn canary_step(&mut self, up: bool) -> Vec<Command> {
        let Some(env) = self.env() else {
            return vec![];
        };
        let step = env.def.canary_step;
        let Some(route) = env.selected_route() else {
            self.toast(ToastKind::Info, "no route selected");
            return vec![];
        };
        let Some((_, canary)) = route.canary_pair() else {
            let msg = format!("route {} has no canary side", route.name);
            self.toast(ToastKind::Info, msg);
            return vec![];
        };
        let current = route.percent(canary);
        let percent = if up {
            (current + step).min(100)
        } else {
            current.saturating_sub(step)
        };
        if percent == current {
            let msg = format!("{} canary is already at {current}%", route.name);
            self.toast(ToastKind::Info, msg);
            return vec![];
        }
        let route = route.name.clone();
        self.request(Action::SetCanary { route, percent })
    }

    fn main_key(&mut self, key: Key) -> Vec<Command> {
        let Some(binding) = keymap::lookup(key) else {
            return vec![];
        };
        if binding.mutating && self.is_read_only() {
            return vec![];
        }
        match binding.action {
            KeyAction::Quit => return vec![Command::Quit],
            KeyAction::Help => self.help = !self.help,
            KeyAction::EnvByNumber => {
                if let Key::Char(c) = key
                    && let Some(n) = c.to_digit(10)
                    && n >= 1
                    && (n as usize) <= self.envs.len()
                {
                    self.current = n as usize - 1;
                }
            }
            KeyAction::NextEnv if !self.envs.is_empty() => {
                self.current = (self.current + 1) % self.envs.len();
            }
            KeyAction::PrevEnv if !self.envs.is_empty() => {
                self.current = (self.current + self.envs.len() - 1) % self.envs.len();
            }
            KeyAction::NextEnv | KeyAction::PrevEnv => {}
            KeyAction::Down | KeyAction::Up => {
                let down = binding.action == KeyAction::Down;
                if let Some(e) = self.envs.get_mut(self.current) {
                    let n = e.status.as_ref().map_or(0, |s| s.routes.len());
                    if n > 0 {
                        e.selected = if down {
                            (e.selected + 1).min(n - 1)
                        } else {
                            e.selected.saturating_sub(1)
                        };
                    }
                }
            }
            KeyAction::CanaryUp => return self.canary_step(true),
            KeyAction::CanaryDown => return self.canary_step(false),
            KeyAction::Flip => {
                let Some(route) = self.env().and_then(|e| e.selected_route()) else {
                    self.toast(ToastKind::Info, "no route selected");
                    return vec![];
                };
                let route = route.name.clone();
                return self.request(Action::Flip { route, to: None });
            }
            KeyAction::Rollback => return self.request(Action::Rollback { to: None }),
            KeyAction::Rollforward => return self.request(Action::Rollforward),
        }
        vec![]
    }

    fn dialog_key(&mut self, key: Key) -> Vec<Command> {
        let Some(d) = self.dialog.as_mut() else {
            return vec![];
        };
        match key {
            Key::Esc | Key::Interrupt => {
                let id = d.id;
                self.dialog = None;
                self.toast(ToastKind::Info, "cancelled: nothing was changed");
                vec![Command::Cancel { id }]
            }
            Key::Enter if d.can_confirm() => {
                let id = d.id;
                let what = format!("{}: {}", d.plan.env, d.plan.description);
                self.dialog = None;
                self.busy = Some(Busy::Applying { id, what });
                vec![Command::Execute { id }]
            }
            Key::Backspace => {
                d.typed.pop();
                vec![]
            }
            Key::Char(c) if d.plan.confirm == ConfirmPolicy::TypeName && d.typed.len() < 64 => {
                d.typed.push(c);
                vec![]
            }
            _ => vec![],
        }
    }

    fn planned(&mut self, id: u64, result: Result<PlanView, String>) -> Vec<Command> {
        if !matches!(&self.busy, Some(Busy::Planning { id: b, .. }) if *b == id) {
            // A plan nobody is waiting for any more: drop it, recorded as cancelled.
            return if result.is_ok() {
                vec![Command::Cancel { id }]
            } else {
                vec![]
            };
        }
        match result {
            Err(e) => {
                self.busy = None;
                self.toast(ToastKind::Failure, format!("cannot plan: {e}"));
                vec![]
            }
            Ok(plan) if plan.allowed() && plan.confirm == ConfirmPolicy::None => {
                // The environment asks for no confirmation: straight to execution.
                let what = format!("{}: {}", plan.env, plan.description);
                self.busy = Some(Busy::Applying { id, what });
                vec![Command::Execute { id }]
            }
            Ok(plan) => {
                self.busy = None;
                self.dialog = Some(ConfirmDialog {
                    id,
                    plan,
                    typed: String::new(),
                });
                vec![]
            }
        }
    }

    fn executed(&mut self, id: u64, r: ExecResult) {
        let what = match &self.busy {
            Some(Busy::Applying { id: b, what }) if *b == id => what.clone(),
            _ => format!("change {id}"),
        };
        if matches!(&self.busy, Some(Busy::Applying { id: b, .. }) if *b == id) {
            self.busy = None;
        }
        let err = r.error.as_deref().unwrap_or("no detail");
        let (kind, text) = match r.outcome {
            Outcome::Applied => (
                ToastKind::Success,
                match r.revision {
                    Some(n) => format!("✓ applied as revision {n}: {what}"),
                    None => format!("✓ applied: {what}"),
                },
            ),
            Outcome::Refused => (ToastKind::Failure, format!("✗ refused: {what}: {err}")),
            Outcome::Cancelled => (ToastKind::Info, format!("cancelled: {what}")),
            Outcome::Conflict => (ToastKind::Failure, format!("✗ conflict: {err}")),
            Outcome::Unverified => (ToastKind::Failure, format!("? unverified: {what}: {err}")),
            Outcome::Failed => (ToastKind::Failure, format!("✗ failed: {what}: {err}")),
        };
        self.toast(kind, text);
    }
}

/// Applies one event; returns what `run` must do. Never does I/O.
pub fn update(app: &mut App, event: Event) -> Vec<Command> {
    match event {
        Event::Key(k) if app.dialog.is_some() => app.dialog_key(k),
        Event::Key(k) if app.help => {
            // Any key closes help; q still quits.
            app.help = false;
            if matches!(k, Key::Char('q') | Key::Interrupt) {
                vec![Command::Quit]
            } else {
                vec![]
            }
        }
        Event::Key(k) => app.main_key(k),
        Event::Tick(now) => {
            app.now = now;
            app.toasts.retain(|t| t.until > now);
            vec![]
        }
        Event::EnvUpdate {
            env,
            status,
            revisions,
            at,
        } => {
            if let Some(e) = app.envs.get_mut(env) {
                match status {
                    Ok(s) => {
                        e.selected = e.selected.min(s.routes.len().saturating_sub(1));
                        e.status = Some(s);
                        e.error = None;
                        e.updated = Some(at);
                    }
                    // The last good status stays on screen, marked stale, beside the error.
                    Err(err) => e.error = Some(err),
                }
                if let Some(r) = revisions {
                    e.revisions = r;
                }
            }
            vec![]
        }
        Event::Planned { id, result } => app.planned(id, result),
        Event::Executed { id, result } => {
            app.executed(id, result);
            vec![]
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::RouteStatus;
    use crate::domain::status::{TargetStatus, UpstreamStatus};

    pub fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T14:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    pub fn def(name: &str, confirm: ConfirmPolicy, read_only: bool) -> EnvDef {
        EnvDef {
            name: name.into(),
            kind: Default::default(),
            admin_url: format!("http://127.0.0.1:9{}", name.len()),
            context: None,
            namespace: None,
            kubeconfig: None,
            promote_from: None,
            kube: Default::default(),
            token_env: None,
            token_file: None,
            confirm,
            read_only,
            max_canary_step: Some(25),
            canary_step: 5,
            freeze: vec![],
            metrics: None,
        }
    }

    fn route(name: &str, split: &[(&str, u32)], canary: Option<&str>) -> RouteStatus {
        RouteStatus {
            name: name.into(),
            paths: vec![format!("/api/{name}")],
            exact_paths: vec![],
            methods: vec!["GET".into(), "POST".into()],
            hosts: vec![],
            split: split.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            canary_by_header: None,
            canary: canary.map(String::from),
            sticky: None,
            filters: vec!["rate_limit".into()],
            flag: None,
        }
    }

    fn upstream(name: &str, healthy: bool) -> UpstreamStatus {
        UpstreamStatus {
            name: name.into(),
            targets: vec![TargetStatus {
                addr: "127.0.0.1:17010".into(),
                healthy,
                ejected: false,
            }],
        }
    }

    pub fn status(rev: u64, payments_canary: u32) -> GatewayStatus {
        GatewayStatus {
            revision: rev,
            config_hash: "abc".into(),
            routes: vec![
                route("users", &[("users-blue", 100), ("users-green", 0)], None),
                route(
                    "payments",
                    &[
                        ("payments-v1", 100 - payments_canary),
                        ("payments-v2", payments_canary),
                    ],
                    Some("payments-v2"),
                ),
                route("orders", &[("orders-v1", 100)], None),
            ],
            upstreams: vec![
                upstream("users-blue", true),
                upstream("users-green", true),
                upstream("payments-v1", true),
                upstream("payments-v2", true),
                upstream("orders-v1", true),
            ],
            flags: vec![],
        }
    }

    pub fn app_with(defs: Vec<EnvDef>, read_only: bool) -> App {
        let n = defs.len();
        let mut app = App::new(defs, 0, read_only, t0());
        for i in 0..n {
            update(
                &mut app,
                Event::EnvUpdate {
                    env: i,
                    status: Ok(status(4, 5)),
                    revisions: Some(vec![]),
                    at: t0(),
                },
            );
        }
        app
    }

    pub fn plan_view(env: &str, confirm: ConfirmPolicy, pass: bool) -> PlanView {
        PlanView {
            env: env.into(),
            description: "set payments canary to 10%".into(),
            before: "payments: payments-v1 95 / payments-v2 5".into(),
            after: "payments: payments-v1 90 / payments-v2 10".into(),
            checks: vec![
                Check::pass("environment is writable", "not read-only"),
                if pass {
                    Check::pass("payments-v2 is healthy", "1/1 targets healthy")
                } else {
                    Check::fail("payments-v2 is healthy", "0/1 targets healthy")
                },
            ],
            confirm,
            base_revision: 4,
        }
    }

    fn keys(app: &mut App, ks: &[Key]) -> Vec<Command> {
        ks.iter()
            .flat_map(|k| update(app, Event::Key(*k)))
            .collect()
    }

    #[test]
    fn plus_plans_a_canary_step_of_the_envs_size() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::TypeName, false)], false);
        let cmds = keys(&mut app, &[Key::Char('j'), Key::Char('+')]);
        assert_eq!(
            cmds,
            vec![Command::Plan {
                id: 1,
                env: "prod".into(),
                action: Action::SetCanary {
                    route: "payments".into(),
                    percent: 10
                }
            }]
        );
        // A second change waits for the first.
        assert!(keys(&mut app, &[Key::Char('-')]).is_empty());
    }

    #[test]
    fn minus_stops_at_zero_and_routes_without_canary_say_so() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        assert!(
            keys(&mut app, &[Key::Char('+')]).is_empty(),
            "users has no canary"
        );
        assert!(app.toasts.iter().any(|t| t.text.contains("no canary side")));
        let cmds = keys(&mut app, &[Key::Down, Key::Char('-')]);
        assert_eq!(
            cmds,
            vec![Command::Plan {
                id: 1,
                env: "dev".into(),
                action: Action::SetCanary {
                    route: "payments".into(),
                    percent: 0
                }
            }]
        );
    }

    #[test]
    fn flip_rollback_rollforward_and_quit() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::Yes, false)], false);
        let c = keys(&mut app, &[Key::Char('f')]);
        assert!(
            matches!(&c[..], [Command::Plan { action: Action::Flip { route, to: None }, .. }] if route == "users")
        );
        app.busy = None;
        let c = keys(&mut app, &[Key::Char('r')]);
        assert!(matches!(
            &c[..],
            [Command::Plan {
                action: Action::Rollback { to: None },
                ..
            }]
        ));
        app.busy = None;
        let c = keys(&mut app, &[Key::Char('R')]);
        assert!(matches!(
            &c[..],
            [Command::Plan {
                action: Action::Rollforward,
                ..
            }]
        ));
        assert_eq!(keys(&mut app, &[Key::Char('q')]), vec![Command::Quit]);
    }

    #[test]
    fn digits_and_tab_switch_environments() {
        let mut app = app_with(
            vec![
                def("dev", ConfirmPolicy::None, false),
                def("stage", ConfirmPolicy::Yes, false),
                def("prod", ConfirmPolicy::TypeName, false),
            ],
            false,
        );
        keys(&mut app, &[Key::Char('3')]);
        assert_eq!(app.current, 2);
        keys(&mut app, &[Key::Char('9')]);
        assert_eq!(app.current, 2, "no ninth environment");
        keys(&mut app, &[Key::Tab]);
        assert_eq!(app.current, 0);
        keys(&mut app, &[Key::BackTab]);
        assert_eq!(app.current, 2);
    }

    #[test]
    fn read_only_drops_every_mutating_key() {
        for (global, per_env) in [(true, false), (false, true)] {
            let mut app = app_with(vec![def("prod", ConfirmPolicy::Yes, per_env)], global);
            let all: Vec<Key> = keymap::KEYMAP
                .iter()
                .filter(|b| b.mutating)
                .flat_map(|b| b.keys.iter().copied())
                .collect();
            assert!(!all.is_empty());
            let cmds = keys(&mut app, &[&[Key::Down][..], &all].concat());
            assert!(cmds.is_empty(), "{cmds:?}");
            assert!(app.busy.is_none());
            assert!(app.is_read_only());
        }
    }

    #[test]
    fn yes_policy_needs_a_dialog_and_enter() {
        let mut app = app_with(vec![def("stage", ConfirmPolicy::Yes, false)], false);
        keys(&mut app, &[Key::Down, Key::Char('+')]);
        let c = update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Ok(plan_view("stage", ConfirmPolicy::Yes, true)),
            },
        );
        assert!(c.is_empty(), "nothing runs before the operator confirms");
        assert!(app.dialog.is_some());
        assert_eq!(
            keys(&mut app, &[Key::Enter]),
            vec![Command::Execute { id: 1 }]
        );
        assert!(app.dialog.is_none());
        assert!(matches!(app.busy, Some(Busy::Applying { id: 1, .. })));
    }

    #[test]
    fn none_policy_executes_without_asking_but_never_past_a_failed_check() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        keys(&mut app, &[Key::Down, Key::Char('+')]);
        let c = update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Ok(plan_view("dev", ConfirmPolicy::None, true)),
            },
        );
        assert_eq!(c, vec![Command::Execute { id: 1 }]);
        app.busy = None;
        keys(&mut app, &[Key::Char('+')]);
        let c = update(
            &mut app,
            Event::Planned {
                id: 2,
                result: Ok(plan_view("dev", ConfirmPolicy::None, false)),
            },
        );
        assert!(c.is_empty());
        assert!(app.dialog.is_some(), "a failed check is shown, not skipped");
        assert!(
            keys(&mut app, &[Key::Enter]).is_empty(),
            "enter cannot pass a failed check"
        );
        assert_eq!(keys(&mut app, &[Key::Esc]), vec![Command::Cancel { id: 2 }]);
    }

    #[test]
    fn type_name_gates_enter_until_the_name_is_typed() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::TypeName, false)], false);
        keys(&mut app, &[Key::Down, Key::Char('+')]);
        update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Ok(plan_view("prod", ConfirmPolicy::TypeName, true)),
            },
        );
        assert!(keys(&mut app, &[Key::Enter]).is_empty());
        // Typing goes into the dialog, not to the main keymap ('q' must not quit).
        assert!(keys(&mut app, &[Key::Char('p'), Key::Char('r'), Key::Char('q')]).is_empty());
        assert!(keys(&mut app, &[Key::Enter]).is_empty(), "prq is not prod");
        keys(&mut app, &[Key::Backspace, Key::Char('o'), Key::Char('d')]);
        assert_eq!(app.dialog.as_ref().map(|d| d.typed.as_str()), Some("prod"));
        assert_eq!(
            keys(&mut app, &[Key::Enter]),
            vec![Command::Execute { id: 1 }]
        );
    }

    #[test]
    fn results_become_toasts_and_failures_never_look_like_success() {
        let mut app = app_with(vec![def("stage", ConfirmPolicy::Yes, false)], false);
        let cases = [
            (
                Outcome::Applied,
                Some(5),
                None,
                ToastKind::Success,
                "applied as revision 5",
            ),
            (
                Outcome::Refused,
                None,
                Some("frozen"),
                ToastKind::Failure,
                "refused",
            ),
            (
                Outcome::Conflict,
                None,
                Some("moved to 7"),
                ToastKind::Failure,
                "conflict",
            ),
            (
                Outcome::Failed,
                None,
                Some("cannot reach"),
                ToastKind::Failure,
                "cannot reach",
            ),
            (
                Outcome::Unverified,
                Some(6),
                Some("x"),
                ToastKind::Failure,
                "unverified",
            ),
        ];
        for (outcome, revision, error, kind, text) in cases {
            app.toasts.clear();
            update(
                &mut app,
                Event::Executed {
                    id: 9,
                    result: ExecResult {
                        outcome,
                        revision,
                        error: error.map(String::from),
                    },
                },
            );
            let t = &app.toasts[0];
            assert_eq!(t.kind, kind, "{outcome:?}");
            assert!(t.text.contains(text), "{}", t.text);
            if kind == ToastKind::Failure {
                assert!(!t.text.contains("applied"), "{}", t.text);
            }
        }
    }

    #[test]
    fn plan_errors_clear_busy_and_show() {
        let mut app = app_with(vec![def("stage", ConfirmPolicy::Yes, false)], false);
        keys(&mut app, &[Key::Char('r')]);
        update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Err("revision 0 cannot be rolled back to".into()),
            },
        );
        assert!(app.busy.is_none());
        assert_eq!(app.toasts.last().map(|t| t.kind), Some(ToastKind::Failure));
        // A late plan nobody waits for is cancelled, not shown.
        let c = update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Ok(plan_view("stage", ConfirmPolicy::Yes, true)),
            },
        );
        assert_eq!(c, vec![Command::Cancel { id: 1 }]);
        assert!(app.dialog.is_none());
    }

    #[test]
    fn poll_errors_keep_the_last_status_and_mark_it_stale() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::Yes, false)], false);
        update(
            &mut app,
            Event::EnvUpdate {
                env: 0,
                status: Err("cannot reach http://127.0.0.1:9080: connection refused".into()),
                revisions: None,
                at: t0() + chrono::Duration::seconds(10),
            },
        );
        update(&mut app, Event::Tick(t0() + chrono::Duration::seconds(10)));
        let e = app.env().unwrap();
        assert_eq!(e.health(), Health::Down);
        assert!(e.status.is_some());
        assert!(e.is_stale(app.now));
        assert_eq!(e.age_secs(app.now), Some(10));
        // Toasts expire with ticks.
        app.toast(ToastKind::Success, "x");
        update(&mut app, Event::Tick(t0() + chrono::Duration::seconds(60)));
        assert!(app.toasts.is_empty());
    }

    #[test]
    fn an_unhealthy_live_upstream_degrades_health() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::Yes, false)], false);
        let mut s = status(4, 5);
        s.upstreams[2].targets[0].healthy = false;
        update(
            &mut app,
            Event::EnvUpdate {
                env: 0,
                status: Ok(s),
                revisions: None,
                at: t0(),
            },
        );
        assert_eq!(app.env().unwrap().health(), Health::Degraded);
    }
}
