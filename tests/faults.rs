//! Faults under load: what users see when an upstream dies, hangs, resets or talks
//! garbage while traffic flows, and when a metrics source goes away and comes back. Each
//! test prints a `FAULT` line with its figures (see RELIABILITY.md).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mode, client, gateway, upstream, upstream_on};
use signalbox::gateway::config::units::Dur;
use signalbox::metrics::{MetricsPoller, ScrapeConfig, ScrapeSource};
use tokio::task::JoinHandle;

/// `n` client loops sending GETs to `url` until stopped: (ok, failed, slowest).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Duration>>,
}

impl Load {
    fn start(url: String, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (url, stop, ok, failed) =
                    (url.clone(), stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut slowest = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match c.get(&url).send().await {
                            Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        slowest = slowest.max(t.elapsed());
                    }
                    slowest
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    async fn finish(mut self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let mut slowest = Duration::ZERO;
        for t in std::mem::take(&mut self.tasks) {
            slowest = slowest.max(t.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            slowest,
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_target_costs_a_few_requests_then_is_ejected_and_readmitted_on_return() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let a_addr = a.addr;
    // No retries, so every request the dead target costs is visible to the client.
    let gw = gateway(&format!(
        "upstreams:\n  pool: {{ targets: [{}, {}], retries: 0, passive: {{ max_failures: 3, eject_for: 2s }} }}\nroutes:\n  - {{ name: r, paths: [/], split: {{ pool: 1 }} }}\n",
        a.target(),
        b.target()
    ))
    .await;
    let load = Load::start(gw.url("/"), 8);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(load.failed(), 0, "healthy pool, no failures");

    a.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let failed_at_kill = load.failed();
    // Ejected: no more failures while it stays dead.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let failed_after_ejection = load.failed();

    // The target comes back on the same address; after `eject_for` it is tried again.
    let a2 = upstream_on("a", a_addr).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, failed, slowest) = load.finish().await;
    eprintln!(
        "FAULT killed-target: {failed_at_kill} failed requests until ejection (8 client loops, no retries), {} more while ejected, {} after return; {ok} ok; slowest {slowest:?}; back: {} requests reached the restarted target within {:?}",
        failed_after_ejection - failed_at_kill,
        failed - failed_after_ejection,
        a2.hits(),
        killed.elapsed()
    );
    assert!(failed_at_kill >= 1, "the kill was noticed");
    assert!(
        failed_at_kill <= 3 + 8,
        "at most max_failures plus the requests in flight fail: {failed_at_kill}"
    );
    assert_eq!(
        failed_after_ejection, failed_at_kill,
        "no failures once ejected"
    );
    assert_eq!(failed, failed_after_ejection, "none after it returned");
    assert!(a2.hits() > 10, "the returned target is re-admitted");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_resetting_and_garbage_upstreams_fail_fast_and_the_gateway_stays_responsive() {
    let hung = upstream("hung").await;
    hung.set_mode(Mode::Hang);
    let reset = upstream("reset").await;
    reset.set_mode(Mode::Reset);
    let garbage = upstream("garbage").await;
    garbage.set_mode(Mode::Garbage);
    let fine = upstream("fine").await;
    let gw = gateway(&format!(
        "upstreams:\n  hung: {{ targets: [{}], timeout: 500ms }}\n  reset: {{ targets: [{}] }}\n  garbage: {{ targets: [{}] }}\n  fine: {{ targets: [{}] }}\nroutes:\n  - {{ name: hung, paths: [/hung], split: {{ hung: 1 }} }}\n  - {{ name: reset, paths: [/reset], split: {{ reset: 1 }} }}\n  - {{ name: garbage, paths: [/garbage], split: {{ garbage: 1 }} }}\n  - {{ name: fine, paths: [/fine], split: {{ fine: 1 }} }}\n",
        hung.target(),
        reset.target(),
        garbage.target(),
        fine.target()
    ))
    .await;

    // 32 requests hang upstream at once while a healthy route keeps serving.
    let c = client();
    let mut hanging = Vec::new();
    for _ in 0..32 {
        let (c, url) = (c.clone(), gw.url("/hung"));
        hanging.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = c.get(url).send().await.map(|r| r.status().as_u16());
            (status, t.elapsed())
        }));
    }
    let load = Load::start(gw.url("/fine"), 4);
    let mut statuses = Vec::new();
    let mut slowest_hung = Duration::ZERO;
    for h in hanging {
        let (s, took) = h.await.unwrap();
        statuses.push(s.unwrap());
        slowest_hung = slowest_hung.max(took);
    }
    let (ok, failed, slowest_fine) = load.finish().await;
    eprintln!(
        "FAULT hung-upstream: 32 concurrent requests answered {:?} within {slowest_hung:?} (timeout 500ms); healthy route meanwhile: {ok} ok, {failed} failed, slowest {slowest_fine:?}",
        statuses.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(statuses.iter().all(|&s| s == 504), "{statuses:?}");
    assert!(slowest_hung < Duration::from_secs(2), "{slowest_hung:?}");
    assert_eq!(failed, 0);
    assert!(ok > 20, "the healthy route kept serving: {ok}");
    assert!(
        slowest_fine < Duration::from_millis(500),
        "the healthy route was held up: {slowest_fine:?}"
    );

    // Resets and garbage: a clear 502 each time, fast, and the gateway lives on; with
    // or without a request body (the two go through different upstream clients).
    for (path, name, code) in [
        ("/reset", "reset", "upstream_unavailable"),
        ("/garbage", "garbage", "upstream_bad_response"),
    ] {
        let t = Instant::now();
        for i in 0..20 {
            let r = if i % 2 == 0 {
                c.get(gw.url(path)).send().await.unwrap()
            } else {
                c.post(gw.url(path)).body("x").send().await.unwrap()
            };
            assert_eq!(r.status(), 502, "{name}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{name}: {v}");
        }
        eprintln!(
            "FAULT {name}-upstream: 20 requests, each 502, in {:?}",
            t.elapsed()
        );
    }
    assert_eq!(c.get(gw.url("/fine")).send().await.unwrap().status(), 200);
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_source_that_dies_is_reported_and_recovers_when_it_returns() {
    let up = upstream("u").await;
    let gw = gateway(&format!(
        "upstreams:\n  u: {{ targets: [{}] }}\nroutes:\n  - {{ name: r, paths: [/], split: {{ u: 1 }} }}\n",
        up.target()
    ))
    .await;
    let admin = gw.running().admin_addr;
    let mut cfg = ScrapeConfig::new(format!("http://{admin}/metrics"));
    cfg.interval = Dur::millis(200);
    cfg.timeout = Dur::millis(500);
    let poller = MetricsPoller::spawn(ScrapeSource::new("dev", cfg).unwrap().into());
    let mut rx = poller.subscribe();
    common::wait_feed(&mut rx, Duration::from_secs(10), "first sample", |f| {
        f.latest.is_some() && f.error.is_none()
    })
    .await;

    // The gateway (and its /metrics) goes away: the feed says so, quickly, and keeps
    // the last sample for the panels.
    let mut gw = gw;
    let config = gw.config_path.clone();
    let state_dir = gw.dir.path().join("state");
    // Stop the gateway but keep its directory for the restart.
    gw.gw.take().unwrap().shutdown().await;
    let noticed = common::wait_feed(&mut rx, Duration::from_secs(5), "error shown", |f| {
        f.error.is_some() && f.latest.is_some()
    })
    .await;
    let error = rx.borrow().error.clone().unwrap().message;
    assert!(
        error.contains(&admin.to_string()),
        "the error names the address: {error}"
    );

    // It comes back on the same address: the feed recovers without a restart.
    let gw2 = signalbox::gateway::RunningGateway::start(signalbox::gateway::GatewayOptions {
        config,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some(admin),
        state_dir: Some(state_dir),
        watch_config: false,
        reset_to_file: false,
    })
    .await
    .unwrap();
    let recovered = common::wait_feed(&mut rx, Duration::from_secs(10), "recovered", |f| {
        f.error.is_none() && f.latest.is_some()
    })
    .await;
    eprintln!(
        "FAULT metrics-source-down: error shown after {noticed:?} ({error}); recovered {recovered:?} after the gateway returned"
    );
    drop(poller);
    gw2.shutdown().await;
    drop(gw);
}
