//! From one parsed scrape of signalbox's gateway to typed readings; from two readings to
//! increments; from increments over a window to the numbers on the panels.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::AddAssign;

use crate::domain::metrics::{Signal, Signals, TargetHealth};

use super::exposition::{Exposition, ExpositionError, MetricKind, Sample, parse_float};
use super::quantile::quantile_of;
use super::rate::counter_increase;

/// The gateway's metric names (the contract with `gateway::metrics`).
pub mod names {
    pub const REQUESTS: &str = "signalbox_requests_total";
    pub const DURATION: &str = "signalbox_request_duration_seconds";
    pub const DURATION_BUCKET: &str = "signalbox_request_duration_seconds_bucket";
    pub const UPSTREAM_HEALTHY: &str = "signalbox_upstream_healthy";
    pub const ACTIVE_CONNECTIONS: &str = "signalbox_active_connections";
    pub const RATE_LIMITED: &str = "signalbox_rate_limited_total";
    pub const CONFIG_REVISION: &str = "signalbox_config_revision";
    pub const FLAG_EVALUATIONS: &str = "signalbox_flag_evaluations_total";
}

/// A route and one of its upstreams.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub route: String,
    pub upstream: String,
}

/// The status classes the gateway reports, in order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One scrape of signalbox's gateway, keyed for delta computation. Counter series stay
/// separate (per method and status class, per bucket) so resets are detected per series,
/// as Prometheus does.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    requests: HashMap<RequestKey, f64>,
    buckets: HashMap<(Pair, u64), f64>,
    rate_limited: HashMap<String, f64>,
    flags: HashMap<(String, String), f64>,
    pub targets: Vec<TargetHealth>,
    pub active_connections: Option<f64>,
    pub config_revision: Option<f64>,
    /// Whether the request counter / latency histogram families are exposed at all.
    pub has_requests: bool,
    pub has_latency: bool,
    /// Non-fatal oddities, e.g. a NaN gauge.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RequestKey {
    pair: Pair,
    method: String,
    /// Index into `CLASSES`, or `CLASSES.len()` for anything else.
    class: u8,
}

fn bad(s: &Sample, name: &str, message: String) -> ExpositionError {
    ExpositionError {
        line: s.line,
        message,
        text: format!("{name}{}", s.labels),
    }
}

/// A counter value must be a finite, non-negative number; anything else means the
/// exposition is broken and no rate computed from it can be trusted.
fn counter_value(s: &Sample, name: &str) -> Result<f64, ExpositionError> {
    if s.value.is_finite() && s.value >= 0.0 {
        Ok(s.value)
    } else {
        Err(bad(
            s,
            name,
            format!("counter has invalid value {}", s.value),
        ))
    }
}

fn expect_kind(exp: &Exposition, name: &str, want: MetricKind) -> Result<(), ExpositionError> {
    let got = exp.kind_of(name);
    if got == want || got == MetricKind::Untyped {
        return Ok(());
    }
    let line = exp.samples(name).first().map_or(0, |s| s.line);
    Err(ExpositionError {
        line,
        message: format!("{name} is declared as {got:?}, expected {want:?}"),
        text: name.to_owned(),
    })
}

fn insert_unique<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, f64>,
    key: K,
    v: f64,
    s: &Sample,
    name: &str,
) -> Result<(), ExpositionError> {
    match map.entry(key) {
        Entry::Occupied(_) => Err(bad(s, name, "duplicate series".into())),
        Entry::Vacant(e) => {
            e.insert(v);
            Ok(())
        }
    }
}

impl Reading {
    /// Picks the gateway's series out of a parsed exposition. Broken counters (NaN,
    /// infinite, negative, duplicated, bucket without a numeric `le`) reject the scrape
    /// with the line; odd gauges are skipped and noted in `problems`.
    pub fn from_exposition(exp: &Exposition) -> Result<Reading, ExpositionError> {
        use names::*;
        let mut r = Reading {
            // Text format 0.0.4 declares `signalbox_requests_total`, OpenMetrics
            // `signalbox_requests`.
            has_requests: exp.has_family(REQUESTS) || exp.has_family("signalbox_requests"),
            has_latency: exp.has_family(DURATION),
            ..Reading::default()
        };
        expect_kind(exp, REQUESTS, MetricKind::Counter)?;
        for s in exp.samples(REQUESTS) {
            let v = counter_value(s, REQUESTS)?;
            let class = s.labels.get("status_class");
            let key = RequestKey {
                pair: pair_of(s),
                method: s.labels.get("method").to_owned(),
                class: CLASSES
                    .iter()
                    .position(|c| *c == class)
                    .unwrap_or(CLASSES.len()) as u8,
            };
            insert_unique(&mut r.requests, key, v, s, REQUESTS)?;
        }
        expect_kind(exp, DURATION_BUCKET, MetricKind::Histogram)?;
        for s in exp.samples(DURATION_BUCKET) {
            let v = counter_value(s, DURATION_BUCKET)?;
            if !s.labels.has("le") {
                return Err(bad(
                    s,
                    DURATION_BUCKET,
                    "histogram bucket without `le` label".into(),
                ));
            }
            let le = parse_float(s.labels.get("le"))
                .filter(|le| !le.is_nan())
                .ok_or_else(|| {
                    bad(
                        s,
                        DURATION_BUCKET,
                        "bucket bound `le` is not a number".into(),
                    )
                })?;
            insert_unique(
                &mut r.buckets,
                (pair_of(s), le.to_bits()),
                v,
                s,
                DURATION_BUCKET,
            )?;
        }
        for s in exp.samples(RATE_LIMITED) {
            let v = counter_value(s, RATE_LIMITED)?;
            insert_unique(
                &mut r.rate_limited,
                s.labels.get("route").to_owned(),
                v,
                s,
                RATE_LIMITED,
            )?;
        }
        for s in exp.samples(FLAG_EVALUATIONS) {
            let v = counter_value(s, FLAG_EVALUATIONS)?;
            let key = (
                s.labels.get("flag").to_owned(),
                s.labels.get("variant").to_owned(),
            );
            insert_unique(&mut r.flags, key, v, s, FLAG_EVALUATIONS)?;
        }
        for s in exp.samples(UPSTREAM_HEALTHY) {
            if s.value.is_finite() {
                r.targets.push(TargetHealth {
                    upstream: s.labels.get("upstream").to_owned(),
                    target: s.labels.get("target").to_owned(),
                    healthy: s.value >= 0.5,
                });
            } else {
                r.problems.push(format!(
                    "line {}: {UPSTREAM_HEALTHY}{} is {}; target health unknown",
                    s.line, s.labels, s.value
                ));
            }
        }
        r.targets
            .sort_by(|a, b| (&a.upstream, &a.target).cmp(&(&b.upstream, &b.target)));
        r.active_connections = r.gauge(exp, ACTIVE_CONNECTIONS);
        r.config_revision = r.gauge(exp, CONFIG_REVISION);
        Ok(r)
    }

    fn gauge(&mut self, exp: &Exposition, name: &str) -> Option<f64> {
        let s = exp.samples(name).first()?;
        if s.value.is_finite() {
            Some(s.value)
        } else {
            self.problems
                .push(format!("line {}: {name} is {}; ignored", s.line, s.value));
            None
        }
    }

    /// Every route/upstream pair with a request or latency series.
    pub fn pairs(&self) -> impl Iterator<Item = &Pair> {
        self.requests
            .keys()
            .map(|k| &k.pair)
            .chain(self.buckets.keys().map(|k| &k.0))
    }

    pub fn rate_limited_routes(&self) -> impl Iterator<Item = &str> {
        self.rate_limited.keys().map(String::as_str)
    }

    pub fn flag_keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.flags.keys()
    }
}

fn pair_of(s: &Sample) -> Pair {
    Pair {
        route: s.labels.get("route").to_owned(),
        upstream: s.labels.get("upstream").to_owned(),
    }
}

/// Requests and latency observed in some span of time, for one pair or summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    pub requests: f64,
    /// Requests per status class 1xx..5xx.
    pub classes: [f64; 5],
    /// Cumulative latency bucket increases `(upper_bound, count)`, sorted by bound.
    pub buckets: Vec<(f64, f64)>,
}

impl Traffic {
    pub fn errors_5xx(&self) -> f64 {
        self.classes[4]
    }

    pub fn observations(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.binary_search_by(|b| b.0.total_cmp(&le)) {
            Ok(i) => self.buckets[i].1 += count,
            Err(i) => self.buckets.insert(i, (le, count)),
        }
    }
}

impl AddAssign<&Traffic> for Traffic {
    fn add_assign(&mut self, o: &Traffic) {
        self.requests += o.requests;
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        if self.buckets.len() == o.buckets.len()
            && self.buckets.iter().zip(&o.buckets).all(|(a, b)| a.0 == b.0)
        {
            for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
                a.1 += b.1;
            }
        } else {
            for &(le, c) in &o.buckets {
                self.add_bucket(le, c);
            }
        }
    }
}

/// Everything counted between two scrapes.
#[derive(Clone, Debug, Default)]
pub struct Increments {
    pub pairs: HashMap<Pair, Traffic>,
    pub rate_limited: HashMap<String, f64>,
    pub flags: HashMap<(String, String), f64>,
}

impl AddAssign<&Increments> for Increments {
    fn add_assign(&mut self, o: &Increments) {
        for (k, t) in &o.pairs {
            match self.pairs.get_mut(k) {
                Some(mine) => *mine += t,
                None => {
                    self.pairs.insert(k.clone(), t.clone());
                }
            }
        }
        for (k, v) in &o.rate_limited {
            *self.rate_limited.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.flags {
            *self.flags.entry(k.clone()).or_default() += v;
        }
    }
}

/// Per-series counter increases from `prev` to `cur`, summed per pair.
pub fn increments(prev: &Reading, cur: &Reading) -> Increments {
    let mut inc = Increments::default();
    for (k, &v) in &cur.requests {
        let d = counter_increase(prev.requests.get(k).copied(), v);
        let t = pair_entry(&mut inc.pairs, &k.pair);
        t.requests += d;
        if let Some(c) = t.classes.get_mut(usize::from(k.class)) {
            *c += d;
        }
    }
    for (k, &v) in &cur.buckets {
        let d = counter_increase(prev.buckets.get(k).copied(), v);
        pair_entry(&mut inc.pairs, &k.0).add_bucket(f64::from_bits(k.1), d);
    }
    for (k, &v) in &cur.rate_limited {
        inc.rate_limited.insert(
            k.clone(),
            counter_increase(prev.rate_limited.get(k).copied(), v),
        );
    }
    for (k, &v) in &cur.flags {
        inc.flags
            .insert(k.clone(), counter_increase(prev.flags.get(k).copied(), v));
    }
    inc
}

fn pair_entry<'a>(m: &'a mut HashMap<Pair, Traffic>, p: &Pair) -> &'a mut Traffic {
    if !m.contains_key(p) {
        m.insert(p.clone(), Traffic::default());
    }
    m.get_mut(p).expect("inserted above")
}

/// What is known about the data behind a [`Traffic`], for the reasons shown in panels.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Seconds the traffic was counted over; 0 before the second scrape.
    pub window_secs: f64,
    pub has_requests: bool,
    pub has_latency: bool,
    /// Where the data came from, named in `Missing` reasons.
    pub source: &'a str,
}

/// The six panel numbers for some traffic.
pub fn signals(t: &Traffic, ctx: &Context) -> Signals {
    if ctx.window_secs <= 0.0 {
        return Signals::all(Signal::no_data(
            "waiting for a second scrape to compute rates",
        ));
    }
    let idle = format!("no requests in the last {:.0}s", ctx.window_secs);
    let (request_rate, error_ratio_5xx, error_ratio_4xx) = if ctx.has_requests {
        (
            Signal::from_f64(t.requests / ctx.window_secs, &idle),
            Signal::from_f64(t.classes[4] / t.requests, &idle),
            Signal::from_f64(t.classes[3] / t.requests, &idle),
        )
    } else {
        let m = Signal::missing(format!(
            "{} is not exposed by {}",
            names::REQUESTS,
            ctx.source
        ));
        (m.clone(), m.clone(), m)
    };
    let latency = |q: f64| {
        if ctx.has_latency {
            let idle = format!(
                "no latency observations in the last {:.0}s",
                ctx.window_secs
            );
            Signal::from_f64(quantile_of(q, &t.buckets), &idle)
        } else {
            Signal::missing(format!(
                "{} is not exposed by {}",
                names::DURATION,
                ctx.source
            ))
        }
    };
    Signals {
        request_rate,
        error_ratio_5xx,
        error_ratio_4xx,
        latency_p50: latency(0.5),
        latency_p95: latency(0.95),
        latency_p99: latency(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::parse;

    fn reading(text: &str) -> Reading {
        Reading::from_exposition(&parse(text).unwrap()).unwrap()
    }

    fn text(blue_2xx: f64, blue_5xx: f64, b: [f64; 3]) -> String {
        format!(
            r#"# TYPE signalbox_requests counter
signalbox_requests_total{{route="users",upstream="blue",method="GET",status_class="2xx"}} {blue_2xx}
signalbox_requests_total{{route="users",upstream="blue",method="POST",status_class="5xx"}} {blue_5xx}
# TYPE signalbox_request_duration_seconds histogram
signalbox_request_duration_seconds_bucket{{route="users",upstream="blue",le="0.1"}} {}
signalbox_request_duration_seconds_bucket{{route="users",upstream="blue",le="1.0"}} {}
signalbox_request_duration_seconds_bucket{{route="users",upstream="blue",le="+Inf"}} {}
"#,
            b[0], b[1], b[2]
        )
    }

    fn blue() -> Pair {
        Pair {
            route: "users".into(),
            upstream: "blue".into(),
        }
    }

    #[test]
    fn increments_between_two_scrapes() {
        let a = reading(&text(100.0, 5.0, [80.0, 100.0, 105.0]));
        let b = reading(&text(190.0, 15.0, [160.0, 195.0, 205.0]));
        let inc = increments(&a, &b);
        let t = &inc.pairs[&blue()];
        assert_eq!(t.requests, 100.0);
        assert_eq!(t.classes, [0.0, 90.0, 0.0, 0.0, 10.0]);
        assert_eq!(
            t.buckets,
            vec![(0.1, 80.0), (1.0, 95.0), (f64::INFINITY, 100.0)]
        );
        let ctx = Context {
            window_secs: 10.0,
            has_requests: true,
            has_latency: true,
            source: "test",
        };
        let s = signals(t, &ctx);
        assert_eq!(s.request_rate.get(), Some(10.0));
        assert_eq!(s.error_ratio_5xx.get(), Some(0.1));
        assert_eq!(s.error_ratio_4xx.get(), Some(0.0));
        // p50: rank 50 in le=0.1 (80): 0 + 0.1 * 50/80 = 0.0625.
        assert_eq!(s.latency_p50.get(), Some(0.0625));
        // p95: rank 95 → le=1.0 (95): 0.1 + 0.9 * (95-80)/(95-80) = 1.0.
        assert_eq!(s.latency_p95.get(), Some(1.0));
        // p99: rank 99 → +Inf bucket → upper bound of the bucket below, 1.0.
        assert_eq!(s.latency_p99.get(), Some(1.0));
    }

    #[test]
    fn a_gateway_restart_counts_the_new_values() {
        let a = reading(&text(1000.0, 50.0, [900.0, 1000.0, 1050.0]));
        let b = reading(&text(20.0, 1.0, [15.0, 20.0, 21.0]));
        let t = &increments(&a, &b).pairs[&blue()];
        assert_eq!(t.requests, 21.0);
        assert_eq!(t.errors_5xx(), 1.0);
        assert_eq!(
            t.buckets,
            vec![(0.1, 15.0), (1.0, 20.0), (f64::INFINITY, 21.0)]
        );
    }

    #[test]
    fn no_traffic_and_warmup_are_no_data() {
        let ctx = Context {
            window_secs: 10.0,
            has_requests: true,
            has_latency: true,
            source: "test",
        };
        let s = signals(&Traffic::default(), &ctx);
        assert_eq!(s.request_rate.get(), Some(0.0));
        assert!(matches!(s.error_ratio_5xx, Signal::NoData { .. }));
        assert!(matches!(s.latency_p95, Signal::NoData { .. }));
        let s = signals(
            &Traffic::default(),
            &Context {
                window_secs: 0.0,
                ..ctx
            },
        );
        assert!(
            matches!(s.request_rate, Signal::NoData { ref reason } if reason.contains("second scrape"))
        );
    }

    #[test]
    fn missing_families_are_marked_missing() {
        let r =
            reading("# TYPE signalbox_active_connections gauge\nsignalbox_active_connections 4\n");
        assert!(!r.has_requests && !r.has_latency);
        assert_eq!(r.active_connections, Some(4.0));
        let ctx = Context {
            window_secs: 10.0,
            has_requests: r.has_requests,
            has_latency: r.has_latency,
            source: "http://gw/metrics",
        };
        let s = signals(&Traffic::default(), &ctx);
        match &s.request_rate {
            Signal::Missing { reason } => {
                assert_eq!(
                    reason,
                    "signalbox_requests_total is not exposed by http://gw/metrics"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.latency_p99, Signal::Missing { .. }));
    }

    #[test]
    fn broken_counters_reject_the_scrape() {
        let cases = [
            (
                "signalbox_requests_total{route=\"a\",status_class=\"2xx\"} NaN",
                "invalid value NaN",
            ),
            (
                "signalbox_requests_total{route=\"a\",status_class=\"2xx\"} +Inf",
                "invalid value inf",
            ),
            (
                "signalbox_requests_total{route=\"a\",status_class=\"2xx\"} -1",
                "invalid value -1",
            ),
            (
                "signalbox_requests_total{route=\"a\"} 1\nsignalbox_requests_total{route=\"a\"} 2",
                "duplicate series",
            ),
            (
                "signalbox_request_duration_seconds_bucket{route=\"a\"} 1",
                "without `le`",
            ),
            (
                "signalbox_request_duration_seconds_bucket{route=\"a\",le=\"fast\"} 1",
                "not a number",
            ),
            (
                "# TYPE signalbox_requests_total gauge\nsignalbox_requests_total 1",
                "expected Counter",
            ),
        ];
        for (text, needle) in cases {
            let e = Reading::from_exposition(&parse(text).unwrap()).expect_err(text);
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(e.line >= 1, "{e}");
        }
    }

    #[test]
    fn odd_gauges_are_noted_not_fatal() {
        let r = reading(
            "signalbox_upstream_healthy{upstream=\"blue\",target=\"a:1\"} NaN\n\
             signalbox_upstream_healthy{upstream=\"blue\",target=\"b:1\"} 1\n\
             signalbox_config_revision +Inf\n",
        );
        assert_eq!(r.targets.len(), 1);
        assert!(r.targets[0].healthy);
        assert_eq!(r.config_revision, None);
        assert_eq!(r.problems.len(), 2);
    }

    #[test]
    fn traffic_adds_up_bucket_by_bucket() {
        let mut a = Traffic {
            requests: 2.0,
            classes: [0.0, 2.0, 0.0, 0.0, 0.0],
            buckets: vec![(0.1, 1.0), (f64::INFINITY, 2.0)],
        };
        let b = Traffic {
            requests: 3.0,
            classes: [0.0, 0.0, 0.0, 1.0, 2.0],
            buckets: vec![(0.1, 3.0), (f64::INFINITY, 3.0)],
        };
        a += &b;
        assert_eq!(a.requests, 5.0);
        assert_eq!(a.classes, [0.0, 2.0, 0.0, 1.0, 2.0]);
        assert_eq!(a.buckets, vec![(0.1, 4.0), (f64::INFINITY, 5.0)]);
        let c = Traffic {
            buckets: vec![(0.05, 1.0), (f64::INFINITY, 1.0)],
            ..Traffic::default()
        };
        a += &c;
        assert_eq!(
            a.buckets,
            vec![(0.05, 1.0), (0.1, 4.0), (f64::INFINITY, 6.0)]
        );
    }
}
