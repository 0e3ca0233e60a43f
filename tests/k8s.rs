//! The Kubernetes backend against the in-repo fake API server (tests/common/fake_kube.rs):
//! the real `kube` client, real HTTP on loopback, objects in the shape a real API server
//! returns (tests/fixtures/k8s). Every change is checked in the fake's stored objects.

mod common;
#[path = "common/fake_kube.rs"]
mod fake_kube;

use std::sync::Arc;
use std::time::Duration;

use fake_kube::FakeKube;
use serde_json::{Value, json};
use signalbox::control::audit::Journal;
use signalbox::control::backend::Backend;
use signalbox::control::envfile::EnvDef;
use signalbox::control::{self, Env, PlanError};
use signalbox::domain::kube::{KubeView, WatchState};
use signalbox::domain::{Action, FlagState, Outcome};
use signalbox::k8s::KubeBackend;
use signalbox::k8s::client::KubeconfigSource;

const NS: &str = "shop";

fn backend(f: &FakeKube) -> KubeBackend {
    KubeBackend::new(
        KubeconfigSource::Inline(Box::new(f.kubeconfig(NS))),
        Some("fake".into()),
        NS.into(),
        Default::default(),
    )
}

fn def(name: &str, promote_from: Option<&str>) -> EnvDef {
    let mut text =
        format!("name = {name:?}\nkind = \"kubernetes\"\nnamespace = {NS:?}\nconfirm = \"none\"\n");
    if let Some(p) = promote_from {
        text.push_str(&format!("promote_from = {p:?}\n"));
    }
    toml::from_str(&text).expect("env def")
}

fn env(f: &FakeKube, source: Option<&FakeKube>) -> Env {
    Env {
        def: def("prod", source.map(|_| "stage")),
        backend: Backend::Kube(Arc::new(backend(f))),
        source: source.map(|s| {
            Ok(Box::new(Env {
                def: def("stage", None),
                backend: Backend::Kube(Arc::new(backend(s))),
                source: None,
                sandbox: None,
            }))
        }),
        sandbox: None,
    }
}

/// users-green fully rolled out and available.
fn green_ready(f: &FakeKube) {
    f.mutate("deployments", NS, "users-green", |d| {
        d["status"]["availableReplicas"] = json!(3);
        d["status"]["readyReplicas"] = json!(3);
        d["status"]
            .as_object_mut()
            .unwrap()
            .remove("unavailableReplicas");
    });
}

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::new(dir.path().join("audit.jsonl"));
    (dir, j)
}

async fn run(
    env: &Env,
    action: Action,
) -> (control::Plan, control::Report, Journal, tempfile::TempDir) {
    let plan = control::plan(env, action, None, chrono::Utc::now())
        .await
        .expect("plan");
    let (dir, j) = journal();
    let report = control::execute(env, &plan, &j, "alice@laptop").await;
    (plan, report, j, dir)
}

#[tokio::test]
async fn reads_a_realistic_namespace() {
    let f = FakeKube::with_fixtures(NS).await;
    let v = backend(&f).view().await.unwrap();
    let names: Vec<&str> = v.deployments.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "orders-canary",
            "orders-stable",
            "users-blue",
            "users-green"
        ]
    );
    let blue = v.deployment("users-blue").unwrap();
    assert_eq!(blue.track.as_deref(), Some("blue"));
    assert_eq!(blue.revision, Some(3));
    assert!(blue.fully_available());
    assert!(
        blue.images[0]
            .digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:1a2b")
    );
    assert_eq!(
        v.deployment("orders-canary").unwrap().rollout.label(),
        "stalled"
    );

    let users = v.service("users").unwrap();
    let bg = users
        .blue_green
        .as_ref()
        .expect("users is a blue-green pair");
    assert_eq!((bg.live.as_str(), bg.idle()), ("blue", Some("green")));

    let orders = v.route("orders").unwrap();
    assert_eq!(orders.rules[0].split()["orders-canary"], 10);
    assert_eq!(orders.canary.as_deref(), Some("orders-canary"));

    let flags = v.flags.as_ref().unwrap().flags.as_ref().unwrap();
    assert!(
        flags
            .iter()
            .any(|f| f.key == "new-checkout" && f.state == FlagState::Disabled)
    );

    let tls = v.secrets.iter().find(|s| s.name == "users-tls").unwrap();
    assert_eq!(tls.missing_keys, ["tls.crt"]);
    assert_eq!(tls.used_by, ["users-blue", "users-green"]);
    let keys = v
        .secrets
        .iter()
        .find(|s| s.name == "users-api-keys")
        .unwrap();
    assert!(!keys.exists);
    // Only referenced Secrets are read, by name; no value is kept.
    assert!(!v.secrets.iter().any(|s| s.name == "unrelated"));
    assert!(!format!("{v:?}").contains("czNjcjN0"));

    // The label selector went to the server; the flags ConfigMap was read by name.
    let reqs = f.requests();
    assert!(
        reqs.iter().any(
            |r| r.starts_with("GET /apis/apps/v1/namespaces/shop/deployments?")
                && r.contains("labelSelector=app.kubernetes.io%2Fpart-of")
        ),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r == "GET /api/v1/namespaces/shop/configmaps/signalbox-flags")
    );

    // The projection the panels and `control` share.
    let s = v.to_gateway_status();
    let users_route = s.route("users").unwrap();
    assert_eq!(users_route.split["users-blue"], 100);
    assert_eq!(users_route.split["users-green"], 0);
    assert_eq!(s.upstream("orders-canary").unwrap().healthy_targets(), 0);
    assert_eq!(
        s.route("orders").unwrap().canary_pair(),
        Some(("orders-stable", "orders-canary"))
    );
}

#[tokio::test]
async fn flip_patches_the_service_selector_after_the_same_image_check() {
    let prod = FakeKube::with_fixtures(NS).await;
    let stage = FakeKube::with_fixtures(NS).await;
    // Stage already runs green; prod's green is ready.
    stage.mutate("services", NS, "users", |s| {
        s["spec"]["selector"]["version"] = json!("green")
    });
    green_ready(&prod);
    let env = env(&prod, Some(&stage));
    let before_rv =
        prod.get("services", NS, "users").unwrap()["metadata"]["resourceVersion"].clone();
    let (plan, report, j, _d) = run(
        &env,
        Action::Flip {
            route: "users".into(),
            to: None,
        },
    )
    .await;
    assert!(plan.allowed(), "{:#?}", plan.checks);
    assert!(
        plan.checks
            .iter()
            .any(|c| c.name.starts_with("same image") && c.detail.contains("stage/users-green")),
        "{:#?}",
        plan.checks
    );
    assert_eq!(report.outcome, Outcome::Applied, "{:?}", report.error);
    let svc = prod.get("services", NS, "users").unwrap();
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "users", "version": "green"})
    );
    assert_ne!(svc["metadata"]["resourceVersion"], before_rv);
    assert_eq!(
        svc["metadata"]["annotations"]["signalbox.dev/changed-by"],
        "alice@laptop"
    );
    // Sent as a strategic merge patch carrying the resourceVersion it was planned on.
    let entries = j.read().unwrap().entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].outcome, Outcome::Applied);
    assert!(
        entries[0].after.contains("users-green"),
        "{}",
        entries[0].after
    );
}

#[tokio::test]
async fn the_same_image_preflight_refuses_a_mismatch() {
    let prod = FakeKube::with_fixtures(NS).await;
    let stage = FakeKube::with_fixtures(NS).await; // stage still runs blue's image
    green_ready(&prod);
    let env = env(&prod, Some(&stage));
    let (plan, report, j, _d) = run(
        &env,
        Action::Flip {
            route: "users".into(),
            to: Some("green".into()),
        },
    )
    .await;
    let check = plan
        .checks
        .iter()
        .find(|c| c.name.starts_with("same image"))
        .unwrap();
    assert!(!check.passed);
    assert!(
        check.detail.contains("users:1.5.0") && check.detail.contains("users:1.4.0"),
        "{}",
        check.detail
    );
    assert_eq!(report.outcome, Outcome::Refused);
    assert_eq!(
        prod.get("services", NS, "users").unwrap()["spec"]["selector"]["version"],
        "blue"
    );
    assert_eq!(j.read().unwrap().entries[0].outcome, Outcome::Refused);

    // A target that is not fully available is refused too.
    let prod2 = FakeKube::with_fixtures(NS).await;
    let plan = control::plan(
        &self::env(&prod2, None),
        Action::Flip {
            route: "users".into(),
            to: None,
        },
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let avail = plan
        .checks
        .iter()
        .find(|c| c.name == "users-green fully available")
        .unwrap();
    assert!(
        !avail.passed && avail.detail.contains("2/3 available"),
        "{avail:?}"
    );
}

#[tokio::test]
async fn canary_weight_change_patches_the_httproute() {
    let f = FakeKube::with_fixtures(NS).await;
    let env = env(&f, None);
    // The fixture's canary is stalled with no available pod: no traffic may go there.
    let plan = control::plan(
        &env,
        Action::SetCanary {
            route: "orders".into(),
            percent: 25,
        },
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(!plan.allowed());
    f.mutate("deployments", NS, "orders-canary", |d| {
        d["status"] = json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
    });
    let (plan, report, _j, _d) = run(
        &env,
        Action::SetCanary {
            route: "orders".into(),
            percent: 25,
        },
    )
    .await;
    assert_eq!(plan.before, "orders: orders-canary 10 / orders-stable 90");
    assert_eq!(plan.after, "orders: orders-canary 25 / orders-stable 75");
    assert_eq!(report.outcome, Outcome::Applied, "{:?}", report.error);
    let r = f.get("httproutes", NS, "orders").unwrap();
    let refs = &r["spec"]["rules"][0]["backendRefs"];
    assert_eq!(
        refs[0],
        json!({"group": "", "kind": "Service", "name": "orders-stable", "port": 8080, "weight": 75})
    );
    assert_eq!(refs[1]["weight"], 25);
    // The rest of the rule and the route survived the merge patch.
    assert_eq!(r["spec"]["rules"][0]["timeouts"]["request"], "10s");
    assert_eq!(r["spec"]["parentRefs"][0]["name"], "shop-gateway");
    assert_eq!(r["metadata"]["generation"], 4);
    assert!(f.requests().iter().any(|q| q.starts_with(
        "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/orders"
    )));
}

#[tokio::test]
async fn flag_toggle_patches_the_configmap() {
    let f = FakeKube::with_fixtures(NS).await;
    let env = env(&f, None);
    let (plan, report, _j, _d) = run(
        &env,
        Action::SetFlag {
            key: "new-checkout".into(),
            state: Some(FlagState::Enabled),
            variant: None,
        },
    )
    .await;
    assert_eq!(plan.after, "new-checkout: on (default off)");
    assert_eq!(report.outcome, Outcome::Applied, "{:?}", report.error);
    let cm = f.get("configmaps", NS, "signalbox-flags").unwrap();
    let file: Value =
        serde_json::from_str(cm["data"]["flags.flagd.json"].as_str().unwrap()).unwrap();
    assert_eq!(file["flags"]["new-checkout"]["state"], "ENABLED");
    assert_eq!(
        file["flags"]["search-v2"]["targeting"]["fractional"][1][1], 20,
        "other flags intact"
    );

    // An unknown variant never reaches the server.
    let e = control::plan(
        &env,
        Action::SetFlag {
            key: "search-v2".into(),
            state: None,
            variant: Some("purple".into()),
        },
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, PlanError::Invalid(ref m) if m.contains("purple")),
        "{e}"
    );
}

#[tokio::test]
async fn rollout_undo_restores_the_previous_replicaset_template() {
    let f = FakeKube::with_fixtures(NS).await;
    let env = env(&f, None);
    let (plan, report, _j, _d) = run(
        &env,
        Action::RolloutUndo {
            deployment: "users-blue".into(),
        },
    )
    .await;
    assert!(
        plan.before.contains("revision 3") && plan.after.contains("revision 2"),
        "{} → {}",
        plan.before,
        plan.after
    );
    assert!(plan.after.contains("users:1.3.0"), "{}", plan.after);
    assert_eq!(report.outcome, Outcome::Applied, "{:?}", report.error);
    let d = f.get("deployments", NS, "users-blue").unwrap();
    let t = &d["spec"]["template"];
    assert_eq!(
        t["spec"]["containers"][0]["image"],
        "registry.example.com/shop/users:1.3.0"
    );
    assert_eq!(t["spec"]["containers"][1]["name"], "envoy");
    assert!(t["metadata"]["labels"].get("pod-template-hash").is_none());
    assert_eq!(
        d["metadata"]["generation"], 5,
        "a new template is a new generation"
    );
    // users-green has no earlier revision.
    let e = control::plan(
        &env,
        Action::RolloutUndo {
            deployment: "users-green".into(),
        },
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no earlier revision"), "{e}");
}

#[tokio::test]
async fn restart_sets_the_restarted_at_annotation() {
    let f = FakeKube::with_fixtures(NS).await;
    let env = env(&f, None);
    let (_plan, report, _j, _d) = run(
        &env,
        Action::Restart {
            deployment: "users-blue".into(),
        },
    )
    .await;
    assert_eq!(report.outcome, Outcome::Applied, "{:?}", report.error);
    let d = f.get("deployments", NS, "users-blue").unwrap();
    let at = d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    // The rest of the template is as it was.
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["version"],
        "blue"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_change_made_in_between_is_a_conflict_not_an_overwrite() {
    let f = FakeKube::with_fixtures(NS).await;
    green_ready(&f);
    let env = env(&f, None);
    // The Service patch carries the planned resourceVersion: the server answers 409.
    let plan = control::plan(
        &env,
        Action::Flip {
            route: "users".into(),
            to: None,
        },
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    f.mutate("services", NS, "users", |s| {
        s["metadata"]["labels"]["owner"] = json!("bob")
    });
    let (_d, j) = journal();
    let r = control::execute(&env, &plan, &j, "alice").await;
    assert_eq!(r.outcome, Outcome::Conflict);
    let e = r.error.unwrap();
    assert!(
        e.contains("changed by someone else") && e.contains("users"),
        "{e}"
    );
    assert_eq!(
        f.get("services", NS, "users").unwrap()["spec"]["selector"]["version"],
        "blue"
    );
    assert!(
        f.requests()
            .iter()
            .any(|q| q.starts_with("PATCH /api/v1/namespaces/shop/services/users")),
        "the server said no, not the client"
    );

    // Read-modify-write objects are checked before the patch too.
    let plan = control::plan(
        &env,
        Action::SetFlag {
            key: "new-checkout".into(),
            state: Some(FlagState::Enabled),
            variant: None,
        },
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    f.mutate("configmaps", NS, "signalbox-flags", |c| {
        c["metadata"]["labels"]["touched"] = json!("yes")
    });
    let r = control::execute(&env, &plan, &j, "alice").await;
    assert_eq!(r.outcome, Outcome::Conflict);
    assert!(r.error.unwrap().contains("changed by someone else"));
    let cm = f.get("configmaps", NS, "signalbox-flags").unwrap();
    assert!(
        cm["data"]["flags.flagd.json"]
            .as_str()
            .unwrap()
            .contains("DISABLED")
    );
}

#[tokio::test]
async fn forbidden_names_the_verb_and_resource() {
    let f = FakeKube::with_fixtures(NS).await;
    green_ready(&f);
    let env = env(&f, None);
    f.forbid("patch", "services");
    let (_plan, report, j, _d) = run(
        &env,
        Action::Flip {
            route: "users".into(),
            to: None,
        },
    )
    .await;
    assert_eq!(report.outcome, Outcome::Refused);
    let e = report.error.unwrap();
    assert!(
        e.contains("cannot patch services \"users\" in namespace \"shop\""),
        "{e}"
    );
    assert!(e.contains("system:serviceaccount:ops:signalbox"), "{e}");
    assert_eq!(j.read().unwrap().entries[0].outcome, Outcome::Refused);

    f.forbid("list", "deployments");
    let e = backend(&f).view().await.unwrap_err().to_string();
    assert!(
        e.contains("cannot list deployments in namespace \"shop\""),
        "{e}"
    );
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<KubeView>,
    what: &str,
    ok: impl Fn(&KubeView) -> bool,
) -> KubeView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if ok(&rx.borrow()) {
            return rx.borrow().clone();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}; last view: {:#?}",
                rx.borrow().watches
            );
        }
    }
}

fn all_live(v: &KubeView) -> bool {
    v.watches.len() == 5 && v.watches.iter().all(|w| w.state.is_live())
}

#[tokio::test]
async fn a_watch_that_drops_resumes_and_one_that_is_too_old_relists() {
    let f = FakeKube::with_fixtures(NS).await;
    let b = Arc::new(backend(&f));
    let w = signalbox::k8s::watch::start(b).await.unwrap();
    let mut rx = w.updates.clone();
    let v = wait_for(&mut rx, "the initial lists", |v| {
        all_live(v) && v.deployments.len() == 4 && v.flags.is_some()
    })
    .await;
    assert_eq!(
        v.service("users")
            .unwrap()
            .blue_green
            .as_ref()
            .unwrap()
            .live,
        "blue"
    );
    assert!(
        v.secrets
            .iter()
            .any(|s| s.name == "users-db" && s.keys == ["password", "username"])
    );

    // The connection drops; a change made meanwhile arrives once the watch resumes from
    // its last resourceVersion.
    f.drop_watches();
    f.mutate("services", NS, "users", |s| {
        s["spec"]["selector"]["version"] = json!("green")
    });
    wait_for(&mut rx, "the flip after a dropped watch", |v| {
        v.service("users")
            .and_then(|s| s.blue_green.as_ref())
            .is_some_and(|bg| bg.live == "green")
    })
    .await;
    let resumed = f
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /api/v1/namespaces/shop/services?") && r.contains("watch=true")
        })
        .count();
    assert!(resumed >= 2, "the services watch was opened again");

    // History compacted while disconnected: the resumed watch gets 410 and lists again.
    let lists_before = f
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/apps/v1/namespaces/shop/deployments?")
                && !r.contains("watch=true")
        })
        .count();
    f.compact();
    f.drop_watches();
    f.mutate("deployments", NS, "users-green", |d| {
        d["spec"]["replicas"] = json!(5)
    });
    wait_for(&mut rx, "users-green at 5 replicas after a re-list", |v| {
        v.deployment("users-green")
            .is_some_and(|d| d.replicas.desired == 5)
    })
    .await;
    let lists_after = f
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/apps/v1/namespaces/shop/deployments?")
                && !r.contains("watch=true")
        })
        .count();
    assert!(
        lists_after > lists_before,
        "410 Gone made the watcher list again"
    );
    drop(w);
}

#[tokio::test]
async fn a_forbidden_watch_shows_in_the_view() {
    let f = FakeKube::with_fixtures(NS).await;
    f.forbid("list", "secrets");
    let w = signalbox::k8s::watch::start(Arc::new(backend(&f)))
        .await
        .unwrap();
    let mut rx = w.updates.clone();
    let v = wait_for(&mut rx, "secrets retrying", |v| {
        v.watches
            .iter()
            .any(|w| w.kind == "secrets" && matches!(w.state, WatchState::Retrying { .. }))
            && v.deployments.len() == 4
    })
    .await;
    let s = v.watches.iter().find(|w| w.kind == "secrets").unwrap();
    let WatchState::Retrying { error, .. } = &s.state else {
        unreachable!()
    };
    assert!(error.contains("cannot list secrets"), "{error}");
    // Everything else is live and shown.
    assert!(
        v.watches
            .iter()
            .filter(|w| w.kind != "secrets")
            .all(|w| w.state.is_live())
    );
    f.allow_all();
    wait_for(&mut rx, "secrets live after RBAC is fixed", |v| {
        all_live(v) && !v.secrets.is_empty()
    })
    .await;
}

/// `signalbox ctl` (the real binary) against a Kubernetes environment.
#[tokio::test]
async fn ctl_works_against_a_kubernetes_environment() {
    let f = FakeKube::with_fixtures(NS).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, f.kubeconfig_yaml(NS)).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg = dir.path().join("signalbox.toml");
    std::fs::write(
        &cfg,
        format!(
            "audit_log = {:?}\n[[environments]]\nname = \"prod\"\nkind = \"kubernetes\"\ncontext = \"fake\"\nnamespace = \"shop\"\nkubeconfig = {:?}\n",
            audit, kubeconfig
        ),
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_signalbox"));
        c.arg("ctl")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        c.env_remove("KUBECONFIG");
        async move {
            let out = tokio::time::timeout(Duration::from_secs(30), c.output())
                .await
                .expect("ctl finished")
                .expect("ctl ran");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = ctl(&["status"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("users-blue") && out.contains("stalled"),
        "{out}"
    );
    assert!(
        out.contains("users-api-keys") && out.contains("MISSING"),
        "{out}"
    );
    assert!(out.contains("orders-canary 10 / orders-stable 90"), "{out}");

    let (code, out, err) = ctl(&["--yes", "--output", "json", "restart", "users-blue"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["outcome"], "applied");
    assert!(f.get("deployments", NS, "users-blue").unwrap()["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());

    let (code, out, _) = ctl(&["--yes", "rollout-undo", "users-blue"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result:  applied"), "{out}");
    assert_eq!(
        f.get("deployments", NS, "users-blue").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "registry.example.com/shop/users:1.3.0"
    );

    // Refused by a preflight check: exit 2, nothing changed.
    let (code, out, _) = ctl(&["--yes", "flip", "users"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("users-green fully available"), "{out}");

    f.forbid("patch", "configmaps");
    let (code, out, _) = ctl(&["--yes", "flag", "new-checkout", "on"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("cannot patch configmaps \"signalbox-flags\""),
        "{out}"
    );

    let entries = Journal::new(&audit).read().unwrap().entries;
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[0].action,
        Action::Restart {
            deployment: "users-blue".into()
        }
    );
}

/// The next feed update for which `ok` holds, within 20 s (the watcher's backoff after an
/// outage is a few seconds).
async fn feed_until(
    feed: &mut control::feed::Feed,
    what: &str,
    ok: impl Fn(&control::feed::StatusUpdate) -> bool,
) -> control::feed::StatusUpdate {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, feed.next()).await {
            Ok(Some(u)) if ok(&u) => return u,
            Ok(Some(u)) => last = Some(u),
            Ok(None) => panic!("the feed ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; last update: {last:#?}"),
        }
    }
}

fn live_side(u: &control::feed::StatusUpdate) -> Option<String> {
    let s = u.status.as_ref().ok()?;
    s.route("users")?.live().map(str::to_string)
}

fn lists(f: &FakeKube) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && !r.contains("watch=true"))
        .count()
}

/// What the cockpit sees of a Kubernetes environment (`control::feed`, which `tui::run`
/// forwards to the screen): a change arrives through the watches, not a poll, and an outage
/// shows as retrying watches with the error, then as live again once the server is back.
#[tokio::test]
async fn the_cockpit_feed_follows_watches_and_shows_an_outage_and_the_reconnect() {
    let f = FakeKube::with_fixtures(NS).await;
    // The poll interval is an hour: anything that arrives in this test came by watch.
    let mut feed = control::feed::follow(Arc::new(env(&f, None)), Duration::from_secs(3600));
    let first = feed_until(&mut feed, "every watch live", |u| {
        u.watches.len() == 5 && u.watches.iter().all(|w| w.state.is_live())
    })
    .await;
    assert_eq!(live_side(&first).as_deref(), Some("users-blue"));
    assert!(
        first.revisions.is_none(),
        "a namespace has no gateway revisions"
    );
    let first_live_since = first
        .watches
        .iter()
        .map(|w| match w.state {
            WatchState::Live { since } => since,
            _ => unreachable!(),
        })
        .max()
        .unwrap();

    // Someone flips the Service: the feed shows it at once, with no further list.
    let lists_before = lists(&f);
    let t = std::time::Instant::now();
    f.mutate("services", NS, "users", |s| {
        s["spec"]["selector"]["version"] = json!("green")
    });
    feed_until(&mut feed, "the flip", |u| {
        live_side(u).as_deref() == Some("users-green")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a watch event, not a poll: {:?}",
        t.elapsed()
    );
    assert_eq!(lists(&f), lists_before, "nothing was listed again");

    // An outage: the watches drop and every reconnect gets a 500. The feed says which watches
    // are retrying and why; the last state stays (the app keeps it, marked stale).
    // (500, not 503: the kube client retries a 503 itself for minutes before the watcher
    // sees an error.)
    f.set_unavailable(true);
    f.drop_watches();
    let down = feed_until(&mut feed, "retrying watches", |u| {
        u.watches
            .iter()
            .any(|w| matches!(&w.state, WatchState::Retrying { .. }))
    })
    .await;
    let (kind, error) = down
        .watches
        .iter()
        .find_map(|w| match &w.state {
            WatchState::Retrying { error, .. } => Some((w.kind.clone(), error.clone())),
            _ => None,
        })
        .unwrap();
    assert!(
        error.contains("unavailable") && error.contains(&kind),
        "the error names the kind and the cause: {error}"
    );
    let all_down = feed_until(&mut feed, "no watch live", |u| u.status.is_err()).await;
    let e = all_down.status.unwrap_err();
    assert!(e.contains("no watch on kube://fake/shop is live"), "{e}");

    // The server comes back: every watch reconnects and a change made meanwhile shows.
    f.mutate("services", NS, "users", |s| {
        s["spec"]["selector"]["version"] = json!("blue")
    });
    f.set_unavailable(false);
    let back = feed_until(&mut feed, "every watch live again", |u| {
        u.watches.len() == 5 && u.watches.iter().all(|w| w.state.is_live())
    })
    .await;
    let back = if live_side(&back).as_deref() == Some("users-blue") {
        back
    } else {
        feed_until(&mut feed, "the change made during the outage", |u| {
            live_side(u).as_deref() == Some("users-blue")
        })
        .await
    };
    for w in &back.watches {
        let WatchState::Live { since } = w.state else {
            unreachable!()
        };
        assert!(since > first_live_since, "{} reconnected", w.kind);
    }
}

/// A free loopback port in 28000–29999 (the range these tests may use), bound then released.
fn test_port() -> u16 {
    let start = 28000 + fastrand::u16(..2000);
    (0..2000)
        .map(|i| 28000 + (start - 28000 + i) % 2000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 28000-29999")
}

/// The real `signalbox` binary, its stderr collected; killed by PID on drop, so a failing
/// test leaves nothing running.
struct GatewayProc {
    child: std::process::Child,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl GatewayProc {
    fn spawn(args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("signalbox runs");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().expect("stderr"), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_config(port: u16, admin: u16, blue: &str, green: &str, split: (u32, u32)) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin} }}\nupstreams:\n  users-blue: {{ targets: [{blue}] }}\n  users-green: {{ targets: [{green}] }}\nroutes:\n  - {{ name: users, paths: [/api/users], split: {{ users-blue: {}, users-green: {} }} }}\nflags: flags.json\n",
        split.0, split.1
    )
}

const GATEWAY_FLAGS: &str = r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}"#;

/// `signalbox gateway --config-map ops/signalbox-gateway` (the real binary) against the fake
/// API server through a kubeconfig: it serves the ConfigMap's config, hot-reloads a change
/// (checked by real HTTP through the gateway to real loopback upstreams), and rejects a bad
/// config, saying so in its log, while the old config keeps serving.
#[tokio::test]
async fn the_gateway_follows_its_configmap_and_keeps_serving_through_a_bad_config() {
    let blue = common::upstream("users-blue").await;
    let green = common::upstream("users-green").await;
    let f = FakeKube::start().await;
    let (port, admin) = (test_port(), test_port());
    let cm = |config: String| {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "signalbox-gateway", "namespace": "ops"},
            "data": {"config.yaml": config, "flags.json": GATEWAY_FLAGS},
        })
    };
    f.insert(
        "configmaps",
        "ops",
        cm(gateway_config(
            port,
            admin,
            &blue.target(),
            &green.target(),
            (100, 0),
        )),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, f.kubeconfig_yaml("ops")).unwrap();
    let state = dir.path().join("state");
    let gw = GatewayProc::spawn(&[
        "gateway",
        "--config-map",
        "ops/signalbox-gateway",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--context",
        "fake",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let http = common::client();
    let admin_url = |path: &str| format!("http://127.0.0.1:{admin}{path}");
    let t = std::time::Instant::now();
    loop {
        if let Ok(r) = http.get(admin_url("/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the gateway did not become ready; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let who = || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/api/users"))
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["upstream"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let state_of = || async {
        http.get(admin_url("/admin/state"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(who().await, "users-blue");
    }
    let first = state_of().await;
    assert_eq!(
        first["flags"][0]["key"], "new-checkout",
        "the flag file beside it is served"
    );

    // The ConfigMap changes: the gateway reloads it and traffic moves.
    f.mutate("configmaps", "ops", "signalbox-gateway", |o| {
        o["data"]["config.yaml"] = json!(gateway_config(
            port,
            admin,
            &blue.target(),
            &green.target(),
            (0, 100)
        ))
    });
    let t = std::time::Instant::now();
    while who().await != "users-green" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the ConfigMap change was not applied; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied = state_of().await;
    assert!(applied["revision"].as_u64() > first["revision"].as_u64());
    assert_eq!(applied["routes"][0]["split"]["users-green"], 100);

    // A bad config: rejected and logged; the running config keeps serving.
    f.mutate("configmaps", "ops", "signalbox-gateway", |o| {
        o["data"]["config.yaml"] =
            json!("upstreams: {}\nroutes:\n  - { name: users, paths: [/api/users], split: { nowhere: 1 } }\n")
    });
    let t = std::time::Instant::now();
    while !gw
        .log()
        .contains("config rejected; the running config is unchanged")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the bad config was not reported; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.log().contains("nowhere"),
        "the log says what is wrong:\n{}",
        gw.log()
    );
    for _ in 0..5 {
        assert_eq!(who().await, "users-green");
    }
    let after = state_of().await;
    assert_eq!(after["revision"], applied["revision"]);
    assert_eq!(after["config_hash"], applied["config_hash"]);

    // Fixed: the watch is still followed after a rejection.
    f.mutate("configmaps", "ops", "signalbox-gateway", |o| {
        o["data"]["config.yaml"] = json!(gateway_config(
            port,
            admin,
            &blue.target(),
            &green.target(),
            (100, 0)
        ))
    });
    let t = std::time::Instant::now();
    while who().await != "users-blue" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the fixed config was not applied; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(blue.hits() >= 6 && green.hits() >= 6);
}
