//! The I/O edge of a walkthrough: runs each step the state machine asks for, through
//! `control` for every change (preflights, confirmation, audit journal), the metrics
//! sources for gates, plain HTTP for smoke tests and webhooks. The state is saved
//! (fsynced) after every transition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::machine::{
    AnalysisVerdict, Cause, Decision, GateStatus, GateValue, Measurement, Next, PauseKind,
    RollbackRecord, StepResult, WalkOutcome, WalkState, WalkStatus, analysis_verdict, measure,
};
use super::note::{HandCommands, release_note, webhook_payload};
use super::runbook::{
    AnalyzeStep, CheckStep, NotifyEvent, OnTimeout, PlannedStep, RollbackPolicy, Runbook,
    SmokeStep, Step, WebhookRef,
};
use super::store::Store;
use crate::control::audit::Journal;
use crate::control::envfile::CockpitConfig;
use crate::control::{self, Env, Plan, PlanError};
use crate::domain::{Action, FlagState, Outcome, Secret};
use crate::gateway::config::units::Dur;
use crate::metrics::{CanaryRoles, MetricsSource, MetricsSourceConfig};

/// The operator's answer to a confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    Yes,
    No,
    /// Nobody can be asked (no terminal and no `--yes`).
    Unavailable,
}

/// The person (or pipeline) driving the walkthrough: the headless CLI, the TUI.
#[allow(async_fn_in_trait)]
pub trait Operator {
    /// Asked before each change, as the environment's confirmation policy requires.
    async fn confirm(&mut self, plan: &Plan) -> Confirm;
    /// The walk is paused. `None`: nobody can decide now; the walk is saved and the run
    /// ends as "paused" (resume later). Must return when `cancel` fires.
    async fn decide(
        &mut self,
        st: &WalkState,
        kind: PauseKind,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Option<Decision>;
    /// A progress line, and the state after every transition.
    fn progress(&mut self, line: &str, st: &WalkState);
}

pub struct EngineOptions {
    pub cockpit: CockpitConfig,
    /// The environments file, for the hand-rollback commands in the release note.
    pub config_path: Option<PathBuf>,
    pub actor: String,
    pub journal: Journal,
    /// A decision given on the command line (`--retry`, `--skip`), applied to the pause
    /// the walk is in when it starts, never to a later one.
    pub initial_decision: Option<Decision>,
}

/// How a run of the engine ended.
#[derive(Debug)]
pub enum RunEnd {
    Finished {
        outcome: WalkOutcome,
        note: PathBuf,
    },
    /// Waiting for an operator; the state is saved.
    Paused {
        reason: String,
    },
    /// Ctrl-C or SIGTERM; the state is saved.
    Interrupted,
}

pub struct Engine<O: Operator> {
    rb: Runbook,
    plan: Vec<PlannedStep>,
    envs: BTreeMap<String, Env>,
    opts: EngineOptions,
    store: Store,
    path: PathBuf,
    st: WalkState,
    op: O,
    cancel: CancellationToken,
    http: reqwest::Client,
    ran_a_step: bool,
    /// The pause (step, attempt) already announced, so it is said and notified once.
    announced: Option<(usize, u32)>,
}

impl<O: Operator> Engine<O> {
    /// Connects to every environment the runbook touches before anything runs, so a
    /// missing or misconfigured one fails the walkthrough at the start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rb: Runbook,
        first_env: &str,
        opts: EngineOptions,
        store: Store,
        path: PathBuf,
        st: WalkState,
        op: O,
        cancel: CancellationToken,
    ) -> Result<Self, String> {
        let plan = rb.expand(first_env);
        if plan.len() != st.steps.len() {
            return Err(format!(
                "the saved walkthrough has {} steps but the runbook expands to {}",
                st.steps.len(),
                plan.len()
            ));
        }
        // The state file is input: a damaged one is refused, never indexed out of range.
        let at_a_step = matches!(
            st.status,
            WalkStatus::AwaitingOperator { .. } | WalkStatus::Running
        ) && st.steps.get(st.cursor).is_some();
        if st.cursor > st.steps.len()
            || (matches!(st.status, WalkStatus::AwaitingOperator { .. }) && !at_a_step)
        {
            return Err(format!(
                "the saved walkthrough is damaged: step {} of {}",
                st.cursor + 1,
                st.steps.len()
            ));
        }
        let mut envs = BTreeMap::new();
        for p in &plan {
            if envs.contains_key(&p.env) {
                continue;
            }
            let def = opts.cockpit.env(&p.env).cloned().ok_or_else(|| {
                format!(
                    "the runbook runs against {:?}, which the environments file does not define (known: {})",
                    p.env,
                    opts.cockpit
                        .environments
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            envs.insert(p.env.clone(), Env::connect(def)?);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            rb,
            plan,
            envs,
            opts,
            store,
            path,
            st,
            op,
            cancel,
            http,
            ran_a_step: false,
            announced: None,
        })
    }

    pub fn state(&self) -> &WalkState {
        &self.st
    }

    fn save(&mut self) -> Result<(), String> {
        self.store.save(&self.path, &self.st)?;
        let st = self.st.clone();
        self.op.progress("", &st);
        Ok(())
    }

    fn say(&mut self, line: String) {
        let st = self.st.clone();
        self.op.progress(&line, &st);
    }

    fn label(&self, i: usize) -> String {
        format!(
            "{}/{} {}: {}",
            i + 1,
            self.st.steps.len(),
            self.st.steps[i].env,
            self.st.steps[i].title
        )
    }

    /// Runs until the walkthrough is finished, paused for an operator, or interrupted.
    pub async fn run(&mut self) -> Result<RunEnd, String> {
        loop {
            self.poll_decision().await?;
            let interruptible = matches!(
                self.st.next(),
                Next::Step(_) | Next::AwaitOperator(..) | Next::Verify(_)
            );
            if self.cancel.is_cancelled() && interruptible {
                self.st.interrupt(Utc::now());
                self.save()?;
                self.say("interrupted: the walkthrough is saved; resume it with --resume, or roll it back with --abort".into());
                return Ok(RunEnd::Interrupted);
            }
            match self.st.next() {
                Next::Step(i) => {
                    self.ran_a_step = true;
                    self.run_step(i).await?;
                }
                Next::Verify(i) => self.verify(i).await?,
                Next::AwaitOperator(kind, reason) => {
                    if let Some(end) = self.await_operator(kind, &reason).await? {
                        return Ok(end);
                    }
                }
                Next::RollBack(cause, reason) => self.roll_back(cause, &reason).await?,
                Next::Release => {
                    self.st.finish(WalkOutcome::Released, Utc::now());
                    self.save()?;
                }
                Next::Finished(outcome) => {
                    let note = self.finish(&outcome).await?;
                    return Ok(RunEnd::Finished { outcome, note });
                }
            }
        }
    }

    /// Applies a decision another process handed over (see [`Store::send_decision`]).
    /// An abort applies wherever the walk is; anything else only to the pause it was
    /// made for.
    async fn poll_decision(&mut self) -> Result<(), String> {
        if self.st.is_finished() {
            return Ok(());
        }
        let Some(req) = self.store.take_decision(&self.path)? else {
            return Ok(());
        };
        let now = Utc::now();
        let reason = req.reason.clone().unwrap_or_default();
        let d = match req.decision.as_str() {
            "abort" => {
                let reason = if reason.trim().is_empty() {
                    "aborted by the operator".to_string()
                } else {
                    reason
                };
                self.st.abort(&req.actor, &reason, now)?;
                self.save()?;
                self.say(format!("{} aborted the walkthrough: {reason}", req.actor));
                return Ok(());
            }
            "continue" => Decision::Continue,
            "retry" => Decision::Retry,
            "skip" => Decision::Skip(reason.clone()),
            other => {
                self.say(format!("ignored an unknown decision {other:?}"));
                return Ok(());
            }
        };
        let paused = matches!(self.st.status, WalkStatus::AwaitingOperator { .. });
        if !paused || req.step != self.st.cursor {
            self.say(format!(
                "ignored {}'s {:?} for step {}: the walkthrough has moved on",
                req.actor,
                req.decision,
                req.step + 1
            ));
            return Ok(());
        }
        let skipped = matches!(d, Decision::Skip(_));
        match self.st.decide(d, &req.actor, now) {
            Ok(()) => {
                self.save()?;
                if skipped {
                    self.audit_skip(req.step, &req.actor, &reason).await;
                }
                self.say(format!(
                    "{}: {} by {}",
                    self.label(req.step),
                    req.decision,
                    req.actor
                ));
            }
            Err(e) => self.say(format!("cannot {}: {e}", req.decision)),
        }
        Ok(())
    }

    /// A skipped change goes in the audit journal as not applied, with who skipped it and
    /// why, like a change an operator declined in the cockpit.
    async fn audit_skip(&self, i: usize, actor: &str, reason: &str) {
        let Some(action) = self.plan[i].step.action(&self.rb.route) else {
            return;
        };
        let Ok(env) = self.env(&self.plan[i].env) else {
            return;
        };
        if let Ok(plan) = control::plan(env, action, None, Utc::now()).await {
            control::not_applied(
                &plan,
                &self.opts.journal,
                actor,
                Outcome::Cancelled,
                Some(format!(
                    "skipped in walkthrough {} ({}): {reason}",
                    self.st.id, self.st.runbook
                )),
            );
        }
    }

    async fn await_operator(
        &mut self,
        kind: PauseKind,
        reason: &str,
    ) -> Result<Option<RunEnd>, String> {
        let i = self.st.cursor;
        let actor = self.opts.actor.clone();
        if !self.ran_a_step
            && let Some(d) = self.opts.initial_decision.take()
        {
            let skipped = match &d {
                Decision::Skip(r) => Some(r.clone()),
                _ => None,
            };
            self.st.decide(d, &actor, Utc::now())?;
            self.save()?;
            if let Some(r) = skipped {
                self.audit_skip(i, &actor, &r).await;
            }
            return Ok(None);
        }
        let first_time = self.announced != Some((i, self.st.steps[i].attempts));
        if first_time {
            self.announced = Some((i, self.st.steps[i].attempts));
            self.say(format!("{} — paused: {reason}", self.label(i)));
            self.notify_event(NotifyEvent::Paused, &format!("paused: {reason}"))
                .await;
        }
        // A pause step may have a deadline, counted from when it began (also across a
        // restart).
        let pause = match &self.plan[i].step {
            Step::Pause(p) if kind == PauseKind::Approval => Some(p.clone()),
            _ => None,
        };
        let deadline = pause
            .as_ref()
            .and_then(|_| self.st.steps[i].deadline)
            .map(|d| (d - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        let st = self.st.clone();
        // The operator here, or a decision sent from another terminal (taken at the top
        // of the run loop).
        let decided = async {
            tokio::select! {
                a = self.op.decide(&st, kind, reason, &self.cancel) => Some(a),
                _ = decision_arrives(&self.store, &self.path) => None,
            }
        };
        let mut timed_out = false;
        let answer = match deadline {
            Some(left) => match tokio::time::timeout(left, decided).await {
                Ok(None) => return Ok(None),
                Ok(Some(a)) => a,
                Err(_) => {
                    timed_out = true;
                    let p = pause.as_ref().map(|p| (p.on_timeout, p.message.clone()));
                    let (on_timeout, msg) = p.unwrap_or((OnTimeout::Rollback, String::new()));
                    Some(match on_timeout {
                        OnTimeout::Continue => Decision::Continue,
                        OnTimeout::Rollback => {
                            Decision::Abort(Cause::Step, format!("nobody approved {msg:?} in time"))
                        }
                    })
                }
            },
            None => match decided.await {
                None => return Ok(None),
                Some(a) => a,
            },
        };
        match answer {
            Some(d) => {
                let who = if timed_out {
                    "the pause timeout".to_string()
                } else {
                    actor
                };
                let skipped = match &d {
                    Decision::Skip(r) => Some(r.clone()),
                    _ => None,
                };
                if let Err(e) = self.st.decide(d, &who, Utc::now()) {
                    self.say(format!("cannot do that: {e}"));
                    return Ok(None);
                }
                self.save()?;
                if let Some(r) = skipped {
                    self.audit_skip(i, &who, &r).await;
                }
                Ok(None)
            }
            None if self.cancel.is_cancelled() => Ok(None),
            None => {
                self.save()?;
                Ok(Some(RunEnd::Paused {
                    reason: reason.to_string(),
                }))
            }
        }
    }

    async fn run_step(&mut self, i: usize) -> Result<(), String> {
        let planned = self.plan[i].clone();
        let now = Utc::now();
        let deadline = match &planned.step {
            Step::Wait(d) => Some(now + chrono_dur(d)),
            Step::Analyze(a) => Some(now + chrono_dur(&a.duration)),
            Step::Pause(p) => p.timeout.map(|t| now + chrono_dur(&t)),
            _ => None,
        };
        self.st.start_step(i, now, deadline);
        self.save()?;
        self.say(format!("{} …", self.label(i)));
        let route = self.rb.route.clone();
        let result = match &planned.step {
            Step::Check(c) => self.check(&planned.env, c).await,
            Step::Smoke(s) => self.smoke(&planned.env, s).await,
            Step::SetWeight(_) | Step::Flip(_) | Step::Flag(_) => {
                let Some(action) = planned.step.action(&route) else {
                    return Err("a change step without an action".into());
                };
                self.apply(i, &planned.env, action).await?
            }
            Step::Pause(p) => StepResult::Paused {
                reason: p.message.clone(),
                kind: PauseKind::Approval,
            },
            Step::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d.0) => StepResult::Done { detail: format!("waited {d}"), revision: None },
                    _ = self.cancel.cancelled() => return Ok(()),
                    _ = decision_arrives(&self.store, &self.path) => return Ok(()),
                }
            }
            Step::Analyze(a) => match self.analyze(i, &planned.env, a).await? {
                Some(r) => r,
                None => return Ok(()),
            },
            Step::Notify(n) => {
                let hook = n
                    .webhook
                    .clone()
                    .or(self.rb.notify.as_ref().map(|c| c.webhook.clone()));
                let text = n.message.clone();
                match hook {
                    Some(h) => {
                        let st = self.st.clone();
                        let body = webhook_payload(&st, "in progress", text.as_deref());
                        match self.post(&h, &body).await {
                            Ok(()) => StepResult::Done {
                                detail: format!("sent to {}", h.describe()),
                                revision: None,
                            },
                            // A chat outage must not stop a release; the note shows it.
                            Err(e) => StepResult::Done {
                                detail: format!("NOT sent: {e}"),
                                revision: None,
                            },
                        }
                    }
                    None => StepResult::Done {
                        detail: "no webhook configured".into(),
                        revision: None,
                    },
                }
            }
            Step::Promote(_) => StepResult::Done {
                detail: "expanded".into(),
                revision: None,
            },
        };
        let line = match &result {
            StepResult::Done { detail, .. } => format!("{} — done: {detail}", self.label(i)),
            StepResult::Failed { reason, .. } => format!("{} — FAILED: {reason}", self.label(i)),
            StepResult::Paused { .. } => String::new(),
        };
        self.st.finish_step(i, result, Utc::now());
        self.save()?;
        if !line.is_empty() {
            self.say(line);
        }
        Ok(())
    }

    fn env(&self, name: &str) -> Result<&Env, String> {
        self.envs
            .get(name)
            .ok_or_else(|| format!("environment {name:?} is not connected"))
    }

    async fn check(&self, env_name: &str, c: &CheckStep) -> StepResult {
        let env = match self.env(env_name) {
            Ok(e) => e,
            Err(e) => return failed(Cause::Error, e),
        };
        let s = match env.backend.status().await {
            Ok(s) => s,
            Err(e) => return failed(Cause::Error, format!("{env_name}: {e}")),
        };
        let route = c.route.clone().unwrap_or_else(|| self.rb.route.clone());
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for u in &c.healthy {
            match s.upstream(u) {
                None => bad.push(format!("{env_name} has no upstream {u:?}")),
                Some(up) if up.targets.is_empty() || up.healthy_targets() < up.targets.len() => bad
                    .push(format!(
                        "{u}: {}/{} targets healthy",
                        up.healthy_targets(),
                        up.targets.len()
                    )),
                Some(up) => ok.push(format!(
                    "{u} {}/{} healthy",
                    up.healthy_targets(),
                    up.targets.len()
                )),
            }
        }
        if let Some(live) = &c.live {
            match s.route(&route) {
                None => bad.push(format!("{env_name} has no route {route:?}")),
                Some(r) if r.percent(live) == 100 => ok.push(format!("{route} live on {live}")),
                Some(r) => bad.push(format!(
                    "{route} sends {}% to {live}, not 100%",
                    r.percent(live)
                )),
            }
        }
        for (keys, want) in [
            (&c.flag_off, FlagState::Disabled),
            (&c.flag_on, FlagState::Enabled),
        ] {
            let word = if want == FlagState::Enabled {
                "on"
            } else {
                "off"
            };
            for k in keys {
                match s.flag(k) {
                    None => bad.push(format!("{env_name} has no flag {k:?}")),
                    Some(f) if f.state == want => ok.push(format!("flag {k} {word}")),
                    Some(_) => bad.push(format!("flag {k} is not {word}")),
                }
            }
        }
        if let Some(track) = &c.matches_source {
            match self
                .source_check(env_name, &s, &route, track, c.source.as_deref())
                .await
            {
                Ok(m) => ok.push(m),
                Err(m) => bad.push(m),
            }
        }
        if bad.is_empty() {
            StepResult::Done {
                detail: ok.join(", "),
                revision: None,
            }
        } else {
            failed(Cause::Step, bad.join("; "))
        }
    }

    /// The same artifact as the source environment: on a gateway a track is an upstream,
    /// so the track `env_name` is about to make live must be the one the source serves
    /// `route` from, all of it. (Kubernetes flips also compare container images in their
    /// preflight.)
    async fn source_check(
        &self,
        env_name: &str,
        here: &crate::domain::GatewayStatus,
        route: &str,
        track: &str,
        source: Option<&str>,
    ) -> Result<String, String> {
        if here.upstream(track).is_none() {
            return Err(format!("{env_name} has no upstream {track:?}"));
        }
        let env = self.env(env_name)?;
        let Some(src) = source
            .map(String::from)
            .or_else(|| env.def.promote_from.clone())
        else {
            return Err(format!(
                "no source environment to compare {track} with: give the check a source, or {env_name} a promote_from in the environments file"
            ));
        };
        let connected;
        let src_env = match self.envs.get(&src) {
            Some(e) => e,
            None => {
                let def = self.opts.cockpit.env(&src).cloned().ok_or_else(|| {
                    format!("the source environment {src:?} is not in the environments file")
                })?;
                connected = Env::connect(def)?;
                &connected
            }
        };
        let status = src_env
            .backend
            .status()
            .await
            .map_err(|e| format!("cannot read the source environment {src}: {e}"))?;
        let r = status
            .route(route)
            .ok_or_else(|| format!("the source environment {src} has no route {route:?}"))?;
        match r.live() {
            Some(live) if r.percent(live) == 100 && live == track => {
                Ok(format!("{track} is what {src} serves {route} from"))
            }
            Some(live) if r.percent(live) == 100 => Err(format!(
                "{env_name} would go live on {track}, but {src} serves {route} from {live}: promote what was tested there"
            )),
            _ => Err(format!(
                "{src} splits {route} ({}): it does not serve one track yet",
                r.split
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )),
        }
    }

    async fn smoke(&self, env_name: &str, s: &SmokeStep) -> StepResult {
        let env = match self.env(env_name) {
            Ok(e) => e,
            Err(e) => return failed(Cause::Error, e),
        };
        let Some(base) = env.def.gateway_url.clone() else {
            return failed(
                Cause::Error,
                format!(
                    "environment {env_name} has no gateway_url in the environments file; smoke tests send their requests there"
                ),
            );
        };
        let url = format!("{}{}", base.trim_end_matches('/'), s.path);
        let method = match reqwest::Method::from_bytes(s.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return failed(Cause::Step, format!("bad method {:?}", s.method)),
        };
        for n in 1..=s.requests {
            let mut rb = self.http.request(method.clone(), &url).timeout(s.timeout.0);
            for (k, v) in &s.headers {
                rb = rb.header(k, v);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    return failed(
                        Cause::Step,
                        format!(
                            "request {n}: {} {url}: {}",
                            s.method,
                            crate::metrics::describe_reqwest(e)
                        ),
                    );
                }
            };
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap_or_default();
            if status != s.status {
                return failed(
                    Cause::Step,
                    format!(
                        "request {n}: {} {} answered {status}, expected {}: {}",
                        s.method,
                        s.path,
                        s.status,
                        crate::metrics::snippet(&String::from_utf8_lossy(&body), 120)
                    ),
                );
            }
            if !s.json.is_empty() {
                let v: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return failed(
                            Cause::Step,
                            format!("request {n}: the body is not JSON ({e})"),
                        );
                    }
                };
                for (path, want) in &s.json {
                    let got = json_at(&v, path);
                    if got != Some(want) {
                        return failed(
                            Cause::Step,
                            format!(
                                "request {n}: {path} is {}, expected {want}",
                                got.map_or("missing".to_string(), |g| g.to_string())
                            ),
                        );
                    }
                }
            }
        }
        StepResult::Done {
            detail: format!("{} × {} {} → {}", s.requests, s.method, s.path, s.status),
            revision: None,
        }
    }

    /// One change through `control`: plan (preflights), confirm, record the base revision
    /// (saved before applying), execute (apply, verify, audit).
    async fn apply(
        &mut self,
        i: usize,
        env_name: &str,
        action: Action,
    ) -> Result<StepResult, String> {
        let env = self.env(env_name)?;
        let plan = match control::plan(env, action, None, Utc::now()).await {
            Ok(p) => p,
            Err(PlanError::Invalid(m)) => return Ok(failed(Cause::Step, m)),
            Err(PlanError::Backend(e)) => {
                return Ok(StepResult::Paused {
                    reason: format!("{env_name}: {e}"),
                    kind: PauseKind::Error,
                });
            }
        };
        if !plan.allowed() {
            let r = control::execute(env, &plan, &self.opts.journal, &self.opts.actor).await;
            return Ok(failed(
                Cause::Step,
                format!("refused by preflight: {}", r.error.unwrap_or_default()),
            ));
        }
        match self.op.confirm(&plan).await {
            Confirm::Yes => {}
            Confirm::No => {
                control::not_applied(
                    &plan,
                    &self.opts.journal,
                    &self.opts.actor,
                    Outcome::Cancelled,
                    None,
                );
                return Ok(StepResult::Paused {
                    reason: format!("the operator declined: {}", plan.description),
                    kind: PauseKind::Error,
                });
            }
            Confirm::Unavailable => {
                let why = format!(
                    "refusing to change {} without confirmation: there is no terminal to ask on; pass --yes",
                    plan.env
                );
                control::not_applied(
                    &plan,
                    &self.opts.journal,
                    &self.opts.actor,
                    Outcome::Refused,
                    Some(why.clone()),
                );
                return Ok(failed(Cause::Error, why));
            }
        }
        self.st.before_apply(i, plan.base_revision);
        self.save()?;
        let env = self.env(env_name)?;
        let report = control::execute(env, &plan, &self.opts.journal, &self.opts.actor).await;
        let err = report.error.clone().unwrap_or_default();
        Ok(match report.outcome {
            Outcome::Applied => StepResult::Done {
                detail: format!("{} → {}", plan.before, plan.after),
                revision: report.revision,
            },
            Outcome::Refused => failed(Cause::Step, format!("refused: {err}")),
            Outcome::Cancelled => failed(Cause::Error, format!("cancelled: {err}")),
            Outcome::Conflict | Outcome::Unverified | Outcome::Failed => StepResult::Paused {
                reason: format!("{}: {err}", plan.description),
                kind: PauseKind::Error,
            },
        })
    }

    /// A change was running when the process died: if the environment shows it, it
    /// counts as done; otherwise the operator decides.
    async fn verify(&mut self, i: usize) -> Result<(), String> {
        let route = self.rb.route.clone();
        let env_name = self.plan[i].env.clone();
        let Some(action) = self.plan[i].step.action(&route) else {
            self.st.unverified(i, Utc::now());
            return self.save();
        };
        let env = self.env(&env_name)?;
        let base = self.st.steps[i].base_revision;
        let in_effect = match control::plan(env, action, None, Utc::now()).await {
            // Planning the same change again shows no difference: it is in effect.
            Ok(p) if p.before == p.after && base.is_some_and(|b| p.base_revision > b) => {
                Some(p.base_revision)
            }
            _ => None,
        };
        match in_effect {
            Some(rev) => {
                self.st.verified(i, rev, Utc::now());
                self.save()?;
                self.say(format!(
                    "{} — was applied before the interruption (revision {rev}); not applying it again",
                    self.label(i)
                ));
            }
            None => {
                self.st.unverified(i, Utc::now());
                self.save()?;
            }
        }
        Ok(())
    }

    /// Gates every `interval` for `duration`. `None`: interrupted.
    async fn analyze(
        &mut self,
        i: usize,
        env_name: &str,
        a: &AnalyzeStep,
    ) -> Result<Option<StepResult>, String> {
        let env = self.env(env_name)?;
        let route = a.route.clone().unwrap_or_else(|| self.rb.route.clone());
        let status = match env.backend.status().await {
            Ok(s) => s,
            Err(e) => {
                return Ok(Some(StepResult::Paused {
                    reason: format!("{env_name}: {e}"),
                    kind: PauseKind::Error,
                }));
            }
        };
        let Some(r) = status.route(&route) else {
            return Ok(Some(failed(
                Cause::Step,
                format!("{env_name} has no route {route:?}"),
            )));
        };
        let upstream = match (&a.upstream, r.canary_pair(), r.live()) {
            (Some(u), _, _) => u.clone(),
            (None, Some((_, c)), _) => c.to_string(),
            (None, None, Some(l)) => l.to_string(),
            (None, None, None) => {
                return Ok(Some(failed(
                    Cause::Step,
                    format!("route {route} has no upstream"),
                )));
            }
        };
        let mut roles = CanaryRoles::default();
        if let Some(stable) = r
            .split
            .iter()
            .filter(|(k, _)| **k != upstream)
            .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)))
            .map(|(k, _)| k.clone())
        {
            roles.set(route.clone(), stable, upstream.clone());
        }
        // A window as long as the analysis, so every measurement covers all of it.
        let window = a.duration.0 + a.interval.0 * 2 + Duration::from_secs(1);
        let cfg = match env.def.metrics_source() {
            MetricsSourceConfig::Scrape(mut c) => {
                c.window = Dur(window);
                c.compare.min_requests_per_side = a.min_requests;
                MetricsSourceConfig::Scrape(c)
            }
            MetricsSourceConfig::Promql(mut c) => {
                c.compare.min_requests_per_side = a.min_requests;
                MetricsSourceConfig::Promql(c)
            }
        };
        let mut source = match MetricsSource::from_config(env_name, &cfg) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Some(failed(
                    Cause::Error,
                    format!("{env_name} metrics: {e}"),
                )));
            }
        };
        // The first scrape is the baseline the rates are computed from.
        let _ = source.sample(&roles).await;
        let deadline = tokio::time::Instant::now() + a.duration.0;
        loop {
            let wake = (tokio::time::Instant::now() + a.interval.0).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.cancel.cancelled() => return Ok(None),
                _ = decision_arrives(&self.store, &self.path) => return Ok(None),
            }
            let m = match source.sample(&roles).await {
                Ok(s) => measure(&s, &route, &upstream, a),
                Err(e) => Measurement {
                    gates: vec![GateValue {
                        name: "metrics".into(),
                        value: None,
                        threshold: "a sample".into(),
                        status: GateStatus::NoData,
                        detail: Some(e.to_string()),
                    }],
                },
            };
            self.st.record_measurement(i, &m);
            self.save()?;
            self.say(format!("{} — {}", self.label(i), m.text()));
            let time_up = tokio::time::Instant::now() >= deadline;
            match analysis_verdict(
                self.st.steps[i].measurements,
                Some(&m),
                a.failure_limit,
                time_up,
            ) {
                AnalysisVerdict::Continue => {}
                AnalysisVerdict::Pass => {
                    let c = self.st.steps[i].measurements;
                    return Ok(Some(StepResult::Done {
                        detail: format!(
                            "gates passed ({} measurements: {} passed, {} failed, {} without enough data): {}",
                            c.passed + c.failed + c.inconclusive,
                            c.passed,
                            c.failed,
                            c.inconclusive,
                            m.text()
                        ),
                        revision: None,
                    }));
                }
                AnalysisVerdict::Fail(r) => return Ok(Some(failed(Cause::Gate, r))),
                AnalysisVerdict::Inconclusive(r) => {
                    return Ok(Some(StepResult::Paused {
                        reason: format!("analysis inconclusive: {r}"),
                        kind: PauseKind::Inconclusive,
                    }));
                }
            }
        }
    }

    /// The rollback policy, for every environment the walkthrough changed (most recent
    /// first). Rollbacks go through `control` like any change, without asking: the policy
    /// was agreed when the runbook was written. A freeze window does not stop them.
    async fn roll_back(&mut self, cause: Cause, reason: &str) -> Result<(), String> {
        let envs = self.st.changed_envs();
        let nothing_changed = envs.is_empty();
        if nothing_changed {
            self.say(format!("stopping: {reason}; nothing was changed"));
        } else {
            self.say(format!("rolling back: {reason}"));
        }
        let policy = self.rb.rollback.clone();
        let mut errors = Vec::new();
        let already: Vec<String> = self
            .st
            .rollback
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.env.clone())
            .collect();
        for env_name in envs {
            if already.contains(&env_name) {
                continue;
            }
            let start = self.st.start_revisions.get(&env_name).copied();
            let route = self.rb.route.clone();
            let primary = match &policy {
                RollbackPolicy::None => None,
                RollbackPolicy::Revision => start.map(|s| Action::Rollback { to: Some(s) }),
                RollbackPolicy::Canary(p) => Some(Action::SetCanary { route, percent: *p }),
                RollbackPolicy::Flip(to) => Some(Action::Flip {
                    route,
                    to: Some(to.clone()),
                }),
                RollbackPolicy::Split(w) => Some(Action::SetSplit {
                    route,
                    weights: w.clone(),
                }),
            };
            let Some(primary) = primary else { continue };
            let fallback = start.map(|s| Action::Rollback { to: Some(s) });
            let rec = self.roll_back_env(&env_name, primary, fallback).await;
            let line = match (&rec.revision, &rec.error) {
                (_, Some(e)) => format!("{env_name}: rollback FAILED: {e}"),
                (Some(n), None) => format!("{env_name}: {} → revision {n}", rec.description),
                (None, None) => format!("{env_name}: {}", rec.description),
            };
            if let Some(e) = &rec.error {
                errors.push(format!("{env_name}: {e}"));
            }
            self.st.rollback.retain(|r| r.env != env_name);
            self.st.rollback.push(rec);
            self.save()?;
            self.say(line);
        }
        let outcome = match (&policy, errors.is_empty()) {
            _ if nothing_changed => WalkOutcome::StoppedUnchanged {
                cause,
                reason: reason.to_string(),
            },
            (RollbackPolicy::None, _) if !self.st.changed_envs().is_empty() => {
                WalkOutcome::Stopped {
                    cause,
                    reason: reason.to_string(),
                    rollback_error: None,
                }
            }
            (_, true) => WalkOutcome::RolledBack {
                cause,
                reason: reason.to_string(),
            },
            (_, false) => WalkOutcome::Stopped {
                cause,
                reason: reason.to_string(),
                rollback_error: Some(errors.join("; ")),
            },
        };
        self.st.finish(outcome, Utc::now());
        self.save()
    }

    async fn roll_back_env(
        &self,
        env_name: &str,
        primary: Action,
        fallback: Option<Action>,
    ) -> RollbackRecord {
        let Ok(env) = self.env(env_name) else {
            return RollbackRecord {
                env: env_name.into(),
                description: primary.to_string(),
                revision: None,
                error: Some("not connected".into()),
            };
        };
        let force = format!("automatic rollback of walkthrough {}", self.st.id);
        let mut notes = Vec::new();
        for action in std::iter::once(primary.clone()).chain(fallback.filter(|f| *f != primary)) {
            let description = action.to_string();
            let plan = match control::plan(env, action, Some(&force), Utc::now()).await {
                Ok(p) => p,
                Err(e) => {
                    notes.push(format!("{description}: {e}"));
                    continue;
                }
            };
            let report = control::execute(env, &plan, &self.opts.journal, &self.opts.actor).await;
            if report.outcome == Outcome::Applied {
                let description = if notes.is_empty() {
                    description
                } else {
                    format!("{description} (after: {})", notes.join("; "))
                };
                return RollbackRecord {
                    env: env_name.into(),
                    description,
                    revision: report.revision,
                    error: None,
                };
            }
            notes.push(format!(
                "{description}: {}",
                report
                    .error
                    .unwrap_or_else(|| format!("{:?}", report.outcome))
            ));
        }
        RollbackRecord {
            env: env_name.into(),
            description: primary.to_string(),
            revision: None,
            error: Some(notes.join("; ")),
        }
    }

    async fn finish(&mut self, outcome: &WalkOutcome) -> Result<PathBuf, String> {
        let hand = HandCommands {
            config: self
                .opts
                .config_path
                .as_ref()
                .map(|p| p.display().to_string()),
        };
        let text = release_note(&self.st, &self.rb.rollback, &hand);
        let first_env = self
            .st
            .steps
            .first()
            .map(|s| s.env.clone())
            .unwrap_or_default();
        let note = self.store.write_note(&self.st, &first_env, &text)?;
        let event = match outcome {
            WalkOutcome::Released => NotifyEvent::Released,
            WalkOutcome::RolledBack { .. } => NotifyEvent::RolledBack,
            WalkOutcome::Stopped { .. } | WalkOutcome::StoppedUnchanged { .. } => {
                NotifyEvent::Failed
            }
        };
        let headline = match outcome {
            WalkOutcome::RolledBack {
                cause: Cause::Gate,
                reason,
            } => format!("rolled back by a gate: {reason}"),
            o => o.summary(),
        };
        self.notify_event(event, &headline).await;
        let st = self.st.clone();
        self.store.archive(&self.path, &st)?;
        self.say(format!(
            "{} — release note: {}",
            outcome.summary(),
            note.display()
        ));
        Ok(note)
    }

    async fn notify_event(&mut self, event: NotifyEvent, headline: &str) {
        let Some(cfg) = self.rb.notify.clone() else {
            return;
        };
        if !cfg.on.contains(&event) {
            return;
        }
        let st = self.st.clone();
        let body = webhook_payload(&st, headline, None);
        if let Err(e) = self.post(&cfg.webhook, &body).await {
            self.say(format!("notify: {e}"));
        }
    }

    /// POSTs to a webhook. Errors name where the URL came from, never the URL.
    async fn post(&self, hook: &WebhookRef, body: &serde_json::Value) -> Result<(), String> {
        let url: Secret = match (&hook.url, &hook.env, &hook.file) {
            (Some(u), _, _) => Secret::new(u.clone()),
            (_, Some(e), _) => crate::gateway::secrets::resolve(
                &crate::gateway::config::SecretRef::Env(e.clone()),
            )?,
            (_, _, Some(f)) => crate::gateway::secrets::resolve(
                &crate::gateway::config::SecretRef::File(f.clone()),
            )?,
            _ => return Err("no webhook URL".into()),
        };
        let resp = self
            .http
            .post(url.expose())
            .timeout(Duration::from_secs(5))
            .json(body)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "{}: {}",
                    hook.describe(),
                    crate::metrics::describe_reqwest(e)
                )
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {}", hook.describe(), resp.status()))
        }
    }
}

/// The value at a dotted path (`data.items.0.version`), if there is one.
pub fn json_at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |cur, k| match cur {
        serde_json::Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => cur.get(k),
    })
}

/// Resolves when another process has handed over a decision.
async fn decision_arrives(store: &Store, path: &std::path::Path) {
    loop {
        if store.has_decision(path) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn failed(cause: Cause, reason: impl Into<String>) -> StepResult {
    StepResult::Failed {
        cause,
        reason: reason.into(),
    }
}

fn chrono_dur(d: &Dur) -> chrono::Duration {
    chrono::Duration::from_std(d.0).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_reach_into_objects_and_arrays() {
        let v = serde_json::json!({"version": "green", "data": {"items": [{"id": 7}]}});
        assert_eq!(json_at(&v, "version"), Some(&serde_json::json!("green")));
        assert_eq!(json_at(&v, "data.items.0.id"), Some(&serde_json::json!(7)));
        assert_eq!(json_at(&v, "data.items.1.id"), None);
        assert_eq!(json_at(&v, "data.items.x"), None);
        assert_eq!(json_at(&v, "nope"), None);
    }
}
