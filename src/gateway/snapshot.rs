//! Compiles a validated config into the immutable snapshot the proxy serves from.
//!
//! A snapshot is swapped in whole (arc-swap); requests in flight keep the one they
//! started with. Everything that must outlive a swap (target health, connection pools,
//! rate-limit buckets, metrics) lives in [`Shared`] and is only looked up here.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};

use super::config::{FlagGate, GatewayConfig, RouteConfig, Sticky};
use super::filters::cors::CorsFilter;
use super::filters::headers::HeaderRules;
use super::filters::jwt::JwtVerifier;
use super::filters::key_auth::{KeyAuthFilter, KeyTable};
use super::filters::rate_limit::{LimiterRegistry, RateLimitFilter};
use super::metrics::{GatewayMetrics, PairMetrics};
use super::router::{RouteMatch, Router};
use super::split::Split;
use super::upstream::{TargetRegistry, Upstream};
use crate::flags::FlagStore;

/// Process-wide state that config snapshots share.
pub struct Shared {
    pub metrics: Arc<GatewayMetrics>,
    pub targets: Arc<TargetRegistry>,
    pub limiters: Arc<LimiterRegistry>,
}

impl Shared {
    /// `workers`: the number of serving threads (each gets its own upstream pools).
    pub fn new(workers: usize) -> Arc<Self> {
        let metrics = GatewayMetrics::new();
        Arc::new(Self {
            targets: TargetRegistry::new(metrics.clone(), workers),
            limiters: Arc::default(),
            metrics,
        })
    }
}

/// One way a route can send traffic: an upstream and the metrics of this pair.
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<PairMetrics>,
}

pub enum StickyKey {
    Header(HeaderName),
    Cookie(String),
    ApiKey,
}

pub struct HeaderCanaryRule {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub backend: usize,
}

/// A route's filters, in the order they run.
#[derive(Default)]
pub struct Filters {
    pub cors: Option<CorsFilter>,
    pub key_auth: Option<KeyAuthFilter>,
    pub jwt: Option<JwtVerifier>,
    pub rate_limit: Option<RateLimitFilter>,
    pub max_body: Option<u64>,
    pub request_headers: Option<HeaderRules>,
    pub response_headers: Option<HeaderRules>,
}

pub struct Route {
    pub name: Arc<str>,
    pub backends: Vec<Backend>,
    /// Metrics for requests this route answered itself (auth, limits, preflights).
    pub gateway_answered: Arc<PairMetrics>,
    pub split: Split,
    pub canary: Option<HeaderCanaryRule>,
    pub sticky: Option<StickyKey>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub flag: Option<CompiledGate>,
    pub filters: Filters,
}

/// A route's flag gate, with header names parsed once.
pub struct CompiledGate {
    pub key: String,
    pub forward_headers: bool,
    pub targeting_key: Option<HeaderName>,
    pub context_headers: Vec<HeaderName>,
}

impl CompiledGate {
    fn new(g: &FlagGate) -> Result<Self, String> {
        let name = |h: &str| {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("{h:?} is not a valid header name"))
        };
        Ok(Self {
            key: g.key.clone(),
            forward_headers: g.forward_headers,
            targeting_key: g.targeting_key.as_deref().map(name).transpose()?,
            context_headers: g
                .context_headers
                .iter()
                .map(|h| name(h))
                .collect::<Result<_, _>>()?,
        })
    }
}

pub struct Snapshot {
    /// The revision this snapshot is (0 until it is recorded).
    pub revision: u64,
    /// The feature flags in force, when the config has any.
    pub flags: Option<Arc<FlagStore>>,
    pub config: Arc<GatewayConfig>,
    pub router: Router<Route>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Metrics for requests that matched no route.
    pub unrouted: Arc<PairMetrics>,
    pub metrics: Arc<GatewayMetrics>,
    pub access_log: bool,
    /// SHA-256 of the canonical config, hex.
    pub hash: String,
}

/// Compile errors point at a field path, like validation errors.
pub type CompileError = (String, String);

pub fn config_hash(c: &GatewayConfig) -> String {
    let canonical = serde_json::to_vec(c).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// Paths in a config are relative to the config file's directory.
fn resolve_path(base_dir: Option<&std::path::Path>, p: &std::path::Path) -> std::path::PathBuf {
    match base_dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    }
}

pub fn compile(
    cfg: Arc<GatewayConfig>,
    shared: &Shared,
    base_dir: Option<&std::path::Path>,
    flags: Option<Arc<FlagStore>>,
) -> Result<Snapshot, CompileError> {
    for (i, r) in cfg.routes.iter().enumerate() {
        if let Some(gate) = &r.flag {
            match &flags {
                None => {
                    return Err((
                        format!("routes[{i}].flag"),
                        "this route needs a flag, but the config has no `flags`".into(),
                    ));
                }
                Some(f) if f.summary(&gate.key).is_none() => {
                    return Err((
                        format!("routes[{i}].flag.key"),
                        format!("no flag {:?} in the flags", gate.key),
                    ));
                }
                _ => {}
            }
        }
    }
    let mut upstreams = BTreeMap::new();
    for (name, u) in &cfg.upstreams {
        let built = shared
            .targets
            .build(name, u)
            .map_err(|e| (format!("upstreams.{name}"), e))?;
        upstreams.insert(name.clone(), Arc::new(built));
    }
    let needs_keys = cfg
        .routes
        .iter()
        .any(|r| r.plugins.over(&cfg.defaults).key_auth.is_some());
    let keys = Arc::new(if needs_keys {
        KeyTable::build(&cfg.consumers)?
    } else {
        KeyTable::default()
    });

    let mut entries = Vec::with_capacity(cfg.routes.len());
    for (i, r) in cfg.routes.iter().enumerate() {
        let route = compile_route(i, r, &cfg, &upstreams, &keys, shared, base_dir)?;
        let m = RouteMatch {
            methods: r
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()))
                .collect::<Result<_, _>>()
                .map_err(|_| (format!("routes[{i}].methods"), "invalid method".to_string()))?,
            hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            headers: r
                .headers
                .iter()
                .map(|(n, v)| {
                    Ok((
                        HeaderName::from_bytes(n.as_bytes()).map_err(|_| "bad header name")?,
                        HeaderValue::from_str(v).map_err(|_| "bad header value")?,
                    ))
                })
                .collect::<Result<_, &str>>()
                .map_err(|e| (format!("routes[{i}].headers"), e.to_string()))?,
        };
        entries.push((m, r.paths.clone(), r.exact_paths.clone(), route));
    }
    Ok(Snapshot {
        revision: 0,
        flags,
        hash: config_hash(&cfg),
        access_log: cfg.log.access_log,
        unrouted: shared.metrics.pair("", ""),
        metrics: shared.metrics.clone(),
        router: Router::new(entries),
        upstreams,
        config: cfg,
    })
}

fn compile_route(
    i: usize,
    r: &RouteConfig,
    cfg: &GatewayConfig,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    keys: &Arc<KeyTable>,
    shared: &Shared,
    base_dir: Option<&std::path::Path>,
) -> Result<Route, CompileError> {
    let base = format!("routes[{i}]");
    let mut backends = Vec::new();
    let mut weights = Vec::new();
    let add_backend = |name: &str, backends: &mut Vec<Backend>| -> Result<usize, CompileError> {
        if let Some(pos) = backends.iter().position(|b| &*b.upstream.name == name) {
            return Ok(pos);
        }
        let upstream = upstreams
            .get(name)
            .ok_or_else(|| {
                (
                    format!("{base}.split.{name}"),
                    format!("unknown upstream {name:?}"),
                )
            })?
            .clone();
        backends.push(Backend {
            upstream,
            metrics: shared.metrics.pair(&r.name, name),
        });
        Ok(backends.len() - 1)
    };
    for (name, w) in &r.split {
        add_backend(name, &mut backends)?;
        weights.push(*w);
    }
    let canary = match &r.canary_by_header {
        Some(c) => {
            let backend = add_backend(&c.upstream, &mut backends)?;
            Some(HeaderCanaryRule {
                name: HeaderName::from_bytes(c.name.as_bytes()).map_err(|_| {
                    (
                        format!("{base}.canary_by_header.name"),
                        "invalid header name".to_string(),
                    )
                })?,
                value: HeaderValue::from_str(&c.value).map_err(|_| {
                    (
                        format!("{base}.canary_by_header.value"),
                        "invalid header value".to_string(),
                    )
                })?,
                backend,
            })
        }
        None => None,
    };
    // A header-canary-only upstream takes no split traffic.
    weights.resize(backends.len(), 0);
    if weights.iter().all(|w| *w == 0) {
        return Err((format!("{base}.split"), "all weights are zero".into()));
    }

    let plugins = r.plugins.over(&cfg.defaults);
    let pbase = format!("{base}.plugins");
    let filters = Filters {
        cors: plugins
            .cors
            .as_ref()
            .map(CorsFilter::new)
            .transpose()
            .map_err(|e| (format!("{pbase}.cors"), e))?,
        key_auth: plugins
            .key_auth
            .as_ref()
            .map(|k| KeyAuthFilter::new(k, keys.clone()))
            .transpose()
            .map_err(|e| (format!("{pbase}.key_auth"), e))?,
        jwt: plugins
            .jwt
            .as_ref()
            .map(|j| JwtVerifier::build_now(j, &|p| resolve_path(base_dir, p)))
            .transpose()
            .map_err(|e| (format!("{pbase}.jwt"), e))?,
        rate_limit: plugins
            .rate_limit
            .as_ref()
            .map(|rl| {
                RateLimitFilter::new(
                    &r.name,
                    rl,
                    &shared.limiters,
                    shared.metrics.rate_limited_counter(&r.name),
                )
            })
            .transpose()
            .map_err(|e| (format!("{pbase}.rate_limit"), e))?,
        max_body: plugins.max_body.map(|b| b.0),
        request_headers: plugins
            .request_headers
            .as_ref()
            .map(HeaderRules::compile)
            .transpose()
            .map_err(|e| (format!("{pbase}.request_headers"), e))?,
        response_headers: plugins
            .response_headers
            .as_ref()
            .map(HeaderRules::compile)
            .transpose()
            .map_err(|e| (format!("{pbase}.response_headers"), e))?,
    };
    let sticky = match &r.sticky {
        None => None,
        Some(Sticky::ApiKey) => Some(StickyKey::ApiKey),
        Some(Sticky::Cookie(c)) => Some(StickyKey::Cookie(c.clone())),
        Some(Sticky::Header(h)) => Some(StickyKey::Header(
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| (format!("{base}.sticky"), "invalid header name".to_string()))?,
        )),
    };
    Ok(Route {
        name: r.name.as_str().into(),
        split: Split::new(&weights),
        gateway_answered: shared.metrics.pair(&r.name, ""),
        backends,
        canary,
        sticky,
        strip_prefix: r.strip_prefix,
        preserve_host: r.preserve_host,
        flag: r
            .flag
            .as_ref()
            .map(CompiledGate::new)
            .transpose()
            .map_err(|e| (format!("{base}.flag"), e))?,
        filters,
    })
}
