//! Upstream pools: targets, their health (active checks and passive ejection), target
//! choice, and their keep-alive connections ([`super::pool`]).
//!
//! Target state lives in a [`TargetRegistry`] outside the config snapshot, so a reload or
//! a canary step does not forget that a target is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Limited};
use hyper::body::Incoming;

use super::config::{HealthCheck, PassiveHealth, UpstreamConfig};
use super::metrics::GatewayMetrics;
use super::pool::{self, Pool};

/// What the gateway sends upstream: the client's streamed body (with the size limit
/// applied while streaming), or nothing on a retry of a body-less request.
pub type ReqBody = Either<Limited<Incoming>, Empty<Bytes>>;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One `host:port` of an upstream, with its live health.
pub struct TargetState {
    pub addr: String,
    /// The `Host` header for this target, built once rather than on every request.
    pub host_header: http::HeaderValue,
    /// Keep-alive connections, per serving thread; they outlive reloads with the target.
    pub pool: Pool,
    /// Set by active health checks.
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Passive ejection: unavailable until this time (ms since process start); 0 = not ejected.
    ejected_until: AtomicU64,
    gauge: Arc<AtomicU64>,
}

impl TargetState {
    fn new(addr: &str, gauge: Arc<AtomicU64>, workers: usize) -> Option<Self> {
        let authority: http::uri::Authority = addr.parse().ok()?;
        let host_header = host_header(&authority)?;
        gauge.store(1, Ordering::Relaxed);
        Some(Self {
            addr: addr.to_string(),
            host_header,
            pool: Pool::new(addr, workers),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            gauge,
        })
    }

    /// Healthy by active checks and not ejected by passive ones.
    pub fn available(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now_ms() >= until {
            // Re-admit; the CAS makes one request the one that flips it back.
            if self
                .ejected_until
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.publish();
                tracing::info!(target = %self.addr, "target re-admitted after ejection");
            }
            return true;
        }
        false
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn record_failure(&self, passive: &PassiveHealth) {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= passive.max_failures && !self.is_ejected() {
            let until = now_ms() + passive.eject_for.0.as_millis() as u64;
            self.ejected_until.store(until.max(1), Ordering::Relaxed);
            // Half-open on return: one more failure ejects it again at once.
            self.consecutive_failures
                .store(passive.max_failures.saturating_sub(1), Ordering::Relaxed);
            self.publish();
            tracing::warn!(target = %self.addr, failures = n, eject_for = ?passive.eject_for.0, "target ejected after consecutive failures");
        }
    }

    fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!(target = %self.addr, "target passed its health check");
            } else {
                tracing::warn!(target = %self.addr, "target failed its health check");
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let up = self.healthy.load(Ordering::Relaxed) && !self.is_ejected();
        self.gauge.store(u64::from(up), Ordering::Relaxed);
    }
}

/// `Host` for `http://{authority}` (RFC 9110 §7.2): the port only when it is not 80.
fn host_header(authority: &http::uri::Authority) -> Option<http::HeaderValue> {
    let host = authority.host();
    match authority.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}").parse().ok(),
        _ => host.parse().ok(),
    }
}

/// A compiled upstream, part of a config snapshot.
pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Vec<Arc<TargetState>>,
    next: AtomicUsize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub passive: PassiveHealth,
}

impl Upstream {
    /// Round robin over available targets, skipping `avoid` (the one a retry just failed
    /// on) when there is another. With none available it still picks one: health data can
    /// be stale, and trying beats refusing outright.
    pub fn pick(&self, avoid: Option<&TargetState>) -> &Arc<TargetState> {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut fallback = None;
        for i in 0..n {
            let t = &self.targets[(start + i) % n];
            let avoided = avoid.is_some_and(|a| std::ptr::eq(a, t.as_ref()));
            if t.available() {
                if !avoided {
                    return t;
                }
                fallback.get_or_insert(t);
            }
        }
        fallback.unwrap_or(&self.targets[start % n])
    }

    pub fn any_available(&self) -> bool {
        self.targets.iter().any(|t| t.available())
    }
}

/// State that outlives config snapshots: targets (with their health and connection pools)
/// and the active health-check tasks.
pub struct TargetRegistry {
    metrics: Arc<GatewayMetrics>,
    /// Serving threads, and so connection pools per target.
    workers: usize,
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    targets: HashMap<(String, String), Arc<TargetState>>,
    checks: HashMap<(String, String), (HealthCheck, tokio::task::AbortHandle)>,
    /// Closes expired idle connections of targets that get no traffic.
    sweeper: Option<tokio::task::AbortHandle>,
}

impl TargetRegistry {
    pub fn new(metrics: Arc<GatewayMetrics>, workers: usize) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            workers: workers.max(1),
            inner: Mutex::default(),
        })
    }

    /// The number of serving threads this registry keeps connection pools for.
    pub fn workers(&self) -> usize {
        self.workers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the runtime form of an upstream, reusing live target state and connections.
    pub fn build(&self, name: &str, cfg: &UpstreamConfig) -> Result<Upstream, String> {
        let mut inner = self.lock();
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for addr in &cfg.targets {
            let key = (name.to_string(), addr.clone());
            let t = match inner.targets.get(&key) {
                Some(t) => t.clone(),
                None => {
                    let gauge = self.metrics.healthy_gauge(name, addr);
                    let t = Arc::new(
                        TargetState::new(addr, gauge, self.workers)
                            .ok_or_else(|| format!("target {addr:?} is not host:port"))?,
                    );
                    inner.targets.insert(key, t.clone());
                    t
                }
            };
            targets.push(t);
        }
        Ok(Upstream {
            name: name.into(),
            targets,
            next: AtomicUsize::new(0),
            connect_timeout: cfg.connect_timeout.0,
            timeout: cfg.timeout.0,
            retries: cfg.retries,
            passive: cfg.passive.clone(),
        })
    }

    /// After a new snapshot is live: start health checks for new targets, stop those of
    /// removed ones, and forget removed targets (closing their connections).
    pub fn sync_health_checks(
        self: &Arc<Self>,
        upstreams: &std::collections::BTreeMap<String, UpstreamConfig>,
    ) {
        let mut inner = self.lock();
        if inner.sweeper.is_none() {
            inner.sweeper = Some(tokio::spawn(sweep_idle(Arc::downgrade(self))).abort_handle());
        }
        let mut wanted: HashMap<(String, String), HealthCheck> = HashMap::new();
        for (name, cfg) in upstreams {
            for addr in &cfg.targets {
                if let Some(h) = &cfg.health {
                    wanted.insert((name.clone(), addr.clone()), h.clone());
                }
            }
        }
        inner.checks.retain(|key, (check, handle)| {
            let keep = wanted.get(key) == Some(check);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if inner.checks.contains_key(&key) {
                continue;
            }
            let Some(target) = inner.targets.get(&key).cloned() else {
                continue;
            };
            let handle = tokio::spawn(health_loop(target, check.clone())).abort_handle();
            inner.checks.insert(key, (check, handle));
        }
        // A target that lost its health check is trusted again.
        for (key, t) in &inner.targets {
            if !inner.checks.contains_key(key) && !t.is_healthy() {
                t.set_healthy(true);
            }
        }
        inner.targets.retain(|(u, a), _| {
            upstreams
                .get(u)
                .is_some_and(|c| c.targets.iter().any(|t| t == a))
        });
        let live: std::collections::HashSet<(String, String)> =
            inner.targets.keys().cloned().collect();
        self.metrics
            .retain_targets(&|u, t| live.contains(&(u.to_string(), t.to_string())));
    }

    pub fn stop_health_checks(&self) {
        let mut inner = self.lock();
        for (_, (_, h)) in inner.checks.drain() {
            h.abort();
        }
        if let Some(s) = inner.sweeper.take() {
            s.abort();
        }
    }
}

async fn sweep_idle(registry: std::sync::Weak<TargetRegistry>) {
    let mut tick = tokio::time::interval(pool::IDLE_TIMEOUT / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let targets: Vec<Arc<TargetState>> = registry.lock().targets.values().cloned().collect();
        for t in targets {
            t.pool.evict_idle();
        }
    }
}

/// A health check's answer must arrive, body and all, within the check's timeout; a body
/// larger than this is not read (the connection is then not reused).
const HEALTH_BODY_MAX: usize = 64 * 1024;

async fn health_probe(target: &TargetState, check: &HealthCheck, uri: &http::Uri) -> bool {
    let mut req = http::Request::new(Either::Right(Empty::new()));
    *req.uri_mut() = uri.clone();
    req.headers_mut()
        .insert(http::header::HOST, target.host_header.clone());
    let probe = async {
        let resp = target
            .pool
            .send(pool::OFF_THREAD, check.timeout.0, req)
            .await
            .ok()?;
        let ok = resp.status().is_success();
        // Read to the end so the connection is reused by the next check.
        Limited::new(resp.into_body(), HEALTH_BODY_MAX)
            .collect()
            .await
            .ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(check.timeout.0, probe).await,
        Ok(Some(true))
    )
}

async fn health_loop(target: Arc<TargetState>, check: HealthCheck) {
    let uri: http::Uri = match check.path.parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(target = %target.addr, error = %e, "bad health check path");
            return;
        }
    };
    let (mut oks, mut fails) = (0u32, 0u32);
    let mut tick = tokio::time::interval(check.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = health_probe(&target, &check, &uri).await;
        if ok {
            oks += 1;
            fails = 0;
            if oks >= check.healthy_threshold {
                target.set_healthy(true);
            }
        } else {
            fails += 1;
            oks = 0;
            if fails >= check.unhealthy_threshold {
                target.set_healthy(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::units::Dur;

    fn target() -> TargetState {
        TargetState::new("127.0.0.1:1", Arc::default(), 1).unwrap()
    }

    #[test]
    fn ejects_after_consecutive_failures_and_readmits() {
        let t = target();
        let passive = PassiveHealth {
            max_failures: 3,
            eject_for: Dur::millis(30),
        };
        t.record_failure(&passive);
        t.record_success();
        t.record_failure(&passive);
        t.record_failure(&passive);
        assert!(t.available(), "a success in between resets the count");
        t.record_failure(&passive);
        assert!(!t.available());
        assert_eq!(t.gauge.load(Ordering::Relaxed), 0);
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.available());
        assert_eq!(t.gauge.load(Ordering::Relaxed), 1);
        // Half-open: one more failure ejects again.
        t.record_failure(&passive);
        assert!(!t.available());
    }

    #[test]
    fn host_header_names_the_port_unless_it_is_80() {
        let host = |a: &str| TargetState::new(a, Arc::default(), 1).unwrap().host_header;
        assert_eq!(host("127.0.0.1:9001"), "127.0.0.1:9001");
        assert_eq!(host("users.internal:80"), "users.internal");
        assert_eq!(host("[::1]:8080"), "[::1]:8080");
        assert!(TargetState::new("not a host", Arc::default(), 1).is_none());
    }

    #[tokio::test]
    async fn pick_skips_unavailable_and_avoided_targets() {
        let reg = TargetRegistry::new(GatewayMetrics::new(), 2);
        let cfg: UpstreamConfig = serde_json::from_value(serde_json::json!({
            "targets": ["127.0.0.1:1", "127.0.0.1:2"],
        }))
        .unwrap();
        let up = reg.build("u", &cfg).unwrap();
        up.targets[0].set_healthy(false);
        for _ in 0..4 {
            assert_eq!(up.pick(None).addr, "127.0.0.1:2");
        }
        up.targets[0].set_healthy(true);
        let first = up.pick(None).clone();
        let other = up.pick(Some(&first));
        assert_ne!(first.addr, other.addr);
        // State survives a rebuild (a reload).
        up.targets[1].set_healthy(false);
        let again = reg.build("u", &cfg).unwrap();
        assert!(!again.targets[1].is_healthy());
    }
}
