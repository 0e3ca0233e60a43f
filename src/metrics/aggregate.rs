//! From one parsed scrape of signalbox's gateway to typed readings; from two readings to
//! increments; from increments over a window to the numbers on the panels.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::AddAssign;
use std::sync::Arc;

use crate::domain::metrics::{Signal, Signals, TargetHealth};

use super::exposition::{Exposition, ExpositionError, MetricKind, Sample, parse_float};
use super::quantile::quantiles;
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
/// as Prometheus does; they are grouped per route/upstream pair so that a scrape costs a
/// few hundred map operations, not one per series.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pairs: Vec<(Pair, PairSeries)>,
    index: HashMap<Pair, usize>,
    /// Methods seen, indexed by `RequestSeries::method`.
    methods: Vec<String>,
    /// Status classes seen beyond `CLASSES`, indexed by `RequestSeries::class - 5`.
    other_classes: Vec<String>,
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

/// The counter series of one pair, in the order the gateway wrote them.
#[derive(Clone, Debug, Default)]
struct PairSeries {
    requests: Vec<RequestSeries>,
    /// `(le, cumulative count)`.
    buckets: Vec<(f64, f64)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct RequestSeries {
    method: u16,
    /// Index into `CLASSES`, then into `Reading::other_classes`.
    class: u16,
    value: f64,
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

/// The index of `value`: in `fixed` if there, else in `seen` after `fixed` (added if new).
fn intern(
    seen: &mut Vec<String>,
    fixed: &[&str],
    value: &str,
    s: &Sample,
) -> Result<u16, ExpositionError> {
    let i = match fixed.iter().position(|f| *f == value) {
        Some(i) => i,
        None => {
            fixed.len()
                + match seen.iter().position(|m| m == value) {
                    Some(i) => i,
                    None => {
                        seen.push(value.to_owned());
                        seen.len() - 1
                    }
                }
        }
    };
    u16::try_from(i).map_err(|_| bad(s, names::REQUESTS, "too many distinct label values".into()))
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
        let mut last = usize::MAX;
        for s in exp.samples(REQUESTS) {
            let value = counter_value(s, REQUESTS)?;
            let class = s.labels.get("status_class");
            let method = s.labels.get("method");
            let series = RequestSeries {
                method: intern(&mut r.methods, &[], &method, s)?,
                class: intern(&mut r.other_classes, &CLASSES, &class, s)?,
                value,
            };
            let slot = &mut r.slot(&mut last, s).requests;
            if slot
                .iter()
                .any(|x| x.method == series.method && x.class == series.class)
            {
                return Err(bad(s, REQUESTS, "duplicate series".into()));
            }
            slot.push(series);
        }
        expect_kind(exp, DURATION_BUCKET, MetricKind::Histogram)?;
        let mut last = usize::MAX;
        for s in exp.samples(DURATION_BUCKET) {
            let v = counter_value(s, DURATION_BUCKET)?;
            if !s.labels.has("le") {
                return Err(bad(
                    s,
                    DURATION_BUCKET,
                    "histogram bucket without `le` label".into(),
                ));
            }
            let le = parse_float(&s.labels.get("le"))
                .filter(|le| !le.is_nan())
                .ok_or_else(|| {
                    bad(
                        s,
                        DURATION_BUCKET,
                        "bucket bound `le` is not a number".into(),
                    )
                })?;
            let slot = &mut r.slot(&mut last, s).buckets;
            if slot.iter().any(|b| b.0 == le) {
                return Err(bad(s, DURATION_BUCKET, "duplicate series".into()));
            }
            slot.push((le, v));
        }
        for (_, p) in &mut r.pairs {
            if !p.buckets.is_sorted_by(|a, b| a.0 <= b.0) {
                p.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        for s in exp.samples(RATE_LIMITED) {
            let v = counter_value(s, RATE_LIMITED)?;
            insert_unique(
                &mut r.rate_limited,
                s.labels.get("route").into_owned(),
                v,
                s,
                RATE_LIMITED,
            )?;
        }
        for s in exp.samples(FLAG_EVALUATIONS) {
            let v = counter_value(s, FLAG_EVALUATIONS)?;
            let key = (
                s.labels.get("flag").into_owned(),
                s.labels.get("variant").into_owned(),
            );
            insert_unique(&mut r.flags, key, v, s, FLAG_EVALUATIONS)?;
        }
        for s in exp.samples(UPSTREAM_HEALTHY) {
            if s.value.is_finite() {
                r.targets.push(TargetHealth {
                    upstream: s.labels.get("upstream").into_owned(),
                    target: s.labels.get("target").into_owned(),
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

    /// The series of the sample's pair. Consecutive samples usually share a pair (the
    /// gateway writes them grouped), so the last one is checked before the map.
    fn slot(&mut self, last: &mut usize, s: &Sample) -> &mut PairSeries {
        let (route, upstream) = (s.labels.get("route"), s.labels.get("upstream"));
        let hit = self
            .pairs
            .get(*last)
            .is_some_and(|(p, _)| p.route == route && p.upstream == upstream);
        if !hit {
            let key = Pair {
                route: route.into_owned(),
                upstream: upstream.into_owned(),
            };
            *last = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    self.pairs.push((key.clone(), PairSeries::default()));
                    self.index.insert(key, self.pairs.len() - 1);
                    self.pairs.len() - 1
                }
            };
        }
        &mut self.pairs[*last].1
    }

    /// Every route/upstream pair with a request or latency series.
    pub fn pairs(&self) -> impl Iterator<Item = &Pair> {
        self.pairs.iter().map(|(p, _)| p)
    }

    pub fn rate_limited_routes(&self) -> impl Iterator<Item = &str> {
        self.rate_limited.keys().map(String::as_str)
    }

    pub fn flag_keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.flags.keys()
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
    /// Sorted by pair. Consecutive intervals nearly always hold the same pairs, so adding
    /// them up is a walk in step rather than a hash lookup per pair.
    pub pairs: Vec<(Pair, Traffic)>,
    pub rate_limited: HashMap<String, f64>,
    pub flags: HashMap<(String, String), f64>,
}

impl Increments {
    pub fn pair(&self, p: &Pair) -> Option<&Traffic> {
        self.pairs
            .binary_search_by(|(k, _)| k.cmp(p))
            .ok()
            .map(|i| &self.pairs[i].1)
    }
}

impl AddAssign<&Increments> for Increments {
    fn add_assign(&mut self, o: &Increments) {
        let same_pairs = self.pairs.len() == o.pairs.len()
            && self.pairs.iter().zip(&o.pairs).all(|(a, b)| a.0 == b.0);
        if same_pairs {
            for (a, b) in self.pairs.iter_mut().zip(&o.pairs) {
                a.1 += &b.1;
            }
        } else {
            let mine = std::mem::take(&mut self.pairs);
            let mut merged = Vec::with_capacity(mine.len().max(o.pairs.len()));
            let mut theirs = o.pairs.iter().peekable();
            for (k, mut t) in mine {
                while let Some((ok, ot)) = theirs.next_if(|(ok, _)| *ok < k) {
                    merged.push((ok.clone(), ot.clone()));
                }
                if let Some((_, ot)) = theirs.next_if(|(ok, _)| *ok == k) {
                    t += ot;
                }
                merged.push((k, t));
            }
            merged.extend(theirs.cloned());
            self.pairs = merged;
        }
        for (k, v) in &o.rate_limited {
            *self.rate_limited.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.flags {
            *self.flags.entry(k.clone()).or_default() += v;
        }
    }
}

/// The pairs of an interval and each pair's bucket bounds. The same for nearly every
/// interval, so a window's intervals share one.
#[derive(Debug)]
struct Layout {
    /// Sorted, as in [`Increments::pairs`].
    pairs: Vec<Pair>,
    /// The bucket bounds of every pair, one run per pair.
    les: Vec<f64>,
    /// Where pair `i`'s run in `les` ends.
    ends: Vec<usize>,
}

impl Layout {
    fn of(inc: &Increments) -> Self {
        let mut les = Vec::new();
        let mut ends = Vec::with_capacity(inc.pairs.len());
        for (_, t) in &inc.pairs {
            les.extend(t.buckets.iter().map(|b| b.0));
            ends.push(les.len());
        }
        Layout {
            pairs: inc.pairs.iter().map(|(p, _)| p.clone()).collect(),
            les,
            ends,
        }
    }

    /// Same pairs, and bucket bounds equal to the bit.
    fn fits(&self, inc: &Increments) -> bool {
        let mut start = 0;
        self.pairs.len() == inc.pairs.len()
            && self
                .pairs
                .iter()
                .zip(&self.ends)
                .zip(&inc.pairs)
                .all(|((p, &end), (q, t))| {
                    let les = &self.les[start..end];
                    start = end;
                    p == q
                        && les.len() == t.buckets.len()
                        && les
                            .iter()
                            .zip(&t.buckets)
                            .all(|(a, b)| a.to_bits() == b.0.to_bits())
                })
    }
}

/// Numbers per pair before its bucket counts: requests and the five classes.
const FIXED: usize = 6;

/// [`Increments`] as a window keeps them, a dozen or more at once: the numbers of every
/// pair that counted anything in one flat array, laid out by a [`Layout`] shared with the
/// neighbouring intervals. A pair whose numbers are all zero (most of them, in a
/// two-second interval of a gateway with hundreds of routes) takes one bit. With 1,000
/// busy pairs this is about a third of `Increments` (no per-pair keys or bucket vectors);
/// with idle ones, next to nothing. [`PackedIncrements::sum`] gives exactly what adding
/// up the unpacked `Increments` gives.
#[derive(Clone, Debug)]
pub struct PackedIncrements {
    layout: Arc<Layout>,
    /// Bit `i` is set when pair `i` has numbers in `values`; the others are all `+0.0`.
    counted: Box<[u64]>,
    /// Per counted pair in layout order: requests, the five classes, then each bucket's
    /// count.
    values: Box<[f64]>,
    rate_limited: HashMap<String, f64>,
    flags: HashMap<(String, String), f64>,
}

impl PackedIncrements {
    /// Packs `inc`, sharing `like`'s layout when the pairs and buckets are the same.
    pub fn pack(inc: Increments, like: Option<&PackedIncrements>) -> Self {
        let layout = match like {
            Some(l) if l.layout.fits(&inc) => l.layout.clone(),
            _ => Arc::new(Layout::of(&inc)),
        };
        let mut counted = vec![0u64; inc.pairs.len().div_ceil(64)];
        let mut values = Vec::new();
        for (i, (_, t)) in inc.pairs.iter().enumerate() {
            // Bits, not `== 0.0`: a `-0.0` must come back as it went in.
            let zero = |v: f64| v.to_bits() == 0;
            if zero(t.requests)
                && t.classes.iter().all(|&c| zero(c))
                && t.buckets.iter().all(|b| zero(b.1))
            {
                continue;
            }
            counted[i / 64] |= 1 << (i % 64);
            values.push(t.requests);
            values.extend_from_slice(&t.classes);
            values.extend(t.buckets.iter().map(|b| b.1));
        }
        PackedIncrements {
            layout,
            counted: counted.into_boxed_slice(),
            values: values.into_boxed_slice(),
            rate_limited: inc.rate_limited,
            flags: inc.flags,
        }
    }

    /// Adds this interval's numbers, zeros included, to `acc`, a dense array over the
    /// same layout.
    fn add_to(&self, acc: &mut [f64]) {
        let (mut at, mut from, mut start) = (0, 0, 0);
        for (i, &end) in self.layout.ends.iter().enumerate() {
            let n = FIXED + end - start;
            let dst = &mut acc[at..at + n];
            if self.counted[i / 64] & (1 << (i % 64)) != 0 {
                for (a, b) in dst.iter_mut().zip(&self.values[from..from + n]) {
                    *a += b;
                }
                from += n;
            } else {
                // As the unpacked sum would: `-0.0 + 0.0` is `+0.0`.
                for a in dst {
                    *a += 0.0;
                }
            }
            at += n;
            start = end;
        }
    }

    /// This interval's numbers as a dense array over its layout.
    fn dense(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.layout.pairs.len() * FIXED + self.layout.les.len()];
        let (mut at, mut from, mut start) = (0, 0, 0);
        for (i, &end) in self.layout.ends.iter().enumerate() {
            let n = FIXED + end - start;
            if self.counted[i / 64] & (1 << (i % 64)) != 0 {
                v[at..at + n].copy_from_slice(&self.values[from..from + n]);
                from += n;
            }
            at += n;
            start = end;
        }
        v
    }

    /// The `Increments` this was packed from.
    pub fn unpack(&self) -> Increments {
        Increments {
            pairs: unpack_pairs(&self.layout, &self.dense()),
            rate_limited: self.rate_limited.clone(),
            flags: self.flags.clone(),
        }
    }

    /// All intervals added up: the same as unpacking each and adding them in order, but
    /// intervals that share a layout are added as flat arrays.
    pub fn sum<'a>(intervals: impl IntoIterator<Item = &'a PackedIncrements>) -> Increments {
        let intervals: Vec<&PackedIncrements> = intervals.into_iter().collect();
        let Some(first) = intervals.first() else {
            return Increments::default();
        };
        if !intervals
            .iter()
            .all(|i| Arc::ptr_eq(&i.layout, &first.layout))
        {
            let mut total = Increments::default();
            for i in intervals {
                total += &i.unpack();
            }
            return total;
        }
        let mut values = first.dense();
        for i in &intervals[1..] {
            i.add_to(&mut values);
        }
        let mut total = Increments {
            pairs: unpack_pairs(&first.layout, &values),
            ..Increments::default()
        };
        for i in intervals {
            for (k, v) in &i.rate_limited {
                *total.rate_limited.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &i.flags {
                *total.flags.entry(k.clone()).or_default() += v;
            }
        }
        total
    }
}

fn unpack_pairs(layout: &Layout, values: &[f64]) -> Vec<(Pair, Traffic)> {
    let mut out = Vec::with_capacity(layout.pairs.len());
    let (mut at, mut start) = (0, 0);
    for (p, &end) in layout.pairs.iter().zip(&layout.ends) {
        let v = &values[at..at + FIXED + end - start];
        out.push((
            p.clone(),
            Traffic {
                requests: v[0],
                classes: [v[1], v[2], v[3], v[4], v[5]],
                buckets: layout.les[start..end]
                    .iter()
                    .copied()
                    .zip(v[FIXED..].iter().copied())
                    .collect(),
            },
        ));
        at += v.len();
        start = end;
    }
    out
}

/// Per-series counter increases from `prev` to `cur`, summed per pair.
pub fn increments(prev: &Reading, cur: &Reading) -> Increments {
    let mut inc = Increments::default();
    // Label values are interned per reading; translate indexes once.
    let translate = |cur_seen: &[String], prev_seen: &[String], fixed: usize| -> Vec<Option<u16>> {
        (0..fixed)
            .map(|i| Some(i as u16))
            .chain(cur_seen.iter().map(|m| {
                prev_seen
                    .iter()
                    .position(|p| p == m)
                    .map(|i| (fixed + i) as u16)
            }))
            .collect()
    };
    let method_map = translate(&cur.methods, &prev.methods, 0);
    let class_map = translate(&cur.other_classes, &prev.other_classes, CLASSES.len());
    for (pair, series) in &cur.pairs {
        let before = prev.index.get(pair).map(|&i| &prev.pairs[i].1);
        let mut t = Traffic::default();
        for (i, r) in series.requests.iter().enumerate() {
            let (want_m, want_c) = (
                method_map[usize::from(r.method)],
                class_map[usize::from(r.class)],
            );
            let matches = |x: &&RequestSeries| Some(x.method) == want_m && Some(x.class) == want_c;
            // Same position first: the gateway writes series in a stable order.
            let old = before.and_then(|b| {
                b.requests
                    .get(i)
                    .filter(matches)
                    .or_else(|| b.requests.iter().find(matches))
            });
            let d = counter_increase(old.map(|x| x.value), r.value);
            t.requests += d;
            if let Some(c) = t.classes.get_mut(usize::from(r.class)) {
                *c += d;
            }
        }
        t.buckets.reserve_exact(series.buckets.len());
        for (i, &(le, v)) in series.buckets.iter().enumerate() {
            let old = before.and_then(|b| {
                b.buckets
                    .get(i)
                    .filter(|x| x.0 == le)
                    .or_else(|| b.buckets.iter().find(|x| x.0 == le))
            });
            t.buckets.push((le, counter_increase(old.map(|x| x.1), v)));
        }
        inc.pairs.push((pair.clone(), t));
    }
    inc.pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
    let secs = ctx.window_secs;
    if secs <= 0.0 {
        return Signals::all(Signal::no_data(
            "waiting for a second scrape to compute rates",
        ));
    }
    // Reasons are only formatted for the signals that need one.
    let requests = |v: f64| {
        if v.is_nan() {
            Signal::no_data(format!("no requests in the last {secs:.0}s"))
        } else {
            Signal::from_f64(v, "")
        }
    };
    let (request_rate, error_ratio_5xx, error_ratio_4xx) = if ctx.has_requests {
        (
            requests(t.requests / secs),
            requests(t.classes[4] / t.requests),
            requests(t.classes[3] / t.requests),
        )
    } else {
        let m = Signal::missing(format!(
            "{} is not exposed by {}",
            names::REQUESTS,
            ctx.source
        ));
        (m.clone(), m.clone(), m)
    };
    let [p50, p95, p99] = if ctx.has_latency {
        quantiles([0.5, 0.95, 0.99], &t.buckets).map(|v| {
            if v.is_nan() {
                Signal::no_data(format!("no latency observations in the last {secs:.0}s"))
            } else {
                Signal::from_f64(v, "")
            }
        })
    } else {
        let m = Signal::missing(format!(
            "{} is not exposed by {}",
            names::DURATION,
            ctx.source
        ));
        [m.clone(), m.clone(), m]
    };
    Signals {
        request_rate,
        error_ratio_5xx,
        error_ratio_4xx,
        latency_p50: p50,
        latency_p95: p95,
        latency_p99: p99,
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
        let t = inc.pair(&blue()).unwrap();
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
        let t = increments(&a, &b).pair(&blue()).cloned().unwrap();
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
    fn series_are_matched_by_labels_not_position() {
        let a = reading(
            "signalbox_requests_total{route=\"r\",upstream=\"u\",method=\"GET\",status_class=\"2xx\"} 10\n\
             signalbox_requests_total{route=\"r\",upstream=\"u\",method=\"GET\",status_class=\"6xx\"} 1\n",
        );
        // Reordered, a new method, and an unknown class counted in the total only.
        let b = reading(
            "signalbox_requests_total{route=\"r\",upstream=\"u\",method=\"PUT\",status_class=\"5xx\"} 2\n\
             signalbox_requests_total{route=\"r\",upstream=\"u\",method=\"GET\",status_class=\"\"} 4\n\
             signalbox_requests_total{route=\"r\",upstream=\"u\",method=\"GET\",status_class=\"6xx\"} 3\n\
             signalbox_requests_total{route=\"r\",upstream=\"u\",method=\"GET\",status_class=\"2xx\"} 15\n",
        );
        let p = Pair {
            route: "r".into(),
            upstream: "u".into(),
        };
        let t = increments(&a, &b).pair(&p).cloned().unwrap();
        // 2 (new PUT 5xx) + 4 (new unknown class) + 2 (6xx) + 5 (2xx).
        assert_eq!(t.requests, 13.0);
        assert_eq!(t.classes, [0.0, 5.0, 0.0, 0.0, 2.0]);
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
    fn increments_add_up_across_different_pairs() {
        let pair = |r: &str| Pair {
            route: r.into(),
            upstream: "u".into(),
        };
        let t = |n: f64| Traffic {
            requests: n,
            ..Traffic::default()
        };
        let mut a = Increments {
            pairs: vec![(pair("b"), t(1.0)), (pair("d"), t(2.0))],
            ..Increments::default()
        };
        let b = Increments {
            pairs: vec![
                (pair("a"), t(10.0)),
                (pair("b"), t(20.0)),
                (pair("c"), t(30.0)),
                (pair("e"), t(40.0)),
            ],
            ..Increments::default()
        };
        a += &b;
        let got: Vec<(&str, f64)> = a
            .pairs
            .iter()
            .map(|(p, t)| (p.route.as_str(), t.requests))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 10.0),
                ("b", 21.0),
                ("c", 30.0),
                ("d", 2.0),
                ("e", 40.0)
            ]
        );
        let same = a.clone();
        a += &same;
        assert_eq!(a.pair(&pair("d")).unwrap().requests, 4.0);
        assert!(a.pair(&pair("z")).is_none());
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

    /// Increments compare field by field (`Increments` has no `PartialEq`: the window only
    /// adds them up).
    fn same(a: &Increments, b: &Increments) -> bool {
        a.pairs == b.pairs && a.rate_limited == b.rate_limited && a.flags == b.flags
    }

    fn interval(route: &str, n: f64, les: &[f64]) -> Increments {
        let pair = |r: &str, u: &str| Pair {
            route: r.into(),
            upstream: u.into(),
        };
        let t = |k: f64| Traffic {
            requests: k,
            classes: [0.0, k - 1.0, 0.0, 0.5, 0.5],
            buckets: les
                .iter()
                .enumerate()
                .map(|(i, &le)| (le, k * i as f64))
                .collect(),
        };
        Increments {
            pairs: vec![
                (pair(route, "blue"), t(n)),
                (pair(route, "green"), t(n / 3.0)),
            ],
            rate_limited: HashMap::from([(route.to_owned(), n / 10.0)]),
            flags: HashMap::from([(("f".to_owned(), "on".to_owned()), n)]),
        }
    }

    #[test]
    fn packed_increments_unpack_to_what_was_packed() {
        let les = [0.1, 1.0, f64::INFINITY];
        for inc in [
            interval("users", 7.0, &les),
            interval("users", 7.0, &[]),
            Increments::default(),
        ] {
            assert!(same(
                &PackedIncrements::pack(inc.clone(), None).unpack(),
                &inc
            ));
        }
        // Pairs with different bucket counts side by side.
        let mut mixed = interval("a", 3.0, &les);
        mixed.pairs[1].1.buckets.truncate(1);
        assert!(same(
            &PackedIncrements::pack(mixed.clone(), None).unpack(),
            &mixed
        ));
    }

    #[test]
    fn packed_intervals_share_a_layout_only_when_it_fits() {
        let les = [0.1, 1.0, f64::INFINITY];
        let a = PackedIncrements::pack(interval("users", 5.0, &les), None);
        let b = PackedIncrements::pack(interval("users", 9.0, &les), Some(&a));
        assert!(Arc::ptr_eq(&a.layout, &b.layout));
        assert_eq!(a.values.len(), 2 * (FIXED + les.len()));
        let other_route = PackedIncrements::pack(interval("orders", 5.0, &les), Some(&b));
        assert!(!Arc::ptr_eq(&b.layout, &other_route.layout));
        let other_buckets = PackedIncrements::pack(interval("users", 5.0, &les[1..]), Some(&b));
        assert!(!Arc::ptr_eq(&b.layout, &other_buckets.layout));
        // -0 and 0 compare equal as numbers but are different bounds.
        let zero = PackedIncrements::pack(interval("users", 5.0, &[0.0, 1.0]), None);
        let minus = PackedIncrements::pack(interval("users", 5.0, &[-0.0, 1.0]), Some(&zero));
        assert!(!Arc::ptr_eq(&zero.layout, &minus.layout));
        assert!(same(&minus.unpack(), &interval("users", 5.0, &[-0.0, 1.0])));
    }

    #[test]
    fn packed_sums_equal_unpacked_sums() {
        let les = [0.1, 1.0, f64::INFINITY];
        let windows: [Vec<Increments>; 3] = [
            // One layout throughout: the flat path.
            (1..6)
                .map(|n| interval("users", n as f64 * 1.1, &les))
                .collect(),
            // A route appears and the buckets change midway: the merging path.
            vec![
                interval("users", 2.0, &les),
                interval("orders", 3.0, &les),
                interval("users", 4.0, &les[..2]),
                interval("users", 5.0, &les),
            ],
            Vec::new(),
        ];
        for incs in windows {
            let mut packed: Vec<PackedIncrements> = Vec::new();
            for inc in &incs {
                let p = PackedIncrements::pack(inc.clone(), packed.last());
                packed.push(p);
            }
            let mut want = Increments::default();
            for inc in &incs {
                want += inc;
            }
            let got = PackedIncrements::sum(&packed);
            assert!(same(&got, &want), "{got:?}\n{want:?}");
        }
    }

    #[test]
    fn pairs_that_counted_nothing_take_no_numbers_and_come_back_as_zeros() {
        let les = [0.1, 1.0, f64::INFINITY];
        let mut inc = interval("users", 6.0, &les);
        inc.pairs[0].1 = Traffic {
            classes: [0.0; 5],
            buckets: les.iter().map(|&le| (le, 0.0)).collect(),
            ..Traffic::default()
        };
        let packed = PackedIncrements::pack(inc.clone(), None);
        assert_eq!(packed.values.len(), FIXED + les.len());
        assert!(same(&packed.unpack(), &inc));
        // A negative zero is a number like any other: kept, and summed as unpacked.
        let mut minus = inc.clone();
        minus.pairs[0].1.requests = -0.0;
        let p = PackedIncrements::pack(minus.clone(), Some(&packed));
        assert_eq!(p.values.len(), 2 * (FIXED + les.len()));
        let back = p.unpack();
        assert!(back.pairs[0].1.requests.is_sign_negative());
        for window in [
            vec![p.clone()],
            vec![p.clone(), packed.clone()],
            vec![packed, p],
        ] {
            let mut want = Increments::default();
            for w in &window {
                want += &w.unpack();
            }
            let got = PackedIncrements::sum(&window);
            assert!(same(&got, &want));
            assert_eq!(
                got.pairs[0].1.requests.to_bits(),
                want.pairs[0].1.requests.to_bits()
            );
        }
        // An idle window of 1,000 pairs keeps no numbers at all.
        let idle = Increments {
            pairs: (0..1000)
                .map(|i| {
                    let p = Pair {
                        route: format!("r{i:04}"),
                        upstream: "u".into(),
                    };
                    (p, Traffic::default())
                })
                .collect(),
            ..Increments::default()
        };
        let p = PackedIncrements::pack(idle.clone(), None);
        assert!(p.values.is_empty() && p.counted.len() == 16);
        assert!(same(&p.unpack(), &idle));
    }
}
