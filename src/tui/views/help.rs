//! The help overlay, generated from the keymap in force (defaults plus `[keys]`).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::centered;
use crate::tui::app::App;
use crate::tui::theme::Theme;

pub fn draw(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let ro = app.is_read_only();
    // Two columns when there is room for every key; otherwise one, with the keys of this
    // view (the sandbox's included, so they are discoverable).
    let two = area.width >= 150;
    let entries: Vec<Line> = app
        .keymap
        .bindings
        .iter()
        .filter(|b| two || b.scope.offered(app.view, true))
        .map(|b| {
            let off = ro && b.mutating;
            Line::from(vec![
                Span::styled(format!("{:>7} ", b.label), theme.accent),
                Span::styled(b.description, if off { theme.dim } else { theme.base }),
                Span::styled(if off { " (read-only: off)" } else { "" }, theme.dim),
            ])
        })
        .collect();
    let legend = Line::from(Span::styled(
        "● ok ▲ degraded ✖ down ○ connecting · : commands · / filter",
        theme.dim,
    ));
    let lines: Vec<Line> = if two {
        let half = entries.len().div_ceil(2);
        let width = 72;
        let mut out: Vec<Line> = (0..half)
            .map(|i| {
                let mut spans = entries[i].spans.clone();
                let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
                spans.push(Span::raw(" ".repeat(width - used.min(width))));
                if let Some(r) = entries.get(i + half) {
                    spans.extend(r.spans.clone());
                }
                Line::from(spans)
            })
            .collect();
        out.push(Line::raw(""));
        out.push(legend);
        out
    } else {
        let mut out = entries;
        if usize::from(area.height) > out.len() + 2 {
            out.push(legend);
        }
        out
    };
    // Skipped `[keys]` entries stay visible here after their toasts expire.
    let mut lines = lines;
    for w in &app.keymap.warnings {
        lines.push(Line::from(Span::styled(format!("config: {w}"), theme.warn)));
    }
    let w = if two { 146 } else { 78 };
    let r = centered(area, w, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.accent)
                .title(Span::styled(" keys (any key closes) ", theme.title)),
        ),
        r,
    );
}
