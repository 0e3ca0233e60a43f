//! Two lines: environment tabs with a health dot each and the clock; then the current
//! environment's connection (for a watched environment: its watches), revision, data age and
//! the READ-ONLY badge.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::domain::kube::WatchState;
use crate::tui::app::{App, Health};
use crate::tui::keymap::{KeyAction, View};
use crate::tui::theme::Theme;

/// The symbol says it without colour: ● ok, ▲ degraded, ✖ down, ○ no answer yet.
pub fn health_symbol(h: Health) -> &'static str {
    match h {
        Health::Ok => "●",
        Health::Degraded => "▲",
        Health::Down => "✖",
        Health::Unknown => "○",
    }
}

pub fn health_style(h: Health, theme: &Theme) -> ratatui::style::Style {
    match h {
        Health::Ok => theme.ok,
        Health::Degraded => theme.warn,
        Health::Down => theme.bad,
        Health::Unknown => theme.dim,
    }
}

fn view_action(v: View) -> KeyAction {
    match v {
        View::Overview => KeyAction::Overview,
        View::Environments => KeyAction::Environments,
        View::History => KeyAction::History,
        View::Flags => KeyAction::Flags,
        View::Walk => KeyAction::WalkView,
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let [top, second] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let clock = app.now.format("%H:%M:%S UTC").to_string();
    let mut spans = vec![Span::styled("signalbox ", theme.title)];
    for (i, e) in app.envs.iter().enumerate() {
        let h = e.health();
        let style = if i == app.current {
            theme.tab_active
        } else {
            theme.base
        };
        spans.push(Span::styled(format!(" {} {} ", i + 1, e.def.name), style));
        spans.push(Span::styled(health_symbol(h), health_style(h, theme)));
        spans.push(Span::raw(" "));
    }
    let [tabs, clk] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(clock.len() as u16)])
            .areas(top);
    f.render_widget(Paragraph::new(Line::from(spans)), tabs);
    f.render_widget(Paragraph::new(Span::styled(clock, theme.dim)), clk);

    let Some(env) = app.env() else {
        return;
    };
    let mut line = Vec::new();
    if app.is_read_only() {
        line.push(Span::styled(" READ-ONLY ", theme.badge));
        line.push(Span::raw(" "));
    }
    let h = env.health();
    let troubled = env.troubled_watches();
    let conn = match h {
        Health::Down => "DOWN",
        Health::Unknown => "connecting",
        Health::Degraded
            if troubled
                .iter()
                .any(|w| matches!(w.state, WatchState::Stopped { .. })) =>
        {
            "watch stopped"
        }
        Health::Degraded if !troubled.is_empty() => "watch retrying",
        Health::Degraded => "degraded",
        Health::Ok => "connected",
    };
    line.push(Span::styled(
        format!("{} {conn}", health_symbol(h)),
        health_style(h, theme),
    ));
    line.push(Span::styled(format!("  {}", env.def.address()), theme.dim));
    // A namespace has no gateway revision; each Deployment has its own.
    if let Some(s) = &env.status
        && !env.is_watched()
    {
        line.push(Span::styled(format!("  rev {}", s.revision), theme.accent));
    }
    match env.age_secs(app.now) {
        // Watched: the data is as old as the last change, which says nothing about freshness.
        Some(_) if env.is_watched() && troubled.is_empty() => {
            line.push(Span::styled(
                format!(
                    "  watching {}",
                    super::text::count(env.watches.len(), "kind", "kinds")
                ),
                theme.dim,
            ));
        }
        Some(_) if env.is_watched() => {
            let kinds: Vec<&str> = troubled.iter().map(|w| w.kind.as_str()).collect();
            line.push(Span::styled(
                format!("  MAY BE BEHIND: {}", kinds.join(", ")),
                theme.bad,
            ));
        }
        Some(age) if env.is_stale(app.now) => {
            line.push(Span::styled(format!("  STALE {age}s old"), theme.bad));
        }
        Some(age) => line.push(Span::styled(format!("  updated {age}s ago"), theme.dim)),
        None => {}
    }
    // Wide: every view with its key; narrow: just the current one (keys are under `?`).
    let views: Vec<Span> = if area.width >= 120 {
        View::ALL
            .iter()
            .map(|v| {
                let style = if *v == app.view {
                    theme.tab_active
                } else {
                    theme.dim
                };
                let key = app
                    .keymap
                    .binding(view_action(*v))
                    .map(|b| b.label.clone())
                    .unwrap_or_default();
                Span::styled(format!(" {key} {} ", v.name()), style)
            })
            .collect()
    } else {
        vec![Span::styled(
            format!(" {} ", app.view.name()),
            theme.tab_active,
        )]
    };
    let views_w: u16 = views.iter().map(|s| s.content.chars().count() as u16).sum();
    let [info, tabs] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(views_w)]).areas(second);
    f.render_widget(Paragraph::new(Line::from(line)), info);
    f.render_widget(Paragraph::new(Line::from(views)), tabs);
}
