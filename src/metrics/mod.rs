//! Live error and latency: scrape a gateway's `/metrics`, or query Prometheus. Both
//! produce a [`MetricsSample`]; a [`MetricsPoller`] refreshes one on its own task and
//! publishes it on a `watch` channel, so the UI never waits on the network.
//!
//! The pure parts (exposition parsing, counter deltas, quantiles, aggregation, the
//! stable vs canary statistics, PromQL templates and result mapping) are separate from
//! the HTTP fetches and tested on their own.
//!
//! The environments file embeds a [`MetricsSourceConfig`]:
//!
//! ```toml
//! [metrics]
//! kind = "scrape"
//! url = "http://127.0.0.1:9080/metrics"
//! window = "30s"
//! ```
//!
//! or, for a real deployment, see [`promql::PromQlConfig`].

pub mod aggregate;
pub mod compare;
pub mod exposition;
pub mod history;
pub mod poller;
pub mod presets;
pub mod promql;
pub mod quantile;
pub mod rate;
pub mod scrape;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::domain::metrics::MetricsSample;
pub use compare::{CanaryRoles, CompareConfig, RolePair};
pub use exposition::ExpositionError;
pub use poller::MetricsPoller;
pub use presets::Preset;
pub use promql::{PromQlConfig, PromQlSource};
pub use scrape::{ScrapeConfig, ScrapeSource};

/// Where an environment's metrics come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsSourceConfig {
    /// Scrape signalbox's gateway directly (the sandbox does this).
    Scrape(ScrapeConfig),
    /// Ask a Prometheus server.
    Promql(Box<PromQlConfig>),
}

/// Why a refresh failed as a whole. Failures of single PromQL queries do not end up
/// here; they mark only their signal.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metrics config: {0}")]
    Config(String),
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} timed out after {secs:.1}s")]
    Timeout { url: String, secs: f64 },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("unreadable response from {url}: {message}")]
    Response { url: String, message: String },
    #[error("bad metrics text from {url}: {error}")]
    Exposition { url: String, error: ExpositionError },
    #[error("all {count} Prometheus queries to {url} failed; first: {first}")]
    AllQueriesFailed {
        url: String,
        count: usize,
        first: String,
    },
}

/// A metrics source for one environment. Each keeps state between samples (previous
/// scrape, histories), so sampling takes `&mut self`; the poller owns it on its task.
pub enum MetricsSource {
    Scrape(Box<ScrapeSource>),
    PromQl(Box<PromQlSource>),
}

impl MetricsSource {
    /// Builds the source an environment's config describes. Secrets named by the config
    /// are read here.
    pub fn from_config(
        environment: &str,
        config: &MetricsSourceConfig,
    ) -> Result<Self, MetricsError> {
        Ok(match config {
            MetricsSourceConfig::Scrape(c) => {
                MetricsSource::Scrape(Box::new(ScrapeSource::new(environment, c.clone())?))
            }
            MetricsSourceConfig::Promql(c) => {
                MetricsSource::PromQl(Box::new(PromQlSource::new(environment, (**c).clone())?))
            }
        })
    }

    /// Takes one sample.
    pub async fn sample(&mut self, roles: &CanaryRoles) -> Result<MetricsSample, MetricsError> {
        match self {
            MetricsSource::Scrape(s) => s.sample(roles).await,
            MetricsSource::PromQl(s) => s.sample(roles).await,
        }
    }

    /// Keeps (the default) or leaves out per-upstream sparkline histories; a reader that
    /// draws only route and environment sparklines saves most of the history memory.
    pub fn keep_upstream_histories(&mut self, keep: bool) {
        match self {
            MetricsSource::Scrape(s) => s.keep_upstream_histories(keep),
            MetricsSource::PromQl(s) => s.keep_upstream_histories(keep),
        }
    }

    /// How often the poller should sample.
    pub fn interval(&self) -> Duration {
        match self {
            MetricsSource::Scrape(s) => s.interval(),
            MetricsSource::PromQl(s) => s.interval(),
        }
    }

    /// The longest one sample may take before the poller gives up on it.
    pub fn deadline(&self) -> Duration {
        match self {
            MetricsSource::Scrape(s) => s.deadline(),
            MetricsSource::PromQl(s) => s.deadline(),
        }
    }

    pub fn environment(&self) -> &str {
        match self {
            MetricsSource::Scrape(s) => s.environment(),
            MetricsSource::PromQl(s) => s.environment(),
        }
    }

    /// A one-line description without credentials, e.g. `scrape http://…/metrics`.
    pub fn describe(&self) -> String {
        match self {
            MetricsSource::Scrape(s) => s.describe(),
            MetricsSource::PromQl(s) => s.describe(),
        }
    }
}

impl From<ScrapeSource> for MetricsSource {
    fn from(s: ScrapeSource) -> Self {
        MetricsSource::Scrape(Box::new(s))
    }
}

impl From<PromQlSource> for MetricsSource {
    fn from(s: PromQlSource) -> Self {
        MetricsSource::PromQl(Box::new(s))
    }
}

/// A URL fit for messages: any user name or password replaced by `***`.
pub(crate) fn redact_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() {
        let _ = u.set_username("***");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// Parses and checks an http(s) URL from a config.
pub(crate) fn parse_url(field: &str, s: &str) -> Result<reqwest::Url, MetricsError> {
    let u = reqwest::Url::parse(s.trim()).map_err(|e| {
        MetricsError::Config(format!("{field}: {e} (write e.g. http://127.0.0.1:9090)"))
    })?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(MetricsError::Config(format!(
            "{field}: scheme must be http or https, got {}",
            u.scheme()
        )));
    }
    Ok(u)
}

/// A reqwest error as one line: the error and its causes, without the URL (which the
/// caller names, redacted).
pub(crate) fn describe_reqwest(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

/// Maps a failed request to the error an operator can act on.
pub(crate) fn request_error(url: &str, timeout: Duration, e: reqwest::Error) -> MetricsError {
    if e.is_timeout() {
        MetricsError::Timeout {
            url: url.to_owned(),
            secs: timeout.as_secs_f64(),
        }
    } else {
        MetricsError::Unreachable {
            url: url.to_owned(),
            message: describe_reqwest(e),
        }
    }
}

/// Reads a response body up to `limit` bytes as UTF-8.
pub(crate) async fn read_body(
    url: &str,
    timeout: Duration,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<String, MetricsError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(MetricsError::Response {
            url: url.to_owned(),
            message: format!("body larger than {} MiB", limit >> 20),
        });
    }
    // Sized once when the length is announced (checked against `limit` above): a growing
    // buffer would briefly hold twice a multi-megabyte exposition on every scrape.
    let announced = resp.content_length().map_or(0, |n| n as usize);
    let mut buf = Vec::with_capacity(announced);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| request_error(url, timeout, e))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(MetricsError::Response {
                url: url.to_owned(),
                message: format!("body larger than {} MiB", limit >> 20),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|e| MetricsError::Response {
        url: url.to_owned(),
        message: format!("body is not UTF-8 ({e})"),
    })
}

/// The first `max` characters of a body, on one line, for error messages.
pub(crate) fn snippet(body: &str, max: usize) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_credentials() {
        let u = reqwest::Url::parse("https://admin:hunter2@prom.example:9090/x").unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("hunter2") && !shown.contains("admin"),
            "{shown}"
        );
        assert!(shown.contains("prom.example:9090"));
    }

    #[test]
    fn config_kinds_deserialize_from_toml() {
        let c: MetricsSourceConfig = toml::from_str(
            r#"
kind = "scrape"
url = "http://127.0.0.1:9080/metrics"
window = "20s"
[compare]
min_requests_per_side = 50
"#,
        )
        .unwrap();
        match c {
            MetricsSourceConfig::Scrape(s) => {
                assert_eq!(s.window.0, Duration::from_secs(20));
                assert_eq!(s.compare.min_requests_per_side, 50);
                assert_eq!(s.compare.alpha, 0.05);
            }
            other => panic!("{other:?}"),
        }
        let c: MetricsSourceConfig = toml::from_str(
            r#"
kind = "promql"
url = "http://prometheus:9090"
selector = '{namespace="prod"}'
preset = "istio"
"#,
        )
        .unwrap();
        assert!(matches!(c, MetricsSourceConfig::Promql(ref p) if p.preset == Preset::Istio));
        let e = toml::from_str::<MetricsSourceConfig>(
            "kind = \"scrape\"\nurl = \"x\"\nwindw = \"1s\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("windw"), "{e}");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        assert!(
            parse_url("url", "ftp://x")
                .unwrap_err()
                .to_string()
                .contains("scheme")
        );
        assert!(parse_url("url", "not a url").is_err());
    }

    #[test]
    fn snippets_are_short_single_lines() {
        assert_eq!(snippet("a\n  b\tc", 10), "a b c");
        assert_eq!(snippet(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
    }
}
