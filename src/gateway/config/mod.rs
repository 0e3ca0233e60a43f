//! Gateway config: parse the native YAML, validate it, and report every problem as
//! `FILE:LINE:COL: field.path: message`.

pub mod kong;
mod locate;
mod schema;
pub mod units;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use locate::{locate_paths, position_of};
pub use schema::*;

/// One problem in a config file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: String,
    /// 0 when the config did not come from a file's text (an admin API change).
    pub line: usize,
    pub col: usize,
    /// Dotted field path, e.g. `routes[1].split.users-green`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<root>"
        } else {
            &self.path
        };
        if self.line == 0 {
            // Not from a file (an API request's change): a position would point nowhere.
            return write!(f, "{path}: {}", self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.col, path, self.message
        )
    }
}

/// Every problem found in a config, in file order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(file: &str, message: impl Into<String>) -> Self {
        ConfigError(vec![ConfigIssue {
            file: file.to_string(),
            line: 1,
            col: 1,
            path: String::new(),
            message: message.into(),
        }])
    }
}

/// A config as read from a file, with the directory its relative paths resolve against.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: GatewayConfig,
    pub source: PathBuf,
    pub text: String,
}

impl LoadedConfig {
    /// Resolves a path written in the config relative to the config file.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.source.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single(&name, format!("cannot read config: {e}")))?;
    let config = parse_str(&text, &name)?;
    Ok(LoadedConfig {
        config,
        source: path.to_path_buf(),
        text,
    })
}

/// Parses and validates. `file` is only used in messages.
pub fn parse_str(text: &str, file: &str) -> Result<GatewayConfig, ConfigError> {
    // An inline secret is one problem among the others, not the end of the check.
    schema::with_inline_secrets_deferred(|| parse_located(text, file, validate))
}

/// Deserialises YAML into `T`, then runs `validate` over it; every problem, from the
/// parser or the validator, comes back with file, line, column and field path. Shared by
/// every YAML file signalbox reads (gateway configs, runbooks).
pub(crate) fn parse_located<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
    validate: impl FnOnce(&T) -> Vec<(String, String)>,
) -> Result<T, ConfigError> {
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            // Keep the path; the location comes from the inner error.
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = format!("@@SB@@{path}@@SB@@{}", plain_message(&inner));
            match inner.location() {
                Some(loc) => <serde_saphyr::Error as serde::de::Error>::custom(format!(
                    "{msg}@@SB@@{}@@SB@@{}",
                    loc.line(),
                    loc.column()
                )),
                None => <serde_saphyr::Error as serde::de::Error>::custom(msg),
            }
        })
    });
    let value = match parsed {
        Ok(c) => c,
        Err(e) => return Err(ConfigError(vec![syntax_issue(text, file, &e)])),
    };
    let issues = validate(&value);
    if issues.is_empty() {
        return Ok(value);
    }
    let positions = locate_paths(text);
    let mut out: Vec<ConfigIssue> = issues
        .into_iter()
        .map(|(path, message)| {
            let (line, col) = position_of(&positions, &path);
            ConfigIssue {
                file: file.to_string(),
                line,
                col,
                path,
                message,
            }
        })
        .collect();
    out.sort_by_key(|i| (i.line, i.col));
    Err(ConfigError(out))
}

/// serde-saphyr renders messages with a snippet; the one-line form is what we print.
pub(crate) fn plain_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    let first = full.lines().next().unwrap_or_default();
    // Drop a trailing " at line N column M" that serde-saphyr appends.
    let message = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    // The parser names the Rust type; say what to write instead.
    match message {
        "invalid u8" | "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
            let max = match message {
                "invalid u8" => u64::from(u8::MAX),
                "invalid u16" => u64::from(u16::MAX),
                "invalid u32" => u64::from(u32::MAX),
                _ => u64::MAX,
            };
            format!("expected a whole number from 0 to {max}")
        }
        other => other.to_string(),
    }
}

/// Turns a parse error into an issue with a position. Runbooks (`crate::walk`) reuse it.
pub(crate) fn syntax_issue(text: &str, file: &str, e: &serde_saphyr::Error) -> ConfigIssue {
    let plain = plain_message(e);
    // Our own packed form (see parse_str): @@SB@@path@@SB@@message[@@SB@@line@@SB@@col]
    if let Some(rest) = plain.split_once("@@SB@@").map(|(_, r)| r) {
        let parts: Vec<&str> = rest.split("@@SB@@").collect();
        let path = parts.first().copied().unwrap_or_default().to_string();
        let message = parts.get(1).copied().unwrap_or_default().to_string();
        let (line, col) = match (parts.get(2), parts.get(3)) {
            (Some(l), Some(c)) => (l.parse().unwrap_or(1), c.parse().unwrap_or(1)),
            _ => position_of(&locate_paths(text), &path),
        };
        let path = if path == "." { String::new() } else { path };
        return ConfigIssue {
            file: file.to_string(),
            line,
            col,
            path,
            message,
        };
    }
    let (line, col) = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((1, 1));
    ConfigIssue {
        file: file.to_string(),
        line,
        col,
        path: String::new(),
        message: plain,
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// Semantic checks that serde cannot express. Returns (field path, message) pairs.
/// More serving threads than this is a typo, not a tuning.
const MAX_WORKERS: usize = 256;

pub fn validate(c: &GatewayConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut err = |path: String, msg: String| out.push((path, msg));

    if let Err(m) = c
        .log
        .level
        .parse::<tracing_subscriber::filter::LevelFilter>()
    {
        err(
            "log.level".into(),
            format!("{m}; use error, warn, info, debug or trace"),
        );
    }

    if c.server.workers > MAX_WORKERS {
        err(
            "server.workers".into(),
            format!("at most {MAX_WORKERS} serving threads; 0 means one per CPU"),
        );
    }

    if c.admin.token.is_some() {
        err("admin.token".into(), schema::INLINE_SECRET.into());
    }
    let mut consumer_names = HashSet::new();
    for (i, consumer) in c.consumers.iter().enumerate() {
        if consumer.key.is_some() {
            err(format!("consumers[{i}].key"), schema::INLINE_SECRET.into());
        }
        for (k, key) in consumer.keys.iter().enumerate() {
            if *key == SecretRef::Inline {
                err(
                    format!("consumers[{i}].keys[{k}]"),
                    schema::INLINE_SECRET.into(),
                );
            }
        }
        if !consumer_names.insert(consumer.name.as_str()) {
            err(
                format!("consumers[{i}].name"),
                format!("duplicate consumer name {:?}", consumer.name),
            );
        }
    }

    if c.upstreams.is_empty() {
        err("upstreams".into(), "at least one upstream is needed".into());
    }
    for (name, u) in &c.upstreams {
        let base = format!("upstreams.{name}");
        if u.targets.is_empty() {
            err(
                format!("{base}.targets"),
                "at least one target (host:port) is needed".into(),
            );
        }
        for (i, t) in u.targets.iter().enumerate() {
            if let Err(m) = check_target(t) {
                err(format!("{base}.targets[{i}]"), m);
            }
        }
        if u.timeout.0.is_zero() {
            err(
                format!("{base}.timeout"),
                "must be greater than zero".into(),
            );
        }
        if u.connect_timeout.0.is_zero() {
            err(
                format!("{base}.connect_timeout"),
                "must be greater than zero".into(),
            );
        }
        if let Some(h) = &u.health
            && !h.path.starts_with('/')
        {
            err(format!("{base}.health.path"), "must start with /".into());
        }
        if u.passive.max_failures == 0 {
            err(
                format!("{base}.passive.max_failures"),
                "must be at least 1".into(),
            );
        }
    }

    let mut route_names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let base = format!("routes[{i}]");
        if r.name.is_empty() {
            err(format!("{base}.name"), "a route needs a name".into());
        } else if !route_names.insert(r.name.as_str()) {
            err(
                format!("{base}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        if r.paths.is_empty() && r.exact_paths.is_empty() {
            err(
                format!("{base}.paths"),
                "a route needs at least one path or exact path".into(),
            );
        }
        for (field, list) in [("paths", &r.paths), ("exact_paths", &r.exact_paths)] {
            for (j, p) in list.iter().enumerate() {
                if !p.starts_with('/') {
                    err(
                        format!("{base}.{field}[{j}]"),
                        format!("path {p:?} must start with /"),
                    );
                } else if p.split('/').any(|s| s == ".." || s == ".") {
                    err(
                        format!("{base}.{field}[{j}]"),
                        format!("path {p:?} has a dot segment"),
                    );
                }
            }
        }
        for (j, m) in r.methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                err(
                    format!("{base}.methods[{j}]"),
                    format!("unknown method {m:?}; use upper case, e.g. GET or POST"),
                );
            }
        }
        for name in r.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                err(
                    format!("{base}.headers.{name}"),
                    "not a valid header name".into(),
                );
            }
        }
        if r.split.is_empty() {
            err(
                format!("{base}.split"),
                "a route needs at least one upstream in its split".into(),
            );
        }
        for up in r.split.keys() {
            if !c.upstreams.contains_key(up) {
                err(
                    format!("{base}.split.{up}"),
                    format!(
                        "unknown upstream {up:?}; known: {}",
                        known(c.upstreams.keys())
                    ),
                );
            }
        }
        if !r.split.is_empty() && r.split.values().all(|w| *w == 0) {
            err(
                format!("{base}.split"),
                "all weights are zero: no traffic could be routed".into(),
            );
        }
        if r.split.values().map(|w| u64::from(*w)).sum::<u64>() > u64::from(u32::MAX) {
            err(
                format!("{base}.split"),
                "weights add up to more than 2^32".into(),
            );
        }
        if let Some(hc) = &r.canary_by_header {
            if !c.upstreams.contains_key(&hc.upstream) {
                err(
                    format!("{base}.canary_by_header.upstream"),
                    format!(
                        "unknown upstream {:?}; known: {}",
                        hc.upstream,
                        known(c.upstreams.keys())
                    ),
                );
            }
            if http::HeaderName::from_bytes(hc.name.as_bytes()).is_err() {
                err(
                    format!("{base}.canary_by_header.name"),
                    "not a valid header name".into(),
                );
            }
        }
        if let Some(c) = &r.canary
            && !r.split.contains_key(c)
        {
            err(
                format!("{base}.canary"),
                format!("the canary {c:?} must be one of the route's split upstreams"),
            );
        }
        if let Some(Sticky::Header(h) | Sticky::Cookie(h)) = &r.sticky
            && h.is_empty()
        {
            err(
                format!("{base}.sticky"),
                "name the header or cookie to stick on".into(),
            );
        }
        let plugins = r.plugins.over(&c.defaults);
        validate_plugins(&plugins, &format!("{base}.plugins"), c, &mut err);
        if matches!(r.sticky, Some(Sticky::ApiKey)) && plugins.key_auth.is_none() {
            err(
                format!("{base}.sticky"),
                "sticky by api_key needs the key_auth plugin".into(),
            );
        }
    }
    if c.routes.is_empty() {
        err("routes".into(), "at least one route is needed".into());
    }
    validate_plugins(&c.defaults, "defaults", c, &mut err);
    if c.admin.token_env.is_some() && c.admin.token_file.is_some() {
        err(
            "admin.token_file".into(),
            "give token_env or token_file, not both".into(),
        );
    }
    out
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn check_target(t: &str) -> Result<(), String> {
    let bad = || format!("target {t:?} must be host:port");
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    port.parse::<u16>().map_err(|_| bad())?;
    Ok(())
}

fn validate_plugins(
    p: &Plugins,
    base: &str,
    c: &GatewayConfig,
    err: &mut impl FnMut(String, String),
) {
    // Route-level checks are reported at the route's own field where it has one.
    if let Some(cors) = &p.cors {
        let wildcard = cors.origins.iter().any(|o| o == "*");
        if wildcard && cors.credentials {
            err(
                format!("{base}.cors.credentials"),
                "`*` origins together with credentials is not allowed by the CORS spec; list the origins".into(),
            );
        }
        for (i, o) in cors.origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                err(
                    format!("{base}.cors.origins[{i}]"),
                    format!("origin {o:?} must be `*` or scheme://host[:port]"),
                );
            }
        }
    }
    if let Some(rl) = &p.rate_limit {
        match (rl.per_second, rl.per_minute) {
            (Some(_), Some(_)) | (None, None) => err(
                format!("{base}.rate_limit"),
                "give exactly one of per_second or per_minute".into(),
            ),
            (Some(0), _) | (_, Some(0)) => err(
                format!("{base}.rate_limit"),
                "the rate must be at least 1".into(),
            ),
            _ => {}
        }
        if rl.burst == Some(0) {
            err(
                format!("{base}.rate_limit.burst"),
                "burst must be at least 1".into(),
            );
        }
        if rl.by == RateLimitKey::Header && rl.header.is_none() {
            err(
                format!("{base}.rate_limit.header"),
                "`by: header` needs `header: NAME`".into(),
            );
        }
    }
    if let Some(ka) = &p.key_auth {
        if http::HeaderName::from_bytes(ka.header.as_bytes()).is_err() {
            err(
                format!("{base}.key_auth.header"),
                "not a valid header name".into(),
            );
        }
        let names: BTreeSet<&str> = c.consumers.iter().map(|c| c.name.as_str()).collect();
        for (i, a) in ka.allow.iter().enumerate() {
            if !names.contains(a.as_str()) {
                err(
                    format!("{base}.key_auth.allow[{i}]"),
                    format!("unknown consumer {a:?}"),
                );
            }
        }
    }
    if let Some(j) = &p.jwt {
        if j.secret == Some(SecretRef::Inline) {
            err(format!("{base}.jwt.secret"), schema::INLINE_SECRET.into());
        }
        for (i, a) in j.algorithms.iter().enumerate() {
            if !["HS256", "RS256", "ES256"].contains(&a.as_str()) {
                err(
                    format!("{base}.jwt.algorithms[{i}]"),
                    format!("unsupported algorithm {a:?}; use HS256, RS256 or ES256"),
                );
            }
        }
        if j.secret.is_none()
            && j.public_key_file.is_none()
            && j.jwks_file.is_none()
            && j.jwks_url.is_none()
        {
            err(
                format!("{base}.jwt"),
                "give a key source: secret, public_key_file, jwks_file or jwks_url".into(),
            );
        }
    }
    for (field, t) in [
        ("request_headers", &p.request_headers),
        ("response_headers", &p.response_headers),
    ] {
        let Some(t) = t else { continue };
        for name in t.add.keys().chain(t.set.keys()).chain(t.remove.iter()) {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                err(
                    format!("{base}.{field}"),
                    format!("{name:?} is not a valid header name"),
                );
            }
        }
        for (name, v) in t.add.iter().chain(t.set.iter()) {
            if http::HeaderValue::from_str(v).is_err() {
                err(
                    format!("{base}.{field}.{name}"),
                    "not a valid header value".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
listen: 127.0.0.1:8080
upstreams:
  blue: { targets: [127.0.0.1:9001], timeout: 2s }
  green: { targets: [127.0.0.1:9002] }
routes:
  - name: users
    paths: [/api/users]
    split: { blue: 100, green: 0 }
";

    fn errors(text: &str) -> Vec<String> {
        parse_str(text, "gw.yaml")
            .unwrap_err()
            .0
            .iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn a_good_config_parses() {
        let c = parse_str(GOOD, "gw.yaml").unwrap();
        assert_eq!(c.routes[0].split["blue"], 100);
        assert_eq!(c.upstreams["blue"].timeout, units::Dur::secs(2));
        assert_eq!(c.upstreams["green"].timeout, units::Dur::secs(30));
    }

    #[test]
    fn unknown_field_has_position_and_path() {
        let text = GOOD.replace("    paths:", "    pathz: [/x]\n    paths:");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("gw.yaml:7:5: routes[0]"), "{}", e[0]);
        assert!(e[0].contains("pathz"), "{}", e[0]);
    }

    #[test]
    fn a_negative_weight_says_what_to_write() {
        let text = GOOD.replace("green: 0 }", "green: -5 }");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].ends_with("routes[0].split.green: expected a whole number from 0 to 4294967295"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn unknown_upstream_in_split() {
        let text = GOOD.replace("green: 0 }", "green: 0, red: 5 }");
        let e = errors(&text);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("gw.yaml:8:35: routes[0].split.red: unknown upstream \"red\""),
            "{}",
            e[0]
        );
    }

    #[test]
    fn zero_weights_duplicates_and_cors() {
        let text = format!(
            "{}  - name: users\n    paths: [/b]\n    split: {{ blue: 0 }}\n    plugins:\n      cors: {{ origins: ['*'], credentials: true }}\n",
            GOOD
        );
        let e = errors(&text);
        assert!(
            e.iter()
                .any(|m| m.contains("gw.yaml:9:5: routes[1].name: duplicate route name")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[1].split: all weights are zero")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[1].plugins.cors.credentials")),
            "{e:?}"
        );
    }

    #[test]
    fn absurd_worker_count_is_rejected() {
        let text = GOOD.replacen("routes:", "server:\n  workers: 10000\nroutes:", 1);
        let e = errors(&text);
        assert!(
            e.iter()
                .any(|m| m.contains("server.workers: at most 256 serving threads")),
            "{e:?}"
        );
        let ok = GOOD.replacen("routes:", "server:\n  workers: 3\nroutes:", 1);
        assert_eq!(parse_str(&ok, "gw.yaml").unwrap().server.workers, 3);
    }

    #[test]
    fn inline_secret_is_rejected() {
        let text = format!("consumers:\n  - name: alice\n    keys: [sekrit-value]\n{GOOD}");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("consumers[0].keys[0]"), "{}", e[0]);
        assert!(e[0].contains("must not be written inline"), "{}", e[0]);
        assert!(
            !e[0].contains("sekrit-value"),
            "the secret leaked: {}",
            e[0]
        );
        assert!(e[0].starts_with("gw.yaml:3:"), "{}", e[0]);
    }

    #[test]
    fn inline_secrets_are_reported_with_every_other_problem() {
        let text = format!(
            "admin: {{ token: admin-sekrit }}\nconsumers:\n  - name: alice\n    keys: [{{ env: A }}, sekrit-1]\n  - name: bob\n    key: sekrit-2\n{}",
            GOOD.replace(
                "green: 0 }",
                "green: 0, red: 5 }\n    plugins:\n      jwt: { secret: sekrit-3 }"
            )
        );
        let e = errors(&text);
        let want = [
            "gw.yaml:1:10: admin.token: secrets must not be written inline",
            "gw.yaml:4:24: consumers[0].keys[1]: secrets must not be written inline",
            "gw.yaml:6:5: consumers[1].key: secrets must not be written inline",
            "routes[0].split.red: unknown upstream \"red\"",
            "routes[0].plugins.jwt.secret: secrets must not be written inline",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for w in want {
            assert!(e.iter().any(|m| m.contains(w)), "no {w:?} in {e:#?}");
        }
        for m in &e {
            assert!(!m.contains("sekrit"), "a secret leaked: {m}");
        }
        // Outside a gateway config (the environments file's tokens) it still fails at once.
        let r: Result<SecretRef, _> = serde_json::from_value(serde_json::json!("sekrit"));
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("must not be written inline")
        );
    }

    #[test]
    fn bad_duration_and_syntax() {
        let e = errors(&GOOD.replace("timeout: 2s", "timeout: soon"));
        assert!(e[0].contains("upstreams.blue.timeout"), "{}", e[0]);
        assert!(e[0].contains("invalid duration"), "{}", e[0]);
        let e = errors("routes: [\n");
        assert!(e[0].starts_with("gw.yaml:"), "{}", e[0]);
    }
}
