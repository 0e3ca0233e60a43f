//! The gateway's view of itself, as `GET /admin/state` reports it.

use crate::domain::status::{
    GatewayStatus, HeaderCanaryStatus, RouteStatus, TargetStatus, UpstreamStatus,
};

use super::config::{RouteConfig, Sticky};
use super::snapshot::Snapshot;

pub fn status(snap: &Snapshot) -> GatewayStatus {
    let c = &snap.config;
    GatewayStatus {
        revision: snap.revision,
        config_hash: snap.hash.clone(),
        routes: c.routes.iter().map(|r| route_status(r, c)).collect(),
        upstreams: snap
            .upstreams
            .iter()
            .map(|(name, u)| UpstreamStatus {
                name: name.clone(),
                targets: u
                    .targets
                    .iter()
                    .map(|t| TargetStatus {
                        addr: t.addr.clone(),
                        healthy: t.is_healthy(),
                        ejected: t.is_ejected(),
                    })
                    .collect(),
            })
            .collect(),
        flags: snap
            .flags
            .as_ref()
            .map(|f| f.statuses())
            .unwrap_or_default(),
    }
}

fn route_status(r: &RouteConfig, c: &super::config::GatewayConfig) -> RouteStatus {
    let plugins = r.plugins.over(&c.defaults);
    let mut filters = Vec::new();
    for (on, name) in [
        (plugins.cors.is_some(), "cors"),
        (plugins.key_auth.is_some(), "key_auth"),
        (plugins.jwt.is_some(), "jwt"),
        (plugins.rate_limit.is_some(), "rate_limit"),
        (plugins.max_body.is_some(), "max_body"),
        (plugins.request_headers.is_some(), "request_headers"),
        (plugins.response_headers.is_some(), "response_headers"),
    ] {
        if on {
            filters.push(name.to_string());
        }
    }
    RouteStatus {
        name: r.name.clone(),
        paths: r.paths.clone(),
        exact_paths: r.exact_paths.clone(),
        methods: r.methods.clone(),
        hosts: r.hosts.clone(),
        split: r.split.clone(),
        canary_by_header: r.canary_by_header.as_ref().map(|h| HeaderCanaryStatus {
            name: h.name.clone(),
            value: h.value.clone(),
            upstream: h.upstream.clone(),
        }),
        canary: r.canary.clone().or_else(|| {
            r.canary_by_header
                .as_ref()
                .map(|h| h.upstream.clone())
                .filter(|u| r.split.contains_key(u))
        }),
        sticky: r.sticky.as_ref().map(|s| match s {
            Sticky::Header(h) => format!("header {h}"),
            Sticky::Cookie(c) => format!("cookie {c}"),
            Sticky::ApiKey => "api key".to_string(),
        }),
        filters,
        flag: r.flag.as_ref().map(|f| f.key.clone()),
    }
}
