//! The confirmation popup: the action in words, the environment, before → after, every
//! preflight check, and what the operator must do to go ahead.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::centered;
use crate::control::envfile::ConfirmPolicy;
use crate::tui::app::ConfirmDialog;
use crate::tui::theme::Theme;

pub fn draw(f: &mut Frame, area: Rect, d: &ConfirmDialog, theme: &Theme) {
    let p = &d.plan;
    let mut lines = vec![
        Line::from(vec![
            Span::styled("env:     ", theme.dim),
            Span::styled(
                format!("{} (revision {})", p.env, p.base_revision),
                theme.title,
            ),
        ]),
        Line::from(vec![
            Span::styled("action:  ", theme.dim),
            Span::styled(p.description.clone(), theme.base),
        ]),
        Line::from(vec![
            Span::styled("before:  ", theme.dim),
            Span::styled(p.before.clone(), theme.base),
        ]),
        Line::from(vec![
            Span::styled("after:   ", theme.dim),
            Span::styled(p.after.clone(), theme.accent),
        ]),
        Line::from(Span::styled("checks:", theme.dim)),
    ];
    for c in &p.checks {
        let (mark, style) = if c.passed {
            ("  ok   ", theme.ok)
        } else {
            ("  FAIL ", theme.bad)
        };
        lines.push(Line::from(vec![
            Span::styled(mark, style),
            Span::styled(format!("{} — {}", c.name, c.detail), theme.base),
        ]));
    }
    lines.push(Line::raw(""));
    if !p.allowed() {
        lines.push(Line::from(Span::styled(
            "✗ a check failed: this change cannot be applied. Esc to close.",
            theme.bad,
        )));
    } else {
        match p.confirm {
            ConfirmPolicy::TypeName => {
                lines.push(Line::from(vec![
                    Span::styled(format!("type {} to confirm: ", p.env), theme.warn),
                    Span::styled(format!("{}▏", d.typed), theme.title),
                ]));
                lines.push(Line::from(Span::styled(
                    if d.can_confirm() {
                        "Enter apply · Esc cancel"
                    } else {
                        "Esc cancel"
                    },
                    theme.dim,
                )));
            }
            ConfirmPolicy::Yes | ConfirmPolicy::None => lines.push(Line::from(Span::styled(
                "Enter apply · Esc cancel",
                theme.dim,
            ))),
        }
    }
    let height = lines.len() as u16 + 2;
    let r = centered(area, area.width.saturating_sub(4).min(100), height.max(8));
    let border = if p.allowed() { theme.warn } else { theme.bad };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .border_style(border)
                    .title(Span::styled(" confirm change ", theme.title)),
            )
            .wrap(Wrap { trim: false }),
        r,
    );
}
