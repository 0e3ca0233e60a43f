//! The routes table: what is matched, where the traffic goes, and the canary's weight.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

use crate::domain::RouteStatus;
use crate::tui::app::EnvState;
use crate::tui::theme::Theme;

const BAR: usize = 10;

/// `[██░░░░░░░░]  20%`: the canary's share; colour is decoration only.
pub fn canary_bar(percent: u32) -> String {
    let percent = percent.min(100);
    let filled = (percent as usize * BAR + 50) / 100;
    format!(
        "[{}{}] {percent:>3}%",
        "█".repeat(filled),
        "░".repeat(BAR - filled)
    )
}

/// `users-blue 100% / users-green 0%`; compact drops the route-name prefix (`blue 100%`),
/// which the route column already says.
pub fn split_text(r: &RouteStatus, compact: bool) -> String {
    let prefix = format!("{}-", r.name);
    r.split
        .keys()
        .map(|up| {
            let name = if compact {
                up.strip_prefix(&prefix).unwrap_or(up)
            } else {
                up
            };
            format!("{name} {}%", r.percent(up))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn canary_cell<'a>(r: &RouteStatus, theme: &Theme) -> Line<'a> {
    if let Some((_, canary)) = r.canary_pair() {
        return Line::from(Span::styled(
            canary_bar(r.percent(canary)),
            theme.bar_canary,
        ));
    }
    match (&r.canary_by_header, r.split.len()) {
        (Some(h), _) => Line::from(Span::styled(format!("by header {}", h.name), theme.dim)),
        (None, 2) => Line::from(Span::styled(
            format!("live: {}", r.live().unwrap_or("-")),
            theme.accent,
        )),
        _ => Line::from(Span::styled("-", theme.dim)),
    }
}

pub fn draw(f: &mut Frame, area: Rect, env: &EnvState, filter: &str, theme: &Theme, wide: bool) {
    let routes = env.routes(filter);
    let title = if filter.is_empty() {
        format!(" routes ({}) ", routes.len())
    } else {
        let all = env.status.as_ref().map_or(0, |s| s.routes.len());
        format!(" routes ({} of {all} matching /{filter}) ", routes.len())
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.dim)
        .title(Span::styled(title, theme.title));
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec!["route", "paths", "methods", "split", "canary", "filters"],
            vec![
                Constraint::Length(10),
                Constraint::Length(14),
                Constraint::Length(9),
                Constraint::Fill(1),
                Constraint::Length(17),
                Constraint::Length(16),
            ],
        )
    } else {
        (
            vec!["route", "path", "split", "canary"],
            vec![
                Constraint::Length(10),
                Constraint::Length(14),
                Constraint::Fill(1),
                Constraint::Length(17),
            ],
        )
    };
    // Only the rows that fit are built (a fresh TableState scrolls the same way: the
    // selection sits at the bottom once it passes the first screen).
    let fit = usize::from(area.height.saturating_sub(3)).max(1);
    let selected = env.selected.min(routes.len().saturating_sub(1));
    let start = (selected + 1).saturating_sub(fit);
    let window = &routes[start.min(routes.len())..(start + fit).min(routes.len())];
    let rows = window.iter().copied().map(|r| {
        let mut paths: Vec<&str> = r
            .exact_paths
            .iter()
            .chain(r.paths.iter())
            .map(String::as_str)
            .collect();
        if paths.is_empty() {
            paths.push("/");
        }
        let methods = if r.methods.is_empty() {
            "any".to_string()
        } else {
            r.methods.join(",")
        };
        let mut cells = vec![Cell::from(r.name.clone()), Cell::from(paths.join(" "))];
        if wide {
            cells.push(Cell::from(methods));
            cells.push(Cell::from(split_text(r, true)));
            cells.push(Cell::from(canary_cell(r, theme)));
            cells.push(Cell::from(Span::styled(r.filters.join(","), theme.dim)));
        } else {
            cells.push(Cell::from(split_text(r, true)));
            cells.push(Cell::from(canary_cell(r, theme)));
        }
        Row::new(cells).style(theme.base)
    });
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.title))
        .block(block)
        .row_highlight_style(theme.selected)
        .highlight_symbol("▶ ")
        .column_spacing(1);
    let mut state = TableState::default();
    if !window.is_empty() {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_bar_rounds_and_clamps() {
        assert_eq!(canary_bar(0), "[░░░░░░░░░░]   0%");
        assert_eq!(canary_bar(25), "[███░░░░░░░]  25%");
        assert_eq!(canary_bar(100), "[██████████] 100%");
        assert_eq!(canary_bar(250), "[██████████] 100%");
    }
}
