//! Ready-made PromQL for the gateways people run, so panels work with any naming.
//!
//! A template may use these placeholders (any other `{…}` is left alone, so PromQL's own
//! braces are fine):
//!
//! - `{selector}`: the configured label matchers without braces, e.g.
//!   `namespace="prod"`, or nothing. Write it inside a selector: `metric{{selector}}`, or
//!   after other matchers: `metric{code="500",{selector}}` (PromQL allows the trailing
//!   comma this leaves when the selector is empty).
//! - `{window}`: the range, e.g. `1m`.
//! - `{by}`: the grouping labels for the level being queried: `route, upstream` per
//!   upstream, `route` per route, nothing for the whole environment (with the configured
//!   label names). Use it as `sum by ({by}) (…)` or `sum by (le, {by}) (…)`.
//! - `{route}`, `{upstream}`: for templates that must be run once per route and upstream.
//!   They expand to an anchored regular expression for the one route or upstream (or `.*`
//!   at levels above it), so always match them with `=~`:
//!   `sum(rate(my_requests{service=~"{route}",version=~"{upstream}",{selector}}[{window}]))`.
//!   Such a template returns one value per run. The routes come from a grouped
//!   `request_rate` template or from the config's `targets`.
//!
//! A grouped template (without `{route}`/`{upstream}`) returns one series per group,
//! labelled with the route and upstream labels. Quantiles are in seconds.
//!
//! Example (`signalbox.toml`, Istio with a custom error ratio):
//!
//! ```toml
//! [environments.prod.metrics]
//! kind = "promql"
//! url = "http://prometheus.monitoring:9090"
//! selector = '{namespace="shop"}'
//! preset = "istio"
//! window = "2m"
//!
//! [environments.prod.metrics.queries]
//! error_ratio_5xx = '''
//! sum by ({by}) (rate(istio_requests_total{reporter="destination",response_code=~"5..|0",{selector}}[{window}]))
//! / sum by ({by}) (rate(istio_requests_total{reporter="destination",{selector}}[{window}]))'''
//! ```

use serde::{Deserialize, Serialize};

/// PromQL templates for the six signals and the comparison's latency buckets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queries {
    /// Requests per second.
    pub request_rate: String,
    /// 5xx share of requests, 0..=1.
    pub error_ratio_5xx: String,
    /// 4xx share of requests, 0..=1.
    pub error_ratio_4xx: String,
    /// Latency quantiles in seconds.
    pub latency_p50: String,
    pub latency_p95: String,
    pub latency_p99: String,
    /// Cumulative latency bucket increases over the window, one series per `le` (and
    /// group), for the Mann–Whitney test. Without it, the latency comparison reports
    /// `NotEnoughData`.
    pub latency_buckets: Option<String>,
}

/// Per-signal overrides of a preset (the `[queries]` table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryOverrides {
    pub request_rate: Option<String>,
    pub error_ratio_5xx: Option<String>,
    pub error_ratio_4xx: Option<String>,
    pub latency_p50: Option<String>,
    pub latency_p95: Option<String>,
    pub latency_p99: Option<String>,
    pub latency_buckets: Option<String>,
}

impl Queries {
    /// This preset's queries with the overrides applied.
    pub fn with(mut self, o: &QueryOverrides) -> Self {
        let set = |slot: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        };
        set(&mut self.request_rate, &o.request_rate);
        set(&mut self.error_ratio_5xx, &o.error_ratio_5xx);
        set(&mut self.error_ratio_4xx, &o.error_ratio_4xx);
        set(&mut self.latency_p50, &o.latency_p50);
        set(&mut self.latency_p95, &o.latency_p95);
        set(&mut self.latency_p99, &o.latency_p99);
        if o.latency_buckets.is_some() {
            self.latency_buckets.clone_from(&o.latency_buckets);
        }
        self
    }
}

/// Which metric naming to assume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// signalbox's own gateway: `signalbox_requests_total{route,upstream,method,status_class}`
    /// and `signalbox_request_duration_seconds` (seconds).
    #[default]
    Signalbox,
    /// Envoy cluster statistics: `envoy_cluster_upstream_rq_xx{envoy_response_code_class}`
    /// and `envoy_cluster_upstream_rq_time` (milliseconds). The upstream is
    /// `envoy_cluster_name`. Envoy's cluster statistics carry no route, so the preset
    /// groups by a `route` label that your scrape config should attach to the stable and
    /// canary clusters' series (e.g. relabel `users-stable`/`users-canary` to
    /// `route="users"`), or set `route_label`. Without it all clusters form one unnamed
    /// route.
    Envoy,
    /// ingress-nginx: `nginx_ingress_controller_requests{host,service,status}` and
    /// `nginx_ingress_controller_request_duration_seconds` (seconds). A route is a host;
    /// its upstreams are the stable and canary Services behind it.
    IngressNginx,
    /// Istio standard metrics as reported by the destination proxy:
    /// `istio_requests_total{destination_service_name,destination_version,response_code}`
    /// and `istio_request_duration_milliseconds` (milliseconds). A route is a service; its
    /// upstreams are the versions.
    Istio,
}

/// A preset's label names and templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresetDef {
    pub route_label: &'static str,
    pub upstream_label: &'static str,
    pub queries: Queries,
}

/// The parts that differ between naming schemes.
struct Shape {
    requests: &'static str,
    /// Matchers always applied, e.g. `reporter="destination"`.
    base: &'static str,
    match_5xx: &'static str,
    match_4xx: &'static str,
    bucket: &'static str,
    /// Turns the histogram's unit into seconds.
    to_seconds: &'static str,
}

fn matchers(parts: &[&str]) -> String {
    let fixed: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if fixed.is_empty() {
        "{{selector}}".into()
    } else {
        format!("{{{},{{selector}}}}", fixed.join(","))
    }
}

fn build(s: &Shape) -> Queries {
    let all = format!("{}{}", s.requests, matchers(&[s.base]));
    let total = format!("sum by ({{by}}) (rate({all}[{{window}}]))");
    let ratio = |m: &str| {
        let part = format!("{}{}", s.requests, matchers(&[s.base, m]));
        // Without `or … * 0` a group with no errors at all would drop out of the result
        // instead of reading 0.
        format!("(sum by ({{by}}) (rate({part}[{{window}}])) or {total} * 0) / {total}")
    };
    let buckets = format!("{}{}", s.bucket, matchers(&[s.base]));
    let q = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le, {{by}}) (rate({buckets}[{{window}}]))){}",
            s.to_seconds
        )
    };
    Queries {
        request_rate: total.clone(),
        error_ratio_5xx: ratio(s.match_5xx),
        error_ratio_4xx: ratio(s.match_4xx),
        latency_p50: q("0.5"),
        latency_p95: q("0.95"),
        latency_p99: q("0.99"),
        latency_buckets: Some(format!(
            "sum by (le, {{by}}) (increase({buckets}[{{window}}]))"
        )),
    }
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Signalbox,
        Preset::Envoy,
        Preset::IngressNginx,
        Preset::Istio,
    ];

    pub fn definition(self) -> PresetDef {
        match self {
            Preset::Signalbox => PresetDef {
                route_label: "route",
                upstream_label: "upstream",
                queries: build(&Shape {
                    requests: "signalbox_requests_total",
                    base: "",
                    match_5xx: r#"status_class="5xx""#,
                    match_4xx: r#"status_class="4xx""#,
                    bucket: "signalbox_request_duration_seconds_bucket",
                    to_seconds: "",
                }),
            },
            Preset::Envoy => PresetDef {
                route_label: "route",
                upstream_label: "envoy_cluster_name",
                queries: build(&Shape {
                    requests: "envoy_cluster_upstream_rq_xx",
                    base: "",
                    match_5xx: r#"envoy_response_code_class="5""#,
                    match_4xx: r#"envoy_response_code_class="4""#,
                    bucket: "envoy_cluster_upstream_rq_time_bucket",
                    to_seconds: " / 1000",
                }),
            },
            Preset::IngressNginx => PresetDef {
                route_label: "host",
                upstream_label: "service",
                queries: build(&Shape {
                    requests: "nginx_ingress_controller_requests",
                    base: "",
                    match_5xx: r#"status=~"5..""#,
                    match_4xx: r#"status=~"4..""#,
                    bucket: "nginx_ingress_controller_request_duration_seconds_bucket",
                    to_seconds: "",
                }),
            },
            Preset::Istio => PresetDef {
                route_label: "destination_service_name",
                upstream_label: "destination_version",
                queries: build(&Shape {
                    requests: "istio_requests_total",
                    base: r#"reporter="destination""#,
                    match_5xx: r#"response_code=~"5..""#,
                    match_4xx: r#"response_code=~"4..""#,
                    bucket: "istio_request_duration_milliseconds_bucket",
                    to_seconds: " / 1000",
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalbox_preset_reads_as_expected() {
        let q = Preset::Signalbox.definition().queries;
        assert_eq!(
            q.request_rate,
            "sum by ({by}) (rate(signalbox_requests_total{{selector}}[{window}]))"
        );
        assert_eq!(
            q.error_ratio_5xx,
            "(sum by ({by}) (rate(signalbox_requests_total{status_class=\"5xx\",{selector}}[{window}])) \
             or sum by ({by}) (rate(signalbox_requests_total{{selector}}[{window}])) * 0) \
             / sum by ({by}) (rate(signalbox_requests_total{{selector}}[{window}]))"
        );
        assert_eq!(
            q.latency_p95,
            "histogram_quantile(0.95, sum by (le, {by}) \
             (rate(signalbox_request_duration_seconds_bucket{{selector}}[{window}])))"
        );
    }

    #[test]
    fn istio_converts_milliseconds_and_filters_reporter() {
        let q = Preset::Istio.definition().queries;
        assert!(q.latency_p99.ends_with(" / 1000"));
        assert!(
            q.request_rate
                .contains(r#"istio_requests_total{reporter="destination",{selector}}"#)
        );
    }

    #[test]
    fn overrides_replace_single_signals() {
        let q = Preset::Signalbox
            .definition()
            .queries
            .with(&QueryOverrides {
                latency_p95: Some("my_p95".into()),
                ..QueryOverrides::default()
            });
        assert_eq!(q.latency_p95, "my_p95");
        assert!(q.latency_p50.starts_with("histogram_quantile(0.5,"));
    }

    #[test]
    fn preset_names_in_config() {
        let p: Preset = serde_json::from_str("\"ingress-nginx\"").unwrap();
        assert_eq!(p, Preset::IngressNginx);
    }
}
