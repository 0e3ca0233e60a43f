//! Drawing. Each view is a function of the app state and a theme, nothing else, so the
//! snapshot tests see exactly what an operator sees.

mod dialog;
mod envs;
mod flags;
mod header;
mod help;
mod history;
pub mod live;
mod panels;
mod routes;
pub mod text;
pub mod walk;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};

use super::app::App;
use super::keymap::View;
use super::theme::Theme;

/// Below this width the body stacks panels instead of using columns.
pub const WIDE: u16 = 120;

pub fn draw(f: &mut Frame, app: &App, theme: &Theme) {
    let area = f.area();
    if area.width < 20 || area.height < 6 {
        panels::too_small(f, area, theme);
        return;
    }
    let [head, body, hints] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(f, head, app, theme);
    body_area(f, body, app, theme);
    panels::hint_bar(f, hints, app, theme);
    panels::toasts(f, body, app, theme);
    if let Some(d) = &app.dialog {
        dialog::draw(f, area, d, theme);
    } else if app.walk.as_ref().is_some_and(|w| w.prompt.is_some()) {
        walk::prompt(f, area, app, theme);
    } else if app.help {
        help::draw(f, area, app, theme);
    } else if app.input.is_some() {
        panels::palette_hints(f, body, app, theme);
    }
}

fn body_area(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(env) = app.env() else {
        panels::message(f, area, theme, "no environments configured");
        return;
    };
    if app.view == View::Environments {
        envs::draw(f, area, app, theme);
        return;
    }
    if app.view == View::Walk {
        walk::cockpit(f, area, app, theme);
        return;
    }
    if env.status.is_none() {
        match &env.error {
            Some(e) => panels::dead_backend(f, area, env, e, theme),
            None => panels::message(
                f,
                area,
                theme,
                &format!("connecting to {} …", env.def.address()),
            ),
        }
        return;
    }
    let area = match panels::watches_height(env, area.width) {
        0 => area,
        h => {
            let [top, rest] = Layout::vertical([
                Constraint::Length(h.min(area.height / 2)),
                Constraint::Min(3),
            ])
            .areas(area);
            panels::watches(f, top, env, theme);
            rest
        }
    };
    // Lost after answering: say so above the last known data (Overview and Flags; History
    // keeps its room, the header already says DOWN there).
    let area = match &env.error {
        Some(e) if app.view != View::History && area.height >= 12 => {
            let [strip, rest] =
                Layout::vertical([Constraint::Length(4), Constraint::Min(6)]).areas(area);
            panels::lost_backend(f, strip, env, e, theme);
            rest
        }
        _ => area,
    };
    match app.view {
        View::History => return history::draw(f, area, app, env, theme),
        View::Flags => return flags::draw(f, area, env, &app.filter, theme),
        View::Overview | View::Environments | View::Walk => {}
    }
    let age = live::age_title(env, app.now);
    if area.width >= WIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Min(30)]).areas(area);
        let n_ups = env.status.as_ref().map_or(0, |s| s.upstreams.len()) as u16;
        let [ups, metrics, revs] = Layout::vertical([
            Constraint::Length((n_ups + 2).min(left.height / 3)),
            Constraint::Min(12),
            Constraint::Length(8),
        ])
        .areas(right);
        let n_flags = env.status.as_ref().map_or(0, |s| s.flags.len()) as u16;
        if n_flags > 0 {
            let [r, fl] = Layout::vertical([
                Constraint::Min(6),
                Constraint::Length((n_flags + 3).min(10)),
            ])
            .areas(left);
            routes::draw(f, r, env, &app.filter, theme, true);
            flags::draw(f, fl, env, "", theme);
        } else {
            routes::draw(f, left, env, &app.filter, theme, true);
        }
        panels::upstreams(f, ups, env, theme);
        live::draw(f, metrics, env, &app.filter, &age, theme);
        panels::revisions(f, revs, env, theme);
    } else {
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Min(4)]).areas(area);
        routes::draw(f, top, env, &app.filter, theme, false);
        let [ups, metrics] =
            Layout::horizontal([Constraint::Length(30), Constraint::Min(20)]).areas(bottom);
        panels::upstreams(f, ups, env, theme);
        live::draw(f, metrics, env, &app.filter, &age, theme);
    }
}

/// A centred rectangle of at most `w` x `h` inside `area`.
pub(crate) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

#[cfg(test)]
mod tests;
