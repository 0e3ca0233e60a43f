//! History: the revisions of the current environment and its audit journal entries, one
//! timeline, newest first. A revision shows its before → after diff (read on selection);
//! a journal entry that made no revision (a refusal, a cancel, a failure, a sandbox fault)
//! shows the before → after, checks and reason it was recorded with. `r` rolls back to the
//! selected revision (planned and confirmed like any change).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};

use crate::control::audit::AuditEntry;
use crate::domain::Outcome;
use crate::tui::app::{App, EnvState, HistoryItem, outcome_word};
use crate::tui::theme::Theme;

use super::text;

fn block<'a>(title: String, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.dim)
        .title(Span::styled(title, theme.title))
}

fn outcome_style(o: Outcome, theme: &Theme) -> Style {
    match o {
        Outcome::Applied => theme.ok,
        Outcome::Cancelled => theme.dim,
        Outcome::Refused | Outcome::Unverified => theme.warn,
        Outcome::Conflict | Outcome::Failed => theme.bad,
    }
}

/// `refused: frozen until 18:00` — the outcome with its reason, for the list.
fn entry_text(e: &AuditEntry) -> String {
    let reason = e.error.as_deref().or_else(|| {
        e.checks
            .iter()
            .find(|c| !c.passed)
            .map(|c| c.detail.as_str())
    });
    match reason {
        Some(r) if e.outcome != Outcome::Applied => format!("{} ({r})", e.description),
        _ => e.description.clone(),
    }
}

fn list(f: &mut Frame, area: Rect, app: &App, env: &EnvState, theme: &Theme) {
    let current = env.status.as_ref().map(|s| s.revision);
    let items = env.history(&app.filter);
    let wide = area.width >= 84;
    // Only the rows that fit are built, as in the routes table.
    let fit = usize::from(area.height.saturating_sub(2)).max(1);
    let selected = env.rev_selected.min(items.len().saturating_sub(1));
    let start = (selected + 1).saturating_sub(fit);
    let window = &items[start.min(items.len())..(start + fit).min(items.len())];
    // Month and day, so a day-old row cannot pass for today's.
    let time_fmt = if wide {
        "%m-%d %H:%M:%S"
    } else {
        "%m-%d %H:%M"
    };
    let mut widths = vec![
        Constraint::Length(6),
        Constraint::Length(if wide { 14 } else { 11 }),
    ];
    if wide {
        widths.push(Constraint::Length(16));
    }
    widths.extend([Constraint::Length(10), Constraint::Fill(1)]);
    let cells = text::table_widths(area.width, &widths);
    // Actor and description are cut visibly (`…`), never into another value.
    let actor_w = usize::from(cells[2]);
    let what_w = usize::from(cells[cells.len() - 1]);
    let rows = window.iter().map(|item| {
        let (mark, mark_style, what) = match item {
            HistoryItem::Revision { rev, .. } => {
                let dot = if Some(rev.number) == current {
                    "●"
                } else {
                    " "
                };
                (
                    format!("{dot} r{}", rev.number),
                    theme.accent,
                    rev.description.clone(),
                )
            }
            HistoryItem::Journal(e) => ("  ·".to_string(), theme.dim, entry_text(e)),
        };
        let actor = match item {
            HistoryItem::Revision { rev, entry } => entry.map_or(rev.actor.as_str(), |e| &e.actor),
            HistoryItem::Journal(e) => &e.actor,
        };
        let outcome = match item.entry() {
            Some(e) => Span::styled(outcome_word(e.outcome), outcome_style(e.outcome, theme)),
            None => Span::raw(""),
        };
        let mut cells = vec![
            Cell::from(Span::styled(mark, mark_style)),
            Cell::from(Span::styled(
                item.time().format(time_fmt).to_string(),
                theme.dim,
            )),
        ];
        // At 80 columns the actor is left to the detail pane.
        if wide {
            cells.push(Cell::from(Span::styled(
                text::fit(actor, actor_w),
                theme.dim,
            )));
        }
        cells.push(Cell::from(outcome));
        cells.push(Cell::from(text::fit(&what, what_w)));
        Row::new(cells).style(theme.base)
    });
    // What is listed, so the numbers add up: revisions, and journal entries that made none.
    let revisions = items
        .iter()
        .filter(|i| matches!(i, HistoryItem::Revision { .. }))
        .count();
    let mut title = format!(
        " history of {} ({}, {}) ",
        env.def.name,
        text::count(revisions, "revision", "revisions"),
        text::count(
            items.len() - revisions,
            "other journal entry",
            "other journal entries"
        ),
    );
    if let Some(e) = &app.journal_error {
        title = format!(" history of {} · journal: {e} ", env.def.name);
    } else if app.journal_skipped > 0 {
        let lines = text::count(app.journal_skipped, "unreadable line", "unreadable lines");
        title.push_str(&format!("· {lines} "));
    }
    let title_style = if app.journal_error.is_some() {
        theme.bad
    } else {
        theme.title
    };
    let table = Table::new(rows, widths)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.dim)
                .title(Span::styled(title, title_style)),
        )
        .row_highlight_style(theme.selected)
        .highlight_symbol("▶ ")
        .column_spacing(1);
    let mut state = TableState::default();
    if !window.is_empty() {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, area, &mut state);
}

/// What the journal recorded: who, the outcome with its reason, before → after, checks.
fn entry_lines<'a>(e: &AuditEntry, theme: &Theme) -> Vec<Line<'a>> {
    let mut lines = vec![Line::from(vec![
        Span::styled(outcome_word(e.outcome), outcome_style(e.outcome, theme)),
        Span::styled(
            format!(
                " by {} at {} in {}",
                e.actor,
                e.time.format("%Y-%m-%d %H:%M:%S"),
                e.env
            ),
            theme.dim,
        ),
    ])];
    if let Some(err) = &e.error {
        lines.push(Line::from(Span::styled(
            format!("why: {err}"),
            outcome_style(e.outcome, theme),
        )));
    }
    if let Some(f) = &e.forced {
        lines.push(Line::from(Span::styled(format!("forced: {f}"), theme.warn)));
    }
    if !e.before.is_empty() || !e.after.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("- {}", e.before),
            theme.bad,
        )));
        lines.push(Line::from(Span::styled(format!("+ {}", e.after), theme.ok)));
    }
    for c in &e.checks {
        let (mark, style) = if c.passed {
            ("✓", theme.ok)
        } else {
            ("✗", theme.bad)
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark} {}", c.name), style),
            Span::styled(format!(": {}", c.detail), theme.dim),
        ]));
    }
    lines
}

fn diff_lines<'a>(env: &EnvState, number: u64, theme: &Theme) -> Vec<Line<'a>> {
    match &env.diff {
        Some((n, Ok(lines))) if *n == number => lines
            .iter()
            .map(|l| {
                let style = match l.get(..2) {
                    Some("+ ") => theme.ok,
                    Some("- ") => theme.bad,
                    Some("~ ") => theme.warn,
                    _ => theme.dim,
                };
                Line::from(Span::styled(l.clone(), style))
            })
            .collect(),
        Some((n, Err(e))) if *n == number => vec![Line::from(Span::styled(
            format!("✖ cannot read revision {n}: {e}"),
            theme.bad,
        ))],
        _ => vec![Line::from(Span::styled(
            format!("reading revision {number} …"),
            theme.dim,
        ))],
    }
}

fn detail(f: &mut Frame, area: Rect, env: &EnvState, filter: &str, theme: &Theme) {
    let sel = env.selected_history(filter);
    let (title, lines) = match sel {
        None => (
            " before → after ".to_string(),
            vec![Line::from(Span::styled(
                "no revisions or journal entries",
                theme.dim,
            ))],
        ),
        Some(HistoryItem::Revision { rev, entry }) => {
            let mut lines = diff_lines(env, rev.number, theme);
            // Who made it on top; with the journal's entry, how it went and its checks.
            let head = match entry {
                Some(e) => {
                    let passed = e.checks.iter().filter(|c| c.passed).count();
                    let mut head = vec![
                        Span::styled(outcome_word(e.outcome), outcome_style(e.outcome, theme)),
                        Span::styled(
                            format!(" by {} · checks {passed}/{}", e.actor, e.checks.len()),
                            theme.dim,
                        ),
                    ];
                    if let Some(f) = &e.forced {
                        head.push(Span::styled(format!(" · forced: {f}"), theme.warn));
                    }
                    head
                }
                None => vec![Span::styled(
                    format!(
                        "by {} at {}",
                        rev.actor,
                        rev.time.format("%Y-%m-%d %H:%M:%S")
                    ),
                    theme.dim,
                )],
            };
            lines.insert(0, Line::from(head));
            (format!(" revision {} · before → after ", rev.number), lines)
        }
        Some(HistoryItem::Journal(e)) => (
            format!(" journal · {} ", e.description),
            entry_lines(e, theme),
        ),
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(block(title, theme))
            .wrap(Wrap { trim: false }),
        area,
    );
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, env: &EnvState, theme: &Theme) {
    if area.width >= 120 {
        let [l, r] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Fill(1)]).areas(area);
        list(f, l, app, env, theme);
        detail(f, r, env, &app.filter, theme);
    } else {
        let [l, r] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Fill(1)]).areas(area);
        list(f, l, app, env, theme);
        detail(f, r, env, &app.filter, theme);
    }
}
