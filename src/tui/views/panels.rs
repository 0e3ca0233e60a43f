//! The smaller panels: upstream health, revisions, the dead-backend panel, the watches that
//! are not live, toasts, the hint bar with the palette/filter prompt, and the palette's
//! completions.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::control::envfile::EnvKind;
use crate::domain::kube::{WatchState, WatchStatus};
use crate::tui::app::{App, Busy, EnvState, InputKind, ToastKind, WalkPrompt};
use crate::tui::keymap::KeyAction;
use crate::tui::theme::Theme;

use super::text;

fn block<'a>(title: &str, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.dim)
        .title(Span::styled(format!(" {title} "), theme.title))
}

pub fn too_small(f: &mut Frame, area: Rect, theme: &Theme) {
    f.render_widget(
        Paragraph::new("terminal too small")
            .style(theme.warn)
            .wrap(Wrap { trim: true }),
        area,
    );
}

pub fn message(f: &mut Frame, area: Rect, theme: &Theme, text: &str) {
    f.render_widget(
        Paragraph::new(Span::styled(text.to_string(), theme.dim))
            .block(block("status", theme))
            .wrap(Wrap { trim: true }),
        area,
    );
}

/// The backend has never answered: say where we tried and what went wrong.
pub fn dead_backend(f: &mut Frame, area: Rect, env: &EnvState, error: &str, theme: &Theme) {
    let kube = env.def.kind == EnvKind::Kubernetes;
    let (label, retry) = if kube {
        (
            "cluster:   ",
            "the watches retry with backoff; other environments keep working (1-9 to switch)",
        )
    } else {
        (
            "admin API: ",
            "retrying every second; other environments keep working (1-9 to switch)",
        )
    };
    let text = vec![
        Line::from(Span::styled(
            format!("✖ {} is not answering", env.def.name),
            theme.bad,
        )),
        Line::raw(""),
        Line::from(vec![
            Span::styled(label, theme.dim),
            Span::styled(env.def.address(), theme.base),
        ]),
        Line::from(vec![
            Span::styled("error:     ", theme.dim),
            Span::styled(error.to_string(), theme.base),
        ]),
        Line::raw(""),
        Line::from(Span::styled(retry, theme.dim)),
    ];
    f.render_widget(
        Paragraph::new(text)
            .block(block("backend unavailable", theme).border_style(theme.bad))
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// A watch that is not live, as a symbol, whether it stopped, and the text after its kind.
fn watch_trouble(w: &WatchStatus) -> Option<(&'static str, bool, String)> {
    Some(match &w.state {
        WatchState::Retrying {
            error,
            since,
            attempts,
        } => (
            "▲",
            false,
            format!(
                "retrying since {} (attempt {attempts}): {error}",
                since.format("%H:%M:%S")
            ),
        ),
        WatchState::Stopped { error } => ("✖", true, format!("stopped: {error}")),
        WatchState::Connecting => ("○", false, "connecting (first list)".to_string()),
        WatchState::Live { .. } => return None,
    })
}

const KIND_COLUMN: usize = 14;

/// Rows the watch panel needs for `env` at `width` (0 when every watch is live): one per
/// watch that is not live, wrapped, plus the summary line and the borders.
pub fn watches_height(env: &EnvState, width: u16) -> u16 {
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let rows: usize = env
        .watches
        .iter()
        .filter_map(watch_trouble)
        .map(|(_, _, text)| (KIND_COLUMN + text.chars().count()).div_ceil(inner))
        .sum();
    match rows {
        0 => 0,
        n => u16::try_from(n + 3).unwrap_or(u16::MAX),
    }
}

/// The watches that are not live: which kind, since when, how many attempts, and the error,
/// so an operator knows which part of the screen may be behind and why.
pub fn watches(f: &mut Frame, area: Rect, env: &EnvState, theme: &Theme) {
    let mut stopped = false;
    let mut lines = Vec::new();
    let mut troubled = 0;
    for w in &env.watches {
        let Some((symbol, is_stopped, text)) = watch_trouble(w) else {
            continue;
        };
        troubled += 1;
        stopped |= is_stopped;
        let style = match symbol {
            "○" => theme.dim,
            _ if is_stopped => theme.bad,
            _ => theme.warn,
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{symbol} {:<w$}", w.kind, w = KIND_COLUMN - 2),
                style,
            ),
            Span::styled(text, theme.base),
        ]));
    }
    lines.push(Line::from(Span::styled(
        format!(
            "{} of {} live; what the others show may be out of date",
            env.watches.len() - troubled,
            text::count(env.watches.len(), "watch", "watches")
        ),
        theme.dim,
    )));
    let border = if stopped { theme.bad } else { theme.warn };
    f.render_widget(
        Paragraph::new(lines)
            .block(block("watches", theme).border_style(border))
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The backend answered before and has stopped: a strip above the last known data, which
/// stays on screen (marked stale in the header).
pub fn lost_backend(f: &mut Frame, area: Rect, env: &EnvState, error: &str, theme: &Theme) {
    // Backend errors usually name the address already; say it once.
    let addr = env.def.address();
    let head = if error.contains(&addr) {
        "✖ ".to_string()
    } else {
        format!("✖ {addr}: ")
    };
    let text = vec![Line::from(vec![
        Span::styled(head, theme.bad),
        Span::styled(error.to_string(), theme.base),
        Span::styled(" · showing the last data; retrying every second", theme.dim),
    ])];
    f.render_widget(
        Paragraph::new(text)
            .block(
                block(&format!("{} admin API not answering", env.def.name), theme)
                    .border_style(theme.bad),
            )
            .wrap(Wrap { trim: false }),
        area,
    );
}

pub fn upstreams(f: &mut Frame, area: Rect, env: &EnvState, theme: &Theme) {
    let mut lines = Vec::new();
    // Only the lines that fit are built (with 1,000 upstreams, most never show).
    let fit = usize::from(area.height.saturating_sub(2));
    let inner = usize::from(area.width.saturating_sub(2));
    if let Some(s) = &env.status {
        for u in s.upstreams.iter().take(fit) {
            let healthy = u.healthy_targets();
            let total = u.targets.len();
            let (sym, style) = if healthy == total && total > 0 {
                ("✓", theme.ok)
            } else if healthy == 0 {
                ("✗", theme.bad)
            } else {
                ("!", theme.warn)
            };
            let mut spans = vec![
                Span::styled(format!("{sym} "), style),
                Span::styled(format!("{:<14} ", u.name), theme.base),
                Span::styled(format!("{healthy}/{total} healthy"), style),
            ];
            let down: Vec<String> = u
                .targets
                .iter()
                .filter(|t| !t.healthy || t.ejected)
                .map(|t| {
                    format!(
                        "{} {}",
                        t.addr,
                        if t.ejected { "ejected" } else { "failing" }
                    )
                })
                .collect();
            if !down.is_empty() {
                spans.push(Span::styled(format!("  {}", down.join(", ")), theme.bad));
            }
            lines.push(text::fit_line(Line::from(spans), inner));
        }
    }
    f.render_widget(Paragraph::new(lines).block(block("upstreams", theme)), area);
}

pub fn revisions(f: &mut Frame, area: Rect, env: &EnvState, theme: &Theme) {
    let current = env.status.as_ref().map(|s| s.revision);
    let inner = usize::from(area.width.saturating_sub(2));
    let lines: Vec<Line> = env
        .revisions
        .iter()
        .take(usize::from(area.height.saturating_sub(2)))
        .map(|r| {
            let mark = if Some(r.number) == current {
                "▶"
            } else {
                " "
            };
            let line = Line::from(vec![
                Span::styled(format!("{mark}{:>4} ", r.number), theme.accent),
                Span::styled(format!("{} ", r.time.format("%H:%M:%S")), theme.dim),
                Span::styled(r.description.clone(), theme.base),
            ]);
            text::fit_line(line, inner)
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block("revisions", theme)), area);
}

/// Whether a walkthrough key would do something now: continue, skip and retry answer the
/// question the walk waits at, abort needs a running walk.
fn walk_key_useful(app: &App, action: KeyAction) -> bool {
    let walk = app.walk.as_ref();
    let question = walk.and_then(|w| w.question.as_ref());
    match action {
        KeyAction::WalkContinue => question.is_some_and(|q| q.can_continue()),
        KeyAction::WalkSkip | KeyAction::WalkRetry => question.is_some(),
        KeyAction::WalkAbort => walk.is_some_and(|w| w.running()),
        _ => true,
    }
}

/// Context-sensitive keys, from the keymap in force; or the palette/filter prompt.
pub fn hint_bar(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let mut spans = Vec::new();
    if let Some(d) = &app.dialog {
        if d.can_confirm() {
            spans.push(Span::styled("Enter", theme.accent));
            spans.push(Span::styled(" confirm  ", theme.dim));
        }
        spans.push(Span::styled("Esc", theme.accent));
        spans.push(Span::styled(" cancel", theme.dim));
    } else if let Some(p) = app.walk.as_ref().and_then(|w| w.prompt.as_ref()) {
        let (go, what) = match p {
            WalkPrompt::Skip { .. } => ("Enter", " skip (needs a reason)  "),
            WalkPrompt::Abort { .. } => ("Enter", " abort and roll back  "),
            WalkPrompt::Quit => ("y/Enter", " quit (the walk is saved)  "),
        };
        spans.push(Span::styled(go, theme.accent));
        spans.push(Span::styled(what, theme.dim));
        spans.push(Span::styled("Esc", theme.accent));
        spans.push(Span::styled(" back", theme.dim));
    } else if let Some(input) = &app.input {
        let prompt = match input.kind {
            InputKind::Palette => ":",
            InputKind::Filter => "/",
        };
        spans.push(Span::styled(prompt, theme.accent));
        spans.push(Span::styled(format!("{}▏", input.text), theme.title));
        match &input.error {
            Some(e) => spans.push(Span::styled(format!("  {e}"), theme.bad)),
            None => spans.push(Span::styled(
                match input.kind {
                    InputKind::Palette => "  Tab complete · Enter run · Esc close",
                    InputKind::Filter => "  Enter keep · Esc clear",
                },
                theme.dim,
            )),
        }
    } else if app.help {
        spans.push(Span::styled("any key", theme.accent));
        spans.push(Span::styled(" close help", theme.dim));
    } else {
        let ro = app.is_read_only();
        if ro {
            spans.push(Span::styled(" READ-ONLY ", theme.badge));
            spans.push(Span::raw(" "));
        }
        if !app.filter.is_empty() {
            spans.push(Span::styled(format!("/{} ", app.filter), theme.warn));
            spans.push(Span::styled("Esc", theme.accent));
            spans.push(Span::styled(" clear  ", theme.dim));
        }
        for b in app.keymap.bindings.iter().filter(|b| {
            b.hint
                && !(ro && b.mutating)
                && b.scope.offered(app.view, app.sandbox)
                && walk_key_useful(app, b.action)
        }) {
            spans.push(Span::styled(b.label.clone(), theme.accent));
            spans.push(Span::styled(format!(" {}  ", b.hint_name), theme.dim));
        }
        match &app.busy {
            Some(Busy::Planning { what, .. }) => {
                spans.push(Span::styled(format!("⋯ planning {what}"), theme.warn));
            }
            Some(Busy::Applying { what, .. }) => {
                spans.push(Span::styled(format!("⋯ applying {what}"), theme.warn));
            }
            None => {}
        }
    }
    let line = text::fit_line(Line::from(spans), usize::from(area.width));
    f.render_widget(Paragraph::new(line), area);
}

/// What the palette's current word can be, just above the prompt.
pub fn palette_hints(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let hints = app.palette_hints();
    if hints.is_empty() || area.height < 3 {
        return;
    }
    let max = usize::from(area.height.saturating_sub(2)).min(10);
    let mut lines: Vec<Line> = hints
        .iter()
        .take(max)
        .map(|h| Line::from(Span::styled(h.clone(), theme.base)))
        .collect();
    if hints.len() > max {
        lines.pop();
        lines.push(Line::from(Span::styled(
            format!("… {} more", hints.len() - max + 1),
            theme.dim,
        )));
    }
    let height = lines.len() as u16 + 2;
    let r = Rect {
        x: area.x,
        y: area.y + area.height - height,
        width: area.width.min(100),
        height,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.accent)
                .title(Span::styled(" commands ", theme.title)),
        ),
        r,
    );
}

/// Results, stacked at the bottom right of the body, newest at the bottom. The newest
/// wraps (up to four lines) so a failure can be read whole; older ones shrink to one line,
/// and the stack covers at most half the body, so the panels under it stay readable.
pub fn toasts(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let max_w = area.width.saturating_sub(2).min(70);
    if max_w < 10 {
        return;
    }
    let inner = usize::from(max_w - 2);
    let mut room = (area.height / 2).max(3);
    let mut y = area.y + area.height;
    for (i, t) in app.toasts.iter().rev().enumerate() {
        let most = if i == 0 { 4 } else { 1 };
        let fit_lines = usize::from(room.saturating_sub(2)).min(most);
        if fit_lines == 0 {
            break;
        }
        let mut lines = text::wrap(&t.text, inner);
        if lines.len() > fit_lines {
            // Cut visibly: the last line shown ends in `…`.
            let last = format!("{} {}", lines[fit_lines - 1], lines[fit_lines]);
            lines.truncate(fit_lines);
            lines[fit_lines - 1] = text::fit(&last, inner);
        }
        let widest = lines.iter().map(|l| text::width(l)).max().unwrap_or(0);
        let width = (widest as u16 + 2).clamp(12, max_w);
        let height = lines.len() as u16 + 2;
        room -= height;
        y -= height;
        let style = match t.kind {
            ToastKind::Success => theme.ok,
            ToastKind::Info => theme.accent,
            ToastKind::Failure => theme.bad,
        };
        let r = Rect {
            x: area.x + area.width - width - 1,
            y,
            width,
            height,
        };
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|l| Line::from(Span::styled(l, style)))
            .collect();
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).border_style(style)),
            r,
        );
    }
}
