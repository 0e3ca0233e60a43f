//! The native gateway config, as written in YAML. Field docs here are the reference the
//! README's config section is written from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, de};

use super::units::{ByteSize, Dur};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where clients connect. `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Named API consumers and their credentials (by reference, never inline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// Plugins applied to every route that does not configure the same plugin itself.
    #[serde(default, skip_serializing_if = "Plugins::is_empty")]
    pub defaults: Plugins,
    /// Feature flags: a flagd JSON file (relative to the config file), or the flagd
    /// document inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<FlagsSource>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum FlagsSource {
    File(PathBuf),
    Inline(serde_json::Value),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin API, `/metrics`, `/healthz` and `/readyz`. `--admin-listen` overrides it.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token for mutating admin calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// File holding the bearer token (as Kubernetes mounts a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing)]
    pub token: Option<InlineSecret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_env: None,
            token_file: None,
            token: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A client must send its request headers within this time (slowloris guard).
    #[serde(default = "ServerConfig::header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Largest accepted request head (request line plus headers).
    #[serde(default = "ServerConfig::max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(default = "ServerConfig::shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// Accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1.
    #[serde(default = "yes")]
    pub h2c: bool,
    /// Serving threads, each with its own runtime and upstream connection pools; 0 means
    /// one per CPU. Read at start (a reload does not change it).
    #[serde(default)]
    pub workers: usize,
}

impl ServerConfig {
    fn header_read_timeout() -> Dur {
        Dur::secs(10)
    }
    fn max_header_bytes() -> ByteSize {
        ByteSize(64 * 1024)
    }
    fn shutdown_timeout() -> Dur {
        Dur::secs(10)
    }

    /// `workers`, with 0 resolved to the number of CPUs this process may use.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::header_read_timeout(),
            max_header_bytes: Self::max_header_bytes(),
            shutdown_timeout: Self::shutdown_timeout(),
            h2c: true,
            workers: 0,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` wins when set.
    #[serde(default = "LogConfig::level")]
    pub level: String,
    /// One line per request: request id, route, upstream, status, latency.
    #[serde(default = "yes")]
    pub access_log: bool,
    #[serde(default)]
    pub format: LogFormat,
}

impl LogConfig {
    fn level() -> String {
        "info".into()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: Self::level(),
            access_log: true,
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub name: String,
    /// API keys for `key_auth`, each from an env var or a file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<SecretRef>,
    #[serde(default, skip_serializing)]
    pub key: Option<InlineSecret>,
}

/// Where a secret comes from. Never the value itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
    /// A value written straight into a gateway config (not kept): only parsed so that
    /// `validate` reports it beside every other problem, and such a config never loads.
    #[serde(skip)]
    Inline,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Map(Raw),
            Inline(de::IgnoredAny),
        }
        match Either::deserialize(d)? {
            Either::Map(Raw {
                env: Some(e),
                file: None,
            }) => Ok(SecretRef::Env(e)),
            Either::Map(Raw {
                env: None,
                file: Some(f),
            }) => Ok(SecretRef::File(f)),
            Either::Map(_) => Err(de::Error::custom(
                "a secret reference needs exactly one of `env` or `file`",
            )),
            Either::Inline(_) if deferring_inline_secrets() => Ok(SecretRef::Inline),
            Either::Inline(_) => Err(de::Error::custom(INLINE_SECRET)),
        }
    }
}

pub(crate) const INLINE_SECRET: &str =
    "secrets must not be written inline; refer to them as { env: NAME } or { file: PATH }";

thread_local! {
    static DEFER_INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn deferring_inline_secrets() -> bool {
    DEFER_INLINE.with(std::cell::Cell::get)
}

/// Runs `f` with inline secrets parsed as [`SecretRef::Inline`] / [`InlineSecret`] instead
/// of failing, so a validation that follows reports them with the file's other problems.
/// Anywhere else (the environments file's metrics tokens) an inline secret still fails at once.
pub(crate) fn with_inline_secrets_deferred<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFER_INLINE.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DEFER_INLINE.with(|d| d.replace(true)));
    f()
}

/// A trap for a secret written straight into the config: deserialising it fails with an
/// explanation (or, deferred, leaves this marker for `validate`); the value is never kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InlineSecret;

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        if deferring_inline_secrets() {
            return Ok(InlineSecret);
        }
        Err(de::Error::custom(INLINE_SECRET))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// One or more `host:port`.
    pub targets: Vec<String>,
    #[serde(default = "UpstreamConfig::connect_timeout")]
    pub connect_timeout: Dur,
    /// Time to the upstream's response headers; past it the client gets 504.
    #[serde(default = "UpstreamConfig::timeout")]
    pub timeout: Dur,
    /// Extra attempts for idempotent requests without a body, on another target if any.
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub passive: PassiveHealth,
}

impl UpstreamConfig {
    fn connect_timeout() -> Dur {
        Dur::secs(1)
    }
    fn timeout() -> Dur {
        Dur::secs(30)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `GET path` on every target; a 2xx answer is healthy.
    pub path: String,
    #[serde(default = "HealthCheck::interval")]
    pub interval: Dur,
    #[serde(default = "HealthCheck::timeout")]
    pub timeout: Dur,
    /// Consecutive successes that mark a target healthy again.
    #[serde(default = "one")]
    pub healthy_threshold: u32,
    /// Consecutive failures that mark a target unhealthy.
    #[serde(default = "two")]
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    fn interval() -> Dur {
        Dur::secs(5)
    }
    fn timeout() -> Dur {
        Dur::secs(1)
    }
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive failed requests (connect errors, timeouts, 5xx) that eject a target.
    #[serde(default = "PassiveHealth::max_failures")]
    pub max_failures: u32,
    /// How long an ejected target sits out before it is tried again.
    #[serde(default = "PassiveHealth::eject_for")]
    pub eject_for: Dur,
}

impl PassiveHealth {
    fn max_failures() -> u32 {
        5
    }
    fn eject_for() -> Dur {
        Dur::secs(10)
    }
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            max_failures: Self::max_failures(),
            eject_for: Self::eject_for(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Path prefixes, matched on segment boundaries; the longest prefix wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Exact paths; an exact match beats any prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exact_paths: Vec<String>,
    /// Allowed methods; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Host names (without port); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Request headers that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Upstream name to integer weight. Blue-green is 100/0.
    pub split: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_by_header: Option<HeaderCanary>,
    /// Which upstream is the canary, for `ctl canary` and the cockpit. Defaults to the
    /// header canary's upstream; a two-way split without either has no canary side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Remove the matched prefix before forwarding.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strip_prefix: bool,
    /// Forward the client's Host header instead of the target's address.
    #[serde(default, skip_serializing_if = "is_false")]
    pub preserve_host: bool,
    /// A flag that must evaluate to on for this route to exist for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<FlagGate>,
    #[serde(default, skip_serializing_if = "Plugins::is_empty")]
    pub plugins: Plugins,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagGate {
    pub key: String,
    /// Forward every evaluated flag to the upstream as `x-flag-<key>: <variant>`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_headers: bool,
    /// The header whose value is the evaluation's `targetingKey` (e.g. a user id); default:
    /// the consumer, else the client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting_key: Option<String>,
    /// Request headers copied into the evaluation context, by lower-case name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_headers: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderCanary {
    pub name: String,
    pub value: String,
    pub upstream: String,
}

/// What keeps one client on one side of a split.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sticky {
    Header(String),
    Cookie(String),
    ApiKey,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderTransform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderTransform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<ByteSize>,
}

impl Plugins {
    pub fn is_empty(&self) -> bool {
        self == &Plugins::default()
    }

    /// This route's plugins over the global defaults, plugin by plugin.
    pub fn over(&self, defaults: &Plugins) -> Plugins {
        Plugins {
            key_auth: self.key_auth.clone().or_else(|| defaults.key_auth.clone()),
            jwt: self.jwt.clone().or_else(|| defaults.jwt.clone()),
            rate_limit: self
                .rate_limit
                .clone()
                .or_else(|| defaults.rate_limit.clone()),
            cors: self.cors.clone().or_else(|| defaults.cors.clone()),
            request_headers: self
                .request_headers
                .clone()
                .or_else(|| defaults.request_headers.clone()),
            response_headers: self
                .response_headers
                .clone()
                .or_else(|| defaults.response_headers.clone()),
            max_body: self.max_body.or(defaults.max_body),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyAuth {
    #[serde(default = "KeyAuth::header")]
    pub header: String,
    /// Strip the key before forwarding (the default).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// Only these consumers may call the route; empty means any known consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

impl KeyAuth {
    fn header() -> String {
        "X-API-Key".into()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Allowed algorithms: HS256, RS256, ES256.
    #[serde(default = "JwtConfig::algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Clock skew allowed on exp and nbf.
    #[serde(default = "JwtConfig::leeway")]
    pub leeway: Dur,
    /// Refuse tokens without `exp`. False admits tokens that never expire (as Kong's jwt does
    /// unless `claims_to_verify` lists exp); an `exp` that is there is always checked.
    #[serde(
        default = "JwtConfig::require_exp",
        skip_serializing_if = "JwtConfig::is_true"
    )]
    pub require_exp: bool,
    /// HS256 shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// PEM public key for RS256/ES256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How long fetched JWKS keys are trusted before a refetch.
    #[serde(default = "JwtConfig::jwks_cache")]
    pub jwks_cache: Dur,
    /// Claim that names the consumer (for rate limits and access logs).
    #[serde(default = "JwtConfig::consumer_claim")]
    pub consumer_claim: String,
}

impl JwtConfig {
    fn algorithms() -> Vec<String> {
        vec!["HS256".into(), "RS256".into(), "ES256".into()]
    }
    fn leeway() -> Dur {
        Dur::secs(30)
    }
    fn require_exp() -> bool {
        true
    }
    fn is_true(b: &bool) -> bool {
        *b
    }
    fn jwks_cache() -> Dur {
        Dur::secs(300)
    }
    fn consumer_claim() -> String {
        "sub".into()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    /// Requests allowed at once above the steady rate. Defaults to the per-period count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default)]
    pub by: RateLimitKey,
    /// The header to key on when `by: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    #[default]
    Ip,
    Consumer,
    ApiKey,
    Header,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Explicit origins such as `https://app.example.com`; `*` only without credentials.
    pub origins: Vec<String>,
    #[serde(default = "CorsConfig::methods")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default = "CorsConfig::max_age")]
    pub max_age: Dur,
    #[serde(default, skip_serializing_if = "is_false")]
    pub credentials: bool,
}

impl CorsConfig {
    fn methods() -> Vec<String> {
        vec!["GET".into(), "HEAD".into(), "POST".into()]
    }
    fn max_age() -> Dur {
        Dur::secs(600)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderTransform {
    /// Appended, keeping any existing values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Replaces any existing values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}
