//! Kong declarative config (`_format_version: "3.0"`, YAML or JSON) → native gateway config.
//!
//! The import is pure: text in, a [`GatewayConfig`] plus the credentials it refers to plus
//! warnings out. Three rules shape every mapping:
//! - Credentials never go into the config. Each one becomes an environment variable
//!   reference with a readable name, and its value is returned separately.
//! - Whatever cannot be carried over exactly is named in a warning: entity, field, and what
//!   signalbox does instead.
//! - Where a dropped setting would let in requests Kong turned away (an auth plugin
//!   signalbox lacks, a match condition it cannot express), the route is left out rather
//!   than served more widely.
//!
//! | Kong | native |
//! |---|---|
//! | service `url` / `protocol`,`host`,`port` | upstream named after the service |
//! | service naming a Kong upstream | its targets; one upstream per target weight, split by weight |
//! | `connect_timeout`, `read_timeout`, `retries` | `connect_timeout`, `timeout`, `retries` |
//! | upstream `healthchecks.active` / `.passive` | `health` / `passive` |
//! | route `paths` (`~` literal regex) | `paths` (`exact_paths` when anchored with `$`) |
//! | route `methods`, `hosts`, `headers` (first value) | same |
//! | `strip_path` (default on), `preserve_host` | `strip_prefix`, `preserve_host` |
//! | consumer `keyauth_credentials` | `consumers[].keys` as `{ env: KONG_KEY_<NAME>_<n> }` |
//! | `key-auth` | `key_auth` (first key name as header) |
//! | `acl`, consumer-scoped `request-termination` | `key_auth.allow` |
//! | `jwt` + one `jwt_secrets` entry | `jwt` (`secret: { env: KONG_JWT_SECRET_<NAME>_<n> }` or `public_key_file`) |
//! | `rate-limiting`, `rate-limiting-advanced` | `rate_limit` (one token bucket) |
//! | `cors` | `cors` |
//! | `request-transformer` / `response-transformer` headers | `request_headers` / `response_headers` |
//! | `request-size-limiting` | `max_body` |
//! | `correlation-id` | built in (`X-Request-ID`) |
//! | global plugins | `defaults` when identical on every route, else per route |

mod plugins;
mod value;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use serde_json::Value;

use self::plugins::{Access, Env, JwtKey, Mapped, Slot};
use self::value::{Obj, kind, reference};
use super::units::Dur;
use super::{
    Consumer, CorsConfig, GatewayConfig, HealthCheck, JwtConfig, PassiveHealth, Plugins,
    RouteConfig, SecretRef, UpstreamConfig, validate,
};
use crate::domain::Secret;
use crate::gateway::filters::jwt::MIN_HMAC_SECRET;

/// The result of an import.
#[derive(Debug)]
pub struct KongImport {
    pub config: GatewayConfig,
    /// Environment variable name → value, for every credential the config refers to.
    pub secrets: Vec<(String, Secret)>,
    /// One line per thing that did not carry over exactly. Never contains a secret.
    pub warnings: Vec<String>,
    /// Public keys (RS256/ES256 JWT credentials) the config refers to by file name. They
    /// are not secret, but must be written next to the config for it to load.
    pub public_keys: Vec<PublicKeyFile>,
    /// Variables the config reads that the import has no value for (Kong `{vault://env/…}`
    /// references): the user must set them by hand.
    pub external_env: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyFile {
    /// The path as written in the config's `public_key_file`.
    pub path: PathBuf,
    pub pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KongError {
    #[error("not a readable Kong declarative file: {0}")]
    Syntax(String),
    /// A malformed entity. `entity` names it (`service "users"`), `field` is the path in it.
    #[error("{entity}: {field}: {message}")]
    Invalid {
        entity: String,
        field: String,
        message: String,
    },
    /// Every route was left out; the warnings say why.
    #[error("no route could be imported; the warnings above say why")]
    NothingToServe { warnings: Vec<String> },
}

/// Converts a Kong declarative config.
pub fn import(text: &str) -> Result<KongImport, KongError> {
    let doc = parse_document(text)?;
    Importer::default().run(&doc)
}

fn parse_document(text: &str) -> Result<Value, KongError> {
    let body = text.trim_start_matches('\u{feff}');
    // JSON is YAML, but tab-indented JSON is not; read JSON as JSON.
    if body.trim_start().starts_with('{') {
        return serde_json::from_str(body).map_err(|e| {
            KongError::Syntax(format!(
                "invalid JSON at line {} column {} ({:?} error)",
                e.line(),
                e.column(),
                e.classify()
            ))
        });
    }
    serde_saphyr::from_str::<Value>(body).map_err(|e| {
        // Only the message and position: the snippet would echo file content.
        let e = e.without_snippet();
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or_default();
        let msg = first.split(" at line ").next().unwrap_or(first);
        match e.location() {
            Some(l) => KongError::Syntax(format!(
                "invalid YAML at line {} column {}: {msg}",
                l.line(),
                l.column()
            )),
            None => KongError::Syntax(format!("invalid YAML: {msg}")),
        }
    })
}

/// Schema defaults that the native types keep private, read the way a config file would.
fn native<T: serde::de::DeserializeOwned>(v: Value) -> T {
    // The argument is a constant in this file; `native_defaults_deserialize` covers each.
    serde_json::from_value(v).expect("native defaults deserialize")
}

fn upstream_defaults() -> UpstreamConfig {
    native(serde_json::json!({ "targets": [] }))
}

#[derive(Default)]
struct Importer {
    warnings: Vec<String>,
    consumers: Vec<KConsumer>,
    upstreams: Vec<KUpstream>,
    services: Vec<KService>,
    routes: Vec<KRoute>,
    plugins: Vec<KPlugin>,
    env_names: HashSet<String>,
    secrets: Vec<(String, Secret)>,
    public_keys: Vec<PublicKeyFile>,
    upstream_names: HashSet<String>,
    route_names: HashSet<String>,
    any_https: bool,
    /// Plugins nested in consumers, read once services and routes are known.
    consumer_plugins: Vec<(String, Value, usize)>,
    /// The consumer whose JWT credential signalbox verifies, if any.
    jwt_consumer: Option<String>,
}

struct KConsumer {
    name: String,
    refs: Vec<String>,
    keys: Vec<KKey>,
    jwt: Vec<KJwt>,
    groups: BTreeSet<String>,
}

enum KKey {
    Value(Secret),
    /// `{vault://env/NAME}`: already a reference.
    Env(String),
}

struct KJwt {
    index: usize,
    kong_key: String,
    algorithm: String,
    material: Secret,
}

struct KUpstream {
    name: String,
    refs: Vec<String>,
    label: String,
    targets: Vec<(String, u32)>,
    health: Option<HealthCheck>,
    passive: Option<PassiveHealth>,
}

struct KService {
    name: String,
    refs: Vec<String>,
    /// Native upstream name → weight.
    split: BTreeMap<String, u32>,
    upstreams: BTreeMap<String, UpstreamConfig>,
    /// Why the service cannot be served, if it cannot.
    dropped: Option<String>,
    /// Routes seen so far, for generated route names.
    routes: usize,
}

struct KRoute {
    label: String,
    service: Option<usize>,
    config: RouteConfig,
    refs: Vec<String>,
    dropped: Option<String>,
}

struct KPlugin {
    name: String,
    label: String,
    service: Option<usize>,
    route: Option<usize>,
    consumer: Option<usize>,
    /// The plugin's `config` object (an empty object when absent).
    config: Value,
    mapped: Mapped,
}

/// Native names: only what a shell variable may hold, upper case.
fn env_part(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let t = out.trim_matches('_');
    if t.is_empty() {
        "CONSUMER".into()
    } else {
        t.to_string()
    }
}

/// `base`, or `base` with a counter when the name is taken.
fn unique(taken: &mut HashSet<String>, base: &str, sep: &str) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}{sep}{n}");
        n += 1;
    }
    name
}

fn find(refs: &[Vec<String>], r: &str) -> Option<usize> {
    refs.iter().position(|names| names.iter().any(|n| n == r))
}

impl Importer {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// Reports fields of `o` that no mapping read.
    fn unread(&mut self, o: &Obj<'_>, what: &str) {
        for f in o.unread() {
            self.warnings
                .push(format!("{}: {f} is not supported; {what}", o.entity()));
        }
    }

    fn unique_upstream(&mut self, base: &str) -> String {
        unique(&mut self.upstream_names, base, "-")
    }

    fn unique_env(&mut self, base: String) -> String {
        unique(&mut self.env_names, &base, "_")
    }

    fn run(mut self, doc: &Value) -> Result<KongImport, KongError> {
        let root = Obj::new("the Kong file", "", doc)?;
        match root.get("_format_version") {
            Some(Value::String(v)) if v == "3.0" => {}
            // An unquoted 3.0 in YAML is a number.
            Some(Value::Number(n)) if n.as_f64() == Some(3.0) => {}
            Some(Value::String(v)) => {
                return Err(root.err(
                    "_format_version",
                    format!(
                        "found {v:?}; only Kong declarative format \"3.0\" is supported \
                         (convert older files with `deck file convert`)"
                    ),
                ));
            }
            Some(v) => {
                return Err(root.err(
                    "_format_version",
                    format!("expected the string \"3.0\", found {}", kind(v)),
                ));
            }
            None => {
                return Err(root.err(
                    "_format_version",
                    "missing; a Kong declarative 3.0 file starts with _format_version: \"3.0\"",
                ));
            }
        }
        root.ignore(&["_transform", "_workspace", "_info", "_comment"]);

        for (i, v) in root.list("consumers")?.iter().enumerate() {
            self.consumer(i, v)?;
        }
        self.loose_credentials(&root)?;
        for (i, v) in root.list("upstreams")?.iter().enumerate() {
            self.upstream(i, v)?;
        }
        self.loose_targets(&root)?;
        for (i, v) in root.list("services")?.iter().enumerate() {
            self.service(i, v)?;
        }
        for (i, v) in root.list("routes")?.iter().enumerate() {
            self.route(&format!("routes[{i}]"), v, None)?;
        }
        for (at, v, idx) in std::mem::take(&mut self.consumer_plugins) {
            let scope = Scope {
                consumer: Some(idx),
                ..Scope::default()
            };
            self.plugin(&at, &v, scope)?;
        }
        for (i, v) in root.list("plugins")?.iter().enumerate() {
            self.plugin(&format!("plugins[{i}]"), v, Scope::default())?;
        }
        for key in ["certificates", "ca_certificates", "snis"] {
            let n = root.list(key)?.len();
            if n > 0 {
                self.warn(format!(
                    "{key}: {n} entr{} not imported; signalbox does not terminate TLS, put a \
                     TLS terminator in front of it",
                    if n == 1 { "y" } else { "ies" }
                ));
            }
        }
        for f in root.unread() {
            self.warn(format!(
                "the Kong file: top-level {f} is not supported; not imported"
            ));
        }
        if self.any_https {
            self.warn(
                "routes that accepted HTTPS: signalbox serves plain HTTP only; put a TLS \
                 terminator in front of it for HTTPS clients"
                    .into(),
            );
        }
        self.map_plugins()?;
        self.assemble()
    }

    fn consumer(&mut self, i: usize, v: &Value) -> Result<(), KongError> {
        let mut o = Obj::new(format!("consumers[{i}]"), "", v)?;
        let username = o.str("username")?;
        let custom_id = o.str("custom_id")?;
        let id = o.str("id")?;
        let Some(name) = username.or(custom_id) else {
            return Err(o.err("username", "a consumer needs a username or custom_id"));
        };
        if self.consumers.iter().any(|c| c.name == name) {
            return Err(o.err("username", format!("duplicate consumer {name:?}")));
        }
        o.set_entity(format!("consumer {name:?}"));
        o.ignore(&["tags", "created_at", "updated_at"]);
        let refs = [username, custom_id, id]
            .into_iter()
            .flatten()
            .map(String::from)
            .collect();
        let idx = self.consumers.len();
        self.consumers.push(KConsumer {
            name: name.to_string(),
            refs,
            keys: Vec::new(),
            jwt: Vec::new(),
            groups: BTreeSet::new(),
        });
        self.credentials(idx, &o, "")?;
        for (j, p) in o.list("plugins")?.iter().enumerate() {
            // They may name a service or route, which are read later.
            self.consumer_plugins
                .push((format!("consumer {name:?} plugins[{j}]"), p.clone(), idx));
        }
        if o.get("consumer_groups").is_some() {
            self.warn(format!(
                "consumer {name:?}: consumer_groups are not supported; not imported"
            ));
        }
        self.unread(&o, "not imported");
        Ok(())
    }

    /// Reads the credential lists of one consumer (nested) or of the top level (`prefix`
    /// is then empty and each item names its consumer).
    fn credentials(&mut self, idx: usize, o: &Obj<'_>, prefix: &str) -> Result<(), KongError> {
        let name = self.consumers[idx].name.clone();
        for (j, v) in o.list("keyauth_credentials")?.iter().enumerate() {
            let c = Obj::new(o.entity(), &format!("{prefix}keyauth_credentials[{j}]."), v)?;
            c.ignore(&["id", "tags", "created_at", "consumer"]);
            if c.u64("ttl")?.is_some_and(|t| t > 0) {
                self.warn(format!(
                    "consumer {name:?}: {}ttl: signalbox keys do not expire; remove the key \
                     when it should",
                    c.field("")
                ));
            }
            self.key_credential(idx, &name, &c)?;
            self.unread(&c, "ignored");
        }
        for (j, v) in o.list("jwt_secrets")?.iter().enumerate() {
            let c = Obj::new(o.entity(), &format!("{prefix}jwt_secrets[{j}]."), v)?;
            c.ignore(&["id", "tags", "created_at", "consumer"]);
            self.jwt_credential(idx, &name, j, &c)?;
            self.unread(&c, "ignored");
        }
        for (j, v) in o.list("acls")?.iter().enumerate() {
            let c = Obj::new(o.entity(), &format!("{prefix}acls[{j}]."), v)?;
            c.ignore(&["id", "tags", "created_at", "consumer"]);
            let Some(g) = c.str("group")? else {
                return Err(c.err("group", "an acl entry needs a group"));
            };
            self.consumers[idx].groups.insert(g.to_string());
            self.unread(&c, "ignored");
        }
        for key in [
            "basicauth_credentials",
            "hmacauth_credentials",
            "oauth2_credentials",
            "mtls_auth_credentials",
        ] {
            let n = o.list(key)?.len();
            if n > 0 {
                self.warn(format!(
                    "consumer {name:?}: {n} {key} not imported; signalbox supports key-auth \
                     and jwt only"
                ));
            }
        }
        Ok(())
    }

    fn key_credential(&mut self, idx: usize, name: &str, c: &Obj<'_>) -> Result<(), KongError> {
        let field = c.field("");
        let field = field.trim_end_matches('.');
        let Some(key) = c.str("key")? else {
            self.warn(format!(
                "consumer {name:?}: {field} has no key (Kong would generate a random one \
                 nobody knows); skipped"
            ));
            return Ok(());
        };
        if let Some(var) = vault_env(key) {
            self.consumers[idx].keys.push(KKey::Env(var));
            return Ok(());
        }
        if key.starts_with("{vault://") {
            self.warn(format!(
                "consumer {name:?}: {field} refers to a Kong vault other than env; skipped"
            ));
            return Ok(());
        }
        if key.is_empty() || key.chars().any(char::is_control) {
            self.warn(format!(
                "consumer {name:?}: {field} is empty or has control characters, so no \
                 client could send it in a header; skipped"
            ));
            return Ok(());
        }
        for other in &self.consumers {
            if other
                .keys
                .iter()
                .any(|k| matches!(k, KKey::Value(s) if s.expose() == key))
            {
                return Err(c.err(
                    "key",
                    format!("the same key is already used by consumer {:?}", other.name),
                ));
            }
        }
        self.consumers[idx].keys.push(KKey::Value(Secret::new(key)));
        Ok(())
    }

    fn jwt_credential(
        &mut self,
        idx: usize,
        name: &str,
        j: usize,
        c: &Obj<'_>,
    ) -> Result<(), KongError> {
        let algorithm = c.str("algorithm")?.unwrap_or("HS256");
        let kong_key = c.str("key")?;
        let secret = c.str("secret")?;
        let public = c.str("rsa_public_key")?;
        let field = c.field("");
        let field = field.trim_end_matches('.');
        let Some(kong_key) = kong_key else {
            self.warn(format!(
                "consumer {name:?}: {field} has no key (the `iss` value Kong would generate); \
                 skipped"
            ));
            return Ok(());
        };
        let material = match algorithm {
            "HS256" => secret,
            "RS256" | "ES256" => public,
            other => {
                self.warn(format!(
                    "consumer {name:?}: {field} uses {other}; signalbox verifies HS256, RS256 \
                     and ES256 only; skipped"
                ));
                return Ok(());
            }
        };
        let Some(material) = material.filter(|m| !m.is_empty()) else {
            self.warn(format!(
                "consumer {name:?}: {field} ({algorithm}) has no {}; skipped",
                if algorithm == "HS256" {
                    "secret"
                } else {
                    "rsa_public_key"
                }
            ));
            return Ok(());
        };
        // Kong takes any length; the gateway refuses to start with a short HS256 secret,
        // so importing it would make the whole output unservable.
        if algorithm == "HS256" && material.len() < MIN_HMAC_SECRET {
            self.warn(format!(
                "consumer {name:?}: {field} has an HS256 secret of {} bytes; signalbox needs at \
                 least {MIN_HMAC_SECRET} (a shorter one can be guessed offline) and would refuse \
                 to start with it; skipped, so tokens signed with it are refused. Give the \
                 credential a longer secret in Kong and import again",
                material.len()
            ));
            return Ok(());
        }
        self.consumers[idx].jwt.push(KJwt {
            index: j,
            kong_key: kong_key.to_string(),
            algorithm: algorithm.to_string(),
            material: Secret::new(material),
        });
        Ok(())
    }

    /// Credentials listed at the top level with a `consumer` reference.
    fn loose_credentials(&mut self, root: &Obj<'_>) -> Result<(), KongError> {
        for key in ["keyauth_credentials", "jwt_secrets", "acls"] {
            for (i, v) in root.list(key)?.iter().enumerate() {
                let item = Obj::new(format!("{key}[{i}]"), "", v)?;
                let Some(r) = reference(&item, "consumer")? else {
                    return Err(item.err("consumer", "missing; name the consumer it belongs to"));
                };
                let refs: Vec<Vec<String>> =
                    self.consumers.iter().map(|c| c.refs.clone()).collect();
                let Some(idx) = find(&refs, &r) else {
                    return Err(item.err("consumer", format!("unknown consumer {r:?}")));
                };
                // Wrap the item so the per-consumer reader sees a one-element list.
                let wrapped = serde_json::json!({ key: [v] });
                let o = Obj::new(
                    format!("consumer {:?}", self.consumers[idx].name),
                    "",
                    &wrapped,
                )?;
                self.credentials(idx, &o, &format!("{key}[{i}]/"))?;
            }
        }
        Ok(())
    }

    fn upstream(&mut self, i: usize, v: &Value) -> Result<(), KongError> {
        let mut o = Obj::new(format!("upstreams[{i}]"), "", v)?;
        let Some(name) = o.str("name")? else {
            return Err(o.err("name", "an upstream needs a name"));
        };
        let label = format!("upstream {name:?}");
        o.set_entity(label.clone());
        let mut refs = vec![name.to_string()];
        if let Some(id) = o.str("id")? {
            refs.push(id.to_string());
        }
        o.ignore(&["tags", "created_at", "slots", "use_srv_name"]);
        let algorithm = o.str("algorithm")?.unwrap_or("round-robin");
        let hash_on = o.str("hash_on")?.unwrap_or("none");
        o.ignore_where(|k| k.starts_with("hash_"));
        if algorithm != "round-robin" {
            let by = if hash_on == "none" {
                String::new()
            } else {
                format!(" on {hash_on}")
            };
            self.warn(format!(
                "{label}: algorithm {algorithm}{by} is not supported; signalbox balances \
                 targets its own way"
            ));
        }
        if o.str("host_header")?.is_some() {
            self.warn(format!(
                "{label}: host_header is not supported; the Host header follows the route's \
                 preserve_host"
            ));
        }
        if o.get("client_certificate").is_some() {
            self.warn(format!(
                "{label}: client_certificate is not supported (no TLS to upstreams)"
            ));
        }
        let (health, passive) = match o.obj("healthchecks")? {
            Some(h) => self.healthchecks(&label, &h)?,
            None => (None, None),
        };
        self.upstreams.push(KUpstream {
            name: name.to_string(),
            refs,
            label: label.clone(),
            targets: Vec::new(),
            health,
            passive,
        });
        let idx = self.upstreams.len() - 1;
        for (j, t) in o.list("targets")?.iter().enumerate() {
            let t = Obj::new(label.clone(), &format!("targets[{j}]."), t)?;
            self.target(idx, &t)?;
        }
        self.unread(&o, "ignored");
        Ok(())
    }

    fn target(&mut self, idx: usize, t: &Obj<'_>) -> Result<(), KongError> {
        t.ignore(&["id", "tags", "created_at", "upstream"]);
        let Some(target) = t.str("target")? else {
            return Err(t.err("target", "a target needs host:port"));
        };
        let addr = target_addr(target, 8000).map_err(|m| t.err("target", m))?;
        let weight = t.u64("weight")?.unwrap_or(100);
        let weight = u32::try_from(weight).map_err(|_| t.err("weight", "too large"))?;
        if weight > 0 {
            self.upstreams[idx].targets.push((addr, weight));
        }
        self.unread(t, "ignored");
        Ok(())
    }

    fn loose_targets(&mut self, root: &Obj<'_>) -> Result<(), KongError> {
        for (i, v) in root.list("targets")?.iter().enumerate() {
            let t = Obj::new(format!("targets[{i}]"), "", v)?;
            let Some(r) = reference(&t, "upstream")? else {
                return Err(t.err("upstream", "missing; name the upstream it belongs to"));
            };
            let refs: Vec<Vec<String>> = self.upstreams.iter().map(|u| u.refs.clone()).collect();
            let Some(idx) = find(&refs, &r) else {
                return Err(t.err("upstream", format!("unknown upstream {r:?}")));
            };
            self.target(idx, &t)?;
        }
        Ok(())
    }

    fn healthchecks(
        &mut self,
        label: &str,
        h: &Obj<'_>,
    ) -> Result<(Option<HealthCheck>, Option<PassiveHealth>), KongError> {
        h.ignore(&["threshold"]);
        let mut health = None;
        if let Some(a) = h.obj("active")? {
            a.ignore(&["concurrency", "https_verify_certificate", "https_sni"]);
            let healthy = a.obj("healthy")?;
            let unhealthy = a.obj("unhealthy")?;
            let num = |o: &Option<Obj<'_>>, k: &str| -> Result<f64, KongError> {
                Ok(match o {
                    Some(o) => o.f64(k)?.unwrap_or(0.0),
                    None => 0.0,
                })
            };
            let up_every = num(&healthy, "interval")?;
            let down_every = num(&unhealthy, "interval")?;
            let successes = num(&healthy, "successes")? as u32;
            let failures = [
                num(&unhealthy, "http_failures")?,
                num(&unhealthy, "tcp_failures")?,
                num(&unhealthy, "timeouts")?,
            ]
            .into_iter()
            .map(|f| f as u32)
            .filter(|f| *f > 0)
            .min();
            let ty = a.str("type")?.unwrap_or("http");
            let path = a.str("http_path")?.unwrap_or("/");
            let timeout = a.f64("timeout")?.unwrap_or(1.0);
            let statuses = |o: &Option<Obj<'_>>, default: &[u64]| -> Result<bool, KongError> {
                Ok(match o {
                    Some(o) if o.has("http_statuses") => o.u64s("http_statuses")? != default,
                    Some(o) => {
                        o.get("http_statuses");
                        false
                    }
                    None => false,
                })
            };
            let custom = statuses(&healthy, &[200, 302])?
                | statuses(&unhealthy, &[429, 404, 500, 501, 502, 503, 504, 505])?;
            if a.get("headers")
                .is_some_and(|v| !matches!(v, Value::Object(m) if m.is_empty()))
            {
                self.warn(format!(
                    "{label}: healthchecks.active.headers are not sent by signalbox's probes"
                ));
            }
            for o in [&healthy, &unhealthy].into_iter().flatten() {
                self.unread(o, "ignored");
            }
            self.unread(&a, "ignored");
            let interval = [up_every, down_every]
                .into_iter()
                .filter(|i| *i > 0.0)
                .fold(f64::INFINITY, f64::min);
            if interval.is_finite() && (successes > 0 || failures.is_some()) {
                if ty != "http" {
                    self.warn(format!(
                        "{label}: active {ty} health checks become plain HTTP GET {path} probes"
                    ));
                }
                if custom {
                    self.warn(format!(
                        "{label}: custom health check http_statuses are not supported; a 2xx \
                         answer is healthy"
                    ));
                }
                if up_every != down_every && up_every > 0.0 && down_every > 0.0 {
                    self.warn(format!(
                        "{label}: healthy and unhealthy probe intervals differ; signalbox \
                         probes every {interval}s"
                    ));
                }
                if !path.starts_with('/') {
                    return Err(a.err("http_path", "must start with /"));
                }
                let mut hc: HealthCheck = native(serde_json::json!({ "path": path }));
                hc.interval = Dur(std::time::Duration::from_secs_f64(interval));
                hc.timeout = Dur(std::time::Duration::from_secs_f64(timeout.max(0.001)));
                hc.healthy_threshold = successes.max(1);
                if let Some(f) = failures {
                    hc.unhealthy_threshold = f;
                }
                health = Some(hc);
            }
        }
        let mut passive = None;
        if let Some(p) = h.obj("passive")? {
            p.ignore(&["type", "healthy"]);
            if let Some(u) = p.obj("unhealthy")? {
                let mut least: Option<u32> = None;
                for k in ["http_failures", "tcp_failures", "timeouts"] {
                    let n = u.u64(k)?.unwrap_or(0);
                    if n > 0 {
                        let n = u32::try_from(n).unwrap_or(u32::MAX);
                        least = Some(least.map_or(n, |l| l.min(n)));
                    }
                }
                u.ignore(&["http_statuses"]);
                self.unread(&u, "ignored");
                if let Some(n) = least {
                    let mut ph: PassiveHealth = native(serde_json::json!({}));
                    ph.max_failures = n;
                    self.warn(format!(
                        "{label}: passively ejected targets return after {}; Kong kept them \
                         out until an active check passed",
                        ph.eject_for
                    ));
                    passive = Some(ph);
                }
            }
            self.unread(&p, "ignored");
        }
        self.unread(h, "ignored");
        Ok((health, passive))
    }

    fn service(&mut self, i: usize, v: &Value) -> Result<(), KongError> {
        let mut o = Obj::new(format!("services[{i}]"), "", v)?;
        let id = o.str("id")?;
        let name = match (o.str("name")?, id) {
            (Some(n), _) => n.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => format!("service-{}", i + 1),
        };
        let label = format!("service {name:?}");
        o.set_entity(label.clone());
        o.ignore(&["tags", "created_at", "updated_at"]);
        let mut refs = vec![name.clone()];
        if let Some(id) = id {
            refs.push(id.to_string());
        }

        let (protocol, host, port, path) = match o.str("url")? {
            Some(url) => {
                if o.has("host") || o.has("protocol") || o.has("port") || o.has("path") {
                    return Err(o.err("url", "give url or protocol/host/port/path, not both"));
                }
                parse_url(url).map_err(|m| o.err("url", m))?
            }
            None => {
                let protocol = o.str("protocol")?.unwrap_or("http").to_string();
                let Some(host) = o.str("host")? else {
                    return Err(o.err("host", "missing; a service needs url or host"));
                };
                let port = match o.u64("port")? {
                    Some(p) => u16::try_from(p).map_err(|_| o.err("port", "not a port number"))?,
                    None if protocol == "https" || protocol == "grpcs" => 443,
                    None => 80,
                };
                let path = o.str("path")?.map(String::from);
                (protocol, host.to_string(), port, path)
            }
        };
        let ms = |k: &str| -> Result<Option<Dur>, KongError> {
            match o.u64(k)? {
                Some(0) => Err(o.err(k, "must be at least 1 (milliseconds)")),
                Some(n) => Ok(Some(Dur::millis(n))),
                None => Ok(None),
            }
        };
        let connect = ms("connect_timeout")?.unwrap_or(Dur::secs(60));
        let read = ms("read_timeout")?.unwrap_or(Dur::secs(60));
        if let Some(w) = ms("write_timeout")?
            && w != Dur::secs(60)
        {
            self.warn(format!(
                "{label}: write_timeout ({w}) is not supported; signalbox bounds the time to \
                 the response headers (read_timeout) only"
            ));
        }
        let retries = o.u64("retries")?.unwrap_or(5);
        let retries = u32::try_from(retries).map_err(|_| o.err("retries", "too large"))?;
        for k in [
            "client_certificate",
            "ca_certificates",
            "tls_verify",
            "tls_verify_depth",
        ] {
            if o.get(k).is_some() {
                self.warn(format!(
                    "{label}: {k} is not supported (signalbox does not speak TLS to upstreams)"
                ));
            }
        }

        let mut dropped = None;
        if o.bool("enabled")? == Some(false) {
            dropped = Some(format!("{label} is disabled in Kong"));
        }
        match protocol.as_str() {
            "http" => {}
            "https" => self.warn(format!(
                "{label}: protocol https: signalbox connects to upstreams over plain HTTP, so \
                 {host}:{port} must accept plain HTTP or requests will fail"
            )),
            other => {
                dropped.get_or_insert(format!(
                    "{label} uses protocol {other}; signalbox proxies HTTP only"
                ));
            }
        }
        if let Some(p) = path.as_deref().filter(|p| !p.is_empty() && *p != "/") {
            self.warn(format!(
                "{label}: path {p} is not prepended to forwarded requests (signalbox forwards \
                 the request path as is, after strip_prefix)"
            ));
        }

        let base = UpstreamConfig {
            connect_timeout: connect,
            timeout: read,
            retries,
            ..upstream_defaults()
        };
        if self.services.iter().any(|s| s.name == name) {
            return Err(o.err("name", format!("duplicate service {name:?}")));
        }
        let mut split = BTreeMap::new();
        let mut upstreams = BTreeMap::new();
        if let Some(u) = self.upstreams.iter().find(|u| u.name == host) {
            let (ulabel, health, passive) = (u.label.clone(), u.health.clone(), u.passive.clone());
            // Targets of equal weight share a native pool; the pools are weighted by a split.
            let mut groups: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for (t, w) in &u.targets {
                groups.entry(*w).or_default().push(t.clone());
            }
            if groups.is_empty() {
                dropped.get_or_insert(format!(
                    "{label}: {ulabel} has no target with a weight above 0 (Kong answered 503)"
                ));
            }
            let pool = |targets: Vec<String>| UpstreamConfig {
                targets,
                health: health.clone(),
                passive: passive.clone().unwrap_or_else(|| base.passive.clone()),
                ..base.clone()
            };
            if groups.len() == 1 {
                let targets = groups.into_values().next().unwrap_or_default();
                let up = self.unique_upstream(&name);
                upstreams.insert(up.clone(), pool(targets));
                split.insert(up, 1);
            } else if !groups.is_empty() {
                let shares: Vec<u64> = groups
                    .iter()
                    .map(|(w, ts)| u64::from(*w) * ts.len() as u64)
                    .collect();
                let g = shares.iter().fold(0, |g, t| gcd(g, *t)).max(1);
                let mut parts = Vec::new();
                for ((w, ts), share) in groups.into_iter().zip(shares) {
                    let share = u32::try_from(share / g).unwrap_or(u32::MAX);
                    let up = self.unique_upstream(&format!("{name}-w{w}"));
                    parts.push(format!("{up} [{}] gets {share}", ts.join(", ")));
                    upstreams.insert(up.clone(), pool(ts));
                    split.insert(up, share);
                }
                self.warn(format!(
                    "{label}: {ulabel} has targets of different weights; each weight becomes \
                     its own upstream and the routes split between them: {}",
                    parts.join(", ")
                ));
            }
        } else {
            let addr =
                target_addr(&format!("{host}:{port}"), port).map_err(|m| o.err("host", m))?;
            let up = self.unique_upstream(&name);
            upstreams.insert(
                up.clone(),
                UpstreamConfig {
                    targets: vec![addr],
                    ..base
                },
            );
            split.insert(up, 1);
        }
        let svc = self.services.len();
        self.services.push(KService {
            name: name.clone(),
            refs,
            split,
            upstreams,
            dropped,
            routes: 0,
        });

        for (j, r) in o.list("routes")?.iter().enumerate() {
            self.route(&format!("{label} routes[{j}]"), r, Some(svc))?;
        }
        for (j, p) in o.list("plugins")?.iter().enumerate() {
            let scope = Scope {
                service: Some(svc),
                ..Scope::default()
            };
            self.plugin(&format!("{label} plugins[{j}]"), p, scope)?;
        }
        self.unread(&o, "ignored");
        Ok(())
    }
}

/// Where a plugin applies. All `None` is global.
#[derive(Clone, Copy, Debug, Default)]
struct Scope {
    service: Option<usize>,
    route: Option<usize>,
    consumer: Option<usize>,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl Importer {
    fn route(&mut self, at: &str, v: &Value, service: Option<usize>) -> Result<(), KongError> {
        let mut o = Obj::new(at.to_string(), "", v)?;
        let id = o.str("id")?;
        let svc = match service {
            Some(s) => {
                o.ignore(&["service"]);
                Some(s)
            }
            None => match reference(&o, "service")? {
                Some(r) => {
                    let refs: Vec<Vec<String>> =
                        self.services.iter().map(|s| s.refs.clone()).collect();
                    Some(
                        find(&refs, &r)
                            .ok_or_else(|| o.err("service", format!("unknown service {r:?}")))?,
                    )
                }
                None => None,
            },
        };
        let name = match (o.str("name")?, id) {
            (Some(n), _) => {
                if !self.route_names.insert(n.to_string()) {
                    return Err(o.err("name", format!("duplicate route name {n:?}")));
                }
                n.to_string()
            }
            (None, Some(id)) => unique(&mut self.route_names, id, "-"),
            (None, None) => {
                let base = match svc {
                    Some(s) => {
                        self.services[s].routes += 1;
                        format!("{}-{}", self.services[s].name, self.services[s].routes)
                    }
                    None => format!("route-{}", self.routes.len() + 1),
                };
                unique(&mut self.route_names, &base, "-")
            }
        };
        let label = format!("route {name:?}");
        o.set_entity(label.clone());
        o.ignore(&[
            "tags",
            "created_at",
            "updated_at",
            "https_redirect_status_code",
            "request_buffering",
            "response_buffering",
            "path_handling",
        ]);
        let mut refs = vec![name.clone()];
        if let Some(id) = id {
            refs.push(id.to_string());
        }
        let mut drop: Option<String> = None;
        let mut config: RouteConfig = native(serde_json::json!({ "name": name, "split": {} }));

        if o.get("expression").is_some() {
            drop.get_or_insert(format!(
                "{label} uses a router expression, which signalbox cannot express"
            ));
        }

        let explicit = o.has("protocols");
        let protocols = o.strs("protocols")?;
        let protocols = if explicit {
            protocols
        } else {
            vec!["http", "https"]
        };
        // Kong's default list says nothing about whether its TLS listener was used.
        if explicit && (protocols.contains(&"https") || protocols.contains(&"wss")) {
            self.any_https = true;
        }
        let websocket_only = !protocols.iter().any(|p| matches!(*p, "http" | "https"))
            && protocols.iter().any(|p| matches!(*p, "ws" | "wss"));
        if !protocols.contains(&"http") {
            if protocols.contains(&"https") {
                self.warn(format!(
                    "{label}: Kong served it over HTTPS only (plain HTTP got a redirect); \
                     signalbox serves it over plain HTTP"
                ));
            } else if websocket_only {
                self.warn(format!(
                    "{label}: Kong took only WebSocket handshakes on it ({}); signalbox \
                     tunnels those and answers plain HTTP requests on it too",
                    protocols.join(", ")
                ));
            } else {
                drop.get_or_insert(format!(
                    "{label} serves {}; signalbox proxies HTTP only",
                    protocols.join(", ")
                ));
            }
        }

        // Paths. Kong 3.0 marks regular expressions with `~`.
        let paths = o.strs("paths")?;
        for (i, p) in paths.iter().enumerate() {
            let (path, exact) = match p.strip_prefix('~') {
                Some(re) => match regex_literal(re) {
                    Some(lit) => lit,
                    None => {
                        self.warn(format!(
                            "{label}: paths[{i}] is a regular expression ({p}), which \
                             signalbox cannot match; that path is dropped"
                        ));
                        continue;
                    }
                },
                None => (p.to_string(), false),
            };
            if !path.starts_with('/') || path.split('/').any(|s| s == "." || s == "..") {
                self.warn(format!(
                    "{label}: paths[{i}] ({p}) is not an absolute path without dot segments; \
                     that path is dropped"
                ));
                continue;
            }
            if exact {
                config.exact_paths.push(path);
            } else {
                config.paths.push(path);
            }
        }
        if paths.is_empty() {
            config.paths.push("/".into());
        } else if config.paths.is_empty() && config.exact_paths.is_empty() {
            drop.get_or_insert(format!("{label}: none of its paths can be matched"));
        }

        let methods = o.strs("methods")?;
        for m in &methods {
            let up = m.to_ascii_uppercase();
            if METHODS.contains(&up.as_str()) {
                if !config.methods.contains(&up) {
                    config.methods.push(up);
                }
            } else {
                self.warn(format!("{label}: method {m} is not supported; dropped"));
            }
        }
        if !methods.is_empty() && config.methods.is_empty() {
            drop.get_or_insert(format!("{label}: none of its methods is supported"));
        }

        let hosts = o.strs("hosts")?;
        for h in &hosts {
            if h.contains('*') {
                self.warn(format!(
                    "{label}: wildcard host {h} is not supported; that host is dropped"
                ));
                continue;
            }
            let bare = match h.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                    if port.parse::<u16>().is_ok() {
                        self.warn(format!(
                            "{label}: host {h} matches {host} on any port (signalbox matches \
                             host names without the port)"
                        ));
                        host
                    } else {
                        h
                    }
                }
                _ => h,
            };
            let bare = bare.to_ascii_lowercase();
            if !config.hosts.contains(&bare) {
                config.hosts.push(bare);
            }
        }
        if !hosts.is_empty() && config.hosts.is_empty() {
            drop.get_or_insert(format!("{label}: none of its hosts can be matched"));
        }

        if let Some(h) = o.obj("headers")? {
            let names: Vec<String> = match o.get("headers") {
                Some(Value::Object(m)) => m.keys().cloned().collect(),
                _ => Vec::new(),
            };
            for n in names {
                let values = h.strs(&n)?;
                if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                    return Err(h.err(&n, "not a valid header name"));
                }
                let Some(first) = values.first() else {
                    return Err(h.err(&n, "needs at least one value"));
                };
                if values.iter().any(|v| v.starts_with("~*")) {
                    drop.get_or_insert(format!(
                        "{label}: header {n} is matched by a regular expression, which \
                         signalbox cannot express"
                    ));
                    continue;
                }
                if values.len() > 1 {
                    self.warn(format!(
                        "{label}: header {n} matched any of {} values in Kong; signalbox \
                         matches only {first:?}",
                        values.len()
                    ));
                }
                config
                    .headers
                    .insert(n.to_ascii_lowercase(), first.to_string());
            }
        }

        config.strip_prefix = o.bool("strip_path")?.unwrap_or(true);
        config.preserve_host = o.bool("preserve_host")?.unwrap_or(false);

        if !o.strs("snis")?.is_empty() {
            self.warn(format!(
                "{label}: snis are not supported (signalbox does not terminate TLS); dropped"
            ));
        }
        for k in ["sources", "destinations"] {
            if !o.list(k)?.is_empty() {
                drop.get_or_insert(format!(
                    "{label} matches stream {k}; signalbox proxies HTTP only"
                ));
            }
        }
        if o.u64("regex_priority")?.unwrap_or(0) != 0 || o.u64("priority")?.unwrap_or(0) != 0 {
            self.warn(format!(
                "{label}: route priorities are not supported; the longest matching path wins"
            ));
        }

        let idx = self.routes.len();
        self.routes.push(KRoute {
            label: label.clone(),
            service: svc,
            config,
            refs,
            dropped: drop,
        });
        for (j, p) in o.list("plugins")?.iter().enumerate() {
            let scope = Scope {
                route: Some(idx),
                ..Scope::default()
            };
            self.plugin(&format!("{label} plugins[{j}]"), p, scope)?;
        }
        self.unread(&o, "ignored");
        Ok(())
    }

    fn plugin(&mut self, at: &str, v: &Value, mut scope: Scope) -> Result<(), KongError> {
        let o = Obj::new(at.to_string(), "", v)?;
        let Some(name) = o.str("name")? else {
            return Err(o.err("name", "a plugin needs a name"));
        };
        o.ignore(&[
            "id",
            "tags",
            "created_at",
            "updated_at",
            "instance_name",
            "protocols",
        ]);
        let lookup = |refs: Vec<Vec<String>>, key: &str| -> Result<Option<usize>, KongError> {
            match reference(&o, key)? {
                None => Ok(None),
                Some(r) => find(&refs, &r)
                    .map(Some)
                    .ok_or_else(|| o.err(key, format!("unknown {key} {r:?}"))),
            }
        };
        if let Some(s) = lookup(
            self.services.iter().map(|s| s.refs.clone()).collect(),
            "service",
        )? {
            scope.service = Some(s);
        }
        if let Some(r) = lookup(
            self.routes.iter().map(|r| r.refs.clone()).collect(),
            "route",
        )? {
            scope.route = Some(r);
        }
        if let Some(c) = lookup(
            self.consumers.iter().map(|c| c.refs.clone()).collect(),
            "consumer",
        )? {
            scope.consumer = Some(c);
        }
        let mut label = format!("plugin {name}");
        match (scope.route, scope.service) {
            (Some(r), _) => label.push_str(&format!(" on {}", self.routes[r].label)),
            (None, Some(s)) => label.push_str(&format!(" on service {:?}", self.services[s].name)),
            (None, None) => label.push_str(" (global)"),
        }
        if let Some(c) = scope.consumer {
            label.push_str(&format!(" for consumer {:?}", self.consumers[c].name));
        }
        if o.bool("enabled")? == Some(false) {
            // A disabled plugin has no effect in Kong either.
            o.ignore(&["config", "ordering", "consumer_group"]);
            return Ok(());
        }
        if o.get("consumer_group").is_some() {
            self.warn(format!(
                "{label}: scoped to a consumer group, which signalbox does not have; dropped"
            ));
            o.ignore(&["config", "ordering"]);
            return Ok(());
        }
        if o.get("ordering").is_some() {
            self.warn(format!(
                "{label}: custom plugin ordering is not supported; signalbox runs plugins in \
                 its fixed order"
            ));
        }
        let config = o
            .get("config")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        self.unread(&o, "ignored");
        for p in &self.plugins {
            if p.name == name
                && (p.service, p.route, p.consumer) == (scope.service, scope.route, scope.consumer)
            {
                return Err(o.err("name", format!("{label} is configured twice")));
            }
        }
        self.plugins.push(KPlugin {
            name: name.to_string(),
            label,
            service: scope.service,
            route: scope.route,
            consumer: scope.consumer,
            config,
            mapped: Mapped::Nothing,
        });
        Ok(())
    }

    /// The one JWT credential signalbox can verify: the first usable one in file order.
    fn choose_jwt_key(&mut self) -> Option<JwtKey> {
        let mut all = Vec::new();
        for (ci, c) in self.consumers.iter().enumerate() {
            for (ji, _) in c.jwt.iter().enumerate() {
                all.push((ci, ji));
            }
        }
        let &(ci, ji) = all.first()?;
        if all.len() > 1 {
            let dropped: Vec<String> = all[1..]
                .iter()
                .map(|&(c, j)| {
                    let (c, k) = (&self.consumers[c], &self.consumers[c].jwt[j]);
                    format!(
                        "consumer {:?} jwt_secrets[{}] (key {:?})",
                        c.name, k.index, k.kong_key
                    )
                })
                .collect();
            let chosen = &self.consumers[ci];
            let msg = format!(
                "jwt: signalbox verifies tokens against one key; consumer {:?} jwt_secrets[{}] \
                 is kept and tokens of {} are refused",
                chosen.name,
                chosen.jwt[ji].index,
                dropped.join(", ")
            );
            self.warn(msg);
        }
        let consumer = self.consumers[ci].name.clone();
        self.jwt_consumer = Some(consumer.clone());
        let cred = &self.consumers[ci].jwt[ji];
        let (kong_key, algorithm, material, n) = (
            cred.kong_key.clone(),
            cred.algorithm.clone(),
            cred.material.clone(),
            cred.index + 1,
        );
        let mut key = JwtKey {
            consumer: consumer.clone(),
            kong_key,
            algorithm: algorithm.clone(),
            secret: None,
            public_key_file: None,
        };
        if algorithm == "HS256" {
            let var = self.unique_env(format!("KONG_JWT_SECRET_{}_{n}", env_part(&consumer)));
            self.secrets.push((var.clone(), material));
            key.secret = Some(SecretRef::Env(var));
        } else {
            let file = PathBuf::from(format!(
                "kong-jwt-{}-{n}.pem",
                env_part(&consumer).to_ascii_lowercase().replace('_', "-")
            ));
            let mut pem = material.expose().to_string();
            if !pem.ends_with('\n') {
                pem.push('\n');
            }
            self.public_keys.push(PublicKeyFile {
                path: file.clone(),
                pem,
            });
            key.public_key_file = Some(file);
        }
        Some(key)
    }

    fn map_plugins(&mut self) -> Result<(), KongError> {
        let jwt_key = if self.plugins.iter().any(|p| p.name == "jwt") {
            self.choose_jwt_key()
        } else {
            None
        };
        let groups: BTreeMap<String, BTreeSet<String>> = self
            .consumers
            .iter()
            .map(|c| (c.name.clone(), c.groups.clone()))
            .collect();
        let jwt_defaults: JwtConfig = native(serde_json::json!({}));
        let cors_defaults: CorsConfig = native(serde_json::json!({ "origins": [] }));
        for i in 0..self.plugins.len() {
            let (name, label) = (self.plugins[i].name.clone(), self.plugins[i].label.clone());
            let cfg = Obj::new(label.clone(), "config.", &self.plugins[i].config)?;
            let env = Env {
                groups: &groups,
                jwt_key: jwt_key.as_ref(),
                jwt_defaults: &jwt_defaults,
                cors_defaults: &cors_defaults,
            };
            let mut warn = Vec::new();
            let mapped = plugins::map(&name, &label, &cfg, &env, &mut warn)?;
            for f in cfg.unread() {
                warn.push(format!("{label}: {f} is not supported; ignored"));
            }
            if self.plugins[i].consumer.is_some() && !matches!(mapped, Mapped::Block(_)) {
                // Only a ban (below) carries over; a per-consumer setting has no native home.
                self.warn(format!(
                    "{label}: signalbox plugins apply to every caller of a route, not to one \
                     consumer; dropped"
                ));
            } else {
                self.warnings.extend(warn);
            }
            self.plugins[i].mapped = mapped;
        }
        Ok(())
    }

    /// Kong's precedence for one route (consumer-less instances): route and service,
    /// then route, then service, then global. 0 means the instance does not apply.
    fn rank(p: &KPlugin, route: usize, svc: usize) -> u8 {
        match (p.route, p.service) {
            (Some(r), Some(s)) if r == route && s == svc => 4,
            (Some(r), None) if r == route => 3,
            (None, Some(s)) if s == svc => 2,
            (None, None) => 1,
            _ => 0,
        }
    }

    fn assemble(mut self) -> Result<KongImport, KongError> {
        let everyone: BTreeSet<String> = self.consumers.iter().map(|c| c.name.clone()).collect();
        let mut out: Vec<(RouteConfig, BTreeSet<&'static str>)> = Vec::new();
        let mut used_upstreams = BTreeMap::new();
        for r in 0..self.routes.len() {
            let route = &self.routes[r];
            let label = route.label.clone();
            if let Some(why) = &route.dropped {
                let why = why.clone();
                self.warn(format!("{label} left out: {why}"));
                continue;
            }
            let Some(svc) = route.service else {
                self.warn(format!(
                    "{label} left out: it has no service (Kong answered 503 or ran a plugin \
                     that signalbox lacks)"
                ));
                continue;
            };
            if let Some(why) = &self.services[svc].dropped {
                let why = why.clone();
                self.warn(format!("{label} left out: {why}"));
                continue;
            }

            let mut chosen: BTreeMap<&str, (usize, u8)> = BTreeMap::new();
            let mut bans = Vec::new();
            for (i, p) in self.plugins.iter().enumerate() {
                let rank = Self::rank(p, r, svc);
                if rank == 0 {
                    continue;
                }
                if let Some(c) = p.consumer {
                    if let Mapped::Block(why) = &p.mapped {
                        bans.push((self.consumers[c].name.clone(), why.clone(), rank == 1));
                    }
                    continue;
                }
                let e = chosen.entry(p.name.as_str()).or_insert((i, rank));
                if rank > e.1 {
                    *e = (i, rank);
                }
            }

            let mut plugins = Plugins::default();
            // Slots whose value came from global Kong plugins only: candidates for `defaults`.
            let mut global: BTreeSet<&'static str> = BTreeSet::new();
            let mut access: Vec<(Access, bool)> = Vec::new();
            let mut block = None;
            let mut notes = Vec::new();
            for (i, rank) in chosen.values() {
                let p = &self.plugins[*i];
                match &p.mapped {
                    Mapped::Slot(s) => {
                        if set_slot(&mut plugins, s.clone()) {
                            if *rank == 1 {
                                global.insert(s.field());
                            }
                        } else {
                            notes.push(format!(
                                "{label}: {} maps to {} which another plugin already set; \
                                 ignored",
                                p.label,
                                s.field()
                            ));
                        }
                    }
                    Mapped::Access(a) => access.push((a.clone(), *rank == 1)),
                    Mapped::Nothing => {}
                    Mapped::Block(why) => {
                        block.get_or_insert(why.clone());
                    }
                }
            }
            for (consumer, why, is_global) in bans {
                notes.push(format!("{label}: consumer {consumer:?} is refused ({why})"));
                access.push((
                    Access {
                        allow: None,
                        deny: BTreeSet::from([consumer]),
                        requires_consumer: false,
                    },
                    is_global,
                ));
            }
            if block.is_none() && !access.is_empty() {
                block = self.restrict(&mut plugins, &mut global, &access, &everyone);
            }
            self.warnings.extend(notes);
            if let Some(why) = block {
                self.warn(format!("{label} left out: {why}"));
                continue;
            }
            let route = &self.routes[r];
            let svc = &self.services[svc];
            let mut config = route.config.clone();
            config.split = svc.split.clone();
            config.plugins = plugins;
            for up in config.split.keys() {
                if let Some(u) = svc.upstreams.get(up) {
                    used_upstreams.insert(up.clone(), u.clone());
                }
            }
            out.push((config, global));
        }
        if out.is_empty() {
            return Err(KongError::NothingToServe {
                warnings: self.warnings,
            });
        }

        let defaults = factor_defaults(&mut out);
        let mut consumers = Vec::new();
        let mut external_env = Vec::new();
        for i in 0..self.consumers.len() {
            let name = self.consumers[i].name.clone();
            let keys = std::mem::take(&mut self.consumers[i].keys);
            let mut refs = Vec::new();
            for (n, k) in keys.into_iter().enumerate() {
                match k {
                    KKey::Env(var) => {
                        if !external_env.contains(&var) {
                            external_env.push(var.clone());
                        }
                        refs.push(SecretRef::Env(var));
                    }
                    KKey::Value(secret) => {
                        let var =
                            self.unique_env(format!("KONG_KEY_{}_{}", env_part(&name), n + 1));
                        self.secrets.push((var.clone(), secret));
                        refs.push(SecretRef::Env(var));
                    }
                }
            }
            consumers.push(Consumer {
                name,
                keys: refs,
                key: None,
            });
        }
        let mut config: GatewayConfig =
            native(serde_json::json!({ "upstreams": {}, "routes": [] }));
        config.consumers = consumers;
        config.upstreams = used_upstreams;
        config.routes = out.into_iter().map(|(r, _)| r).collect();
        config.defaults = defaults;
        let issues = validate(&config);
        // Inputs are checked as they are read, so this only fires on a gap in those checks.
        if let Some((field, first)) = issues.first().cloned() {
            let mut message = first;
            for (f, m) in &issues[1..] {
                message.push_str(&format!("; also {f}: {m}"));
            }
            return Err(KongError::Invalid {
                entity: "the converted config".into(),
                field,
                message,
            });
        }
        Ok(KongImport {
            config,
            secrets: self.secrets,
            warnings: self.warnings,
            public_keys: self.public_keys,
            external_env,
        })
    }

    /// Applies consumer restrictions (acl, bans) to the route's auth plugin. Returns why the
    /// route must be left out, if the restriction cannot be expressed.
    fn restrict(
        &self,
        plugins: &mut Plugins,
        global: &mut BTreeSet<&'static str>,
        access: &[(Access, bool)],
        everyone: &BTreeSet<String>,
    ) -> Option<String> {
        let mut allowed = everyone.clone();
        for (a, _) in access {
            if let Some(al) = &a.allow {
                allowed = allowed.intersection(al).cloned().collect();
            }
            allowed.retain(|c| !a.deny.contains(c));
        }
        let requires = access.iter().any(|(a, _)| a.requires_consumer);
        let all_global = access.iter().all(|(_, g)| *g);
        if let Some(ka) = &mut plugins.key_auth {
            if allowed.is_empty() {
                return Some("the acl admits no consumer that exists in the file".into());
            }
            if &allowed != everyone {
                ka.allow = allowed.into_iter().collect();
                if !all_global {
                    global.remove("key_auth");
                }
            }
            return None;
        }
        if plugins.jwt.is_some() {
            // The only consumer a token can belong to is the one whose key signalbox kept.
            return match &self.jwt_consumer {
                Some(c) if allowed.contains(c) => None,
                _ => {
                    Some("its acl refuses the one consumer whose jwt key signalbox verifies".into())
                }
            };
        }
        requires.then(|| {
            "it has an acl but no key-auth or jwt, so Kong refused every request".to_string()
        })
    }
}

/// Puts a plugin into its native slot; false if the slot is already taken.
fn set_slot(p: &mut Plugins, s: Slot) -> bool {
    fn put<T>(slot: &mut Option<T>, v: T) -> bool {
        if slot.is_some() {
            return false;
        }
        *slot = Some(v);
        true
    }
    match s {
        Slot::KeyAuth(v) => put(&mut p.key_auth, v),
        Slot::Jwt(v) => put(&mut p.jwt, v),
        Slot::RateLimit(v) => put(&mut p.rate_limit, v),
        Slot::Cors(v) => put(&mut p.cors, v),
        Slot::RequestHeaders(v) => put(&mut p.request_headers, v),
        Slot::ResponseHeaders(v) => put(&mut p.response_headers, v),
        Slot::MaxBody(v) => put(&mut p.max_body, v),
    }
}

/// Moves a plugin into `defaults` when every route has the same one from a global Kong
/// plugin, which is what a global plugin means. Anything else stays on the routes, so a
/// route never inherits a default it should not have.
fn factor_defaults(routes: &mut [(RouteConfig, BTreeSet<&'static str>)]) -> Plugins {
    let mut defaults = Plugins::default();
    macro_rules! factor {
        ($field:ident) => {{
            let name = stringify!($field);
            let first = routes[0].0.plugins.$field.clone();
            if first.is_some()
                && routes
                    .iter()
                    .all(|(r, g)| g.contains(name) && r.plugins.$field == first)
            {
                defaults.$field = first;
                for (r, _) in routes.iter_mut() {
                    r.plugins.$field = None;
                }
            }
        }};
    }
    factor!(key_auth);
    factor!(jwt);
    factor!(rate_limit);
    factor!(cors);
    factor!(request_headers);
    factor!(response_headers);
    factor!(max_body);
    defaults
}

/// `{vault://env/NAME}` → the variable Kong's env vault reads (upper case, `-` → `_`).
fn vault_env(v: &str) -> Option<String> {
    let name = v.strip_prefix("{vault://env/")?.strip_suffix('}')?;
    let var: String = name
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    (!var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(var)
}

/// `host[:port]` → `host:port`, with `default_port` when none is given.
fn target_addr(t: &str, default_port: u16) -> Result<String, String> {
    let bad = || format!("{t:?} is not host[:port]");
    if t.is_empty() || t.contains('/') || t.contains(char::is_whitespace) {
        return Err(bad());
    }
    // [v6]:port, [v6], host:port, host
    if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok(format!("[{host}]:{port}"));
    }
    match t.split_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(':') => {
            let port = port.parse::<u16>().map_err(|_| bad())?;
            Ok(format!("{host}:{port}"))
        }
        Some(_) => Err(bad()),
        None => Ok(format!("{t}:{default_port}")),
    }
}

/// `scheme://host[:port][/path]` → (protocol, host, port, path).
fn parse_url(url: &str) -> Result<(String, String, u16, Option<String>), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected scheme://host[:port][/path]".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if authority.contains('@') {
        // Do not echo it: the user info may be a password.
        return Err("user info in the url is not supported".into());
    }
    let default = match scheme.as_str() {
        "https" | "grpcs" | "wss" => 443,
        _ => 80,
    };
    let addr = target_addr(authority, default)
        .map_err(|_| "the host part is not host[:port]".to_string())?;
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "80"));
    let port = port.parse().unwrap_or(default);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok((scheme, host, port, path))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A Kong path regex that is only a literal (Kong anchors it at the start): a prefix, or
/// an exact path when it ends in `$`.
fn regex_literal(re: &str) -> Option<(String, bool)> {
    let re = re.strip_prefix('^').unwrap_or(re);
    let (body, exact) = match re.strip_suffix('$') {
        Some(b) if !b.ends_with('\\') => (b, true),
        _ => (re, false),
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let n = chars.next()?;
                // \d, \w, \s ... are classes, not literals.
                if n.is_ascii_alphanumeric() {
                    return None;
                }
                out.push(n);
            }
            '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {
                return None;
            }
            c => out.push(c),
        }
    }
    Some((out, exact))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::RateLimitKey;
    use crate::gateway::config::units::ByteSize;

    fn ok(text: &str) -> KongImport {
        import(text).unwrap_or_else(|e| panic!("import failed: {e}"))
    }

    fn err(text: &str) -> String {
        match import(text) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn has(warnings: &[String], needle: &str) -> bool {
        warnings.iter().any(|w| w.contains(needle))
    }

    const ONE: &str = r#"_format_version: "3.0"
services:
  - name: users
    url: http://127.0.0.1:9001
    routes:
      - name: users
        paths: [/users]
"#;

    #[test]
    fn native_defaults_deserialize() {
        let _: UpstreamConfig = upstream_defaults();
        let _: JwtConfig = native(serde_json::json!({}));
        let _: CorsConfig = native(serde_json::json!({ "origins": [] }));
        let _: HealthCheck = native(serde_json::json!({ "path": "/" }));
        let _: PassiveHealth = native(serde_json::json!({}));
        let _: RouteConfig = native(serde_json::json!({ "name": "r", "split": {} }));
        let _: GatewayConfig = native(serde_json::json!({ "upstreams": {}, "routes": [] }));
    }

    #[test]
    fn a_minimal_service_maps_with_kong_defaults() {
        let i = ok(ONE);
        assert!(i.warnings.is_empty(), "{:?}", i.warnings);
        let u = &i.config.upstreams["users"];
        assert_eq!(u.targets, ["127.0.0.1:9001"]);
        // Kong's defaults: 60 s timeouts, 5 retries, strip_path on.
        assert_eq!(
            (u.connect_timeout, u.timeout, u.retries),
            (Dur::secs(60), Dur::secs(60), 5)
        );
        let r = &i.config.routes[0];
        assert_eq!(
            (r.name.as_str(), r.paths.as_slice()),
            ("users", &["/users".to_string()][..])
        );
        assert_eq!(r.split, BTreeMap::from([("users".to_string(), 1)]));
        assert!(r.strip_prefix && !r.preserve_host);
    }

    #[test]
    fn format_version_is_checked() {
        let e = err(&ONE.replace("\"3.0\"", "\"2.1\""));
        assert!(
            e.starts_with("the Kong file: _format_version: found \"2.1\""),
            "{e}"
        );
        let e = err(&ONE.replace("_format_version: \"3.0\"\n", ""));
        assert!(e.contains("_format_version: missing"), "{e}");
        // Unquoted in YAML it is a number; that is still 3.0.
        ok(&ONE.replace("\"3.0\"", "3.0"));
    }

    #[test]
    fn malformed_entities_are_named() {
        let cases = [
            (
                ONE.replace("url: http://127.0.0.1:9001", "protocol: http"),
                "service \"users\": host: missing",
            ),
            (
                ONE.replace("paths: [/users]", "paths: /users"),
                "route \"users\": paths: expected a list of strings, found a string",
            ),
            (
                ONE.replace("url: http://127.0.0.1:9001", "url: 127.0.0.1:9001"),
                "service \"users\": url: expected scheme://host",
            ),
            (
                ONE.replace("url: http://127.0.0.1:9001", "url: http://127.0.0.1:99999"),
                "service \"users\": url: the host part",
            ),
            (
                ONE.replace(
                    "url: http://127.0.0.1:9001",
                    "url: http://127.0.0.1:9001\n    read_timeout: 0",
                ),
                "service \"users\": read_timeout: must be at least 1",
            ),
            (
                format!("{ONE}consumers:\n  - tags: [x]\n"),
                "consumers[0]: username: a consumer needs a username or custom_id",
            ),
            (
                format!("{ONE}routes:\n  - name: r2\n    service: nope\n    paths: [/x]\n"),
                "routes[0]: service: unknown service \"nope\"",
            ),
            (
                format!("{ONE}plugins:\n  - config: {{}}\n"),
                "plugins[0]: name: a plugin needs a name",
            ),
            (
                format!("{ONE}plugins:\n  - name: rate-limiting\n    config: {{ minute: many }}\n"),
                "plugin rate-limiting (global): config.minute: expected a number, found a string",
            ),
            (
                format!("{ONE}upstreams:\n  - name: u\n    targets: [{{ target: \"a b\" }}]\n"),
                "upstream \"u\": targets[0].target",
            ),
            ("services: [\n".to_string(), "invalid YAML at line"),
            (
                "{\"_format_version\": \"3.0\",}".to_string(),
                "invalid JSON at line 1",
            ),
            (
                "- a\n- b\n".to_string(),
                "the Kong file: <root>: expected a mapping, found a list",
            ),
            (String::new(), "the Kong file: <root>: expected a mapping"),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn errors_never_echo_credentials() {
        let text = format!(
            "{ONE}consumers:\n  - username: a\n    keyauth_credentials: [{{ key: 918273645 }}]\n"
        );
        let e = err(&text);
        assert!(
            e.contains("keyauth_credentials[0].key: expected a string, found a number"),
            "{e}"
        );
        assert!(!e.contains("918273645"), "{e}");
        // A syntax error on the line holding a key must not print that line.
        let e = err(
            "_format_version: \"3.0\"\nconsumers:\n  - username: a\n    keyauth_credentials: [{ key: s3cr3t-v4lue }\n",
        );
        assert!(e.contains("invalid YAML"), "{e}");
        assert!(!e.contains("s3cr3t-v4lue"), "{e}");
        // Two consumers with one key: named by consumer, not by value.
        let e = err(&format!(
            "{ONE}consumers:\n  - username: a\n    keyauth_credentials: [{{ key: dup-k3y }}]\n  - username: b\n    keyauth_credentials: [{{ key: dup-k3y }}]\n"
        ));
        assert!(
            e.contains("consumer \"b\"") && e.contains("already used by consumer \"a\""),
            "{e}"
        );
        assert!(!e.contains("dup-k3y"), "{e}");
    }

    #[test]
    fn json_input_gives_the_same_result() {
        let json = r#"{
	"_format_version": "3.0",
	"services": [{ "name": "users", "url": "http://127.0.0.1:9001",
		"routes": [{ "name": "users", "paths": ["/users"] }] }]
}"#;
        assert_eq!(ok(json).config, ok(ONE).config);
    }

    #[test]
    fn keys_become_env_references_with_readable_unique_names() {
        let text = format!(
            "{ONE}consumers:
  - username: alice
    keyauth_credentials: [{{ key: k-alice-1 }}, {{ key: k-alice-2 }}]
  - username: a.b
    keyauth_credentials: [{{ key: k-ab-dot }}]
  - username: a_b
    keyauth_credentials: [{{ key: k-ab-under }}]
  - username: ユーザー
    keyauth_credentials: [{{ key: k-jp }}]
  - username: vaulted
    keyauth_credentials: [{{ key: '{{vault://env/my-api-key}}' }}]
  - username: nokey
    keyauth_credentials: [{{ tags: [x] }}]
"
        );
        let i = ok(&text);
        let names: Vec<&str> = i.secrets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "KONG_KEY_ALICE_1",
                "KONG_KEY_ALICE_2",
                "KONG_KEY_A_B_1",
                "KONG_KEY_A_B_1_2",
                "KONG_KEY_CONSUMER_1"
            ]
        );
        assert_eq!(i.secrets[3].1.expose(), "k-ab-under");
        let c = &i.config.consumers;
        assert_eq!(
            c[0].keys,
            [
                SecretRef::Env("KONG_KEY_ALICE_1".into()),
                SecretRef::Env("KONG_KEY_ALICE_2".into())
            ]
        );
        // A Kong env-vault reference is already a reference: no value to carry.
        assert_eq!(c[4].keys, [SecretRef::Env("MY_API_KEY".into())]);
        assert_eq!(i.external_env, ["MY_API_KEY"], "set by hand, so named");
        assert!(c[5].keys.is_empty());
        assert_eq!(i.warnings.len(), 1, "{:?}", i.warnings);
        assert!(
            has(
                &i.warnings,
                "consumer \"nokey\": keyauth_credentials[0] has no key"
            ),
            "{:?}",
            i.warnings
        );
        let yaml = serde_saphyr::to_string(&i.config).unwrap();
        for (_, v) in &i.secrets {
            assert!(!yaml.contains(v.expose()));
            assert!(!i.warnings.iter().any(|w| w.contains(v.expose())));
        }
    }

    const AUTH: &str = r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{ key: alice-k }]
    acls: [{ group: staff }]
  - username: bob
    keyauth_credentials: [{ key: bob-k }]
  - username: mallory
    keyauth_credentials: [{ key: mallory-k }]
    acls: [{ group: staff }]
    plugins:
      - name: request-termination
        config: { status_code: 403 }
services:
  - name: users
    url: http://127.0.0.1:9001
    routes:
      - name: users
        paths: [/users]
      - name: admin
        paths: [/admin]
        plugins:
          - name: acl
            config: { allow: [staff] }
      - name: open
        paths: [/open]
        plugins:
          - name: key-auth
            enabled: false
    plugins:
      - name: key-auth
        config: { key_names: [X-Key], key_in_query: false }
  - name: public
    url: http://127.0.0.1:9002
    routes:
      - name: public
        paths: [/public]
      - name: needs-acl
        paths: [/needs-acl]
        plugins:
          - name: acl
            config: { allow: [staff] }
"#;

    #[test]
    fn acl_and_consumer_bans_become_allow_lists() {
        let i = ok(AUTH);
        let route = |n: &str| i.config.routes.iter().find(|r| r.name == n);
        let ka = |n: &str| route(n).unwrap().plugins.key_auth.clone().unwrap();
        // mallory is banned everywhere by a consumer-scoped request-termination.
        assert_eq!(ka("users").allow, ["alice", "bob"]);
        assert_eq!(ka("admin").allow, ["alice"]);
        assert_eq!(ka("admin").header, "X-Key");
        // A disabled plugin does not override the service's key-auth (as in Kong).
        assert_eq!(ka("open").allow, ["alice", "bob"]);
        assert!(route("public").unwrap().plugins.key_auth.is_none());
        // acl without authentication: Kong refused everything, so the route is left out.
        assert!(route("needs-acl").is_none());
        assert!(
            has(
                &i.warnings,
                "route \"needs-acl\" left out: it has an acl but no key-auth or jwt"
            ),
            "{:?}",
            i.warnings
        );
        assert!(
            has(&i.warnings, "consumer \"mallory\" is refused"),
            "{:?}",
            i.warnings
        );
        assert!(i.config.defaults.is_empty());
    }

    #[test]
    fn a_consumer_ban_on_one_route_only() {
        // The consumer's nested plugin names a route that is defined after the consumer.
        let text = AUTH.replace(
            "      - name: request-termination\n        config: { status_code: 403 }",
            "      - name: request-termination\n        route: admin\n        config: { status_code: 403 }\n      - name: rate-limiting\n        service: users\n        config: { second: 1 }\n        enabled: false",
        );
        let i = ok(&text);
        let ka = |n: &str| {
            let r = i.config.routes.iter().find(|r| r.name == n).unwrap();
            r.plugins.key_auth.clone().unwrap().allow
        };
        assert_eq!(ka("admin"), ["alice"]);
        assert!(ka("users").is_empty(), "everyone may call users");
        let e = err(&AUTH.replace("config: { status_code: 403 }", "route: nowhere"));
        assert!(
            e.contains("consumer \"mallory\" plugins[0]: route: unknown route \"nowhere\""),
            "{e}"
        );
    }

    #[test]
    fn plugin_precedence_and_defaults() {
        let text = r#"_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9001
    routes:
      - { name: a1, paths: [/a1] }
      - name: a2
        paths: [/a2]
        plugins: [{ name: request-size-limiting, config: { allowed_payload_size: 1, size_unit: kilobytes } }]
    plugins:
      - { name: rate-limiting, config: { second: 5, limit_by: ip } }
  - name: b
    url: http://127.0.0.1:9002
    routes:
      - { name: b1, paths: [/b1] }
plugins:
  - { name: request-size-limiting, config: { allowed_payload_size: 10 } }
  - { name: rate-limiting, config: { minute: 100, limit_by: ip } }
  - { name: cors, config: { origins: [https://x.example], headers: [Content-Type] } }
"#;
        let i = ok(text);
        let p = |n: &str| {
            i.config
                .routes
                .iter()
                .find(|r| r.name == n)
                .unwrap()
                .plugins
                .clone()
        };
        // cors is global and the same everywhere: a default.
        assert_eq!(
            i.config.defaults.cors.as_ref().unwrap().origins,
            ["https://x.example"]
        );
        // max_body differs on a2 (route beats global), so every route carries its own.
        assert!(i.config.defaults.max_body.is_none());
        assert_eq!(p("a1").max_body, Some(ByteSize(10 << 20)));
        assert_eq!(p("a2").max_body, Some(ByteSize(1024)));
        assert_eq!(p("b1").max_body, Some(ByteSize(10 << 20)));
        // Service beats global.
        assert_eq!(p("a1").rate_limit.unwrap().per_second, Some(5));
        assert_eq!(p("b1").rate_limit.unwrap().per_minute, Some(100));
        assert!(p("b1").cors.is_none());
        for r in &i.config.routes {
            let eff = r.plugins.over(&i.config.defaults);
            assert!(eff.cors.is_some() && eff.max_body.is_some() && eff.rate_limit.is_some());
        }
    }

    #[test]
    fn weighted_targets_become_a_split_with_health() {
        let text = r#"_format_version: "3.0"
upstreams:
  - name: pool
    healthchecks:
      active:
        http_path: /ready
        timeout: 0.5
        healthy: { interval: 2, successes: 3 }
        unhealthy: { interval: 2, http_failures: 4, timeouts: 2 }
      passive:
        unhealthy: { http_failures: 7 }
    targets:
      - { target: "10.0.0.1:80", weight: 300 }
      - { target: "10.0.0.2", weight: 100 }
      - { target: "[::1]:81", weight: 100 }
      - { target: "10.0.0.9:80", weight: 0 }
targets:
  - { target: "10.0.0.3:80", upstream: pool, weight: 300 }
services:
  - name: svc
    host: pool
    connect_timeout: 1500
    routes: [{ name: r, paths: [/] }]
"#;
        let i = ok(text);
        let split = &i.config.routes[0].split;
        // 2 x 300 against 2 x 100: 3 to 1.
        assert_eq!(
            split,
            &BTreeMap::from([("svc-w100".to_string(), 1), ("svc-w300".to_string(), 3)])
        );
        let heavy = &i.config.upstreams["svc-w300"];
        assert_eq!(heavy.targets, ["10.0.0.1:80", "10.0.0.3:80"]);
        assert_eq!(
            i.config.upstreams["svc-w100"].targets,
            ["10.0.0.2:8000", "[::1]:81"]
        );
        assert_eq!(heavy.connect_timeout, Dur::millis(1500));
        let h = heavy.health.as_ref().unwrap();
        assert_eq!(
            (h.path.as_str(), h.interval, h.timeout),
            ("/ready", Dur::secs(2), Dur::millis(500))
        );
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (3, 2));
        assert_eq!(heavy.passive.max_failures, 7);
        assert!(
            has(&i.warnings, "each weight becomes its own upstream"),
            "{:?}",
            i.warnings
        );
        assert!(
            !i.config
                .upstreams
                .values()
                .any(|u| u.targets.contains(&"10.0.0.9:80".to_string()))
        );
    }

    #[test]
    fn route_matching_maps_or_narrows_never_widens() {
        let text = r#"_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9001
    routes:
      - name: mixed
        paths: ["~/exact/healthz$", "~/prefix", "~/items/\\d+", /plain]
        hosts: [Api.Example.com:8443, "*.example.org"]
        methods: [get, BREW]
        headers: { X-Version: [v1, v2] }
        strip_path: false
        preserve_host: true
      - name: only-regex
        paths: ["~/u/[0-9]+$"]
      - name: header-regex
        paths: [/h]
        headers: { x-user: ["~*^adm"] }
      - name: tls-only
        paths: [/tls]
        protocols: [https]
        snis: [api.example.com]
      - name: grpc
        paths: [/grpc]
        protocols: [grpc]
      - name: sockets
        paths: [/live]
        protocols: [ws, wss]
      - paths: [/unnamed]
"#;
        let i = ok(text);
        let r = &i.config.routes[0];
        assert_eq!(r.exact_paths, ["/exact/healthz"]);
        assert_eq!(r.paths, ["/prefix", "/plain"]);
        assert_eq!(r.hosts, ["api.example.com"]);
        assert_eq!(r.methods, ["GET"]);
        assert_eq!(
            r.headers,
            BTreeMap::from([("x-version".to_string(), "v1".to_string())])
        );
        assert!(!r.strip_prefix && r.preserve_host);
        let names: Vec<&str> = i.config.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["mixed", "tls-only", "sockets", "s-1"]);
        for w in [
            "paths[2] is a regular expression",
            "wildcard host *.example.org",
            "host Api.Example.com:8443 matches Api.Example.com on any port",
            "method BREW is not supported",
            "header X-Version matched any of 2 values",
            "route \"only-regex\" left out: route \"only-regex\": none of its paths",
            "route \"header-regex\" left out",
            "Kong served it over HTTPS only",
            "snis are not supported",
            "route \"grpc\" left out",
            "route \"sockets\": Kong took only WebSocket handshakes on it (ws, wss)",
            "signalbox serves plain HTTP only",
        ] {
            assert!(has(&i.warnings, w), "missing {w:?} in {:#?}", i.warnings);
        }
    }

    #[test]
    fn services_that_cannot_be_served() {
        let text = r#"_format_version: "3.0"
services:
  - name: tls
    url: https://secure.internal/api
    tls_verify: true
    routes: [{ name: tls, paths: [/tls] }]
  - name: disabled
    url: http://127.0.0.1:1
    enabled: false
    routes: [{ name: disabled, paths: [/disabled] }]
  - name: stream
    protocol: tcp
    host: 127.0.0.1
    port: 5432
    routes: [{ name: stream, protocols: [tcp], destinations: [{ port: 5432 }] }]
routes:
  - name: orphan
    paths: [/orphan]
"#;
        let i = ok(text);
        assert_eq!(i.config.routes.len(), 1);
        assert_eq!(i.config.upstreams["tls"].targets, ["secure.internal:443"]);
        for w in [
            "service \"tls\": protocol https: signalbox connects to upstreams over plain HTTP",
            "service \"tls\": path /api is not prepended",
            "service \"tls\": tls_verify is not supported",
            "route \"disabled\" left out: service \"disabled\" is disabled",
            "route \"stream\" left out",
            "route \"orphan\" left out: it has no service",
        ] {
            assert!(has(&i.warnings, w), "missing {w:?} in {:#?}", i.warnings);
        }
        // Upstreams of left-out routes are not emitted.
        assert_eq!(i.config.upstreams.len(), 1);
    }

    #[test]
    fn nothing_to_serve_keeps_the_warnings() {
        let text = ONE.replace(
            "paths: [/users]",
            "paths: [/users]\n        plugins: [{ name: basic-auth }]",
        );
        match import(&text) {
            Err(KongError::NothingToServe { warnings }) => {
                assert!(
                    has(&warnings, "signalbox cannot enforce basic-auth"),
                    "{warnings:?}"
                );
            }
            other => panic!("expected NothingToServe, got {other:?}"),
        }
    }

    #[test]
    fn jwt_hs256_secret_becomes_an_env_reference() {
        let text = format!(
            "{ONE}    plugins: [{{ name: jwt, config: {{ claims_to_verify: [exp, nbf], uri_param_names: [] }} }}]
consumers:
  - username: bob
    jwt_secrets:
      - {{ key: bob-iss, algorithm: HS256, secret: hs-secret-1-for-bob-0123456789abcdef }}
  - username: eve
    jwt_secrets:
      - {{ key: eve-iss, secret: hs-secret-2-for-eve-0123456789abcdef }}
      - {{ key: eve-384, algorithm: HS384, secret: hs-secret-3-for-eve-0123456789abcdef }}
"
        );
        let i = ok(&text);
        let jwt = i.config.routes[0].plugins.jwt.clone().unwrap();
        assert_eq!(
            jwt.secret,
            Some(SecretRef::Env("KONG_JWT_SECRET_BOB_1".into()))
        );
        assert_eq!(
            (jwt.algorithms.as_slice(), jwt.issuer.as_deref()),
            (&["HS256".to_string()][..], Some("bob-iss"))
        );
        assert_eq!(jwt.leeway, Dur::secs(0));
        assert_eq!(i.secrets.len(), 1);
        assert_eq!(i.secrets[0].0, "KONG_JWT_SECRET_BOB_1");
        assert_eq!(
            i.secrets[0].1.expose(),
            "hs-secret-1-for-bob-0123456789abcdef"
        );
        assert!(
            has(
                &i.warnings,
                "consumer \"eve\" jwt_secrets[0] (key \"eve-iss\")"
            ),
            "{:?}",
            i.warnings
        );
        assert!(has(&i.warnings, "uses HS384"), "{:?}", i.warnings);
        let yaml = serde_saphyr::to_string(&i.config).unwrap();
        for s in [
            "hs-secret-1-for-bob-0123456789abcdef",
            "hs-secret-2-for-eve-0123456789abcdef",
            "hs-secret-3-for-eve-0123456789abcdef",
        ] {
            assert!(!yaml.contains(s), "{s} leaked into the YAML");
            assert!(
                !i.warnings.iter().any(|w| w.contains(s)),
                "{s} leaked into a warning"
            );
        }
    }

    #[test]
    fn a_short_hs256_secret_is_left_out_so_the_output_can_be_served() {
        let text = format!(
            "{ONE}    plugins: [{{ name: jwt, config: {{ claims_to_verify: [exp], uri_param_names: [] }} }}]
consumers:
  - username: bob
    jwt_secrets: [{{ key: bob-iss, algorithm: HS256, secret: short-but-valid-in-kong }}]
  - username: eve
    jwt_secrets: [{{ key: eve-iss, secret: eve-secret-long-enough-0123456789abcdef }}]
"
        );
        let i = ok(&text);
        assert!(
            has(
                &i.warnings,
                "consumer \"bob\": jwt_secrets[0] has an HS256 secret of 23 bytes; signalbox needs at least 32"
            ),
            "{:?}",
            i.warnings
        );
        let jwt = i.config.routes[0].plugins.jwt.clone().unwrap();
        assert_eq!(jwt.issuer.as_deref(), Some("eve-iss"));
        let names: Vec<&str> = i.secrets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["KONG_JWT_SECRET_EVE_1"]);
        assert!(!i.warnings.iter().any(|w| w.contains("short-but-valid")));
    }

    #[test]
    fn consumer_scoped_plugins_and_unknown_fields_are_reported() {
        let text = format!(
            "{ONE}        snis_extra: 1
consumers:
  - username: carol
    plugins: [{{ name: rate-limiting, config: {{ second: 1 }} }}]
plugins:
  - {{ name: rate-limiting, consumer: carol, service: users, config: {{ minute: 1 }} }}
  - {{ name: key-auth, config: {{ key_in_query: false, brand_new_option: true }} }}
vaults: [{{ name: env, prefix: my-env }}]
certificates: [{{ cert: x, key: y }}]
"
        );
        let i = ok(&text);
        for w in [
            "route \"users\": snis_extra is not supported",
            "plugin rate-limiting (global) for consumer \"carol\": signalbox plugins apply to every caller",
            "plugin rate-limiting on service \"users\" for consumer \"carol\": signalbox",
            "plugin key-auth (global): config.brand_new_option is not supported",
            "top-level vaults is not supported",
            "certificates: 1 entry not imported",
        ] {
            assert!(has(&i.warnings, w), "missing {w:?} in {:#?}", i.warnings);
        }
        assert!(i.config.defaults.rate_limit.is_none());
        assert!(i.config.defaults.key_auth.is_some());
    }

    #[test]
    fn limit_by_consumer_keeps_the_key() {
        let text = format!(
            "{ONE}plugins: [{{ name: rate-limiting, config: {{ minute: 60, limit_by: credential }} }}]\n"
        );
        let i = ok(&text);
        assert_eq!(
            i.config.defaults.rate_limit.unwrap().by,
            RateLimitKey::ApiKey
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(target_addr("h", 8000).unwrap(), "h:8000");
        assert_eq!(target_addr("[::1]", 80).unwrap(), "[::1]:80");
        assert!(target_addr("h:1:2", 80).is_err());
        assert!(target_addr("h:x", 80).is_err());
        assert_eq!(
            parse_url("HTTP://h:81/p").unwrap(),
            ("http".into(), "h".into(), 81, Some("/p".into()))
        );
        assert_eq!(
            parse_url("https://[::1]").unwrap(),
            ("https".into(), "[::1]".into(), 443, None)
        );
        let e = parse_url("http://user:pw@h").unwrap_err();
        assert!(!e.contains("pw"));
        assert_eq!(regex_literal("/a/b$"), Some(("/a/b".into(), true)));
        assert_eq!(regex_literal("^/a\\.json"), Some(("/a.json".into(), false)));
        assert_eq!(regex_literal("/a/\\d+"), None);
        assert_eq!(regex_literal("/a/(b|c)"), None);
        assert_eq!(env_part("carol.ops-team"), "CAROL_OPS_TEAM");
        assert_eq!(env_part("--"), "CONSUMER");
        assert_eq!(vault_env("{vault://env/my-key}").as_deref(), Some("MY_KEY"));
        assert_eq!(vault_env("{vault://aws/my-key}"), None);
    }
}
