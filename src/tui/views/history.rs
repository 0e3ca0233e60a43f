//! History: the revisions of the current environment, newest first, and the before →
//! after of the selected one. `r` rolls back to it (planned and confirmed like any change).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};

use crate::tui::app::{App, EnvState};
use crate::tui::theme::Theme;

fn block<'a>(title: String, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.dim)
        .title(Span::styled(title, theme.title))
}

fn list(f: &mut Frame, area: Rect, env: &EnvState, filter: &str, theme: &Theme) {
    let current = env.status.as_ref().map(|s| s.revision);
    let revs = env.history(filter);
    let rows = revs.iter().map(|r| {
        let mark = if Some(r.number) == current {
            "● "
        } else {
            "  "
        };
        Row::new(vec![
            Cell::from(Span::styled(format!("{mark}{}", r.number), theme.accent)),
            Cell::from(Span::styled(
                r.time.format("%m-%d %H:%M:%S").to_string(),
                theme.dim,
            )),
            Cell::from(Span::styled(r.actor.clone(), theme.dim)),
            Cell::from(r.description.clone()),
        ])
        .style(theme.base)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(14),
            Constraint::Length(14),
            Constraint::Fill(1),
        ],
    )
    .block(block(
        format!(" revisions of {} ({}) ", env.def.name, revs.len()),
        theme,
    ))
    .row_highlight_style(theme.selected)
    .highlight_symbol("▶ ")
    .column_spacing(1);
    let mut state = TableState::default();
    if !revs.is_empty() {
        state.select(Some(env.rev_selected.min(revs.len() - 1)));
    }
    f.render_stateful_widget(table, area, &mut state);
}

fn diff(f: &mut Frame, area: Rect, env: &EnvState, filter: &str, theme: &Theme) {
    let sel = env.selected_revision(filter);
    let title = match sel {
        Some(r) => format!(" revision {} · before → after ", r.number),
        None => " before → after ".into(),
    };
    let lines: Vec<Line> = match (sel, &env.diff) {
        (None, _) => vec![Line::from(Span::styled("no revisions", theme.dim))],
        (Some(r), Some((n, Ok(lines)))) if *n == r.number => lines
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
        (Some(r), Some((n, Err(e)))) if *n == r.number => vec![Line::from(Span::styled(
            format!("✖ cannot read revision {n}: {e}"),
            theme.bad,
        ))],
        (Some(r), _) => vec![Line::from(Span::styled(
            format!("reading revision {} …", r.number),
            theme.dim,
        ))],
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
        list(f, l, env, &app.filter, theme);
        diff(f, r, env, &app.filter, theme);
    } else {
        let [l, r] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Fill(1)]).areas(area);
        list(f, l, env, &app.filter, theme);
        diff(f, r, env, &app.filter, theme);
    }
}
