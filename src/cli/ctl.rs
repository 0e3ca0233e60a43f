//! `signalbox ctl`: the non-interactive front end to `control`, for scripts and pipelines.
//!
//! Exit codes: 0 done, 1 error, 2 refused by a preflight check or policy (including no
//! confirmation), 3 conflict (someone else changed the environment first).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::control::audit::Journal;
use crate::control::envfile::{self, CockpitConfig, ConfirmPolicy};
use crate::control::{self, Env, Plan, PlanError, Report};
use crate::domain::metrics::{Signal, Verdict};
use crate::domain::{Action, FlagState, GatewayStatus, Outcome};
use crate::metrics::{CanaryRoles, MetricsSample, MetricsSource};

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_REFUSED: i32 = 2;
pub const EXIT_CONFLICT: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Environments file (default: ./signalbox.toml, then $XDG_CONFIG_HOME/signalbox/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Environment to act on (needed when the file has more than one).
    #[arg(long, global = true)]
    pub env: Option<String>,
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Output,
    /// Do not ask for confirmation.
    #[arg(long, global = true)]
    pub yes: bool,
    /// Override a change freeze, giving the reason (recorded in the audit journal).
    #[arg(long, global = true, value_name = "REASON")]
    pub force: Option<String>,
    /// Who the change is recorded as (default: the file's `actor`, else $USER@hostname).
    #[arg(long, global = true)]
    pub actor: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Routes, splits, upstream health and flags.
    Status,
    /// The revision history, newest first.
    Revisions,
    /// Send PERCENT (25 or 25%) of ROUTE's traffic to its canary.
    Canary {
        route: String,
        #[arg(value_parser = parse_percent)]
        percent: u32,
    },
    /// Send all of ROUTE's traffic to UPSTREAM (default: the other side).
    Flip {
        route: String,
        upstream: Option<String>,
    },
    /// Turn a flag on or off, or set its default variant.
    Flag { key: String, value: String },
    /// Go back to an earlier revision (default: the one before the current).
    Rollback {
        #[arg(long)]
        to: Option<u64>,
    },
    /// Re-apply the revision the last rollback rolled back from.
    Rollforward,
    /// Kubernetes: restore DEPLOYMENT's previous pod template, as `kubectl rollout undo`.
    RolloutUndo { deployment: String },
    /// Kubernetes: replace every pod of DEPLOYMENT (e.g. to pick up a rotated Secret).
    Restart { deployment: String },
}

pub async fn run(args: CtlArgs) -> i32 {
    let output = args.output;
    // The environment asked for, then the one resolved: a failure names it when it can.
    let mut env = args.env.clone();
    match run_inner(args, &mut env).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signalbox ctl: {e}");
            // A script reading --output json gets one object per run, failures included.
            if output == Output::Json {
                println!("{}", failure_json(env.as_deref(), &e));
            }
            EXIT_ERROR
        }
    }
}

/// `25` or `25%`, as the cockpit's palette and `sandbox fault --error-rate` take it. The range
/// is the plan's to refuse (exit 2), like any other step it will not take.
fn parse_percent(s: &str) -> Result<u32, String> {
    s.strip_suffix('%')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("a percentage is a whole number such as 25 or 25%, not {s:?}"))
}

fn failure_json(env: Option<&str>, error: &str) -> serde_json::Value {
    json!({"env": env, "outcome": "failed", "error": error})
}

async fn run_inner(args: CtlArgs, env_name: &mut Option<String>) -> Result<i32, String> {
    let path = envfile::find(args.config.as_deref()).ok_or("no environments file: pass --config FILE, create ./signalbox.toml (see examples/signalbox.toml), or start `signalbox sandbox`, which writes one")?;
    let cfg = envfile::load(&path)?;
    let def = pick_env(&cfg, args.env.as_deref())?;
    *env_name = Some(def.name.clone());
    let env = Env::connect_in(def, &cfg.environments)?;
    let actor = args
        .actor
        .clone()
        .or(cfg.actor.clone())
        .unwrap_or_else(envfile::default_actor);
    let journal = Journal::new(
        cfg.audit_log
            .clone()
            .unwrap_or_else(envfile::default_audit_log),
    );

    let action = match args.command {
        CtlCommand::Status if env.backend.as_kube().is_some() => {
            let Some(k) = env.backend.as_kube() else {
                return Err("not a Kubernetes environment".into());
            };
            let v = k
                .view()
                .await
                .map_err(|e| format!("{}: {e}", env.def.name))?;
            print_kube_status(&env, &v, args.output);
            return Ok(EXIT_OK);
        }
        CtlCommand::Status => {
            let s = env
                .backend
                .status()
                .await
                .map_err(|e| format!("{}: {e}", env.def.name))?;
            let metrics = sample_metrics(&env, &s).await;
            print_status(&env, &s, &metrics, args.output);
            return Ok(EXIT_OK);
        }
        CtlCommand::Revisions => {
            let revs = env
                .backend
                .revisions()
                .await
                .map_err(|e| format!("{}: {e}", env.def.name))?;
            match args.output {
                Output::Json => println!("{}", json!({"env": env.def.name, "revisions": revs})),
                Output::Text => {
                    println!(
                        "{:>5}  {:<20}  {:<22}  CHANGE",
                        "REV", "TIME (UTC)", "ACTOR"
                    );
                    for r in revs {
                        println!(
                            "{:>5}  {:<20}  {:<22}  {}",
                            r.number,
                            r.time.format("%Y-%m-%d %H:%M:%S"),
                            trunc(&r.actor, 22),
                            r.description
                        );
                    }
                }
            }
            return Ok(EXIT_OK);
        }
        CtlCommand::Canary { route, percent } => Action::SetCanary { route, percent },
        CtlCommand::Flip { route, upstream } => Action::Flip {
            route,
            to: upstream,
        },
        CtlCommand::Flag { key, value } => match value.as_str() {
            "on" => Action::SetFlag {
                key,
                state: Some(FlagState::Enabled),
                variant: None,
            },
            "off" => Action::SetFlag {
                key,
                state: Some(FlagState::Disabled),
                variant: None,
            },
            v => Action::SetFlag {
                key,
                state: None,
                variant: Some(v.to_string()),
            },
        },
        CtlCommand::Rollback { to } => Action::Rollback { to },
        CtlCommand::Rollforward => Action::Rollforward,
        CtlCommand::RolloutUndo { deployment } => Action::RolloutUndo { deployment },
        CtlCommand::Restart { deployment } => Action::Restart { deployment },
    };

    let plan = match control::plan(&env, action, args.force.as_deref(), chrono::Utc::now()).await {
        Ok(p) => p,
        Err(PlanError::Invalid(m)) => {
            report_refusal(&env.def.name, &m, args.output);
            return Ok(EXIT_REFUSED);
        }
        Err(PlanError::Backend(e)) => return Err(format!("{}: {e}", env.def.name)),
    };
    if args.output == Output::Text {
        print_plan(&plan);
    }
    if plan.allowed() && !args.yes {
        match confirm(&plan) {
            Confirmed::Yes => {}
            Confirmed::No => {
                let r = control::not_applied(&plan, &journal, &actor, Outcome::Cancelled, None);
                finish(&plan, &r, args.output);
                return Ok(EXIT_REFUSED);
            }
            Confirmed::NoTerminal => {
                let why = format!(
                    "refusing to change {} without confirmation: there is no terminal to ask on; pass --yes",
                    plan.env
                );
                let r = control::not_applied(&plan, &journal, &actor, Outcome::Refused, Some(why));
                finish(&plan, &r, args.output);
                return Ok(EXIT_REFUSED);
            }
        }
    }
    let report = control::execute(&env, &plan, &journal, &actor).await;
    finish(&plan, &report, args.output);
    Ok(match report.outcome {
        Outcome::Applied => EXIT_OK,
        Outcome::Refused | Outcome::Cancelled => EXIT_REFUSED,
        Outcome::Conflict => EXIT_CONFLICT,
        Outcome::Unverified | Outcome::Failed => EXIT_ERROR,
    })
}

fn pick_env(cfg: &CockpitConfig, name: Option<&str>) -> Result<envfile::EnvDef, String> {
    let names = || {
        cfg.environments
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => cfg
            .env(n)
            .cloned()
            .ok_or_else(|| format!("no environment {n:?}; known: {}", names())),
        None if cfg.environments.len() == 1 => Ok(cfg.environments[0].clone()),
        None => Err(format!("say which environment with --env ({})", names())),
    }
}

enum Confirmed {
    Yes,
    No,
    NoTerminal,
}

fn confirm(plan: &Plan) -> Confirmed {
    if plan.confirm == ConfirmPolicy::None {
        return Confirmed::Yes;
    }
    if !std::io::stdin().is_terminal() {
        return Confirmed::NoTerminal;
    }
    let prompt = match plan.confirm {
        ConfirmPolicy::TypeName => {
            format!("Type the environment's name ({}) to confirm: ", plan.env)
        }
        _ => format!("Apply to {}? [y/N] ", plan.env),
    };
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return Confirmed::No;
    }
    let answer = line.trim();
    let ok = match plan.confirm {
        ConfirmPolicy::TypeName => answer == plan.env,
        _ => matches!(answer, "y" | "Y" | "yes" | "YES"),
    };
    if ok { Confirmed::Yes } else { Confirmed::No }
}

fn print_plan(plan: &Plan) {
    if plan.base_revision > 0 {
        println!("env:     {} (revision {})", plan.env, plan.base_revision);
    } else {
        println!("env:     {}", plan.env);
    }
    println!("action:  {}", plan.description);
    println!("before:  {}", plan.before);
    println!("after:   {}", plan.after);
    for (i, c) in plan.checks.iter().enumerate() {
        let label = if i == 0 { "checks: " } else { "        " };
        println!(
            "{label} {} {} — {}",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
}

fn finish(plan: &Plan, r: &Report, output: Output) {
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "env": plan.env,
                "action": plan.action,
                "description": plan.description,
                "before": plan.before,
                "after": plan.after,
                "checks": plan.checks,
                "base_revision": plan.base_revision,
                "outcome": r.outcome,
                "revision": r.revision,
                "error": r.error,
            })
        ),
        Output::Text => {
            let what = match r.outcome {
                Outcome::Applied => match r.revision {
                    Some(n) => format!("applied as revision {n}"),
                    None => "applied".into(),
                },
                Outcome::Refused => "refused".into(),
                Outcome::Cancelled => "cancelled".into(),
                Outcome::Conflict => "conflict".into(),
                Outcome::Unverified => "applied but not verified".into(),
                Outcome::Failed => "failed".into(),
            };
            match &r.error {
                Some(e) => println!("result:  {what}: {e}"),
                None => println!("result:  {what}"),
            }
        }
    }
}

fn report_refusal(env: &str, msg: &str, output: Output) {
    match output {
        Output::Json => println!(
            "{}",
            json!({"env": env, "outcome": "refused", "error": msg})
        ),
        Output::Text => println!("result:  refused: {msg}"),
    }
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The routes table. ROUTE, SPLIT and CANARY are sized to their content: the split is what
/// on-call runs status for, and a cut one hides the live side and the canary's share.
fn routes_table(routes: &[crate::domain::status::RouteStatus]) -> Vec<String> {
    let rows: Vec<[String; 5]> = routes
        .iter()
        .map(|r| {
            let split = r
                .split
                .keys()
                .map(|k| format!("{k} {}%", r.percent(k)))
                .collect::<Vec<_>>()
                .join(" / ");
            let paths = r
                .paths
                .iter()
                .chain(&r.exact_paths)
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            let filters = if r.filters.is_empty() {
                "-".into()
            } else {
                r.filters.join(",")
            };
            [
                r.name.clone(),
                trunc(&paths, 24),
                split,
                r.canary.clone().unwrap_or_else(|| "-".into()),
                filters,
            ]
        })
        .collect();
    let header = ["ROUTE", "PATHS", "SPLIT", "CANARY", "FILTERS"].map(String::from);
    let width = |i: usize, min: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(min)
    };
    let w = [width(0, 16), width(1, 24), width(2, 30), width(3, 10)];
    std::iter::once(&header)
        .chain(&rows)
        .map(|r| {
            format!(
                "{:<w0$} {:<w1$} {:<w2$} {:<w3$} {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            )
        })
        .collect()
}

/// Two samples a second apart: rates and ratios need a delta. A metrics failure is
/// reported beside the state, never instead of it.
async fn sample_metrics(env: &Env, s: &GatewayStatus) -> Result<MetricsSample, String> {
    let mut roles = CanaryRoles::default();
    for r in &s.routes {
        if let Some((stable, canary)) = r.canary_pair() {
            roles.set(r.name.clone(), stable, canary);
        }
    }
    let mut source = MetricsSource::from_config(&env.def.name, &env.def.metrics_source())
        .map_err(|e| e.to_string())?;
    source.sample(&roles).await.map_err(|e| e.to_string())?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    source.sample(&roles).await.map_err(|e| e.to_string())
}

fn signal_text(s: &Signal, scale: f64, unit: &str) -> String {
    match s {
        Signal::Value { value } => format!("{:.1}{unit}", value * scale),
        Signal::NoData { .. } => "-".into(),
        Signal::Missing { .. } => "n/a".into(),
        Signal::Error { .. } => "error".into(),
    }
}

fn print_status(
    env: &Env,
    s: &GatewayStatus,
    metrics: &Result<MetricsSample, String>,
    output: Output,
) {
    if output == Output::Json {
        let m = match metrics {
            Ok(m) => json!(m),
            Err(e) => json!({"error": e}),
        };
        println!(
            "{}",
            json!({"env": env.def.name, "admin_url": env.backend.address(), "state": s, "metrics": m})
        );
        return;
    }
    println!(
        "{}  revision {}  config {}  {}",
        env.def.name,
        s.revision,
        &s.config_hash[..12.min(s.config_hash.len())],
        env.backend.address()
    );
    println!();
    for line in routes_table(&s.routes) {
        println!("{line}");
    }
    println!();
    println!("{:<24} {:<8} TARGETS", "UPSTREAM", "HEALTHY");
    for u in &s.upstreams {
        let targets = u
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{}{}",
                    t.addr,
                    if t.ejected {
                        " (ejected)"
                    } else if !t.healthy {
                        " (down)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<24} {:<8} {}",
            trunc(&u.name, 24),
            format!("{}/{}", u.healthy_targets(), u.targets.len()),
            targets
        );
    }
    println!();
    match metrics {
        Ok(m) => {
            println!(
                "{:<16} {:<18} {:>8} {:>7} {:>7} {:>9}  VERDICT (canary vs stable)",
                "ROUTE", "UPSTREAM", "REQ/S", "5XX", "4XX", "P95"
            );
            for r in m.routes.iter().filter(|r| !r.route.is_empty()) {
                let verdict = match r.comparison.as_ref().map(|c| &c.verdict) {
                    Some(Verdict::Pass) => "pass".to_string(),
                    Some(Verdict::Fail { reasons }) => format!("FAIL: {}", reasons.join("; ")),
                    Some(Verdict::NotEnoughData { reason }) => {
                        format!("not enough data ({reason})")
                    }
                    None => String::new(),
                };
                for (i, u) in r
                    .upstreams
                    .iter()
                    .filter(|u| !u.upstream.is_empty())
                    .enumerate()
                {
                    let sig = &u.signals;
                    println!(
                        "{:<16} {:<18} {:>8} {:>7} {:>7} {:>9}  {}",
                        if i == 0 {
                            trunc(&r.route, 16)
                        } else {
                            String::new()
                        },
                        trunc(&u.upstream, 18),
                        signal_text(&sig.request_rate, 1.0, ""),
                        signal_text(&sig.error_ratio_5xx, 100.0, "%"),
                        signal_text(&sig.error_ratio_4xx, 100.0, "%"),
                        signal_text(&sig.latency_p95, 1000.0, "ms"),
                        if i == 0 { verdict.as_str() } else { "" }
                    );
                }
            }
            println!("(over {:.1}s, from {})", m.window_secs, m.source);
        }
        Err(e) => println!("metrics: unavailable: {e}"),
    }
    if !s.flags.is_empty() {
        println!();
        println!("{:<24} {:<9} {:<12} TARGETING", "FLAG", "STATE", "DEFAULT");
        for f in &s.flags {
            println!(
                "{:<24} {:<9} {:<12} {}",
                trunc(&f.key, 24),
                if f.state == FlagState::Enabled {
                    "on"
                } else {
                    "off"
                },
                f.default_variant.as_deref().unwrap_or("-"),
                if f.has_targeting { "yes" } else { "no" }
            );
        }
    }
}

fn print_kube_status(env: &Env, v: &crate::domain::kube::KubeView, output: Output) {
    if output == Output::Json {
        println!(
            "{}",
            json!({"env": env.def.name, "address": env.backend.address(), "kubernetes": v, "state": v.to_gateway_status()})
        );
        return;
    }
    println!("{}  {}", env.def.name, env.backend.address());
    println!();
    println!(
        "{:<22} {:<8} {:<11} {:<13} {:>4}  IMAGES",
        "DEPLOYMENT", "TRACK", "READY/AVAIL", "ROLLOUT", "REV"
    );
    for d in &v.deployments {
        let r = d.replicas;
        println!(
            "{:<22} {:<8} {:<11} {:<13} {:>4}  {}",
            trunc(&d.name, 22),
            d.track.as_deref().unwrap_or("-"),
            format!("{}/{}/{}", r.ready, r.available, r.desired),
            d.rollout.label(),
            d.revision.map_or("-".to_string(), |n| n.to_string()),
            d.images_text()
        );
    }
    println!();
    println!("{:<22} {:<14} SELECTOR", "SERVICE", "LIVE");
    for s in &v.services {
        let sel = s
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let live = match &s.blue_green {
            Some(bg) => format!(
                "{} (of {})",
                bg.live,
                bg.sides.keys().cloned().collect::<Vec<_>>().join("/")
            ),
            None => "-".into(),
        };
        println!(
            "{:<22} {:<14} {}",
            trunc(&s.name, 22),
            trunc(&live, 14),
            sel
        );
    }
    println!();
    println!("{:<22} {:<24} SPLIT", "HTTPROUTE", "PATHS");
    for r in &v.routes {
        for (i, rule) in r.rules.iter().enumerate() {
            let paths = rule
                .path_prefixes
                .iter()
                .chain(&rule.exact_paths)
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            println!(
                "{:<22} {:<24} {}",
                trunc(&r.rule_name(i), 22),
                trunc(&paths, 24),
                crate::domain::action::weights_text(&rule.split())
            );
        }
    }
    println!();
    match &v.flags {
        None => println!("flags: no ConfigMap {:?}", env.def.kube.flags_config_map),
        Some(f) => match &f.flags {
            Err(e) => println!("flags: configmap {:?}: {e}", f.config_map),
            Ok(flags) => {
                println!(
                    "{:<24} {:<9} DEFAULT   (configmap {}, key {})",
                    "FLAG", "STATE", f.config_map, f.key
                );
                for fl in flags {
                    println!(
                        "{:<24} {:<9} {}",
                        trunc(&fl.key, 24),
                        if fl.state == FlagState::Enabled {
                            "on"
                        } else {
                            "off"
                        },
                        fl.default_variant.as_deref().unwrap_or("-")
                    );
                }
            }
        },
    }
    if !v.secrets.is_empty() {
        println!();
        println!("{:<24} {:<20} {:<22} PROBLEMS", "SECRET", "CREATED", "KEYS");
        for s in &v.secrets {
            let problems = if !s.exists {
                "MISSING".to_string()
            } else if s.missing_keys.is_empty() {
                "-".to_string()
            } else {
                format!("missing keys: {}", s.missing_keys.join(", "))
            };
            println!(
                "{:<24} {:<20} {:<22} {}",
                trunc(&s.name, 24),
                s.created
                    .map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                trunc(&s.keys.join(","), 22),
                problems
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::status::RouteStatus;

    fn route(name: &str, split: &[(&str, u32)], canary: Option<&str>) -> RouteStatus {
        RouteStatus {
            name: name.into(),
            paths: vec!["/api/users".into()],
            exact_paths: vec![],
            methods: vec![],
            hosts: vec![],
            split: split.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
            canary_by_header: None,
            canary: canary.map(String::from),
            sticky: None,
            filters: vec!["key_auth".into()],
            flag: None,
        }
    }

    #[test]
    fn status_never_cuts_a_split_and_keeps_the_columns_aligned() {
        let routes = [
            route("users", &[("users-blue", 0), ("users-green", 100)], None),
            route(
                "payments-international",
                &[("payments-stable-v1", 95), ("payments-canary-v2", 5)],
                Some("payments-canary-v2"),
            ),
        ];
        let lines = routes_table(&routes);
        assert!(
            lines[1].contains("users-blue 0% / users-green 100%"),
            "{lines:#?}"
        );
        assert!(
            lines[2].contains("payments-canary-v2 5% / payments-stable-v1 95%"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("payments-international "),
            "{lines:#?}"
        );
        assert!(lines.iter().all(|l| !l.contains('…')), "{lines:#?}");
        // Every column starts where its header does, and FILTERS (last) is whole.
        for col in ["SPLIT", "CANARY", "FILTERS"] {
            let at = lines[0].find(col).unwrap();
            for l in &lines[1..] {
                assert_eq!(l.as_bytes()[at - 1], b' ', "{col}: {lines:#?}");
                assert_ne!(l.as_bytes()[at], b' ', "{col}: {lines:#?}");
            }
        }
        assert!(lines[2].ends_with(" key_auth"), "{lines:#?}");
    }
}
