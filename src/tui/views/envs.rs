//! Every environment side by side: per route, what each environment sends where and how
//! it is doing. This is where "is prod running what stage tested?" is answered. At 80
//! columns only as many environments as fit are shown, always including the current one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

use super::header::{health_style, health_symbol};
use super::live::{error_style, latency_text, ratio_text};
use crate::domain::RouteStatus;
use crate::tui::app::{App, EnvState};
use crate::tui::theme::Theme;

/// The narrowest an environment's column may be.
const MIN_COL: u16 = 18;
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

fn cell<'a>(env: &EnvState, route: &str, wide: bool, theme: &Theme) -> Cell<'a> {
    let Some(r) = env.status.as_ref().and_then(|s| s.route(route)) else {
        let text = if env.status.is_none() { "?" } else { "—" };
        return Cell::from(Span::styled(text, theme.dim));
    };
    let mut spans = vec![Span::styled(format!("{:<10}", placement(r)), theme.base)];
    let m = env
        .metrics
        .as_ref()
        .and_then(|f| f.latest.as_ref())
        .and_then(|s| s.route(route));
    if let Some(m) = m {
        if let Some(e) = m.signals.error_ratio_5xx.get() {
            spans.push(Span::styled(
                format!(" {:>6}", ratio_text(e)),
                error_style(e, theme),
            ));
        }
        if wide && let Some(p) = m.signals.latency_p95.get() {
            spans.push(Span::styled(format!(" p95 {}", latency_text(p)), theme.dim));
        }
    }
    Cell::from(Line::from(spans))
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let cols = visible(app.envs.len(), app.current, area.width);
    let wide = area.width >= 120;
    let mut names: Vec<String> = Vec::new();
    for e in &app.envs[cols.clone()] {
        for r in e.routes(&app.filter) {
            if !names.contains(&r.name) {
                names.push(r.name.clone());
            }
        }
    }
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
        header.push(Cell::from(Line::from(vec![
            Span::styled(format!("{}{rev} ", e.def.name), style),
            Span::styled(health_symbol(h), health_style(h, theme)),
        ])));
    }
    let rows = names.iter().map(|n| {
        let mut cells = vec![Cell::from(n.clone())];
        for e in &app.envs[cols.clone()] {
            cells.push(cell(e, n, wide, theme));
        }
        Row::new(cells).style(theme.base)
    });
    let mut widths = vec![Constraint::Length(ROUTE_COL)];
    widths.extend(cols.clone().map(|_| Constraint::Fill(1)));
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
        .header(Row::new(header))
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
    let selected = app
        .env()
        .and_then(|e| e.selected_route(&app.filter))
        .and_then(|r| names.iter().position(|n| *n == r.name));
    state.select(selected);
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
