//! The scrape source: GET a signalbox gateway's `/metrics` and compute rates, ratios and
//! quantiles from the increases between consecutive scrapes over a sliding window.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Secret;
use crate::domain::metrics::{
    Comparison, FlagEvaluationRate, GatewayStatus, History, MetricsSample, NamedRate, RoleSource,
    RouteMetrics, Signal, UpstreamMetrics, Verdict,
};
use crate::gateway::config::SecretRef;
use crate::gateway::config::units::Dur;

use super::aggregate::{
    Context, Increments, PackedIncrements, Pair, Reading, Traffic, increments, signals,
};
use super::compare::{CanaryRoles, CompareConfig, Side, compare};
use super::history::{HistKey, Histories};
use super::rate::Window;
use super::{MetricsError, exposition, parse_url, read_body, redact_url, request_error, snippet};

/// Largest exposition accepted; a 10,000-series gateway exposition is about 0.9 MiB.
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
    window: Window<PackedIncrements>,
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
                let inc = PackedIncrements::pack(increments(prev, &reading), self.window.last());
                self.window.push(*prev_at, at.mono, inc);
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
        let total = PackedIncrements::sum(self.window.iter());
        let ctx = Context {
            window_secs: secs,
            has_requests: reading.has_requests,
            has_latency: reading.has_latency,
            source: &self.source,
        };

        // Pairs seen now or counted in the window; the window's counts where there are any.
        let idle = Traffic::default();
        let mut by_route: BTreeMap<&str, BTreeMap<&str, &Traffic>> = BTreeMap::new();
        for p in reading.pairs() {
            by_route
                .entry(&p.route)
                .or_default()
                .insert(&p.upstream, &idle);
        }
        for (p, t) in &total.pairs {
            by_route.entry(&p.route).or_default().insert(&p.upstream, t);
        }

        let mut overall = Traffic::default();
        let mut routes = Vec::with_capacity(by_route.len());
        for (route, ups) in &by_route {
            let mut route_total = Traffic::default();
            let mut upstreams = Vec::with_capacity(ups.len());
            for (upstream, t) in ups {
                route_total += t;
                let s = signals(t, &ctx);
                let history = if self.histories.keeps_upstreams() {
                    let key = HistKey::Upstream(Pair {
                        route: route.to_string(),
                        upstream: upstream.to_string(),
                    });
                    self.histories.push(key, s.point(at.wall))
                } else {
                    History::with_capacity(0)
                };
                upstreams.push(UpstreamMetrics {
                    upstream: upstream.to_string(),
                    history,
                    signals: s,
                });
            }
            overall += &route_total;
            let s = signals(&route_total, &ctx);
            let comparison = self.comparison(route, ups, &upstreams, warm, reading, roles);
            routes.push(RouteMetrics {
                route: route.to_string(),
                history: self
                    .histories
                    .push(HistKey::Route(route.to_string()), s.point(at.wall)),
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
        ups: &BTreeMap<&str, &Traffic>,
        shown: &[UpstreamMetrics],
        warm: bool,
        reading: &Reading,
        roles: &CanaryRoles,
    ) -> Option<Comparison> {
        let volumes: Vec<(&str, f64)> = ups.iter().map(|(u, t)| (*u, t.requests)).collect();
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
        // The p95 already computed for the panel.
        let side = |name: &str| {
            let t = ups.get(name).copied().unwrap_or(&empty);
            let p95 = shown
                .iter()
                .find(|u| u.upstream == name)
                .and_then(|u| u.signals.latency_p95.get());
            (t, p95)
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
            .map_err(|error| MetricsError::Exposition {
                url: self.shown_url.clone(),
                error,
            })
    }

    /// See [`Histories::keep_upstreams`].
    pub fn keep_upstream_histories(&mut self, keep: bool) {
        self.state.histories.keep_upstreams(keep);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metrics::Verdict;

    /// A scrape of the gateway after `n` blue and `n/2` green requests, 1% of each 5xx
    /// and 99% under 100 ms, plus `extra` green requests that all failed slowly (in the
    /// 0.1–1 s bucket). Every counter only grows as `n` and `extra` grow.
    fn text(n: u64, extra: u64) -> String {
        let g = n / 2;
        let hist = |up: &str, total: u64, slow: u64| {
            let fast = (total as f64 * 0.99).round() as u64;
            let all = total + slow;
            format!(
                "signalbox_request_duration_seconds_bucket{{route=\"users\",upstream=\"{up}\",le=\"0.01\"}} {}\n\
                 signalbox_request_duration_seconds_bucket{{route=\"users\",upstream=\"{up}\",le=\"0.1\"}} {fast}\n\
                 signalbox_request_duration_seconds_bucket{{route=\"users\",upstream=\"{up}\",le=\"1\"}} {all}\n\
                 signalbox_request_duration_seconds_bucket{{route=\"users\",upstream=\"{up}\",le=\"+Inf\"}} {all}\n",
                fast / 2
            )
        };
        format!(
            "# TYPE signalbox_requests_total counter\n\
             signalbox_requests_total{{route=\"users\",upstream=\"blue\",method=\"GET\",status_class=\"2xx\"}} {}\n\
             signalbox_requests_total{{route=\"users\",upstream=\"blue\",method=\"GET\",status_class=\"5xx\"}} {}\n\
             signalbox_requests_total{{route=\"users\",upstream=\"green\",method=\"GET\",status_class=\"2xx\"}} {}\n\
             signalbox_requests_total{{route=\"users\",upstream=\"green\",method=\"GET\",status_class=\"5xx\"}} {}\n\
             # TYPE signalbox_request_duration_seconds histogram\n{}{}\
             # TYPE signalbox_rate_limited_total counter\n\
             signalbox_rate_limited_total{{route=\"users\"}} {}\n",
            n - n / 100,
            n / 100,
            g - g / 100,
            g / 100 + extra,
            hist("blue", n, 0),
            hist("green", g, extra),
            n / 10
        )
    }

    fn at(secs: u64) -> ScrapeTime {
        ScrapeTime {
            wall: DateTime::from_timestamp(1_700_000_000 + secs as i64, 0).unwrap(),
            mono: Duration::from_secs(secs),
        }
    }

    fn state() -> ScrapeState {
        ScrapeState::new(
            "dev",
            "scrape test",
            Duration::from_secs(10),
            60,
            CompareConfig::default(),
        )
    }

    fn rate(s: &MetricsSample, up: &str) -> Option<f64> {
        s.route("users")?.upstream(up)?.signals.request_rate.get()
    }

    #[test]
    fn first_scrape_lists_routes_but_waits_for_rates() {
        let mut st = state();
        let s = st
            .ingest_text(&text(1000, 0), at(0), &CanaryRoles::default())
            .unwrap();
        let users = s.route("users").unwrap();
        assert_eq!(users.upstreams.len(), 2);
        assert!(matches!(users.signals.request_rate, Signal::NoData { .. }));
        match &users.comparison.as_ref().unwrap().verdict {
            Verdict::NotEnoughData { reason } => assert!(reason.contains("second scrape")),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn rates_ratios_and_comparison_over_the_window() {
        let mut st = state();
        let roles = CanaryRoles::default();
        st.ingest_text(&text(1000, 0), at(0), &roles).unwrap();
        st.ingest_text(&text(3000, 0), at(2), &roles).unwrap();
        let s = st.ingest_text(&text(5000, 0), at(4), &roles).unwrap();
        assert_eq!(s.window_secs, 4.0);
        assert_eq!(rate(&s, "blue"), Some(1000.0));
        assert_eq!(rate(&s, "green"), Some(500.0));
        let route = s.route("users").unwrap();
        assert_eq!(route.signals.request_rate.get(), Some(1500.0));
        assert_eq!(s.overall.request_rate.get(), Some(1500.0));
        assert_eq!(
            route
                .upstream("blue")
                .unwrap()
                .signals
                .error_ratio_5xx
                .get(),
            Some(0.01)
        );
        let c = route.comparison.as_ref().unwrap();
        assert_eq!((c.baseline.as_str(), c.canary.as_str()), ("blue", "green"));
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        assert_eq!(route.history.len(), 3);
        let g = s.gateway.unwrap();
        assert_eq!(g.rate_limited[0].rate.get(), Some(100.0));

        // Errors and latency on green: the next window fails it.
        let s = st.ingest_text(&text(7000, 1000), at(6), &roles).unwrap();
        let c = s.route("users").unwrap().comparison.clone().unwrap();
        assert!(
            matches!(c.verdict, Verdict::Fail { ref reasons } if reasons.len() == 2),
            "{c:?}"
        );
    }

    #[test]
    fn old_intervals_leave_the_window() {
        let mut st = state();
        let roles = CanaryRoles::default();
        st.ingest_text(&text(0, 0), at(0), &roles).unwrap();
        st.ingest_text(&text(100_000, 0), at(5), &roles).unwrap();
        let mut last = None;
        for t in 1..=5 {
            let n = 100_000 + t * 1000;
            last = Some(st.ingest_text(&text(n, 0), at(5 + t * 2), &roles).unwrap());
        }
        // The burst interval (0..5) started more than 10 s before the end (15): gone.
        let s = last.unwrap();
        assert_eq!(s.window_secs, 10.0);
        assert_eq!(rate(&s, "blue"), Some(500.0));
    }

    #[test]
    fn a_gateway_restart_does_not_produce_negative_or_huge_rates() {
        let mut st = state();
        let roles = CanaryRoles::default();
        st.ingest_text(&text(100_000, 0), at(0), &roles).unwrap();
        let s = st.ingest_text(&text(200, 0), at(2), &roles).unwrap();
        assert_eq!(rate(&s, "blue"), Some(100.0));
    }

    #[test]
    fn malformed_text_leaves_the_state_alone() {
        let mut st = state();
        let roles = CanaryRoles::default();
        st.ingest_text(&text(1000, 0), at(0), &roles).unwrap();
        let e = st
            .ingest_text(
                "signalbox_requests_total{route=\"users\"} oops\n",
                at(2),
                &roles,
            )
            .unwrap_err();
        assert_eq!(e.line, 1);
        let s = st.ingest_text(&text(3000, 0), at(4), &roles).unwrap();
        assert_eq!(rate(&s, "blue"), Some(500.0));
    }

    #[test]
    fn a_clock_going_back_restarts_the_window() {
        let mut st = state();
        let roles = CanaryRoles::default();
        st.ingest_text(&text(1000, 0), at(10), &roles).unwrap();
        let s = st.ingest_text(&text(2000, 0), at(5), &roles).unwrap();
        assert!(matches!(s.overall.request_rate, Signal::NoData { .. }));
    }

    #[test]
    fn configured_roles_name_the_canary() {
        let mut st = state();
        let mut roles = CanaryRoles::default();
        roles.set("users", "green", "blue");
        st.ingest_text(&text(1000, 0), at(0), &roles).unwrap();
        let s = st.ingest_text(&text(2000, 0), at(2), &roles).unwrap();
        let c = s.route("users").unwrap().comparison.clone().unwrap();
        assert_eq!(
            (c.baseline.as_str(), c.canary.as_str(), c.roles),
            ("green", "blue", RoleSource::Configured)
        );
    }

    #[test]
    fn a_missing_histogram_marks_latency_missing_but_keeps_rates() {
        let mut st = state();
        let roles = CanaryRoles::default();
        let only_requests = |n: u64| {
            format!(
                "# TYPE signalbox_requests_total counter\n\
                 signalbox_requests_total{{route=\"r\",upstream=\"u\",method=\"GET\",status_class=\"2xx\"}} {n}\n"
            )
        };
        st.ingest_text(&only_requests(10), at(0), &roles).unwrap();
        let s = st.ingest_text(&only_requests(30), at(2), &roles).unwrap();
        let sig = &s.route("r").unwrap().signals;
        assert_eq!(sig.request_rate.get(), Some(10.0));
        assert!(
            matches!(&sig.latency_p95, Signal::Missing { reason } if reason.contains("signalbox_request_duration_seconds"))
        );
    }

    #[test]
    fn config_checks() {
        let mut c = ScrapeConfig::new("http://127.0.0.1:9080/metrics");
        c.window = Dur::secs(1);
        assert!(
            ScrapeSource::new("dev", c)
                .unwrap_err()
                .to_string()
                .contains("window")
        );
        let mut c = ScrapeConfig::new("http://127.0.0.1:9080/metrics");
        c.bearer_token = Some(SecretRef::Env("SIGNALBOX_TEST_SURELY_UNSET_TOKEN".into()));
        let e = ScrapeSource::new("dev", c).unwrap_err().to_string();
        assert!(e.contains("SIGNALBOX_TEST_SURELY_UNSET_TOKEN"), "{e}");
    }
}
