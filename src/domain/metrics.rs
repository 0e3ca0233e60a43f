//! Live traffic numbers for one environment, as the panels, `signalbox ctl status` and
//! runbook gates read them. Pure data: the `metrics` module fills it in.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many points a [`History`] keeps unless told otherwise.
pub const DEFAULT_HISTORY_POINTS: usize = 60;

/// One number on a panel, or why there is none. Values are always finite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Signal {
    /// A measured, finite value.
    Value { value: f64 },
    /// Nothing to measure yet: no requests in the window, or rates still need a second
    /// scrape. Not a fault.
    NoData { reason: String },
    /// The series this signal is computed from is not exposed by the gateway or not
    /// returned by Prometheus.
    Missing { reason: String },
    /// Getting this one signal failed (a query error or timeout); other signals in the same
    /// sample may be fine.
    Error { message: String },
}

impl Signal {
    pub fn value(v: f64) -> Self {
        Signal::Value { value: v }
    }

    pub fn no_data(reason: impl Into<String>) -> Self {
        Signal::NoData {
            reason: reason.into(),
        }
    }

    pub fn missing(reason: impl Into<String>) -> Self {
        Signal::Missing {
            reason: reason.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Signal::Error {
            message: message.into(),
        }
    }

    /// A computed number: NaN (Prometheus's "nothing to compute on", e.g. 0/0 or a
    /// histogram without observations) becomes `NoData` with `nan_reason`; an infinity
    /// becomes an error, since no rate, ratio or latency is legitimately infinite.
    pub fn from_f64(v: f64, nan_reason: &str) -> Self {
        if v.is_nan() {
            Signal::no_data(nan_reason)
        } else if v.is_infinite() {
            Signal::error(format!("non-finite value {v}"))
        } else {
            Signal::value(v)
        }
    }

    /// The value, if there is one.
    pub fn get(&self) -> Option<f64> {
        match self {
            Signal::Value { value } => Some(*value),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Signal::Error { .. })
    }
}

/// The six numbers shown for every environment, route and upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Requests per second over the window.
    pub request_rate: Signal,
    /// Share of requests answered 5xx, 0..=1.
    pub error_ratio_5xx: Signal,
    /// Share of requests answered 4xx, 0..=1.
    pub error_ratio_4xx: Signal,
    /// Latency quantiles in seconds.
    pub latency_p50: Signal,
    pub latency_p95: Signal,
    pub latency_p99: Signal,
}

impl Signals {
    /// Every signal in the same state, e.g. all `NoData` before the second scrape.
    pub fn all(s: Signal) -> Self {
        Self {
            request_rate: s.clone(),
            error_ratio_5xx: s.clone(),
            error_ratio_4xx: s.clone(),
            latency_p50: s.clone(),
            latency_p95: s.clone(),
            latency_p99: s,
        }
    }

    /// The point this sample adds to a sparkline history.
    pub fn point(&self, at: DateTime<Utc>) -> HistoryPoint {
        HistoryPoint {
            at,
            request_rate: self.request_rate.get(),
            error_ratio_5xx: self.error_ratio_5xx.get(),
            error_ratio_4xx: self.error_ratio_4xx.get(),
            latency_p50: self.latency_p50.get(),
            latency_p95: self.latency_p95.get(),
            latency_p99: self.latency_p99.get(),
        }
    }
}

/// One point of a sparkline; `None` where the signal had no value at that time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub at: DateTime<Utc>,
    pub request_rate: Option<f64>,
    pub error_ratio_5xx: Option<f64>,
    pub error_ratio_4xx: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
}

/// The most recent points, oldest first, at most `capacity` of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(skip, default = "default_capacity")]
    capacity: usize,
    points: VecDeque<HistoryPoint>,
}

fn default_capacity() -> usize {
    DEFAULT_HISTORY_POINTS
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_HISTORY_POINTS)
    }
}

impl History {
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            points: VecDeque::with_capacity(capacity),
        }
    }

    /// Appends a point, dropping the oldest when full. A point not newer than the last
    /// one replaces it, so a backfilled history and live samples never overlap.
    pub fn push(&mut self, p: HistoryPoint) {
        if let Some(last) = self.points.back_mut()
            && p.at <= last.at
        {
            *last = p;
            return;
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }

    pub fn points(&self) -> impl ExactSizeIterator<Item = &HistoryPoint> {
        self.points.iter()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One signal over time, for a sparkline: e.g. `h.series(|p| p.latency_p95)`.
    pub fn series(&self, f: impl Fn(&HistoryPoint) -> Option<f64>) -> Vec<Option<f64>> {
        self.points.iter().map(f).collect()
    }
}

/// One upstream (version) of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamMetrics {
    /// `""` for requests that never reached an upstream (auth failures, rate limits).
    pub upstream: String,
    pub signals: Signals,
    pub history: History,
}

/// One gateway route: its totals, each upstream, and stable vs canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteMetrics {
    /// `""` collects requests that matched no route.
    pub route: String,
    /// All upstreams of the route together.
    pub signals: Signals,
    pub history: History,
    pub upstreams: Vec<UpstreamMetrics>,
    /// Present when the route has two or more upstreams.
    pub comparison: Option<Comparison>,
}

/// How the two sides of a [`Comparison`] were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    /// From the route's split or header canary, as the caller said.
    Configured,
    /// Nobody said: the busier upstream is taken as the baseline.
    ByTraffic,
}

/// Stable (baseline) against canary on one route, over the sample's window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: String,
    pub canary: String,
    pub roles: RoleSource,
    /// Requests in the window on each side.
    pub baseline_requests: f64,
    pub canary_requests: f64,
    /// `None` when the request or error counts are unknown.
    pub errors: Option<ErrorRatioTest>,
    /// `None` when latency data is unavailable.
    pub latency: Option<LatencyTest>,
    pub verdict: Verdict,
}

/// Two-proportion z-test on the 5xx ratio, one-sided: is the canary worse?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorRatioTest {
    pub baseline_ratio: f64,
    pub canary_ratio: f64,
    /// `canary_ratio - baseline_ratio`.
    pub increase: f64,
    pub z: f64,
    pub p_value: f64,
}

/// Mann–Whitney U on the latency histograms, one-sided: is the canary slower?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyTest {
    pub baseline_p95: Option<f64>,
    pub canary_p95: Option<f64>,
    /// `canary_p95 / baseline_p95`.
    pub p95_ratio: Option<f64>,
    pub baseline_observations: f64,
    pub canary_observations: f64,
    /// U of the canary sample; `None` when bucket counts were not available.
    pub u: Option<f64>,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
}

/// What the comparison says about the canary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail {
        reasons: Vec<String>,
    },
    /// Too little traffic (or data) to tell. Never reported as a pass.
    NotEnoughData {
        reason: String,
    },
}

/// Health of one upstream target, as the gateway sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub upstream: String,
    pub target: String,
    pub healthy: bool,
}

/// A per-second rate with a name, e.g. rate-limited requests of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedRate {
    pub name: String,
    pub rate: Signal,
}

/// Flag evaluations per second for one flag and variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagEvaluationRate {
    pub flag: String,
    pub variant: String,
    pub rate: Signal,
}

/// Gateway-wide numbers that only a direct scrape of signalbox's gateway provides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub active_connections: Option<f64>,
    pub config_revision: Option<f64>,
    pub targets: Vec<TargetHealth>,
    /// Rate-limited requests per second, per route.
    pub rate_limited: Vec<NamedRate>,
    pub flag_evaluations: Vec<FlagEvaluationRate>,
}

/// Everything the metrics layer knows about one environment at one time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsSample {
    pub environment: String,
    /// Where the numbers came from, e.g. `scrape http://127.0.0.1:9080/metrics`.
    pub source: String,
    pub sampled_at: DateTime<Utc>,
    /// The span rates, ratios and quantiles are computed over.
    pub window_secs: f64,
    /// The whole environment.
    pub overall: Signals,
    pub overall_history: History,
    /// Sorted by route name.
    pub routes: Vec<RouteMetrics>,
    pub gateway: Option<GatewayStatus>,
    /// Things worth showing that did not stop the sample, e.g. a missing metric family.
    pub problems: Vec<String>,
}

impl MetricsSample {
    pub fn route(&self, name: &str) -> Option<&RouteMetrics> {
        self.routes.iter().find(|r| r.route == name)
    }

    /// Seconds since the sample was taken, never negative.
    pub fn age_secs(&self, now: DateTime<Utc>) -> f64 {
        ((now - self.sampled_at).num_milliseconds() as f64 / 1000.0).max(0.0)
    }
}

impl RouteMetrics {
    pub fn upstream(&self, name: &str) -> Option<&UpstreamMetrics> {
        self.upstreams.iter().find(|u| u.upstream == name)
    }
}

/// Why the latest refresh failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedError {
    pub message: String,
    pub failed_at: DateTime<Utc>,
    pub consecutive_failures: u32,
}

/// What a metrics poller publishes: the last good sample and, if the latest refresh
/// failed, why. A failed refresh keeps the old sample, so panels show stale data marked
/// as such rather than nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsFeed {
    pub environment: String,
    pub source: String,
    pub latest: Option<MetricsSample>,
    pub error: Option<FeedError>,
}

impl MetricsFeed {
    pub fn new(environment: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            environment: environment.into(),
            source: source.into(),
            latest: None,
            error: None,
        }
    }

    /// True when there is data but the latest refresh failed.
    pub fn is_stale(&self) -> bool {
        self.latest.is_some() && self.error.is_some()
    }

    /// Age of the data shown, in seconds.
    pub fn age_secs(&self, now: DateTime<Utc>) -> Option<f64> {
        self.latest.as_ref().map(|s| s.age_secs(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(secs: i64, rate: f64) -> HistoryPoint {
        Signals::all(Signal::value(rate)).point(DateTime::from_timestamp(secs, 0).unwrap())
    }

    #[test]
    fn history_keeps_the_newest_points() {
        let mut h = History::with_capacity(3);
        for i in 0..5 {
            h.push(point(i, i as f64));
        }
        assert_eq!(
            h.series(|p| p.request_rate),
            vec![Some(2.0), Some(3.0), Some(4.0)]
        );
    }

    #[test]
    fn history_replaces_a_point_that_is_not_newer() {
        let mut h = History::with_capacity(3);
        h.push(point(10, 1.0));
        h.push(point(10, 2.0));
        h.push(point(9, 3.0));
        assert_eq!(h.series(|p| p.request_rate), vec![Some(3.0)]);
    }

    #[test]
    fn non_finite_values_are_never_values() {
        assert!(matches!(
            Signal::from_f64(f64::NAN, "idle"),
            Signal::NoData { .. }
        ));
        assert!(Signal::from_f64(f64::INFINITY, "idle").is_error());
        assert_eq!(Signal::from_f64(0.5, "idle").get(), Some(0.5));
    }

    #[test]
    fn signals_serialize_with_a_state_tag() {
        let json = serde_json::to_value(Signal::value(1.5)).unwrap();
        assert_eq!(json, serde_json::json!({"state": "value", "value": 1.5}));
        let v = Verdict::Fail {
            reasons: vec!["x".into()],
        };
        let json = serde_json::to_value(v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"result": "fail", "reasons": ["x"]})
        );
    }

    #[test]
    fn feed_is_stale_only_with_data_and_an_error() {
        let mut f = MetricsFeed::new("dev", "scrape x");
        f.error = Some(FeedError {
            message: "down".into(),
            failed_at: Utc::now(),
            consecutive_failures: 1,
        });
        assert!(!f.is_stale());
        assert_eq!(f.age_secs(Utc::now()), None);
    }
}
