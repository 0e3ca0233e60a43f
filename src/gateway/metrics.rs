//! The gateway's Prometheus metrics.
//!
//! Hand-rolled on atomics rather than prometheus-client for two reasons: the request path
//! must not take a lock (prometheus-client's histogram locks on every observation), and
//! the exposition must be the classic text format that `promtool check metrics` and every
//! Prometheus accept (prometheus-client writes OpenMetrics, which promtool rejects).
//! Series are created lazily under a mutex once, then updated lock-free through handles
//! that the compiled config snapshot keeps. They live outside the snapshot, so a reload
//! never resets a counter.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

/// A histogram whose observe is a few relaxed atomic adds.
#[derive(Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an integer atomic.
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

type Counter = Arc<AtomicU64>;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RequestKey {
    route: Arc<str>,
    upstream: Arc<str>,
    method: usize,
    class: usize,
}

#[derive(Default)]
struct Series {
    requests: BTreeMap<RequestKey, Counter>,
    durations: BTreeMap<(Arc<str>, Arc<str>), Arc<AtomicHistogram>>,
    healthy: BTreeMap<(String, String), Counter>,
    rate_limited: BTreeMap<Arc<str>, Counter>,
    flag_evals: BTreeMap<(String, String), Counter>,
}

/// Every metric the gateway exposes. One per gateway process, shared by all snapshots.
#[derive(Default)]
pub struct GatewayMetrics {
    series: Mutex<Series>,
    active_connections: AtomicI64,
    config_revision: AtomicU64,
}

/// The counters of one (route, upstream) pair, resolved once per snapshot and then used
/// lock-free on every request.
pub struct PairMetrics {
    owner: Arc<GatewayMetrics>,
    route: Arc<str>,
    upstream: Arc<str>,
    counters: [[OnceLock<Counter>; CLASSES.len()]; METHODS.len()],
    latency: Arc<AtomicHistogram>,
}

impl PairMetrics {
    pub fn record(&self, method: &http::Method, status: u16, secs: f64) {
        let (m, c) = (method_index(method), class_index(status));
        let counter = self.counters[m][c].get_or_init(|| {
            let key = RequestKey {
                route: self.route.clone(),
                upstream: self.upstream.clone(),
                method: m,
                class: c,
            };
            let mut s = self.owner.series.lock().unwrap_or_else(|e| e.into_inner());
            s.requests.entry(key).or_default().clone()
        });
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(secs);
    }
}

impl GatewayMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pair(self: &Arc<Self>, route: &str, upstream: &str) -> Arc<PairMetrics> {
        let route: Arc<str> = route.into();
        let upstream: Arc<str> = upstream.into();
        let latency = self
            .lock()
            .durations
            .entry((route.clone(), upstream.clone()))
            .or_default()
            .clone();
        Arc::new(PairMetrics {
            owner: self.clone(),
            route,
            upstream,
            counters: Default::default(),
            latency,
        })
    }

    pub fn rate_limited_counter(&self, route: &str) -> Counter {
        self.lock()
            .rate_limited
            .entry(route.into())
            .or_default()
            .clone()
    }

    pub fn healthy_gauge(&self, upstream: &str, target: &str) -> Counter {
        self.lock()
            .healthy
            .entry((upstream.into(), target.into()))
            .or_default()
            .clone()
    }

    /// Drops health series of targets no longer in the config.
    pub fn retain_targets(&self, keep: &dyn Fn(&str, &str) -> bool) {
        self.lock().healthy.retain(|(u, t), _| keep(u, t));
    }

    pub fn flag_evaluated(&self, flag: &str, variant: &str) {
        // Flag evaluations are per gated request; a map lookup under a short lock is
        // fine next to the evaluation itself, and avoids unbounded handle caches.
        let mut s = self.lock();
        if let Some(c) = s.flag_evals.get(&(flag.to_string(), variant.to_string())) {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            s.flag_evals
                .insert((flag.into(), variant.into()), Arc::new(AtomicU64::new(1)));
        }
    }

    pub fn connection_opened(&self) {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.active_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set_revision(&self, rev: u64) {
        self.config_revision.store(rev, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn encode(&self) -> String {
        let s = self.lock();
        let mut out = String::with_capacity(4096 + s.requests.len() * 120);
        header(
            &mut out,
            "signalbox_requests_total",
            "counter",
            "Requests answered, by route, upstream, method and status class.",
        );
        for (k, v) in &s.requests {
            let _ = writeln!(
                out,
                "signalbox_requests_total{{route=\"{}\",upstream=\"{}\",method=\"{}\",status_class=\"{}\"}} {}",
                esc(&k.route),
                esc(&k.upstream),
                METHODS[k.method],
                CLASSES[k.class],
                v.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "signalbox_request_duration_seconds",
            "histogram",
            "Time from request to upstream response headers, by route and upstream.",
        );
        for ((route, upstream), h) in &s.durations {
            let labels = format!("route=\"{}\",upstream=\"{}\"", esc(route), esc(upstream));
            let mut cumulative = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "signalbox_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "signalbox_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "signalbox_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "signalbox_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        header(
            &mut out,
            "signalbox_upstream_healthy",
            "gauge",
            "1 when the target is taking traffic, 0 when it failed health checks or was ejected.",
        );
        for ((u, t), v) in &s.healthy {
            let _ = writeln!(
                out,
                "signalbox_upstream_healthy{{upstream=\"{}\",target=\"{}\"}} {}",
                esc(u),
                esc(t),
                v.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "signalbox_active_connections",
            "gauge",
            "Client connections currently open.",
        );
        let _ = writeln!(
            out,
            "signalbox_active_connections {}",
            self.active_connections.load(Ordering::Relaxed).max(0)
        );
        header(
            &mut out,
            "signalbox_rate_limited_total",
            "counter",
            "Requests rejected with 429 by a rate limit, by route.",
        );
        for (r, v) in &s.rate_limited {
            let _ = writeln!(
                out,
                "signalbox_rate_limited_total{{route=\"{}\"}} {}",
                esc(r),
                v.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "signalbox_config_revision",
            "gauge",
            "The config revision being served.",
        );
        let _ = writeln!(
            out,
            "signalbox_config_revision {}",
            self.config_revision.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "signalbox_flag_evaluations_total",
            "counter",
            "Feature flag evaluations, by flag and variant.",
        );
        for ((f, var), v) in &s.flag_evals {
            let _ = writeln!(
                out,
                "signalbox_flag_evaluations_total{{flag=\"{}\",variant=\"{}\"}} {}",
                esc(f),
                esc(var),
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_survive_new_handles() {
        let m = GatewayMetrics::new();
        let a = m.pair("users", "blue");
        a.record(&http::Method::GET, 200, 0.003);
        a.record(&http::Method::GET, 503, 0.2);
        // A reload makes new handles; the counts carry on.
        let b = m.pair("users", "blue");
        b.record(&http::Method::GET, 200, 20.0);
        let text = m.encode();
        assert!(text.contains("signalbox_requests_total{route=\"users\",upstream=\"blue\",method=\"GET\",status_class=\"2xx\"} 2"), "{text}");
        assert!(text.contains("status_class=\"5xx\"} 1"));
        assert!(text.contains("signalbox_request_duration_seconds_bucket{route=\"users\",upstream=\"blue\",le=\"0.005\"} 1"));
        assert!(text.contains("signalbox_request_duration_seconds_bucket{route=\"users\",upstream=\"blue\",le=\"10\"} 2"));
        assert!(text.contains("signalbox_request_duration_seconds_bucket{route=\"users\",upstream=\"blue\",le=\"+Inf\"} 3"));
        assert!(text.contains(
            "signalbox_request_duration_seconds_count{route=\"users\",upstream=\"blue\"} 3"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = GatewayMetrics::new();
        m.flag_evaluated("a\"b", "on\n");
        assert!(m.encode().contains("flag=\"a\\\"b\",variant=\"on\\n\""));
    }
}
