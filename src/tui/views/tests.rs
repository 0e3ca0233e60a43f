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
            watches: Vec::new(),
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
        wrong_name: false,
        walk: false,
    });
    app
}

fn with_dead_prod(mut app: App) -> App {
    app.envs[2].status = None;
    app.envs[2].updated = None;
    update(
        &mut app,
        Event::EnvUpdate {
            watches: Vec::new(),
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
fn a_wrong_name_on_enter_is_said_in_the_dialog() {
    let mut app = with_dialog(three_envs(false));
    if let Some(d) = app.dialog.as_mut() {
        d.wrong_name = true;
    }
    let text = render(&app, &Theme::monochrome(), 80, 24)
        .backend()
        .to_string();
    assert!(
        text.contains("✗ that is not prod: type it exactly, or Esc to cancel"),
        "{text}"
    );
}

#[test]
fn confirm_dialog_with_a_failed_check() {
    let mut app = three_envs(false);
    app.dialog = Some(ConfirmDialog {
        id: 1,
        plan: plan_view("prod", ConfirmPolicy::TypeName, false),
        typed: String::new(),
        wrong_name: false,
        walk: false,
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
            watches: Vec::new(),
            env: 2,
            status: Err("cannot reach http://127.0.0.1:94: timed out".into()),
            revisions: None,
            at: t0() + Duration::seconds(9),
        },
    );
    update(&mut app, Event::Tick(t0() + Duration::seconds(9)));
    let term = render(&app, &Theme::dark(), 80, 24);
    insta::assert_snapshot!("lost_backend_80x24", term.backend());
    let text = term.backend().to_string();
    assert!(text.contains("STALE 9s old"), "{text}");
    assert!(text.contains("DOWN"), "{text}");
    assert!(
        text.contains("prod admin API not answering"),
        "an error panel: {text}"
    );
    assert!(text.contains("timed out"), "with the error: {text}");
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
fn toasts_wrap_whole_and_stay_compact() {
    use crate::tui::app::{Toast, ToastKind};
    let mut app = three_envs(false);
    let toast = |kind, text: &str| Toast {
        kind,
        text: text.into(),
        until: t0() + Duration::seconds(30),
    };
    app.toasts = vec![
        toast(
            ToastKind::Failure,
            "cannot plan: this route splits over 3 upstreams; name the one to flip to",
        ),
        toast(
            ToastKind::Success,
            "✓ released — note: /tmp/rv/sb1/walks/notes/users-to-blue-in-stage-approved.md",
        ),
        toast(
            ToastKind::Failure,
            "✗ conflict: changed by someone else: stage moved from revision 3 to 4 while the plan was on screen; look again before changing it",
        ),
    ];
    let term = render(&app, &Theme::dark(), 80, 24);
    insta::assert_snapshot!("toasts_80x24", term.backend());
    let t = term.backend().to_string();
    // The newest wraps and is read whole.
    assert!(t.contains("look again before changing it"), "{t}");
    // Older ones take one line each, cut visibly.
    assert!(
        t.contains("✓ released — note: /tmp/rv/sb1/walks/notes/users-to-blue-in-stage-a…"),
        "{t}"
    );
    // The stack covers at most half of the body: the routes table's top half stays.
    let rows: Vec<&str> = t.lines().collect();
    let first_toast = rows.iter().position(|r| r.contains("┌─")).unwrap_or(0);
    assert!(
        rows[..first_toast]
            .iter()
            .any(|r| r.contains("/api/orders")),
        "{t}"
    );
    assert!(first_toast >= 2 + 21 / 2, "{t}");
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
        {
            let mut a = three_envs(false);
            a.view = crate::tui::keymap::View::Environments;
            a
        },
        {
            let mut a = three_envs(false);
            update(&mut a, Event::Key(crate::tui::keymap::Key::Char('H')));
            a
        },
        {
            let mut a = three_envs(false);
            a.view = crate::tui::keymap::View::Flags;
            update(&mut a, Event::Key(crate::tui::keymap::Key::Char(':')));
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

mod live_and_views {
    use super::*;
    use crate::domain::FlagState;
    use crate::domain::metrics::{
        Comparison, FeedError, History, MetricsFeed, MetricsSample, RoleSource, RouteMetrics,
        Signal, Signals, UpstreamMetrics, Verdict,
    };
    use crate::domain::status::FlagStatus;
    use crate::tui::app::{Input, InputKind};
    use crate::tui::keymap::{Key, View};

    fn signals(rate: f64, e5: f64, p95: f64) -> Signals {
        Signals {
            request_rate: Signal::value(rate),
            error_ratio_5xx: Signal::value(e5),
            error_ratio_4xx: Signal::value(0.004),
            latency_p50: Signal::value(p95 / 2.5),
            latency_p95: Signal::value(p95),
            latency_p99: Signal::value(p95 * 2.0),
        }
    }

    fn history(base: f64) -> History {
        let mut h = History::with_capacity(60);
        for i in 0..40i64 {
            let wave = (i as f64 / 4.0).sin().abs();
            h.push(
                signals(base * (0.5 + wave), 0.002 * wave, 0.04 + 0.02 * wave)
                    .point(t0() - Duration::seconds(40 - i)),
            );
        }
        h
    }

    fn upstream(name: &str, e5: f64, p95: f64) -> UpstreamMetrics {
        UpstreamMetrics {
            upstream: name.into(),
            signals: signals(5.0, e5, p95),
            history: history(5.0),
        }
    }

    pub fn sample(verdict: Verdict, canary_errors: f64) -> MetricsSample {
        MetricsSample {
            environment: "prod".into(),
            source: "scrape http://127.0.0.1:94/metrics".into(),
            sampled_at: t0(),
            window_secs: 30.0,
            overall: signals(31.0, 0.003, 0.045),
            overall_history: history(30.0),
            routes: vec![
                RouteMetrics {
                    route: "payments".into(),
                    signals: signals(12.4, canary_errors / 10.0, 0.052),
                    history: history(12.0),
                    upstreams: vec![
                        upstream("payments-v1", 0.001, 0.048),
                        upstream("payments-v2", canary_errors, 0.061),
                    ],
                    comparison: Some(Comparison {
                        baseline: "payments-v1".into(),
                        canary: "payments-v2".into(),
                        roles: RoleSource::Configured,
                        baseline_requests: 900.0,
                        canary_requests: 300.0,
                        errors: None,
                        latency: None,
                        verdict,
                    }),
                },
                RouteMetrics {
                    route: "users".into(),
                    signals: signals(18.0, 0.0, 0.021),
                    history: history(18.0),
                    upstreams: vec![upstream("users-blue", 0.0, 0.021)],
                    comparison: None,
                },
            ],
            gateway: None,
            problems: vec![],
        }
    }

    fn feed(sample: Option<MetricsSample>, error: Option<&str>) -> MetricsFeed {
        let mut f = MetricsFeed::new("prod", "scrape http://127.0.0.1:94/metrics");
        f.latest = sample.map(std::sync::Arc::new);
        f.error = error.map(|m| FeedError {
            message: m.into(),
            failed_at: t0(),
            consecutive_failures: 3,
        });
        f
    }

    fn with_metrics(mut app: App, f: MetricsFeed) -> App {
        for i in 0..app.envs.len() {
            update(
                &mut app,
                Event::Metrics {
                    env: i,
                    feed: Box::new(f.clone()),
                },
            );
        }
        // The payments route is the one with a canary.
        update(&mut app, Event::Key(Key::Char('j')));
        app
    }

    fn text(app: &App, w: u16, h: u16) -> String {
        render(app, &Theme::dark(), w, h).backend().to_string()
    }

    #[test]
    fn live_panels() {
        let app = with_metrics(
            three_envs(false),
            feed(
                Some(sample(
                    Verdict::Fail {
                        reasons: vec!["5xx 4.10% vs 0.10% (p=0.001)".into()],
                    },
                    0.041,
                )),
                None,
            ),
        );
        let dark = Theme::dark();
        let small = render(&app, &dark, 80, 24);
        insta::assert_snapshot!("live_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains("live: payments"), "{t}");
        assert!(t.contains("12.4/s"), "{t}");
        assert!(t.contains("canary worse"), "{t}");
        insta::assert_snapshot!("live_160x48", render(&app, &dark, 160, 48).backend());
        let wide = text(&app, 160, 48);
        for want in ["p50", "p95", "p99", "v1 0.10%", "v2 ✗ 4.10%"] {
            assert!(wide.contains(want), "{want}: {wide}");
        }
    }

    /// The canary walk of `views::walk`'s tests, paused after its analysis, in stage.
    fn walking(app: App) -> App {
        use crate::tui::app::{WalkEvent, WalkUi};
        use crate::walk::machine::{PauseKind, StepResult};
        let mut app = with_metrics(app, feed(Some(sample(Verdict::Pass, 0.001)), None));
        let start = t0() - Duration::seconds(200);
        let mut st = crate::tui::views::walk::tests::analysis_from(start);
        st.finish_step(
            2,
            StepResult::Done {
                detail: "gates passed".into(),
                revision: None,
            },
            start + Duration::seconds(122),
        );
        st.start_step(
            3,
            start + Duration::seconds(122),
            Some(start + Duration::seconds(122 + 900)),
        );
        st.finish_step(
            3,
            StepResult::Paused {
                reason: "look at the dashboards".into(),
                kind: PauseKind::Approval,
            },
            start + Duration::seconds(122),
        );
        app.walk = Some(WalkUi::new("examples/runbooks/canary.yaml"));
        update(&mut app, Event::Key(Key::Char('W')));
        for ev in [
            WalkEvent::Started {
                env: "stage".into(),
                notice: None,
            },
            WalkEvent::State(Box::new(st)),
            WalkEvent::Line("3/8 stage: analyze payments — done: gates passed".into()),
            WalkEvent::Line("4/8 stage: pause — paused: look at the dashboards".into()),
            WalkEvent::Decide {
                id: 1,
                kind: PauseKind::Approval,
                reason: "look at the dashboards".into(),
            },
        ] {
            update(&mut app, Event::Walk(ev));
        }
        app
    }

    #[test]
    fn the_walkthrough_view() {
        let app = walking(three_envs(false));
        let dark = Theme::dark();
        let small = render(&app, &dark, 80, 24);
        insta::assert_snapshot!("walk_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(
            t.contains("look at the dashboards — c continue · s skip · e retry · A abort"),
            "{t}"
        );
        assert!(t.contains("13m41s left"), "the pause's countdown: {t}");
        assert!(
            t.contains("live panel hidden (needs 120 cols or 34 rows)"),
            "{t}"
        );
        assert!(
            t.contains("c continue"),
            "the hint bar offers the walk's keys: {t}"
        );
        assert!(
            !t.contains("rollback"),
            "no manual rollback in the walk view: {t}"
        );

        let wide = render(&app, &dark, 160, 45);
        insta::assert_snapshot!("walk_160x45", wide.backend());
        let w = wide.backend().to_string();
        assert!(w.contains("live: payments"), "the walk's route, live: {w}");
        assert!(
            w.contains("4/8 stage: pause — paused"),
            "the progress log: {w}"
        );
        assert!(
            w.contains("payments-v2    1/1 healthy"),
            "the upstreams: {w}"
        );

        // Tall but narrow: the live panel goes below.
        let tall = text(&app, 80, 40);
        assert!(tall.contains("live: payments"), "{tall}");

        // Skip asks for a reason, in a popup.
        let mut app = app;
        update(&mut app, Event::Key(Key::Char('s')));
        for c in "dashboards are down".chars() {
            update(&mut app, Event::Key(Key::Char(c)));
        }
        let popup = render(&app, &dark, 80, 24);
        insta::assert_snapshot!("walk_skip_80x24", popup.backend());
        let p = popup.backend().to_string();
        assert!(p.contains("reason: dashboards are down"), "{p}");
        assert!(p.contains("Enter skip"), "{p}");

        // Every size, with and without the popup, draws.
        for a in [&app, &walking(three_envs(true))] {
            for w in (0..=200).step_by(9) {
                for h in (0..=60).step_by(4) {
                    render(a, &dark, w, h);
                }
            }
        }
    }

    #[test]
    fn the_walkthrough_view_before_any_walk_and_when_one_failed_to_start() {
        use crate::tui::app::{WalkEnd, WalkEvent, WalkUi};
        let mut app = three_envs(false);
        update(&mut app, Event::Key(Key::Char('W')));
        assert!(text(&app, 80, 24).contains("start one with :walk RUNBOOK"));
        app.walk = Some(WalkUi::new("nope.yaml"));
        update(
            &mut app,
            Event::Walk(WalkEvent::Ended(WalkEnd::Error(
                "cannot read nope.yaml: No such file or directory".into(),
            ))),
        );
        let t = text(&app, 80, 24);
        assert!(t.contains("did not start"), "{t}");
        assert!(t.contains("No such file"), "{t}");
        let hints = t.lines().last().unwrap_or_default();
        assert!(
            !hints.contains("continue") && !hints.contains("abort"),
            "no walk keys without a walk to answer: {hints}"
        );
    }

    #[test]
    fn error_ratios_are_coloured_by_threshold() {
        let app = with_metrics(
            three_envs(false),
            feed(Some(sample(Verdict::Pass, 0.041)), None),
        );
        let term = render(&app, &Theme::dark(), 160, 48);
        let buf = term.backend().buffer();
        let find = |needle: &str| {
            (0..buf.area.height).find_map(|y| {
                let row: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
                row.find(needle).map(|byte| {
                    let x = row[..byte].chars().count() as u16;
                    buf[(x, y)].fg
                })
            })
        };
        assert_eq!(find("4.10%"), Some(Color::Red), "canary above 1%");
        assert_eq!(find("0.10%"), Some(Color::Green), "stable at 0.1%");
        assert_eq!(find("✓ canary ok"), Some(Color::Green));
    }

    #[test]
    fn error_ratios_carry_a_symbol_without_colour_and_when_selected() {
        // Route 5xx 1.80% and canary 18.00%: bad; then route 0.20%: a warning.
        let mut app = with_metrics(
            three_envs(false),
            feed(Some(sample(Verdict::Pass, 0.18)), None),
        );
        let mono = Theme::monochrome();
        let t = render(&app, &mono, 80, 24).backend().to_string();
        assert!(t.contains("5xx   ✗ 1.80%"), "{t}");
        let wide = render(&app, &mono, 160, 48).backend().to_string();
        assert!(wide.contains("v2 ✗ 18.00% p95"), "{wide}");
        // All environments: the selected (highlighted) row keeps its mark, under a header
        // that says which number is the 5xx ratio.
        update(&mut app, Event::Key(Key::Char('a')));
        let t = render(&app, &mono, 80, 24).backend().to_string();
        assert!(t.contains("traffic         5xx"), "{t}");
        let selected = t
            .lines()
            .find(|l| l.contains("▶ payments"))
            .unwrap_or_default();
        assert!(selected.contains("v2 5%       ✗ 1.80%"), "{t}");
        assert!(t.contains("5xx ✗ 1.80%"), "the detail too: {t}");
        let app = with_metrics(
            three_envs(false),
            feed(Some(sample(Verdict::Pass, 0.02)), None),
        );
        let t = render(&app, &mono, 80, 24).backend().to_string();
        assert!(t.contains("5xx   ! 0.20%"), "{t}");
    }

    #[test]
    fn a_dead_metrics_source_is_an_error_on_its_panel() {
        let app = with_metrics(
            three_envs(false),
            feed(
                None,
                Some("cannot reach http://127.0.0.1:94/metrics: connection refused"),
            ),
        );
        let small = render(&app, &Theme::dark(), 80, 24);
        insta::assert_snapshot!("metrics_dead_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains("metrics unavailable"), "{t}");
        assert!(t.contains("connection refused"), "{t}");
        assert!(t.contains("payments"), "routes still show");
    }

    #[test]
    fn a_failing_refresh_marks_the_last_sample_stale() {
        let mut app = with_metrics(
            three_envs(false),
            feed(
                Some(sample(
                    Verdict::NotEnoughData {
                        reason: "canary has 40 requests, needs 200".into(),
                    },
                    0.0,
                )),
                Some("http://127.0.0.1:94/metrics timed out after 2.0s"),
            ),
        );
        update(&mut app, Event::Tick(t0() + Duration::seconds(7)));
        let t = text(&app, 160, 48);
        assert!(t.contains("7s old · STALE"), "{t}");
        assert!(t.contains("timed out after 2.0s"), "{t}");
        assert!(t.contains("not enough data"), "{t}");
    }

    #[test]
    fn environments_side_by_side() {
        let mut app = with_metrics(
            three_envs(false),
            feed(Some(sample(Verdict::Pass, 0.002)), None),
        );
        update(
            &mut app,
            Event::EnvUpdate {
                watches: Vec::new(),
                env: 0,
                status: Ok(status(9, 50)),
                revisions: None,
                at: t0(),
            },
        );
        update(&mut app, Event::Key(Key::Char('a')));
        assert_eq!(app.view, View::Environments);
        let dark = Theme::dark();
        let small = render(&app, &dark, 80, 24);
        insta::assert_snapshot!("envs_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains("v2 50%") && t.contains("v2 5%"), "{t}");
        insta::assert_snapshot!("envs_160x48", render(&app, &dark, 160, 48).backend());
    }

    #[test]
    fn many_environments_pan_around_the_current_one_at_80_columns() {
        let defs = ["dev", "qa", "stage", "perf", "canary", "prod"]
            .iter()
            .map(|n| def(n, ConfirmPolicy::Yes, false))
            .collect();
        let mut app = app_with(defs, false);
        update(&mut app, Event::Key(Key::Char('6')));
        update(&mut app, Event::Key(Key::Char('a')));
        let t = text(&app, 80, 24);
        assert!(t.contains("3 of 6"), "{t}");
        assert!(t.contains("prod r4") && !t.contains("dev r4"), "{t}");
    }

    fn with_history(mut app: App) -> App {
        update(&mut app, Event::Key(Key::Char('H')));
        update(
            &mut app,
            Event::Diff {
                env: 2,
                number: 4,
                result: Ok(vec![
                    "~ route payments: payments-v1 95 / payments-v2 5 → payments-v1 90 / payments-v2 10".into(),
                    "~ flag new-checkout state: DISABLED → ENABLED".into(),
                    "+ route search: search-v1 100".into(),
                    "- upstream legacy".into(),
                ]),
            },
        );
        app
    }

    #[test]
    fn history_with_the_diff_of_the_selected_revision() {
        let app = with_history(three_envs(false));
        let dark = Theme::dark();
        let small = render(&app, &dark, 80, 24);
        insta::assert_snapshot!("history_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains("revision 4 · before → after"), "{t}");
        assert!(t.contains("payments-v1 90"), "{t}");
        insta::assert_snapshot!("history_160x48", render(&app, &dark, 160, 48).backend());
        let mut moved = app;
        update(&mut moved, Event::Key(Key::Char('j')));
        assert!(text(&moved, 80, 24).contains("reading revision 3"));
    }

    #[test]
    fn history_interleaves_the_audit_journal() {
        use crate::domain::Outcome;
        use crate::tui::app::JournalRead;
        use crate::tui::app::tests::journal_entry;
        let mut app = with_history(three_envs(false));
        // Revisions are at t0-40..-10 min; the journal adds a refusal between 3 and 4, a
        // failure after 4, and 4's own entry (merged into its row).
        update(
            &mut app,
            Event::Journal(Ok(JournalRead {
                entries: vec![
                    journal_entry(
                        "prod",
                        -15,
                        Outcome::Refused,
                        None,
                        Some("check failed: canary step"),
                    ),
                    journal_entry("prod", -10, Outcome::Applied, Some(4), None),
                    journal_entry(
                        "prod",
                        -5,
                        Outcome::Failed,
                        None,
                        Some("cannot reach http://127.0.0.1:94: connection refused"),
                    ),
                    journal_entry("stage", -4, Outcome::Cancelled, None, None),
                ],
                skipped: 0,
            })),
        );
        let dark = Theme::dark();
        // The newest row (the failure) is selected: its reason and before → after show.
        let small = render(&app, &dark, 80, 24);
        insta::assert_snapshot!("history_journal_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains("why: cannot reach http://127.0.0.1:94"), "{t}");
        assert!(t.contains("+ payments-v1 50 / payments-v2 50"), "{t}");
        assert!(!t.contains("cancelled"), "stage's entry is not prod's: {t}");
        insta::assert_snapshot!(
            "history_journal_160x48",
            render(&app, &dark, 160, 48).backend()
        );
        // Down to revision 4: its diff with the journal's line on top.
        update(&mut app, Event::Key(Key::Char('j')));
        let t = text(&app, 80, 24);
        assert!(t.contains("revision 4 · before → after"), "{t}");
        assert!(t.contains("applied by bo@laptop · checks 1/1"), "{t}");
        // Down to the refusal: the failed check is red.
        update(&mut app, Event::Key(Key::Char('j')));
        let term = render(&app, &dark, 80, 24);
        let t = term.backend().to_string();
        assert!(t.contains("✗ canary step: 45 points"), "{t}");
        let buf = term.backend().buffer();
        let cross = (0..buf.area.height)
            .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
            .find(|&(x, y)| buf[(x, y)].symbol() == "✗" && y > 12)
            .expect("✗ on screen");
        assert_eq!(buf[cross].fg, Color::Red);
    }

    #[test]
    fn flags_view() {
        let mut app = three_envs(false);
        let mut s = status(4, 5);
        s.flags = vec![
            FlagStatus {
                key: "new-checkout".into(),
                state: FlagState::Enabled,
                default_variant: Some("off".into()),
                variants: vec!["on".into(), "off".into()],
                has_targeting: true,
            },
            FlagStatus {
                key: "search-ranking".into(),
                state: FlagState::Disabled,
                default_variant: Some("classic".into()),
                variants: vec!["classic".into(), "semantic".into()],
                has_targeting: false,
            },
        ];
        update(
            &mut app,
            Event::EnvUpdate {
                watches: Vec::new(),
                env: 2,
                status: Ok(s),
                revisions: None,
                at: t0(),
            },
        );
        update(&mut app, Event::Key(Key::Char('F')));
        let small = render(&app, &Theme::dark(), 80, 24);
        insta::assert_snapshot!("flags_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains("● on") && t.contains("○ off"), "{t}");
        assert!(
            t.contains("t toggle"),
            "the hint bar offers the toggle here: {t}"
        );
    }

    #[test]
    fn palette_and_filter() {
        let mut app = three_envs(false);
        app.input = Some(Input {
            kind: InputKind::Palette,
            text: "fl".into(),
            error: None,
        });
        let small = render(&app, &Theme::dark(), 80, 24);
        insta::assert_snapshot!("palette_80x24", small.backend());
        let t = small.backend().to_string();
        assert!(t.contains(":fl▏"), "{t}");
        assert!(t.contains("flag KEY on|off|VARIANT"), "{t}");
        assert!(t.contains("flip [ROUTE [UPSTREAM]]"), "{t}");

        app.input = None;
        for c in "/pay".chars() {
            update(&mut app, Event::Key(Key::Char(c)));
        }
        update(&mut app, Event::Key(Key::Enter));
        let t = text(&app, 80, 24);
        assert!(t.contains("routes (1 of 3 matching /pay)"), "{t}");
        assert!(!t.contains("/api/orders"), "{t}");
        assert!(t.contains("/pay Esc clear"), "the hint bar says how: {t}");
        update(&mut app, Event::Key(Key::Esc));
        let t = text(&app, 80, 24);
        assert!(t.contains("routes (3)"), "Esc clears the kept filter: {t}");
        assert!(t.contains("/api/orders"), "{t}");

        // The filter prompt is a prompt, not the palette: no list of commands above it.
        update(&mut app, Event::Key(Key::Char('/')));
        let t = text(&app, 80, 24);
        assert!(t.contains("/▏"), "{t}");
        assert!(!t.contains(" commands "), "{t}");
        assert!(!t.contains("flip [ROUTE [UPSTREAM]]"), "{t}");
    }

    #[test]
    fn light_and_high_contrast_themes_render() {
        let app = with_metrics(
            three_envs(false),
            feed(Some(sample(Verdict::Pass, 0.002)), None),
        );
        for name in ["light", "high-contrast"] {
            let theme = Theme::select(Some(name), false, None).unwrap();
            let term = render(&app, &theme, 80, 24);
            let dark = render(&app, &Theme::dark(), 80, 24);
            assert_eq!(
                term.backend().to_string(),
                dark.backend().to_string(),
                "themes change colours, never text"
            );
        }
    }
}

#[test]
fn wide_routes_give_their_width_to_split_paths_and_methods_and_cut_with_an_ellipsis() {
    let mut app = three_envs(false);
    let mut s = status(4, 50);
    for r in &mut s.routes {
        r.filters = vec!["cors".into(), "key_auth".into(), "rate_limit".into()];
    }
    update(
        &mut app,
        Event::EnvUpdate {
            watches: Vec::new(),
            env: 2,
            status: Ok(s),
            revisions: None,
            at: t0(),
        },
    );
    let t = render(&app, &Theme::dark(), 120, 40).backend().to_string();
    assert!(t.contains("v1 50% / v2 50%"), "the split stays: {t}");
    assert!(t.contains("/api/payments "), "{t}");
    assert!(!t.contains("GET,POST,"), "no cut without …: {t}");
    assert!(!t.contains("cors,key_auth,ra"), "{t}");
    let wide = render(&app, &Theme::dark(), 160, 48).backend().to_string();
    assert!(wide.contains("GET,POST blue 100% / green 0%"), "{wide}");
    assert!(
        wide.contains("cors,key_auth,rate_l…"),
        "cut visibly: {wide}"
    );
    // History cuts a long description with …, never into another number.
    app.envs[2].revisions[0].description =
        "set users weights to users-blue 0 / users-green 100".into();
    update(&mut app, Event::Key(crate::tui::keymap::Key::Char('H')));
    let t = render(&app, &Theme::dark(), 80, 24).backend().to_string();
    assert!(
        t.contains("set users weights to users-blue 0 / users-gre…"),
        "{t}"
    );
}

#[test]
fn a_long_route_list_scrolls_to_keep_the_selection_in_view() {
    let mut app = three_envs(false);
    let mut s = status(4, 5);
    let template = s.routes[2].clone();
    for i in 0..40 {
        let mut r = template.clone();
        r.name = format!("r{i:02}");
        s.routes.push(r);
    }
    update(
        &mut app,
        Event::EnvUpdate {
            watches: Vec::new(),
            env: 2,
            status: Ok(s),
            revisions: None,
            at: t0(),
        },
    );
    for _ in 0..30 {
        update(&mut app, Event::Key(crate::tui::keymap::Key::Char('j')));
    }
    let text = render(&app, &Theme::dark(), 80, 24).backend().to_string();
    assert!(
        text.contains("▶ r27"),
        "the 31st route is selected and shown: {text}"
    );
    assert!(
        !text.contains(" users "),
        "the first rows scrolled away: {text}"
    );
}

/// A Kubernetes environment whose secrets watch is refused (RBAC) and retrying.
fn kube_env_with_a_failing_watch(state: crate::domain::kube::WatchState) -> App {
    use crate::control::envfile::EnvKind;
    use crate::domain::kube::{WatchState, WatchStatus};
    let mut prod = def("prod", ConfirmPolicy::TypeName, false);
    prod.kind = EnvKind::Kubernetes;
    prod.context = Some("prod-cluster".into());
    prod.namespace = Some("shop".into());
    let mut app = app_with(vec![def("stage", ConfirmPolicy::Yes, false), prod], false);
    let live = WatchState::Live {
        since: t0() - Duration::minutes(5),
    };
    let mut watches: Vec<WatchStatus> = ["configmaps", "deployments", "httproutes", "services"]
        .into_iter()
        .map(|k| WatchStatus {
            kind: k.into(),
            state: live.clone(),
        })
        .collect();
    watches.push(WatchStatus {
        kind: "secrets".into(),
        state,
    });
    update(
        &mut app,
        Event::EnvUpdate {
            env: 1,
            status: Ok(status(4, 5)),
            revisions: None,
            watches,
            at: t0(),
        },
    );
    update(&mut app, Event::Key(crate::tui::keymap::Key::Char('2')));
    // Long after the last change: watched data is not stale by age alone.
    update(&mut app, Event::Tick(t0() + Duration::minutes(2)));
    app
}

#[test]
fn a_retrying_watch_shows_in_the_header_and_its_own_panel() {
    use crate::domain::kube::WatchState;
    let app = kube_env_with_a_failing_watch(WatchState::Retrying {
        error: "forbidden: cannot list secrets in namespace \"shop\" (context prod-cluster)".into(),
        since: t0() - Duration::seconds(40),
        attempts: 4,
    });
    let dark = Theme::dark();
    let small = render(&app, &dark, 80, 24);
    insta::assert_snapshot!("watch_retrying_80x24", small.backend());
    let text = small.backend().to_string();
    assert!(text.contains("▲ watch retrying"), "{text}");
    assert!(text.contains("MAY BE BEHIND: secrets"), "{text}");
    assert!(text.contains("kube://prod-cluster/shop"), "{text}");
    assert!(text.contains("attempt 4"), "{text}");
    assert!(text.contains("forbidden: cannot list"), "{text}");
    assert!(text.contains("secrets in namespace \"shop\""), "{text}");
    assert!(text.contains("4 of 5 watches live"), "{text}");
    let wide = render(&app, &dark, 160, 48);
    insta::assert_snapshot!("watch_retrying_160x48", wide.backend());
    // The panel's border is the warning colour; a stopped watch makes it red.
    let buf = small.backend().buffer();
    let corner = (0..buf.area.height)
        .find(|&y| buf[(0, y)].symbol() == "┌")
        .expect("a panel on screen");
    assert_eq!(buf[(0, corner)].fg, dark.warn.fg.unwrap_or(Color::Reset));

    let stopped = kube_env_with_a_failing_watch(WatchState::Stopped {
        error: "the watch stream ended".into(),
    });
    let term = render(&stopped, &dark, 80, 24);
    insta::assert_snapshot!("watch_stopped_80x24", term.backend());
    let text = term.backend().to_string();
    assert!(text.contains("▲ watch stopped"), "{text}");
    assert!(text.contains("stopped: the watch stream ended"), "{text}");
    let buf = term.backend().buffer();
    let corner = (0..buf.area.height)
        .find(|&y| buf[(0, y)].symbol() == "┌")
        .expect("a panel on screen");
    assert_eq!(buf[(0, corner)].fg, dark.bad.fg.unwrap_or(Color::Reset));
}

#[test]
fn a_watched_environment_with_every_watch_live_is_current_however_old() {
    use crate::domain::kube::WatchState;
    let app = kube_env_with_a_failing_watch(WatchState::Live { since: t0() });
    let text = render(&app, &Theme::dark(), 80, 24).backend().to_string();
    assert!(text.contains("● connected"), "{text}");
    assert!(text.contains("watching 5 kinds"), "{text}");
    assert!(
        !text.contains("STALE") && !text.contains("watches live"),
        "{text}"
    );
    assert!(!app.env().unwrap().is_stale(app.now));
}
