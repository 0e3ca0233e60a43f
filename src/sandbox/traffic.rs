//! A traffic generator per environment: a steady, bounded mix over every route, so every
//! panel has live data. Search calls carry `X-Canary` now and then; orders carry API keys
//! (and a few calls without one, as real clients get it wrong).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub struct TrafficPlan {
    pub base_url: String,
    pub rps: u32,
    pub api_keys: Vec<String>,
}

/// At most this many requests in flight per environment; past it, ticks are skipped
/// rather than queued, so a slow gateway is never buried.
const MAX_IN_FLIGHT: usize = 64;

pub fn spawn(plan: TrafficPlan, shutdown: CancellationToken) {
    if plan.rps == 0 {
        return;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(16)
        .no_proxy()
        .build()
        .unwrap_or_default();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let plan = Arc::new(plan);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rps)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (client, plan) = (client.clone(), plan.clone());
            tokio::spawn(async move {
                let _ = one_request(&client, &plan).await;
                drop(permit);
            });
        }
    });
}

async fn one_request(c: &reqwest::Client, p: &TrafficPlan) -> reqwest::Result<()> {
    let roll = fastrand::u32(0..100);
    let id = fastrand::u32(1..5000);
    let rb = match roll {
        0..35 => c.get(format!("{}/api/users/{id}", p.base_url)),
        35..40 => c
            .post(format!("{}/api/users", p.base_url))
            .body(format!("{{\"name\":\"user-{id}\"}}")),
        40..65 => c.get(format!("{}/api/payments/{id}", p.base_url)),
        65..70 => {
            let user = if fastrand::bool() {
                format!("beta-{id}")
            } else {
                format!("user-{id}")
            };
            c.get(format!("{}/api/checkout", p.base_url))
                .header("x-user-id", user)
        }
        70..85 => {
            let rb = c.get(format!("{}/api/search?q=item-{id}", p.base_url));
            if fastrand::u32(0..100) < 30 {
                rb.header("x-canary", "true")
            } else {
                rb
            }
        }
        _ => {
            let rb = c
                .get(format!("{}/api/orders/{id}", p.base_url))
                .header("origin", "https://app.example.com");
            match (fastrand::u32(0..100), p.api_keys.is_empty()) {
                (0..90, false) => rb.header(
                    "x-api-key",
                    &p.api_keys[fastrand::usize(0..p.api_keys.len())],
                ),
                _ => rb,
            }
        }
    };
    let resp = rb.send().await?;
    let _ = resp.bytes().await?;
    Ok(())
}
