//! The scrape source: GET a signalbox gateway's `/metrics` and compute rates, ratios and
//! quantiles from the increases between consecutive scrapes over a sliding window.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Secret;
use crate::domain::metrics::{
    Comparison, FlagEvaluationRate, GatewayStatus, MetricsSample, NamedRate, RoleSource,
    RouteMetrics, Signal, UpstreamMetrics, Verdict,
};
use crate::gateway::config::SecretRef;
use crate::gateway::config::units::Dur;

use super::aggregate::{Context, Increments, Pair, Reading, Traffic, increments, signals};
use super::compare::{CanaryRoles, CompareConfig, Side, compare, p95_of};
use super::history::{HistKey, Histories};
use super::rate::Window;
use super::{MetricsError, exposition, parse_url, read_body, redact_url, request_error, snippet};

/// Largest exposition accepted; a 10,000-series exposition is about 1.5 MiB.
const MAX_BODY: usize = 64 << 20;

/// `kind = "scrape"`: read a signalbox gateway's admin `/metrics` directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The gateway's metrics URL, e.g. `http://127.0.0.1:9080/metrics`.
    pub url: String,
    /// How often to scrape.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Per-scrape HTTP timeout.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Span rates, ratios and quantiles are computed over.
    #[serde(default = "default_window")]
    pub window: Dur,
    /// Points kept per sparkline.
    #[serde(default = "default_points")]
    pub history_points: usize,
    /// Bearer token for the admin listener, if it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretRef>,
    #[serde(default)]
    pub compare: CompareConfig,
}

fn default_interval() -> Dur {
    Dur::secs(2)
}
fn default_timeout() -> Dur {
    Dur::secs(2)
}
fn default_window() -> Dur {
    Dur::secs(30)
}
fn default_points() -> usize {
    crate::domain::metrics::DEFAULT_HISTORY_POINTS
}

impl ScrapeConfig {
    /// A config with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            interval: default_interval(),
            timeout: default_timeout(),
            window: default_window(),
            history_points: default_points(),
            bearer_token: None,
            compare: CompareConfig::default(),
        }
    }
}

/// When a scrape happened: wall time for display, monotonic time for rates.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeTime {
    pub wall: DateTime<Utc>,
    /// Since some fixed start; only differences matter.
    pub mono: Duration,
}

/// Everything the scrape source remembers between scrapes. Pure: feed it exposition
/// text and times, get samples.
#[derive(Debug)]
pub struct ScrapeState {
    environment: String,
    source: String,
    window: Window<Increments>,
    prev: Option<(Duration, Reading)>,
    histories: Histories,
    compare: CompareConfig,
}

impl ScrapeState {
    pub fn new(
        environment: &str,
        source: &str,
        window: Duration,
        history_points: usize,
        compare: CompareConfig,
    ) -> Self {
        Self {
            environment: environment.to_owned(),
            source: source.to_owned(),
            window: Window::new(window),
            prev: None,
            histories: Histories::new(history_points),
            compare,
        }
    }

    /// Parses one scrape's text and returns the sample as of this scrape. On an error the
    /// state is unchanged, so the next good scrape computes rates over the gap.
    pub fn ingest_text(
        &mut self,
        text: &str,
        at: ScrapeTime,
        roles: &CanaryRoles,
    ) -> Result<MetricsSample, exposition::ExpositionError> {
        let exp = exposition::parse(text)?;
        let reading = Reading::from_exposition(&exp)?;
        Ok(self.ingest(reading, at, roles))
    }

    pub fn ingest(
        &mut self,
        reading: Reading,
        at: ScrapeTime,
        roles: &CanaryRoles,
    ) -> MetricsSample {
        if let Some((prev_at, prev)) = &self.prev {
            if at.mono > *prev_at {
                self.window
                    .push(*prev_at, at.mono, increments(prev, &reading));
            } else {
                // Time went backwards (a restarted source clock): start over.
                self.window.clear();
            }
        }
        let sample = self.build(&reading, at, roles);
        self.prev = Some((at.mono, reading));
        sample
    }

    fn build(&mut self, reading: &Reading, at: ScrapeTime, roles: &CanaryRoles) -> MetricsSample {
        let warm = !self.window.is_empty();
        let secs = if warm {
            self.window.covered_secs()
        } else {
            0.0
        };
        let total = self.window.total();
        let ctx = Context {
            window_secs: secs,
            has_requests: reading.has_requests,
            has_latency: reading.has_latency,
            source: &self.source,
        };

        let mut by_route: BTreeMap<String, BTreeMap<String, Traffic>> = BTreeMap::new();
        for p in reading.pairs() {
            by_route
                .entry(p.route.clone())
                .or_default()
                .entry(p.upstream.clone())
                .or_default();
        }
        for (p, t) in &total.pairs {
            *by_route
                .entry(p.route.clone())
                .or_default()
                .entry(p.upstream.clone())
                .or_default() = t.clone();
        }

        let mut overall = Traffic::default();
        let mut routes = Vec::with_capacity(by_route.len());
        for (route, ups) in &by_route {
            let mut route_total = Traffic::default();
            let mut upstreams = Vec::with_capacity(ups.len());
            for (upstream, t) in ups {
                route_total += t;
                let s = signals(t, &ctx);
                let key = HistKey::Upstream(Pair {
                    route: route.clone(),
                    upstream: upstream.clone(),
                });
                upstreams.push(UpstreamMetrics {
                    upstream: upstream.clone(),
                    history: self.histories.push(key, s.point(at.wall)),
                    signals: s,
                });
            }
            overall += &route_total;
            let s = signals(&route_total, &ctx);
            let comparison = self.comparison(route, ups, warm, reading, roles);
            routes.push(RouteMetrics {
                route: route.clone(),
                history: self
                    .histories
                    .push(HistKey::Route(route.clone()), s.point(at.wall)),
                signals: s,
                upstreams,
                comparison,
            });
        }
        let overall_signals = signals(&overall, &ctx);
        let overall_history = self
            .histories
            .push(HistKey::Overall, overall_signals.point(at.wall));
        self.histories.finish();

        MetricsSample {
            environment: self.environment.clone(),
            source: self.source.clone(),
            sampled_at: at.wall,
            window_secs: secs,
            overall: overall_signals,
            overall_history,
            routes,
            gateway: Some(gateway_status(reading, &total, secs)),
            problems: reading.problems.clone(),
        }
    }

    fn comparison(
        &self,
        route: &str,
        ups: &BTreeMap<String, Traffic>,
        warm: bool,
        reading: &Reading,
        roles: &CanaryRoles,
    ) -> Option<Comparison> {
        let volumes: Vec<(&str, f64)> = ups.iter().map(|(u, t)| (u.as_str(), t.requests)).collect();
        let (baseline, canary, role_source) = roles.choose(route, &volumes)?;
        if !warm {
            return Some(not_enough(
                &baseline,
                &canary,
                role_source,
                "waiting for a second scrape to compute rates",
            ));
        }
        let empty = Traffic::default();
        let has_req = reading.has_requests;
        let has_lat = reading.has_latency;
        let side = |name: &'_ str| {
            let t = ups.get(name).unwrap_or(&empty);
            (t, p95_of(&t.buckets))
        };
        let ((tb, pb), (tc, pc)) = (side(&baseline), side(&canary));
        Some(compare(
            &Side {
                upstream: &baseline,
                requests: has_req.then_some(tb.requests),
                errors_5xx: has_req.then_some(tb.errors_5xx()),
                p95: pb,
                buckets: has_lat.then_some(tb.buckets.as_slice()),
            },
            &Side {
                upstream: &canary,
                requests: has_req.then_some(tc.requests),
                errors_5xx: has_req.then_some(tc.errors_5xx()),
                p95: pc,
                buckets: has_lat.then_some(tc.buckets.as_slice()),
            },
            role_source,
            &self.compare,
        ))
    }
}

/// A comparison that cannot be judged yet.
pub(crate) fn not_enough(
    baseline: &str,
    canary: &str,
    roles: RoleSource,
    reason: &str,
) -> Comparison {
    Comparison {
        baseline: baseline.to_owned(),
        canary: canary.to_owned(),
        roles,
        baseline_requests: 0.0,
        canary_requests: 0.0,
        errors: None,
        latency: None,
        verdict: Verdict::NotEnoughData {
            reason: reason.to_owned(),
        },
    }
}

fn gateway_status(reading: &Reading, total: &Increments, secs: f64) -> GatewayStatus {
    let rate = |v: Option<&f64>| {
        if secs <= 0.0 {
            Signal::no_data("waiting for a second scrape to compute rates")
        } else {
            Signal::from_f64(v.copied().unwrap_or(0.0) / secs, "no data")
        }
    };
    let mut rate_limited: Vec<NamedRate> = reading
        .rate_limited_routes()
        .map(|r| NamedRate {
            name: r.to_owned(),
            rate: rate(total.rate_limited.get(r)),
        })
        .collect();
    rate_limited.sort_by(|a, b| a.name.cmp(&b.name));
    let mut flag_evaluations: Vec<FlagEvaluationRate> = reading
        .flag_keys()
        .map(|k| FlagEvaluationRate {
            flag: k.0.clone(),
            variant: k.1.clone(),
            rate: rate(total.flags.get(k)),
        })
        .collect();
    flag_evaluations.sort_by(|a, b| (&a.flag, &a.variant).cmp(&(&b.flag, &b.variant)));
    GatewayStatus {
        active_connections: reading.active_connections,
        config_revision: reading.config_revision,
        targets: reading.targets.clone(),
        rate_limited,
        flag_evaluations,
    }
}

/// Scrapes a gateway over HTTP and keeps a [`ScrapeState`].
#[derive(Debug)]
pub struct ScrapeSource {
    config: ScrapeConfig,
    url: reqwest::Url,
    shown_url: String,
    client: reqwest::Client,
    token: Option<Secret>,
    state: ScrapeState,
    started: Instant,
}

impl ScrapeSource {
    pub fn new(environment: &str, config: ScrapeConfig) -> Result<Self, MetricsError> {
        let url = parse_url("metrics.url", &config.url)?;
        config.compare.validate().map_err(MetricsError::Config)?;
        if config.window.0 < config.interval.0 {
            return Err(MetricsError::Config(format!(
                "metrics.window ({}) must be at least metrics.interval ({})",
                config.window, config.interval
            )));
        }
        if config.interval.0.is_zero() || config.timeout.0.is_zero() {
            return Err(MetricsError::Config(
                "metrics.interval and metrics.timeout must be above zero".into(),
            ));
        }
        let token = match &config.bearer_token {
            Some(r) => Some(
                crate::gateway::secrets::resolve(r)
                    .map_err(|e| MetricsError::Config(format!("metrics.bearer_token: {e}")))?,
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .build()
            .map_err(|e| MetricsError::Config(format!("HTTP client: {e}")))?;
        let shown_url = redact_url(&url);
        let state = ScrapeState::new(
            environment,
            &format!("scrape {shown_url}"),
            config.window.0,
            config.history_points,
            config.compare.clone(),
        );
        Ok(Self {
            config,
            url,
            shown_url,
            client,
            token,
            state,
            started: Instant::now(),
        })
    }

    /// Fetches the exposition text.
    pub async fn fetch(&self) -> Result<String, MetricsError> {
        let timeout = self.config.timeout.0;
        let mut req = self.client.get(self.url.clone()).header(
            reqwest::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        );
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| request_error(&self.shown_url, timeout, e))?;
        let status = resp.status();
        let body = read_body(&self.shown_url, timeout, resp, MAX_BODY).await?;
        if !status.is_success() {
            return Err(MetricsError::Status {
                url: self.shown_url.clone(),
                status: status.as_u16(),
                body: snippet(&body, 200),
            });
        }
        Ok(body)
    }

    pub async fn sample(&mut self, roles: &CanaryRoles) -> Result<MetricsSample, MetricsError> {
        let text = self.fetch().await?;
        let at = ScrapeTime {
            wall: Utc::now(),
            mono: self.started.elapsed(),
        };
        self.state
            .ingest_text(&text, at, roles)
            .map_err(|source| MetricsError::Exposition {
                url: self.shown_url.clone(),
                source,
            })
    }

    pub fn interval(&self) -> Duration {
        self.config.interval.0
    }

    pub fn deadline(&self) -> Duration {
        self.config.timeout.0 + Duration::from_secs(1)
    }

    pub fn environment(&self) -> &str {
        &self.state.environment
    }

    pub fn describe(&self) -> String {
        self.state.source.clone()
    }
}
