//! `signalbox ctl` (the real binary) and the `control` path against a real gateway.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{client, gateway, json, upstream};
use signalbox::control::audit::Journal;
use signalbox::control::envfile;
use signalbox::control::{self, Env};
use signalbox::domain::{Action, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
const TOKEN: &str = "ctl-admin-token-8c1f";

struct Setup {
    _ups: Vec<common::Upstream>,
    gw: common::Gateway,
    dir: tempfile::TempDir,
    envfile: std::path::PathBuf,
    journal: std::path::PathBuf,
}

async fn setup(extra_env: &str) -> Setup {
    let (b, g, v1, v2) = (
        upstream("blue").await,
        upstream("green").await,
        upstream("v1").await,
        upstream("v2").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, TOKEN).unwrap();
    let yaml = format!(
        "admin: {{ token_file: {} }}\nupstreams:\n  blue: {{ targets: [{}] }}\n  green: {{ targets: [{}] }}\n  v1: {{ targets: [{}] }}\n  v2: {{ targets: [{}] }}\nroutes:\n  - {{ name: users, paths: [/users], split: {{ blue: 100, green: 0 }} }}\n  - {{ name: payments, paths: [/pay], split: {{ v1: 100, v2: 0 }}, canary: v2 }}\n",
        tf.display(),
        b.target(),
        g.target(),
        v1.target(),
        v2.target()
    );
    let gw = gateway(&yaml).await;
    let journal = dir.path().join("audit.jsonl");
    let envfile = dir.path().join("signalbox.toml");
    std::fs::write(
        &envfile,
        format!(
            "actor = \"tester@ci\"\naudit_log = \"{}\"\n[[environments]]\nname = \"stage\"\nadmin_url = \"http://{}\"\ntoken_file = \"{}\"\nconfirm = \"type-name\"\nmax_canary_step = 25\n{extra_env}",
            journal.display(),
            gw.running().admin_addr,
            tf.display()
        ),
    )
    .unwrap();
    Setup {
        _ups: vec![b, g, v1, v2],
        gw,
        dir,
        envfile,
        journal,
    }
}

fn ctl(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--config")
        .arg(&s.envfile)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn who(s: &Setup, path: &str) -> String {
    json(client().get(s.gw.url(path)).send().await.unwrap()).await["upstream"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_text_and_stable_json() {
    let s = setup("").await;
    let (code, out, err) = tokio::task::spawn_blocking({
        let s = (s.envfile.clone(),);
        move || {
            let o = Command::new(BIN)
                .args(["ctl", "--config"])
                .arg(&s.0)
                .args(["status"])
                .output()
                .unwrap();
            (
                o.status.code().unwrap(),
                String::from_utf8_lossy(&o.stdout).to_string(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stage  revision 1"), "{out}");
    assert!(
        out.contains("users") && out.contains("blue 100% / green 0%"),
        "{out}"
    );
    assert!(out.contains("payments") && out.contains("v2"), "{out}");
    assert!(
        out.contains("REQ/S") && out.contains("P95"),
        "the metrics table: {out}"
    );

    let (code, out, _) = ctl(&s, &["--output", "json", "status"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["env"], "stage");
    assert_eq!(v["state"]["revision"], 1);
    assert_eq!(v["state"]["routes"][0]["name"], "users");
    assert_eq!(v["state"]["routes"][0]["split"]["blue"], 100);
    assert_eq!(v["state"]["routes"][1]["canary"], "v2");
    assert_eq!(v["state"]["upstreams"][0]["targets"][0]["healthy"], true);
    let routes = v["metrics"]["routes"]
        .as_array()
        .expect("status JSON carries the metrics sample");
    assert!(
        routes.iter().any(|r| r["route"] == "users"),
        "{}",
        v["metrics"]
    );
    assert!(
        v["metrics"]["source"]
            .as_str()
            .unwrap()
            .starts_with("scrape http://")
    );
    assert!(!out.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_canary_rollback_rollforward_move_real_traffic_and_are_journaled() {
    let s = setup("").await;
    // No terminal and no --yes: refused, exit 2, nothing changed.
    let (code, out, _) = ctl(&s, &["flip", "users"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no terminal to ask on; pass --yes"), "{out}");
    assert_eq!(who(&s, "/users").await, "blue");

    let (code, out, err) = ctl(&s, &["--yes", "flip", "users"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("before:  users: blue 100 / green 0"), "{out}");
    assert!(out.contains("after:   users: blue 0 / green 100"), "{out}");
    assert!(out.contains("applied as revision 2"), "{out}");
    assert_eq!(who(&s, "/users").await, "green");

    let (code, out, _) = ctl(
        &s,
        &["--yes", "--output", "json", "canary", "payments", "25"],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "applied");
    assert_eq!(v["revision"], 3);
    assert_eq!(v["after"], "payments: v1 75 / v2 25");
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true)
    );

    // A step above max_canary_step is refused by preflight.
    let (code, out, _) = ctl(&s, &["--yes", "canary", "payments", "100"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FAIL canary step within limit"), "{out}");

    let (code, out, _) = ctl(&s, &["--yes", "rollback"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied as revision 4"), "{out}");
    let st = json(
        client()
            .get(s.gw.admin_url("/admin/state"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        st["routes"][1]["split"],
        serde_json::json!({"v1": 100, "v2": 0})
    );
    let (code, _, _) = ctl(&s, &["--yes", "rollforward"]);
    assert_eq!(code, 0);
    let (code, out, _) = ctl(&s, &["--yes", "rollback", "--to", "1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(who(&s, "/users").await, "blue");

    let (code, out, _) = ctl(&s, &["revisions"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("roll back to revision 1") && out.contains("tester@ci"),
        "{out}"
    );

    let j = Journal::new(&s.journal).read().unwrap();
    let outcomes: Vec<Outcome> = j.entries.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Refused,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Refused,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Applied
        ]
    );
    let flip = &j.entries[1];
    assert_eq!(
        (flip.actor.as_str(), flip.env.as_str(), flip.revision),
        ("tester@ci", "stage", Some(2))
    );
    assert_eq!(flip.before, "users: blue 100 / green 0");
    let text = std::fs::read_to_string(&s.journal).unwrap();
    assert!(!text.contains(TOKEN), "the admin token reached the journal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_frozen_environments_refuse_unless_forced() {
    let s = setup("read_only = true\n").await;
    let (code, out, _) = ctl(&s, &["--yes", "flip", "users"]);
    assert_eq!(code, 2);
    assert!(out.contains("FAIL environment is writable"), "{out}");
    assert_eq!(who(&s, "/users").await, "blue");

    let s = setup("[[environments.freeze]]\nfrom = \"2000-01-01T00:00:00Z\"\nto = \"2999-01-01T00:00:00Z\"\nreason = \"millennium freeze\"\n").await;
    let (code, out, _) = ctl(&s, &["--yes", "flip", "users"]);
    assert_eq!(code, 2);
    assert!(out.contains("frozen: millennium freeze"), "{out}");
    let (code, out, _) = ctl(
        &s,
        &[
            "--yes",
            "--force",
            "incident INC-42 hotfix",
            "flip",
            "users",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(who(&s, "/users").await, "green");
    let j = Journal::new(&s.journal).read().unwrap();
    assert_eq!(
        j.entries.last().unwrap().forced.as_deref(),
        Some("incident INC-42 hotfix")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_is_a_conflict_and_a_torn_journal_is_survived() {
    let s = setup("").await;
    let cfg = envfile::load(&s.envfile).unwrap();
    let env = Env::connect(cfg.environments[0].clone()).unwrap();
    let journal = Journal::new(&s.journal);
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
    // Someone else changes the environment between plan and apply.
    let (code, _, _) = ctl(&s, &["--yes", "canary", "payments", "10"]);
    assert_eq!(code, 0);
    let r = control::execute(&env, &plan, &journal, "bob@host").await;
    assert_eq!(r.outcome, Outcome::Conflict);
    assert!(r.error.unwrap().contains("changed by someone else"));
    assert_eq!(who(&s, "/users").await, "blue", "no blind overwrite");

    // A crash left half a line at the end of the journal.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.journal)
        .map(|mut f| {
            use std::io::Write;
            f.write_all(b"{\"time\":\"2026-11-21T10:00:00Z\",\"act")
                .unwrap()
        })
        .unwrap();
    let (code, _, _) = ctl(&s, &["--yes", "flip", "users"]);
    assert_eq!(code, 0);
    let j = journal.read().unwrap();
    assert_eq!(j.skipped, 1);
    assert_eq!(j.entries.last().unwrap().outcome, Outcome::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_admin_api_is_a_clear_error_naming_the_address() {
    let s = setup("").await;
    let admin = s.gw.running().admin_addr;
    s.gw.stop().await;
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        let o = Command::new(BIN)
            .args(["ctl", "--config"])
            .arg(&s.envfile)
            .arg("status")
            .output()
            .unwrap();
        drop(s.dir);
        (
            o.status.code().unwrap(),
            String::new(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot reach http://{admin}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_would_send_traffic_to_a_down_upstream_is_refused() {
    let s = setup("").await;
    // Blue (live) dies; its failed requests eject it.
    s._ups[0].kill();
    for _ in 0..10 {
        let _ = client().get(s.gw.url("/users")).send().await;
    }
    let (code, out, err) = ctl(&s, &["--yes", "flip", "users"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(who(&s, "/users").await, "green");

    // Going back to revision 1 would put every user on blue again.
    let (code, out, _) = ctl(&s, &["--yes", "rollback"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FAIL blue is healthy") && out.contains("0/1 targets healthy"),
        "{out}"
    );
    assert_eq!(who(&s, "/users").await, "green");
    // An outage a rollback does not touch does not hold it up: with blue still down,
    // undoing a canary step (back to v1 alone, live already) goes ahead.
    let (code, out, _) = ctl(&s, &["--yes", "canary", "payments", "25"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = ctl(&s, &["--yes", "rollback"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("blue is healthy"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_the_config_running_now_says_so() {
    let s = setup("").await;
    for percent in ["20", "0"] {
        let (code, out, _) = ctl(&s, &["--yes", "canary", "payments", percent]);
        assert_eq!(code, 0, "{out}");
    }
    // Revision 3 (canary back at 0) has revision 1's config.
    let (code, out, _) = ctl(&s, &["--yes", "rollback", "--to", "1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("before:  revision 3: the same config as now")
            && out.contains("after:   revision 1: the same config; flags as they were then"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_after_the_command_a_percent_sign_and_a_mistyped_route() {
    let s = setup("").await;
    // Every ctl option is accepted after the subcommand too, and 25% is 25.
    let out = Command::new(BIN)
        .args([
            "ctl", "canary", "payments", "25%", "--yes", "--output", "json",
        ])
        .arg("--config")
        .arg(&s.envfile)
        .args(["--env", "stage", "--actor", "late@opts"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["after"], "payments: v1 75 / v2 25");
    assert_eq!(who(&s, "/users").await, "blue");

    // A mistyped route is refused naming the routes there are.
    let (code, out, _) = ctl(&s, &["--yes", "canary", "paymnets", "30%"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(r#"no route "paymnets" in stage; known: users, payments"#),
        "{out}"
    );

    // Usage errors are errors (1): 2 means refused.
    for args in [
        &["canary", "payments", "lots"][..],
        &["canary", "payments"],
        &["frobnicate"],
        &["status", "--no-such-option"],
    ] {
        let (code, out, err) = ctl(&s, args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
    let (code, _, _) = ctl(&s, &["--help"]);
    assert_eq!(code, 0);
}

/// Failures before any plan (no such environment, a token variable not set, an admin API
/// that does not answer) still print one JSON object under --output json.
#[test]
fn failures_before_a_plan_are_a_json_object_too() {
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, TOKEN).unwrap();
    let envfile = dir.path().join("signalbox.toml");
    std::fs::write(
        &envfile,
        format!(
            "audit_log = \"{}\"\n[[environments]]\nname = \"stage\"\nadmin_url = \"http://127.0.0.1:1\"\ntoken_file = \"{}\"\n[[environments]]\nname = \"prod\"\nadmin_url = \"http://127.0.0.1:1\"\ntoken_env = \"SIGNALBOX_CTL_TEST_NEVER_SET\"\n",
            dir.path().join("audit.jsonl").display(),
            tf.display()
        ),
    )
    .unwrap();
    for (args, env, says) in [
        (
            &["--env", "stagee", "status"][..],
            "stagee",
            r#"no environment "stagee""#,
        ),
        (
            &["--env", "prod", "status"],
            "prod",
            "SIGNALBOX_CTL_TEST_NEVER_SET",
        ),
        (
            &["--env", "stage", "status"],
            "stage",
            "cannot reach http://127.0.0.1:1",
        ),
        (
            &["--env", "stage", "--yes", "flip", "users"],
            "stage",
            "cannot reach",
        ),
    ] {
        let o = Command::new(BIN)
            .args(["ctl", "--output", "json", "--config"])
            .arg(&envfile)
            .args(args)
            .env_remove("SIGNALBOX_CTL_TEST_NEVER_SET")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains(says),
            "{args:?}: stderr keeps the message: {err}"
        );
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e}): {out:?}"));
        assert_eq!(v["outcome"], "failed", "{v}");
        assert_eq!(v["env"], env, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

#[test]
fn the_cockpit_without_an_environments_file_explains_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no environments file yet") && err.contains("signalbox sandbox"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_flips_and_rollbacks_under_load_fail_no_request() {
    let s = setup("").await;
    let cfg = envfile::load(&s.envfile).unwrap();
    let mut def = cfg.environments[0].clone();
    def.confirm = envfile::ConfirmPolicy::None;
    let env = Env::connect(def).unwrap();
    let journal = Journal::new(&s.journal);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (url, stop) = (s.gw.url("/users"), stop.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut bad) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => bad += 1,
                }
            }
            (ok, bad)
        }));
    }
    for i in 0..100 {
        let action = if i % 2 == 0 {
            Action::Flip {
                route: "users".into(),
                to: None,
            }
        } else {
            Action::Rollback { to: None }
        };
        let plan = control::plan(&env, action, None, chrono::Utc::now())
            .await
            .unwrap();
        let r = control::execute(&env, &plan, &journal, "load-test").await;
        assert_eq!(r.outcome, Outcome::Applied, "step {i}: {:?}", r.error);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut bad) = (0, 0);
    for t in load {
        let (o, b) = t.await.unwrap();
        ok += o;
        bad += b;
    }
    assert_eq!(bad, 0, "{bad} failed requests during 100 changes ({ok} ok)");
    assert!(ok > 500, "load too light: {ok}");
}
