//! Every environment side by side: per route, what each environment sends where and how
//! it is doing. This is where "is prod running what stage tested?" is answered. At 80
//! columns only as many environments as fit are shown, always including the current one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::header::{health_style, health_symbol};
use super::live::{error_style, error_text, latency_text};
use crate::domain::RouteStatus;
use std::collections::HashSet;

use crate::domain::metrics::Verdict;
use crate::tui::app::{App, EnvState};
use crate::tui::theme::Theme;

use super::text;

/// The narrowest an environment's column may be.
const MIN_COL: u16 = 20;
const ROUTE_COL: u16 = 10;

/// `v2 25%` for a canary, `live green` for blue-green, the upstream for a single one.
pub fn placement(r: &RouteStatus) -> String {
    let short = |u: &str| {
        u.strip_prefix(&format!("{}-", r.name))
            .unwrap_or(u)
            .to_string()
    };
    if let Some((_, canary)) = r.canary_pair() {
        return format!("{} {}%", short(canary), r.percent(canary));
    }
    match (r.split.len(), r.live()) {
        (1, Some(u)) => short(u),
        (_, Some(u)) => format!("live {}", short(u)),
        _ => "-".into(),
    }
}

/// Which environments get a column: a window of those that fit, around the current one.
pub fn visible(count: usize, current: usize, width: u16) -> std::ops::Range<usize> {
    let fit = usize::from((width.saturating_sub(ROUTE_COL + 3) / MIN_COL).max(1));
    if count <= fit {
        return 0..count;
    }
    let start = current.saturating_sub(fit - 1).min(count - fit);
    start..start + fit
}

fn cell<'a>(env: &EnvState, route: &str, wide: bool, width: u16, theme: &Theme) -> Cell<'a> {
    let Some(r) = env.route_named(route) else {
        let text = if env.status.is_none() { "?" } else { "—" };
        return Cell::from(Span::styled(text, theme.dim));
    };
    let mut spans = vec![Span::styled(format!("{:<10}", placement(r)), theme.base)];
    if let Some(m) = env.route_metrics(route) {
        if let Some(e) = m.signals.error_ratio_5xx.get() {
            spans.push(Span::styled(
                format!(" {:>8}", error_text(e)),
                error_style(e, theme),
            ));
        }
        if wide && let Some(p) = m.signals.latency_p95.get() {
            spans.push(Span::styled(format!(" p95 {}", latency_text(p)), theme.dim));
        }
    }
    Cell::from(text::fit_line(Line::from(spans), usize::from(width)))
}

/// The selected route in every environment, one line each: the whole split, 5xx, p95 and
/// the canary verdict, so two environments can be compared at a glance.
fn detail(f: &mut Frame, area: Rect, app: &App, route: &str, theme: &Theme) {
    let inner = usize::from(area.width.saturating_sub(2));
    let lines: Vec<Line> = app
        .envs
        .iter()
        .map(|e| {
            let mut spans = vec![Span::styled(format!("{:<8}", e.def.name), theme.title)];
            let Some(r) = e.route_named(route) else {
                spans.push(Span::styled("no such route", theme.dim));
                return text::fit_line(Line::from(spans), inner);
            };
            spans.push(Span::styled(
                format!("{:<24}", super::routes::split_text(r, true)),
                theme.base,
            ));
            if let Some(m) = e.route_metrics(route) {
                if let Some(v) = m.signals.error_ratio_5xx.get() {
                    spans.push(Span::styled(
                        format!(" 5xx {}", error_text(v)),
                        error_style(v, theme),
                    ));
                }
                if let Some(v) = m.signals.latency_p95.get() {
                    spans.push(Span::styled(format!(" p95 {}", latency_text(v)), theme.dim));
                }
                match m.comparison.as_ref().map(|c| &c.verdict) {
                    Some(Verdict::Pass) => spans.push(Span::styled(" ✓ canary ok", theme.ok)),
                    Some(Verdict::Fail { .. }) => {
                        spans.push(Span::styled(" ✗ canary worse", theme.bad));
                    }
                    Some(Verdict::NotEnoughData { .. }) => {
                        spans.push(Span::styled(" … too little data", theme.dim));
                    }
                    None => {}
                }
            }
            text::fit_line(Line::from(spans), inner)
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.dim)
                .title(Span::styled(format!(" {route} everywhere "), theme.title)),
        ),
        area,
    );
}

pub fn draw(f: &mut Frame, full: Rect, app: &App, theme: &Theme) {
    let selected_name = app
        .env()
        .and_then(|e| e.selected_route(&app.filter))
        .map(|r| r.name.clone());
    let detail_h = app.envs.len() as u16 + 2;
    let area = match &selected_name {
        Some(name) if full.height >= detail_h + 8 => {
            let [top, bottom] =
                Layout::vertical([Constraint::Min(6), Constraint::Length(detail_h)]).areas(full);
            detail(f, bottom, app, name, theme);
            top
        }
        _ => full,
    };
    let cols = visible(app.envs.len(), app.current, area.width);
    let wide = area.width >= 120;
    let visible_envs = &app.envs[cols.clone()];
    // Usually every environment has the same routes: then the first one's list is the
    // union, and no set is needed.
    let lists: Vec<Vec<&RouteStatus>> =
        visible_envs.iter().map(|e| e.routes(&app.filter)).collect();
    let same = lists
        .windows(2)
        .all(|w| w[0].len() == w[1].len() && w[0].iter().zip(&w[1]).all(|(a, b)| a.name == b.name));
    let names: Vec<&str> = if same {
        lists
            .first()
            .map_or_else(Vec::new, |l| l.iter().map(|r| r.name.as_str()).collect())
    } else {
        let mut seen = HashSet::new();
        lists
            .iter()
            .flatten()
            .map(|r| r.name.as_str())
            .filter(|n| seen.insert(*n))
            .collect()
    };
    let mut header = vec![Cell::from(Span::styled("route", theme.title))];
    for (i, e) in app
        .envs
        .iter()
        .enumerate()
        .skip(cols.start)
        .take(cols.len())
    {
        let h = e.health();
        let style = if i == app.current {
            theme.tab_active
        } else {
            theme.title
        };
        let rev = e
            .status
            .as_ref()
            .map(|s| format!(" r{}", s.revision))
            .unwrap_or_default();
        // The second line says what the cells hold, so `live green 100.00%` does not read
        // as a traffic share.
        let what = format!("{:<10} {:>8}", "traffic", "5xx");
        header.push(Cell::from(vec![
            Line::from(vec![
                Span::styled(format!("{}{rev} ", e.def.name), style),
                Span::styled(health_symbol(h), health_style(h, theme)),
            ]),
            Line::from(Span::styled(what, theme.dim)),
        ]));
    }
    // Only the rows that fit are built (borders and the two header lines take four).
    let selected = selected_name
        .as_deref()
        .and_then(|s| names.iter().position(|n| *n == s));
    let fit = usize::from(area.height.saturating_sub(4)).max(1);
    let start = selected.map_or(0, |s| (s + 1).saturating_sub(fit));
    let window = &names[start.min(names.len())..(start + fit).min(names.len())];
    let mut widths = vec![Constraint::Length(ROUTE_COL)];
    widths.extend(cols.clone().map(|_| Constraint::Fill(1)));
    let cell_w = text::table_widths(area.width, &widths);
    let rows = window.iter().map(|n| {
        let mut cells = vec![Cell::from(text::fit(n, usize::from(ROUTE_COL)))];
        for (e, w) in visible_envs.iter().zip(&cell_w[1..]) {
            cells.push(cell(e, n, wide, *w, theme));
        }
        Row::new(cells).style(theme.base)
    });
    let hidden = app.envs.len() - cols.len();
    let title = if hidden > 0 {
        format!(
            " all environments ({} of {}; 1-9 to pan) ",
            cols.len(),
            app.envs.len()
        )
    } else {
        " all environments ".to_string()
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).height(2))
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.dim)
                .title(Span::styled(title, theme.title)),
        )
        .row_highlight_style(theme.selected)
        .highlight_symbol("▶ ")
        .column_spacing(1);
    let mut state = TableState::default();
    state.select(selected.map(|s| s - start));
    f.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_environment_always_has_a_column() {
        assert_eq!(visible(3, 2, 80), 0..3);
        assert_eq!(visible(6, 0, 80), 0..3);
        assert_eq!(visible(6, 5, 80), 3..6);
        assert_eq!(visible(6, 3, 80), 1..4);
        assert_eq!(visible(6, 3, 20), 3..4);
    }
}
