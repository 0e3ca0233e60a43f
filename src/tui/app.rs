//! The cockpit's state and how events change it. Pure: no I/O, no clock reads. `run` feeds
//! events in (keys, ticks carrying the time, backend results) and carries out the commands
//! that come back. A change goes ConfirmAction → plan → dialog → ConfirmedAction → execute.

use chrono::{DateTime, Utc};

mod walk;

pub use walk::{Question, WalkAnswer, WalkEnd, WalkEvent, WalkPrompt, WalkUi};

use super::keymap::{self, Key, KeyAction, Keymap, Scope, View};
use crate::control::audit::AuditEntry;
use crate::control::envfile::{ConfirmPolicy, EnvDef};
use crate::control::{Plan, Report};
use crate::domain::kube::WatchStatus;
use crate::domain::metrics::MetricsFeed;
use crate::domain::status::FlagStatus;
use crate::domain::{
    Action, Check, FaultSpec, FlagState, GatewayStatus, Outcome, RevisionInfo, RouteStatus,
};

/// Data older than this is marked stale.
pub const STALE_AFTER_SECS: i64 = 3;
const TOAST_OK_SECS: i64 = 5;
const TOAST_FAIL_SECS: i64 = 12;
const MAX_TOASTS: usize = 3;
const MAX_INPUT: usize = 200;
/// Journal entries kept per environment (the newest); older ones stay in the file.
pub const MAX_JOURNAL: usize = 1000;

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
        /// The watches behind a Kubernetes environment's status; empty for a polled gateway.
        watches: Vec<WatchStatus>,
        at: DateTime<Utc>,
    },
    /// The latest live metrics of one environment.
    Metrics {
        env: usize,
        feed: Box<MetricsFeed>,
    },
    /// The before → after of one revision (for the History view).
    Diff {
        env: usize,
        number: u64,
        result: Result<Vec<String>, String>,
    },
    /// The audit journal as last read (every environment's entries, oldest first), or why
    /// it could not be read.
    Journal(Result<JournalRead, String>),
    Planned {
        id: u64,
        result: Result<PlanView, String>,
    },
    Executed {
        id: u64,
        result: ExecResult,
    },
    /// From the walkthrough's task.
    Walk(WalkEvent),
}

/// One read of the audit journal.
#[derive(Clone, Debug, Default)]
pub struct JournalRead {
    pub entries: Vec<AuditEntry>,
    /// Lines that did not parse (a torn line after a crash, or damage).
    pub skipped: usize,
}

/// One row of History. A revision carries the journal entry that made it when the journal
/// has one; entries that made no revision (refusals, cancels, failures, sandbox faults)
/// are rows of their own.
#[derive(Clone, Copy, Debug)]
pub enum HistoryItem<'a> {
    Revision {
        rev: &'a RevisionInfo,
        entry: Option<&'a AuditEntry>,
    },
    Journal(&'a AuditEntry),
}

impl HistoryItem<'_> {
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            HistoryItem::Revision { rev, .. } => rev.time,
            HistoryItem::Journal(e) => e.time,
        }
    }

    pub fn revision(&self) -> Option<u64> {
        match self {
            HistoryItem::Revision { rev, .. } => Some(rev.number),
            HistoryItem::Journal(_) => None,
        }
    }

    pub fn entry(&self) -> Option<&AuditEntry> {
        match self {
            HistoryItem::Revision { entry, .. } => *entry,
            HistoryItem::Journal(e) => Some(e),
        }
    }

    fn matches(&self, filter: &str) -> bool {
        if filter.is_empty() {
            return true;
        }
        let rev = match self {
            HistoryItem::Revision { rev, .. } => {
                matches(filter, &rev.description)
                    || matches(filter, &rev.actor)
                    || matches(filter, &rev.number.to_string())
            }
            HistoryItem::Journal(_) => false,
        };
        rev || self.entry().is_some_and(|e| {
            matches(filter, &e.description)
                || matches(filter, &e.actor)
                || matches(filter, outcome_word(e.outcome))
                || e.error.as_deref().is_some_and(|x| matches(filter, x))
        })
    }
}

/// A History row's identity, so the selection stays on the same row when rows are added.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HistoryAnchor {
    Revision(u64),
    /// A journal entry (found again in its own row, or in the row of the revision it made).
    Entry {
        time: DateTime<Utc>,
        actor: String,
        description: String,
    },
}

impl HistoryItem<'_> {
    fn anchor(&self) -> HistoryAnchor {
        match self {
            HistoryItem::Revision { rev, .. } => HistoryAnchor::Revision(rev.number),
            HistoryItem::Journal(e) => HistoryAnchor::Entry {
                time: e.time,
                actor: e.actor.clone(),
                description: e.description.clone(),
            },
        }
    }

    fn is(&self, anchor: &HistoryAnchor) -> bool {
        match anchor {
            HistoryAnchor::Revision(n) => self.revision() == Some(*n),
            HistoryAnchor::Entry {
                time,
                actor,
                description,
            } => self.entry().is_some_and(|e| {
                e.time == *time && e.actor == *actor && e.description == *description
            }),
        }
    }
}

/// The selected rows of one environment's lists, by identity rather than position.
struct Selection {
    route: Option<String>,
    history: Option<HistoryAnchor>,
    flag: Option<String>,
}

/// The outcome as History and toasts say it.
pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Applied => "applied",
        Outcome::Refused => "refused",
        Outcome::Cancelled => "cancelled",
        Outcome::Conflict => "conflict",
        Outcome::Unverified => "unverified",
        Outcome::Failed => "failed",
    }
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
    /// Read revision `number` and the one before it, and diff them.
    LoadDiff {
        env: usize,
        number: u64,
    },
    /// Load the runbook and run its engine on a task of its own.
    StartWalk {
        runbook: String,
        env: Option<String>,
        /// Continue a saved unfinished walkthrough (the operator decides at its pause).
        resume: bool,
    },
    /// The operator's answer to the walk's question `id`.
    WalkAnswer {
        id: u64,
        answer: WalkAnswer,
    },
    /// Abort a walk that is not paused: the engine rolls back at its next safe point.
    WalkAbort {
        step: usize,
        reason: String,
    },
    /// Stop the walk at its next safe point (saved for `--resume`), before quitting.
    StopWalk,
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
    /// Enter was pressed on a name that does not match: said until the next key.
    pub wrong_name: bool,
    /// Asked by the walkthrough's engine (answered with [`Command::WalkAnswer`]), not a
    /// change planned from a key.
    pub walk: bool,
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
pub enum InputKind {
    /// `:` — a command by name.
    Palette,
    /// `/` — narrows the lists as it is typed.
    Filter,
}

/// The one-line prompt at the bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub kind: InputKind,
    pub text: String,
    /// Why the last Enter was not accepted.
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No answer yet.
    Unknown,
    Ok,
    /// Answering, but an upstream that gets traffic has no healthy target.
    Degraded,
    /// The last poll failed, or no watch is live.
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
    /// A watched (Kubernetes) environment's watches, one per kind; empty when polled.
    pub watches: Vec<WatchStatus>,
    /// Selected row among the (filtered) routes.
    pub selected: usize,
    /// Selected row among the (filtered) revisions, newest first.
    pub rev_selected: usize,
    /// Selected row among the (filtered) flags.
    pub flag_selected: usize,
    pub metrics: Option<MetricsFeed>,
    /// The diff of one revision, once read.
    pub diff: Option<(u64, Result<Vec<String>, String>)>,
    /// This environment's audit journal entries, oldest first (at most [`MAX_JOURNAL`]).
    pub journal: Vec<AuditEntry>,
    /// Worked out once per snapshot (in [`EnvState::set_status`] and
    /// [`EnvState::set_metrics`]) so that frames only look things up.
    derived: Derived,
}

/// Lookups built from one snapshot. With 1,000 upstreams and 500 routes, deriving these per
/// frame (health alone compared every split against every upstream) cost more than drawing.
#[derive(Default)]
struct Derived {
    /// Route name → index in `status.routes`.
    routes: std::collections::HashMap<String, usize>,
    /// Route name → index in the latest metrics sample's routes.
    metrics: std::collections::HashMap<String, usize>,
    /// An upstream that gets traffic has no healthy target (or does not exist).
    starved: bool,
}

fn matches(filter: &str, text: &str) -> bool {
    filter.is_empty() || text.to_lowercase().contains(&filter.to_lowercase())
}

impl EnvState {
    pub fn new(def: EnvDef) -> Self {
        Self {
            def,
            status: None,
            revisions: Vec::new(),
            error: None,
            updated: None,
            watches: Vec::new(),
            selected: 0,
            rev_selected: 0,
            flag_selected: 0,
            metrics: None,
            diff: None,
            journal: Vec::new(),
            derived: Derived::default(),
        }
    }

    /// Takes a new snapshot and works out what frames look up in it.
    pub fn set_status(&mut self, s: GatewayStatus, at: DateTime<Utc>) {
        let healthy: std::collections::HashMap<&str, usize> = s
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.healthy_targets()))
            .collect();
        self.derived.starved = s.routes.iter().any(|r| {
            r.split
                .iter()
                .any(|(up, w)| *w > 0 && healthy.get(up.as_str()).is_none_or(|n| *n == 0))
        });
        self.derived.routes = s
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        self.status = Some(s);
        self.error = None;
        self.updated = Some(at);
    }

    /// Takes a new metrics feed and indexes its routes.
    pub fn set_metrics(&mut self, feed: MetricsFeed) {
        self.derived.metrics = feed.latest.as_ref().map_or_else(Default::default, |s| {
            s.routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.route.clone(), i))
                .collect()
        });
        self.metrics = Some(feed);
    }

    /// The route called `name` in the current snapshot.
    pub fn route_named(&self, name: &str) -> Option<&RouteStatus> {
        let s = self.status.as_ref()?;
        match self.derived.routes.get(name).and_then(|i| s.routes.get(*i)) {
            Some(r) if r.name == name => Some(r),
            // An index from another snapshot (never in the event loop): look it up.
            _ => s.route(name),
        }
    }

    /// The latest metrics of the route called `name`.
    pub fn route_metrics(&self, name: &str) -> Option<&crate::domain::metrics::RouteMetrics> {
        let s = self.metrics.as_ref()?.latest.as_ref()?;
        match self
            .derived
            .metrics
            .get(name)
            .and_then(|i| s.routes.get(*i))
        {
            Some(r) if r.route == name => Some(r),
            _ => s.route(name),
        }
    }

    pub fn health(&self) -> Health {
        if self.error.is_some() {
            return Health::Down;
        }
        if self.status.is_none() {
            return Health::Unknown;
        }
        if !self.troubled_watches().is_empty() {
            return Health::Degraded;
        }
        if self.derived.starved {
            Health::Degraded
        } else {
            Health::Ok
        }
    }

    /// Seconds since the last good read.
    pub fn age_secs(&self, now: DateTime<Utc>) -> Option<i64> {
        self.updated.map(|t| (now - t).num_seconds().max(0))
    }

    /// Polled data is stale when old. Watched data is current however old, as long as every
    /// watch is live (a change would have arrived); a watch that is not live makes it stale.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        if self.is_watched() {
            return self.updated.is_some()
                && (self.error.is_some() || !self.troubled_watches().is_empty());
        }
        self.age_secs(now).is_some_and(|a| a > STALE_AFTER_SECS)
    }

    /// Kept fresh by watches rather than polling.
    pub fn is_watched(&self) -> bool {
        !self.watches.is_empty()
    }

    /// Watches that are not live (retrying, stopped, or still on their first list).
    pub fn troubled_watches(&self) -> Vec<&WatchStatus> {
        self.watches.iter().filter(|w| !w.state.is_live()).collect()
    }

    /// Routes whose name, path or upstreams contain `filter`.
    pub fn routes(&self, filter: &str) -> Vec<&RouteStatus> {
        self.status.as_ref().map_or_else(Vec::new, |s| {
            s.routes
                .iter()
                .filter(|r| {
                    matches(filter, &r.name)
                        || r.paths.iter().any(|p| matches(filter, p))
                        || r.split.keys().any(|u| matches(filter, u))
                })
                .collect()
        })
    }

    pub fn selected_route(&self, filter: &str) -> Option<&RouteStatus> {
        let routes = self.routes(filter);
        routes
            .get(self.selected.min(routes.len().saturating_sub(1)))
            .copied()
    }

    /// Revisions and journal entries, newest first, narrowed by `filter` (description,
    /// actor, number, outcome or error). A journal entry that made a revision shares its row.
    pub fn history(&self, filter: &str) -> Vec<HistoryItem<'_>> {
        let by_rev: std::collections::HashMap<u64, &AuditEntry> = self
            .journal
            .iter()
            .filter_map(|e| match (e.outcome, e.revision) {
                (Outcome::Applied | Outcome::Unverified, Some(n)) => Some((n, e)),
                _ => None,
            })
            .collect();
        let known: std::collections::HashSet<u64> =
            self.revisions.iter().map(|r| r.number).collect();
        let mut v: Vec<HistoryItem> = self
            .revisions
            .iter()
            .map(|rev| HistoryItem::Revision {
                rev,
                entry: by_rev.get(&rev.number).copied(),
            })
            .chain(
                self.journal
                    .iter()
                    .filter(|e| {
                        !(matches!(e.outcome, Outcome::Applied | Outcome::Unverified)
                            && e.revision.is_some_and(|n| known.contains(&n)))
                    })
                    .map(HistoryItem::Journal),
            )
            .filter(|i| i.matches(filter))
            .collect();
        // By time; among revisions with the same second, by number.
        v.sort_by(|a, b| {
            b.time()
                .cmp(&a.time())
                .then_with(|| b.revision().cmp(&a.revision()))
        });
        v
    }

    pub fn selected_history(&self, filter: &str) -> Option<HistoryItem<'_>> {
        let h = self.history(filter);
        h.get(self.rev_selected.min(h.len().saturating_sub(1)))
            .copied()
    }

    /// The selected History row when it is a revision.
    pub fn selected_revision(&self, filter: &str) -> Option<&RevisionInfo> {
        match self.selected_history(filter)? {
            HistoryItem::Revision { rev, .. } => Some(rev),
            HistoryItem::Journal(_) => None,
        }
    }

    fn selection(&self, filter: &str) -> Selection {
        Selection {
            route: self.selected_route(filter).map(|r| r.name.clone()),
            history: self.selected_history(filter).map(|h| h.anchor()),
            flag: self.selected_flag(filter).map(|f| f.key.clone()),
        }
    }

    /// Puts each selection back on the row it was on before the lists changed (a new
    /// revision or journal entry on top must not move it onto another revision); a row
    /// that is gone leaves the position as it was. A History selection on the top row
    /// follows the newest row instead: that is never a revision to roll back to (the newest
    /// revision is the one in force), and it keeps the newest entry in view.
    fn reselect(&mut self, filter: &str, s: &Selection) {
        if let Some(i) = s
            .route
            .as_ref()
            .and_then(|n| self.routes(filter).iter().position(|r| r.name == *n))
        {
            self.selected = i;
        }
        if let Some(i) = s
            .history
            .as_ref()
            .filter(|_| self.rev_selected > 0)
            .and_then(|a| self.history(filter).iter().position(|h| h.is(a)))
        {
            self.rev_selected = i;
        }
        if let Some(i) = s
            .flag
            .as_ref()
            .and_then(|k| self.flags(filter).iter().position(|f| f.key == *k))
        {
            self.flag_selected = i;
        }
    }

    pub fn flags(&self, filter: &str) -> Vec<&FlagStatus> {
        self.status.as_ref().map_or_else(Vec::new, |s| {
            s.flags.iter().filter(|f| matches(filter, &f.key)).collect()
        })
    }

    pub fn selected_flag(&self, filter: &str) -> Option<&FlagStatus> {
        let f = self.flags(filter);
        f.get(self.flag_selected.min(f.len().saturating_sub(1)))
            .copied()
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
    pub view: View,
    /// Narrows the routes, revisions and flags lists.
    pub filter: String,
    pub input: Option<Input>,
    pub keymap: Keymap,
    /// A sandbox is behind the cockpit, so faults can be injected.
    pub sandbox: bool,
    /// Why the audit journal could not be read last time (cleared by a good read).
    pub journal_error: Option<String>,
    /// Journal lines that did not parse in the last read.
    pub journal_skipped: usize,
    /// The walkthrough started here (running or ended).
    pub walk: Option<WalkUi>,
    /// `signalbox walk --yes`: the walk's changes need no confirmation.
    pub walk_yes: bool,
    /// Lists paths starting with a prefix, for completing `walk RUNBOOK` (`run` installs
    /// one that reads the file system; the app itself does no I/O).
    pub list_paths: fn(&str) -> Vec<String>,
    /// The diff last asked for (environment, revision), so it is asked for once.
    diff_wanted: Option<(usize, u64)>,
    /// Changes asked for together (`fault A B clear`), planned one after another: each
    /// waits for the one before to be applied; anything else drops the rest.
    queued: std::collections::VecDeque<(String, Action)>,
    next_id: u64,
}

/// What a palette line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A change, to be planned and confirmed.
    Change(Action),
    /// Several changes, planned and confirmed one after another.
    Changes(Vec<Action>),
    /// The same as pressing the action's key.
    Key(KeyAction),
    Env(String),
    View(View),
    Filter(String),
    Walk {
        runbook: String,
        env: Option<String>,
        resume: bool,
    },
}

fn parse_percent(what: &str, s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{what} must be a whole number from 0 to 100, not {s:?}"))?;
    if n > 100 {
        return Err(format!("{what} must be 0 to 100, not {n}"));
    }
    Ok(n)
}

/// Parses one palette line. Pure; read-only and context checks are the caller's.
pub fn parse_command(line: &str, map: &Keymap) -> Result<Intent, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&cmd, args)) = words.split_first() else {
        return Err("type a command; Tab completes, Esc closes".into());
    };
    let usage = |name: &str| {
        keymap::COMMANDS
            .iter()
            .find(|c| c.name == name)
            .map_or(String::new(), |c| format!("usage: {}", c.usage))
    };
    match (cmd, args) {
        ("weight", [route, pct]) => Ok(Intent::Change(Action::SetCanary {
            route: route.to_string(),
            percent: parse_percent("the canary weight", pct)?,
        })),
        ("weight", _) => Err(usage("weight")),
        ("flip", [route]) => Ok(Intent::Change(Action::Flip {
            route: route.to_string(),
            to: None,
        })),
        ("flip", [route, to]) => Ok(Intent::Change(Action::Flip {
            route: route.to_string(),
            to: Some(to.to_string()),
        })),
        ("flag", [key, value]) => {
            let (state, variant) = match *value {
                "on" | "enable" | "enabled" => (Some(FlagState::Enabled), None),
                "off" | "disable" | "disabled" => (Some(FlagState::Disabled), None),
                v => (None, Some(v.to_string())),
            };
            Ok(Intent::Change(Action::SetFlag {
                key: key.to_string(),
                state,
                variant,
            }))
        }
        ("flag", _) => Err(usage("flag")),
        ("rollback", [n]) => {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("a revision is a number, not {n:?}"))?;
            Ok(Intent::Change(Action::Rollback { to: Some(n) }))
        }
        ("fault", [upstreams @ .., "clear"]) if upstreams.len() > 1 => Ok(Intent::Changes(
            upstreams
                .iter()
                .map(|u| Action::SetFault {
                    upstream: u.to_string(),
                    faults: FaultSpec::default(),
                })
                .collect(),
        )),
        ("fault", [upstream, rest @ ..]) => {
            let faults = match rest {
                ["5xx" | "error" | "errors", pct] => FaultSpec {
                    error_percent: parse_percent("the error rate", pct)?,
                    ..FaultSpec::default()
                },
                ["latency" | "delay", ms] => FaultSpec {
                    latency_ms: ms
                        .trim_end_matches("ms")
                        .parse()
                        .ok()
                        .filter(|v| *v <= 60_000)
                        .ok_or_else(|| {
                            format!("latency is milliseconds, 0 to 60000, not {ms:?}")
                        })?,
                    ..FaultSpec::default()
                },
                ["down"] => FaultSpec {
                    down: true,
                    ..FaultSpec::default()
                },
                ["clear"] => FaultSpec::default(),
                _ => return Err(usage("fault")),
            };
            Ok(Intent::Change(Action::SetFault {
                upstream: upstream.to_string(),
                faults,
            }))
        }
        ("fault", _) => Err(usage("fault")),
        ("env", [name]) => Ok(Intent::Env(name.to_string())),
        ("env", _) => Err(usage("env")),
        ("view", [v]) => View::parse(v)
            .map(Intent::View)
            .ok_or_else(|| usage("view")),
        ("view", _) => Err(usage("view")),
        ("filter", rest) => Ok(Intent::Filter(rest.join(" "))),
        ("walk", [runbook, rest @ ..]) => {
            let (mut env, mut resume) = (None, false);
            let mut it = rest.iter();
            while let Some(w) = it.next() {
                match *w {
                    "--env" => match it.next() {
                        Some(e) if !e.starts_with("--") => env = Some(e.to_string()),
                        _ => return Err(usage("walk")),
                    },
                    "--resume" => resume = true,
                    _ => return Err(usage("walk")),
                }
            }
            Ok(Intent::Walk {
                runbook: runbook.to_string(),
                env,
                resume,
            })
        }
        ("walk", _) => Err(usage("walk")),
        (name, []) => match map.by_name(name) {
            Some(b) if b.action != KeyAction::EnvByNumber => Ok(Intent::Key(b.action)),
            _ => Err(format!("unknown command {name:?}; Tab lists the commands")),
        },
        (name, _) => match map.by_name(name) {
            Some(_) => Err(format!("{name} takes no arguments")),
            None => Err(format!("unknown command {name:?}; Tab lists the commands")),
        },
    }
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
            view: View::Overview,
            filter: String::new(),
            input: None,
            keymap: Keymap::default(),
            sandbox: false,
            journal_error: None,
            journal_skipped: 0,
            walk: None,
            walk_yes: false,
            list_paths: |_| Vec::new(),
            diff_wanted: None,
            queued: std::collections::VecDeque::new(),
            next_id: 1,
        }
    }

    /// Installs the keymap; its `[keys]` warnings become toasts (and stay in the help overlay).
    pub fn with_keymap(mut self, keymap: Keymap) -> Self {
        for w in &keymap.warnings {
            self.toast(ToastKind::Failure, format!("config: {w}"));
        }
        self.keymap = keymap;
        self
    }

    pub fn with_sandbox(mut self, sandbox: bool) -> Self {
        self.sandbox = sandbox;
        self
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

    /// Plans `action` in the current environment.
    fn request(&mut self, action: Action) -> Vec<Command> {
        match self.env() {
            Some(env) => self.request_in(env.def.name.clone(), action),
            None => vec![],
        }
    }

    /// Plans the first of `actions` in the current environment; the others follow, each
    /// once the one before is applied.
    fn request_all(&mut self, actions: Vec<Action>) -> Vec<Command> {
        let Some(env) = self.env().map(|e| e.def.name.clone()) else {
            return vec![];
        };
        let mut actions = actions.into_iter();
        let Some(first) = actions.next() else {
            return vec![];
        };
        let cmds = self.request_in(env.clone(), first);
        if !cmds.is_empty() {
            self.queued = actions.map(|a| (env.clone(), a)).collect();
        }
        cmds
    }

    /// The queued changes will not be made: say which.
    fn drop_queued(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let left: Vec<String> = self.queued.drain(..).map(|(_, a)| a.to_string()).collect();
        self.toast(ToastKind::Info, format!("not planned: {}", left.join("; ")));
    }

    fn request_in(&mut self, env: String, action: Action) -> Vec<Command> {
        if self.busy.is_some() {
            self.toast(
                ToastKind::Info,
                "another change is in progress; wait for its result",
            );
            return vec![];
        }
        let id = self.next_id;
        self.next_id += 1;
        self.busy = Some(Busy::Planning {
            id,
            what: format!("{env}: {action}"),
        });
        vec![Command::Plan { id, env, action }]
    }

    fn selected_route(&mut self) -> Option<RouteStatus> {
        let r = self
            .env()
            .and_then(|e| e.selected_route(&self.filter))
            .cloned();
        if r.is_none() {
            self.toast(ToastKind::Info, "no route selected");
        }
        r
    }

    fn canary_step(&mut self, up: bool) -> Vec<Command> {
        let Some(step) = self.env().map(|e| e.def.canary_step) else {
            return vec![];
        };
        let Some(route) = self.selected_route() else {
            return vec![];
        };
        let Some((_, canary)) = route.canary_step_sides() else {
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
        self.request(Action::SetCanary {
            route: route.name,
            percent,
        })
    }

    fn open_palette(&mut self, text: String) {
        self.input = Some(Input {
            kind: InputKind::Palette,
            text,
            error: None,
        });
    }

    /// Moves the selection of the current view's list.
    fn move_selection(&mut self, down: bool) {
        let view = self.view;
        let filter = self.filter.clone();
        let Some(e) = self.envs.get_mut(self.current) else {
            return;
        };
        let (n, sel) = match view {
            View::Overview | View::Environments => (e.routes(&filter).len(), &mut e.selected),
            View::History => (e.history(&filter).len(), &mut e.rev_selected),
            View::Flags => (e.flags(&filter).len(), &mut e.flag_selected),
            View::Walk => return,
        };
        if n > 0 {
            *sel = if down {
                (*sel + 1).min(n - 1)
            } else {
                sel.saturating_sub(1)
            };
        }
    }

    fn rollback(&mut self) -> Vec<Command> {
        if self.view != View::History {
            return self.request(Action::Rollback { to: None });
        }
        let Some(env) = self.env() else {
            return vec![];
        };
        let current = env.status.as_ref().map(|s| s.revision);
        let Some(n) = env.selected_revision(&self.filter).map(|r| r.number) else {
            let msg = if env.selected_history(&self.filter).is_some() {
                "a journal entry is not a revision: select a revision to roll back to"
            } else {
                "no revision selected"
            };
            self.toast(ToastKind::Info, msg);
            return vec![];
        };
        if Some(n) == current {
            self.toast(ToastKind::Info, format!("revision {n} is the current one"));
            return vec![];
        }
        self.request(Action::Rollback { to: Some(n) })
    }

    fn toggle_flag(&mut self) -> Vec<Command> {
        if self.view != View::Flags {
            let key = self
                .keymap
                .binding(KeyAction::Flags)
                .map_or("F".to_string(), |b| b.label.clone());
            self.toast(
                ToastKind::Info,
                format!("open the flags view ({key}) and select a flag to toggle"),
            );
            return vec![];
        }
        let Some(f) = self.env().and_then(|e| e.selected_flag(&self.filter)) else {
            self.toast(ToastKind::Info, "no flag selected");
            return vec![];
        };
        let state = match f.state {
            FlagState::Enabled => FlagState::Disabled,
            FlagState::Disabled => FlagState::Enabled,
        };
        let key = f.key.clone();
        self.request(Action::SetFlag {
            key,
            state: Some(state),
            variant: None,
        })
    }

    /// The selected route, when a sandbox can inject faults into its upstreams.
    fn fault_route(&mut self) -> Option<RouteStatus> {
        if !self.sandbox {
            self.toast(
                ToastKind::Info,
                "fault injection needs a sandbox (signalbox sandbox)",
            );
            return None;
        }
        self.selected_route()
    }

    /// Carries out a key's action (from the keyboard or the palette).
    fn action(&mut self, action: KeyAction, key: Option<Key>) -> Vec<Command> {
        match action {
            KeyAction::Quit => return self.quit(),
            KeyAction::Help => self.help = !self.help,
            KeyAction::EnvByNumber => {
                if let Some(Key::Char(c)) = key
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
            KeyAction::Down => self.move_selection(true),
            KeyAction::Up => self.move_selection(false),
            KeyAction::Overview => self.view = View::Overview,
            KeyAction::Environments => self.view = View::Environments,
            KeyAction::History => self.view = View::History,
            KeyAction::Flags => self.view = View::Flags,
            KeyAction::WalkView => self.view = View::Walk,
            KeyAction::WalkContinue
            | KeyAction::WalkSkip
            | KeyAction::WalkRetry
            | KeyAction::WalkAbort => return self.walk_action(action),
            KeyAction::Palette => self.open_palette(String::new()),
            KeyAction::Filter => {
                self.input = Some(Input {
                    kind: InputKind::Filter,
                    text: self.filter.clone(),
                    error: None,
                });
            }
            KeyAction::CanaryUp => return self.canary_step(true),
            KeyAction::CanaryDown => return self.canary_step(false),
            KeyAction::SetWeight => {
                if let Some(r) = self.selected_route() {
                    match r.canary_step_sides() {
                        Some((_, c)) => {
                            let text = format!("weight {} {}", r.name, r.percent(c));
                            self.open_palette(text);
                        }
                        None => {
                            let msg = format!("route {} has no canary side", r.name);
                            self.toast(ToastKind::Info, msg);
                        }
                    }
                }
            }
            KeyAction::Flip => {
                if let Some(r) = self.selected_route() {
                    return self.request(Action::Flip {
                        route: r.name,
                        to: None,
                    });
                }
            }
            KeyAction::ToggleFlag => return self.toggle_flag(),
            KeyAction::Rollback => return self.rollback(),
            KeyAction::Rollforward => return self.request(Action::Rollforward),
            KeyAction::Fault => {
                if let Some(up) = self.fault_route().as_ref().and_then(fault_target) {
                    self.open_palette(format!("fault {up} 5xx 50"));
                }
            }
            KeyAction::ClearFault => {
                if let Some(r) = self.fault_route() {
                    let ups: Vec<&str> = r.split.keys().map(String::as_str).collect();
                    self.open_palette(format!("fault {} clear", ups.join(" ")));
                }
            }
        }
        vec![]
    }

    fn main_key(&mut self, key: Key) -> Vec<Command> {
        // Esc clears a filter kept with Enter (the filter prompt's own Esc clears it too).
        if key == Key::Esc && !self.filter.is_empty() {
            self.filter.clear();
            return vec![];
        }
        let Some(b) = self.keymap.lookup(key) else {
            return vec![];
        };
        if b.mutating && self.is_read_only() {
            return vec![];
        }
        let action = b.action;
        // The walk's keys answer the walk, in its view; manual changes stay out of it.
        let walk_related = self.view == View::Walk || b.scope == Scope::Walk;
        if walk_related && !b.scope.offered(self.view, self.sandbox) {
            let msg = if b.scope == Scope::Walk {
                format!(
                    "{}: works in the walkthrough view ({})",
                    b.name,
                    self.key_label(KeyAction::WalkView)
                )
            } else {
                format!(
                    "{}: not in the walkthrough view; the walk's own keys decide (? lists them)",
                    b.name
                )
            };
            self.toast(ToastKind::Info, msg);
            return vec![];
        }
        self.action(action, Some(key))
    }

    /// Runs a palette line; on a mistake the palette stays open and says what is wrong.
    fn run_palette(&mut self, line: &str) -> Vec<Command> {
        let intent = match parse_command(line, &self.keymap) {
            Ok(i) => i,
            Err(e) => {
                if let Some(i) = self.input.as_mut() {
                    i.error = Some(e);
                }
                return vec![];
            }
        };
        let mutating = match &intent {
            Intent::Change(_) | Intent::Changes(_) | Intent::Walk { .. } => true,
            Intent::Key(a) => self.keymap.binding(*a).is_some_and(|b| b.mutating),
            _ => false,
        };
        if mutating && self.is_read_only() {
            if let Some(i) = self.input.as_mut() {
                i.error = Some("read-only: changes are switched off here".into());
            }
            return vec![];
        }
        self.input = None;
        match intent {
            Intent::Change(action) => self.request(action),
            Intent::Changes(actions) => self.request_all(actions),
            Intent::Key(a) => self.action(a, None),
            Intent::Env(name) => {
                match self.envs.iter().position(|e| e.def.name == name) {
                    Some(i) => self.current = i,
                    None => {
                        let known: Vec<&str> =
                            self.envs.iter().map(|e| e.def.name.as_str()).collect();
                        let msg = format!("no environment {name:?}; known: {}", known.join(", "));
                        self.toast(ToastKind::Failure, msg);
                    }
                }
                vec![]
            }
            Intent::View(v) => {
                self.view = v;
                vec![]
            }
            Intent::Filter(f) => {
                self.filter = f;
                vec![]
            }
            Intent::Walk {
                runbook,
                env,
                resume,
            } => self.start_walk(runbook, env, resume),
        }
    }

    /// Words the palette can complete the current word with.
    fn candidates(&self, words: &[&str]) -> Vec<String> {
        let Some(env) = self.env() else {
            return vec![];
        };
        let routes = || -> Vec<String> { env.routes("").iter().map(|r| r.name.clone()).collect() };
        match words {
            [] | [_] => keymap::command_names(&self.keymap)
                .into_iter()
                .map(String::from)
                .collect(),
            ["weight" | "flip", _] => routes(),
            ["flag", _] => env.flags("").iter().map(|f| f.key.clone()).collect(),
            ["fault", _] => env.status.as_ref().map_or_else(Vec::new, |s| {
                s.upstreams.iter().map(|u| u.name.clone()).collect()
            }),
            ["env", _] => self.envs.iter().map(|e| e.def.name.clone()).collect(),
            ["view", _] => View::ALL.iter().map(|v| v.name().to_string()).collect(),
            ["flag", key, _] => {
                let mut v = vec!["on".to_string(), "off".to_string()];
                if let Some(f) = env.status.as_ref().and_then(|s| s.flag(key)) {
                    v.extend(f.variants.iter().cloned());
                }
                v
            }
            ["fault", _, _] => ["5xx", "latency", "down", "clear"]
                .map(String::from)
                .to_vec(),
            ["walk", prefix] => (self.list_paths)(prefix),
            ["walk", _, "--env", _] => self.envs.iter().map(|e| e.def.name.clone()).collect(),
            ["walk", _, ..] => ["--env", "--resume"].map(String::from).to_vec(),
            ["flip", route, _] => env
                .status
                .as_ref()
                .and_then(|s| s.route(route))
                .map_or_else(Vec::new, |r| r.split.keys().cloned().collect()),
            _ => vec![],
        }
    }

    fn complete(&mut self) {
        let Some(input) = &self.input else {
            return;
        };
        let text = input.text.clone();
        let mut words: Vec<&str> = text.split_whitespace().collect();
        if text.is_empty() || text.ends_with(' ') {
            words.push("");
        }
        let Some(last) = words.last().copied() else {
            return;
        };
        let cands = self.candidates(&words);
        let done = keymap::complete(last, cands.iter().map(String::as_str));
        if let (Some(mut done), Some(input)) = (done, self.input.as_mut()) {
            // A directory is completed into, not past.
            if done.ends_with("/ ") {
                done.pop();
            }
            let keep = text.len() - last.len();
            input.text = format!("{}{done}", &text[..keep]);
            input.error = None;
        }
    }

    /// Completion hints for the palette: the commands or values the current word may be.
    pub fn palette_hints(&self) -> Vec<String> {
        let Some(input) = self.input.as_ref().filter(|i| i.kind == InputKind::Palette) else {
            return vec![];
        };
        let mut words: Vec<&str> = input.text.split_whitespace().collect();
        if input.text.is_empty() || input.text.ends_with(' ') {
            words.push("");
        }
        let last = words.last().copied().unwrap_or("");
        if words.len() <= 1 {
            let ro = self.is_read_only();
            let mut out: Vec<String> = keymap::COMMANDS
                .iter()
                .filter(|c| c.name.starts_with(last) && !(ro && c.mutating))
                .map(|c| format!("{:<44} {}", c.usage, c.description))
                .collect();
            out.extend(
                self.keymap
                    .bindings
                    .iter()
                    .filter(|b| {
                        b.action != KeyAction::EnvByNumber
                            && b.name.starts_with(last)
                            && !(ro && b.mutating)
                            && !keymap::COMMANDS.iter().any(|c| c.name == b.name)
                    })
                    .map(|b| format!("{:<44} {}", b.name, b.description)),
            );
            return out;
        }
        self.candidates(&words)
            .into_iter()
            .filter(|c| c.starts_with(last))
            .collect()
    }

    fn input_key(&mut self, key: Key) -> Vec<Command> {
        let Some(input) = self.input.as_mut() else {
            return vec![];
        };
        match key {
            Key::Esc | Key::Interrupt => {
                if input.kind == InputKind::Filter {
                    self.filter.clear();
                }
                self.input = None;
            }
            Key::Enter => {
                let text = input.text.trim().to_string();
                match input.kind {
                    InputKind::Filter => {
                        self.filter = text;
                        self.input = None;
                    }
                    InputKind::Palette => return self.run_palette(&text),
                }
            }
            Key::Backspace => {
                input.text.pop();
                input.error = None;
                if input.kind == InputKind::Filter {
                    self.filter = input.text.clone();
                }
            }
            Key::Tab if input.kind == InputKind::Palette => self.complete(),
            Key::Char(c) if input.text.chars().count() < MAX_INPUT => {
                input.text.push(c);
                input.error = None;
                if input.kind == InputKind::Filter {
                    self.filter = input.text.clone();
                }
            }
            _ => {}
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
                self.drop_queued();
                vec![Command::Cancel { id }]
            }
            Key::Enter if d.can_confirm() => {
                let id = d.id;
                let what = format!("{}: {}", d.plan.env, d.plan.description);
                self.dialog = None;
                self.busy = Some(Busy::Applying { id, what });
                vec![Command::Execute { id }]
            }
            // A check failed (the dialog says so) or the name is not typed yet.
            Key::Enter => {
                d.wrong_name = d.plan.allowed() && d.plan.confirm == ConfirmPolicy::TypeName;
                vec![]
            }
            Key::Backspace => {
                d.typed.pop();
                d.wrong_name = false;
                vec![]
            }
            Key::Char(c) if d.plan.confirm == ConfirmPolicy::TypeName && d.typed.len() < 64 => {
                d.typed.push(c);
                d.wrong_name = false;
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
                self.drop_queued();
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
                    wrong_name: false,
                    walk: false,
                });
                vec![]
            }
        }
    }

    /// The result of change `id`; the next queued change is planned once it was applied.
    fn executed(&mut self, id: u64, r: ExecResult) -> Vec<Command> {
        let ours = matches!(&self.busy, Some(Busy::Applying { id: b, .. }) if *b == id);
        let what = match &self.busy {
            Some(Busy::Applying { what, .. }) if ours => what.clone(),
            _ => format!("change {id}"),
        };
        if ours {
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
        if !ours {
            return vec![];
        }
        if r.outcome != Outcome::Applied {
            self.drop_queued();
            return vec![];
        }
        match self.queued.pop_front() {
            Some((env, action)) => self.request_in(env, action),
            None => vec![],
        }
    }

    /// In History, the selected revision's diff is read once it is selected.
    fn want_diff(&mut self) -> Vec<Command> {
        if self.view != View::History {
            return vec![];
        }
        let Some(env) = self.env() else {
            return vec![];
        };
        let Some(n) = env.selected_revision(&self.filter).map(|r| r.number) else {
            return vec![];
        };
        let have = env.diff.as_ref().is_some_and(|(d, _)| *d == n);
        if have || self.diff_wanted == Some((self.current, n)) {
            return vec![];
        }
        self.diff_wanted = Some((self.current, n));
        vec![Command::LoadDiff {
            env: self.current,
            number: n,
        }]
    }
}

/// Where `x` injects a fault by default: the route's canary (a header canary too), else its
/// idle side (the one with the least traffic), so the fault is rehearsed where it hurts least.
fn fault_target(route: &RouteStatus) -> Option<String> {
    match route.canary_step_sides() {
        Some((_, canary)) => Some(canary.to_string()),
        None => route
            .split
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(up, _)| up.clone()),
    }
}

/// Applies one event; returns what `run` must do. Never does I/O.
pub fn update(app: &mut App, event: Event) -> Vec<Command> {
    // New data keeps every selection on its row (by name, revision or journal entry).
    let changed: Vec<usize> = match &event {
        Event::EnvUpdate { env, .. } => vec![*env],
        Event::Journal(Ok(_)) => (0..app.envs.len()).collect(),
        _ => vec![],
    };
    let before: Vec<(usize, Selection)> = changed
        .into_iter()
        .filter_map(|i| Some((i, app.envs.get(i)?.selection(&app.filter))))
        .collect();
    let walk_dialog = app.dialog.clone().filter(|d| d.walk);
    let walk_prompt = app.walk.as_ref().is_some_and(|w| w.prompt.is_some());
    let mut cmds = match event {
        Event::Key(k) if walk_dialog.is_some() => match &walk_dialog {
            Some(d) => app.walk_dialog_key(d, k),
            None => vec![],
        },
        Event::Key(k) if app.dialog.is_some() => app.dialog_key(k),
        Event::Key(k) if walk_prompt => app.walk_prompt_key(k),
        Event::Key(k) if app.input.is_some() => app.input_key(k),
        Event::Key(k) if app.help => {
            // Any key closes help; quit still quits.
            app.help = false;
            if app
                .keymap
                .lookup(k)
                .is_some_and(|b| b.action == KeyAction::Quit)
            {
                app.quit()
            } else {
                vec![]
            }
        }
        Event::Key(k) => app.main_key(k),
        Event::Tick(now) => {
            app.now = now;
            app.toasts.retain(|t| t.until > now);
            return vec![];
        }
        Event::EnvUpdate {
            env,
            status,
            revisions,
            watches,
            at,
        } => {
            if let Some(e) = app.envs.get_mut(env) {
                e.watches = watches;
                match status {
                    Ok(s) => e.set_status(s, at),
                    // The last good status stays on screen, marked stale, beside the error.
                    Err(err) => e.error = Some(err),
                }
                if let Some(r) = revisions {
                    e.revisions = r;
                }
            }
            vec![]
        }
        Event::Metrics { env, feed } => {
            if let Some(e) = app.envs.get_mut(env) {
                e.set_metrics(*feed);
            }
            return vec![];
        }
        Event::Diff {
            env,
            number,
            result,
        } => {
            if let Some(e) = app.envs.get_mut(env) {
                e.diff = Some((number, result));
            }
            if app.diff_wanted == Some((env, number)) {
                app.diff_wanted = None;
            }
            vec![]
        }
        Event::Journal(Ok(read)) => {
            app.journal_error = None;
            app.journal_skipped = read.skipped;
            for e in &mut app.envs {
                e.journal.clear();
            }
            // Newest last; keep only the newest MAX_JOURNAL of each environment.
            for entry in read.entries.into_iter().rev() {
                if let Some(e) = app.envs.iter_mut().find(|e| e.def.name == entry.env)
                    && e.journal.len() < MAX_JOURNAL
                {
                    e.journal.push(entry);
                }
            }
            for e in &mut app.envs {
                e.journal.reverse();
            }
            vec![]
        }
        Event::Journal(Err(err)) => {
            // The entries read before stay; the error says they may be behind.
            app.journal_error = Some(err);
            vec![]
        }
        Event::Planned { id, result } => app.planned(id, result),
        Event::Executed { id, result } => app.executed(id, result),
        Event::Walk(ev) => app.walk_event(ev),
    };
    app.show_queued_confirm();
    let filter = app.filter.clone();
    for (i, sel) in &before {
        app.envs[*i].reselect(&filter, sel);
    }
    // Selections stay inside their (possibly filtered or shrunk) lists.
    for e in &mut app.envs {
        e.selected = e.selected.min(e.routes(&filter).len().saturating_sub(1));
        e.rev_selected = e
            .rev_selected
            .min(e.history(&filter).len().saturating_sub(1));
        e.flag_selected = e
            .flag_selected
            .min(e.flags(&filter).len().saturating_sub(1));
    }
    if !cmds.contains(&Command::Quit) {
        cmds.extend(app.want_diff());
    }
    cmds
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
            gateway_url: None,
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
                    watches: Vec::new(),
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
            let all: Vec<Key> = Keymap::default()
                .bindings
                .iter()
                .filter(|b| b.mutating)
                .flat_map(|b| b.keys.clone())
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
        // ... and the dialog says so, until the next key.
        assert!(app.dialog.as_ref().is_some_and(|d| d.wrong_name));
        keys(&mut app, &[Key::Backspace, Key::Char('o'), Key::Char('d')]);
        assert!(app.dialog.as_ref().is_some_and(|d| !d.wrong_name));
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
                watches: Vec::new(),
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
                watches: Vec::new(),
                env: 0,
                status: Ok(s),
                revisions: None,
                at: t0(),
            },
        );
        assert_eq!(app.env().unwrap().health(), Health::Degraded);
    }

    fn type_text(app: &mut App, s: &str) -> Vec<Command> {
        s.chars()
            .flat_map(|c| update(app, Event::Key(Key::Char(c))))
            .collect()
    }

    #[test]
    fn the_palette_sets_an_exact_weight_and_explains_mistakes() {
        let mut app = app_with(vec![def("stage", ConfirmPolicy::Yes, false)], false);
        keys(&mut app, &[Key::Char(':')]);
        type_text(&mut app, "weight payments 250");
        assert!(keys(&mut app, &[Key::Enter]).is_empty());
        let err = app.input.as_ref().and_then(|i| i.error.clone()).unwrap();
        assert!(err.contains("0 to 100"), "{err}");
        keys(&mut app, &[Key::Backspace, Key::Backspace]);
        let c = keys(&mut app, &[Key::Enter]);
        assert_eq!(
            c,
            vec![Command::Plan {
                id: 1,
                env: "stage".into(),
                action: Action::SetCanary {
                    route: "payments".into(),
                    percent: 2
                }
            }]
        );
        assert!(app.input.is_none());
    }

    #[test]
    fn tab_completes_commands_and_their_arguments() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        keys(&mut app, &[Key::Char(':')]);
        type_text(&mut app, "we");
        keys(&mut app, &[Key::Tab]);
        assert_eq!(app.input.as_ref().unwrap().text, "weight ");
        type_text(&mut app, "pa");
        keys(&mut app, &[Key::Tab]);
        assert_eq!(app.input.as_ref().unwrap().text, "weight payments ");
        assert!(app.palette_hints().is_empty(), "no candidates for a number");
        keys(&mut app, &[Key::Esc]);
        keys(&mut app, &[Key::Char(':')]);
        type_text(&mut app, "roll");
        let hints = app.palette_hints();
        assert!(
            hints.iter().any(|h| h.starts_with("rollback [REVISION]")),
            "{hints:?}"
        );
        assert!(
            hints.iter().any(|h| h.starts_with("rollforward")),
            "{hints:?}"
        );
    }

    #[test]
    fn w_opens_the_palette_with_the_current_weight() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        keys(&mut app, &[Key::Char('j'), Key::Char('w')]);
        assert_eq!(app.input.as_ref().unwrap().text, "weight payments 5");
        assert_eq!(app.input.as_ref().unwrap().kind, InputKind::Palette);
    }

    #[test]
    fn the_filter_narrows_the_routes_and_the_selection_follows() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        keys(&mut app, &[Key::Char('/')]);
        type_text(&mut app, "pay");
        assert_eq!(app.filter, "pay", "narrows as it is typed");
        keys(&mut app, &[Key::Enter]);
        let env = app.env().unwrap();
        assert_eq!(env.routes(&app.filter).len(), 1);
        let c = keys(&mut app, &[Key::Char('+')]);
        assert!(
            matches!(&c[..], [Command::Plan { action: Action::SetCanary { route, percent: 10 }, .. }] if route == "payments"),
            "{c:?}"
        );
        app.busy = None;
        keys(&mut app, &[Key::Char('/'), Key::Esc]);
        assert_eq!(app.filter, "", "Esc clears the filter");
    }

    #[test]
    fn esc_on_the_main_screen_clears_a_kept_filter() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        keys(&mut app, &[Key::Char('/')]);
        type_text(&mut app, "pay");
        assert!(
            app.palette_hints().is_empty(),
            "the filter prompt lists no commands"
        );
        keys(&mut app, &[Key::Enter]);
        assert_eq!(app.filter, "pay");
        assert!(app.input.is_none());
        keys(&mut app, &[Key::Esc]);
        assert_eq!(app.filter, "", "Esc clears the filter kept with Enter");
        assert_eq!(app.env().unwrap().routes(&app.filter).len(), 3);
        // With no filter, Esc does nothing (and quits nothing).
        assert!(keys(&mut app, &[Key::Esc]).is_empty());
    }

    fn revs(n: u64) -> Vec<RevisionInfo> {
        (1..=n)
            .map(|i| RevisionInfo {
                number: i,
                time: t0(),
                actor: "alice".into(),
                description: format!("change {i}"),
                change: crate::domain::Change::ReplaceConfig,
                hash: format!("h{i}"),
            })
            .collect()
    }

    #[test]
    fn history_loads_diffs_and_rolls_back_to_the_selected_revision() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::TypeName, false)], false);
        update(
            &mut app,
            Event::EnvUpdate {
                watches: Vec::new(),
                env: 0,
                status: Ok(status(4, 5)),
                revisions: Some(revs(4)),
                at: t0(),
            },
        );
        let c = keys(&mut app, &[Key::Char('H')]);
        assert_eq!(c, vec![Command::LoadDiff { env: 0, number: 4 }]);
        assert!(keys(&mut app, &[Key::Char('r')]).is_empty(), "4 is current");
        assert!(app.toasts.iter().any(|t| t.text.contains("current")));
        let c = keys(&mut app, &[Key::Char('j')]);
        assert_eq!(c, vec![Command::LoadDiff { env: 0, number: 3 }]);
        update(
            &mut app,
            Event::Diff {
                env: 0,
                number: 3,
                result: Ok(vec!["~ route users: a → b".into()]),
            },
        );
        let c = keys(&mut app, &[Key::Char('j'), Key::Char('k')]);
        assert_eq!(
            c,
            vec![Command::LoadDiff { env: 0, number: 2 }],
            "3 is loaded already"
        );
        let c = keys(&mut app, &[Key::Char('r')]);
        assert!(
            matches!(
                &c[..],
                [Command::Plan {
                    action: Action::Rollback { to: Some(3) },
                    ..
                }]
            ),
            "{c:?}"
        );
    }

    #[test]
    fn history_keeps_the_selected_revision_when_entries_arrive_on_top() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::TypeName, false)], false);
        let poll = |app: &mut App, n: u64| {
            update(
                app,
                Event::EnvUpdate {
                    watches: Vec::new(),
                    env: 0,
                    status: Ok(status(n, 5)),
                    revisions: Some(revs_at(n)),
                    at: t0(),
                },
            )
        };
        poll(&mut app, 4);
        keys(&mut app, &[Key::Char('H'), Key::Char('j')]);
        let selected = |app: &App| app.env().unwrap().selected_revision("").map(|r| r.number);
        assert_eq!(selected(&app), Some(3));
        // Another operator makes revision 5.
        poll(&mut app, 5);
        assert_eq!(selected(&app), Some(3), "still r3, not r4");
        // A cancelled dialog lands in the journal, newest of all.
        let cancelled = journal_entry("prod", 60, Outcome::Cancelled, None, None);
        update(
            &mut app,
            Event::Journal(Ok(JournalRead {
                entries: vec![cancelled.clone()],
                skipped: 0,
            })),
        );
        assert_eq!(app.env().unwrap().history("").len(), 6);
        assert_eq!(
            selected(&app),
            Some(3),
            "still r3 under the new journal row"
        );
        let c = keys(&mut app, &[Key::Char('r')]);
        assert!(
            matches!(
                &c[..],
                [Command::Plan {
                    action: Action::Rollback { to: Some(3) },
                    ..
                }]
            ),
            "{c:?}"
        );
        app.busy = None;
        // A selected journal row stays selected too, by its entry.
        let refused = journal_entry("prod", 70, Outcome::Refused, None, Some("frozen"));
        let journal = |app: &mut App, entries: Vec<AuditEntry>| {
            update(
                app,
                Event::Journal(Ok(JournalRead {
                    entries,
                    skipped: 0,
                })),
            )
        };
        journal(&mut app, vec![cancelled.clone(), refused.clone()]);
        assert_eq!(selected(&app), Some(3));
        keys(&mut app, &[Key::Char('k'); 3]);
        let selected_outcome = |app: &App| {
            app.env()
                .unwrap()
                .selected_history("")
                .and_then(|h| h.entry().map(|e| e.outcome))
        };
        assert_eq!(app.env().unwrap().rev_selected, 1);
        assert_eq!(selected_outcome(&app), Some(Outcome::Cancelled));
        let failed = journal_entry("prod", 80, Outcome::Failed, None, Some("timed out"));
        journal(
            &mut app,
            vec![cancelled.clone(), refused.clone(), failed.clone()],
        );
        assert_eq!(app.env().unwrap().rev_selected, 2);
        assert_eq!(selected_outcome(&app), Some(Outcome::Cancelled));
        // On the top row, the selection follows the newest entry.
        keys(&mut app, &[Key::Char('k'); 2]);
        let conflict = journal_entry("prod", 90, Outcome::Conflict, None, Some("moved"));
        journal(&mut app, vec![cancelled, refused, failed, conflict]);
        assert_eq!(app.env().unwrap().rev_selected, 0);
        assert_eq!(selected_outcome(&app), Some(Outcome::Conflict));
    }

    #[test]
    fn the_selected_route_stays_selected_when_a_route_is_added_before_it() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        keys(&mut app, &[Key::Char('j')]);
        let mut s = status(4, 5);
        let mut extra = s.routes[2].clone();
        extra.name = "accounts".into();
        s.routes.insert(0, extra);
        update(
            &mut app,
            Event::EnvUpdate {
                watches: Vec::new(),
                env: 0,
                status: Ok(s),
                revisions: None,
                at: t0(),
            },
        );
        let r = app
            .env()
            .unwrap()
            .selected_route("")
            .map(|r| r.name.clone());
        assert_eq!(r.as_deref(), Some("payments"));
    }

    /// A journal entry `mins` minutes after t0.
    pub fn journal_entry(
        env: &str,
        mins: i64,
        outcome: Outcome,
        revision: Option<u64>,
        error: Option<&str>,
    ) -> AuditEntry {
        AuditEntry {
            time: t0() + chrono::Duration::minutes(mins),
            actor: "bo@laptop".into(),
            env: env.into(),
            action: Action::SetCanary {
                route: "payments".into(),
                percent: 50,
            },
            description: "set payments canary to 50%".into(),
            before: "payments-v1 95 / payments-v2 5".into(),
            after: "payments-v1 50 / payments-v2 50".into(),
            checks: vec![Check {
                name: "canary step".into(),
                passed: outcome != Outcome::Refused,
                detail: "45 points, the limit is 25".into(),
            }],
            outcome,
            revision,
            error: error.map(String::from),
            forced: None,
        }
    }

    fn revs_at(n: u64) -> Vec<RevisionInfo> {
        // Revision i at t0 + 10·i minutes.
        revs(n)
            .into_iter()
            .map(|mut r| {
                r.time = t0() + chrono::Duration::minutes(10 * r.number as i64);
                r
            })
            .collect()
    }

    #[test]
    fn history_interleaves_the_journal_with_the_revisions_newest_first() {
        let mut app = app_with(
            vec![
                def("stage", ConfirmPolicy::Yes, false),
                def("prod", ConfirmPolicy::TypeName, false),
            ],
            false,
        );
        update(
            &mut app,
            Event::EnvUpdate {
                env: 1,
                status: Ok(status(3, 5)),
                revisions: Some(revs_at(3)),
                watches: Vec::new(),
                at: t0(),
            },
        );
        let entries = vec![
            journal_entry(
                "prod",
                15,
                Outcome::Refused,
                None,
                Some("canary step too big"),
            ),
            // The entry that made revision 3 shares its row.
            journal_entry("prod", 30, Outcome::Applied, Some(3), None),
            journal_entry(
                "stage",
                31,
                Outcome::Failed,
                None,
                Some("connection refused"),
            ),
            journal_entry("prod", 35, Outcome::Cancelled, None, None),
            journal_entry("nowhere", 36, Outcome::Applied, None, None),
        ];
        update(
            &mut app,
            Event::Journal(Ok(JournalRead {
                entries,
                skipped: 1,
            })),
        );
        assert_eq!(app.journal_skipped, 1);
        assert_eq!(app.envs[0].journal.len(), 1, "stage's own entry");
        assert_eq!(app.envs[1].journal.len(), 3);
        let h = app.envs[1].history("");
        let rows: Vec<(Option<u64>, Option<Outcome>)> = h
            .iter()
            .map(|i| (i.revision(), i.entry().map(|e| e.outcome)))
            .collect();
        assert_eq!(
            rows,
            vec![
                (None, Some(Outcome::Cancelled)),
                (Some(3), Some(Outcome::Applied)),
                (Some(2), None),
                (None, Some(Outcome::Refused)),
                (Some(1), None),
            ]
        );
        // The filter finds entries by outcome and reason too.
        assert_eq!(app.envs[1].history("refused").len(), 1);
        assert_eq!(app.envs[1].history("too big").len(), 1);
    }

    #[test]
    fn history_selection_walks_journal_rows_and_loads_diffs_only_for_revisions() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::TypeName, false)], false);
        update(
            &mut app,
            Event::EnvUpdate {
                env: 0,
                status: Ok(status(3, 5)),
                revisions: Some(revs_at(3)),
                watches: Vec::new(),
                at: t0(),
            },
        );
        update(
            &mut app,
            Event::Journal(Ok(JournalRead {
                entries: vec![
                    journal_entry("prod", 15, Outcome::Refused, None, Some("frozen")),
                    journal_entry("prod", 35, Outcome::Failed, None, Some("timed out")),
                ],
                skipped: 0,
            })),
        );
        // Newest first: failed(35), r3, r2, refused(15), r1.
        let c = keys(&mut app, &[Key::Char('H')]);
        assert!(c.is_empty(), "a journal row needs no diff read: {c:?}");
        assert!(matches!(
            app.env().unwrap().selected_history(""),
            Some(HistoryItem::Journal(e)) if e.outcome == Outcome::Failed
        ));
        assert!(keys(&mut app, &[Key::Char('r')]).is_empty());
        assert!(
            app.toasts
                .iter()
                .any(|t| t.text.contains("journal entry is not a revision")),
            "{:?}",
            app.toasts
        );
        let c = keys(&mut app, &[Key::Char('j')]);
        assert_eq!(c, vec![Command::LoadDiff { env: 0, number: 3 }]);
        let c = keys(&mut app, &[Key::Char('j'), Key::Char('j')]);
        assert_eq!(c, vec![Command::LoadDiff { env: 0, number: 2 }]);
        assert!(matches!(
            app.env().unwrap().selected_history(""),
            Some(HistoryItem::Journal(e)) if e.outcome == Outcome::Refused
        ));
        // Scrolling stops at both ends.
        keys(&mut app, &[Key::Char('j'); 5]);
        assert_eq!(app.env().unwrap().rev_selected, 4);
        keys(&mut app, &[Key::Char('k'); 9]);
        assert_eq!(app.env().unwrap().rev_selected, 0);
        // A rollback from History goes to the selected revision.
        let c = keys(&mut app, &[Key::Char('j'), Key::Char('j'), Key::Char('r')]);
        assert!(
            matches!(
                &c[..],
                [
                    ..,
                    Command::Plan {
                        action: Action::Rollback { to: Some(2) },
                        ..
                    }
                ]
            ),
            "{c:?}"
        );
    }

    #[test]
    fn journal_reads_keep_the_newest_entries_and_errors_keep_the_last_good_read() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::Yes, false)], false);
        let entries: Vec<AuditEntry> = (0..MAX_JOURNAL as i64 + 10)
            .map(|i| journal_entry("prod", i, Outcome::Cancelled, None, None))
            .collect();
        update(
            &mut app,
            Event::Journal(Ok(JournalRead {
                entries,
                skipped: 0,
            })),
        );
        let j = &app.envs[0].journal;
        assert_eq!(j.len(), MAX_JOURNAL);
        assert_eq!(
            j[0].time,
            t0() + chrono::Duration::minutes(10),
            "oldest dropped"
        );
        assert!(j.windows(2).all(|w| w[0].time <= w[1].time), "oldest first");
        update(
            &mut app,
            Event::Journal(Err("/var/lib/audit.jsonl: permission denied".into())),
        );
        assert_eq!(app.envs[0].journal.len(), MAX_JOURNAL);
        assert!(app.journal_error.as_deref().unwrap().contains("permission"));
        update(&mut app, Event::Journal(Ok(JournalRead::default())));
        assert!(app.journal_error.is_none());
        assert!(app.envs[0].journal.is_empty());
    }

    #[test]
    fn t_toggles_the_selected_flag_in_the_flags_view() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false);
        let mut s = status(4, 5);
        s.flags = vec![FlagStatus {
            key: "new-checkout".into(),
            state: FlagState::Enabled,
            default_variant: Some("off".into()),
            variants: vec!["on".into(), "off".into()],
            has_targeting: true,
        }];
        update(
            &mut app,
            Event::EnvUpdate {
                watches: Vec::new(),
                env: 0,
                status: Ok(s),
                revisions: None,
                at: t0(),
            },
        );
        assert!(
            keys(&mut app, &[Key::Char('t')]).is_empty(),
            "not in overview"
        );
        let c = keys(&mut app, &[Key::Char('F'), Key::Char('t')]);
        assert_eq!(
            c,
            vec![Command::Plan {
                id: 1,
                env: "dev".into(),
                action: Action::SetFlag {
                    key: "new-checkout".into(),
                    state: Some(FlagState::Disabled),
                    variant: None
                }
            }]
        );
    }

    #[test]
    fn faults_need_a_sandbox_and_go_through_a_plan() {
        let mut app = app_with(vec![def("dev", ConfirmPolicy::Yes, false)], false);
        keys(&mut app, &[Key::Char('j'), Key::Char('x')]);
        assert!(app.input.is_none());
        assert!(
            app.toasts
                .iter()
                .any(|t| t.text.contains("needs a sandbox"))
        );
        let mut app =
            app_with(vec![def("dev", ConfirmPolicy::Yes, false)], false).with_sandbox(true);
        keys(&mut app, &[Key::Char('j'), Key::Char('x')]);
        assert_eq!(app.input.as_ref().unwrap().text, "fault payments-v2 5xx 50");
        let c = keys(&mut app, &[Key::Enter]);
        assert_eq!(
            c,
            vec![Command::Plan {
                id: 1,
                env: "dev".into(),
                action: Action::SetFault {
                    upstream: "payments-v2".into(),
                    faults: FaultSpec {
                        error_percent: 50,
                        ..FaultSpec::default()
                    }
                }
            }]
        );
    }

    #[test]
    fn a_header_canary_is_where_x_aims_and_what_a_canary_step_moves() {
        let search = RouteStatus {
            name: "search".into(),
            paths: vec!["/api/search".into()],
            exact_paths: vec![],
            methods: vec![],
            hosts: vec![],
            split: [("search-v1".to_string(), 100)].into(),
            canary_by_header: Some(crate::domain::status::HeaderCanaryStatus {
                name: "X-Canary".into(),
                value: "true".into(),
                upstream: "search-v2".into(),
            }),
            canary: None,
            sticky: None,
            filters: vec![],
            flag: None,
        };
        // Not the one live upstream, which carries every plain request.
        assert_eq!(fault_target(&search).as_deref(), Some("search-v2"));
        assert_eq!(search.canary_step_sides(), Some(("search-v1", "search-v2")));
    }

    #[test]
    fn x_aims_at_the_idle_side_and_big_x_clears_every_upstream_of_the_route() {
        let clear = |up: &str| Action::SetFault {
            upstream: up.into(),
            faults: FaultSpec::default(),
        };
        let mut app =
            app_with(vec![def("dev", ConfirmPolicy::None, false)], false).with_sandbox(true);
        // users is blue-green with blue live: the fault goes to idle green.
        keys(&mut app, &[Key::Char('x')]);
        assert_eq!(app.input.as_ref().unwrap().text, "fault users-green 5xx 50");
        keys(&mut app, &[Key::Esc, Key::Char('j'), Key::Char('X')]);
        assert_eq!(
            app.input.as_ref().unwrap().text,
            "fault payments-v1 payments-v2 clear"
        );
        let c = keys(&mut app, &[Key::Enter]);
        assert_eq!(
            c,
            vec![Command::Plan {
                id: 1,
                env: "dev".into(),
                action: clear("payments-v1")
            }]
        );
        // dev needs no confirmation: applied, then the next one is planned.
        let mut plan = plan_view("dev", ConfirmPolicy::None, true);
        plan.description = "clear faults of payments-v1".into();
        let c = update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Ok(plan),
            },
        );
        assert_eq!(c, vec![Command::Execute { id: 1 }]);
        let applied = ExecResult {
            outcome: Outcome::Applied,
            revision: None,
            error: None,
        };
        let c = update(
            &mut app,
            Event::Executed {
                id: 1,
                result: applied,
            },
        );
        assert_eq!(
            c,
            vec![Command::Plan {
                id: 2,
                env: "dev".into(),
                action: clear("payments-v2")
            }]
        );
        assert!(app.queued.is_empty());

        // A cancelled dialog drops the rest, and says so.
        let mut app =
            app_with(vec![def("prod", ConfirmPolicy::Yes, false)], false).with_sandbox(true);
        keys(&mut app, &[Key::Char(':')]);
        type_text(&mut app, "fault users-blue users-green clear");
        keys(&mut app, &[Key::Enter]);
        update(
            &mut app,
            Event::Planned {
                id: 1,
                result: Ok(plan_view("prod", ConfirmPolicy::Yes, true)),
            },
        );
        assert!(app.dialog.is_some());
        assert_eq!(keys(&mut app, &[Key::Esc]), vec![Command::Cancel { id: 1 }]);
        assert!(app.queued.is_empty());
        assert!(
            app.toasts
                .iter()
                .any(|t| t.text == "not planned: clear faults of users-green"),
            "{:?}",
            app.toasts
        );
    }

    #[test]
    fn read_only_palette_refuses_changes_but_navigates() {
        let mut app = app_with(vec![def("prod", ConfirmPolicy::Yes, false)], true);
        keys(&mut app, &[Key::Char(':')]);
        type_text(&mut app, "weight payments 10");
        assert!(keys(&mut app, &[Key::Enter]).is_empty());
        assert!(
            app.input
                .as_ref()
                .unwrap()
                .error
                .as_deref()
                .unwrap()
                .contains("read-only")
        );
        keys(&mut app, &[Key::Esc, Key::Char(':')]);
        type_text(&mut app, "view history");
        keys(&mut app, &[Key::Enter]);
        assert_eq!(app.view, View::History);
    }

    #[test]
    fn palette_lines_parse_or_say_why_not() {
        let m = Keymap::default();
        let p = |s: &str| parse_command(s, &m);
        assert_eq!(
            p("flag new-ui off"),
            Ok(Intent::Change(Action::SetFlag {
                key: "new-ui".into(),
                state: Some(FlagState::Disabled),
                variant: None
            }))
        );
        assert_eq!(
            p("flag search-ranking semantic"),
            Ok(Intent::Change(Action::SetFlag {
                key: "search-ranking".into(),
                state: None,
                variant: Some("semantic".into())
            }))
        );
        assert_eq!(
            p("rollback 7"),
            Ok(Intent::Change(Action::Rollback { to: Some(7) }))
        );
        assert_eq!(p("rollback"), Ok(Intent::Key(KeyAction::Rollback)));
        assert_eq!(p("flip"), Ok(Intent::Key(KeyAction::Flip)));
        assert_eq!(
            p("fault users-green latency 300ms"),
            Ok(Intent::Change(Action::SetFault {
                upstream: "users-green".into(),
                faults: FaultSpec {
                    latency_ms: 300,
                    ..FaultSpec::default()
                }
            }))
        );
        assert!(
            p("fault users-green latency 1h")
                .unwrap_err()
                .contains("milliseconds")
        );
        assert!(p("rollback x").unwrap_err().contains("number"));
        assert!(p("frobnicate").unwrap_err().contains("unknown command"));
        assert!(p("quit now").unwrap_err().contains("takes no arguments"));
        assert!(p("").is_err());
        assert_eq!(p("view envs"), Ok(Intent::View(View::Environments)));
    }

    #[test]
    fn a_bad_keys_entry_is_a_toast_and_the_good_override_still_works() {
        let o: std::collections::BTreeMap<String, keymap::KeySpec> = [
            ("flip".to_string(), keymap::KeySpec::One("b".into())),
            ("canary_up".to_string(), keymap::KeySpec::One("f13".into())),
        ]
        .into();
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false)
            .with_keymap(Keymap::with_overrides(&o));
        assert!(
            app.toasts
                .iter()
                .any(|t| t.kind == ToastKind::Failure && t.text.contains("keys.canary_up")),
            "{:?}",
            app.toasts
        );
        // The rebound flip plans; canary_up kept its default `+`.
        let cmds = keys(&mut app, &[Key::Char('b')]);
        assert!(
            matches!(cmds.as_slice(), [Command::Plan { .. }]),
            "{cmds:?}"
        );
        let mut app = app_with(vec![def("dev", ConfirmPolicy::None, false)], false)
            .with_keymap(Keymap::with_overrides(&o));
        let cmds = keys(&mut app, &[Key::Down, Key::Char('+')]);
        assert!(
            matches!(cmds.as_slice(), [Command::Plan { .. }]),
            "{cmds:?}"
        );
    }
}
