//! The runbook format: a release as YAML, parsed with the same `FILE:LINE:COL: field.path:
//! message` errors as the gateway config. Pure: no I/O but reading the file in [`load`].
//!
//! ```yaml
//! name: payments 2.4.0 canary
//! env: stage
//! route: payments
//! rollback: { canary: 0 }
//! notify: { webhook: { env: SLACK_WEBHOOK } }
//! steps:
//!   - check: { healthy: [payments-v2] }
//!   - set_weight: { percent: 10 }
//!   - analyze: { duration: 30s, max_error_ratio: 0.01, max_p95: 300ms, compare: true }
//!   - set_weight: { percent: 100 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, de};

use crate::domain::{Action, FlagState};
use crate::gateway::config::units::Dur;
use crate::gateway::config::{ConfigError, ConfigIssue, parse_located};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The environment the steps run against first; `--env` overrides it.
    pub env: String,
    /// The service being released (for the release note and notifications).
    #[serde(default)]
    pub service: Option<String>,
    /// The gateway route steps act on unless a step names another.
    pub route: String,
    /// What undoes this release when a gate or step fails, or the operator aborts.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Where outcomes are announced.
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
    pub steps: Vec<Step>,
}

/// Which action undoes the release, per environment the walkthrough changed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RollbackPolicy {
    /// Apply again the revision the environment was at before the walkthrough changed it.
    #[default]
    Revision,
    /// Set the route's canary weight to this percentage (usually 0).
    Canary(u32),
    /// Send all of the route's traffic to this upstream.
    Flip(String),
    /// Set the route's weights to these.
    Split(BTreeMap<String, u32>),
    /// Do nothing: the operator rolls back by hand (the release note says how).
    None,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub webhook: WebhookRef,
    /// Which outcomes are announced; default: rolled back, failed and paused.
    #[serde(default = "default_events")]
    pub on: Vec<NotifyEvent>,
}

fn default_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::RolledBack,
        NotifyEvent::Failed,
        NotifyEvent::Paused,
    ]
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Released,
    RolledBack,
    Failed,
    Paused,
}

/// A webhook URL. Chat webhooks are credentials, so they can come from an environment
/// variable or a file; messages never show the URL.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookRef {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl WebhookRef {
    /// Where the URL comes from, for messages.
    pub fn describe(&self) -> String {
        match (&self.url, &self.env, &self.file) {
            (_, Some(e), _) => format!("webhook from ${e}"),
            (_, _, Some(f)) => format!("webhook from {}", f.display()),
            _ => "webhook".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Check(CheckStep),
    Smoke(SmokeStep),
    SetWeight(SetWeightStep),
    Flip(FlipStep),
    Flag(FlagStep),
    Pause(PauseStep),
    Wait(Dur),
    Analyze(AnalyzeStep),
    Promote(PromoteStep),
    Notify(NotifyStep),
}

/// Preconditions read from the environment's state; every listed one must hold.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckStep {
    #[serde(default)]
    pub route: Option<String>,
    /// Upstreams whose targets must all be healthy.
    #[serde(default)]
    pub healthy: Vec<String>,
    /// The upstream the route must currently send all its traffic to.
    #[serde(default)]
    pub live: Option<String>,
    #[serde(default)]
    pub flag_off: Vec<String>,
    #[serde(default)]
    pub flag_on: Vec<String>,
    /// "Promote what was tested": the track (upstream) this environment is about to make
    /// live must be the one the source environment serves the route from.
    #[serde(default)]
    pub matches_source: Option<String>,
    /// The source environment (default: this environment's `promote_from`).
    #[serde(default)]
    pub source: Option<String>,
}

/// HTTP requests through the environment's gateway.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmokeStep {
    pub path: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Sent with every request, e.g. `X-Canary: "true"` to pin a version.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_status")]
    pub status: u16,
    /// Dotted JSON field path → expected value, e.g. `version: green`.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
    /// How many requests; every one must pass.
    #[serde(default = "one")]
    pub requests: u32,
    #[serde(default = "default_smoke_timeout")]
    pub timeout: Dur,
}

fn default_method() -> String {
    "GET".into()
}
fn default_status() -> u16 {
    200
}
fn one() -> u32 {
    1
}
fn default_smoke_timeout() -> Dur {
    Dur::secs(5)
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetWeightStep {
    #[serde(default)]
    pub route: Option<String>,
    /// The canary's share (the route needs a `canary:` upstream).
    #[serde(default)]
    pub percent: Option<u32>,
    /// Every upstream's weight.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, u32>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlipStep {
    #[serde(default)]
    pub route: Option<String>,
    /// Default: the other upstream of a two-way route.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagStep {
    pub key: String,
    #[serde(default, deserialize_with = "on_off")]
    pub state: Option<FlagState>,
    /// The default variant.
    #[serde(default)]
    pub variant: Option<String>,
}

fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FlagState>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bool(true) => Ok(Some(FlagState::Enabled)),
        Raw::Bool(false) => Ok(Some(FlagState::Disabled)),
        Raw::Str(s) => match s.to_ascii_lowercase().as_str() {
            "on" | "enabled" => Ok(Some(FlagState::Enabled)),
            "off" | "disabled" => Ok(Some(FlagState::Disabled)),
            _ => Err(de::Error::custom(format!(
                "flag state {s:?} must be on or off"
            ))),
        },
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PauseStep {
    pub message: String,
    /// How long the operator has, counted from when the pause began.
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Nobody approved in time: treat it as a failure and roll back.
    #[default]
    Rollback,
    Continue,
}

/// Metric gates evaluated every `interval` for `duration`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeStep {
    #[serde(default)]
    pub route: Option<String>,
    /// The upstream the gates judge; default the route's canary, else its live upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    pub duration: Dur,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Requests the judged upstream (and each side, for `compare`) needs before a gate
    /// can pass or fail; fewer is "not enough data".
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Failed measurements tolerated; one more fails the step.
    #[serde(default)]
    pub failure_limit: u32,
    /// Highest 5xx share, 0 to 1.
    #[serde(default)]
    pub max_error_ratio: Option<f64>,
    /// Highest p95 latency.
    #[serde(default)]
    pub max_p95: Option<Dur>,
    /// The canary must not be worse than stable (statistical verdict).
    #[serde(default)]
    pub compare: bool,
}

fn default_interval() -> Dur {
    Dur::secs(1)
}
fn default_min_requests() -> u64 {
    20
}

/// Run the runbook's first steps (those before the first `promote`) again against `env`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromoteStep {
    pub env: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyStep {
    #[serde(default)]
    pub message: Option<String>,
    /// Default: the runbook's `notify.webhook`.
    #[serde(default)]
    pub webhook: Option<WebhookRef>,
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Check(_) => "check",
            Step::Smoke(_) => "smoke",
            Step::SetWeight(_) => "set_weight",
            Step::Flip(_) => "flip",
            Step::Flag(_) => "flag",
            Step::Pause(_) => "pause",
            Step::Wait(_) => "wait",
            Step::Analyze(_) => "analyze",
            Step::Promote(_) => "promote",
            Step::Notify(_) => "notify",
        }
    }

    /// The change this step makes through `control`, if it makes one.
    pub fn action(&self, route: &str) -> Option<Action> {
        let r = |o: &Option<String>| o.clone().unwrap_or_else(|| route.to_string());
        match self {
            Step::SetWeight(s) => Some(match (&s.percent, &s.weights) {
                (Some(p), _) => Action::SetCanary {
                    route: r(&s.route),
                    percent: *p,
                },
                (None, w) => Action::SetSplit {
                    route: r(&s.route),
                    weights: w.clone().unwrap_or_default(),
                },
            }),
            Step::Flip(s) => Some(Action::Flip {
                route: r(&s.route),
                to: s.to.clone(),
            }),
            Step::Flag(s) => Some(Action::SetFlag {
                key: s.key.clone(),
                state: s.state,
                variant: s.variant.clone(),
            }),
            _ => None,
        }
    }

    /// One line for progress output, the TUI and the release note.
    pub fn title(&self, route: &str) -> String {
        if let Some(a) = self.action(route) {
            return a.to_string();
        }
        match self {
            Step::Check(c) => {
                let mut parts = Vec::new();
                if !c.healthy.is_empty() {
                    parts.push(format!("{} healthy", c.healthy.join(", ")));
                }
                if let Some(l) = &c.live {
                    parts.push(format!(
                        "{} live on {}",
                        c.route.as_deref().unwrap_or(route),
                        l
                    ));
                }
                for f in &c.flag_off {
                    parts.push(format!("flag {f} off"));
                }
                for f in &c.flag_on {
                    parts.push(format!("flag {f} on"));
                }
                if let Some(t) = &c.matches_source {
                    parts.push(format!(
                        "{t} is what {} serves",
                        c.source.as_deref().unwrap_or("the source environment")
                    ));
                }
                format!("check {}", parts.join(", "))
            }
            Step::Smoke(s) => {
                let pin = if s.headers.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        s.headers
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                format!("smoke {} {}{pin} → {}", s.method, s.path, s.status)
            }
            Step::Pause(p) => format!("pause: {}", p.message),
            Step::Wait(d) => format!("wait {d}"),
            Step::Analyze(a) => {
                let who = a
                    .upstream
                    .clone()
                    .unwrap_or_else(|| a.route.clone().unwrap_or_else(|| route.to_string()));
                format!("analyze {who} for {}", a.duration)
            }
            Step::Promote(p) => format!("promote to {}", p.env),
            Step::Notify(n) => match &n.message {
                Some(m) => format!("notify: {m}"),
                None => "notify".into(),
            },
            // Titled by their action above.
            Step::SetWeight(_) | Step::Flip(_) | Step::Flag(_) => self.kind().to_string(),
        }
    }
}

/// One step as the engine runs it: the runbook's steps before the first `promote` run
/// against the first environment, then again against each promoted one.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedStep {
    pub env: String,
    /// Index into `Runbook::steps`.
    pub source: usize,
    pub step: Step,
}

impl Runbook {
    /// The flat list of steps to run, with `env` as the first environment.
    pub fn expand(&self, env: &str) -> Vec<PlannedStep> {
        let first_promote = self
            .steps
            .iter()
            .position(|s| matches!(s, Step::Promote(_)))
            .unwrap_or(self.steps.len());
        let mut out: Vec<PlannedStep> = self.steps[..first_promote]
            .iter()
            .enumerate()
            .map(|(i, s)| PlannedStep {
                env: env.to_string(),
                source: i,
                step: s.clone(),
            })
            .collect();
        for (j, s) in self.steps.iter().enumerate().skip(first_promote) {
            match s {
                Step::Promote(p) => {
                    for (i, s) in self.steps[..first_promote].iter().enumerate() {
                        out.push(PlannedStep {
                            env: p.env.clone(),
                            source: i,
                            step: s.clone(),
                        });
                    }
                }
                other => out.push(PlannedStep {
                    env: out.last().map_or(env, |l| l.env.as_str()).to_string(),
                    source: j,
                    step: other.clone(),
                }),
            }
        }
        out
    }
}

/// Reads and validates a runbook file.
pub fn load(path: &Path) -> Result<(Runbook, String), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![ConfigIssue {
            file: name.clone(),
            line: 1,
            col: 1,
            path: String::new(),
            message: format!("cannot read runbook: {e}"),
        }])
    })?;
    let rb = parse_str(&text, &name)?;
    Ok((rb, text))
}

/// Parses and validates. `file` is only used in messages.
pub fn parse_str(text: &str, file: &str) -> Result<Runbook, ConfigError> {
    parse_located(text, file, validate)
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

fn validate_webhook(w: &WebhookRef, base: &str, err: &mut impl FnMut(String, String)) {
    let n = [w.url.is_some(), w.env.is_some(), w.file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n != 1 {
        err(
            base.to_string(),
            "give exactly one of url, env (a variable holding the URL) or file".into(),
        );
    }
    if let Some(u) = &w.url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        err(
            format!("{base}.url"),
            "must start with http:// or https://".into(),
        );
    }
}

/// Semantic checks serde cannot express, as (field path, message).
pub fn validate(rb: &Runbook) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut err = |p: String, m: String| out.push((p, m));
    for (field, v) in [("name", &rb.name), ("env", &rb.env), ("route", &rb.route)] {
        if v.trim().is_empty() {
            err(field.into(), "must not be empty".into());
        }
    }
    match &rb.rollback {
        RollbackPolicy::Canary(p) if *p > 100 => err(
            "rollback.canary".into(),
            format!("a canary weight is a percentage, 0 to 100; got {p}"),
        ),
        RollbackPolicy::Split(w) if w.is_empty() || w.values().all(|v| *v == 0) => err(
            "rollback.split".into(),
            "give the weights to go back to, not all zero".into(),
        ),
        _ => {}
    }
    if let Some(n) = &rb.notify {
        validate_webhook(&n.webhook, "notify.webhook", &mut err);
    }
    if rb.steps.is_empty() {
        err("steps".into(), "a runbook needs at least one step".into());
    }
    let mut envs = vec![rb.env.clone()];
    for (i, s) in rb.steps.iter().enumerate() {
        let base = format!("steps[{i}].{}", s.kind());
        match s {
            Step::Check(c) => {
                if c.healthy.is_empty()
                    && c.live.is_none()
                    && c.flag_off.is_empty()
                    && c.flag_on.is_empty()
                    && c.matches_source.is_none()
                {
                    err(
                        base.clone(),
                        "a check needs at least one of healthy, live, flag_off, flag_on, matches_source".into(),
                    );
                }
                if c.source.is_some() && c.matches_source.is_none() {
                    err(
                        format!("{base}.source"),
                        "source names the environment for matches_source; give matches_source too"
                            .into(),
                    );
                }
            }
            Step::Smoke(sm) => {
                if !sm.path.starts_with('/') {
                    err(format!("{base}.path"), "must start with /".into());
                }
                if !METHODS.contains(&sm.method.as_str()) {
                    err(
                        format!("{base}.method"),
                        format!("unknown method {:?}; use e.g. GET or POST", sm.method),
                    );
                }
                if !(100..=599).contains(&sm.status) {
                    err(
                        format!("{base}.status"),
                        "an HTTP status is 100 to 599".into(),
                    );
                }
                if !(1..=1000).contains(&sm.requests) {
                    err(format!("{base}.requests"), "must be 1 to 1000".into());
                }
                for name in sm.headers.keys() {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        err(
                            format!("{base}.headers.{name}"),
                            "not a valid header name".into(),
                        );
                    }
                }
                if sm.timeout.0.is_zero() {
                    err(
                        format!("{base}.timeout"),
                        "must be greater than zero".into(),
                    );
                }
            }
            Step::SetWeight(w) => match (&w.percent, &w.weights) {
                (Some(_), Some(_)) | (None, None) => err(
                    base,
                    "give either percent (the canary's share) or weights".into(),
                ),
                (Some(p), None) if *p > 100 => err(
                    format!("{base}.percent"),
                    format!("a percentage is 0 to 100; got {p}"),
                ),
                (None, Some(ws)) if ws.is_empty() || ws.values().all(|v| *v == 0) => err(
                    format!("{base}.weights"),
                    "all weights are zero: no traffic could be routed".into(),
                ),
                _ => {}
            },
            Step::Flip(_) => {}
            Step::Flag(f) => {
                if f.key.trim().is_empty() {
                    err(format!("{base}.key"), "must not be empty".into());
                }
                if f.state.is_none() && f.variant.is_none() {
                    err(base, "give a state (on/off), a variant, or both".into());
                }
            }
            Step::Pause(p) => {
                if p.message.trim().is_empty() {
                    err(
                        format!("{base}.message"),
                        "tell the operator what to look at".into(),
                    );
                }
                if p.timeout.is_some_and(|t| t.0.is_zero()) {
                    err(
                        format!("{base}.timeout"),
                        "must be greater than zero".into(),
                    );
                }
            }
            Step::Wait(d) => {
                if d.0.is_zero() {
                    err(
                        format!("steps[{i}].wait"),
                        "must be greater than zero".into(),
                    );
                }
            }
            Step::Analyze(a) => {
                if a.duration.0.is_zero() {
                    err(
                        format!("{base}.duration"),
                        "must be greater than zero".into(),
                    );
                }
                if a.interval.0.is_zero() {
                    err(
                        format!("{base}.interval"),
                        "must be greater than zero".into(),
                    );
                } else if a.interval > a.duration {
                    err(
                        format!("{base}.interval"),
                        format!("{} is longer than the duration {}", a.interval, a.duration),
                    );
                }
                if a.max_error_ratio.is_none() && a.max_p95.is_none() && !a.compare {
                    err(
                        base.clone(),
                        "an analysis needs a gate: max_error_ratio, max_p95 or compare: true"
                            .into(),
                    );
                }
                if let Some(r) = a.max_error_ratio
                    && !(0.0..=1.0).contains(&r)
                {
                    err(
                        format!("{base}.max_error_ratio"),
                        format!("a ratio is 0 to 1 (0.01 is 1%); got {r}"),
                    );
                }
                if a.min_requests == 0 {
                    err(
                        format!("{base}.min_requests"),
                        "must be at least 1: no gate passes on no traffic".into(),
                    );
                }
            }
            Step::Promote(p) => {
                if i == 0 {
                    err(
                        base.clone(),
                        "there are no steps before it to promote".into(),
                    );
                }
                if envs.contains(&p.env) {
                    err(
                        format!("{base}.env"),
                        format!("{:?} is already released to by this runbook", p.env),
                    );
                }
                envs.push(p.env.clone());
            }
            Step::Notify(n) => match &n.webhook {
                Some(w) => validate_webhook(w, &format!("{base}.webhook"), &mut err),
                None if rb.notify.is_none() => err(
                    base.clone(),
                    "no webhook: give one here or in the runbook's notify".into(),
                ),
                None => {}
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: payments canary
env: stage
route: payments
rollback: { canary: 0 }
notify: { webhook: { url: http://127.0.0.1:9/hook } }
steps:
  - check: { healthy: [payments-v2], flag_off: [new-checkout] }
  - set_weight: { percent: 10 }
  - analyze: { duration: 6s, interval: 1s, max_error_ratio: 0.05, max_p95: 300ms, compare: true }
  - flag: { key: new-checkout, state: on }
  - wait: 2s
  - promote: { env: prod }
  - notify: { message: done }
";

    #[test]
    fn parses_every_step_kind_and_expands_promotion() {
        let rb = parse_str(GOOD, "rb.yaml").unwrap();
        assert_eq!(rb.rollback, RollbackPolicy::Canary(0));
        assert!(matches!(
            rb.steps[3],
            Step::Flag(FlagStep {
                state: Some(FlagState::Enabled),
                ..
            })
        ));
        let flat = rb.expand("dev");
        let envs: Vec<&str> = flat.iter().map(|s| s.env.as_str()).collect();
        assert_eq!(
            envs,
            [
                "dev", "dev", "dev", "dev", "dev", "prod", "prod", "prod", "prod", "prod", "prod"
            ]
        );
        assert_eq!(
            flat[5].source, 0,
            "promotion starts over from the first step"
        );
        assert_eq!(flat.last().unwrap().step.kind(), "notify");
        assert_eq!(flat[1].step.title("payments"), "set payments canary to 10%");
        assert_eq!(flat[2].step.title("payments"), "analyze payments for 6s");
    }

    #[test]
    fn errors_name_file_line_column_and_field_path() {
        let bad = GOOD.replace("percent: 10", "percent: ten");
        let e = parse_str(&bad, "rb.yaml").unwrap_err().to_string();
        assert!(e.starts_with("rb.yaml:8:"), "{e}");
        assert!(e.contains("steps[1].set_weight.percent"), "{e}");

        let bad = GOOD.replace("- wait: 2s", "- wiat: 2s");
        let e = parse_str(&bad, "rb.yaml").unwrap_err().to_string();
        assert!(e.starts_with("rb.yaml:11:"), "{e}");
        assert!(e.contains("wiat"), "{e}");

        let bad = GOOD.replace("max_error_ratio: 0.05", "max_error_ratio: 5");
        let e = parse_str(&bad, "rb.yaml").unwrap_err().to_string();
        assert!(
            e.contains("rb.yaml:9:") && e.contains("steps[2].analyze.max_error_ratio"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let bad = "\
name: x
env: stage
route: users
steps:
  - set_weight: { percent: 10, weights: { a: 1 } }
  - analyze: { duration: 2s, interval: 5s }
  - notify: {}
  - promote: { env: stage }
";
        let e = parse_str(bad, "b.yaml").unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "steps[0].set_weight",
                "steps[1].analyze",
                "steps[1].analyze.interval",
                "steps[2].notify",
                "steps[3].promote.env"
            ],
            "{e}"
        );
        assert_eq!((e.0[0].line, e.0[3].line), (5, 7));
    }

    #[test]
    fn a_source_needs_matches_source_and_matches_source_alone_is_a_check() {
        let ok = "name: x\nenv: prod\nroute: users\nsteps:\n  - check: { matches_source: users-green }\n";
        let rb = parse_str(ok, "ok.yaml").unwrap();
        assert_eq!(
            rb.steps[0].title("users"),
            "check users-green is what the source environment serves"
        );
        let bad = "name: x\nenv: prod\nroute: users\nsteps:\n  - check: { healthy: [a], source: stage }\n";
        let e = parse_str(bad, "b.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].path, "steps[0].check.source", "{e}");
    }
}
