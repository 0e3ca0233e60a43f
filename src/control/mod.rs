//! The one path for every change. The TUI, `signalbox ctl` and walkthroughs all come here:
//! [`plan`] runs the preflight checks and works out before → after (no side effects, so a
//! front end can show it and ask); [`execute`] applies a confirmed plan through the
//! environment's backend, reads the state back to verify it, and appends to the audit
//! journal whatever happened.

pub mod audit;
pub mod backend;
pub mod envfile;
pub mod feed;
pub mod sandbox;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use self::audit::{AuditEntry, Journal};
use self::backend::{Backend, BackendError, GatewayBackend, Request};
use self::envfile::{ConfirmPolicy, EnvDef, EnvKind};
use crate::domain::action::weights_text;
use crate::domain::status::flip_target;
use crate::domain::{Action, Check, FaultSpec, FlagState, GatewayStatus, Outcome};
use crate::gateway::config::GatewayConfig;
use crate::gateway::revisions::RevisionRecord;
use crate::gateway::secrets;

/// One environment the cockpit can act on.
pub struct Env {
    pub def: EnvDef,
    pub backend: Backend,
    /// The `promote_from` environment, or why it cannot be reached.
    pub source: Option<Result<Box<Env>, String>>,
    /// The sandbox control API, when the environment is part of a `signalbox sandbox`.
    pub sandbox: Option<sandbox::SandboxClient>,
}

impl Env {
    /// An environment on its own (no `promote_from` comparison possible).
    pub fn connect(def: EnvDef) -> Result<Self, String> {
        Self::connect_in(def, &[])
    }

    /// An environment, with its `promote_from` environment looked up in `all`.
    pub fn connect_in(def: EnvDef, all: &[EnvDef]) -> Result<Self, String> {
        let source = def.promote_from.as_ref().map(|name| {
            all.iter()
                .find(|d| &d.name == name && d.name != def.name)
                .ok_or_else(|| format!("promote_from environment {name:?} is not defined"))
                .and_then(|d| Self::connect_in(d.clone(), &[]))
                .map(Box::new)
        });
        let backend = match def.kind {
            EnvKind::Gateway => Backend::Gateway(Self::gateway(&def)?),
            EnvKind::Kubernetes => {
                let source = match &def.kubeconfig {
                    Some(p) => crate::k8s::client::KubeconfigSource::File(p.clone()),
                    None => crate::k8s::client::KubeconfigSource::Default,
                };
                Backend::Kube(std::sync::Arc::new(crate::k8s::KubeBackend::new(
                    source,
                    def.context.clone(),
                    def.namespace.clone().unwrap_or_default(),
                    def.kube.clone(),
                )))
            }
        };
        Ok(Self {
            backend,
            source,
            def,
            sandbox: None,
        })
    }

    /// Resolves the token reference; the token itself is never shown.
    fn gateway(def: &EnvDef) -> Result<GatewayBackend, String> {
        let token = match (&def.token_env, &def.token_file) {
            (Some(e), _) => Some(
                secrets::resolve(&crate::gateway::config::SecretRef::Env(e.clone()))
                    .map_err(|e| format!("environment {:?}: {e}", def.name))?,
            ),
            (None, Some(f)) => Some(
                secrets::resolve(&crate::gateway::config::SecretRef::File(f.clone()))
                    .map_err(|e| format!("environment {:?}: {e}", def.name))?,
            ),
            (None, None) => None,
        };
        Ok(GatewayBackend::new(&def.admin_url, token))
    }

    /// Lets fault actions reach the sandbox at `control_url`.
    pub fn with_sandbox(mut self, control_url: &str) -> Self {
        self.sandbox = Some(sandbox::SandboxClient::new(control_url));
        self
    }
}

/// A change worked out and checked, waiting for confirmation.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub env: String,
    pub action: Action,
    /// The action in words, e.g. "flip users to green".
    pub description: String,
    pub before: String,
    pub after: String,
    pub checks: Vec<Check>,
    pub confirm: ConfirmPolicy,
    /// The revision the plan was made against; applying sends it as If-Match.
    pub base_revision: u64,
    /// Set when a freeze window was overridden.
    pub forced: Option<String>,
    #[serde(skip)]
    request: Option<Request>,
    /// For `SetFault`: the upstream and faults, sent to the sandbox instead of the gateway.
    #[serde(skip)]
    fault: Option<(String, FaultSpec)>,
}

impl Plan {
    /// True when every check passed, so the plan may be executed.
    pub fn allowed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// What came of executing a plan.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub revision: Option<u64>,
    pub error: Option<String>,
    /// The state after the change (when it could be read back).
    #[serde(skip)]
    pub state: Option<GatewayStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Invalid(String),
}

/// Preflight and before → after for `action`, against the environment's current state.
/// `force` is the reason given to override a freeze window.
pub async fn plan(
    env: &Env,
    action: Action,
    force: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Plan, PlanError> {
    let view = match &env.backend {
        Backend::Kube(k) => Some(k.view().await?),
        Backend::Gateway(_) => None,
    };
    let status = match &view {
        Some(v) => v.to_gateway_status(),
        None => env.backend.status().await?,
    };
    let mut checks = Vec::new();
    let def = &env.def;
    checks.push(if def.read_only {
        Check::fail(
            "environment is writable",
            format!("{} is read-only", def.name),
        )
    } else {
        Check::pass("environment is writable", "not read-only")
    });
    let frozen: Vec<&str> = def
        .freeze
        .iter()
        .filter(|f| f.covers(now))
        .map(|f| f.reason.as_str())
        .collect();
    let mut forced = None;
    checks.push(match (frozen.is_empty(), force) {
        (true, _) => Check::pass("no change freeze", "no freeze window now"),
        (false, Some(reason)) if !reason.trim().is_empty() => {
            forced = Some(reason.trim().to_string());
            Check::pass(
                "no change freeze",
                format!("frozen ({}), forced: {}", frozen.join("; "), reason.trim()),
            )
        }
        (false, _) => Check::fail(
            "no change freeze",
            format!(
                "frozen: {}; force with a reason to override",
                frozen.join("; ")
            ),
        ),
    });

    if let Action::SetFault { upstream, faults } = &action {
        let sb = env.sandbox.as_ref().ok_or_else(|| {
            PlanError::Invalid(format!(
                "{} is not a sandbox environment: faults can only be injected in `signalbox sandbox`",
                def.name
            ))
        })?;
        if faults.error_percent > 100 {
            return Err(PlanError::Invalid(format!(
                "an error rate is a percentage, 0 to 100; got {}",
                faults.error_percent
            )));
        }
        if faults.latency_ms > 60_000 {
            return Err(PlanError::Invalid(
                "added latency is capped at 60000 ms".into(),
            ));
        }
        checks.push(match status.upstream(upstream) {
            Some(_) => Check::pass(
                format!("{upstream} exists"),
                format!("an upstream of {}", def.name),
            ),
            None => Check::fail(
                format!("{upstream} exists"),
                format!("{} has no upstream {upstream:?}", def.name),
            ),
        });
        let current = sb
            .get(&def.name, upstream)
            .await
            .map_err(PlanError::Invalid)?;
        checks.push(Check::pass(
            "sandbox control API answers",
            sb.address().to_string(),
        ));
        return Ok(Plan {
            env: def.name.clone(),
            description: action.to_string(),
            before: format!("{upstream}: {current}"),
            after: format!("{upstream}: {faults}"),
            fault: Some((upstream.clone(), faults.clone())),
            action,
            checks,
            confirm: def.confirm,
            base_revision: status.revision,
            forced,
            request: None,
        });
    }
    let (request, before, after) = match (&action, &view) {
        (Action::SetFault { .. }, _) => {
            return Err(PlanError::Invalid("fault actions are planned above".into()));
        }
        (Action::Rollback { .. } | Action::Rollforward, Some(_)) => {
            return Err(PlanError::Invalid(format!(
                "{} is a Kubernetes environment: it has no gateway revisions; use `ctl rollout-undo DEPLOYMENT`",
                def.name
            )));
        }
        (Action::RolloutUndo { .. } | Action::Restart { .. }, None) => {
            return Err(PlanError::Invalid(format!(
                "{} is a gateway environment; rollout undo and restart act on Kubernetes Deployments",
                def.name
            )));
        }
        (Action::RolloutUndo { deployment }, Some(v)) => {
            let Backend::Kube(k) = &env.backend else {
                return Err(PlanError::Invalid("not a Kubernetes environment".into()));
            };
            if v.deployment(deployment).is_none() {
                return Err(PlanError::Invalid(format!(
                    "no deployment {deployment:?} in {}",
                    def.name
                )));
            }
            let (rev, images) = k.undo_target(deployment).await.map_err(|e| match e {
                BackendError::Rejected(m) => PlanError::Invalid(m),
                other => other.into(),
            })?;
            let (change, before, after, more) =
                crate::k8s::plan::rollout_undo(v, deployment, rev, &images)
                    .map_err(PlanError::Invalid)?;
            checks.extend(more);
            (Request::Kube(change), before, after)
        }
        (Action::Restart { deployment }, Some(v)) => {
            let (change, before, after, more) =
                crate::k8s::plan::restart(v, deployment, &now.to_rfc3339())
                    .map_err(PlanError::Invalid)?;
            checks.extend(more);
            (Request::Kube(change), before, after)
        }
        (Action::SetFlag { .. }, Some(v)) if v.flags.as_ref().is_none_or(|f| f.flags.is_err()) => {
            return Err(PlanError::Invalid(match &v.flags {
                None => format!(
                    "{} has no flags ConfigMap {:?} in namespace {:?}",
                    def.name, def.kube.flags_config_map, v.namespace
                ),
                Some(f) => format!(
                    "configmap {:?}: {}",
                    f.config_map,
                    f.flags.as_ref().err().cloned().unwrap_or_default()
                ),
            }));
        }
        (Action::SetSplit { route, weights }, _) => {
            split_plan(&status, route, weights.clone(), def, &mut checks)?
        }
        (Action::SetCanary { route, percent }, _) => {
            let r = status
                .route(route)
                .ok_or_else(|| no_route(&status, route, &def.name))?;
            let (stable, canary) = r.canary_step_sides().ok_or_else(|| PlanError::Invalid(format!("route {route:?} has no canary side (set `canary:` on the route, or a header canary)")))?;
            if *percent > 100 {
                return Err(PlanError::Invalid(format!(
                    "a canary weight is a percentage, 0 to 100; got {percent}"
                )));
            }
            let mut weights: BTreeMap<String, u32> =
                r.split.keys().map(|k| (k.clone(), 0)).collect();
            weights.insert(stable.to_string(), 100 - percent);
            weights.insert(canary.to_string(), *percent);
            let current = r.percent(canary);
            if let Some(max) = def.max_canary_step {
                let step = current.abs_diff(*percent);
                checks.push(if step <= max {
                    Check::pass(
                        "canary step within limit",
                        format!("{current}% → {percent}% is a step of {step} (max {max})"),
                    )
                } else {
                    Check::fail(
                        "canary step within limit",
                        format!(
                            "{current}% → {percent}% is a step of {step}; {} allows at most {max}",
                            def.name
                        ),
                    )
                });
            }
            split_plan(&status, route, weights, def, &mut checks)?
        }
        (Action::Flip { route, to }, _) => {
            let r = status
                .route(route)
                .ok_or_else(|| no_route(&status, route, &def.name))?;
            // On Kubernetes a blue-green side may be named by its track (`green`).
            let to = match (to, view.as_ref().and_then(|v| v.service(route))) {
                (Some(t), Some(svc)) => svc
                    .blue_green
                    .as_ref()
                    .and_then(|bg| bg.sides.get(t).cloned())
                    .or(Some(t.clone())),
                (t, _) => t.clone(),
            };
            let target = flip_target(&r.split, to.as_deref()).map_err(PlanError::Invalid)?;
            let weights = r
                .split
                .keys()
                .map(|k| (k.clone(), if *k == target { 100 } else { 0 }))
                .collect();
            split_plan(&status, route, weights, def, &mut checks)?
        }
        (
            Action::SetFlag {
                key,
                state,
                variant,
            },
            _,
        ) => {
            let f = status
                .flag(key)
                .ok_or_else(|| PlanError::Invalid(format!("no flag {key:?} in {}", def.name)))?;
            if let Some(v) = variant
                && !f.variants.contains(v)
            {
                return Err(PlanError::Invalid(format!(
                    "flag {key:?} has no variant {v:?} (it has {})",
                    f.variants.join(", ")
                )));
            }
            let show = |s: FlagState, v: Option<&str>| {
                format!(
                    "{key}: {} (default {})",
                    if s == FlagState::Enabled { "on" } else { "off" },
                    v.unwrap_or("none")
                )
            };
            let before = show(f.state, f.default_variant.as_deref());
            let after = show(
                state.unwrap_or(f.state),
                variant.as_deref().or(f.default_variant.as_deref()),
            );
            (
                Request::SetFlag {
                    key: key.clone(),
                    state: *state,
                    variant: variant.clone(),
                },
                before,
                after,
            )
        }
        (Action::Rollback { to }, _) => {
            let target = to.unwrap_or(status.revision.saturating_sub(1));
            if target == 0 || target == status.revision {
                return Err(PlanError::Invalid(format!(
                    "revision {target} cannot be rolled back to (current: {})",
                    status.revision
                )));
            }
            let Backend::Gateway(gw) = &env.backend else {
                return Err(PlanError::Invalid("not a gateway environment".into()));
            };
            let rec = gw.revision(target).await.map_err(|e| match e {
                BackendError::Rejected(_) => {
                    PlanError::Invalid(format!("revision {target} is not in the history"))
                }
                other => other.into(),
            })?;
            checks.push(Check::pass(
                "revision is in the history",
                format!("revision {target}: {}", rec.info.description),
            ));
            let (before, after) = toward_revision(&status, &def.name, &rec, &mut checks);
            (Request::Rollback { to: target }, before, after)
        }
        (Action::Rollforward, _) => {
            let revs = env.backend.revisions().await?;
            let head = revs.iter().find(|r| r.number == status.revision);
            let Some(crate::domain::Change::Rollback { from, .. }) = head.map(|h| &h.change) else {
                return Err(PlanError::Invalid(
                    "nothing to roll forward: the current revision is not a rollback".into(),
                ));
            };
            let Backend::Gateway(gw) = &env.backend else {
                return Err(PlanError::Invalid("not a gateway environment".into()));
            };
            let rec = gw.revision(*from).await?;
            let (before, after) = toward_revision(&status, &def.name, &rec, &mut checks);
            (Request::Rollforward, before, after)
        }
    };
    // On Kubernetes, the split or flag worked out above becomes a patch of the object that
    // holds it, planned against that object's resourceVersion.
    let request = match (request, &view) {
        (Request::SetSplit { route, weights }, Some(v)) => {
            let source_view = match (
                &env.source,
                v.service(&route).and_then(|s| s.blue_green.as_ref()),
            ) {
                (Some(src), Some(_)) => Some(source_view(src).await),
                _ => None,
            };
            let source = match (&def.promote_from, &source_view) {
                (Some(name), Some(r)) => Some(crate::k8s::plan::Source {
                    env: name,
                    view: r.as_ref().map_err(Clone::clone),
                }),
                _ => None,
            };
            Request::Kube(
                crate::k8s::plan::from_split(v, &route, &weights, source, &mut checks)
                    .map_err(PlanError::Invalid)?,
            )
        }
        (
            Request::SetFlag {
                key,
                state,
                variant,
            },
            Some(v),
        ) => Request::Kube(
            crate::k8s::plan::from_flag(v, &key, state, variant).map_err(PlanError::Invalid)?,
        ),
        (r, _) => r,
    };
    Ok(Plan {
        env: def.name.clone(),
        description: action.to_string(),
        action,
        before,
        after,
        checks,
        confirm: def.confirm,
        base_revision: status.revision,
        forced,
        request: Some(request),
        fault: None,
    })
}

type Splits<'a> = Vec<(&'a String, &'a BTreeMap<String, u32>)>;

/// Going back (or forward) to another revision: the health checks of the upstreams it puts
/// back on a route, and its before and after texts.
fn toward_revision(
    status: &GatewayStatus,
    env: &str,
    rec: &RevisionRecord,
    checks: &mut Vec<Check>,
) -> (String, String) {
    health_checks(status, env, newly_live(status, &rec.config), checks);
    let (b, a) = splits_toward(status, rec);
    (
        format!("revision {}: {b}", status.revision),
        format!("revision {}: {a}", rec.info.number),
    )
}

/// What moving from `status` to the config of another revision does to the route splits, as
/// before and after texts.
fn splits_toward(status: &GatewayStatus, to: &RevisionRecord) -> (String, String) {
    if to.info.hash == status.config_hash {
        // Only flags can differ; "other settings differ" would send the operator looking.
        let same = "the same config as now".to_string();
        return (same, "the same config; flags as they were then".into());
    }
    changed_splits(
        status.routes.iter().map(|r| (&r.name, &r.split)).collect(),
        to.config
            .routes
            .iter()
            .map(|r| (&r.name, &r.split))
            .collect(),
    )
}

/// Before and after of the routes whose split differs (a route only on one side counts), so
/// a confirmation shows what moves rather than every route.
fn changed_splits<'a>(now: Splits<'a>, then: Splits<'a>) -> (String, String) {
    fn find<'a>(v: &Splits<'a>, n: &String) -> Option<&'a BTreeMap<String, u32>> {
        v.iter().find(|(m, _)| *m == n).map(|(_, s)| *s)
    }
    let mut names: Vec<&String> = now.iter().chain(then.iter()).map(|(n, _)| *n).collect();
    names.dedup();
    let mut seen = Vec::new();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for n in names {
        if seen.contains(&n) {
            continue;
        }
        seen.push(n);
        let (b, a) = (find(&now, n), find(&then, n));
        if b == a {
            continue;
        }
        let text = |s: Option<&BTreeMap<String, u32>>| match s {
            Some(s) => format!("{n} {}", weights_text(s)),
            None => format!("{n} (no such route)"),
        };
        before.push(text(b));
        after.push(text(a));
    }
    if before.is_empty() {
        let same = "route splits unchanged (other settings differ)".to_string();
        return (same.clone(), same);
    }
    (before.join("; "), after.join("; "))
}

/// The promote_from environment's namespace, or why it cannot be read.
async fn source_view(
    src: &Result<Box<Env>, String>,
) -> Result<crate::domain::kube::KubeView, String> {
    let env = src.as_ref().map_err(Clone::clone)?;
    match &env.backend {
        Backend::Kube(k) => k.view().await.map_err(|e| e.to_string()),
        Backend::Gateway(_) => Err(format!(
            "{} is not a Kubernetes environment, so its images cannot be compared",
            env.def.name
        )),
    }
}

/// A mistyped route name: the message lists the known ones, so the next try is right.
fn no_route(status: &GatewayStatus, route: &str, env: &str) -> PlanError {
    let known: Vec<&str> = status.routes.iter().map(|r| r.name.as_str()).collect();
    PlanError::Invalid(if known.is_empty() {
        format!("no route {route:?} in {env}; it has no routes")
    } else {
        format!("no route {route:?} in {env}; known: {}", known.join(", "))
    })
}

fn split_plan(
    status: &GatewayStatus,
    route: &str,
    weights: BTreeMap<String, u32>,
    def: &EnvDef,
    checks: &mut Vec<Check>,
) -> Result<(Request, String, String), PlanError> {
    let r = status
        .route(route)
        .ok_or_else(|| no_route(status, route, &def.name))?;
    let live = weights
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(up, _)| up.as_str());
    health_checks(status, &def.name, live, checks);
    let before = format!("{route}: {}", weights_text(&r.split));
    let after = format!("{route}: {}", weights_text(&weights));
    Ok((
        Request::SetSplit {
            route: route.to_string(),
            weights,
        },
        before,
        after,
    ))
}

/// One check per upstream that a change sends traffic to: it must have a healthy target.
fn health_checks<'a>(
    status: &GatewayStatus,
    env: &str,
    upstreams: impl IntoIterator<Item = &'a str>,
    checks: &mut Vec<Check>,
) {
    for up in upstreams {
        checks.push(match status.upstream(up) {
            None => Check::fail(
                format!("{up} exists"),
                format!("{env} has no upstream {up:?} running now, so its health is unknown"),
            ),
            Some(u) if u.healthy_targets() == 0 => Check::fail(
                format!("{up} is healthy"),
                format!("0/{} targets healthy", u.targets.len()),
            ),
            Some(u) => Check::pass(
                format!("{up} is healthy"),
                format!(
                    "{}/{} targets healthy",
                    u.healthy_targets(),
                    u.targets.len()
                ),
            ),
        });
    }
}

/// The upstreams that going back (or forward) to `to` gives traffic on a route whose split
/// changes: those a rollback must not send users to while they are down. Upstreams already
/// live stay out, so a rollback is not held up by an outage it does not touch.
fn newly_live<'a>(status: &GatewayStatus, to: &'a GatewayConfig) -> Vec<&'a str> {
    let mut ups: Vec<&str> = to
        .routes
        .iter()
        .flat_map(|r| {
            let now = status.route(&r.name).map(|n| &n.split);
            r.split.iter().filter(move |(up, w)| {
                **w > 0 && now.and_then(|n| n.get(*up)).is_none_or(|cur| *cur == 0)
            })
        })
        .map(|(up, _)| up.as_str())
        .collect();
    ups.sort_unstable();
    ups.dedup();
    ups
}

/// Applies a plan the operator confirmed (or refuses it if a check failed), verifies the
/// result, and records the outcome in the journal.
pub async fn execute(env: &Env, plan: &Plan, journal: &Journal, actor: &str) -> Report {
    let report = if !plan.allowed() {
        let failed: Vec<String> = plan
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        Report {
            outcome: Outcome::Refused,
            revision: None,
            error: Some(failed.join("; ")),
            state: None,
        }
    } else {
        match (&plan.request, &plan.fault, &env.sandbox) {
            (_, Some((upstream, faults)), Some(sb)) => {
                apply_fault(sb, &plan.env, upstream, faults).await
            }
            (_, Some(_), None) => Report {
                outcome: Outcome::Failed,
                revision: None,
                error: Some(format!("{} has no sandbox control API", plan.env)),
                state: None,
            },
            (None, None, _) => Report {
                outcome: Outcome::Failed,
                revision: None,
                error: Some("the plan has no request".into()),
                state: None,
            },
            (Some(req), None, _) => apply_and_verify(env, req, plan.base_revision, actor).await,
        }
    };
    record(journal, plan, actor, &report);
    report
}

/// Records a plan that was not applied: the operator said no (`Cancelled`) or could not be
/// asked (`Refused`).
pub fn not_applied(
    plan: &Plan,
    journal: &Journal,
    actor: &str,
    outcome: Outcome,
    error: Option<String>,
) -> Report {
    let report = Report {
        outcome,
        revision: None,
        error,
        state: None,
    };
    record(journal, plan, actor, &report);
    report
}

fn record(journal: &Journal, plan: &Plan, actor: &str, report: &Report) {
    let entry = AuditEntry {
        time: Utc::now(),
        actor: actor.to_string(),
        env: plan.env.clone(),
        action: plan.action.clone(),
        description: plan.description.clone(),
        before: plan.before.clone(),
        after: plan.after.clone(),
        checks: plan.checks.clone(),
        outcome: report.outcome,
        revision: report.revision,
        error: report.error.clone(),
        forced: plan.forced.clone(),
    };
    if let Err(e) = journal.append(&entry) {
        tracing::error!(journal = %journal.path().display(), error = %e, "cannot write the audit journal");
    }
}

/// Sets the faults, then reads them back: the sandbox must now have exactly these.
async fn apply_fault(
    sb: &sandbox::SandboxClient,
    env: &str,
    upstream: &str,
    faults: &FaultSpec,
) -> Report {
    if let Err(e) = sb.set(env, upstream, faults).await {
        return Report {
            outcome: Outcome::Failed,
            revision: None,
            error: Some(e),
            state: None,
        };
    }
    match sb.get(env, upstream).await {
        Ok(now) if now == *faults => Report {
            outcome: Outcome::Applied,
            revision: None,
            error: None,
            state: None,
        },
        Ok(now) => Report {
            outcome: Outcome::Unverified,
            revision: None,
            error: Some(format!("the sandbox reports {upstream}: {now}")),
            state: None,
        },
        Err(e) => Report {
            outcome: Outcome::Unverified,
            revision: None,
            error: Some(e),
            state: None,
        },
    }
}

/// A backend error as the outcome of a change.
fn failed(env: &Env, e: BackendError) -> Report {
    let (outcome, error) = match e {
        BackendError::Changed(m) => (Outcome::Conflict, m),
        BackendError::Conflict { current } => (
            Outcome::Conflict,
            format!(
                "changed by someone else: {} is now at revision {current}; look again and retry",
                env.def.name
            ),
        ),
        BackendError::Rejected(m) | BackendError::Forbidden(m) => (Outcome::Refused, m),
        other => (Outcome::Failed, other.to_string()),
    };
    Report {
        outcome,
        revision: None,
        error: Some(error),
        state: None,
    }
}

async fn apply_and_verify_kube(
    env: &Env,
    k: &crate::k8s::KubeBackend,
    change: &crate::k8s::KubeChange,
    actor: &str,
) -> Report {
    let rv = match k.apply(change, actor).await {
        Ok(rv) => rv,
        Err(e) => return failed(env, e),
    };
    let state = env.backend.status().await.ok();
    match k.verify(change).await {
        Ok(true) => Report {
            outcome: Outcome::Applied,
            revision: None,
            error: None,
            state,
        },
        Ok(false) => Report {
            outcome: Outcome::Unverified,
            revision: None,
            error: Some(format!(
                "{} was patched (resourceVersion {rv}), but reading it back did not show the change",
                change.object()
            )),
            state,
        },
        Err(e) => Report {
            outcome: Outcome::Unverified,
            revision: None,
            error: Some(format!(
                "{} was patched (resourceVersion {rv}), but it could not be read back: {e}",
                change.object()
            )),
            state,
        },
    }
}

async fn apply_and_verify(env: &Env, req: &Request, base: u64, actor: &str) -> Report {
    let gw = match (&env.backend, req) {
        (Backend::Kube(k), Request::Kube(change)) => {
            return apply_and_verify_kube(env, k, change, actor).await;
        }
        (Backend::Gateway(g), _) => g,
        (Backend::Kube(_), _) => {
            return Report {
                outcome: Outcome::Failed,
                revision: None,
                error: Some("a Kubernetes environment takes only Kubernetes changes".into()),
                state: None,
            };
        }
    };
    let result = match gw.apply(req, base, actor).await {
        Ok(r) => r,
        Err(BackendError::Conflict { current }) => {
            return Report {
                outcome: Outcome::Conflict,
                revision: None,
                error: Some(format!(
                    "changed by someone else: {} moved from revision {base} to {current}; look again and retry",
                    env.def.name
                )),
                state: None,
            };
        }
        Err(BackendError::Rejected(m)) => {
            return Report {
                outcome: Outcome::Refused,
                revision: None,
                error: Some(m),
                state: None,
            };
        }
        Err(e) => {
            return Report {
                outcome: Outcome::Failed,
                revision: None,
                error: Some(e.to_string()),
                state: None,
            };
        }
    };
    let number = result.revision.number;
    // Read back: the change must be what the environment now serves.
    let check = match env.backend.status().await {
        Ok(s) => {
            let took = s.revision >= number
                && match req {
                    Request::SetSplit { route, weights } => {
                        s.route(route).is_some_and(|r| &r.split == weights)
                    }
                    Request::SetFlag {
                        key,
                        state,
                        variant,
                    } => s.flag(key).is_some_and(|f| {
                        state.is_none_or(|st| f.state == st)
                            && variant
                                .as_ref()
                                .is_none_or(|v| f.default_variant.as_ref() == Some(v))
                    }),
                    Request::Rollback { .. } | Request::Rollforward => {
                        s.config_hash == result.state.config_hash
                    }
                    Request::Kube(_) => false,
                };
            (took, Some(s))
        }
        Err(_) => (false, None),
    };
    match check {
        (true, state) => Report {
            outcome: Outcome::Applied,
            revision: Some(number),
            error: None,
            state,
        },
        (false, state) => Report {
            outcome: Outcome::Unverified,
            revision: Some(number),
            error: Some(format!(
                "revision {number} was accepted, but reading the state back did not show the change"
            )),
            state,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_plans_show_only_the_routes_that_move() {
        let (users, pay, gone) = (
            "users".to_string(),
            "payments".to_string(),
            "old".to_string(),
        );
        let bg: BTreeMap<String, u32> = [("blue".into(), 100), ("green".into(), 0)].into();
        let gb: BTreeMap<String, u32> = [("blue".into(), 0), ("green".into(), 100)].into();
        let p: BTreeMap<String, u32> = [("v1".into(), 90), ("v2".into(), 10)].into();
        let (b, a) = changed_splits(
            vec![(&users, &gb), (&pay, &p)],
            vec![(&users, &bg), (&pay, &p), (&gone, &p)],
        );
        assert_eq!(b, "users blue 0 / green 100; old (no such route)");
        assert_eq!(a, "users blue 100 / green 0; old v1 90 / v2 10");
        let (b, a) = changed_splits(vec![(&pay, &p)], vec![(&pay, &p)]);
        assert_eq!(b, a);
        assert!(b.contains("unchanged"), "{b}");
    }
}
