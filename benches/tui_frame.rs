//! One cockpit frame with 500 services (upstreams), 200 routes and 200 flags, with live
//! metrics for every route, drawn into ratatui's TestBackend. Target: under 2 ms a frame.
//! The `tui_scale` group is the scale test: 1,000 services and 500 routes in each of
//! three environments.

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use signalbox::control::envfile::{ConfirmPolicy, EnvDef};
use signalbox::domain::metrics::{
    History, MetricsFeed, MetricsSample, RouteMetrics, Signal, Signals, UpstreamMetrics,
};
use signalbox::domain::status::{FlagStatus, TargetStatus, UpstreamStatus};
use signalbox::domain::{FlagState, GatewayStatus, RouteStatus};
use signalbox::tui::app::{App, Event, update};
use signalbox::tui::keymap::Key;
use signalbox::tui::theme::Theme;
use signalbox::tui::views;

fn def(name: &str) -> EnvDef {
    EnvDef {
        name: name.into(),
        kind: Default::default(),
        admin_url: "http://127.0.0.1:9080".into(),
        context: None,
        namespace: None,
        kubeconfig: None,
        promote_from: None,
        kube: Default::default(),
        token_env: None,
        token_file: None,
        confirm: ConfirmPolicy::Yes,
        read_only: false,
        max_canary_step: Some(25),
        canary_step: 5,
        freeze: vec![],
        metrics: None,
        gateway_url: None,
    }
}

fn status(services: usize, n_routes: usize) -> GatewayStatus {
    let upstreams = (0..services)
        .map(|i| UpstreamStatus {
            name: format!("svc-{i:03}"),
            targets: vec![TargetStatus {
                addr: format!("10.0.{}.{}:8080", i / 250, i % 250),
                healthy: i % 37 != 0,
                ejected: false,
            }],
        })
        .collect();
    let routes = (0..n_routes)
        .map(|i| RouteStatus {
            name: format!("route-{i:03}"),
            paths: vec![format!("/api/r{i}")],
            exact_paths: vec![],
            methods: vec!["GET".into(), "POST".into()],
            hosts: vec![],
            split: BTreeMap::from([
                (format!("svc-{:03}", (2 * i) % services), 90),
                (format!("svc-{:03}", (2 * i + 1) % services), 10),
            ]),
            canary_by_header: None,
            canary: Some(format!("svc-{:03}", (2 * i + 1) % services)),
            sticky: None,
            filters: vec!["rate_limit".into(), "cors".into()],
            flag: None,
        })
        .collect();
    let flags = (0..200)
        .map(|i| FlagStatus {
            key: format!("flag-{i:03}"),
            state: if i % 3 == 0 {
                FlagState::Disabled
            } else {
                FlagState::Enabled
            },
            default_variant: Some("off".into()),
            variants: vec!["on".into(), "off".into()],
            has_targeting: i % 2 == 0,
        })
        .collect();
    GatewayStatus {
        revision: 42,
        config_hash: "h".into(),
        routes,
        upstreams,
        flags,
    }
}

fn signals(v: f64) -> Signals {
    Signals {
        request_rate: Signal::value(10.0 + v),
        error_ratio_5xx: Signal::value(0.001 * v),
        error_ratio_4xx: Signal::value(0.002),
        latency_p50: Signal::value(0.02),
        latency_p95: Signal::value(0.05 + 0.001 * v),
        latency_p99: Signal::value(0.1),
    }
}

fn sample(now: DateTime<Utc>, services: usize, n_routes: usize) -> MetricsSample {
    let mut h = History::with_capacity(60);
    for i in 0..60 {
        h.push(signals((i % 7) as f64).point(now - Duration::seconds(60 - i)));
    }
    MetricsSample {
        environment: "prod".into(),
        source: "scrape".into(),
        sampled_at: now,
        window_secs: 30.0,
        overall: signals(1.0),
        overall_history: h.clone(),
        routes: (0..n_routes)
            .map(|i| RouteMetrics {
                route: format!("route-{i:03}"),
                signals: signals(i as f64 % 5.0),
                history: h.clone(),
                upstreams: vec![UpstreamMetrics {
                    upstream: format!("svc-{:03}", (2 * i) % services),
                    signals: signals(1.0),
                    history: h.clone(),
                }],
                comparison: None,
            })
            .collect(),
        gateway: None,
        problems: vec![],
    }
}

fn app(services: usize, routes: usize) -> App {
    let now = Utc::now();
    let mut app = App::new(vec![def("dev"), def("stage"), def("prod")], 2, false, now);
    for env in 0..3 {
        update(
            &mut app,
            Event::EnvUpdate {
                env,
                status: Ok(status(services, routes)),
                revisions: Some(vec![]),
                watches: Vec::new(),
                at: now,
            },
        );
        let mut feed = MetricsFeed::new("prod", "scrape");
        feed.latest = Some(std::sync::Arc::new(sample(now, services, routes)));
        update(
            &mut app,
            Event::Metrics {
                env,
                feed: Box::new(feed),
            },
        );
    }
    for _ in 0..100 {
        update(&mut app, Event::Key(Key::Char('j')));
    }
    app
}

fn frames(c: &mut Criterion, group: &str, mut app: App) {
    let theme = Theme::dark();
    for (name, w, h, view) in [
        ("overview_160x48", 160, 48, None),
        ("overview_80x24", 80, 24, None),
        ("all_envs_160x48", 160, 48, Some('a')),
        ("all_envs_80x24", 80, 24, Some('a')),
        ("flags_160x48", 160, 48, Some('F')),
    ] {
        update(&mut app, Event::Key(Key::Char('o')));
        if let Some(k) = view {
            update(&mut app, Event::Key(Key::Char(k)));
        }
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("backend");
        c.bench_function(&format!("{group}/{name}"), |b| {
            b.iter(|| {
                term.draw(|f| views::draw(f, black_box(&app), &theme))
                    .expect("draw");
            })
        });
    }
}

fn bench(c: &mut Criterion) {
    frames(c, "tui_frame", app(500, 200));
}

/// Issue 10's scale test: 1,000 services and 500 routes in each of three environments.
fn scale(c: &mut Criterion) {
    frames(c, "tui_scale", app(1000, 500));
}

criterion_group!(benches, bench, scale);
criterion_main!(benches);
