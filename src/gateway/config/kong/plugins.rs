//! One Kong plugin instance → at most one native plugin, plus warnings for whatever does
//! not carry over. Each mapper reads every config field it understands; the caller reports
//! the rest, so nothing is dropped without a word.

use std::collections::{BTreeMap, BTreeSet};

use super::KongError;
use super::value::Obj;
use crate::gateway::config::units::{ByteSize, Dur};
use crate::gateway::config::{
    CorsConfig, HeaderTransform, JwtConfig, KeyAuth, RateLimitConfig, RateLimitKey, SecretRef,
};

/// What a plugin instance becomes.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Mapped {
    Slot(Slot),
    /// Restricts which consumers may call the route (Kong's `acl`).
    Access(Access),
    /// Nothing to configure: either signalbox does it anyway or it was dropped with a warning.
    Nothing,
    /// The route cannot be served as Kong served it without widening access; it is left out.
    Block(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Slot {
    KeyAuth(KeyAuth),
    Jwt(JwtConfig),
    RateLimit(RateLimitConfig),
    Cors(CorsConfig),
    RequestHeaders(HeaderTransform),
    ResponseHeaders(HeaderTransform),
    MaxBody(ByteSize),
}

impl Slot {
    pub fn field(&self) -> &'static str {
        match self {
            Slot::KeyAuth(_) => "key_auth",
            Slot::Jwt(_) => "jwt",
            Slot::RateLimit(_) => "rate_limit",
            Slot::Cors(_) => "cors",
            Slot::RequestHeaders(_) => "request_headers",
            Slot::ResponseHeaders(_) => "response_headers",
            Slot::MaxBody(_) => "max_body",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Access {
    /// Only these consumers (None: no allow list).
    pub allow: Option<BTreeSet<String>>,
    pub deny: BTreeSet<String>,
    /// Kong rejects unauthenticated requests outright (acl does; a consumer ban does not).
    pub requires_consumer: bool,
}

/// The one JWT credential the native `jwt` plugin can verify against.
#[derive(Clone, Debug)]
pub(super) struct JwtKey {
    pub consumer: String,
    /// Kong's credential `key`, matched against the `key_claim_name` claim.
    pub kong_key: String,
    pub algorithm: String,
    pub secret: Option<SecretRef>,
    pub public_key_file: Option<std::path::PathBuf>,
}

/// What plugin mappers need to know about the rest of the file.
pub(super) struct Env<'a> {
    /// Consumer name → ACL groups.
    pub groups: &'a BTreeMap<String, BTreeSet<String>>,
    pub jwt_key: Option<&'a JwtKey>,
    pub jwt_defaults: &'a JwtConfig,
    pub cors_defaults: &'a CorsConfig,
}

/// Kong plugins that decide who may call a route. Without them a route would be open to
/// callers Kong turned away, so a route that needs one signalbox lacks is left out.
const ACCESS_PLUGINS: &[&str] = &[
    "basic-auth",
    "hmac-auth",
    "oauth2",
    "oauth2-introspection",
    "ldap-auth",
    "ldap-auth-advanced",
    "openid-connect",
    "mtls-auth",
    "header-cert-auth",
    "key-auth-enc",
    "vault-auth",
    "saml",
    "jwe-decrypt",
    "opa",
    "ip-restriction",
    "bot-detection",
    "request-termination",
];

pub(super) fn is_access_plugin(name: &str) -> bool {
    ACCESS_PLUGINS.contains(&name)
}

/// Maps one plugin's `config`. `label` names the instance in warnings, e.g.
/// `plugin rate-limiting on route "users"`.
pub(super) fn map(
    name: &str,
    label: &str,
    cfg: &Obj<'_>,
    env: &Env<'_>,
    warn: &mut Vec<String>,
) -> Result<Mapped, KongError> {
    let m = match name {
        "key-auth" => key_auth(label, cfg, warn)?,
        "jwt" => jwt(label, cfg, env, warn)?,
        "rate-limiting" => rate_limiting(label, cfg, warn)?,
        "rate-limiting-advanced" => rate_limiting_advanced(label, cfg, warn)?,
        "cors" => cors(label, cfg, env, warn)?,
        "request-transformer" => transformer(label, cfg, true, warn)?,
        "response-transformer" => transformer(label, cfg, false, warn)?,
        "request-size-limiting" => size_limit(label, cfg, warn)?,
        "correlation-id" => correlation_id(label, cfg, warn)?,
        "acl" => acl(cfg, env)?,
        n if is_access_plugin(n) => {
            cfg.ignore_where(|_| true);
            Mapped::Block(format!(
                "{label}: signalbox cannot enforce {n}; serving the route without it would \
                 let in callers Kong turned away"
            ))
        }
        "pre-function" | "post-function" | "serverless-functions" => {
            cfg.ignore_where(|_| true);
            warn.push(format!(
                "{label}: Lua code is not run by signalbox; dropped. If it checked access, \
                 the route is now open: review it"
            ));
            Mapped::Nothing
        }
        "prometheus" => {
            cfg.ignore_where(|_| true);
            warn.push(format!(
                "{label}: dropped; signalbox always serves Prometheus metrics at /metrics on \
                 the admin listener"
            ));
            Mapped::Nothing
        }
        _ => {
            cfg.ignore_where(|_| true);
            warn.push(format!("{label}: signalbox has no {name} plugin; dropped"));
            Mapped::Nothing
        }
    };
    Ok(m)
}

fn header_name(cfg: &Obj<'_>, field: &str, name: &str) -> Result<(), KongError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| cfg.err(field, format!("{name:?} is not a valid header name")))
}

fn key_auth(label: &str, cfg: &Obj<'_>, warn: &mut Vec<String>) -> Result<Mapped, KongError> {
    let names = cfg.strs("key_names")?;
    let names = if cfg.has("key_names") {
        names
    } else {
        vec!["apikey"]
    };
    let Some(first) = names.first() else {
        return Err(cfg.err("key_names", "needs at least one name"));
    };
    for (i, n) in names.iter().enumerate() {
        header_name(cfg, &format!("key_names[{i}]"), n)?;
    }
    if names.len() > 1 {
        warn.push(format!(
            "{label}: only the first key name ({first}) is read; keys sent as {} are refused",
            names[1..].join(", ")
        ));
    }
    if cfg.bool("key_in_header")? == Some(false) {
        warn.push(format!(
            "{label}: Kong read keys only from the query or body (key_in_header: false); \
             signalbox reads them from the {first} header only"
        ));
    }
    if cfg.bool("key_in_query")?.unwrap_or(true) {
        warn.push(format!(
            "{label}: keys in the query string (?{first}=...) are not accepted; clients must \
             send the {first} header"
        ));
    }
    if cfg.bool("key_in_body")? == Some(true) {
        warn.push(format!(
            "{label}: keys in the request body are not accepted"
        ));
    }
    if cfg.str("anonymous")?.is_some() {
        warn.push(format!(
            "{label}: `anonymous` is not supported; requests without a valid key get 401 \
             instead of passing as the anonymous consumer"
        ));
    }
    if cfg.bool("run_on_preflight")? == Some(false) {
        warn.push(format!(
            "{label}: run_on_preflight: false is not supported; OPTIONS requests need a key too"
        ));
    }
    cfg.ignore(&["realm"]);
    Ok(Mapped::Slot(Slot::KeyAuth(KeyAuth {
        header: first.to_string(),
        hide_credentials: cfg.bool("hide_credentials")?.unwrap_or(false),
        allow: Vec::new(),
    })))
}

fn jwt(
    label: &str,
    cfg: &Obj<'_>,
    env: &Env<'_>,
    warn: &mut Vec<String>,
) -> Result<Mapped, KongError> {
    let uri_params = if cfg.has("uri_param_names") {
        cfg.strs("uri_param_names")?
    } else {
        vec!["jwt"]
    };
    if !uri_params.is_empty() {
        warn.push(format!(
            "{label}: tokens in the query string (?{}=...) are not accepted; clients must send \
             Authorization: Bearer",
            uri_params.join("=, ?")
        ));
    }
    let cookies = cfg.strs("cookie_names")?;
    if !cookies.is_empty() {
        warn.push(format!(
            "{label}: tokens in cookies ({}) are not accepted",
            cookies.join(", ")
        ));
    }
    let headers = cfg.strs("header_names")?;
    if headers
        .iter()
        .any(|h| !h.eq_ignore_ascii_case("authorization"))
    {
        warn.push(format!(
            "{label}: tokens are read from Authorization only, not from {}",
            headers.join(", ")
        ));
    }
    let claim = cfg.str("key_claim_name")?.unwrap_or("iss");
    let verify = cfg.strs("claims_to_verify")?;
    if cfg.bool("secret_is_base64")? == Some(true) {
        warn.push(format!(
            "{label}: secret_is_base64 is not supported; the secret is used as written, so \
             tokens signed with the decoded secret are refused"
        ));
    }
    if cfg.u64("maximum_expiration")?.unwrap_or(0) > 0 {
        warn.push(format!("{label}: maximum_expiration is not enforced"));
    }
    if cfg.str("anonymous")?.is_some() {
        warn.push(format!(
            "{label}: `anonymous` is not supported; requests without a valid token get 401"
        ));
    }
    if cfg.bool("run_on_preflight")? == Some(false) {
        warn.push(format!(
            "{label}: run_on_preflight: false is not supported; OPTIONS requests need a token too"
        ));
    }
    cfg.ignore(&["realm"]);
    let Some(key) = env.jwt_key else {
        return Ok(Mapped::Block(format!(
            "{label}: no consumer has a jwt credential signalbox can verify, so Kong's \
             route only admitted tokens signalbox would have to refuse"
        )));
    };
    for c in &verify {
        if !["exp", "nbf"].contains(c) {
            return Err(cfg.err(
                "claims_to_verify",
                format!("unknown claim {c:?}; Kong knows exp and nbf"),
            ));
        }
    }
    // Kong checks only the listed claims, and refuses a token without one it lists;
    // signalbox checks exp and nbf whenever a token has them, and requires only exp.
    let (exp, nbf) = (verify.contains(&"exp"), verify.contains(&"nbf"));
    let refused = match (exp, nbf) {
        (false, false) => Some("expired and not-yet-valid tokens"),
        (false, true) => Some("expired tokens"),
        (true, false) => Some("not-yet-valid tokens"),
        (true, true) => None,
    };
    if let Some(refused) = refused {
        let checked = match (exp, nbf) {
            (false, false) => "neither exp nor nbf",
            (false, _) => "nbf but not exp",
            _ => "exp but not nbf",
        };
        warn.push(format!(
            "{label}: Kong checked {checked} (claims_to_verify); signalbox checks both \
             whenever a token has them, so it refuses {refused} that Kong admitted"
        ));
    }
    if nbf {
        warn.push(format!(
            "{label}: Kong refused tokens without nbf; signalbox admits them (it checks nbf \
             only when a token has it)"
        ));
    }
    let issuer = if claim == "iss" {
        Some(key.kong_key.clone())
    } else {
        warn.push(format!(
            "{label}: key_claim_name {claim:?} is not checked; signalbox can only check `iss`"
        ));
        None
    };
    warn.push(format!(
        "{label}: signalbox takes the consumer name from the token's `sub` claim; Kong used \
         the credential's consumer ({})",
        key.consumer
    ));
    Ok(Mapped::Slot(Slot::Jwt(JwtConfig {
        algorithms: vec![key.algorithm.clone()],
        issuer,
        // Kong allows no clock skew.
        leeway: Dur::secs(0),
        // Kong admits a token without exp unless claims_to_verify lists it.
        require_exp: exp,
        secret: key.secret.clone(),
        public_key_file: key.public_key_file.clone(),
        ..env.jwt_defaults.clone()
    })))
}

/// Maps Kong's `limit_by` / `identifier` to the native key.
fn limit_key(
    label: &str,
    cfg: &Obj<'_>,
    by: &str,
    warn: &mut Vec<String>,
) -> Result<(RateLimitKey, Option<String>), KongError> {
    Ok(match by {
        "consumer" => (RateLimitKey::Consumer, None),
        "credential" => (RateLimitKey::ApiKey, None),
        "ip" => (RateLimitKey::Ip, None),
        "header" => {
            let Some(h) = cfg.str("header_name")? else {
                return Err(cfg.err("header_name", "limit by header needs header_name"));
            };
            header_name(cfg, "header_name", h)?;
            (RateLimitKey::Header, Some(h.to_string()))
        }
        "consumer-group" => {
            warn.push(format!(
                "{label}: limits by consumer group are applied per consumer instead"
            ));
            (RateLimitKey::Consumer, None)
        }
        "service" | "path" => {
            warn.push(format!(
                "{label}: Kong counted all callers of the {by} together; signalbox cannot, so \
                 the limit applies per client IP (more permissive)"
            ));
            (RateLimitKey::Ip, None)
        }
        other => {
            return Err(cfg.err(
                "limit_by",
                format!("unknown value {other:?}; Kong knows consumer, credential, ip, header, service, path"),
            ));
        }
    })
}

struct Window {
    limit: u64,
    secs: u64,
    name: String,
}

/// Kong's fixed windows → one native token bucket. The bucket refills at the tightest
/// long-run rate and holds as many tokens as the smallest window allows, which keeps the
/// same worst case (twice a window's limit across a window boundary) as Kong.
fn bucket(
    label: &str,
    windows: &[Window],
    by: (RateLimitKey, Option<String>),
    warn: &mut Vec<String>,
) -> RateLimitConfig {
    // Tightest rate: smallest limit/secs, compared without division.
    let mut tight = &windows[0];
    for w in &windows[1..] {
        if u128::from(w.limit) * u128::from(tight.secs)
            < u128::from(tight.limit) * u128::from(w.secs)
        {
            tight = w;
        }
    }
    let burst_cap = windows.iter().map(|w| w.limit).min().unwrap_or(tight.limit);
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).max(1);
    // Keep Kong's own unit when it has a native one, so the YAML reads like the Kong file.
    let (per_second, per_minute, period_count, exact) = if tight.secs == 60 {
        let n = clamp(tight.limit);
        (None, Some(n), n, true)
    } else if tight.limit.is_multiple_of(tight.secs) {
        let n = clamp(tight.limit / tight.secs);
        (Some(n), None, n, true)
    } else {
        let scaled = u128::from(tight.limit) * 60;
        let secs = u128::from(tight.secs);
        let n = clamp(u64::try_from(scaled.div_ceil(secs)).unwrap_or(u64::MAX));
        (None, Some(n), n, scaled % secs == 0)
    };
    let burst = clamp(burst_cap);
    let cfg = RateLimitConfig {
        per_second,
        per_minute,
        burst: (burst != period_count).then_some(burst),
        by: by.0,
        header: by.1,
    };
    let kong = windows
        .iter()
        .map(|w| format!("{}={}", w.name, w.limit))
        .collect::<Vec<_>>()
        .join(", ");
    let rate = match (cfg.per_second, cfg.per_minute) {
        (Some(n), _) => format!("per_second: {n}"),
        (_, Some(n)) => format!("per_minute: {n}"),
        _ => String::new(),
    };
    let single_native_window =
        windows.len() == 1 && (tight.secs == 1 || tight.secs == 60) && cfg.burst.is_none();
    if !single_native_window {
        let how = if exact && windows.len() == 1 {
            "the same long-run rate"
        } else {
            "an approximation"
        };
        warn.push(format!(
            "{label}: Kong's fixed windows ({kong}) become one token bucket, {rate}{} ({how})",
            cfg.burst
                .map(|b| format!(", burst: {b}"))
                .unwrap_or_default()
        ));
    }
    cfg
}

fn policy_and_response(
    label: &str,
    cfg: &Obj<'_>,
    policy_key: &str,
    warn: &mut Vec<String>,
) -> Result<(), KongError> {
    let policy = cfg.str(policy_key)?.unwrap_or("local");
    if policy != "local" {
        warn.push(format!(
            "{label}: {policy_key} {policy:?} becomes local: each signalbox instance counts on \
             its own, so N instances allow N times the limit"
        ));
    }
    if cfg.u64("error_code")?.is_some_and(|c| c != 429)
        || cfg
            .str("error_message")?
            .is_some_and(|m| m != "API rate limit exceeded")
    {
        warn.push(format!(
            "{label}: the custom error response is not kept; signalbox answers 429"
        ));
    }
    if cfg.bool("hide_client_headers")? == Some(true) {
        warn.push(format!(
            "{label}: hide_client_headers is not supported; rate limit headers are sent"
        ));
    }
    // Tuning for the shared counter stores, moot once counting is local.
    cfg.ignore_where(|k| {
        k.starts_with("redis")
            || [
                "fault_tolerant",
                "sync_rate",
                "namespace",
                "dictionary_name",
                "retry_after_jitter_max",
                "disable_penalty",
            ]
            .contains(&k)
    });
    Ok(())
}

fn rate_limiting(label: &str, cfg: &Obj<'_>, warn: &mut Vec<String>) -> Result<Mapped, KongError> {
    const UNITS: [(&str, u64); 6] = [
        ("second", 1),
        ("minute", 60),
        ("hour", 3_600),
        ("day", 86_400),
        ("month", 2_592_000),
        ("year", 31_536_000),
    ];
    let mut windows = Vec::new();
    for (name, secs) in UNITS {
        let Some(n) = cfg.f64(name)? else { continue };
        // Kong takes fractional limits; a fraction of a request rounds down.
        let limit = n.floor() as u64;
        if limit == 0 {
            return Err(cfg.err(name, "a limit must be at least 1"));
        }
        windows.push(Window {
            limit,
            secs,
            name: name.into(),
        });
    }
    if windows.is_empty() {
        return Err(cfg.err(
            "",
            "set at least one of second, minute, hour, day, month, year",
        ));
    }
    let by = cfg.str("limit_by")?.unwrap_or("consumer");
    let key = limit_key(label, cfg, by, warn)?;
    cfg.ignore(&["path"]);
    policy_and_response(label, cfg, "policy", warn)?;
    Ok(Mapped::Slot(Slot::RateLimit(bucket(
        label, &windows, key, warn,
    ))))
}

fn rate_limiting_advanced(
    label: &str,
    cfg: &Obj<'_>,
    warn: &mut Vec<String>,
) -> Result<Mapped, KongError> {
    let limits = cfg.u64s("limit")?;
    let sizes = cfg.u64s("window_size")?;
    if limits.is_empty() || limits.len() != sizes.len() {
        return Err(cfg.err("window_size", "needs one window_size per limit"));
    }
    let mut windows = Vec::new();
    for (i, (limit, secs)) in limits.iter().zip(&sizes).enumerate() {
        if *limit == 0 || *secs == 0 {
            return Err(cfg.err(
                &format!("limit[{i}]"),
                "limits and window sizes must be at least 1",
            ));
        }
        windows.push(Window {
            limit: *limit,
            secs: *secs,
            name: format!("{secs}s"),
        });
    }
    if cfg.str("window_type")?.unwrap_or("sliding") == "sliding" {
        warn.push(format!(
            "{label}: sliding windows are approximated by a token bucket"
        ));
    }
    let by = cfg.str("identifier")?.unwrap_or("consumer");
    let key = limit_key(label, cfg, by, warn)?;
    if cfg.bool("enforce_consumer_groups")? == Some(true)
        || !cfg.strs("consumer_groups")?.is_empty()
    {
        warn.push(format!(
            "{label}: per consumer group limits are not supported; dropped"
        ));
    }
    cfg.ignore(&["path"]);
    policy_and_response(label, cfg, "strategy", warn)?;
    Ok(Mapped::Slot(Slot::RateLimit(bucket(
        label, &windows, key, warn,
    ))))
}

/// Kong treats an origin as a regular expression unless it is `*` or made only of these.
fn plain_origin(o: &str) -> bool {
    o.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".:/-".contains(c))
}

fn cors(
    label: &str,
    cfg: &Obj<'_>,
    env: &Env<'_>,
    warn: &mut Vec<String>,
) -> Result<Mapped, KongError> {
    let raw = cfg.strs("origins")?;
    let mut origins = Vec::new();
    if raw.is_empty() {
        origins.push("*".to_string());
    }
    for o in raw {
        if o == "*" || (plain_origin(o) && (o.starts_with("http://") || o.starts_with("https://")))
        {
            origins.push(o.trim_end_matches('/').to_string());
        } else if plain_origin(o) {
            warn.push(format!(
                "{label}: origin {o:?} has no scheme, so it never matched a browser's Origin; dropped"
            ));
        } else {
            warn.push(format!(
                "{label}: origin {o:?} is a regular expression, which signalbox does not support; \
                 dropped (list the origins explicitly)"
            ));
        }
    }
    let mut credentials = cfg.bool("credentials")?.unwrap_or(false);
    if credentials && origins.iter().any(|o| o == "*") {
        warn.push(format!(
            "{label}: Kong answered any origin with credentials allowed; signalbox refuses `*` \
             with credentials, so credentials are turned off (list the origins to keep them)"
        ));
        credentials = false;
    }
    if origins.is_empty() {
        warn.push(format!(
            "{label}: no origin could be kept, so the plugin is dropped and browsers refuse \
             cross-origin calls"
        ));
        for k in [
            "methods",
            "headers",
            "exposed_headers",
            "max_age",
            "preflight_continue",
            "private_network",
        ] {
            cfg.get(k);
        }
        return Ok(Mapped::Nothing);
    }
    let methods = if cfg.has("methods") {
        cfg.strs("methods")?
            .into_iter()
            .map(str::to_ascii_uppercase)
            .collect()
    } else {
        [
            "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ]
        .map(String::from)
        .to_vec()
    };
    let list = |k: &str| -> Result<Vec<String>, KongError> {
        let v = cfg.strs(k)?;
        for (i, h) in v.iter().enumerate() {
            header_name(cfg, &format!("{k}[{i}]"), h)?;
        }
        Ok(v.into_iter().map(String::from).collect())
    };
    let headers = list("headers")?;
    if headers.is_empty() {
        warn.push(format!(
            "{label}: Kong allowed any request header in preflights (no `headers` list); \
             signalbox allows only listed headers, and none are listed"
        ));
    }
    let expose_headers = list("exposed_headers")?;
    let max_age = match cfg.f64("max_age")? {
        Some(s) => Dur::secs(s.round() as u64),
        None => env.cors_defaults.max_age,
    };
    if cfg.bool("preflight_continue")? == Some(true) {
        warn.push(format!(
            "{label}: preflight_continue is not supported; signalbox answers preflights itself"
        ));
    }
    if cfg.bool("private_network")? == Some(true) {
        warn.push(format!("{label}: private_network is not supported"));
    }
    cfg.ignore(&["allow_origin_absent"]);
    Ok(Mapped::Slot(Slot::Cors(CorsConfig {
        origins,
        methods,
        headers,
        expose_headers,
        max_age,
        credentials,
    })))
}

/// Header names whose values are usually credentials. signalbox header transforms hold
/// literal values only, so such a value would land in the config file in clear.
fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ]
    .contains(&n.as_str())
        || [
            "token",
            "secret",
            "password",
            "passwd",
            "apikey",
            "api-key",
            "api_key",
            "credential",
            "signature",
            "session",
        ]
        .iter()
        .any(|w| n.contains(w))
}

/// Splits Kong's `name:value`; returns None (after a warning) for entries that cannot be kept.
fn header_pair<'a>(
    label: &str,
    field: &str,
    entry: &'a str,
    warn: &mut Vec<String>,
) -> Option<(&'a str, &'a str)> {
    let Some((name, value)) = entry.split_once(':') else {
        warn.push(format!(
            "{label}: {field} entry without `name:value`; dropped"
        ));
        return None;
    };
    let (name, value) = (name.trim(), value.trim());
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        warn.push(format!(
            "{label}: {field}: {name:?} is not a valid header name; dropped"
        ));
        return None;
    }
    if looks_secret(name) {
        warn.push(format!(
            "{label}: {field}: header {name} may carry a credential and signalbox header rules \
             can only hold literal values (which would put it in the config in clear); dropped. \
             Give the upstream its credential another way"
        ));
        return None;
    }
    if value.contains("$(") {
        warn.push(format!(
            "{label}: {field}: header {name} uses a Kong template, which signalbox does not \
             evaluate; dropped"
        ));
        return None;
    }
    if http::HeaderValue::from_str(value).is_err() {
        warn.push(format!(
            "{label}: {field}: header {name} has an invalid value; dropped"
        ));
        return None;
    }
    Some((name, value))
}

fn transformer(
    label: &str,
    cfg: &Obj<'_>,
    request: bool,
    warn: &mut Vec<String>,
) -> Result<Mapped, KongError> {
    let mut t = HeaderTransform::default();
    let put = |map: &mut BTreeMap<String, String>,
               field: &str,
               name: &str,
               value: &str,
               warn: &mut Vec<String>| {
        match map.entry(name.to_ascii_lowercase()) {
            std::collections::btree_map::Entry::Occupied(_) => warn.push(format!(
                "{label}: {field}: header {name} appears more than once; only the first value \
                 is kept"
            )),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(value.to_string());
            }
        }
    };
    for op in ["remove", "rename", "replace", "add", "append"] {
        let Some(o) = cfg.obj(op)? else { continue };
        let headers = o.strs("headers")?;
        match op {
            "remove" => {
                for (i, h) in headers.iter().enumerate() {
                    // Kong's remove takes names; response-transformer also takes `name:value`.
                    let name = h.split_once(':').map_or(*h, |(n, _)| n).trim();
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        warn.push(format!(
                            "{label}: remove.headers[{i}] is not a valid header name; dropped"
                        ));
                    } else if !t.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                        t.remove.push(name.to_ascii_lowercase());
                    }
                }
            }
            "rename" if !headers.is_empty() => warn.push(format!(
                "{label}: rename.headers is not supported (signalbox cannot copy a header's \
                 value); dropped"
            )),
            "replace" | "add" | "append" => {
                let field = format!("{op}.headers");
                let mut kept = Vec::new();
                for h in &headers {
                    let Some((name, value)) = header_pair(label, &field, h, warn) else {
                        continue;
                    };
                    let map = if op == "replace" {
                        &mut t.set
                    } else {
                        &mut t.add
                    };
                    put(map, &field, name, value, warn);
                    kept.push(name);
                }
                if op == "replace" && !kept.is_empty() {
                    warn.push(format!(
                        "{label}: replace.headers ({}): Kong changed only headers that were \
                         present; signalbox sets them always",
                        kept.join(", ")
                    ));
                }
                if op == "add" && !kept.is_empty() {
                    warn.push(format!(
                        "{label}: add.headers ({}): Kong added them only when missing; \
                         signalbox appends them to any value already there",
                        kept.join(", ")
                    ));
                }
            }
            _ => {}
        }
        for k in ["querystring", "body", "json", "json_types", "uri"] {
            match o.get(k) {
                Some(serde_json::Value::Array(a)) if a.is_empty() => {}
                Some(serde_json::Value::String(s)) if s.is_empty() => {}
                Some(_) => warn.push(format!(
                    "{label}: {op}.{k} is not supported (signalbox changes headers only); dropped"
                )),
                None => {}
            }
        }
        cfg_unread_into(label, &o, warn);
    }
    if request && cfg.str("http_method")?.is_some() {
        warn.push(format!(
            "{label}: http_method is not supported; the method is forwarded as is"
        ));
    }
    if t == HeaderTransform::default() {
        return Ok(Mapped::Nothing);
    }
    Ok(Mapped::Slot(if request {
        Slot::RequestHeaders(t)
    } else {
        Slot::ResponseHeaders(t)
    }))
}

/// Reports the unread fields of a nested object right away (the caller only sees its own).
fn cfg_unread_into(label: &str, o: &Obj<'_>, warn: &mut Vec<String>) {
    for f in o.unread() {
        warn.push(format!("{label}: config.{f} is not supported; dropped"));
    }
}

fn size_limit(label: &str, cfg: &Obj<'_>, warn: &mut Vec<String>) -> Result<Mapped, KongError> {
    let n = cfg.u64("allowed_payload_size")?.unwrap_or(128);
    let mult: u64 = match cfg.str("size_unit")?.unwrap_or("megabytes") {
        "megabytes" => 1 << 20,
        "kilobytes" => 1 << 10,
        "bytes" => 1,
        other => {
            return Err(cfg.err(
                "size_unit",
                format!("unknown unit {other:?}; Kong knows megabytes, kilobytes, bytes"),
            ));
        }
    };
    let Some(bytes) = n.checked_mul(mult) else {
        return Err(cfg.err("allowed_payload_size", "too large"));
    };
    if cfg.bool("require_content_length")? == Some(true) {
        warn.push(format!(
            "{label}: require_content_length is not supported; bodies without Content-Length \
             are counted as they stream"
        ));
    }
    Ok(Mapped::Slot(Slot::MaxBody(ByteSize(bytes))))
}

fn correlation_id(label: &str, cfg: &Obj<'_>, warn: &mut Vec<String>) -> Result<Mapped, KongError> {
    let header = cfg.str("header_name")?.unwrap_or("Kong-Request-ID");
    if !header.eq_ignore_ascii_case("x-request-id") {
        warn.push(format!(
            "{label}: signalbox always generates and forwards X-Request-ID; the {header} \
             header is no longer set"
        ));
    }
    cfg.ignore(&["generator", "echo_downstream"]);
    Ok(Mapped::Nothing)
}

fn acl(cfg: &Obj<'_>, env: &Env<'_>) -> Result<Mapped, KongError> {
    let members = |groups: &[&str]| -> BTreeSet<String> {
        env.groups
            .iter()
            .filter(|(_, g)| groups.iter().any(|x| g.contains(*x)))
            .map(|(c, _)| c.clone())
            .collect()
    };
    let allow = cfg.strs("allow")?;
    let deny = cfg.strs("deny")?;
    if allow.is_empty() && deny.is_empty() {
        return Err(cfg.err("allow", "the acl plugin needs allow or deny groups"));
    }
    cfg.ignore(&[
        "hide_groups_header",
        "include_consumer_groups",
        "always_use_authenticated_groups",
    ]);
    Ok(Mapped::Access(Access {
        allow: (!allow.is_empty()).then(|| members(&allow)),
        deny: members(&deny),
        requires_consumer: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, cfg: serde_json::Value) -> (Mapped, Vec<String>) {
        run_with(name, cfg, None)
    }

    fn run_with(
        name: &str,
        cfg: serde_json::Value,
        jwt_key: Option<&JwtKey>,
    ) -> (Mapped, Vec<String>) {
        let groups = BTreeMap::from([
            ("alice".to_string(), BTreeSet::from(["admins".to_string()])),
            ("bob".to_string(), BTreeSet::from(["users".to_string()])),
        ]);
        let jwt_defaults: JwtConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let cors_defaults: CorsConfig =
            serde_json::from_value(serde_json::json!({ "origins": [] })).unwrap();
        let env = Env {
            groups: &groups,
            jwt_key,
            jwt_defaults: &jwt_defaults,
            cors_defaults: &cors_defaults,
        };
        let o = Obj::new("plugin", "config.", &cfg).unwrap();
        let mut w = Vec::new();
        let m = map(name, "plugin x", &o, &env, &mut w).unwrap();
        for f in o.unread() {
            w.push(format!("unread {f}"));
        }
        (m, w)
    }

    fn slot(m: Mapped) -> Slot {
        match m {
            Mapped::Slot(s) => s,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    #[test]
    fn rate_limit_single_minute_is_exact() {
        let (m, w) = run(
            "rate-limiting",
            serde_json::json!({ "minute": 300, "limit_by": "ip", "policy": "local" }),
        );
        let Slot::RateLimit(rl) = slot(m) else {
            panic!()
        };
        assert_eq!(
            (rl.per_minute, rl.per_second, rl.burst, rl.by),
            (Some(300), None, None, RateLimitKey::Ip)
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn rate_limit_hour_and_second_become_one_bucket() {
        let (m, w) = run(
            "rate-limiting",
            serde_json::json!({ "second": 10, "hour": 1000 }),
        );
        let Slot::RateLimit(rl) = slot(m) else {
            panic!()
        };
        // 1000/h = 16.7/min, rounded up; bursts capped by the 10/s window.
        assert_eq!(
            (rl.per_minute, rl.burst, rl.by),
            (Some(17), Some(10), RateLimitKey::Consumer)
        );
        assert!(
            w.iter()
                .any(|m| m.contains("second=10, hour=1000") && m.contains("approximation")),
            "{w:?}"
        );
    }

    #[test]
    fn rate_limit_redis_and_header_and_service() {
        let (m, w) = run(
            "rate-limiting",
            serde_json::json!({ "second": 5, "limit_by": "header", "header_name": "X-Tenant", "policy": "redis", "redis_host": "r", "redis_port": 6379, "fault_tolerant": true }),
        );
        let Slot::RateLimit(rl) = slot(m) else {
            panic!()
        };
        assert_eq!(
            (rl.per_second, rl.by, rl.header.as_deref()),
            (Some(5), RateLimitKey::Header, Some("X-Tenant"))
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("policy \"redis\" becomes local"), "{w:?}");

        let (m, w) = run(
            "rate-limiting",
            serde_json::json!({ "day": 1440, "limit_by": "service" }),
        );
        let Slot::RateLimit(rl) = slot(m) else {
            panic!()
        };
        assert_eq!(
            (rl.per_minute, rl.burst, rl.by),
            (Some(1), Some(1440), RateLimitKey::Ip)
        );
        assert!(w.iter().any(|m| m.contains("per client IP")), "{w:?}");
    }

    #[test]
    fn rate_limit_errors() {
        let groups = BTreeMap::new();
        let jd: JwtConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let cd: CorsConfig = serde_json::from_value(serde_json::json!({ "origins": [] })).unwrap();
        let env = Env {
            groups: &groups,
            jwt_key: None,
            jwt_defaults: &jd,
            cors_defaults: &cd,
        };
        for cfg in [
            serde_json::json!({}),
            serde_json::json!({ "minute": 10, "limit_by": "header" }),
            serde_json::json!({ "minute": "ten" }),
        ] {
            let o = Obj::new("plugin rate-limiting", "config.", &cfg).unwrap();
            let e = map("rate-limiting", "x", &o, &env, &mut Vec::new())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("plugin rate-limiting: config."), "{e}");
        }
    }

    #[test]
    fn rate_limiting_advanced_windows() {
        let (m, w) = run(
            "rate-limiting-advanced",
            serde_json::json!({ "limit": [100], "window_size": [10], "identifier": "credential", "window_type": "fixed", "strategy": "local" }),
        );
        let Slot::RateLimit(rl) = slot(m) else {
            panic!()
        };
        assert_eq!(
            (rl.per_second, rl.burst, rl.by),
            (Some(10), Some(100), RateLimitKey::ApiKey)
        );
        assert!(w.iter().any(|m| m.contains("same long-run rate")), "{w:?}");
    }

    #[test]
    fn key_auth_maps_names_and_hide() {
        let (m, w) = run(
            "key-auth",
            serde_json::json!({ "key_names": ["X-API-Key", "apikey"], "hide_credentials": true, "key_in_query": false, "key_in_header": true, "key_in_body": false, "run_on_preflight": true, "anonymous": null }),
        );
        let Slot::KeyAuth(k) = slot(m) else { panic!() };
        assert_eq!((k.header.as_str(), k.hide_credentials), ("X-API-Key", true));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("keys sent as apikey are refused"), "{w:?}");
        // Kong's defaults: `apikey`, credentials forwarded, query keys accepted.
        let (m, w) = run("key-auth", serde_json::json!({}));
        let Slot::KeyAuth(k) = slot(m) else { panic!() };
        assert_eq!((k.header.as_str(), k.hide_credentials), ("apikey", false));
        assert!(w[0].contains("query string"), "{w:?}");
    }

    #[test]
    fn cors_maps_and_drops_regex_origins() {
        let (m, w) = run(
            "cors",
            serde_json::json!({ "origins": ["https://app.example.com", "https://.*\\.example\\.com"], "methods": ["get", "POST"], "headers": ["X-Token"], "exposed_headers": ["X-Request-ID"], "credentials": true, "max_age": 3600, "preflight_continue": false }),
        );
        let Slot::Cors(c) = slot(m) else { panic!() };
        assert_eq!(c.origins, ["https://app.example.com"]);
        assert_eq!(c.methods, ["GET", "POST"]);
        assert_eq!(
            (c.headers.len(), c.expose_headers.len(), c.credentials),
            (1, 1, true)
        );
        assert_eq!(c.max_age, Dur::secs(3600));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("regular expression"), "{w:?}");
        // Kong's default: any origin, all methods.
        let (m, _) = run("cors", serde_json::json!({ "credentials": true }));
        let Slot::Cors(c) = slot(m) else { panic!() };
        assert_eq!(
            (c.origins.as_slice(), c.credentials, c.methods.len()),
            (&["*".to_string()][..], false, 9)
        );
    }

    #[test]
    fn transformers_map_headers_and_warn_on_the_rest() {
        let (m, w) = run(
            "request-transformer",
            serde_json::json!({
                "http_method": null,
                "remove": { "headers": ["X-Internal"], "querystring": [], "body": [] },
                "rename": { "headers": ["a:b"], "querystring": [], "body": [] },
                "replace": { "headers": ["X-Env:prod"], "querystring": ["q:1"], "body": [], "uri": null },
                "add": { "headers": ["X-Source:gateway", "Authorization:Bearer abc123", "X-Who:$(headers.host)"], "querystring": [], "body": [] },
                "append": { "headers": ["X-Trace:a:b"], "querystring": [], "body": [] }
            }),
        );
        let Slot::RequestHeaders(t) = slot(m) else {
            panic!()
        };
        assert_eq!(t.remove, ["x-internal"]);
        assert_eq!(t.set["x-env"], "prod");
        assert_eq!(t.add["x-source"], "gateway");
        assert_eq!(t.add["x-trace"], "a:b");
        assert!(!t.add.contains_key("authorization"));
        assert!(!t.add.contains_key("x-who"));
        let all = w.join("\n");
        for needle in [
            "rename.headers",
            "replace.querystring",
            "may carry a credential",
            "template",
            "only when missing",
            "only headers that were present",
        ] {
            assert!(all.contains(needle), "{needle} missing in {all}");
        }
        assert!(
            !all.contains("abc123"),
            "a credential leaked into a warning: {all}"
        );

        let (m, w) = run(
            "response-transformer",
            serde_json::json!({ "add": { "json": ["a:1"], "headers": [] }, "remove": { "headers": ["Server"] } }),
        );
        let Slot::ResponseHeaders(t) = slot(m) else {
            panic!()
        };
        assert_eq!(t.remove, ["server"]);
        assert!(w.iter().any(|m| m.contains("add.json")), "{w:?}");
    }

    #[test]
    fn size_limit_units() {
        let (m, w) = run(
            "request-size-limiting",
            serde_json::json!({ "allowed_payload_size": 512, "size_unit": "kilobytes" }),
        );
        assert_eq!(slot(m), Slot::MaxBody(ByteSize(512 * 1024)));
        assert!(w.is_empty());
        let (m, _) = run("request-size-limiting", serde_json::json!({}));
        assert_eq!(slot(m), Slot::MaxBody(ByteSize(128 << 20)));
        let (_, w) = run(
            "request-size-limiting",
            serde_json::json!({ "require_content_length": true }),
        );
        assert!(w[0].contains("require_content_length"));
    }

    #[test]
    fn correlation_id_and_unknown_plugins() {
        let (m, w) = run(
            "correlation-id",
            serde_json::json!({ "header_name": "X-Request-ID", "generator": "uuid" }),
        );
        assert_eq!((m, w.len()), (Mapped::Nothing, 0));
        let (_, w) = run("correlation-id", serde_json::json!({}));
        assert!(w[0].contains("Kong-Request-ID"), "{w:?}");
        let (m, w) = run("proxy-cache", serde_json::json!({ "strategy": "memory" }));
        assert_eq!(m, Mapped::Nothing);
        assert_eq!(
            w,
            ["plugin x: signalbox has no proxy-cache plugin; dropped"]
        );
        let (m, _) = run(
            "basic-auth",
            serde_json::json!({ "hide_credentials": true }),
        );
        assert!(
            matches!(m, Mapped::Block(ref r) if r.contains("basic-auth")),
            "{m:?}"
        );
        let (_, w) = run("pre-function", serde_json::json!({ "access": ["return"] }));
        assert!(w[0].contains("Lua"), "{w:?}");
    }

    #[test]
    fn acl_resolves_groups_to_consumers() {
        let (m, _) = run("acl", serde_json::json!({ "allow": ["admins"] }));
        let Mapped::Access(a) = m else { panic!() };
        assert_eq!(a.allow, Some(BTreeSet::from(["alice".to_string()])));
        let (m, _) = run("acl", serde_json::json!({ "deny": ["users"] }));
        let Mapped::Access(a) = m else { panic!() };
        assert_eq!(
            (a.allow, a.deny),
            (None, BTreeSet::from(["bob".to_string()]))
        );
    }

    #[test]
    fn jwt_without_credentials_blocks() {
        let (m, _) = run("jwt", serde_json::json!({ "claims_to_verify": ["exp"] }));
        assert!(matches!(m, Mapped::Block(_)), "{m:?}");
    }

    #[test]
    fn jwt_claims_to_verify_sets_require_exp_and_the_warning_says_what_differs() {
        let key = JwtKey {
            consumer: "alice".into(),
            kong_key: "alice-iss".into(),
            algorithm: "HS256".into(),
            secret: Some(SecretRef::Env("KONG_JWT_ALICE_1".into())),
            public_key_file: None,
        };
        let jwt = |verify: serde_json::Value| {
            let (m, w) = run_with(
                "jwt",
                serde_json::json!({ "claims_to_verify": verify }),
                Some(&key),
            );
            let Slot::Jwt(j) = slot(m) else { panic!() };
            (j.require_exp, w.join("\n"))
        };
        let (require_exp, w) = jwt(serde_json::json!([]));
        assert!(!require_exp, "Kong admitted tokens without exp");
        assert!(
            w.contains("Kong checked neither exp nor nbf")
                && w.contains("refuses expired and not-yet-valid tokens that Kong admitted"),
            "{w}"
        );
        assert!(!w.contains("[]"), "{w}");
        let (require_exp, w) = jwt(serde_json::json!(["exp"]));
        assert!(require_exp);
        assert!(
            w.contains("Kong checked exp but not nbf") && w.contains("not-yet-valid tokens"),
            "{w}"
        );
        let (require_exp, w) = jwt(serde_json::json!(["exp", "nbf"]));
        assert!(require_exp);
        assert!(!w.contains("Kong checked"), "{w}");
        assert!(w.contains("Kong refused tokens without nbf"), "{w}");
    }
}
