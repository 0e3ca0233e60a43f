//! Feature flags of the current environment: key, state, default variant, variants and
//! whether targeting rules apply. `t` toggles the selected one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

use crate::domain::FlagState;
use crate::tui::app::EnvState;
use crate::tui::theme::Theme;

use super::text;

pub fn draw(f: &mut Frame, area: Rect, env: &EnvState, filter: &str, theme: &Theme) {
    let flags = env.flags(filter);
    let wide = area.width >= 100;
    let mut widths = vec![
        Constraint::Fill(2),
        Constraint::Length(6),
        Constraint::Fill(1),
        Constraint::Length(10),
    ];
    if wide {
        widths.push(Constraint::Fill(2));
    }
    // Keys, variants and lists are cut visibly (`…`).
    let w = text::table_widths(area.width, &widths);
    let fit = |s: &str, i: usize| text::fit(s, usize::from(w[i]));
    let rows = flags.iter().map(|fl| {
        let (state, style) = match fl.state {
            FlagState::Enabled => ("● on", theme.ok),
            FlagState::Disabled => ("○ off", theme.dim),
        };
        let mut cells = vec![
            Cell::from(fit(&fl.key, 0)),
            Cell::from(Span::styled(state, style)),
            Cell::from(fit(fl.default_variant.as_deref().unwrap_or("-"), 2)),
            Cell::from(Span::styled(
                if fl.has_targeting { "targeting" } else { "-" },
                theme.accent,
            )),
        ];
        if wide {
            cells.push(Cell::from(Span::styled(
                fit(&fl.variants.join(", "), 4),
                theme.dim,
            )));
        }
        Row::new(cells).style(theme.base)
    });
    let mut header = vec!["flag", "state", "default", "rules"];
    if wide {
        header.push("variants");
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.title))
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.dim)
                .title(Span::styled(
                    format!(" flags of {} ({}) ", env.def.name, flags.len()),
                    theme.title,
                )),
        )
        .row_highlight_style(theme.selected)
        .highlight_symbol("▶ ")
        .column_spacing(1);
    let mut state = TableState::default();
    if !flags.is_empty() {
        state.select(Some(env.flag_selected.min(flags.len() - 1)));
    }
    f.render_stateful_widget(table, area, &mut state);
}
