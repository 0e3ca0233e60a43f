//! The walkthrough view: the runbook's steps with the current one highlighted, a tick or a
//! cross for each finished step, the gate values beside their thresholds, and a countdown
//! for waits, analyses and timed pauses. A pure function of the saved walk state and the
//! time, like every other view.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::{live, panels};
use crate::tui::app::{App, WalkEnd, WalkPrompt, WalkUi};
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

/// Where the walk stands, in words, and its style. `actions`: the keys that answer a pause.
fn headline(st: &WalkState, actions: &str, theme: &Theme) -> (String, Style) {
    match &st.status {
        WalkStatus::Running => (format!("step {} running", st.progress()), theme.accent),
        WalkStatus::AwaitingOperator { reason, .. } if actions.is_empty() => {
            (format!("‖ paused: {reason}"), theme.warn)
        }
        WalkStatus::AwaitingOperator { reason, .. } => {
            (format!("‖ paused: {reason} — {actions}"), theme.warn)
        }
        WalkStatus::RollingBack { reason, .. } => (format!("✗ rolling back: {reason}"), theme.bad),
        WalkStatus::Finished {
            outcome: WalkOutcome::Released,
        } => ("✓ released".into(), theme.ok),
        WalkStatus::Finished { outcome } => (format!("✗ {}", outcome.summary()), theme.bad),
    }
}

/// The keys of the default keymap (c continue · s skip · e retry · A abort).
pub fn draw(f: &mut Frame, area: Rect, st: &WalkState, now: DateTime<Utc>, theme: &Theme) {
    let map = crate::tui::keymap::Keymap::default();
    let label = |a| map.binding(a).map_or(String::new(), |b| b.label.clone());
    use crate::tui::keymap::KeyAction as K;
    let actions = format!(
        "{} continue · {} skip · {} retry · {} abort",
        label(K::WalkContinue),
        label(K::WalkSkip),
        label(K::WalkRetry),
        label(K::WalkAbort)
    );
    draw_with(f, area, st, now, &actions, theme);
}

/// `actions`: how to answer a pause, from the keymap in force.
pub fn draw_with(
    f: &mut Frame,
    area: Rect,
    st: &WalkState,
    now: DateTime<Utc>,
    actions: &str,
    theme: &Theme,
) {
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
        // A deadline that has passed (an analysis that ended inconclusive) counts nothing.
        let ticking = s
            .deadline
            .filter(|d| *d > now || s.status == StepStatus::Running);
        let right = if current {
            countdown(ticking, now).or_else(|| took(s))
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

    let (text, style) = headline(st, actions, theme);
    f.render_widget(
        Paragraph::new(Span::styled(text, style)).wrap(Wrap { trim: true }),
        status,
    );
}

/// The cockpit's walkthrough view: the walk beside the live panel of the environment and
/// route it is changing (below it when there is height, else a hint), and its progress log
/// on wide screens.
pub fn cockpit(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(w) = &app.walk else {
        let text = "no walkthrough yet: start one with :walk RUNBOOK [--env NAME] (Tab completes paths), or run `signalbox walk RUNBOOK` in a terminal";
        panels::message(f, area, theme, text);
        return;
    };
    let Some(st) = &w.state else {
        match &w.end {
            Some(WalkEnd::Error(e)) => {
                let text = vec![
                    Line::from(Span::styled(
                        format!("✗ the walkthrough {} did not start", w.runbook),
                        theme.bad,
                    )),
                    Line::raw(""),
                    Line::from(Span::styled(e.clone(), theme.base)),
                ];
                f.render_widget(
                    Paragraph::new(text)
                        .block(
                            Block::default()
                                .borders(Borders::ALL)
                                .border_style(theme.bad)
                                .title(Span::styled(" walkthrough ", theme.title)),
                        )
                        .wrap(Wrap { trim: false }),
                    area,
                );
            }
            _ => panels::message(
                f,
                area,
                theme,
                &format!("starting {}: connecting to its environments …", w.runbook),
            ),
        }
        return;
    };
    let actions = app.walk_actions_text();
    let env = w
        .live_env()
        .and_then(|n| app.envs.iter().find(|e| e.def.name == n));
    let live = |f: &mut Frame, r: Rect| match env {
        Some(e) => {
            let age = live::age_title(e, app.now);
            live::draw_route(f, r, e, Some(&st.route), &age, theme);
        }
        None => panels::message(
            f,
            r,
            theme,
            "live: the walk's environment is not in this cockpit's environments file",
        ),
    };
    if area.width >= super::WIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(58), Constraint::Min(30)]).areas(area);
        draw_with(f, left, st, app.now, &actions, theme);
        let log_h = (w.lines.len() as u16 + 2).clamp(3, 10);
        let ups_h = env
            .and_then(|e| e.status.as_ref())
            .map_or(0, |s| s.upstreams.len() as u16 + 2)
            .min(right.height / 4);
        let [top, ups, bottom] = Layout::vertical([
            Constraint::Min(6),
            Constraint::Length(ups_h),
            Constraint::Length(log_h),
        ])
        .areas(right);
        live(f, top);
        if let Some(e) = env
            && ups_h > 2
        {
            panels::upstreams(f, ups, e, theme);
        }
        log(f, bottom, w, theme);
    } else if area.height >= 34 {
        let [top, bottom] =
            Layout::vertical([Constraint::Min(16), Constraint::Length(14)]).areas(area);
        draw_with(f, top, st, app.now, &actions, theme);
        live(f, bottom);
    } else {
        let [top, hint] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
        draw_with(f, top, st, app.now, &actions, theme);
        let o = app.key_label(crate::tui::keymap::KeyAction::Overview);
        f.render_widget(
            Paragraph::new(Span::styled(
                format!(
                    "live panel hidden (needs {} cols or 34 rows); {o}: overview, the walk runs on",
                    super::WIDE
                ),
                theme.dim,
            )),
            hint,
        );
    }
}

/// The newest progress lines, last at the bottom.
fn log(f: &mut Frame, area: Rect, w: &WalkUi, theme: &Theme) {
    let h = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line> = w
        .lines
        .iter()
        .skip(w.lines.len().saturating_sub(h))
        .map(|l| Line::from(Span::styled(l.clone(), theme.base)))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.dim)
                .title(Span::styled(" progress ", theme.title)),
        ),
        area,
    );
}

/// The skip, abort and quit popups.
pub fn prompt(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(w) = &app.walk else { return };
    let Some(p) = &w.prompt else { return };
    let step = w
        .state
        .as_ref()
        .and_then(|st| st.steps.get(st.cursor).map(|s| (st.cursor, s)))
        .map(|(i, s)| format!("step {} ({}: {})", i + 1, s.env, s.title))
        .unwrap_or_else(|| "the current step".into());
    let (title, border, mut lines, footer) = match p {
        WalkPrompt::Skip { reason } => (
            " skip a step ",
            theme.warn,
            vec![
                Line::from(Span::styled(format!("Skip {step}?"), theme.base)),
                Line::from(Span::styled(
                    "The reason is recorded in the audit journal and the release note.",
                    theme.dim,
                )),
                Line::raw(""),
                Line::from(vec![
                    Span::styled("reason: ", theme.warn),
                    Span::styled(format!("{reason}▏"), theme.title),
                ]),
            ],
            if reason.trim().is_empty() {
                "type a reason · Esc back"
            } else {
                "Enter skip · Esc back"
            },
        ),
        WalkPrompt::Abort { reason } => (
            " abort the walkthrough ",
            theme.bad,
            vec![
                Line::from(Span::styled(
                    format!("Abort at {step} and roll back?"),
                    theme.base,
                )),
                Line::from(Span::styled(abort_scope(w.state.as_ref()), theme.dim)),
                Line::raw(""),
                Line::from(vec![
                    Span::styled("reason (optional): ", theme.warn),
                    Span::styled(format!("{reason}▏"), theme.title),
                ]),
            ],
            "Enter abort and roll back · Esc back",
        ),
        WalkPrompt::Quit => (
            " quit ",
            theme.warn,
            vec![
                Line::from(Span::styled("A walkthrough is running. Quit?", theme.base)),
                Line::from(Span::styled(
                    "It stops at its next safe point (never in the middle of a change) and is saved; `signalbox walk RUNBOOK --resume` continues it.",
                    theme.dim,
                )),
            ],
            "y/Enter quit · Esc stay",
        ),
    };
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled(footer, theme.dim)));
    let width = area.width.saturating_sub(4).min(80);
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let wrapped: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let r = super::centered(area, width, wrapped as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .border_style(border)
                    .title(Span::styled(title, theme.title)),
            )
            .wrap(Wrap { trim: false }),
        r,
    );
}

/// What an abort would undo: the environments the walkthrough has changed, with the
/// revision each had before it.
fn abort_scope(st: Option<&WalkState>) -> String {
    let Some(st) = st else {
        return "Every environment it changed is rolled back by the runbook's rollback policy."
            .into();
    };
    let changed: Vec<String> = st
        .changed_envs()
        .into_iter()
        .map(|env| match st.start_revisions.get(&env) {
            Some(rev) => format!("{env} (at revision {rev} before the walkthrough)"),
            None => env,
        })
        .collect();
    if changed.is_empty() {
        "Nothing has been changed yet: aborting only stops it.".into()
    } else {
        format!(
            "It has changed {}; the runbook's rollback policy undoes that.",
            changed.join(", ")
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        analysis_from(t(0))
    }

    #[test]
    fn the_abort_prompt_says_what_the_rollback_undoes() {
        assert_eq!(
            abort_scope(Some(&walk_in_analysis())),
            "It has changed stage (at revision 6 before the walkthrough); the runbook's rollback policy undoes that."
        );
        assert_eq!(
            abort_scope(Some(&new_walk(t(0)))),
            "Nothing has been changed yet: aborting only stops it."
        );
    }

    /// A canary walk two steps in, analysing, started at `start`.
    /// The canary walk, started at `start`, before its first step.
    fn new_walk(start: DateTime<Utc>) -> WalkState {
        let rb = parse_str(RB, "rb.yaml").unwrap();
        WalkState::new(
            "w1".into(),
            &rb,
            "rb.yaml",
            "sha",
            "alice@bastion",
            &rb.expand("stage"),
            start,
        )
    }

    pub(crate) fn analysis_from(start: DateTime<Utc>) -> WalkState {
        let t = |s: i64| start + chrono::Duration::seconds(s);
        let mut st = new_walk(start);
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
    fn an_inconclusive_analysis_shows_no_stale_countdown() {
        let mut st = walk_in_analysis();
        st.finish_step(
            2,
            StepResult::Paused {
                reason: "analysis inconclusive".into(),
                kind: PauseKind::Inconclusive,
            },
            t(122),
        );
        let text = format!("{}", render(&st, t(130), &Theme::dark()).backend());
        assert!(!text.contains("0s left"), "{text}");
        assert!(text.contains("‖  3. stage"), "{text}");
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
