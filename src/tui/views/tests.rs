//! Snapshot tests of what the operator sees, at 80x24 (compact) and 160x48 (wide), plus the
//! colours that carry meaning and a sweep of sizes that must never panic.

use chrono::Duration;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::draw;
use crate::control::envfile::ConfirmPolicy;
use crate::domain::{Change, RevisionInfo};
use crate::tui::app::tests::{app_with, def, plan_view, status, t0};
use crate::tui::app::{App, ConfirmDialog, Event, ExecResult, update};
use crate::tui::theme::Theme;

fn render(app: &App, theme: &Theme, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    term.draw(|f| draw(f, app, theme)).expect("draw");
    term
}

fn three_envs(read_only: bool) -> App {
    let mut app = app_with(
        vec![
            def("dev", ConfirmPolicy::None, false),
            def("stage", ConfirmPolicy::Yes, false),
            def("prod", ConfirmPolicy::TypeName, false),
        ],
        read_only,
    );
    let revs = (1..=4)
        .rev()
        .map(|n| RevisionInfo {
            number: n,
            time: t0() - Duration::minutes(10 * (5 - n as i64)),
            actor: "alice@bastion".into(),
            description: if n == 1 {
                "start from gateway.yaml".into()
            } else {
                format!("set payments weights (step {n})")
            },
            change: Change::ReplaceConfig,
            hash: format!("h{n}"),
        })
        .collect();
    update(
        &mut app,
        Event::EnvUpdate {
            env: 2,
            status: Ok(status(4, 5)),
            revisions: Some(revs),
            at: t0(),
        },
    );
    update(&mut app, Event::Key(crate::tui::keymap::Key::Char('3')));
    update(&mut app, Event::Tick(t0() + Duration::seconds(1)));
    app
}

fn with_dialog(mut app: App) -> App {
    app.dialog = Some(ConfirmDialog {
        id: 1,
        plan: plan_view("prod", ConfirmPolicy::TypeName, true),
        typed: "pro".into(),
    });
    app
}

fn with_dead_prod(mut app: App) -> App {
    app.envs[2].status = None;
    app.envs[2].updated = None;
    update(
        &mut app,
        Event::EnvUpdate {
            env: 2,
            status: Err(
                "cannot reach http://127.0.0.1:94: error sending request: connection refused"
                    .into(),
            ),
            revisions: None,
            at: t0(),
        },
    );
    app
}

#[test]
fn overview() {
    let app = three_envs(false);
    let dark = Theme::dark();
    insta::assert_snapshot!("overview_80x24", render(&app, &dark, 80, 24).backend());
    insta::assert_snapshot!("overview_160x48", render(&app, &dark, 160, 48).backend());
}

#[test]
fn confirm_dialog() {
    let app = with_dialog(three_envs(false));
    let dark = Theme::dark();
    insta::assert_snapshot!("confirm_80x24", render(&app, &dark, 80, 24).backend());
    insta::assert_snapshot!("confirm_160x48", render(&app, &dark, 160, 48).backend());
}

#[test]
fn confirm_dialog_with_a_failed_check() {
    let mut app = three_envs(false);
    app.dialog = Some(ConfirmDialog {
        id: 1,
        plan: plan_view("prod", ConfirmPolicy::TypeName, false),
        typed: String::new(),
    });
    let term = render(&app, &Theme::dark(), 80, 24);
    insta::assert_snapshot!("confirm_failed_80x24", term.backend());
    // The failed check is red as well as spelled FAIL.
    let buf = term.backend().buffer();
    let fail = (0..buf.area.height)
        .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
        .find(|&(x, y)| {
            buf[(x, y)].symbol() == "F"
                && x + 3 < buf.area.width
                && buf[(x + 1, y)].symbol() == "A"
                && buf[(x + 2, y)].symbol() == "I"
                && buf[(x + 3, y)].symbol() == "L"
        })
        .expect("FAIL on screen");
    assert_eq!(buf[fail].fg, Color::Red);
}

#[test]
fn read_only() {
    let app = three_envs(true);
    let dark = Theme::dark();
    let small = render(&app, &dark, 80, 24);
    insta::assert_snapshot!("read_only_80x24", small.backend());
    let text = small.backend().to_string();
    assert!(text.contains("READ-ONLY"));
    assert!(!text.contains("flip"), "mutating keys are not offered");
    insta::assert_snapshot!("read_only_160x48", render(&app, &dark, 160, 48).backend());
}

#[test]
fn dead_backend() {
    let app = with_dead_prod(three_envs(false));
    let dark = Theme::dark();
    let small = render(&app, &dark, 80, 24);
    insta::assert_snapshot!("dead_backend_80x24", small.backend());
    let text = small.backend().to_string();
    assert!(text.contains("http://127.0.0.1:94"), "names the address");
    assert!(text.contains("error sending request"), "names the error");
    insta::assert_snapshot!(
        "dead_backend_160x48",
        render(&app, &dark, 160, 48).backend()
    );
}

#[test]
fn stale_data_shows_its_age_beside_the_error() {
    let mut app = three_envs(false);
    update(
        &mut app,
        Event::EnvUpdate {
            env: 2,
            status: Err("cannot reach http://127.0.0.1:94: timed out".into()),
            revisions: None,
            at: t0() + Duration::seconds(9),
        },
    );
    update(&mut app, Event::Tick(t0() + Duration::seconds(9)));
    let text = render(&app, &Theme::dark(), 80, 24).backend().to_string();
    assert!(text.contains("STALE 9s old"), "{text}");
    assert!(text.contains("DOWN"), "{text}");
    assert!(
        text.contains("payments"),
        "the last known routes stay visible"
    );
}

#[test]
fn help_and_toasts() {
    let mut app = three_envs(false);
    app.help = true;
    insta::assert_snapshot!("help_80x24", render(&app, &Theme::dark(), 80, 24).backend());
    app.help = false;
    update(
        &mut app,
        Event::Executed {
            id: 3,
            result: ExecResult {
                outcome: crate::domain::Outcome::Conflict,
                revision: None,
                error: Some("prod moved from revision 4 to 5; look again".into()),
            },
        },
    );
    insta::assert_snapshot!(
        "toast_80x24",
        render(&app, &Theme::dark(), 80, 24).backend()
    );
}

#[test]
fn monochrome() {
    let app = with_dialog(three_envs(false));
    let mono = Theme::monochrome();
    let term = render(&app, &mono, 80, 24);
    insta::assert_snapshot!("monochrome_80x24", term.backend());
    for cell in term.backend().buffer().content() {
        assert_eq!(cell.fg, Color::Reset);
        assert_eq!(cell.bg, Color::Reset);
    }
}

#[test]
fn health_dots_are_coloured_and_shaped_by_state() {
    let app = with_dead_prod(three_envs(false));
    let term = render(&app, &Theme::dark(), 80, 24);
    let buf = term.backend().buffer();
    let row: Vec<_> = (0..buf.area.width).map(|x| &buf[(x, 0)]).collect();
    let dots: Vec<(&str, Color)> = row
        .iter()
        .filter(|c| matches!(c.symbol(), "●" | "✖" | "▲" | "○"))
        .map(|c| (c.symbol(), c.fg))
        .collect();
    assert_eq!(
        dots,
        vec![("●", Color::Green), ("●", Color::Green), ("✖", Color::Red)]
    );
}

#[test]
fn no_size_panics() {
    let apps = [
        three_envs(false),
        with_dialog(three_envs(false)),
        with_dead_prod(three_envs(true)),
        {
            let mut a = three_envs(false);
            a.help = true;
            a
        },
    ];
    for app in &apps {
        for w in (0..=200).step_by(7) {
            for h in (0..=60).step_by(5) {
                render(app, &Theme::dark(), w, h);
            }
        }
    }
}
