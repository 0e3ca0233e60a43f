//! The local sandbox: three environments (dev, stage, prod), each with its own gateway,
//! admin API, demo services and live traffic, in one process on loopback.
//!
//! Port layout from `--port-base B` (default 17000), per environment `i` (dev 0, stage 1,
//! prod 2) at `B + 100*i`: gateway `+0`, admin `+1`, then services users-blue `+10`,
//! users-green `+11`, payments-v1 `+12`, payments-v2 `+13`, search-v1 `+14`, search-v2
//! `+15`, orders-v1 `+16`. The sandbox control API (faults) is `B + 99`.

pub mod services;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::services::{DemoService, Faults};
use crate::gateway::{GatewayOptions, RunningGateway};

pub const DEFAULT_PORT_BASE: u16 = 17000;
pub const DEFAULT_RPS: u32 = 10;

#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub port_base: u16,
    pub rps: u32,
    /// Where configs, revisions, keys and the audit journal go.
    pub state_dir: PathBuf,
    /// Start a real Prometheus scraping the gateways, and point the panels at it (PromQL).
    pub prometheus: bool,
}

/// One demo service version: (service, version, image, port offset, median latency ms).
const SERVICES: [(&str, &str, &str, u16, f64); 7] = [
    ("users", "blue", "users:1.4.2", 10, 18.0),
    ("users", "green", "users:1.5.0", 11, 15.0),
    ("payments", "v1", "payments:2.3.1", 12, 35.0),
    ("payments", "v2", "payments:2.4.0-rc1", 13, 40.0),
    ("search", "v1", "search:0.9.3", 14, 25.0),
    ("search", "v2", "search:1.0.0-beta", 15, 22.0),
    ("orders", "v1", "orders:3.1.0", 16, 30.0),
];

struct EnvShape {
    name: &'static str,
    timeout: &'static str,
    per_minute: u32,
    log_level: &'static str,
    users_live: &'static str,
    payments_canary: u32,
}

/// How the three environments differ, as a real team would set them apart.
const ENVS: [EnvShape; 3] = [
    EnvShape {
        name: "dev",
        timeout: "10s",
        per_minute: 6000,
        log_level: "debug",
        users_live: "green",
        payments_canary: 50,
    },
    EnvShape {
        name: "stage",
        timeout: "5s",
        per_minute: 3000,
        log_level: "info",
        users_live: "green",
        payments_canary: 25,
    },
    EnvShape {
        name: "prod",
        timeout: "2s",
        per_minute: 1200,
        log_level: "warn",
        users_live: "blue",
        payments_canary: 5,
    },
];

/// The sandbox's flags: `new-checkout` gates `/api/checkout`, off by default except for
/// the `beta-` cohort; `search-v2-ranking` is a string flag the services could read.
const FLAGS: &str = r#"{
  "metadata": {"owner": "sandbox"},
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"starts_with": [{"var": "targetingKey"}, "beta-"]}, "on", null]}
    },
    "search-ranking": {
      "state": "ENABLED",
      "variants": {"classic": "classic", "semantic": "semantic"},
      "defaultVariant": "classic",
      "targeting": {"fractional": [["classic", 90], ["semantic", 10]]}
    }
  }
}"#;

#[derive(Clone, Debug, Serialize)]
pub struct EnvEndpoints {
    pub gateway: String,
    pub admin: String,
    /// `service-version` → URL.
    pub services: BTreeMap<String, String>,
}

/// What `READY` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoints {
    pub envs: BTreeMap<String, EnvEndpoints>,
    pub control: String,
    /// The environments file for `signalbox ctl --config` and the TUI.
    pub config: String,
    pub state_dir: String,
}

pub struct RunningSandbox {
    pub endpoints: Endpoints,
    gateways: Vec<RunningGateway>,
    shutdown: CancellationToken,
    prometheus: Option<std::process::Child>,
}

#[derive(Clone)]
struct Control {
    services: Arc<BTreeMap<(String, String, String), Arc<DemoService>>>,
    shutdown: CancellationToken,
    endpoints: Arc<serde_json::Value>,
}

fn addr(port: u32) -> Result<SocketAddr, String> {
    let port = u16::try_from(port)
        .map_err(|_| format!("port {port} is out of range; choose a lower --port-base"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

impl RunningSandbox {
    pub async fn start(opts: SandboxOptions) -> Result<Self, String> {
        let base = u32::from(opts.port_base);
        let shutdown = CancellationToken::new();
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(|e| format!("cannot create {}: {e}", opts.state_dir.display()))?;

        // Bind every service port first, so a taken port fails fast and by name.
        let mut services = BTreeMap::new();
        let mut listeners = Vec::new();
        for (i, env) in ENVS.iter().enumerate() {
            for (svc, ver, _, off, median) in SERVICES {
                let a = addr(base + 100 * i as u32 + u32::from(off))?;
                let (s, l) = DemoService::bind(svc, ver, a, median)
                    .await
                    .map_err(|e| format!("{}: {e}", env.name))?;
                services.insert(
                    (env.name.to_string(), svc.to_string(), ver.to_string()),
                    s.clone(),
                );
                listeners.push((s, l));
            }
        }
        for (s, l) in listeners {
            s.serve(l, shutdown.clone());
        }

        let mut gateways = Vec::new();
        let mut envs = BTreeMap::new();
        let mut toml_envs = String::new();
        for (i, env) in ENVS.iter().enumerate() {
            let dir = opts.state_dir.join(env.name);
            std::fs::create_dir_all(dir.join("keys")).map_err(|e| e.to_string())?;
            let token = random_secret();
            write_secret(&dir.join("admin-token"), &token)?;
            let mut keys = Vec::new();
            for consumer in ["web-app", "partner"] {
                let key = random_secret();
                write_secret(&dir.join("keys").join(consumer), &key)?;
                keys.push(key);
            }
            let gw_addr = addr(base + 100 * i as u32)?;
            let admin_addr = addr(base + 100 * i as u32 + 1)?;
            std::fs::write(dir.join("flags.json"), FLAGS).map_err(|e| e.to_string())?;
            let yaml = gateway_config(env, base + 100 * i as u32, gw_addr, admin_addr, &dir);
            let cfg_path = dir.join("gateway.yaml");
            std::fs::write(&cfg_path, yaml).map_err(|e| e.to_string())?;
            let gw = match RunningGateway::start(GatewayOptions {
                config: cfg_path,
                listen: None,
                admin_listen: None,
                state_dir: Some(dir.join("state")),
                watch_config: false,
                reset_to_file: false,
            })
            .await
            {
                Ok(g) => g,
                Err(e) => {
                    shutdown.cancel();
                    for g in gateways {
                        RunningGateway::shutdown(g).await;
                    }
                    return Err(format!("{}: {e}", env.name));
                }
            };
            traffic::spawn(
                traffic::TrafficPlan {
                    base_url: format!("http://{gw_addr}"),
                    rps: opts.rps,
                    api_keys: keys,
                },
                shutdown.clone(),
            );
            envs.insert(
                env.name.to_string(),
                EnvEndpoints {
                    gateway: format!("http://{}", gw.addr),
                    admin: format!("http://{}", gw.admin_addr),
                    services: SERVICES
                        .iter()
                        .map(|(s, v, _, off, _)| {
                            (
                                format!("{s}-{v}"),
                                format!(
                                    "http://127.0.0.1:{}",
                                    base + 100 * i as u32 + u32::from(*off)
                                ),
                            )
                        })
                        .collect(),
                },
            );
            let (confirm, extra) = match env.name {
                "dev" => ("none", "canary_step = 10\n"),
                "stage" => ("yes", "max_canary_step = 50\ncanary_step = 10\n"),
                _ => ("type-name", "max_canary_step = 25\ncanary_step = 5\n"),
            };
            toml_envs.push_str(&format!(
                "\n[[environments]]\nname = \"{}\"\nadmin_url = \"http://{}\"\ngateway_url = \"http://{}\"\ntoken_file = \"{}\"\nconfirm = \"{confirm}\"\n{extra}",
                env.name,
                gw.admin_addr,
                gw.addr,
                dir.join("admin-token").display()
            ));
            gateways.push(gw);
        }

        let control_addr = addr(base + 99)?;
        let mut prometheus = None;
        if opts.prometheus {
            let prom_addr = addr(base + 98)?;
            let admins: Vec<(String, String)> = envs
                .iter()
                .map(|(n, e)| (n.clone(), e.admin.trim_start_matches("http://").to_string()))
                .collect();
            match start_prometheus(&opts.state_dir, prom_addr, &admins) {
                Ok(child) => prometheus = Some(child),
                Err(e) => {
                    shutdown.cancel();
                    for g in gateways {
                        RunningGateway::shutdown(g).await;
                    }
                    return Err(e);
                }
            }
            // Each environment's block ends at the next `[[environments]]`; its metrics table
            // goes at the end of its own block.
            let blocks: Vec<String> = toml_envs
                .split("\n[[environments]]\n")
                .map(str::to_string)
                .collect();
            toml_envs = blocks
                .iter()
                .map(|b| {
                    let name = b.lines().find_map(|l| l.strip_prefix("name = \"")).map(|n| n.trim_end_matches('"').to_string());
                    match name {
                        Some(n) => format!("{b}[environments.metrics]\nkind = \"promql\"\nurl = \"http://{prom_addr}\"\nselector = '{{env=\"{n}\"}}'\nwindow = \"10s\"\ninterval = \"2s\"\n"),
                        None => b.clone(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n[[environments]]\n");
        }
        let config_path = opts.state_dir.join("signalbox.toml");
        let toml = format!(
            "# Written by `signalbox sandbox`: the environments of a running sandbox.\naudit_log = \"{}\"\n\n[sandbox]\ncontrol_url = \"http://{control_addr}\"\n{toml_envs}",
            opts.state_dir.join("audit.jsonl").display()
        );
        std::fs::write(&config_path, toml).map_err(|e| e.to_string())?;
        let endpoints = Endpoints {
            envs,
            control: format!("http://{control_addr}"),
            config: config_path.display().to_string(),
            state_dir: opts.state_dir.display().to_string(),
        };
        let control = Control {
            services: Arc::new(services),
            shutdown: shutdown.clone(),
            endpoints: Arc::new(serde_json::to_value(&endpoints).unwrap_or_default()),
        };
        let listener = tokio::net::TcpListener::bind(control_addr)
            .await
            .map_err(|e| {
                format!(
                    "port {} (sandbox control) is not free: {e}",
                    control_addr.port()
                )
            })?;
        let app = axum::Router::new()
            .route("/sandbox", get(get_endpoints))
            .route("/sandbox/faults", get(list_faults))
            .route(
                "/sandbox/faults/{env}/{service}/{version}",
                get(get_fault).put(put_fault).delete(clear_fault),
            )
            .with_state(control);
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Self {
            endpoints,
            gateways,
            shutdown,
            prometheus,
        })
    }

    /// Stops traffic, gateways (draining briefly) and services.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(mut p) = self.prometheus.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let stops = self.gateways.into_iter().map(RunningGateway::shutdown);
        futures_util::future::join_all(stops).await;
    }
}

/// Prometheus from `$PATH` (Debian's package), scraping every gateway each second, its
/// data in the state dir. It runs as a child process and dies with the sandbox.
fn start_prometheus(
    state: &Path,
    listen: SocketAddr,
    admins: &[(String, String)],
) -> Result<std::process::Child, String> {
    let bin = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("prometheus"))
                .find(|p| p.is_file())
        })
        .ok_or("--prometheus needs Prometheus installed (e.g. apt-get install prometheus)")?;
    std::net::TcpListener::bind(listen)
        .map_err(|e| format!("port {} (prometheus) is not free: {e}", listen.port()))?;
    let dir = state.join("prometheus");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cfg = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (env, admin) in admins {
        cfg.push_str(&format!("  - job_name: gateway-{env}\n    static_configs:\n      - targets: ['{admin}']\n        labels: {{ env: {env} }}\n"));
    }
    std::fs::write(dir.join("prometheus.yml"), cfg).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("prometheus.log")).map_err(|e| e.to_string())?;
    std::process::Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--storage.tsdb.retention.time=2h")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start prometheus: {e}"))
}

fn gateway_config(
    env: &EnvShape,
    base: u32,
    gw: SocketAddr,
    admin: SocketAddr,
    dir: &Path,
) -> String {
    let t = |off: u32| format!("127.0.0.1:{}", base + off);
    let health = "health: { path: /readyz, interval: 1s, timeout: 500ms }";
    let (users_blue, users_green) = if env.users_live == "blue" {
        (100, 0)
    } else {
        (0, 100)
    };
    format!(
        "# {name}: generated by `signalbox sandbox`.
listen: {gw}
admin: {{ listen: {admin}, token_file: {token} }}
server: {{ shutdown_timeout: 1s }}
log: {{ level: {level}, access_log: false }}
flags: {flags}
consumers:
  - {{ name: web-app, keys: [{{ file: {keys}/web-app }}] }}
  - {{ name: partner, keys: [{{ file: {keys}/partner }}] }}
upstreams:
  users-blue: {{ targets: [{ub}], timeout: {to}, {health} }}
  users-green: {{ targets: [{ug}], timeout: {to}, {health} }}
  payments-v1: {{ targets: [{p1}], timeout: {to}, retries: 1, {health} }}
  payments-v2: {{ targets: [{p2}], timeout: {to}, retries: 1, {health} }}
  search-v1: {{ targets: [{s1}], timeout: {to}, {health} }}
  search-v2: {{ targets: [{s2}], timeout: {to}, {health} }}
  orders-v1: {{ targets: [{o1}], timeout: {to}, {health} }}
routes:
  - name: users
    paths: [/api/users]
    methods: [GET, POST]
    split: {{ users-blue: {users_blue}, users-green: {users_green} }}
  - name: payments
    paths: [/api/payments]
    split: {{ payments-v1: {p_stable}, payments-v2: {p_canary} }}
    canary: payments-v2
  - name: search
    paths: [/api/search]
    split: {{ search-v1: 100 }}
    canary_by_header: {{ name: X-Canary, value: \"true\", upstream: search-v2 }}
  - name: orders
    paths: [/api/orders]
    methods: [GET, POST, PUT]
    split: {{ orders-v1: 100 }}
    plugins:
      key_auth: {{ header: X-API-Key }}
      rate_limit: {{ per_minute: {rate}, by: consumer }}
      cors: {{ origins: [https://app.example.com], methods: [GET, POST, PUT], headers: [Content-Type, X-API-Key], max_age: 10m, credentials: true }}
  - name: checkout
    paths: [/api/checkout]
    split: {{ orders-v1: 100 }}
    flag: {{ key: new-checkout, targeting_key: X-User-Id, forward_headers: true }}
",
        name = env.name,
        token = dir.join("admin-token").display(),
        flags = dir.join("flags.json").display(),
        level = env.log_level,
        keys = dir.join("keys").display(),
        to = env.timeout,
        ub = t(10),
        ug = t(11),
        p1 = t(12),
        p2 = t(13),
        s1 = t(14),
        s2 = t(15),
        o1 = t(16),
        p_stable = 100 - env.payments_canary,
        p_canary = env.payments_canary,
        rate = env.per_minute,
    )
}

fn random_secret() -> String {
    format!("sbx_{}", uuid::Uuid::new_v4().simple())
}

/// Secrets are created 0600 so no other local user can read them.
fn write_secret(path: &Path, value: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, value.as_bytes()).map_err(|e| e.to_string())?;
    Ok(())
}

fn key(env: String, service: String, version: String) -> (String, String, String) {
    (env, service, version)
}

async fn get_endpoints(State(c): State<Control>) -> Response {
    axum::Json(c.endpoints.as_ref().clone()).into_response()
}

async fn list_faults(State(c): State<Control>) -> Response {
    let all: Vec<_> = c
        .services
        .iter()
        .map(|((e, s, v), svc)| json!({"env": e, "service": s, "version": v, "faults": svc.faults()}))
        .collect();
    axum::Json(all).into_response()
}

fn not_found(env: &str, service: &str, version: &str) -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": "not_found", "message": format!("no {service} {version} in {env}")}}))).into_response()
}

async fn get_fault(
    State(c): State<Control>,
    UrlPath((e, s, v)): UrlPath<(String, String, String)>,
) -> Response {
    match c.services.get(&key(e.clone(), s.clone(), v.clone())) {
        Some(svc) => axum::Json(svc.faults()).into_response(),
        None => not_found(&e, &s, &v),
    }
}

async fn put_fault(
    State(c): State<Control>,
    UrlPath((e, s, v)): UrlPath<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Some(svc) = c.services.get(&key(e.clone(), s.clone(), v.clone())) else {
        return not_found(&e, &s, &v);
    };
    let f: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"code": "bad_request", "message": err.to_string()}})),
            )
                .into_response();
        }
    };
    match svc.set_faults(f, &c.shutdown).await {
        Ok(()) => {
            tracing::info!(env = %e, service = %s, version = %v, faults = ?svc.faults(), "fault injected");
            axum::Json(svc.faults()).into_response()
        }
        Err(m) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": {"code": "invalid", "message": m}})),
        )
            .into_response(),
    }
}

async fn clear_fault(
    State(c): State<Control>,
    UrlPath((e, s, v)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(svc) = c.services.get(&key(e.clone(), s.clone(), v.clone())) else {
        return not_found(&e, &s, &v);
    };
    match svc.set_faults(Faults::default(), &c.shutdown).await {
        Ok(()) => axum::Json(svc.faults()).into_response(),
        Err(m) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"code": "internal", "message": m}})),
        )
            .into_response(),
    }
}
