//! The metrics layer against a real Prometheus server and a real gateway.
//!
//! A real gateway (in-process, on loopback sockets) splits a route between two real
//! upstream servers whose error ratio and latency distribution the test controls, while a
//! bounded client loop sends real HTTP requests through it. Prometheus scrapes the
//! gateway's admin `/metrics` every second. The scrape source and the PromQL source must
//! then agree with each other and with the known truth, and both must see errors and
//! latency injected into the canary.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::any;
use chrono::Utc;
use signalbox::domain::metrics::{MetricsFeed, MetricsSample, Signal, Verdict};
use signalbox::gateway::config::units::Dur;
use signalbox::gateway::metrics::LATENCY_BUCKETS;
use signalbox::metrics::promql::{Level, PromQlConfig, PromQlSource, SignalKind, Target};
use signalbox::metrics::quantile::quantile_of;
use signalbox::metrics::{CanaryRoles, MetricsPoller, Preset, ScrapeConfig, ScrapeSource};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::prometheus::Prometheus;

const ROUTE: &str = "users";
const BLUE: &str = "users-blue";
const GREEN: &str = "users-green";
const WINDOW_SECS: u64 = 10;
const BASE_LATENCY: f64 = 0.020;

/// What one upstream does; changeable while it runs.
struct Behaviour {
    error_ratio: AtomicU64,
    latency_mean: AtomicU64,
    /// Request count and the error and 404 accumulators: evenly spread outcomes, so any
    /// window holds close to the exact ratios.
    seq: Mutex<(u64, f64, f64)>,
}

impl Behaviour {
    fn new(error_ratio: f64, latency_mean: f64) -> Arc<Self> {
        Arc::new(Self {
            error_ratio: AtomicU64::new(error_ratio.to_bits()),
            latency_mean: AtomicU64::new(latency_mean.to_bits()),
            seq: Mutex::new((0, 0.0, 0.0)),
        })
    }
    fn set(&self, error_ratio: f64, latency_mean: f64) {
        self.error_ratio
            .store(error_ratio.to_bits(), Ordering::SeqCst);
        self.latency_mean
            .store(latency_mean.to_bits(), Ordering::SeqCst);
    }
    /// The next request's status (2% 503 and 3% 404 by default) and latency, drawn from
    /// an exponential distribution through a golden-ratio sequence.
    fn next(&self) -> (StatusCode, Duration) {
        let error_ratio = f64::from_bits(self.error_ratio.load(Ordering::SeqCst));
        let mean = f64::from_bits(self.latency_mean.load(Ordering::SeqCst));
        let mut seq = self.seq.lock().unwrap();
        let (i, err_acc, client_acc) = &mut *seq;
        *i += 1;
        let u = (*i as f64 * 0.618_033_988_749_894_9).fract();
        let latency = -mean * (1.0 - u).ln();
        *err_acc += error_ratio;
        *client_acc += 0.03;
        let status = if *err_acc >= 1.0 {
            *err_acc -= 1.0;
            StatusCode::SERVICE_UNAVAILABLE
        } else if *client_acc >= 1.0 {
            *client_acc -= 1.0;
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        (status, Duration::from_secs_f64(latency))
    }
}

/// A real upstream HTTP server driven by a [`Behaviour`].
async fn upstream(b: Arc<Behaviour>) -> (SocketAddr, JoinHandle<()>) {
    async fn answer(State(b): State<Arc<Behaviour>>) -> StatusCode {
        let (status, latency) = b.next();
        tokio::time::sleep(latency).await;
        status
    }
    let app = Router::new().fallback(any(answer)).with_state(b);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

struct LiveGateway {
    gw: common::Gateway,
    green: Arc<Behaviour>,
    tasks: Vec<JoinHandle<()>>,
}

impl LiveGateway {
    fn metrics_addr(&self) -> SocketAddr {
        self.gw.running().admin_addr
    }
}

impl Drop for LiveGateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A real gateway splitting `users` 2:1 between blue and green, and about 120 requests a
/// second through it (a third of them POSTs), plus a few unrouted 404s and requests over
/// a rate limit, so the exposition is complete. The client loop stops when this is
/// dropped, and every request has a timeout.
async fn live_gateway() -> LiveGateway {
    let blue = Behaviour::new(0.02, BASE_LATENCY);
    let green = Behaviour::new(0.02, BASE_LATENCY);
    let (blue_addr, blue_task) = upstream(blue.clone()).await;
    let (green_addr, green_task) = upstream(green.clone()).await;
    let gw = common::gateway(&format!(
        r#"
listen: 127.0.0.1:0
upstreams:
  {BLUE}: {{ targets: ["{blue_addr}"], retries: 0 }}
  {GREEN}: {{ targets: ["{green_addr}"], retries: 0 }}
routes:
  - name: {ROUTE}
    paths: [/api/users]
    methods: [GET, POST]
    split: {{ {BLUE}: 67, {GREEN}: 33 }}
  - name: limited
    paths: [/limited]
    split: {{ {BLUE}: 100 }}
    plugins:
      rate_limit: {{ per_second: 1, burst: 1 }}
"#
    ))
    .await;
    let base = gw.url("");
    let traffic = tokio::spawn(async move {
        let client = common::client();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            let mut paths = vec![(reqwest::Method::GET, "/api/users"); 4];
            paths.extend([
                (reqwest::Method::POST, "/api/users"),
                (reqwest::Method::POST, "/api/users"),
            ]);
            if n.is_multiple_of(5) {
                paths.push((reqwest::Method::GET, "/limited"));
                paths.push((reqwest::Method::GET, "/limited"));
            }
            if n.is_multiple_of(10) {
                paths.push((reqwest::Method::GET, "/not-routed"));
            }
            for (method, path) in paths {
                let req = client
                    .request(method, format!("{base}{path}"))
                    .timeout(Duration::from_secs(5));
                tokio::spawn(async move {
                    let _ = req.send().await;
                });
            }
        }
    });
    LiveGateway {
        gw,
        green,
        tasks: vec![traffic, blue_task, green_task],
    }
}

/// The p95 Prometheus would compute from the gateway's buckets if they held exactly an
/// exponential distribution with this mean: bucket fractions from the CDF, then
/// `histogram_quantile`'s interpolation.
fn expected_p95(mean: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = LATENCY_BUCKETS
        .iter()
        .map(|&le| (le, 1.0 - (-le / mean).exp()))
        .collect();
    buckets.push((f64::INFINITY, 1.0));
    quantile_of(0.95, &buckets)
}

fn roles() -> CanaryRoles {
    let mut r = CanaryRoles::default();
    r.set(ROUTE, BLUE, GREEN);
    r
}

/// Waits for a sample taken after `after` that satisfies `ok`.
async fn next_sample(
    rx: &mut watch::Receiver<MetricsFeed>,
    after: chrono::DateTime<Utc>,
    within: Duration,
    what: &str,
    ok: impl Fn(&MetricsSample) -> bool,
) -> MetricsSample {
    let deadline = Instant::now() + within;
    loop {
        {
            let feed = rx.borrow_and_update();
            if let Some(s) = &feed.latest
                && s.sampled_at > after
                && ok(s)
            {
                return MetricsSample::clone(s);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let feed = rx.borrow().clone();
        assert!(
            !left.is_zero(),
            "{what}: no suitable sample within {within:?}; last feed: {}",
            serde_json::to_string_pretty(&feed).unwrap()
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

fn value(s: &Signal, what: &str) -> f64 {
    s.get()
        .unwrap_or_else(|| panic!("{what}: expected a value, got {s:?}"))
}

fn upstream_signals<'a>(
    s: &'a MetricsSample,
    upstream: &str,
) -> &'a signalbox::domain::metrics::Signals {
    &s.route(ROUTE)
        .and_then(|r| r.upstream(upstream))
        .unwrap_or_else(|| panic!("no {ROUTE}/{upstream} in {}", s.source))
        .signals
}

/// One line per source and upstream, printed for the record (`--nocapture`).
fn report(phase: &str, samples: [(&str, &MetricsSample); 2]) {
    for (name, s) in samples {
        for up in [BLUE, GREEN] {
            let x = upstream_signals(s, up);
            eprintln!(
                "{phase:>8} {name:>6} {up:<11} rate {:>6.2}/s  5xx {:.4}  4xx {:.4}  p50 {:.4}s  p95 {:.4}s  p99 {:.4}s",
                x.request_rate.get().unwrap_or(f64::NAN),
                x.error_ratio_5xx.get().unwrap_or(f64::NAN),
                x.error_ratio_4xx.get().unwrap_or(f64::NAN),
                x.latency_p50.get().unwrap_or(f64::NAN),
                x.latency_p95.get().unwrap_or(f64::NAN),
                x.latency_p99.get().unwrap_or(f64::NAN),
            );
        }
        if let Some(c) = s.route(ROUTE).and_then(|r| r.comparison.as_ref()) {
            eprintln!("{phase:>8} {name:>6} verdict {:?}", c.verdict);
        }
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

/// Every preset's every query, at every level, with and without a selector, is valid
/// PromQL to a real Prometheus (a syntax error is a 400 with `bad_data`).
async fn presets_are_valid_promql(prom: &Prometheus) {
    for preset in Preset::ALL {
        for selector in ["", r#"{namespace="prod"}"#] {
            let mut c = PromQlConfig::new(prom.url());
            c.preset = preset;
            c.selector = selector.into();
            let src = PromQlSource::new("test", c).unwrap();
            let pair = Target::Upstream(signalbox::metrics::aggregate::Pair {
                route: "a.b".into(),
                upstream: "v\"1".into(),
            });
            for kind in [
                SignalKind::Rate,
                SignalKind::Err5xx,
                SignalKind::Err4xx,
                SignalKind::P50,
                SignalKind::P95,
                SignalKind::P99,
                SignalKind::Buckets,
            ] {
                for level in [Level::Upstream, Level::Route, Level::Overall] {
                    let q = src.query_for(kind, level, Some(&pair)).unwrap();
                    let v = prom.query_raw(&q).await;
                    assert_eq!(
                        v["status"], "success",
                        "{preset:?} {kind:?} {level:?}: {q}\n{v}"
                    );
                }
            }
        }
    }
    // A per-target template with regex placeholders, as documented.
    let q = r#"sum(rate(signalbox_requests_total{route=~"{route}",upstream=~"{upstream}",{selector}}[{window}]))"#;
    let mut c = PromQlConfig::new(prom.url());
    c.queries.request_rate = Some(q.into());
    c.targets = vec![signalbox::metrics::promql::TargetConfig {
        route: ROUTE.into(),
        upstreams: vec![BLUE.into()],
    }];
    let src = PromQlSource::new("test", c).unwrap();
    for t in [
        Target::Overall,
        Target::Route("a.b|c".into()),
        Target::Upstream(signalbox::metrics::aggregate::Pair {
            route: "x\\y".into(),
            upstream: "(v1)".into(),
        }),
    ] {
        let q = src
            .query_for(SignalKind::Rate, Level::Upstream, Some(&t))
            .unwrap();
        let v = prom.query_raw(&q).await;
        assert_eq!(v["status"], "success", "{q}\n{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_and_promql_sources_agree_on_a_real_prometheus() {
    let gw = live_gateway().await;
    let prom = Prometheus::start(&[gw.metrics_addr()], Duration::from_secs(1)).await;
    prom.wait_for(r#"up{job="gateway"} == 1"#, Duration::from_secs(30))
        .await;

    presets_are_valid_promql(&prom).await;

    let mut scrape_cfg = ScrapeConfig::new(format!("http://{}/metrics", gw.metrics_addr()));
    scrape_cfg.window = Dur::secs(WINDOW_SECS);
    scrape_cfg.interval = Dur::secs(1);
    scrape_cfg.compare.min_requests_per_side = 100;
    let scrape = MetricsPoller::spawn(ScrapeSource::new("dev", scrape_cfg).unwrap().into());

    let mut prom_cfg = PromQlConfig::new(prom.url());
    prom_cfg.selector = r#"{job="gateway"}"#.into();
    prom_cfg.window = format!("{WINDOW_SECS}s");
    prom_cfg.interval = Dur::secs(1);
    prom_cfg.compare.min_requests_per_side = 100;
    let promql = MetricsPoller::spawn(PromQlSource::new("dev", prom_cfg).unwrap().into());
    scrape.set_roles(roles());
    promql.set_roles(roles());
    let (mut srx, mut prx) = (scrape.subscribe(), promql.subscribe());

    // Let both windows fill: Prometheus needs the full range of samples for rate().
    let start = Utc::now();
    tokio::time::sleep(Duration::from_secs(WINDOW_SECS + 3)).await;
    let warm = |s: &MetricsSample| {
        s.window_secs >= WINDOW_SECS as f64 - 1.5
            && s.route(ROUTE).and_then(|r| r.upstream(GREEN)).is_some()
            && s.route(ROUTE).and_then(|r| r.comparison.as_ref()).is_some()
    };
    let t = Utc::now();
    let s = next_sample(&mut srx, t, Duration::from_secs(20), "scrape, steady", warm).await;
    let p = next_sample(&mut prx, t, Duration::from_secs(20), "promql, steady", warm).await;
    assert!(s.sampled_at > start && p.sampled_at > start);

    // Steady state: both agree with each other and with the known traffic.
    let expected = expected_p95(BASE_LATENCY);
    report("steady", [("scrape", &s), ("promql", &p)]);
    for up in [BLUE, GREEN] {
        let (ss, ps) = (upstream_signals(&s, up), upstream_signals(&p, up));
        let (sr, pr) = (
            value(&ss.request_rate, "scrape rate"),
            value(&ps.request_rate, "prom rate"),
        );
        assert!(close(sr, pr, 0.15), "{up}: rate scrape {sr} vs promql {pr}");
        assert!(sr > 10.0, "{up}: rate {sr} is implausibly low");
        let (se, pe) = (
            value(&ss.error_ratio_5xx, "scrape 5xx"),
            value(&ps.error_ratio_5xx, "prom 5xx"),
        );
        assert!(
            (se - 0.02).abs() < 0.008 && (pe - 0.02).abs() < 0.008,
            "{up}: 5xx scrape {se} vs promql {pe}"
        );
        let (s4, p4) = (
            value(&ss.error_ratio_4xx, "scrape 4xx"),
            value(&ps.error_ratio_4xx, "prom 4xx"),
        );
        assert!(
            (s4 - p4).abs() < 0.01,
            "{up}: 4xx scrape {s4} vs promql {p4}"
        );
        let (sp, pp) = (
            value(&ss.latency_p95, "scrape p95"),
            value(&ps.latency_p95, "prom p95"),
        );
        assert!(close(sp, pp, 0.15), "{up}: p95 scrape {sp} vs promql {pp}");
        assert!(
            close(sp, expected, 0.2) && close(pp, expected, 0.2),
            "{up}: p95 {sp}/{pp}, expected {expected}"
        );
        let (s50, p50) = (
            value(&ss.latency_p50, "scrape p50"),
            value(&ps.latency_p50, "prom p50"),
        );
        assert!(
            close(s50, p50, 0.15),
            "{up}: p50 scrape {s50} vs promql {p50}"
        );
    }
    let (sr, pr) = (
        value(&s.overall.request_rate, "scrape overall"),
        value(&p.overall.request_rate, "prom overall"),
    );
    assert!(
        close(sr, pr, 0.15),
        "overall rate scrape {sr} vs promql {pr}"
    );
    assert!(
        s.route("").is_some() && p.route("").is_some(),
        "unrouted requests are listed"
    );
    for (name, sample) in [("scrape", &s), ("promql", &p)] {
        let c = sample.route(ROUTE).unwrap().comparison.as_ref().unwrap();
        assert_eq!((c.baseline.as_str(), c.canary.as_str()), (BLUE, GREEN));
        assert_eq!(c.verdict, Verdict::Pass, "{name}: {c:?}");
    }
    let g = s
        .gateway
        .as_ref()
        .expect("the scrape source reads the gateway's gauges");
    let revision = gw.gw.running().state.snapshot().revision as f64;
    assert_eq!(g.config_revision, Some(revision));
    assert_eq!(g.targets.len(), 2);
    assert!(g.rate_limited[0].rate.get().is_some_and(|r| r > 0.0));
    assert!(s.overall_history.len() >= 5, "history grows");
    assert!(
        p.overall_history.len() >= 5,
        "history is seeded from query_range"
    );

    // Inject 30% errors and triple latency into the canary.
    gw.green.set(0.30, BASE_LATENCY * 3.0);
    let injected = Utc::now();
    tokio::time::sleep(Duration::from_secs(WINDOW_SECS)).await;
    let settled = |s: &MetricsSample| {
        s.route(ROUTE)
            .and_then(|r| r.upstream(GREEN))
            .and_then(|u| u.signals.error_ratio_5xx.get())
            .is_some_and(|e| e > 0.27)
    };
    let t = Utc::now();
    let s = next_sample(
        &mut srx,
        t,
        Duration::from_secs(20),
        "scrape, injected",
        settled,
    )
    .await;
    let p = next_sample(
        &mut prx,
        t,
        Duration::from_secs(20),
        "promql, injected",
        settled,
    )
    .await;
    assert!(s.sampled_at > injected && p.sampled_at > injected);
    let slow = expected_p95(BASE_LATENCY * 3.0);
    report("injected", [("scrape", &s), ("promql", &p)]);
    eprintln!("expected p95: {expected:.4}s steady, {slow:.4}s slowed");
    for (name, sample) in [("scrape", &s), ("promql", &p)] {
        let green = upstream_signals(sample, GREEN);
        let blue = upstream_signals(sample, BLUE);
        let ge = value(&green.error_ratio_5xx, name);
        assert!((ge - 0.30).abs() < 0.05, "{name}: green 5xx {ge}");
        let be = value(&blue.error_ratio_5xx, name);
        assert!((be - 0.02).abs() < 0.008, "{name}: blue 5xx {be}");
        let gp = value(&green.latency_p95, name);
        assert!(
            close(gp, slow, 0.2),
            "{name}: green p95 {gp}, expected {slow}"
        );
        let c = sample.route(ROUTE).unwrap().comparison.as_ref().unwrap();
        match &c.verdict {
            Verdict::Fail { reasons } => {
                assert!(
                    reasons.iter().any(|r| r.starts_with("5xx ratio")),
                    "{name}: {reasons:?}"
                );
                assert!(
                    reasons.iter().any(|r| r.starts_with("p95")),
                    "{name}: {reasons:?}"
                );
            }
            v => panic!("{name}: expected Fail, got {v:?}"),
        }
    }
    let (sg, pg) = (
        value(&upstream_signals(&s, GREEN).latency_p95, "scrape"),
        value(&upstream_signals(&p, GREEN).latency_p95, "promql"),
    );
    assert!(close(sg, pg, 0.15), "green p95 scrape {sg} vs promql {pg}");

    drop(scrape);
    drop(promql);
    drop(prom);
    drop(gw);
}

/// The PromQL source's Prometheus goes down: the feed says so within a few intervals,
/// naming the server, and keeps the last sample for the panels; when Prometheus comes
/// back on the same address (same data), the feed recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_that_goes_down_is_reported_and_recovers_when_it_returns() {
    let gw = live_gateway().await;
    let mut prom = Prometheus::start(&[gw.metrics_addr()], Duration::from_millis(500)).await;
    prom.wait_for(r#"up{job="gateway"} == 1"#, Duration::from_secs(30))
        .await;
    let mut cfg = PromQlConfig::new(prom.url());
    cfg.selector = r#"{job="gateway"}"#.into();
    cfg.window = "5s".into();
    cfg.interval = Dur::millis(500);
    cfg.timeout = Dur::secs(1);
    let poller = MetricsPoller::spawn(PromQlSource::new("dev", cfg).unwrap().into());
    let mut rx = poller.subscribe();
    let has_traffic = |f: &MetricsFeed| {
        f.error.is_none()
            && f.latest
                .as_ref()
                .and_then(|s| s.route(ROUTE))
                .is_some_and(|r| r.upstream(BLUE).is_some())
    };
    let first = common::wait_feed(
        &mut rx,
        Duration::from_secs(30),
        "first sample",
        has_traffic,
    )
    .await;

    prom.kill();
    let noticed = common::wait_feed(&mut rx, Duration::from_secs(10), "outage shown", |f| {
        f.error.is_some() && f.latest.is_some()
    })
    .await;
    let error = rx.borrow().error.clone().unwrap().message;
    assert!(
        error.contains(&prom.addr.to_string()),
        "the error names the Prometheus server: {error}"
    );

    prom.restart().await;
    let recovered =
        common::wait_feed(&mut rx, Duration::from_secs(30), "recovered", has_traffic).await;
    eprintln!(
        "FAULT prometheus-down: first sample after {first:?}; error shown after {noticed:?} ({error}); recovered {recovered:?} after Prometheus was ready again"
    );
}
