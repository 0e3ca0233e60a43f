//! The routes table: what is matched, where the traffic goes, and the canary's weight.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

use crate::domain::RouteStatus;
use crate::tui::app::EnvState;
use crate::tui::theme::Theme;

use super::text;

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

/// A column of the routes table: its header, its cells (for the rows on screen), and the
/// fewest and most cells it should get.
struct Column<'a> {
    header: &'static str,
    cells: Vec<Line<'a>>,
    min: u16,
    max: u16,
    /// Dropped when the others leave it too little room.
    optional: bool,
}

impl Column<'_> {
    fn wanted(&self) -> u16 {
        let widest = self.cells.iter().map(Line::width).max().unwrap_or(0);
        (widest.max(self.header.len()) as u16).clamp(self.min, self.max)
    }
}

/// Widths for `cols` in `room` cells (one between columns): each gets what its widest
/// cell wants; when that is too much the widest columns give way down to their minimum;
/// optional columns come only when they fit (the last one may take what is left); the
/// split column takes any width left over. `None` drops a column.
fn allot(cols: &[Column], room: u16, split: usize) -> Vec<Option<u16>> {
    let mut w: Vec<Option<u16>> = cols
        .iter()
        .map(|c| (!c.optional).then(|| c.wanted()))
        .collect();
    let used = |w: &[Option<u16>]| -> u16 {
        let n = w.iter().flatten().count() as u16;
        w.iter().flatten().sum::<u16>() + n.saturating_sub(1)
    };
    for (i, c) in cols.iter().enumerate().filter(|(_, c)| c.optional) {
        let left = room.saturating_sub(used(&w) + 1);
        if left >= c.wanted() {
            w[i] = Some(c.wanted());
        } else {
            if left >= c.min {
                w[i] = Some(left);
            }
            break;
        }
    }
    while used(&w) > room {
        let Some((i, _)) = w
            .iter()
            .enumerate()
            .filter_map(|(i, x)| Some((i, (*x)? - cols[i].min)))
            .filter(|(_, give)| *give > 0)
            .max_by_key(|(_, give)| *give)
        else {
            break;
        };
        w[i] = w[i].map(|x| x - 1);
    }
    let spare = room.saturating_sub(used(&w));
    w[split] = w[split].map(|x| x + spare);
    w
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
    // Only the rows that fit are built (a fresh TableState scrolls the same way: the
    // selection sits at the bottom once it passes the first screen).
    let fit = usize::from(area.height.saturating_sub(3)).max(1);
    let selected = env.selected.min(routes.len().saturating_sub(1));
    let start = (selected + 1).saturating_sub(fit);
    let window = &routes[start.min(routes.len())..(start + fit).min(routes.len())];
    let column =
        |header, min, max, optional, cell: &dyn Fn(&RouteStatus) -> Line<'static>| Column {
            header,
            cells: window.iter().map(|r| cell(r)).collect(),
            min,
            max,
            optional,
        };
    // Methods and filters only on wide screens, and only when the rest leaves room.
    let cols = [
        column("route", 6, 24, false, &|r| Line::raw(r.name.clone())),
        column("paths", 6, 40, false, &|r| {
            let paths: Vec<&str> = r
                .exact_paths
                .iter()
                .chain(r.paths.iter())
                .map(String::as_str)
                .collect();
            Line::raw(if paths.is_empty() {
                "/".to_string()
            } else {
                paths.join(" ")
            })
        }),
        column("methods", 5, 24, true, &|r| {
            Line::raw(if r.methods.is_empty() {
                "any".to_string()
            } else {
                r.methods.join(",")
            })
        }),
        column("split", 10, 48, false, &|r| Line::raw(split_text(r, true))),
        column("canary", 12, 20, false, &|r| canary_cell(r, theme)),
        column("filters", 8, 40, true, &|r| {
            Line::styled(r.filters.join(","), theme.dim)
        }),
    ];
    let mut cols: Vec<Column> = cols.into_iter().collect();
    if !wide {
        cols.retain(|c| !c.optional);
    }
    let split = cols.iter().position(|c| c.header == "split").unwrap_or(0);
    let widths = allot(&cols, area.width.saturating_sub(4), split);
    let shown: Vec<(Column, u16)> = cols
        .into_iter()
        .zip(widths)
        .filter_map(|(c, w)| Some((c, w?)))
        .collect();
    let header = Row::new(
        shown
            .iter()
            .map(|(c, w)| Cell::from(text::fit(c.header, usize::from(*w)))),
    );
    let rows = (0..window.len()).map(|i| {
        Row::new(
            shown
                .iter()
                .map(|(c, w)| Cell::from(text::fit_line(c.cells[i].clone(), usize::from(*w)))),
        )
        .style(theme.base)
    });
    let table = Table::new(rows, shown.iter().map(|(_, w)| Constraint::Length(*w)))
        .header(header.style(theme.title))
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
