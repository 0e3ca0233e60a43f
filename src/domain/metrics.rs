//! Live traffic numbers for one environment, as the panels, `signalbox ctl status` and
//! runbook gates read them. Pure data: the `metrics` module fills it in.

use std::sync::Arc;

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
///
/// Every sample carries a copy of each history, so copies must be cheap: older points sit
/// in a shared, immutable block and only the few newest are copied. Serialises as
/// `{"points": [...]}`.
#[derive(Clone, Debug)]
pub struct History {
    capacity: usize,
    /// Older points, shared between copies; may hold up to `TAIL` more than fit.
    shared: Arc<Vec<HistoryPoint>>,
    /// The newest points, fewer than `TAIL`.
    tail: Vec<HistoryPoint>,
}

/// Points gathered before they move into a new shared block.
const TAIL: usize = 8;

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_HISTORY_POINTS)
    }
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.points().eq(other.points())
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Points<'a>(&'a History);
        impl Serialize for Points<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.points())
            }
        }
        let mut st = s.serialize_struct("History", 1)?;
        st.serialize_field("points", &Points(self))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            points: Vec<HistoryPoint>,
        }
        let raw = Raw::deserialize(d)?;
        let mut h = History::with_capacity(DEFAULT_HISTORY_POINTS.max(raw.points.len()));
        for p in raw.points {
            h.push(p);
        }
        Ok(h)
    }
}

impl History {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            shared: Arc::new(Vec::new()),
            tail: Vec::with_capacity(TAIL),
        }
    }

    /// Appends a point, dropping the oldest when full. A point not newer than the last
    /// one replaces it, so a backfilled history and live samples never overlap.
    pub fn push(&mut self, p: HistoryPoint) {
        if let Some(last) = self.tail.last_mut() {
            if p.at <= last.at {
                *last = p;
                return;
            }
        } else if self.shared.last().is_some_and(|last| p.at <= last.at) {
            if let Some(last) = Arc::make_mut(&mut self.shared).last_mut() {
                *last = p;
            }
            return;
        }
        self.tail.push(p);
        if self.tail.len() == TAIL {
            let keep = self.capacity.saturating_sub(TAIL);
            let skip = self.shared.len().saturating_sub(keep);
            let mut block = Vec::with_capacity(self.capacity.max(TAIL));
            block.extend_from_slice(&self.shared[skip..]);
            block.append(&mut self.tail);
            self.shared = Arc::new(block);
        }
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &HistoryPoint> {
        self.shared
            .iter()
            .chain(self.tail.iter())
            .skip(self.excess())
    }

    fn excess(&self) -> usize {
        (self.shared.len() + self.tail.len()).saturating_sub(self.capacity)
    }

    pub fn len(&self) -> usize {
        self.shared.len() + self.tail.len() - self.excess()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One signal over time, for a sparkline: e.g. `h.series(|p| p.latency_p95)`.
    pub fn series(&self, f: impl Fn(&HistoryPoint) -> Option<f64>) -> Vec<Option<f64>> {
        self.points().map(f).collect()
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
    /// `None` when the request or error counts are unknown or zero.
    pub errors: Option<ErrorRatioTest>,
    /// `None` before anything could be measured (e.g. before the second scrape); its
    /// test fields are `None` when latency buckets are unavailable.
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
    fn history_copies_share_old_points_and_stay_independent() {
        let mut h = History::with_capacity(20);
        for i in 0..50 {
            h.push(point(i, i as f64));
            assert_eq!(h.len(), (i as usize + 1).min(20));
        }
        let copy = h.clone();
        h.push(point(50, 50.0));
        let want: Vec<Option<f64>> = (30..50).map(|i| Some(i as f64)).collect();
        assert_eq!(copy.series(|p| p.request_rate), want);
        let want: Vec<Option<f64>> = (31..51).map(|i| Some(i as f64)).collect();
        assert_eq!(h.series(|p| p.request_rate), want);
        // Replacing the newest point of a full shared block leaves copies alone.
        let mut h = History::with_capacity(8);
        for i in 0..8 {
            h.push(point(i, 1.0));
        }
        let copy = h.clone();
        h.push(point(7, 2.0));
        assert_eq!(h.series(|p| p.request_rate).last(), Some(&Some(2.0)));
        assert_eq!(copy.series(|p| p.request_rate).last(), Some(&Some(1.0)));
    }

    #[test]
    fn history_serializes_as_points_and_back() {
        let mut h = History::with_capacity(3);
        for i in 0..5 {
            h.push(point(i, i as f64));
        }
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["points"].as_array().unwrap().len(), 3);
        let back: History = serde_json::from_value(json).unwrap();
        assert_eq!(back, h);
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
