//! deploy/: every manifest deserialises into its k8s-openapi type and serialises back to the
//! same JSON (so a misspelt or misplaced field fails), the gateway's ConfigMap is a config the
//! real parser accepts, the Deployment's probes and the Prometheus scrape point at what the
//! real gateway binary serves, the RBAC Roles cover every request the backend makes (recorded
//! against the fake API server, not copied by hand), and hadolint passes the Dockerfile.

#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::DynamicObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use signalbox::control::backend::Backend;
use signalbox::control::envfile::EnvDef;
use signalbox::control::{self, Env};
use signalbox::domain::{Action, FlagState, Outcome};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every document of every YAML file under deploy/kubernetes, with its file name.
fn documents() -> Vec<(String, Value)> {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        for d in parsed.into_iter().filter(|d| !d.is_null()) {
            docs.push((name.clone(), d));
        }
    }
    docs
}

fn kind_of(d: &Value) -> (&str, &str) {
    (
        d["apiVersion"].as_str().unwrap_or_default(),
        d["kind"].as_str().unwrap_or_default(),
    )
}

fn name_of(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or_default()
}

/// Deserialises into `T` and back: any field `T` does not know (a typo, a wrong level) is
/// dropped on the way and makes the JSON differ.
fn strict<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) -> T {
    let what = format!("{file}: {} {}", kind_of(doc).1, name_of(doc));
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what}: does not deserialise: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    differences("", doc, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: not understood as written (misspelt or misplaced fields?):\n  {}",
        diffs.join("\n  ")
    );
    typed
}

/// Where `written` and `understood` differ, as JSON paths.
fn differences(path: &str, written: &Value, understood: &Value, out: &mut Vec<String>) {
    match (written, understood) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => differences(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k}: unknown field, dropped")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added in the round trip"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: written {a}, understood {b}")),
        _ => {}
    }
}

/// Keys an object may have, for the custom resources no crate types here.
fn only_keys(what: &str, v: &Value, allowed: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected a map, got {v}"));
    for k in obj.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: unknown field {k:?} (known: {allowed:?})"
        );
    }
}

struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    accounts: Vec<ServiceAccount>,
    routes: Vec<DynamicObject>,
    monitors: Vec<Value>,
}

fn manifests() -> Manifests {
    let mut m = Manifests {
        deployments: vec![],
        services: vec![],
        config_maps: vec![],
        roles: vec![],
        bindings: vec![],
        accounts: vec![],
        routes: vec![],
        monitors: vec![],
    };
    for (file, d) in documents() {
        assert!(!name_of(&d).is_empty(), "{file}: a document without a name");
        match kind_of(&d) {
            ("apps/v1", "Deployment") => m.deployments.push(strict(&file, &d)),
            ("v1", "Service") => m.services.push(strict(&file, &d)),
            ("v1", "ConfigMap") => m.config_maps.push(strict(&file, &d)),
            ("v1", "ServiceAccount") => m.accounts.push(strict(&file, &d)),
            ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(strict(&file, &d)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => m.bindings.push(strict(&file, &d)),
            ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
                check_httproute(&file, &d);
                m.routes.push(serde_json::from_value(d).unwrap());
            }
            ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                check_servicemonitor(&file, &d);
                m.monitors.push(d);
            }
            other => panic!("{file}: {other:?} is not a kind this test knows"),
        }
    }
    m
}

fn check_httproute(file: &str, d: &Value) {
    let what = format!("{file}: HTTPRoute {}", name_of(d));
    only_keys(&what, d, &["apiVersion", "kind", "metadata", "spec"]);
    only_keys(
        &what,
        &d["metadata"],
        &["name", "namespace", "labels", "annotations"],
    );
    let spec = &d["spec"];
    only_keys(&what, spec, &["parentRefs", "hostnames", "rules"]);
    let parents = spec["parentRefs"].as_array().expect("spec.parentRefs");
    assert!(!parents.is_empty(), "{what}: no parentRefs");
    for p in parents {
        only_keys(
            &what,
            p,
            &["group", "kind", "namespace", "name", "sectionName", "port"],
        );
        assert!(p["name"].is_string(), "{what}: a parentRef without a name");
    }
    let rules = spec["rules"].as_array().expect("spec.rules");
    assert!(!rules.is_empty(), "{what}: no rules");
    for r in rules {
        only_keys(
            &what,
            r,
            &[
                "name",
                "matches",
                "filters",
                "backendRefs",
                "timeouts",
                "retry",
                "sessionPersistence",
            ],
        );
        for m in r["matches"].as_array().into_iter().flatten() {
            only_keys(&what, m, &["path", "headers", "queryParams", "method"]);
            if !m["path"].is_null() {
                only_keys(&what, &m["path"], &["type", "value"]);
                assert!(
                    ["Exact", "PathPrefix", "RegularExpression"]
                        .contains(&m["path"]["type"].as_str().unwrap_or_default()),
                    "{what}: path type {}",
                    m["path"]["type"]
                );
            }
        }
        let refs = r["backendRefs"].as_array().expect("rules[].backendRefs");
        assert!(!refs.is_empty(), "{what}: a rule without backendRefs");
        for b in refs {
            only_keys(
                &what,
                b,
                &[
                    "group",
                    "kind",
                    "name",
                    "namespace",
                    "port",
                    "weight",
                    "filters",
                ],
            );
            assert!(b["name"].is_string() && b["port"].is_u64(), "{what}: {b}");
        }
    }
}

fn check_servicemonitor(file: &str, d: &Value) {
    let what = format!("{file}: ServiceMonitor {}", name_of(d));
    only_keys(&what, d, &["apiVersion", "kind", "metadata", "spec"]);
    let spec = &d["spec"];
    only_keys(
        &what,
        spec,
        &["selector", "namespaceSelector", "endpoints", "jobLabel"],
    );
    assert!(
        spec["selector"]["matchLabels"].is_object(),
        "{what}: selector"
    );
    let eps = spec["endpoints"].as_array().expect("spec.endpoints");
    assert!(!eps.is_empty(), "{what}: no endpoints");
    for e in eps {
        only_keys(
            &what,
            e,
            &[
                "port",
                "path",
                "interval",
                "scrapeTimeout",
                "scheme",
                "honorLabels",
            ],
        );
        assert!(
            e["port"].is_string(),
            "{what}: endpoints[].port is a port name"
        );
    }
}

#[test]
fn every_manifest_is_a_valid_kubernetes_object() {
    let m = manifests();
    assert!(
        m.deployments.len() >= 3,
        "the gateway and a blue/green pair"
    );
    assert!(!m.services.is_empty() && !m.config_maps.is_empty());
    assert!(!m.roles.is_empty() && !m.bindings.is_empty() && !m.accounts.is_empty());
    assert!(!m.routes.is_empty() && !m.monitors.is_empty());
    // Every binding points at a Role and ServiceAccounts that are shipped.
    for b in &m.bindings {
        assert!(
            m.roles
                .iter()
                .any(|r| r.metadata.name == Some(b.role_ref.name.clone())),
            "RoleBinding {:?} refers to a Role that is not in deploy/",
            b.metadata.name
        );
        for s in b
            .subjects
            .iter()
            .flatten()
            .filter(|s| s.kind == "ServiceAccount")
        {
            assert!(
                m.accounts
                    .iter()
                    .any(|a| a.metadata.name.as_deref() == Some(&s.name)),
                "RoleBinding {:?}: ServiceAccount {} is not in deploy/",
                b.metadata.name,
                s.name
            );
        }
    }
    // No wildcards, and nothing the backend never does.
    for r in &m.roles {
        for rule in r.rules.iter().flatten() {
            for v in &rule.verbs {
                assert!(
                    ["get", "list", "watch", "patch", "update"].contains(&v.as_str()),
                    "Role {:?} grants {v}",
                    r.metadata.name
                );
            }
            for x in rule
                .resources
                .iter()
                .flatten()
                .chain(rule.api_groups.iter().flatten())
            {
                assert_ne!(x, "*", "Role {:?} has a wildcard", r.metadata.name);
            }
        }
    }
}

fn gateway_deployment(m: &Manifests) -> &Deployment {
    m.deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("signalbox-gateway"))
        .expect("the gateway Deployment")
}

#[test]
fn the_gateway_deployment_is_locked_down() {
    let m = manifests();
    let d = gateway_deployment(&m);
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    for c in &pod.containers {
        let sc = c
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()]),
            "{}",
            c.name
        );
        let res = c.resources.as_ref().expect("resources");
        assert!(
            res.requests
                .as_ref()
                .is_some_and(|r| r.contains_key("memory"))
        );
        assert!(
            res.limits
                .as_ref()
                .is_some_and(|r| r.contains_key("memory"))
        );
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    }
}

/// The gateway's ConfigMap and the arguments that name it.
fn gateway_config_map(m: &Manifests) -> (&ConfigMap, String, String) {
    let d = gateway_deployment(m);
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let args = c.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--config-map")
        .expect("the gateway runs with --config-map");
    let (ns, name) = args[at + 1].split_once('/').expect("NAMESPACE/NAME");
    let key = args
        .iter()
        .position(|a| a == "--config-key")
        .map_or("config.yaml".to_string(), |i| args[i + 1].clone());
    let cm = m
        .config_maps
        .iter()
        .find(|c| {
            c.metadata.name.as_deref() == Some(name) && c.metadata.namespace.as_deref() == Some(ns)
        })
        .unwrap_or_else(|| panic!("ConfigMap {ns}/{name} is not in deploy/"));
    (cm, name.to_string(), key)
}

#[test]
fn the_gateway_configmap_holds_a_config_the_real_parser_accepts() {
    let m = manifests();
    let (cm, name, key) = gateway_config_map(&m);
    let data = cm.data.clone().unwrap_or_default();
    let text = data.get(&key).expect("the config key");
    let cfg = signalbox::gateway::config::parse_str(text, &format!("{name}/{key}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.routes.is_empty());
    // The flag file it names sits beside it and parses.
    let flags = signalbox::k8s::flags::parse(cm, Some("flags.flagd.json"));
    let flags = flags.flags.expect("the flagd file parses");
    assert!(
        flags
            .iter()
            .any(|f| f.key == "new-checkout" && f.state == FlagState::Disabled)
    );
    assert!(text.contains("flags: flags.flagd.json"));
}

/// The example app, read the way the cockpit reads a namespace.
#[test]
fn the_example_app_is_a_blue_green_pair_and_a_weighted_canary_to_the_cockpit() {
    let m = manifests();
    let app = |labels: &Option<BTreeMap<String, String>>| {
        labels.as_ref().is_some_and(|l| {
            l.get("app.kubernetes.io/part-of")
                .is_some_and(|v| v == "shop")
        })
    };
    let raw = signalbox::k8s::client::RawNamespace {
        deployments: m
            .deployments
            .iter()
            .filter(|d| app(&d.metadata.labels))
            .cloned()
            .collect(),
        services: m
            .services
            .iter()
            .filter(|s| app(&s.metadata.labels))
            .cloned()
            .collect(),
        routes: m.routes.clone(),
        flags: Some(gateway_config_map(&m).0.clone()),
        secrets: vec![],
    };
    let settings = signalbox::k8s::KubeSettings {
        flags_config_map: "signalbox-gateway".into(),
        flags_key: Some("flags.flagd.json".into()),
        ..Default::default()
    };
    let v = signalbox::k8s::client::assemble("prod", "shop", &settings, &raw);
    let bg = v
        .service("users")
        .and_then(|s| s.blue_green.clone())
        .expect("users is a blue/green pair");
    assert_eq!(bg.live, "blue");
    assert_eq!(bg.idle(), Some("green"));
    // The pair differs only by the track label (and name).
    let (b, g) = (
        v.deployment("users-blue").unwrap(),
        v.deployment("users-green").unwrap(),
    );
    assert_eq!(b.images, g.images);
    let orders = v.route("orders").expect("the orders HTTPRoute");
    let split = orders.rules[0].split();
    assert_eq!(split["orders-stable"], 90);
    assert_eq!(split["orders-canary"], 10);
    assert_eq!(orders.canary.as_deref(), Some("orders-canary"));
    // Every backendRef is a Service that is shipped.
    for r in &v.routes {
        for rule in &r.rules {
            for b in &rule.backends {
                assert!(
                    v.service(&b.name).is_some(),
                    "{}: no Service {}",
                    r.name,
                    b.name
                );
            }
        }
    }
    assert!(v.flags.as_ref().unwrap().flags.is_ok());
}

// ---- the real gateway serves what the probes and the scrape ask for --------------------

struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn test_port() -> u16 {
    let start = fastrand::u16(..2000);
    (0..2000)
        .map(|i| 28000 + (start + i) % 2000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 28000-29999")
}

fn container_port(
    d: &Deployment,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            d.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

#[tokio::test]
async fn probes_and_the_scrape_match_what_the_gateway_serves() {
    let m = manifests();
    let d = gateway_deployment(&m);
    let (cm, _, key) = gateway_config_map(&m);
    let data = cm.data.clone().unwrap_or_default();
    let cfg = signalbox::gateway::config::parse_str(&data[&key], "config").unwrap();
    let admin_port = cfg.admin.listen.port();
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let http_port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .unwrap();
    assert_eq!(
        i32::from(cfg.listen.port()),
        http_port.container_port,
        "traffic port"
    );

    // (path, port) every probe and scrape asks for, checked against the config's admin port.
    let mut wanted: Vec<(String, &str)> = Vec::new();
    for (what, probe) in [
        ("readiness", &c.readiness_probe),
        ("liveness", &c.liveness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect(what);
        assert_eq!(
            container_port(d, &get.port),
            i32::from(admin_port),
            "{what} probe port"
        );
        wanted.push((get.path.clone().unwrap(), what));
    }
    let ann = pod_annotations(d);
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], admin_port.to_string());
    wanted.push((ann["prometheus.io/path"].clone(), "scrape annotation"));
    let svc = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("signalbox-gateway"))
        .unwrap();
    for mon in &m.monitors {
        for e in mon["spec"]["endpoints"].as_array().unwrap() {
            let port = svc
                .spec
                .as_ref()
                .unwrap()
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == e["port"].as_str())
                .unwrap_or_else(|| {
                    panic!("ServiceMonitor port {} is not a Service port", e["port"])
                });
            let target = port.target_port.as_ref().unwrap();
            assert_eq!(
                container_port(d, target),
                i32::from(admin_port),
                "ServiceMonitor port"
            );
            wanted.push((e["path"].as_str().unwrap().to_string(), "ServiceMonitor"));
        }
    }
    // Readiness is the gateway's own: `/readyz` follows upstream health, and as a readiness
    // probe it would take every replica out of the Service when one backend is down.
    assert!(
        wanted
            .iter()
            .any(|(p, w)| p == "/healthz" && *w == "readiness"),
        "{wanted:?}"
    );
    assert!(wanted.iter().all(|(p, _)| p != "/readyz"), "{wanted:?}");

    // The real binary with the ConfigMap's files, on test ports.
    let dir = tempfile::tempdir().unwrap();
    signalbox::k8s::config_source::write_files(&data, dir.path()).unwrap();
    let (lp, ap) = (test_port(), test_port());
    let _gw = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
            .args(["gateway", "--config"])
            .arg(dir.path().join(&key))
            .args([
                "--listen",
                &format!("127.0.0.1:{lp}"),
                "--admin-listen",
                &format!("127.0.0.1:{ap}"),
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("SIGNALBOX_ADMIN_TOKEN", "deploy-test-token")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let t = Instant::now();
    while http
        .get(format!("http://127.0.0.1:{ap}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (path, what) in &wanted {
        let r = http
            .get(format!("http://127.0.0.1:{ap}{path}"))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        // Every probe answers 200 though the upstreams (cluster DNS names) are unreachable
        // here: the pod is ready.
        assert_eq!(code, 200, "{what} {path}");
        if path == "/metrics" {
            assert!(
                r.text().await.unwrap().contains("# TYPE"),
                "Prometheus text"
            );
        }
    }
    assert_eq!(
        http.get(format!("http://127.0.0.1:{ap}/no-such-probe"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "an unknown path is not answered 200, so the checks above mean something"
    );
}

fn pod_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

// ---- RBAC: what the backend really asks the API server for -----------------------------

/// `METHOD /path?query` → (verb, API group, resource, name).
fn rbac_of(request: &str) -> Option<(String, String, String, Option<String>)> {
    let (method, uri) = request.split_once(' ')?;
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", "namespaces", _, rest @ ..] => (String::new(), rest),
        ["apis", g, _, "namespaces", _, rest @ ..] => ((*g).to_string(), rest),
        _ => return None,
    };
    let resource = rest.first()?.to_string();
    let name = rest.get(1).map(|s| s.to_string());
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("POST", _) => "create",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((verb.into(), group, resource, name))
}

fn allows(
    rules: &[PolicyRule],
    verb: &str,
    group: &str,
    resource: &str,
    name: Option<&str>,
) -> bool {
    rules.iter().any(|r| {
        r.verbs.iter().any(|v| v == verb)
            && r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && match (&r.resource_names, name) {
                (None, _) => true,
                (Some(names), Some(n)) => names.iter().any(|x| x == n),
                // A list or watch is allowed by resourceNames when it selects that one name.
                (Some(names), None) => !names.is_empty(),
            }
    })
}

fn role<'a>(m: &'a Manifests, name: &str) -> &'a [PolicyRule] {
    m.roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .and_then(|r| r.rules.as_deref())
        .unwrap_or_else(|| panic!("Role {name} is not in deploy/"))
}

fn env_def() -> EnvDef {
    toml::from_str(
        "name = \"prod\"\nkind = \"kubernetes\"\nnamespace = \"shop\"\nconfirm = \"none\"\n",
    )
    .unwrap()
}

#[tokio::test]
async fn the_cockpit_role_covers_every_request_the_backend_makes() {
    let f = fake_kube::FakeKube::with_fixtures("shop").await;
    let backend = Arc::new(signalbox::k8s::KubeBackend::new(
        signalbox::k8s::client::KubeconfigSource::Inline(Box::new(f.kubeconfig("shop"))),
        Some("fake".into()),
        "shop".into(),
        Default::default(),
    ));
    // Reading: once, and through the watches the cockpit uses.
    backend.view().await.unwrap();
    let mut feed = control::feed::follow(
        Arc::new(Env {
            def: env_def(),
            backend: Backend::Kube(backend.clone()),
            source: None,
            sandbox: None,
        }),
        Duration::from_secs(3600),
    );
    let t = Instant::now();
    loop {
        let u = tokio::time::timeout(Duration::from_secs(15), feed.next())
            .await
            .unwrap()
            .unwrap();
        if u.watches.len() == 5 && u.watches.iter().all(|w| w.state.is_live()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15));
    }
    drop(feed);
    // Every change the backend can make, so every verb it uses is recorded.
    let ready = json!({"observedGeneration": 9, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}, {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]});
    for d in ["users-green", "orders-canary"] {
        f.mutate("deployments", "shop", d, |o| o["status"] = ready.clone());
    }
    let env = Env {
        def: env_def(),
        backend: Backend::Kube(backend),
        source: None,
        sandbox: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let journal = signalbox::control::audit::Journal::new(dir.path().join("audit.jsonl"));
    for action in [
        Action::Flip {
            route: "users".into(),
            to: None,
        },
        Action::SetCanary {
            route: "orders".into(),
            percent: 25,
        },
        Action::SetFlag {
            key: "new-checkout".into(),
            state: Some(FlagState::Enabled),
            variant: None,
        },
        Action::Restart {
            deployment: "users-blue".into(),
        },
        Action::RolloutUndo {
            deployment: "users-blue".into(),
        },
    ] {
        let plan = control::plan(&env, action.clone(), None, chrono::Utc::now())
            .await
            .unwrap();
        assert!(plan.allowed(), "{action:?}: {:#?}", plan.checks);
        let report = control::execute(&env, &plan, &journal, "deploy-test").await;
        assert_eq!(
            report.outcome,
            Outcome::Applied,
            "{action:?}: {:?}",
            report.error
        );
    }

    let m = manifests();
    let rules = role(&m, "signalbox-cockpit");
    let mut used = BTreeSet::new();
    for r in f.requests() {
        let (verb, group, resource, name) = rbac_of(&r).unwrap_or_else(|| panic!("{r}"));
        assert!(
            allows(rules, &verb, &group, &resource, name.as_deref()),
            "the cockpit Role does not allow {verb} {resource} (group {group:?}), which the backend needs: {r}"
        );
        used.insert((verb, group, resource));
    }
    for v in ["get", "list", "watch", "patch"] {
        assert!(
            used.iter().any(|(x, _, _)| x == v),
            "no {v} was recorded: {used:?}"
        );
    }
}

#[tokio::test]
async fn the_gateway_role_covers_reading_and_watching_its_configmap() {
    let f = fake_kube::FakeKube::start().await;
    let m = manifests();
    let (cm, name, key) = gateway_config_map(&m);
    let mut obj = serde_json::to_value(cm).unwrap();
    obj["metadata"]["namespace"] = json!("shop");
    f.insert("configmaps", "shop", obj);
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(f.kubeconfig("shop"), &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let cm_ref: signalbox::k8s::config_source::ConfigMapRef =
        format!("shop/{name}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    signalbox::k8s::config_source::fetch(&client, &cm_ref, &key, dir.path())
        .await
        .unwrap();
    // The same watch `follow` runs: list then watch, by name.
    let api = kube::Api::<ConfigMap>::namespaced(client, "shop");
    let cfg = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = kube::runtime::watcher(api, cfg);
    let mut stream = std::pin::pin!(stream);
    use futures_util::StreamExt;
    let t = Instant::now();
    while f
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count()
        == 0
    {
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(t.elapsed() < Duration::from_secs(10), "no watch was opened");
    }
    let rules = role(&m, "signalbox-gateway");
    for r in f.requests() {
        let (verb, group, resource, rname) = rbac_of(&r).unwrap();
        assert!(
            allows(
                rules,
                &verb,
                &group,
                &resource,
                rname.as_deref().or(Some(&name))
            ),
            "the gateway Role does not allow {verb} {resource}: {r}"
        );
        if rname.is_none() {
            assert!(
                r.contains(&format!("fieldSelector=metadata.name%3D{name}"))
                    || r.contains(&format!("metadata.name={name}")),
                "a list/watch allowed by resourceNames must select that name: {r}"
            );
        }
    }
}

// ---- the Dockerfile ----------------------------------------------------------------------

#[test]
fn the_dockerfile_passes_hadolint_and_builds_as_documented() {
    let path = deploy_dir().join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    // The profile that is benchmarked is the one that ships.
    assert!(text.contains("cargo build --profile dist --locked"));
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("[profile.dist]"),
        "Cargo.toml defines the dist profile"
    );
    assert!(text.contains(" AS build"), "multi-stage");
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime.starts_with("gcr.io/distroless/"),
        "distroless runtime"
    );
    assert!(runtime.contains("\nUSER 65532"), "non-root");
    // Every file the build copies exists and is not excluded by .dockerignore.
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .unwrap();
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(src).exists(),
                "{line}: {src} missing"
            );
            assert!(
                !ignore
                    .lines()
                    .any(|i| i.trim_end_matches('/') == src.trim_end_matches('/')),
                "{src} is copied but .dockerignore excludes it"
            );
        }
    }
    // hadolint: scripts/test.sh (and so CI) installs it and sets SIGNALBOX_REQUIRE_HADOLINT,
    // so there a missing hadolint fails; a bare `cargo test` says it did not lint.
    let out = match std::process::Command::new("hadolint").arg(&path).output() {
        Ok(o) => o,
        Err(e) if std::env::var_os("SIGNALBOX_REQUIRE_HADOLINT").is_none() => {
            eprintln!("hadolint not run ({e}); scripts/test.sh installs it");
            return;
        }
        Err(e) => panic!("hadolint is required (SIGNALBOX_REQUIRE_HADOLINT is set): {e}"),
    };
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
