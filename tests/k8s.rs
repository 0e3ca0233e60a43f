//! The Kubernetes backend against the in-repo fake API server (tests/common/fake_kube.rs):
//! the real `kube` client, real HTTP on loopback, objects in the shape a real API server
//! returns (tests/fixtures/k8s). Every change is checked in the fake's stored objects.

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
        backend: Backend::Kube(Box::new(backend(f))),
        source: source.map(|s| {
            Ok(Box::new(Env {
                def: def("stage", None),
                backend: Backend::Kube(Box::new(backend(s))),
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
