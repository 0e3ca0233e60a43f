//! What a walkthrough leaves behind, as pure text: the Markdown release note and the
//! Slack-compatible webhook message.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::machine::{GateStatus, StepStatus, WalkOutcome, WalkState, WalkStatus};
use super::runbook::RollbackPolicy;

/// How to reach the environments again by hand: the `--config` the run used, if any.
#[derive(Clone, Debug, Default)]
pub struct HandCommands {
    pub config: Option<String>,
}

impl HandCommands {
    fn ctl(&self, env: &str) -> String {
        match &self.config {
            Some(c) => format!("signalbox ctl --config {} --env {env}", shell_word(c)),
            None => format!("signalbox ctl --env {env}"),
        }
    }

    /// The exact commands that undo the release, most recent environment first, as shell
    /// lines: per environment the runbook's own rollback where `ctl` has it, and (as the
    /// alternative, labelled so) the revision the environment had before the walkthrough.
    pub fn rollback(&self, st: &WalkState, policy: &RollbackPolicy) -> Vec<String> {
        let mut out = Vec::new();
        for env in st.changed_envs() {
            let ctl = self.ctl(&env);
            let own = match policy {
                RollbackPolicy::Canary(p) => Some(format!("{ctl} canary {} {p}", st.route)),
                RollbackPolicy::Flip(to) => Some(format!("{ctl} flip {} {to}", st.route)),
                _ => None,
            };
            let revision = st.start_revisions.get(&env);
            if let Some(cmd) = &own {
                out.push(format!("# {env}: the runbook's rollback"));
                out.push(cmd.clone());
            }
            if let Some(rev) = revision {
                out.push(if own.is_some() {
                    format!("# or, instead: {env} exactly as before the walkthrough (revision {rev}), undoing any other change since")
                } else {
                    format!("# {env}: back to revision {rev}, as before the walkthrough")
                });
                out.push(format!("{ctl} rollback --to {rev}"));
            }
        }
        out
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn took(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => {
            let ms = (b - a).num_milliseconds().max(0);
            if ms < 10_000 {
                format!("{:.1}s", ms as f64 / 1000.0)
            } else {
                humantime::format_duration(std::time::Duration::from_secs((ms / 1000) as u64))
                    .to_string()
            }
        }
        _ => "-".into(),
    }
}

pub fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "not run",
        StepStatus::Running => "running",
        StepStatus::Done => "done",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "skipped",
        StepStatus::Paused => "paused",
        StepStatus::Interrupted => "interrupted",
    }
}

/// The release note: each step with its timing and gate values, the revisions, the
/// outcome, and the commands that roll it back by hand.
pub fn release_note(st: &WalkState, policy: &RollbackPolicy, hand: &HandCommands) -> String {
    let mut o = String::new();
    let outcome = match &st.status {
        WalkStatus::Finished { outcome } => outcome.summary(),
        WalkStatus::AwaitingOperator { reason, .. } => format!("paused: {reason}"),
        WalkStatus::RollingBack { reason, .. } => format!("rolling back: {reason}"),
        WalkStatus::Running => "in progress".into(),
    };
    let mut envs: Vec<&str> = Vec::new();
    for s in &st.steps {
        if !envs.contains(&s.env.as_str()) {
            envs.push(&s.env);
        }
    }
    let _ = writeln!(o, "# Release note: {}\n", st.runbook);
    let _ = writeln!(o, "- **Outcome:** {outcome}");
    let _ = writeln!(o, "- **Environments:** {}", envs.join(" → "));
    let _ = writeln!(o, "- **Route:** {}", st.route);
    let _ = writeln!(o, "- **Operator:** {}", st.actor);
    let _ = writeln!(
        o,
        "- **Started:** {} UTC",
        st.started_at.format("%Y-%m-%d %H:%M:%S")
    );
    if let Some(f) = st.finished_at {
        let _ = writeln!(
            o,
            "- **Finished:** {} UTC (took {})",
            f.format("%Y-%m-%d %H:%M:%S"),
            took(Some(st.started_at), Some(f))
        );
    }
    let _ = writeln!(
        o,
        "- **Runbook:** {} (sha256 {})",
        st.runbook_path,
        &st.runbook_sha256[..12.min(st.runbook_sha256.len())]
    );
    let _ = writeln!(o, "- **Walkthrough id:** {}\n", st.id);

    let _ = writeln!(o, "## Steps\n");
    let _ = writeln!(
        o,
        "| # | Env | Step | Result | Started (UTC) | Took | Revision | Details |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for (i, s) in st.steps.iter().enumerate() {
        let mut detail = s.detail.clone().unwrap_or_default();
        if let Some(r) = &s.skip_reason {
            detail = format!("skipped: {r}");
        }
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            cell(&s.env),
            cell(&s.title),
            status_word(s.status),
            s.started_at
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            took(s.started_at, s.finished_at),
            match (s.base_revision, s.revision) {
                (Some(b), Some(r)) => format!("{b} → {r}"),
                (None, Some(r)) => r.to_string(),
                _ => "-".into(),
            },
            cell(&detail)
        );
    }
    let gated: Vec<_> = st
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.gates.is_empty())
        .collect();
    if !gated.is_empty() {
        let _ = writeln!(o, "\n## Gates (last measurement)\n");
        let _ = writeln!(
            o,
            "| # | Env | Gate | Value | Threshold | Result | Measurements |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for (i, s) in gated {
            let m = s.measurements;
            for g in &s.gates {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} passed, {} failed, {} without enough data |",
                    i + 1,
                    cell(&s.env),
                    cell(&g.name),
                    cell(g.value.as_deref().unwrap_or("-")),
                    cell(&g.threshold),
                    match g.status {
                        GateStatus::Pass => "pass".to_string(),
                        GateStatus::Fail => format!(
                            "FAIL{}",
                            g.detail
                                .as_deref()
                                .map(|d| format!(": {}", cell(d)))
                                .unwrap_or_default()
                        ),
                        GateStatus::NoData => format!(
                            "not enough data{}",
                            g.detail
                                .as_deref()
                                .map(|d| format!(": {}", cell(d)))
                                .unwrap_or_default()
                        ),
                    },
                    m.passed,
                    m.failed,
                    m.inconclusive
                );
            }
        }
    }

    let _ = writeln!(o, "\n## Revisions\n");
    if st.start_revisions.is_empty() {
        let _ = writeln!(o, "No environment was changed.");
    }
    for env in &envs {
        let Some(start) = st.start_revisions.get(*env) else {
            continue;
        };
        let made: Vec<String> = st
            .steps
            .iter()
            .filter(|s| s.env == *env && s.mutating)
            .filter_map(|s| s.revision.map(|r| format!("{r} ({})", s.title)))
            .collect();
        let _ = writeln!(
            o,
            "- **{env}:** before the walkthrough {start}; changes {}",
            if made.is_empty() {
                "none".into()
            } else {
                made.join(", ")
            }
        );
    }
    for r in &st.rollback {
        let _ = writeln!(
            o,
            "- **{} rollback:** {}{}",
            r.env,
            r.description,
            match (&r.revision, &r.error) {
                (_, Some(e)) => format!(" — FAILED: {e}"),
                (Some(n), None) => format!(" → revision {n}"),
                (None, None) => String::new(),
            }
        );
    }

    if !st.log.is_empty() {
        let _ = writeln!(o, "\n## Operator log\n");
        for l in &st.log {
            let _ = writeln!(o, "- {} {}", l.at.format("%H:%M:%S"), l.text);
        }
    }

    let cmds = hand.rollback(st, policy);
    let _ = writeln!(o, "\n## Rolling back by hand\n");
    if cmds.is_empty() {
        let _ = writeln!(o, "Nothing to roll back: no environment was changed.");
    } else {
        let done = matches!(
            &st.status,
            WalkStatus::Finished {
                outcome: WalkOutcome::RolledBack { .. }
            }
        );
        if done {
            let _ = writeln!(
                o,
                "The walkthrough already rolled back. These commands put each environment back to where it was before, should anything have changed since:\n"
            );
        } else {
            let _ = writeln!(
                o,
                "To undo this release, run (most recent environment first):\n"
            );
        }
        let _ = writeln!(o, "```sh");
        for c in cmds {
            let _ = writeln!(o, "{c}");
        }
        let _ = writeln!(o, "```");
    }
    o
}

/// A Slack-compatible incoming-webhook body: `text` for any receiver, `blocks` for Slack.
pub fn webhook_payload(st: &WalkState, headline: &str, message: Option<&str>) -> serde_json::Value {
    let mut lines = Vec::new();
    for (i, s) in st.steps.iter().enumerate() {
        let mark = match s.status {
            StepStatus::Done => "✓",
            StepStatus::Failed => "✗",
            StepStatus::Skipped => "↷",
            StepStatus::Paused | StepStatus::Interrupted => "‖",
            StepStatus::Running => "…",
            StepStatus::Pending => "·",
        };
        lines.push(format!("{mark} {}. [{}] {}", i + 1, s.env, s.title));
    }
    let mut text = format!("*{}* — {headline}", st.runbook);
    if let Some(m) = message {
        text.push_str(&format!("\n{m}"));
    }
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("route {} · by {} · walkthrough {}", st.route, st.actor, st.id)}]}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::machine::{Cause, StepResult};
    use crate::walk::runbook::parse_str;

    #[test]
    fn the_note_lists_steps_revisions_outcome_and_hand_commands() {
        let rb = parse_str(
            "name: pay | canary\nenv: stage\nroute: payments\nrollback: { canary: 0 }\nsteps:\n  - set_weight: { percent: 10 }\n  - analyze: { duration: 2s, max_error_ratio: 0.01 }\n",
            "r.yaml",
        )
        .unwrap();
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let mut st = WalkState::new(
            "w1".into(),
            &rb,
            "r.yaml",
            "abcdef0123456789",
            "ci@runner",
            &rb.expand("stage"),
            t(0),
        );
        st.start_step(0, t(1), None);
        st.before_apply(0, 4);
        st.finish_step(
            0,
            StepResult::Done {
                detail: "applied".into(),
                revision: Some(5),
            },
            t(2),
        );
        st.start_step(1, t(2), Some(t(4)));
        st.finish_step(
            1,
            StepResult::Failed {
                cause: Cause::Gate,
                reason: "error ratio 40%".into(),
            },
            t(4),
        );
        st.finish(
            WalkOutcome::RolledBack {
                cause: Cause::Gate,
                reason: "error ratio 40%".into(),
            },
            t(5),
        );
        let hand = HandCommands {
            config: Some("/tmp/my env/signalbox.toml".into()),
        };
        let note = release_note(&st, &rb.rollback, &hand);
        assert!(note.contains("# Release note: pay | canary"), "{note}");
        assert!(note.contains("| 1 | stage | set payments canary to 10% | done | 08:00:01 | 1.0s | 4 → 5 | applied |"), "{note}");
        assert!(
            note.contains("| 2 | stage | analyze payments for 2s | FAILED |"),
            "{note}"
        );
        assert!(
            note.contains("**Outcome:** rolled back: error ratio 40%"),
            "{note}"
        );
        assert!(
            note.contains("before the walkthrough 4; changes 5 (set payments canary to 10%)"),
            "{note}"
        );
        assert!(
            note.contains(
                "signalbox ctl --config '/tmp/my env/signalbox.toml' --env stage rollback --to 4"
            ),
            "{note}"
        );
        assert!(note.contains("--env stage canary payments 0"), "{note}");

        let p = webhook_payload(&st, "rolled back by a gate", Some("error ratio 40%"));
        assert!(
            p["text"]
                .as_str()
                .unwrap()
                .contains("rolled back by a gate")
        );
        assert!(
            p["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("✗ 2. [stage] analyze")
        );
    }
}
