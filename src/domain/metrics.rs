//! Live traffic numbers for one environment, as the panels, `signalbox ctl status` and
//! runbook gates read them. Pure data: the `metrics` module fills it in.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, OnceLock};

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
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub at: DateTime<Utc>,
    pub request_rate: Option<f64>,
    pub error_ratio_5xx: Option<f64>,
    pub error_ratio_4xx: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
}

/// A [`HistoryPoint`] as stored: the six values side by side with a bit per value that
/// is present, 64 bytes instead of 112. Exact: every `Option<f64>` comes back as it went in.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Packed {
    values: [f64; 6],
    at: DateTime<Utc>,
    present: u8,
}

impl From<&HistoryPoint> for Packed {
    fn from(p: &HistoryPoint) -> Self {
        let all = [
            p.request_rate,
            p.error_ratio_5xx,
            p.error_ratio_4xx,
            p.latency_p50,
            p.latency_p95,
            p.latency_p99,
        ];
        let mut values = [0.0; 6];
        let mut present = 0;
        for (i, v) in all.into_iter().enumerate() {
            if let Some(v) = v {
                values[i] = v;
                present |= 1 << i;
            }
        }
        Packed {
            values,
            at: p.at,
            present,
        }
    }
}

impl Packed {
    fn point(&self) -> HistoryPoint {
        let v = |i: usize| (self.present & (1 << i) != 0).then_some(self.values[i]);
        HistoryPoint {
            at: self.at,
            request_rate: v(0),
            error_ratio_5xx: v(1),
            error_ratio_4xx: v(2),
            latency_p50: v(3),
            latency_p95: v(4),
            latency_p99: v(5),
        }
    }
}

/// Points per shared chunk of a [`History`].
const CHUNK: usize = 8;

/// A run of up to `CHUNK` points, filled in order and never changed once set. Copies of a
/// history share chunks; each copy knows how many points it has, so a point appended
/// through one copy is invisible to older copies.
#[derive(Default)]
struct Chunk([OnceLock<Packed>; CHUNK]);

impl Chunk {
    /// A new chunk holding `points`, at most `CHUNK` of them.
    fn of(points: impl IntoIterator<Item = Packed>) -> Arc<Chunk> {
        let c = Chunk::default();
        for (slot, p) in c.0.iter().zip(points) {
            let _ = slot.set(p);
        }
        Arc::new(c)
    }

    fn get(&self, i: usize) -> Option<&Packed> {
        self.0.get(i).and_then(OnceLock::get)
    }
}

/// The most recent points, oldest first, at most `capacity` of them.
///
/// Every sample carries a copy of each history (the poller keeps one to append to), so a
/// copy must be cheap and must not duplicate points: the points live in shared,
/// append-only chunks, and a copy is a list of chunk handles plus where its window starts
/// and ends. Each point is stored once however many copies exist. Serialises as
/// `{"points": [...]}`.
#[derive(Clone)]
pub struct History {
    capacity: usize,
    chunks: VecDeque<Arc<Chunk>>,
    /// Index in `chunks[0]` of the oldest point.
    start: usize,
    len: usize,
}

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

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("capacity", &self.capacity)
            .field("points", &self.points().collect::<Vec<_>>())
            .finish()
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
            chunks: VecDeque::new(),
            start: 0,
            len: 0,
        }
    }

    /// Where the slot after the newest point is: (chunk, index in it).
    fn end(&self) -> (usize, usize) {
        let n = self.start + self.len;
        (n / CHUNK, n % CHUNK)
    }

    fn packed(&self) -> impl Iterator<Item = &Packed> {
        (self.start..self.start + self.len)
            .filter_map(|n| self.chunks.get(n / CHUNK)?.get(n % CHUNK))
    }

    /// Appends a point, dropping the oldest when full. A point not newer than the last
    /// one replaces it, so a backfilled history and live samples never overlap.
    pub fn push(&mut self, p: HistoryPoint) {
        let packed = Packed::from(&p);
        if let Some(last) = self.packed().last()
            && p.at <= last.at
        {
            self.replace_last(packed);
            return;
        }
        let (c, i) = self.end();
        let appended = match self.chunks.get(c) {
            // A slot already set was filled through another copy: this copy diverges
            // and takes its own chunk with its own points.
            Some(chunk) => chunk.0[i].set(packed).is_ok(),
            None => {
                self.chunks.push_back(Chunk::of([packed]));
                true
            }
        };
        if !appended {
            let own = self.chunks[c].0[..i]
                .iter()
                .filter_map(OnceLock::get)
                .copied();
            self.chunks[c] = Chunk::of(own.chain([packed]));
        }
        self.len += 1;
        if self.len > self.capacity {
            self.len -= 1;
            self.start += 1;
            if self.start == CHUNK {
                self.start = 0;
                self.chunks.pop_front();
            }
        }
    }

    /// Replaces the newest point without touching other copies: the chunk holding it is
    /// copied up to it. Points of the first chunk that left the window are copied too, so
    /// every point keeps its place.
    fn replace_last(&mut self, p: Packed) {
        let (c, i) = match self.end() {
            (c, 0) => (c - 1, CHUNK - 1),
            (c, i) => (c, i - 1),
        };
        let own = self.chunks[c].0[..i]
            .iter()
            .filter_map(OnceLock::get)
            .copied();
        self.chunks[c] = Chunk::of(own.chain([p]));
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = HistoryPoint> + '_ {
        self.packed().map(Packed::point)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One signal over time, for a sparkline: e.g. `h.series(|p| p.latency_p95)`.
    pub fn series(&self, f: impl Fn(&HistoryPoint) -> Option<f64>) -> Vec<Option<f64>> {
        self.points().map(|p| f(&p)).collect()
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
///
/// The sample is shared: the poller's channel and every reader hold the same one, so
/// handing a feed on copies a pointer, not thousands of routes' numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsFeed {
    pub environment: String,
    pub source: String,
    #[serde(default, with = "shared_sample")]
    pub latest: Option<Arc<MetricsSample>>,
    pub error: Option<FeedError>,
}

/// Serde for the shared sample, as the sample itself (serde's `rc` feature is off).
mod shared_sample {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MetricsSample;

    pub fn serialize<S: Serializer>(
        v: &Option<Arc<MetricsSample>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_deref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<MetricsSample>>, D::Error> {
        Ok(Option::<MetricsSample>::deserialize(d)?.map(Arc::new))
    }
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

    /// The same history kept as a plain list: what `History` must behave like.
    #[derive(Clone)]
    struct Model(Vec<HistoryPoint>, usize);

    impl Model {
        fn push(&mut self, p: HistoryPoint) {
            match self.0.last_mut() {
                Some(last) if p.at <= last.at => *last = p,
                _ => self.0.push(p),
            }
            if self.0.len() > self.1 {
                self.0.remove(0);
            }
        }
    }

    #[test]
    fn history_matches_a_plain_list_through_copies_replacements_and_diverging_pushes() {
        // A small linear congruential generator: deterministic, no dependency.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for capacity in [1, 2, 7, 8, 9, 16, 60] {
            let mut copies = vec![(
                History::with_capacity(capacity),
                Model(Vec::new(), capacity),
            )];
            for step in 0..400 {
                let k = next(copies.len() as u64) as usize;
                match next(10) {
                    // Keep a copy, as every sample does.
                    0 => {
                        let c = copies[k].clone();
                        copies.push(c);
                        if copies.len() > 6 {
                            copies.remove(0);
                        }
                    }
                    // A point not newer than the last: replaces it.
                    1 => {
                        let (h, m) = &mut copies[k];
                        let at = m.0.last().map_or(0, |p| p.at.timestamp() - next(2) as i64);
                        let p = point(at, step as f64);
                        h.push(p);
                        m.push(p);
                    }
                    _ => {
                        let (h, m) = &mut copies[k];
                        let at = m.0.last().map_or(0, |p| p.at.timestamp()) + 1;
                        let mut p = point(at, step as f64);
                        p.latency_p99 = (step % 3 != 0).then_some(-(step as f64));
                        h.push(p);
                        m.push(p);
                    }
                }
                for (h, m) in &copies {
                    assert_eq!(
                        h.points().collect::<Vec<_>>(),
                        m.0,
                        "capacity {capacity}, step {step}"
                    );
                    assert_eq!(h.len(), m.0.len());
                    assert!(h.len() <= capacity);
                }
            }
        }
    }

    #[test]
    fn history_copies_store_each_point_once() {
        // As the poller does: push to one history, keep a copy per sample.
        let mut h = History::with_capacity(60);
        let mut samples = Vec::new();
        for i in 0..200 {
            h.push(point(i, i as f64));
            samples.push(h.clone());
        }
        let mut chunks: Vec<*const Chunk> = samples
            .iter()
            .flat_map(|s| s.chunks.iter().map(Arc::as_ptr))
            .collect();
        chunks.sort();
        chunks.dedup();
        // 200 points in chunks of 8: 25 chunks, each shared by every copy that shows it.
        assert_eq!(chunks.len(), 200usize.div_ceil(CHUNK));
        // A copy holds only handles: at most one per chunk its 60 points span.
        assert!(samples.iter().all(|s| s.chunks.len() <= 60 / CHUNK + 2));
        assert_eq!(
            samples[150].series(|p| p.request_rate),
            (91..151).map(|i| Some(i as f64)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn history_points_round_trip_exactly() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let p = HistoryPoint {
            at,
            request_rate: Some(0.0),
            error_ratio_5xx: None,
            error_ratio_4xx: Some(-0.0),
            latency_p50: Some(f64::MAX),
            latency_p95: None,
            latency_p99: Some(1e-300),
        };
        let mut h = History::with_capacity(2);
        h.push(p);
        let back = h.points().next().unwrap();
        assert_eq!(back, p);
        assert!(back.error_ratio_4xx.unwrap().is_sign_negative());
        assert_eq!(std::mem::size_of::<Packed>(), 64);
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
