//! The walkthrough as a pure state machine: which step runs next, what a step's result
//! does to the walk, what an operator's decision does, and how a run picks up after a
//! crash. The engine (`super::engine`) does the I/O and persists this state after every
//! transition, so the state file always says what has and has not touched traffic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::runbook::{AnalyzeStep, PlannedStep, Runbook};
use crate::domain::metrics::{MetricsSample, Verdict};

/// Bumped when the state file changes shape.
pub const STATE_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalkState {
    pub format: u32,
    pub id: String,
    pub runbook: String,
    pub runbook_path: String,
    /// A resumed run must be of the same runbook text: steps are addressed by index.
    pub runbook_sha256: String,
    pub route: String,
    pub actor: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRecord>,
    /// The step running or next to run.
    pub cursor: usize,
    pub status: WalkStatus,
    /// Per environment, its revision before the walkthrough first changed it.
    #[serde(default)]
    pub start_revisions: BTreeMap<String, u64>,
    /// What the rollback did, per environment.
    #[serde(default)]
    pub rollback: Vec<RollbackRecord>,
    /// Operator decisions, interruptions and resumes, oldest first.
    #[serde(default)]
    pub log: Vec<LogLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WalkStatus {
    Running,
    /// A pause step, an inconclusive analysis, a failed action, or a change interrupted
    /// mid-apply: nothing moves until the operator decides.
    AwaitingOperator {
        reason: String,
        #[serde(default)]
        kind: PauseKind,
    },
    RollingBack {
        cause: Cause,
        reason: String,
    },
    Finished {
        outcome: WalkOutcome,
    },
}

/// Why the walk waits for an operator; front ends answer each differently when nobody
/// is there to ask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// A `pause` step.
    #[default]
    Approval,
    /// An analysis without enough data to judge.
    Inconclusive,
    /// An action could not be applied (unreachable, conflict, declined).
    Error,
    /// A change was interrupted and is not in effect.
    Interrupted,
}

/// What stopped a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A metric gate failed.
    Gate,
    /// A check, smoke test or timed-out pause failed.
    Step,
    /// The operator aborted.
    Operator,
    /// An environment could not be reached or refused a change.
    Error,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum WalkOutcome {
    Released,
    /// Stopped, and the rollback policy undid every change.
    RolledBack {
        cause: Cause,
        reason: String,
    },
    /// Stopped before it had changed anything, so there was nothing to roll back.
    StoppedUnchanged {
        cause: Cause,
        reason: String,
    },
    /// Stopped, and not (fully) undone: the policy is `none` or a rollback failed.
    Stopped {
        cause: Cause,
        reason: String,
        rollback_error: Option<String>,
    },
}

impl WalkOutcome {
    /// `signalbox walk`'s exit code: 0 released, 2 rolled back (gate, step or operator),
    /// 1 an error, or a stop that was not undone.
    pub fn exit_code(&self) -> i32 {
        match self {
            WalkOutcome::Released => 0,
            WalkOutcome::RolledBack { cause, .. } | WalkOutcome::StoppedUnchanged { cause, .. }
                if *cause != Cause::Error =>
            {
                2
            }
            WalkOutcome::Stopped {
                cause,
                rollback_error: None,
                ..
            } if *cause != Cause::Error => 2,
            _ => 1,
        }
    }

    pub fn summary(&self) -> String {
        match self {
            WalkOutcome::Released => "released".into(),
            WalkOutcome::RolledBack { reason, .. } => format!("rolled back: {reason}"),
            WalkOutcome::StoppedUnchanged { reason, .. } => {
                format!("stopped before any change: {reason}; nothing to roll back")
            }
            WalkOutcome::Stopped {
                reason,
                rollback_error: Some(e),
                ..
            } => format!("stopped: {reason}; ROLLBACK FAILED: {e}"),
            WalkOutcome::Stopped { reason, .. } => {
                format!("stopped: {reason}; not rolled back (policy none)")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    pub env: String,
    pub description: String,
    pub revision: Option<u64>,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
    /// Waiting for the operator (pause, inconclusive analysis, failed action).
    Paused,
    /// A change that was being applied when the process died: whether it took effect is
    /// unknown until the environment is read again.
    Interrupted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub env: String,
    pub kind: String,
    pub title: String,
    /// Changes traffic or flags through `control`.
    pub mutating: bool,
    pub status: StepStatus,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// When a wait, analysis or pause ends (for the countdown).
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub detail: Option<String>,
    /// The environment's revision when the change was planned.
    #[serde(default)]
    pub base_revision: Option<u64>,
    /// The revision the change created.
    #[serde(default)]
    pub revision: Option<u64>,
    /// The latest gate values (analysis steps).
    #[serde(default)]
    pub gates: Vec<GateValue>,
    #[serde(default)]
    pub measurements: Counts,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub skip_reason: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub inconclusive: u32,
}

/// What the engine should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    Step(usize),
    /// The step at this index was interrupted mid-apply: read the environment first.
    Verify(usize),
    AwaitOperator(PauseKind, String),
    RollBack(Cause, String),
    /// Every step is done: record the release.
    Release,
    Finished(WalkOutcome),
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepResult {
    Done {
        detail: String,
        revision: Option<u64>,
    },
    Failed {
        cause: Cause,
        reason: String,
    },
    /// Needs an operator: a pause, an inconclusive analysis, an error worth a retry.
    Paused {
        reason: String,
        kind: PauseKind,
    },
}

/// What an operator can say at a paused step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve the pause, or accept what the step shows.
    Continue,
    /// Run the step again.
    Retry,
    /// Go on without the step; the reason is recorded.
    Skip(String),
    /// Stop and roll back.
    Abort(Cause, String),
}

impl WalkState {
    /// A fresh walk of `rb`'s expanded `steps`.
    pub fn new(
        id: String,
        rb: &Runbook,
        runbook_path: &str,
        runbook_sha256: &str,
        actor: &str,
        steps: &[PlannedStep],
        now: DateTime<Utc>,
    ) -> Self {
        let (runbook, route) = (rb.name.as_str(), rb.route.as_str());
        Self {
            format: STATE_FORMAT,
            id,
            runbook: runbook.to_string(),
            runbook_path: runbook_path.to_string(),
            runbook_sha256: runbook_sha256.to_string(),
            route: route.to_string(),
            actor: actor.to_string(),
            started_at: now,
            finished_at: None,
            steps: steps
                .iter()
                .map(|p| StepRecord {
                    env: p.env.clone(),
                    kind: p.step.kind().to_string(),
                    title: p.step.title(route),
                    mutating: p.step.action(route).is_some(),
                    status: StepStatus::Pending,
                    started_at: None,
                    finished_at: None,
                    deadline: None,
                    detail: None,
                    base_revision: None,
                    revision: None,
                    gates: Vec::new(),
                    measurements: Counts::default(),
                    attempts: 0,
                    skip_reason: None,
                })
                .collect(),
            cursor: 0,
            status: WalkStatus::Running,
            start_revisions: BTreeMap::new(),
            rollback: Vec::new(),
            log: Vec::new(),
        }
    }

    pub fn next(&self) -> Next {
        match &self.status {
            WalkStatus::Finished { outcome } => Next::Finished(outcome.clone()),
            WalkStatus::RollingBack { cause, reason } => Next::RollBack(*cause, reason.clone()),
            WalkStatus::AwaitingOperator { reason, kind } => {
                Next::AwaitOperator(*kind, reason.clone())
            }
            WalkStatus::Running if self.cursor >= self.steps.len() => Next::Release,
            WalkStatus::Running => match self.steps[self.cursor].status {
                StepStatus::Interrupted => Next::Verify(self.cursor),
                _ => Next::Step(self.cursor),
            },
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, WalkStatus::Finished { .. })
    }

    fn note(&mut self, now: DateTime<Utc>, text: impl Into<String>) {
        self.log.push(LogLine {
            at: now,
            text: text.into(),
        });
    }

    pub fn start_step(&mut self, i: usize, now: DateTime<Utc>, deadline: Option<DateTime<Utc>>) {
        let s = &mut self.steps[i];
        s.status = StepStatus::Running;
        s.started_at = Some(now);
        s.finished_at = None;
        s.deadline = deadline;
        s.attempts += 1;
        s.gates.clear();
        s.measurements = Counts::default();
    }

    /// Recorded (and persisted) right before a change is applied, so a crash mid-apply
    /// leaves a trace of what might have changed.
    pub fn before_apply(&mut self, i: usize, base_revision: u64) {
        self.steps[i].base_revision = Some(base_revision);
    }

    pub fn record_measurement(&mut self, i: usize, m: &Measurement) {
        let s = &mut self.steps[i];
        s.gates = m.gates.clone();
        match m.result() {
            GateStatus::Pass => s.measurements.passed += 1,
            GateStatus::Fail => s.measurements.failed += 1,
            GateStatus::NoData => s.measurements.inconclusive += 1,
        }
    }

    pub fn finish_step(&mut self, i: usize, result: StepResult, now: DateTime<Utc>) {
        let s = &mut self.steps[i];
        s.finished_at = Some(now);
        match result {
            StepResult::Done { detail, revision } => {
                s.status = StepStatus::Done;
                s.detail = Some(detail);
                s.revision = revision;
                s.deadline = None;
                if s.mutating
                    && revision.is_some()
                    && let Some(base) = s.base_revision
                {
                    self.start_revisions.entry(s.env.clone()).or_insert(base);
                }
                self.cursor = i + 1;
                self.status = WalkStatus::Running;
            }
            StepResult::Failed { cause, reason } => {
                s.status = StepStatus::Failed;
                s.detail = Some(reason.clone());
                s.deadline = None;
                self.status = WalkStatus::RollingBack {
                    cause,
                    reason: format!("step {} ({}) failed: {reason}", i + 1, s.title),
                };
            }
            StepResult::Paused { reason, kind } => {
                s.status = StepStatus::Paused;
                s.detail = Some(reason.clone());
                self.status = WalkStatus::AwaitingOperator { reason, kind };
            }
        }
    }

    /// The operator's answer at a paused step. Returns an error (and changes nothing) if
    /// the walk is not waiting for one.
    pub fn decide(&mut self, d: Decision, actor: &str, now: DateTime<Utc>) -> Result<(), String> {
        let WalkStatus::AwaitingOperator { .. } = self.status else {
            return Err(match &self.status {
                WalkStatus::Finished { outcome } => {
                    format!("the walkthrough is over ({})", outcome.summary())
                }
                _ => "the walkthrough is not waiting for an operator".into(),
            });
        };
        let i = self.cursor;
        let Some(title) = self.steps.get(i).map(|s| s.title.clone()) else {
            return Err("the walkthrough has no step to decide on".into());
        };
        match d {
            Decision::Continue => {
                if self.steps[i].status == StepStatus::Interrupted {
                    return Err(format!(
                        "step {} ({title}) was interrupted while changing the environment; retry, skip or abort it",
                        i + 1
                    ));
                }
                let s = &mut self.steps[i];
                s.status = StepStatus::Done;
                s.finished_at = Some(now);
                s.deadline = None;
                self.cursor = i + 1;
                self.status = WalkStatus::Running;
                self.note(now, format!("{actor} approved step {} ({title})", i + 1));
            }
            Decision::Retry => {
                self.steps[i].status = StepStatus::Pending;
                self.steps[i].deadline = None;
                self.status = WalkStatus::Running;
                self.note(now, format!("{actor} retried step {} ({title})", i + 1));
            }
            Decision::Skip(reason) => {
                let reason = reason.trim().to_string();
                if reason.is_empty() {
                    return Err("skipping a step needs a reason".into());
                }
                let s = &mut self.steps[i];
                s.status = StepStatus::Skipped;
                s.finished_at = Some(now);
                s.deadline = None;
                s.skip_reason = Some(reason.clone());
                self.cursor = i + 1;
                self.status = WalkStatus::Running;
                self.note(
                    now,
                    format!("{actor} skipped step {} ({title}): {reason}", i + 1),
                );
            }
            Decision::Abort(cause, reason) => {
                if let Some(s) = self.steps.get_mut(i) {
                    s.status = StepStatus::Failed;
                    s.finished_at = Some(now);
                    s.deadline = None;
                    s.detail = Some(format!("aborted: {reason}"));
                }
                self.note(
                    now,
                    format!("{actor} aborted at step {} ({title}): {reason}", i + 1),
                );
                self.status = WalkStatus::RollingBack { cause, reason };
            }
        }
        Ok(())
    }

    /// Ctrl-C or SIGTERM while a step that changes nothing was running: it runs again on
    /// resume. A change in flight is never interrupted, so there is nothing else to undo.
    pub fn interrupt(&mut self, now: DateTime<Utc>) {
        if let Some(s) = self.steps.get_mut(self.cursor)
            && s.status == StepStatus::Running
            && !s.mutating
        {
            s.status = StepStatus::Pending;
            s.deadline = None;
        }
        self.note(now, "interrupted");
    }

    /// Picks the run up after an interruption or a crash. A step that changes nothing and
    /// was running is run again. A change that was running is never re-applied blindly:
    /// it becomes `Interrupted`, and the engine reads the environment to see whether it
    /// took effect (see [`Next::Verify`]).
    pub fn resume(&mut self, now: DateTime<Utc>) {
        if let Some(s) = self.steps.get_mut(self.cursor)
            && s.status == StepStatus::Running
        {
            if s.mutating {
                s.status = StepStatus::Interrupted;
            } else {
                s.status = StepStatus::Pending;
                s.deadline = None;
            }
        }
        self.note(now, "resumed");
    }

    /// An interrupted change turned out to be in effect: it counts as done, once.
    pub fn verified(&mut self, i: usize, revision: u64, now: DateTime<Utc>) {
        let s = &mut self.steps[i];
        s.status = StepStatus::Running;
        let detail = format!(
            "applied before the interruption (the environment shows it at revision {revision}); not applied again"
        );
        self.note(now, format!("step {}: {detail}", i + 1));
        self.finish_step(
            i,
            StepResult::Done {
                detail,
                revision: Some(revision),
            },
            now,
        );
    }

    /// An interrupted change is not in effect: the operator decides (retry applies it).
    pub fn unverified(&mut self, i: usize, now: DateTime<Utc>) {
        let title = self.steps[i].title.clone();
        let reason = format!(
            "step {} ({title}) was interrupted while applying and the environment does not show it; retry to apply it, skip it, or abort",
            i + 1
        );
        self.steps[i].detail = Some(reason.clone());
        self.note(now, reason.clone());
        self.status = WalkStatus::AwaitingOperator {
            reason,
            kind: PauseKind::Interrupted,
        };
    }

    /// Stops the walk and rolls back from wherever it is (the operator's `--abort`).
    pub fn abort(&mut self, actor: &str, reason: &str, now: DateTime<Utc>) -> Result<(), String> {
        match &self.status {
            WalkStatus::Finished { outcome } => {
                Err(format!("the walkthrough is over ({})", outcome.summary()))
            }
            WalkStatus::RollingBack { .. } => Ok(()),
            _ => {
                if let Some(s) = self.steps.get_mut(self.cursor)
                    && matches!(s.status, StepStatus::Running | StepStatus::Paused)
                {
                    s.status = StepStatus::Failed;
                    s.finished_at = Some(now);
                    s.deadline = None;
                    s.detail = Some(format!("aborted: {reason}"));
                }
                self.note(now, format!("{actor} aborted: {reason}"));
                self.status = WalkStatus::RollingBack {
                    cause: Cause::Operator,
                    reason: reason.to_string(),
                };
                Ok(())
            }
        }
    }

    /// Environments the walkthrough changed, most recent change first.
    pub fn changed_envs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.steps.iter().rev() {
            if s.mutating && s.revision.is_some() && !out.contains(&s.env) {
                out.push(s.env.clone());
            }
        }
        out
    }

    pub fn finish(&mut self, outcome: WalkOutcome, now: DateTime<Utc>) {
        self.finished_at = Some(now);
        self.status = WalkStatus::Finished { outcome };
    }

    /// "3/9" style progress.
    pub fn progress(&self) -> String {
        format!(
            "{}/{}",
            (self.cursor + 1).min(self.steps.len()),
            self.steps.len()
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Pass,
    Fail,
    /// Not enough data to judge: never a pass.
    NoData,
}

/// One gate at one moment: its value beside its threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateValue {
    pub name: String,
    /// As shown, e.g. `0.42%`; `None` when there is no value.
    pub value: Option<String>,
    /// e.g. `≤ 5.00%`.
    pub threshold: String,
    pub status: GateStatus,
    /// Why there is no value, or why it failed.
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub gates: Vec<GateValue>,
}

impl Measurement {
    /// Fail if any gate failed; else no data if any gate had none; else pass.
    pub fn result(&self) -> GateStatus {
        if self.gates.iter().any(|g| g.status == GateStatus::Fail) {
            GateStatus::Fail
        } else if self.gates.iter().any(|g| g.status == GateStatus::NoData) {
            GateStatus::NoData
        } else {
            GateStatus::Pass
        }
    }

    pub fn text(&self) -> String {
        self.gates
            .iter()
            .map(|g| {
                format!(
                    "{} {} ({}{})",
                    g.name,
                    g.value.as_deref().unwrap_or("-"),
                    g.threshold,
                    match g.status {
                        GateStatus::Pass => String::new(),
                        GateStatus::Fail => ", FAIL".into(),
                        GateStatus::NoData => format!(
                            ", not enough data: {}",
                            g.detail.as_deref().unwrap_or("no value")
                        ),
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Evaluates an analysis step's gates on one sample, for `upstream` of `route`.
pub fn measure(
    sample: &MetricsSample,
    route: &str,
    upstream: &str,
    a: &AnalyzeStep,
) -> Measurement {
    let mut gates = Vec::new();
    let r = sample.route(route);
    let u = r.and_then(|r| r.upstream(upstream));
    let requests = u.and_then(|u| {
        u.signals
            .request_rate
            .get()
            .map(|rate| rate * sample.window_secs)
    });
    let min = a.min_requests as f64;
    let enough: Result<(), String> = match requests {
        Some(n) if n + 0.5 >= min => Ok(()),
        Some(n) => Err(format!(
            "{n:.0} {} to {upstream}, need {min:.0}",
            if n.round() == 1.0 {
                "request"
            } else {
                "requests"
            }
        )),
        None => Err(format!("no traffic measured for {upstream} on {route} yet")),
    };
    let mut gate = |name: &str,
                    threshold: String,
                    value: Option<f64>,
                    shown: &dyn Fn(f64) -> String,
                    max: f64| {
        let (status, detail, v) = match (&enough, value) {
            (Err(why), _) => (GateStatus::NoData, Some(why.clone()), value.map(shown)),
            (Ok(()), None) => (
                GateStatus::NoData,
                Some(format!("{upstream} has no {name} value yet")),
                None,
            ),
            (Ok(()), Some(v)) if v <= max => (GateStatus::Pass, None, Some(shown(v))),
            (Ok(()), Some(v)) => (
                GateStatus::Fail,
                Some(format!("{name} {} is above {}", shown(v), shown(max))),
                Some(shown(v)),
            ),
        };
        gates.push(GateValue {
            name: name.to_string(),
            value: v,
            threshold,
            status,
            detail,
        });
    };
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    let ms = |v: f64| format!("{:.0}ms", v * 1000.0);
    if let Some(max) = a.max_error_ratio {
        gate(
            "error ratio",
            format!("≤ {}", pct(max)),
            u.and_then(|u| u.signals.error_ratio_5xx.get()),
            &pct,
            max,
        );
    }
    if let Some(max) = a.max_p95 {
        let max = max.0.as_secs_f64();
        gate(
            "p95",
            format!("≤ {}", ms(max)),
            u.and_then(|u| u.signals.latency_p95.get()),
            &ms,
            max,
        );
    }
    if a.compare {
        let c = r.and_then(|r| r.comparison.as_ref());
        let (status, value, detail) = match c.map(|c| &c.verdict) {
            Some(Verdict::Pass) => (GateStatus::Pass, Some("not worse".to_string()), None),
            Some(Verdict::Fail { reasons }) => (
                GateStatus::Fail,
                Some("worse".to_string()),
                Some(reasons.join("; ")),
            ),
            Some(Verdict::NotEnoughData { reason }) => {
                (GateStatus::NoData, None, Some(reason.clone()))
            }
            None => (
                GateStatus::NoData,
                None,
                Some(format!("no stable-vs-canary comparison for {route}")),
            ),
        };
        let threshold = match c {
            Some(c) => format!("not worse than {}", c.baseline),
            None => "not worse than stable".into(),
        };
        gates.push(GateValue {
            name: "vs stable".into(),
            value,
            threshold,
            status,
            detail,
        });
    }
    Measurement { gates }
}

/// Where an analysis stands.
#[derive(Clone, Debug, PartialEq)]
pub enum AnalysisVerdict {
    /// Keep measuring.
    Continue,
    Pass,
    Fail(String),
    Inconclusive(String),
}

/// After each measurement: fail as soon as failures exceed the limit; when the time is
/// up, pass only if the last measurement had enough data to judge. Not enough data is
/// never a pass.
pub fn analysis_verdict(
    counts: Counts,
    last: Option<&Measurement>,
    failure_limit: u32,
    time_up: bool,
) -> AnalysisVerdict {
    if counts.failed > failure_limit {
        let why = last
            .map(|m| {
                m.gates
                    .iter()
                    .filter(|g| g.status == GateStatus::Fail)
                    .map(|g| {
                        format!(
                            "{} {} ({})",
                            g.name,
                            g.value.as_deref().unwrap_or("-"),
                            g.threshold
                        ) + &g
                            .detail
                            .as_ref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        return AnalysisVerdict::Fail(format!(
            "{} failed measurement(s), limit {failure_limit}: {why}",
            counts.failed
        ));
    }
    if !time_up {
        return AnalysisVerdict::Continue;
    }
    match last.map(Measurement::result) {
        None => AnalysisVerdict::Inconclusive("no measurement was taken".into()),
        Some(GateStatus::NoData) => AnalysisVerdict::Inconclusive(format!(
            "not enough data: {}",
            last.map(Measurement::text).unwrap_or_default()
        )),
        Some(_) => AnalysisVerdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metrics::{
        Comparison, History, RoleSource, RouteMetrics, Signal, Signals, UpstreamMetrics,
    };
    use crate::walk::runbook::parse_str;

    const RB: &str = "\
name: t
env: stage
route: payments
steps:
  - check: { healthy: [payments-v2] }
  - set_weight: { percent: 10 }
  - analyze: { duration: 4s, max_error_ratio: 0.05, max_p95: 300ms, compare: true }
  - pause: { message: look }
  - set_weight: { percent: 100 }
";

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn walk() -> WalkState {
        let rb = parse_str(RB, "t.yaml").unwrap();
        WalkState::new(
            "id".into(),
            &rb,
            "t.yaml",
            "sha",
            "ci",
            &rb.expand("stage"),
            t(0),
        )
    }

    fn done(w: &mut WalkState, rev: Option<u64>) {
        let i = w.cursor;
        w.start_step(i, t(1), None);
        if w.steps[i].mutating {
            w.before_apply(i, 7);
        }
        w.finish_step(
            i,
            StepResult::Done {
                detail: "ok".into(),
                revision: rev,
            },
            t(2),
        );
    }

    #[test]
    fn steps_run_in_order_and_remember_the_first_revision() {
        let mut w = walk();
        assert_eq!(w.next(), Next::Step(0));
        done(&mut w, None);
        done(&mut w, Some(8));
        assert_eq!(w.start_revisions["stage"], 7);
        assert_eq!(w.changed_envs(), ["stage"]);
        done(&mut w, None);
        assert_eq!(w.next(), Next::Step(3));
        w.start_step(3, t(3), None);
        w.finish_step(
            3,
            StepResult::Paused {
                reason: "look".into(),
                kind: PauseKind::Approval,
            },
            t(3),
        );
        assert!(matches!(
            w.next(),
            Next::AwaitOperator(PauseKind::Approval, _)
        ));
        assert!(w.decide(Decision::Skip("  ".into()), "bo", t(4)).is_err());
        w.decide(Decision::Continue, "bo", t(4)).unwrap();
        done(&mut w, Some(9));
        assert_eq!(w.start_revisions["stage"], 7, "the first base is kept");
        assert_eq!(w.next(), Next::Release);
        w.finish(WalkOutcome::Released, t(5));
        assert!(w.decide(Decision::Continue, "bo", t(6)).is_err());
        assert_eq!(w.log.len(), 1);
    }

    #[test]
    fn a_failure_rolls_back_and_an_abort_names_the_operator() {
        let mut w = walk();
        done(&mut w, None);
        done(&mut w, Some(8));
        w.start_step(2, t(3), None);
        w.finish_step(
            2,
            StepResult::Failed {
                cause: Cause::Gate,
                reason: "error ratio 40%".into(),
            },
            t(4),
        );
        match w.next() {
            Next::RollBack(Cause::Gate, r) => assert!(r.contains("step 3"), "{r}"),
            other => panic!("{other:?}"),
        }
        let mut w = walk();
        w.start_step(0, t(1), None);
        w.finish_step(
            0,
            StepResult::Paused {
                reason: "x".into(),
                kind: PauseKind::Approval,
            },
            t(1),
        );
        w.decide(
            Decision::Abort(Cause::Operator, "bad smell".into()),
            "bo",
            t(2),
        )
        .unwrap();
        assert_eq!(
            w.next(),
            Next::RollBack(Cause::Operator, "bad smell".into())
        );
    }

    #[test]
    fn resume_reruns_a_wait_but_never_blindly_reapplies_a_change() {
        let mut w = walk();
        done(&mut w, None);
        // Crash while the weight change was being applied.
        w.start_step(1, t(1), None);
        w.before_apply(1, 7);
        let saved = serde_json::to_string(&w).unwrap();
        let mut back: WalkState = serde_json::from_str(&saved).unwrap();
        back.resume(t(9));
        assert_eq!(back.next(), Next::Verify(1));
        // Not in effect: the operator must decide; continuing is not an option.
        back.unverified(1, t(9));
        assert!(matches!(
            back.next(),
            Next::AwaitOperator(PauseKind::Interrupted, _)
        ));
        assert!(back.decide(Decision::Continue, "bo", t(10)).is_err());
        back.decide(Decision::Retry, "bo", t(10)).unwrap();
        assert_eq!(back.next(), Next::Step(1));
        // In effect: counted once as done, with its revision.
        let mut w2: WalkState = serde_json::from_str(&saved).unwrap();
        w2.resume(t(9));
        w2.verified(1, 8, t(9));
        assert_eq!(w2.steps[1].status, StepStatus::Done);
        assert_eq!(w2.start_revisions["stage"], 7);
        assert_eq!(w2.next(), Next::Step(2));
        // A non-mutating step that was running simply runs again.
        w2.start_step(2, t(10), Some(t(14)));
        w2.resume(t(11));
        assert_eq!(w2.steps[2].status, StepStatus::Pending);
        assert_eq!(w2.next(), Next::Step(2));
    }

    fn sample(reqs: f64, err: f64, p95: f64, verdict: Option<Verdict>) -> MetricsSample {
        let sig = |rate: f64| Signals {
            request_rate: Signal::value(rate / 10.0),
            error_ratio_5xx: Signal::value(err),
            error_ratio_4xx: Signal::value(0.0),
            latency_p50: Signal::value(p95 / 2.0),
            latency_p95: Signal::value(p95),
            latency_p99: Signal::value(p95 * 2.0),
        };
        MetricsSample {
            environment: "stage".into(),
            source: "test".into(),
            sampled_at: t(0),
            window_secs: 10.0,
            overall: sig(reqs * 2.0),
            overall_history: History::default(),
            routes: vec![RouteMetrics {
                route: "payments".into(),
                signals: sig(reqs * 2.0),
                history: History::default(),
                upstreams: vec![UpstreamMetrics {
                    upstream: "payments-v2".into(),
                    signals: sig(reqs),
                    history: History::default(),
                }],
                comparison: verdict.map(|v| Comparison {
                    baseline: "payments-v1".into(),
                    canary: "payments-v2".into(),
                    roles: RoleSource::Configured,
                    baseline_requests: reqs,
                    canary_requests: reqs,
                    errors: None,
                    latency: None,
                    verdict: v,
                }),
            }],
            gateway: None,
            problems: vec![],
        }
    }

    fn analyze() -> AnalyzeStep {
        match &parse_str(RB, "t.yaml").unwrap().steps[2] {
            crate::walk::runbook::Step::Analyze(a) => a.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn gates_pass_fail_and_never_pass_without_data() {
        let a = analyze();
        let m = measure(
            &sample(100.0, 0.01, 0.1, Some(Verdict::Pass)),
            "payments",
            "payments-v2",
            &a,
        );
        assert_eq!(m.result(), GateStatus::Pass, "{}", m.text());
        assert_eq!(m.gates[0].value.as_deref(), Some("1.00%"));
        assert_eq!(m.gates[0].threshold, "≤ 5.00%");
        assert_eq!(m.gates[1].value.as_deref(), Some("100ms"));

        let m = measure(
            &sample(100.0, 0.4, 0.1, Some(Verdict::Pass)),
            "payments",
            "payments-v2",
            &a,
        );
        assert_eq!(m.result(), GateStatus::Fail);
        let m = measure(
            &sample(
                100.0,
                0.0,
                0.1,
                Some(Verdict::Fail {
                    reasons: vec!["slower".into()],
                }),
            ),
            "payments",
            "payments-v2",
            &a,
        );
        assert_eq!(m.result(), GateStatus::Fail);

        // Too few requests: even a perfect value is not a pass.
        let m = measure(
            &sample(5.0, 0.0, 0.1, Some(Verdict::Pass)),
            "payments",
            "payments-v2",
            &a,
        );
        assert_eq!(m.result(), GateStatus::NoData, "{}", m.text());
        assert!(
            m.text().contains("5 requests to payments-v2, need 20"),
            "{}",
            m.text()
        );
        let m = measure(
            &sample(
                100.0,
                0.0,
                0.1,
                Some(Verdict::NotEnoughData {
                    reason: "few".into(),
                }),
            ),
            "payments",
            "payments-v2",
            &a,
        );
        assert_eq!(m.result(), GateStatus::NoData);
        let m = measure(&sample(100.0, 0.0, 0.1, None), "payments", "nope", &a);
        assert_eq!(m.result(), GateStatus::NoData);
    }

    #[test]
    fn analysis_verdicts() {
        let a = analyze();
        let pass = measure(
            &sample(100.0, 0.0, 0.1, Some(Verdict::Pass)),
            "payments",
            "payments-v2",
            &a,
        );
        let fail = measure(
            &sample(100.0, 0.5, 0.1, Some(Verdict::Pass)),
            "payments",
            "payments-v2",
            &a,
        );
        let none = measure(
            &sample(1.0, 0.0, 0.1, Some(Verdict::Pass)),
            "payments",
            "payments-v2",
            &a,
        );
        let c = |p, f, i| Counts {
            passed: p,
            failed: f,
            inconclusive: i,
        };
        assert_eq!(
            analysis_verdict(c(1, 0, 0), Some(&pass), 0, false),
            AnalysisVerdict::Continue
        );
        assert_eq!(
            analysis_verdict(c(3, 0, 1), Some(&pass), 0, true),
            AnalysisVerdict::Pass
        );
        assert!(matches!(
            analysis_verdict(c(1, 1, 0), Some(&fail), 0, false),
            AnalysisVerdict::Fail(r) if r.contains("error ratio 50.00%")
        ));
        assert_eq!(
            analysis_verdict(c(1, 1, 0), Some(&fail), 1, false),
            AnalysisVerdict::Continue
        );
        assert!(matches!(
            analysis_verdict(c(2, 0, 1), Some(&none), 0, true),
            AnalysisVerdict::Inconclusive(_)
        ));
        assert!(matches!(
            analysis_verdict(c(0, 0, 0), None, 0, true),
            AnalysisVerdict::Inconclusive(_)
        ));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(WalkOutcome::Released.exit_code(), 0);
        let rb = |cause| WalkOutcome::RolledBack {
            cause,
            reason: "x".into(),
        };
        assert_eq!(rb(Cause::Gate).exit_code(), 2);
        assert_eq!(rb(Cause::Operator).exit_code(), 2);
        assert_eq!(rb(Cause::Error).exit_code(), 1);
        let st = WalkOutcome::Stopped {
            cause: Cause::Gate,
            reason: "x".into(),
            rollback_error: Some("down".into()),
        };
        assert_eq!(st.exit_code(), 1);
        let unchanged = WalkOutcome::StoppedUnchanged {
            cause: Cause::Step,
            reason: "step 1 failed".into(),
        };
        assert_eq!(unchanged.exit_code(), 2);
        assert_eq!(
            unchanged.summary(),
            "stopped before any change: step 1 failed; nothing to roll back"
        );
    }
}
