//! Drawing. Each view is a function of the app state and a theme, nothing else, so the
//! snapshot tests see exactly what an operator sees.

mod dialog;
mod header;
mod help;
mod panels;
mod routes;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};

use super::app::App;
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
    } else if app.help {
        help::draw(f, area, app, theme);
    }
}

fn body_area(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(env) = app.env() else {
        panels::message(f, area, theme, "no environments configured");
        return;
    };
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
    if area.width >= WIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(62), Constraint::Min(30)]).areas(area);
        routes::draw(f, left, env, theme, true);
        let [ups, revs, metrics] = Layout::vertical([
            Constraint::Percentage(50),
            Constraint::Min(4),
            Constraint::Length(3),
        ])
        .areas(right);
        panels::upstreams(f, ups, env, theme);
        panels::revisions(f, revs, env, theme);
        panels::metrics(f, metrics, theme);
    } else {
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Percentage(55), Constraint::Min(4)])
            .split(area);
        routes::draw(f, rows[0], env, theme, false);
        let [ups, metrics] =
            Layout::horizontal([Constraint::Percentage(65), Constraint::Min(20)]).areas(rows[1]);
        panels::upstreams(f, ups, env, theme);
        panels::metrics(f, metrics, theme);
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
