//! The PromQL source: ask a Prometheus server (`/api/v1/query`, `/api/v1/query_range`)
//! for the six signals per environment, route and upstream.
//!
//! Every signal is one query per level (upstream, route, environment), grouped with
//! `{by}`, so a sample costs about twenty small queries whatever the number of routes.
//! They run concurrently, each with a timeout; a failed query marks only its signal as
//! errored. Histories are seeded once with `query_range` so sparklines are full from the
//! first screen. See [`super::presets`] for the template language.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::domain::Secret;
use crate::domain::metrics::{
    HistoryPoint, MetricsSample, RouteMetrics, Signal, Signals, UpstreamMetrics,
};
use crate::gateway::config::SecretRef;
use crate::gateway::config::units::Dur;

use super::aggregate::Pair;
use super::compare::{CanaryRoles, CompareConfig, Side, compare};
use super::exposition::parse_float;
use super::history::{HistKey, Histories};
use super::presets::{Preset, Queries, QueryOverrides};
use super::scrape::not_enough;
use super::{MetricsError, parse_url, read_body, redact_url, request_error, snippet};

const MAX_RESPONSE: usize = 32 << 20;

/// `kind = "promql"`: query a Prometheus server.
///
/// ```toml
/// kind = "promql"
/// url = "http://prometheus.monitoring:9090"
/// selector = '{namespace="prod"}'   # braces optional
/// preset = "signalbox"              # or "envoy", "ingress-nginx", "istio"
/// window = "1m"                     # PromQL range for rate()
/// interval = "10s"
/// bearer_token = { env = "PROMETHEUS_TOKEN" }
/// [queries]                         # optional, per signal; see metrics::presets
/// latency_p95 = 'histogram_quantile(0.95, sum by (le, {by}) (rate(http_server_duration_seconds_bucket{{selector}}[{window}])))'
/// [compare]
/// min_requests_per_side = 500
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromQlConfig {
    /// The Prometheus server, e.g. `http://prometheus:9090` (a path prefix is kept).
    pub url: String,
    /// Label matchers added to every selector, e.g. `{namespace="prod"}`.
    #[serde(default)]
    pub selector: String,
    #[serde(default)]
    pub preset: Preset,
    /// Replace single templates of the preset.
    #[serde(default)]
    pub queries: QueryOverrides,
    /// Label naming the route; defaults to the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_label: Option<String>,
    /// Label naming the upstream (version); defaults to the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_label: Option<String>,
    /// PromQL range for `rate()`/`increase()`; at least four scrape intervals.
    #[serde(default = "default_window")]
    pub window: String,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Timeout of each query.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Queries in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_points")]
    pub history_points: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretRef>,
    /// Routes and upstreams to always show (and to query, for templates that use
    /// `{route}`/`{upstream}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub compare: CompareConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub route: String,
    pub upstreams: Vec<String>,
}

fn default_window() -> String {
    "1m".into()
}
fn default_interval() -> Dur {
    Dur::secs(10)
}
fn default_timeout() -> Dur {
    Dur::secs(5)
}
fn default_concurrency() -> usize {
    8
}
fn default_points() -> usize {
    crate::domain::metrics::DEFAULT_HISTORY_POINTS
}

impl PromQlConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            selector: String::new(),
            preset: Preset::default(),
            queries: QueryOverrides::default(),
            route_label: None,
            upstream_label: None,
            window: default_window(),
            interval: default_interval(),
            timeout: default_timeout(),
            max_concurrency: default_concurrency(),
            history_points: default_points(),
            bearer_token: None,
            targets: Vec::new(),
            compare: CompareConfig::default(),
        }
    }
}

/// The six signals and the latency buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    Rate,
    Err5xx,
    Err4xx,
    P50,
    P95,
    P99,
    Buckets,
}

impl SignalKind {
    const SIGNALS: [SignalKind; 6] = [
        SignalKind::Rate,
        SignalKind::Err5xx,
        SignalKind::Err4xx,
        SignalKind::P50,
        SignalKind::P95,
        SignalKind::P99,
    ];

    fn template(self, q: &Queries) -> Option<&str> {
        Some(match self {
            SignalKind::Rate => &q.request_rate,
            SignalKind::Err5xx => &q.error_ratio_5xx,
            SignalKind::Err4xx => &q.error_ratio_4xx,
            SignalKind::P50 => &q.latency_p50,
            SignalKind::P95 => &q.latency_p95,
            SignalKind::P99 => &q.latency_p99,
            SignalKind::Buckets => return q.latency_buckets.as_deref(),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SignalKind::Rate => "request_rate",
            SignalKind::Err5xx => "error_ratio_5xx",
            SignalKind::Err4xx => "error_ratio_4xx",
            SignalKind::P50 => "latency_p50",
            SignalKind::P95 => "latency_p95",
            SignalKind::P99 => "latency_p99",
            SignalKind::Buckets => "latency_buckets",
        }
    }
}

/// Where in the hierarchy a value belongs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Overall,
    Route(String),
    Upstream(Pair),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Overall,
    Route,
    Upstream,
}

/// Values a template expands with.
#[derive(Clone, Debug)]
pub struct Vars<'a> {
    pub selector: &'a str,
    pub window: &'a str,
    pub by: &'a str,
    /// Regex for `{route}` / `{upstream}` (already escaped), `.*` for "any".
    pub route: &'a str,
    pub upstream: &'a str,
}

/// True when a template must be run once per route/upstream.
pub fn is_per_target(template: &str) -> bool {
    template.contains("{route}") || template.contains("{upstream}")
}

/// Replaces the known placeholders in one pass; other braces are PromQL and stay.
pub fn expand(template: &str, v: &Vars) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let hit = [
            ("{selector}", v.selector),
            ("{window}", v.window),
            ("{by}", v.by),
            ("{route}", v.route),
            ("{upstream}", v.upstream),
        ]
        .into_iter()
        .find(|(p, _)| tail.starts_with(p));
        match hit {
            Some((p, val)) => {
                out.push_str(val);
                rest = &tail[p.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An exact match on `value` as an RE2 regular expression inside a PromQL double-quoted
/// string: regex metacharacters escaped, then backslashes and quotes escaped for the
/// string literal.
pub fn regex_literal(value: &str) -> String {
    let mut re = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            re.push('\\');
        }
        re.push(c);
    }
    let mut out = String::with_capacity(re.len() + 8);
    for c in re.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Checks a PromQL duration such as `1m`, `90s`, `1h30m`, and returns it in seconds.
pub fn parse_promql_duration(s: &str) -> Result<f64, String> {
    let err = || format!("invalid PromQL duration {s:?}; write e.g. 30s, 1m or 1h30m");
    let mut secs = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit, len) = [
            ("ms", 0.001),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
            ("d", 86400.0),
            ("w", 604800.0),
            ("y", 31536000.0),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u))
        .map(|(u, f)| (f, u.len()))
        .ok_or_else(err)?;
        secs += n * unit;
        rest = &rest[len..];
    }
    if secs <= 0.0 {
        return Err(err());
    }
    Ok(secs)
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `{namespace="prod"}` or `namespace="prod"` → `namespace="prod"`.
fn normalize_selector(s: &str) -> String {
    let t = s.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    t.trim().trim_end_matches(',').trim().to_owned()
}

/// A result series' labels.
pub type LabelMap = BTreeMap<String, String>;

/// An instant-query result: labels and value per series.
pub type Series = Vec<(LabelMap, f64)>;

/// A range-query result: labels and `(unix seconds, value)` points per series.
pub type RangeSeries = Vec<(LabelMap, Vec<(f64, f64)>)>;

/// Cumulative `(le, count)` buckets per route/upstream.
type BucketMap = HashMap<Pair, Vec<(f64, f64)>>;

/// A grouped query's values by target, or why it failed.
type Grouped = Result<HashMap<Target, Vec<f64>>, String>;

/// Parses a Prometheus HTTP API response into series (`vector` or `scalar` result), or
/// the error Prometheus gave.
pub fn parse_instant(status: u16, body: &str) -> Result<Series, String> {
    match parse_api(status, body)? {
        ApiData::Vector(v) => v
            .into_iter()
            .map(|s| Ok((s.metric, value_of(&s.value.1)?)))
            .collect(),
        ApiData::Scalar((_, v)) => Ok(vec![(BTreeMap::new(), value_of(&v)?)]),
        ApiData::Matrix(_) => Err("expected an instant vector, got a range vector".into()),
        ApiData::String(_) => Err("expected an instant vector, got a string".into()),
    }
}

/// Parses a `query_range` response into series of `(unix seconds, value)`.
pub fn parse_range(status: u16, body: &str) -> Result<RangeSeries, String> {
    match parse_api(status, body)? {
        ApiData::Matrix(m) => m
            .into_iter()
            .map(|s| {
                let pts = s
                    .values
                    .into_iter()
                    .map(|(t, v)| Ok((t, value_of(&v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok((s.metric, pts))
            })
            .collect(),
        _ => Err("expected a range vector".into()),
    }
}

fn value_of(s: &str) -> Result<f64, String> {
    parse_float(s).ok_or_else(|| format!("invalid sample value {s:?}"))
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    Matrix(Vec<MatrixSeries>),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

fn parse_api(status: u16, body: &str) -> Result<ApiData, String> {
    let resp: ApiResponse = match serde_json::from_str(body) {
        Ok(r) => r,
        Err(e) if (200..300).contains(&status) => {
            return Err(format!("invalid response ({e}): {}", snippet(body, 120)));
        }
        Err(_) => return Err(format!("HTTP {status}: {}", snippet(body, 200))),
    };
    if resp.status != "success" {
        return Err(format!(
            "{}: {}",
            resp.error_type.as_deref().unwrap_or("error"),
            resp.error.as_deref().unwrap_or("no message")
        ));
    }
    resp.data.ok_or_else(|| "success without data".to_owned())
}

/// One query to run.
#[derive(Clone, Debug)]
struct Job {
    kind: SignalKind,
    level: Level,
    /// `Some` for a per-target run; `None` for a grouped query.
    target: Option<Target>,
    query: String,
}

/// Everything the queries returned, indexed by signal and target.
#[derive(Debug, Default)]
pub struct Results {
    /// Grouped query outcomes per (signal, level): values by target, or the error.
    grouped: HashMap<(SignalKind, Level), Grouped>,
    /// Per-target outcomes.
    per_target: HashMap<(SignalKind, Target), Result<Vec<f64>, String>>,
    /// Bucket series per upstream: `(le, count)`, or the error.
    buckets: Option<Result<BucketMap, String>>,
    /// Targets seen in any result.
    seen: BTreeSet<Pair>,
    seen_routes: BTreeSet<String>,
}

/// Label names and what a sample needs to turn results into signals. Pure.
#[derive(Clone, Debug)]
pub struct Layout {
    pub route_label: String,
    pub upstream_label: String,
    pub window: String,
    pub window_secs: f64,
}

impl Layout {
    fn by(&self, level: Level) -> String {
        match level {
            Level::Overall => String::new(),
            Level::Route => self.route_label.clone(),
            Level::Upstream if self.route_label == self.upstream_label => self.route_label.clone(),
            Level::Upstream => format!("{}, {}", self.route_label, self.upstream_label),
        }
    }

    fn target_of(&self, level: Level, labels: &BTreeMap<String, String>) -> Target {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        match level {
            Level::Overall => Target::Overall,
            Level::Route => Target::Route(get(&self.route_label)),
            Level::Upstream => Target::Upstream(Pair {
                route: get(&self.route_label),
                upstream: get(&self.upstream_label),
            }),
        }
    }

    fn describe(&self, t: &Target) -> String {
        match t {
            Target::Overall => "the environment".into(),
            Target::Route(r) => format!("{}={r:?}", self.route_label),
            Target::Upstream(p) => format!(
                "{}={:?} {}={:?}",
                self.route_label, p.route, self.upstream_label, p.upstream
            ),
        }
    }

    /// Records an instant-query outcome.
    fn record(&self, results: &mut Results, job: &Job, outcome: Result<Series, String>) {
        if job.kind == SignalKind::Buckets {
            let r = outcome.map(|series| {
                let mut m = BucketMap::new();
                for (labels, v) in series {
                    let Some(le) = labels.get("le").and_then(|s| parse_float(s)) else {
                        continue;
                    };
                    if let Target::Upstream(p) = self.target_of(Level::Upstream, &labels) {
                        results.seen.insert(p.clone());
                        m.entry(p).or_default().push((le, v));
                    }
                }
                for b in m.values_mut() {
                    b.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
                m
            });
            results.buckets = Some(r);
            return;
        }
        match &job.target {
            Some(t) => {
                let r = outcome.map(|s| s.into_iter().map(|(_, v)| v).collect());
                results.per_target.insert((job.kind, t.clone()), r);
            }
            None => {
                let r = outcome.map(|series| {
                    let mut m: HashMap<Target, Vec<f64>> = HashMap::new();
                    for (labels, v) in series {
                        let t = self.target_of(job.level, &labels);
                        match &t {
                            Target::Upstream(p) => {
                                results.seen.insert(p.clone());
                            }
                            Target::Route(r) => {
                                results.seen_routes.insert(r.clone());
                            }
                            Target::Overall => {}
                        }
                        m.entry(t).or_default().push(v);
                    }
                    m
                });
                results.grouped.insert((job.kind, job.level), r);
            }
        }
    }

    /// The value of one signal for one target.
    fn signal(&self, results: &Results, kind: SignalKind, target: &Target) -> Signal {
        let level = match target {
            Target::Overall => Level::Overall,
            Target::Route(_) => Level::Route,
            Target::Upstream(_) => Level::Upstream,
        };
        let values: Result<Option<&Vec<f64>>, &String> =
            match results.per_target.get(&(kind, target.clone())) {
                Some(r) => r.as_ref().map(Some),
                None => match results.grouped.get(&(kind, level)) {
                    Some(Ok(m)) => Ok(m.get(target)),
                    Some(Err(e)) => Err(e),
                    None => return Signal::missing(format!("{} was not queried", kind.name())),
                },
            };
        let nan_reason = match kind {
            SignalKind::Rate | SignalKind::Err5xx | SignalKind::Err4xx => {
                format!("no requests in the last {}", self.window)
            }
            _ => format!("no latency observations in the last {}", self.window),
        };
        match values.map(|v| v.map(Vec::as_slice)) {
            Err(e) => Signal::error(format!("{}: {e}", kind.name())),
            Ok(None) | Ok(Some([])) => Signal::missing(format!(
                "{} returned no series for {}",
                kind.name(),
                self.describe(target)
            )),
            Ok(Some([v])) => Signal::from_f64(*v, &nan_reason),
            Ok(Some(vs)) => Signal::error(format!(
                "{} returned {} series for {}; group by the route and upstream labels only",
                kind.name(),
                vs.len(),
                self.describe(target)
            )),
        }
    }

    fn signals(&self, results: &Results, target: &Target) -> Signals {
        let s = |k| self.signal(results, k, target);
        Signals {
            request_rate: s(SignalKind::Rate),
            error_ratio_5xx: s(SignalKind::Err5xx),
            error_ratio_4xx: s(SignalKind::Err4xx),
            latency_p50: s(SignalKind::P50),
            latency_p95: s(SignalKind::P95),
            latency_p99: s(SignalKind::P99),
        }
    }
}

/// Fixed parts of a source, checked once.
#[derive(Clone, Debug)]
struct Resolved {
    base: reqwest::Url,
    shown_url: String,
    selector: String,
    queries: Queries,
    layout: Layout,
    targets: Vec<TargetConfig>,
}

/// Queries Prometheus for an environment.
#[derive(Debug)]
pub struct PromQlSource {
    environment: String,
    config: PromQlConfig,
    r: Resolved,
    client: reqwest::Client,
    token: Option<Secret>,
    histories: Histories,
    seeded: bool,
}

impl PromQlSource {
    pub fn new(environment: &str, config: PromQlConfig) -> Result<Self, MetricsError> {
        let cfg_err = MetricsError::Config;
        let mut base = parse_url("metrics.url", &config.url)?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let window_secs = parse_promql_duration(&config.window)
            .map_err(|e| cfg_err(format!("metrics.window: {e}")))?;
        config.compare.validate().map_err(cfg_err)?;
        if config.interval.0.is_zero() || config.timeout.0.is_zero() || config.max_concurrency == 0
        {
            return Err(cfg_err(
                "metrics.interval, metrics.timeout and metrics.max_concurrency must be above zero"
                    .into(),
            ));
        }
        let def = config.preset.definition();
        let route_label = config
            .route_label
            .clone()
            .unwrap_or_else(|| def.route_label.into());
        let upstream_label = config
            .upstream_label
            .clone()
            .unwrap_or_else(|| def.upstream_label.into());
        for (field, l) in [
            ("route_label", &route_label),
            ("upstream_label", &upstream_label),
        ] {
            if !valid_label_name(l) {
                return Err(cfg_err(format!(
                    "metrics.{field}: {l:?} is not a label name"
                )));
            }
        }
        let queries = def.queries.with(&config.queries);
        for kind in SignalKind::SIGNALS.iter().chain([&SignalKind::Buckets]) {
            if kind.template(&queries).is_some_and(|t| t.trim().is_empty()) {
                return Err(cfg_err(format!("metrics.queries.{} is empty", kind.name())));
            }
        }
        if is_per_target(&queries.request_rate) && config.targets.is_empty() {
            return Err(cfg_err(
                "metrics.queries.request_rate uses {route}/{upstream}, so routes cannot be \
                 discovered; list them in metrics.targets"
                    .into(),
            ));
        }
        let token = match &config.bearer_token {
            Some(r) => Some(
                crate::gateway::secrets::resolve(r)
                    .map_err(|e| cfg_err(format!("metrics.bearer_token: {e}")))?,
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .build()
            .map_err(|e| cfg_err(format!("HTTP client: {e}")))?;
        let r = Resolved {
            shown_url: redact_url(&base),
            base,
            selector: normalize_selector(&config.selector),
            queries,
            layout: Layout {
                route_label,
                upstream_label,
                window: config.window.trim().to_owned(),
                window_secs,
            },
            targets: config.targets.clone(),
        };
        Ok(Self {
            environment: environment.to_owned(),
            histories: Histories::new(config.history_points),
            config,
            r,
            client,
            token,
            seeded: false,
        })
    }

    /// See [`Histories::keep_upstreams`].
    pub fn keep_upstream_histories(&mut self, keep: bool) {
        self.histories.keep_upstreams(keep);
    }

    pub fn interval(&self) -> Duration {
        self.config.interval.0
    }

    /// Two rounds of queries (grouped, then per target) plus one history backfill.
    pub fn deadline(&self) -> Duration {
        self.config.timeout.0 * 3 + Duration::from_secs(1)
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    pub fn describe(&self) -> String {
        format!("promql {}", self.r.shown_url)
    }

    /// The query text for one signal at one level, as it will be sent; `None` when the
    /// signal has no template. For per-target templates `target` picks the route/upstream.
    pub fn query_for(
        &self,
        kind: SignalKind,
        level: Level,
        target: Option<&Target>,
    ) -> Option<String> {
        let t = kind.template(&self.r.queries)?;
        let by = self.r.layout.by(level);
        let (route, upstream) = match target {
            Some(Target::Route(r)) => (regex_literal(r), ".*".to_owned()),
            Some(Target::Upstream(p)) => (regex_literal(&p.route), regex_literal(&p.upstream)),
            _ => (".*".to_owned(), ".*".to_owned()),
        };
        let by = if is_per_target(t) { String::new() } else { by };
        Some(expand(
            t,
            &Vars {
                selector: &self.r.selector,
                window: &self.r.layout.window,
                by: &by,
                route: &route,
                upstream: &upstream,
            },
        ))
    }

    /// Every query of one sample's first round (grouped templates at every level).
    fn grouped_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for kind in SignalKind::SIGNALS {
            let Some(t) = kind.template(&self.r.queries) else {
                continue;
            };
            if is_per_target(t) {
                continue;
            }
            for level in [Level::Upstream, Level::Route, Level::Overall] {
                if let Some(query) = self.query_for(kind, level, None) {
                    jobs.push(Job {
                        kind,
                        level,
                        target: None,
                        query,
                    });
                }
            }
        }
        if let Some(t) = SignalKind::Buckets.template(&self.r.queries)
            && !is_per_target(t)
            && let Some(query) = self.query_for(SignalKind::Buckets, Level::Upstream, None)
        {
            jobs.push(Job {
                kind: SignalKind::Buckets,
                level: Level::Upstream,
                target: None,
                query,
            });
        }
        jobs
    }

    fn per_target_jobs(&self, pairs: &BTreeSet<Pair>, routes: &BTreeSet<String>) -> Vec<Job> {
        let mut targets = vec![Target::Overall];
        targets.extend(routes.iter().cloned().map(Target::Route));
        targets.extend(pairs.iter().cloned().map(Target::Upstream));
        let mut jobs = Vec::new();
        for kind in SignalKind::SIGNALS {
            let Some(t) = kind.template(&self.r.queries) else {
                continue;
            };
            if !is_per_target(t) {
                continue;
            }
            for target in &targets {
                let level = match target {
                    Target::Overall => Level::Overall,
                    Target::Route(_) => Level::Route,
                    Target::Upstream(_) => Level::Upstream,
                };
                if let Some(query) = self.query_for(kind, level, Some(target)) {
                    jobs.push(Job {
                        kind,
                        level,
                        target: Some(target.clone()),
                        query,
                    });
                }
            }
        }
        jobs
    }

    async fn post(&self, path: &str, form: &[(&str, String)]) -> Result<(u16, String), String> {
        let url = self
            .r
            .base
            .join(path)
            .map_err(|e| format!("bad Prometheus URL: {e}"))?;
        let mut req = self.client.post(url).form(form);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let timeout = self.config.timeout.0;
        let resp = req
            .send()
            .await
            .map_err(|e| request_error(&self.r.shown_url, timeout, e).to_string())?;
        let status = resp.status().as_u16();
        let body = read_body(&self.r.shown_url, timeout, resp, MAX_RESPONSE)
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    fn timeout_param(&self) -> String {
        format!("{}ms", self.config.timeout.0.as_millis().max(1))
    }

    async fn instant(&self, query: &str, at: f64) -> Result<Series, String> {
        let form = [
            ("query", query.to_owned()),
            ("time", format!("{at:.3}")),
            ("timeout", self.timeout_param()),
        ];
        let (status, body) = self.post("api/v1/query", &form).await?;
        parse_instant(status, &body)
    }

    async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<RangeSeries, String> {
        let form = [
            ("query", query.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{step:.3}")),
            ("timeout", self.timeout_param()),
        ];
        let (status, body) = self.post("api/v1/query_range", &form).await?;
        parse_range(status, &body)
    }

    async fn run_all(&self, jobs: Vec<Job>, at: f64) -> Vec<(Job, Result<Series, String>)> {
        futures_util::stream::iter(jobs)
            .map(|job| async move {
                let r = self.instant(&job.query, at).await;
                (job, r)
            })
            .buffer_unordered(self.config.max_concurrency)
            .collect()
            .await
    }

    /// Queries everything for one sample. Fails as a whole only when every query failed
    /// (Prometheus down or unreachable); otherwise failures mark their signals.
    pub async fn sample(&mut self, roles: &CanaryRoles) -> Result<MetricsSample, MetricsError> {
        let now = Utc::now();
        let at = now.timestamp_millis() as f64 / 1000.0;
        let layout = self.r.layout.clone();
        let mut results = Results::default();
        let mut failures = Vec::new();
        let mut total = 0;

        let first = self.run_all(self.grouped_jobs(), at).await;
        for (job, outcome) in first {
            total += 1;
            if let Err(e) = &outcome {
                failures.push(format!("{}: {e}", job.kind.name()));
            }
            layout.record(&mut results, &job, outcome);
        }
        let mut pairs = results.seen.clone();
        for t in &self.r.targets {
            for u in &t.upstreams {
                pairs.insert(Pair {
                    route: t.route.clone(),
                    upstream: u.clone(),
                });
            }
        }
        let mut routes: BTreeSet<String> = results.seen_routes.clone();
        routes.extend(pairs.iter().map(|p| p.route.clone()));
        routes.extend(self.r.targets.iter().map(|t| t.route.clone()));

        let second = self
            .run_all(self.per_target_jobs(&pairs, &routes), at)
            .await;
        for (job, outcome) in second {
            total += 1;
            if let Err(e) = &outcome {
                failures.push(format!("{}: {e}", job.kind.name()));
            }
            layout.record(&mut results, &job, outcome);
        }
        if total > 0 && failures.len() == total {
            return Err(MetricsError::AllQueriesFailed {
                url: self.r.shown_url.clone(),
                count: total,
                first: failures.swap_remove(0),
            });
        }

        if !self.seeded {
            self.seeded = true;
            self.seed_histories(now).await;
        }
        let mut problems = Vec::new();
        if let Some(Err(e)) = &results.buckets {
            problems.push(format!("latency_buckets: {e}"));
        }
        Ok(self.build(&results, &pairs, &routes, now, roles, problems))
    }

    fn build(
        &mut self,
        results: &Results,
        pairs: &BTreeSet<Pair>,
        routes: &BTreeSet<String>,
        now: DateTime<Utc>,
        roles: &CanaryRoles,
        problems: Vec<String>,
    ) -> MetricsSample {
        let layout = &self.r.layout;
        let mut out_routes = Vec::with_capacity(routes.len());
        for route in routes {
            let mut upstreams = Vec::new();
            for p in pairs.iter().filter(|p| &p.route == route) {
                let s = layout.signals(results, &Target::Upstream(p.clone()));
                upstreams.push(UpstreamMetrics {
                    upstream: p.upstream.clone(),
                    history: self
                        .histories
                        .push(HistKey::Upstream(p.clone()), s.point(now)),
                    signals: s,
                });
            }
            let s = layout.signals(results, &Target::Route(route.clone()));
            let comparison = comparison(
                layout,
                results,
                route,
                &upstreams,
                roles,
                &self.config.compare,
            );
            out_routes.push(RouteMetrics {
                route: route.clone(),
                history: self
                    .histories
                    .push(HistKey::Route(route.clone()), s.point(now)),
                signals: s,
                upstreams,
                comparison,
            });
        }
        let overall = layout.signals(results, &Target::Overall);
        let overall_history = self.histories.push(HistKey::Overall, overall.point(now));
        self.histories.finish();
        MetricsSample {
            environment: self.environment.clone(),
            source: self.describe(),
            sampled_at: now,
            window_secs: layout.window_secs,
            overall,
            overall_history,
            routes: out_routes,
            gateway: None,
            problems,
        }
    }

    /// Fills the sparklines from `query_range` for the grouped templates, ending one step
    /// before `now`. A failure only leaves the histories short.
    async fn seed_histories(&mut self, now: DateTime<Utc>) {
        let points = self.config.history_points.saturating_sub(1);
        if points == 0 {
            return;
        }
        let step = self.config.interval.0.as_secs_f64();
        let end = now.timestamp_millis() as f64 / 1000.0 - step;
        let start = end - step * (points as f64 - 1.0);
        let mut jobs = Vec::new();
        for kind in SignalKind::SIGNALS {
            if kind.template(&self.r.queries).is_some_and(is_per_target) {
                continue;
            }
            for level in [Level::Upstream, Level::Route, Level::Overall] {
                if let Some(q) = self.query_for(kind, level, None) {
                    jobs.push((kind, level, q));
                }
            }
        }
        let this = &*self;
        let outcomes: Vec<_> =
            futures_util::stream::iter(jobs)
                .map(|(kind, level, q)| async move {
                    (kind, level, this.range(&q, start, end, step).await)
                })
                .buffer_unordered(self.config.max_concurrency)
                .collect()
                .await;
        let mut table: HashMap<HistKey, BTreeMap<i64, HistoryPoint>> = HashMap::new();
        for (kind, level, outcome) in outcomes {
            let Ok(series) = outcome else { continue };
            for (labels, pts) in series {
                let key = match self.r.layout.target_of(level, &labels) {
                    Target::Overall => HistKey::Overall,
                    Target::Route(r) => HistKey::Route(r),
                    Target::Upstream(p) => HistKey::Upstream(p),
                };
                let row = table.entry(key).or_default();
                for (t, v) in pts {
                    let ms = (t * 1000.0).round() as i64;
                    let Some(at) = DateTime::from_timestamp_millis(ms) else {
                        continue;
                    };
                    let p = row
                        .entry(ms)
                        .or_insert_with(|| Signals::all(Signal::no_data("")).point(at));
                    let v = v.is_finite().then_some(v);
                    match kind {
                        SignalKind::Rate => p.request_rate = v,
                        SignalKind::Err5xx => p.error_ratio_5xx = v,
                        SignalKind::Err4xx => p.error_ratio_4xx = v,
                        SignalKind::P50 => p.latency_p50 = v,
                        SignalKind::P95 => p.latency_p95 = v,
                        SignalKind::P99 => p.latency_p99 = v,
                        SignalKind::Buckets => {}
                    }
                }
            }
        }
        for (key, row) in table {
            self.histories.seed(key, row.into_values());
        }
    }
}

/// One side of a comparison from PromQL values.
fn side<'a>(
    u: &'a UpstreamMetrics,
    window_secs: f64,
    buckets: Option<&'a [(f64, f64)]>,
) -> Side<'a> {
    let requests = u.signals.request_rate.get().map(|r| r * window_secs);
    // A NaN ratio means no requests, so no errors either.
    let ratio = match &u.signals.error_ratio_5xx {
        Signal::Value { value } => Some(*value),
        Signal::NoData { .. } => Some(0.0),
        _ => None,
    };
    Side {
        upstream: &u.upstream,
        requests,
        errors_5xx: requests.zip(ratio).map(|(n, r)| n * r),
        p95: u.signals.latency_p95.get(),
        buckets,
    }
}

/// Stable vs canary from PromQL values: request counts are rate × window (what
/// `increase()` would give), errors are requests × 5xx ratio.
fn comparison(
    layout: &Layout,
    results: &Results,
    route: &str,
    upstreams: &[UpstreamMetrics],
    roles: &CanaryRoles,
    cfg: &CompareConfig,
) -> Option<crate::domain::metrics::Comparison> {
    let volumes: Vec<(&str, f64)> = upstreams
        .iter()
        .map(|u| {
            (
                u.upstream.as_str(),
                u.signals.request_rate.get().unwrap_or(0.0),
            )
        })
        .collect();
    let (baseline, canary, source) = roles.choose(route, &volumes)?;
    let find = |name: &str| upstreams.iter().find(|u| u.upstream == name);
    let buckets = match &results.buckets {
        Some(Ok(m)) => Some(m),
        _ => None,
    };
    let pair = |u: &str| Pair {
        route: route.to_owned(),
        upstream: u.to_owned(),
    };
    let (Some(b), Some(c)) = (find(&baseline), find(&canary)) else {
        let missing = if find(&baseline).is_none() {
            &baseline
        } else {
            &canary
        };
        return Some(not_enough(
            &baseline,
            &canary,
            source,
            &format!("{missing} has no metrics for route {route}"),
        ));
    };
    let buckets_of = |u: &str| buckets.and_then(|m| m.get(&pair(u))).map(Vec::as_slice);
    Some(compare(
        &side(b, layout.window_secs, buckets_of(&baseline)),
        &side(c, layout.window_secs, buckets_of(&canary)),
        source,
        cfg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metrics::Verdict;

    fn vars<'a>(by: &'a str, route: &'a str) -> Vars<'a> {
        Vars {
            selector: r#"namespace="prod""#,
            window: "1m",
            by,
            route,
            upstream: ".*",
        }
    }

    #[test]
    fn expand_replaces_only_known_placeholders() {
        let t = r#"sum by (le, {by}) (rate(x{code="5",{selector}}[{window}])) + y{{selector}} + z{a="{b}"} + w{route=~"{route}"}"#;
        assert_eq!(
            expand(t, &vars("route, upstream", "users")),
            r#"sum by (le, route, upstream) (rate(x{code="5",namespace="prod"}[1m])) + y{namespace="prod"} + z{a="{b}"} + w{route=~"users"}"#
        );
        // Expanded values are not expanded again.
        let v = Vars {
            selector: "{window}",
            ..vars("", "")
        };
        assert_eq!(expand("a{{selector}}[{window}]", &v), "a{{window}}[1m]");
    }

    #[test]
    fn regex_literals_escape_metacharacters_and_quotes() {
        assert_eq!(regex_literal("users"), "users");
        // `a.b` must not match `aXb`: regex `a\.b`, written in a PromQL string as `a\\.b`.
        assert_eq!(regex_literal("a.b"), r"a\\.b");
        assert_eq!(regex_literal(r#"x"y"#), r#"x\"y"#);
        assert_eq!(regex_literal("v(1)"), r"v\\(1\\)");
    }

    #[test]
    fn promql_durations() {
        assert_eq!(parse_promql_duration("1m"), Ok(60.0));
        assert_eq!(parse_promql_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_promql_duration("500ms"), Ok(0.5));
        for bad in ["", "1", "m", "1.5m", "1 m", "0s", "-1m"] {
            assert!(parse_promql_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors_are_normalized() {
        assert_eq!(
            normalize_selector(r#" {namespace="prod"} "#),
            r#"namespace="prod""#
        );
        assert_eq!(normalize_selector(r#"a="b","#), r#"a="b""#);
        assert_eq!(normalize_selector(""), "");
    }

    #[test]
    fn api_responses_parse() {
        let v = parse_instant(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"route":"users","upstream":"blue"},"value":[1700000000.5,"12.5"]},
                {"metric":{},"value":[1700000000.5,"NaN"]}]}}"#,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0["route"], "users");
        assert_eq!(v[0].1, 12.5);
        assert!(v[1].1.is_nan());
        let s = parse_instant(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
        )
        .unwrap();
        assert_eq!(s[0].1, f64::INFINITY);
        let e = parse_instant(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
        )
        .unwrap_err();
        assert_eq!(e, "bad_data: parse error at char 5");
        let e = parse_instant(502, "<html>Bad Gateway</html>").unwrap_err();
        assert_eq!(e, "HTTP 502: <html>Bad Gateway</html>");
        let e = parse_instant(200, "{").unwrap_err();
        assert!(e.starts_with("invalid response"), "{e}");
        let e = parse_instant(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        )
        .unwrap_err();
        assert!(e.contains("invalid sample value"), "{e}");
        let r = parse_range(
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"route":"a"},"values":[[1,"1"],[2,"2"]]}]}}"#,
        )
        .unwrap();
        assert_eq!(r[0].1, vec![(1.0, 1.0), (2.0, 2.0)]);
    }

    fn layout() -> Layout {
        Layout {
            route_label: "route".into(),
            upstream_label: "upstream".into(),
            window: "1m".into(),
            window_secs: 60.0,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn job(kind: SignalKind, level: Level) -> Job {
        Job {
            kind,
            level,
            target: None,
            query: String::new(),
        }
    }

    fn blue() -> Target {
        Target::Upstream(Pair {
            route: "users".into(),
            upstream: "blue".into(),
        })
    }

    #[test]
    fn results_map_to_signals_per_target() {
        let l = layout();
        let mut r = Results::default();
        l.record(
            &mut r,
            &job(SignalKind::Rate, Level::Upstream),
            Ok(vec![
                (labels(&[("route", "users"), ("upstream", "blue")]), 10.0),
                (labels(&[("route", "users"), ("upstream", "green")]), 2.0),
            ]),
        );
        l.record(
            &mut r,
            &job(SignalKind::Err5xx, Level::Upstream),
            Ok(vec![(
                labels(&[("route", "users"), ("upstream", "blue")]),
                f64::NAN,
            )]),
        );
        l.record(
            &mut r,
            &job(SignalKind::P95, Level::Upstream),
            Err("timeout".into()),
        );
        l.record(
            &mut r,
            &job(SignalKind::P50, Level::Upstream),
            Ok(vec![
                (
                    labels(&[("route", "users"), ("upstream", "blue"), ("pod", "a")]),
                    1.0,
                ),
                (
                    labels(&[("route", "users"), ("upstream", "blue"), ("pod", "b")]),
                    1.0,
                ),
            ]),
        );
        assert_eq!(r.seen.len(), 2);
        let s = l.signals(&r, &blue());
        assert_eq!(s.request_rate.get(), Some(10.0));
        assert!(
            matches!(s.error_ratio_5xx, Signal::NoData { ref reason } if reason == "no requests in the last 1m")
        );
        assert_eq!(s.latency_p95, Signal::error("latency_p95: timeout"));
        assert!(
            matches!(s.latency_p50, Signal::Error { ref message } if message.contains("returned 2 series"))
        );
        assert!(matches!(s.error_ratio_4xx, Signal::Missing { .. }));
        let green = Target::Upstream(Pair {
            route: "users".into(),
            upstream: "green".into(),
        });
        assert!(matches!(
            l.signals(&r, &green).error_ratio_5xx,
            Signal::Missing { ref reason } if reason.contains(r#"route="users" upstream="green""#)
        ));
    }

    #[test]
    fn unlabelled_series_fall_into_the_empty_route() {
        let l = layout();
        let mut r = Results::default();
        l.record(
            &mut r,
            &job(SignalKind::Rate, Level::Route),
            Ok(vec![(labels(&[]), 3.0)]),
        );
        assert_eq!(
            l.signals(&r, &Target::Route(String::new()))
                .request_rate
                .get(),
            Some(3.0)
        );
    }

    #[test]
    fn promql_comparison_uses_rate_times_window() {
        let l = layout();
        let mut r = Results::default();
        let bl = labels(&[("route", "users"), ("upstream", "blue")]);
        let gl = labels(&[("route", "users"), ("upstream", "green")]);
        l.record(
            &mut r,
            &job(SignalKind::Rate, Level::Upstream),
            Ok(vec![(bl.clone(), 20.0), (gl.clone(), 10.0)]),
        );
        l.record(
            &mut r,
            &job(SignalKind::Err5xx, Level::Upstream),
            Ok(vec![(bl.clone(), 0.01), (gl.clone(), 0.2)]),
        );
        let ups: Vec<UpstreamMetrics> = ["blue", "green"]
            .iter()
            .map(|u| {
                let t = Target::Upstream(Pair {
                    route: "users".into(),
                    upstream: u.to_string(),
                });
                UpstreamMetrics {
                    upstream: u.to_string(),
                    signals: l.signals(&r, &t),
                    history: Default::default(),
                }
            })
            .collect();
        let c = comparison(
            &l,
            &r,
            "users",
            &ups,
            &CanaryRoles::default(),
            &CompareConfig::default(),
        )
        .unwrap();
        assert_eq!((c.baseline.as_str(), c.canary.as_str()), ("blue", "green"));
        assert_eq!((c.baseline_requests, c.canary_requests), (1200.0, 600.0));
        // The error regression is clear; latency data is missing, but a failure wins.
        assert!(matches!(c.verdict, Verdict::Fail { .. }), "{:?}", c.verdict);
    }

    #[test]
    fn config_is_checked() {
        let mut c = PromQlConfig::new("http://127.0.0.1:9090");
        c.window = "5 minutes".into();
        assert!(
            PromQlSource::new("prod", c)
                .unwrap_err()
                .to_string()
                .contains("metrics.window")
        );
        let mut c = PromQlConfig::new("http://127.0.0.1:9090");
        c.route_label = Some("bad-label".into());
        assert!(PromQlSource::new("prod", c).is_err());
        let mut c = PromQlConfig::new("http://127.0.0.1:9090");
        c.queries.request_rate = Some(r#"sum(rate(x{svc=~"{route}"}[{window}]))"#.into());
        let e = PromQlSource::new("prod", c.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.targets"), "{e}");
        c.targets = vec![TargetConfig {
            route: "users".into(),
            upstreams: vec!["v1".into(), "v2".into()],
        }];
        assert!(PromQlSource::new("prod", c).is_ok());
    }

    #[test]
    fn queries_per_level() {
        let mut c = PromQlConfig::new("http://127.0.0.1:9090/prom");
        c.selector = r#"{job="gw"}"#.into();
        let s = PromQlSource::new("prod", c).unwrap();
        assert_eq!(
            s.query_for(SignalKind::Rate, Level::Upstream, None)
                .unwrap(),
            r#"sum by (route, upstream) (rate(signalbox_requests_total{job="gw"}[1m]))"#
        );
        assert_eq!(
            s.query_for(SignalKind::Rate, Level::Overall, None).unwrap(),
            r#"sum by () (rate(signalbox_requests_total{job="gw"}[1m]))"#
        );
        assert_eq!(s.r.base.as_str(), "http://127.0.0.1:9090/prom/");
        assert_eq!(s.grouped_jobs().len(), 19);
    }

    /// A stand-in Prometheus API: every quantile query fails, everything else answers
    /// per grouping; `down` makes every query fail. It insists on the bearer token.
    async fn fake_prometheus(down: bool) -> (String, tokio::task::JoinHandle<()>) {
        use axum::Form;
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;

        async fn query(
            headers: HeaderMap,
            Form(f): Form<HashMap<String, String>>,
            down: bool,
        ) -> (StatusCode, String) {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
                return (StatusCode::UNAUTHORIZED, "no token".into());
            }
            if down {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<h1>maintenance</h1>".into(),
                );
            }
            let q = f.get("query").cloned().unwrap_or_default();
            if q.contains("histogram_quantile") {
                let body =
                    r#"{"status":"error","errorType":"execution","error":"query timed out"}"#;
                return (StatusCode::UNPROCESSABLE_ENTITY, body.into());
            }
            let result = if q.contains("by (route, upstream)") {
                r#"[{"metric":{"route":"users","upstream":"blue"},"value":[1,"4"]},
                    {"metric":{"route":"users","upstream":"green"},"value":[1,"1"]}]"#
            } else if q.contains("by (route)") {
                r#"[{"metric":{"route":"users"},"value":[1,"5"]}]"#
            } else if q.contains("by (le, route, upstream)") {
                "[]"
            } else {
                r#"[{"metric":{},"value":[1,"5"]}]"#
            };
            (
                StatusCode::OK,
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#
                ),
            )
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/api/v1/query",
                post(move |h: HeaderMap, f: Form<HashMap<String, String>>| query(h, f, down)),
            )
            .route(
                "/api/v1/query_range",
                post(|| async {
                    r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}"), task)
    }

    fn token_file() -> (tempfile::NamedTempFile, SecretRef) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "s3cret\n").unwrap();
        let r = SecretRef::File(f.path().to_path_buf());
        (f, r)
    }

    #[tokio::test]
    async fn a_failed_query_marks_only_its_signal() {
        let (url, server) = fake_prometheus(false).await;
        let (_f, token) = token_file();
        let mut c = PromQlConfig::new(url);
        c.bearer_token = Some(token);
        let mut src = PromQlSource::new("prod", c).unwrap();
        let s = src.sample(&CanaryRoles::default()).await.unwrap();
        let users = s.route("users").unwrap();
        assert_eq!(users.signals.request_rate.get(), Some(5.0));
        let blue = &users.upstream("blue").unwrap().signals;
        assert_eq!(blue.request_rate.get(), Some(4.0));
        assert_eq!(blue.error_ratio_5xx.get(), Some(4.0));
        assert!(
            matches!(&blue.latency_p95, Signal::Error { message } if message == "latency_p95: execution: query timed out"),
            "{:?}",
            blue.latency_p95
        );
        assert_eq!(s.overall.request_rate.get(), Some(5.0));
        // No bucket series: the latency side of the comparison cannot be judged.
        assert!(users.comparison.is_some());
        server.abort();
    }

    #[tokio::test]
    async fn prometheus_down_is_one_error_without_secrets() {
        let (url, server) = fake_prometheus(true).await;
        let (_f, token) = token_file();
        let mut c = PromQlConfig::new(url);
        c.bearer_token = Some(token);
        let mut src = PromQlSource::new("prod", c).unwrap();
        let e = src
            .sample(&CanaryRoles::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("all 19 Prometheus queries to http://127.0.0.1:"),
            "{e}"
        );
        assert!(e.contains("HTTP 503: <h1>maintenance</h1>"), "{e}");
        assert!(!e.contains("s3cret") && !format!("{src:?}").contains("s3cret"));
        server.abort();
    }
}
