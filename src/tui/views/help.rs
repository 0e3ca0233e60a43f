//! The help overlay, generated from the keymap table.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::centered;
use crate::tui::app::App;
use crate::tui::keymap::KEYMAP;
use crate::tui::theme::Theme;

pub fn draw(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let ro = app.is_read_only();
    let mut lines: Vec<Line> = KEYMAP
        .iter()
        .map(|b| {
            let off = ro && b.mutating;
            Line::from(vec![
                Span::styled(format!("{:>8}  ", b.label), theme.accent),
                Span::styled(b.description, if off { theme.dim } else { theme.base }),
                Span::styled(if off { "  (read-only: off)" } else { "" }, theme.dim),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled(
        "● ok  ▲ degraded  ✖ down  ○ connecting",
        theme.dim,
    )));
    let r = centered(area, 76, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.accent)
                .title(Span::styled(" keys ", theme.title)),
        ),
        r,
    );
}
