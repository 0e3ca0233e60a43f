//! The confirmation popup: the action in words, the environment, before → after, every
//! preflight check, and what the operator must do to go ahead.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
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
    // What the operator must do stays at the bottom, always visible; a long before/after
    // is cut above it rather than pushing it off a small screen.
    let mut footer = Vec::new();
    if !p.allowed() {
        footer.push(Line::from(Span::styled(
            "✗ a check failed: this change cannot be applied. Esc to close.",
            theme.bad,
        )));
    } else {
        match p.confirm {
            ConfirmPolicy::TypeName => {
                footer.push(Line::from(vec![
                    Span::styled(format!("type {} to confirm: ", p.env), theme.warn),
                    Span::styled(format!("{}▏", d.typed), theme.title),
                ]));
                footer.push(if d.wrong_name {
                    Line::from(Span::styled(
                        format!("✗ that is not {}: type it exactly, or Esc to cancel", p.env),
                        theme.bad,
                    ))
                } else {
                    Line::from(Span::styled(
                        if d.can_confirm() {
                            "Enter apply · Esc cancel"
                        } else {
                            "Esc cancel"
                        },
                        theme.dim,
                    ))
                });
            }
            ConfirmPolicy::Yes | ConfirmPolicy::None => footer.push(Line::from(Span::styled(
                "Enter apply · Esc cancel",
                theme.dim,
            ))),
        }
    }
    if d.walk {
        footer.push(Line::from(Span::styled(
            "Tab set it aside to look at the live data first (the walkthrough view brings it back)",
            theme.dim,
        )));
    }
    let width = area.width.saturating_sub(4).min(100);
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let wrapped: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let footer_h = footer.len() as u16;
    let height = (wrapped as u16 + footer_h + 2).max(8);
    let r = centered(area, width, height);
    let border = if p.allowed() { theme.warn } else { theme.bad };
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(border)
        .title(Span::styled(" confirm change ", theme.title));
    let body = block.inner(r);
    f.render_widget(block, r);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(footer_h)]).areas(body);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), top);
    f.render_widget(Paragraph::new(footer).wrap(Wrap { trim: false }), bottom);
}
