//! The walkthrough view: the runbook's steps with the current one highlighted, a tick or a
//! cross for each finished step, the gate values beside their thresholds, and a countdown
//! for waits, analyses and timed pauses. A pure function of the saved walk state and the
//! time, like every other view.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::tui::theme::Theme;
use crate::walk::machine::{
    GateStatus, StepRecord, StepStatus, WalkOutcome, WalkState, WalkStatus,
};

/// The symbol and style of a step's status; the symbol alone carries the meaning.
fn mark(s: StepStatus, theme: &Theme) -> (&'static str, Style) {
    match s {
        StepStatus::Done => ("✓", theme.ok),
        StepStatus::Failed => ("✗", theme.bad),
        StepStatus::Skipped => ("↷", theme.warn),
        StepStatus::Running => ("▶", theme.accent),
        StepStatus::Paused => ("‖", theme.warn),
        StepStatus::Interrupted => ("!", theme.bad),
        StepStatus::Pending => ("·", theme.dim),
    }
}

fn countdown(deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<String> {
    let left = (deadline? - now).num_seconds().max(0);
    Some(if left >= 3600 {
        format!("{}h{:02}m left", left / 3600, (left % 3600) / 60)
    } else if left >= 60 {
        format!("{}m{:02}s left", left / 60, left % 60)
    } else {
        format!("{left}s left")
    })
}

fn took(s: &StepRecord) -> Option<String> {
    let ms = (s.finished_at? - s.started_at?).num_milliseconds().max(0);
    Some(if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    })
}

fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        format!("{s:<w$}")
    } else if w == 0 {
        String::new()
    } else {
        format!("{}…", s.chars().take(w - 1).collect::<String>())
    }
}

/// Where the walk stands, in words, and its style.
fn headline(st: &WalkState, theme: &Theme) -> (String, Style) {
    match &st.status {
        WalkStatus::Running => (format!("step {} running", st.progress()), theme.accent),
        WalkStatus::AwaitingOperator { reason, .. } => (
            format!("‖ paused: {reason} — c continue · s skip · r retry · a abort"),
            theme.warn,
        ),
        WalkStatus::RollingBack { reason, .. } => (format!("✗ rolling back: {reason}"), theme.bad),
        WalkStatus::Finished {
            outcome: WalkOutcome::Released,
        } => ("✓ released".into(), theme.ok),
        WalkStatus::Finished { outcome } => (format!("✗ {}", outcome.summary()), theme.bad),
    }
}

pub fn draw(f: &mut Frame, area: Rect, st: &WalkState, now: DateTime<Utc>, theme: &Theme) {
    let envs = {
        let mut v: Vec<&str> = Vec::new();
        for s in &st.steps {
            if !v.contains(&s.env.as_str()) {
                v.push(&s.env);
            }
        }
        v.join(" → ")
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.dim)
        .title(Span::styled(
            format!(" walkthrough: {} · {envs} ", st.runbook),
            theme.title,
        ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height < 3 || inner.width < 20 {
        return;
    }
    // The gates of the current step, else of the last step that had any.
    let gated = st
        .steps
        .get(st.cursor)
        .filter(|s| !s.gates.is_empty())
        .or_else(|| st.steps.iter().rev().find(|s| !s.gates.is_empty()));
    let gate_rows = gated.map_or(0, |s| s.gates.len() as u16 + 2);
    let [list, gates, status] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(gate_rows.min(inner.height.saturating_sub(3))),
        Constraint::Length(2),
    ])
    .areas(inner);

    // Steps, scrolled so the current one stays in view.
    let h = list.height as usize;
    let first = st
        .cursor
        .saturating_sub(h / 2)
        .min(st.steps.len().saturating_sub(h));
    let w = list.width as usize;
    let mut lines = Vec::new();
    for (i, s) in st.steps.iter().enumerate().skip(first).take(h) {
        let (sym, style) = mark(s.status, theme);
        let current = i == st.cursor && !st.is_finished();
        let right = if current {
            countdown(s.deadline, now).or_else(|| took(s))
        } else {
            took(s)
        }
        .unwrap_or_default();
        let rev = match (s.base_revision, s.revision) {
            (Some(b), Some(r)) => format!("rev {b}→{r}"),
            (None, Some(r)) => format!("rev {r}"),
            _ => String::new(),
        };
        let env = format!("{:<6}", fit(&s.env, 6));
        let fixed = 2 + 4 + 7 + 11 + 13;
        let title = fit(&s.title, w.saturating_sub(fixed));
        let text_style = if current { theme.selected } else { theme.base };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{sym} "),
                if current { theme.selected } else { style },
            ),
            Span::styled(format!("{:>2}. ", i + 1), text_style),
            Span::styled(
                format!("{env} "),
                if current { theme.selected } else { theme.dim },
            ),
            Span::styled(title, text_style),
            Span::styled(
                format!(" {:>10}", fit(&rev, 10)),
                if current { theme.selected } else { theme.dim },
            ),
            Span::styled(format!(" {right:>12}"), text_style),
        ]));
    }
    f.render_widget(Paragraph::new(lines), list);

    if let Some(s) = gated
        && gates.height > 0
    {
        let mut g = Vec::new();
        let gw = gates.width as usize;
        for v in &s.gates {
            let (sym, style) = match v.status {
                GateStatus::Pass => ("✓", theme.ok),
                GateStatus::Fail => ("✗", theme.bad),
                GateStatus::NoData => ("?", theme.warn),
            };
            let value = v.value.clone().unwrap_or_else(|| "-".into());
            let note = match (v.status, &v.detail) {
                (GateStatus::Pass, _) | (_, None) => String::new(),
                (GateStatus::NoData, Some(d)) => format!("not enough data: {d}"),
                (GateStatus::Fail, Some(d)) => d.clone(),
            };
            let head = format!(
                "{sym} {:<12} {:>9}  {:<26} ",
                fit(&v.name, 12),
                fit(&value, 9),
                fit(&v.threshold, 26)
            );
            let rest = gw.saturating_sub(head.chars().count());
            g.push(Line::from(vec![
                Span::styled(head, style),
                Span::styled(fit(&note, rest), theme.dim),
            ]));
        }
        let m = s.measurements;
        g.push(Line::from(Span::styled(
            format!(
                "measurements: {} passed, {} failed, {} without enough data",
                m.passed, m.failed, m.inconclusive
            ),
            theme.dim,
        )));
        let block = Block::default()
            .borders(Borders::TOP)
            .border_style(theme.dim)
            .title(Span::styled(" gates ", theme.title));
        f.render_widget(Paragraph::new(g).block(block), gates);
    }

    let (text, style) = headline(st, theme);
    f.render_widget(
        Paragraph::new(Span::styled(text, style)).wrap(Wrap { trim: true }),
        status,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::walk::machine::{Cause, GateValue, Measurement, PauseKind, StepResult};
    use crate::walk::runbook::parse_str;

    const RB: &str = "\
name: payments 2.4.0 canary
env: stage
route: payments
rollback: { canary: 0 }
steps:
  - check: { healthy: [payments-v1, payments-v2] }
  - set_weight: { percent: 25 }
  - analyze: { duration: 2m, interval: 10s, max_error_ratio: 0.05, max_p95: 800ms, compare: true }
  - pause: { message: look at the dashboards, timeout: 15m }
  - set_weight: { percent: 50 }
  - analyze: { duration: 2m, max_error_ratio: 0.05, compare: true }
  - set_weight: { percent: 100 }
  - notify: { message: payments 2.4.0 is live, webhook: { env: SLACK_WEBHOOK } }
";

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn walk_in_analysis() -> WalkState {
        let rb = parse_str(RB, "rb.yaml").unwrap();
        let mut st = WalkState::new(
            "w1".into(),
            &rb,
            "rb.yaml",
            "sha",
            "alice@bastion",
            &rb.expand("stage"),
            t(0),
        );
        st.start_step(0, t(0), None);
        st.finish_step(
            0,
            StepResult::Done {
                detail: "ok".into(),
                revision: None,
            },
            t(1),
        );
        st.start_step(1, t(1), None);
        st.before_apply(1, 6);
        st.finish_step(
            1,
            StepResult::Done {
                detail: "ok".into(),
                revision: Some(7),
            },
            t(2),
        );
        st.start_step(2, t(2), Some(t(122)));
        let m = Measurement {
            gates: vec![
                GateValue {
                    name: "error ratio".into(),
                    value: Some("0.42%".into()),
                    threshold: "≤ 5.00%".into(),
                    status: GateStatus::Pass,
                    detail: None,
                },
                GateValue {
                    name: "p95".into(),
                    value: Some("112ms".into()),
                    threshold: "≤ 800ms".into(),
                    status: GateStatus::Pass,
                    detail: None,
                },
                GateValue {
                    name: "vs stable".into(),
                    value: None,
                    threshold: "not worse than payments-v1".into(),
                    status: GateStatus::NoData,
                    detail: Some("payments-v2 had 12 requests; each side needs 20".into()),
                },
            ],
        };
        st.record_measurement(2, &m);
        st.record_measurement(2, &m);
        st
    }

    fn render(st: &WalkState, now: DateTime<Utc>, theme: &Theme) -> Terminal<TestBackend> {
        let mut term = Terminal::new(TestBackend::new(80, 24)).expect("backend");
        term.draw(|f| draw(f, f.area(), st, now, theme))
            .expect("draw");
        term
    }

    #[test]
    fn analysis_in_progress_80x24() {
        let st = walk_in_analysis();
        let term = render(&st, t(50), &Theme::dark());
        insta::assert_snapshot!(term.backend());
        let text = format!("{}", term.backend());
        assert!(text.contains("1m12s left"), "the countdown: {text}");
        // The current step is drawn in the selection style.
        let buf = term.backend().buffer();
        let row = (0..24)
            .find(|y| {
                (0..80)
                    .map(|x| buf[(x, *y)].symbol())
                    .collect::<String>()
                    .contains("analyze payments")
            })
            .expect("the analysis row");
        assert_eq!(buf[(5, row)].style().bg, Theme::dark().selected.bg);
    }

    #[test]
    fn every_size_draws_without_panicking() {
        let st = walk_in_analysis();
        for w in [1u16, 5, 19, 20, 21, 40, 80, 200] {
            for h in [1u16, 2, 3, 4, 6, 10, 24, 60] {
                let mut term = Terminal::new(TestBackend::new(w, h)).expect("backend");
                term.draw(|f| draw(f, f.area(), &st, t(50), &Theme::dark()))
                    .expect("draw");
            }
        }
    }

    #[test]
    fn rolled_back_by_a_gate_80x24() {
        let mut st = walk_in_analysis();
        let fail = Measurement {
            gates: vec![GateValue {
                name: "error ratio".into(),
                value: Some("48.00%".into()),
                threshold: "≤ 5.00%".into(),
                status: GateStatus::Fail,
                detail: Some("error ratio 48.00% is above 5.00%".into()),
            }],
        };
        st.record_measurement(2, &fail);
        st.finish_step(
            2,
            StepResult::Failed {
                cause: Cause::Gate,
                reason: "error ratio 48.00%".into(),
            },
            t(40),
        );
        st.finish(
            WalkOutcome::RolledBack {
                cause: Cause::Gate,
                reason: "step 3 failed: error ratio 48.00%".into(),
            },
            t(41),
        );
        let term = render(&st, t(50), &Theme::monochrome());
        insta::assert_snapshot!(term.backend());
    }

    #[test]
    fn paused_with_a_countdown_80x24() {
        let mut st = walk_in_analysis();
        st.finish_step(
            2,
            StepResult::Done {
                detail: "gates passed".into(),
                revision: None,
            },
            t(122),
        );
        st.start_step(3, t(122), Some(t(122 + 900)));
        st.finish_step(
            3,
            StepResult::Paused {
                reason: "look at the dashboards".into(),
                kind: PauseKind::Approval,
            },
            t(122),
        );
        let term = render(&st, t(200), &Theme::dark());
        insta::assert_snapshot!(term.backend());
        assert!(format!("{}", term.backend()).contains("13m42s left"));
    }
}
