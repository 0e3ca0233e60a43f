//! `signalbox walk` (the real binary) against `signalbox sandbox` (the real binary, with
//! real gateways and live traffic): a blue-green release, a canary stopped by a gate when
//! a fault is injected mid-analysis, a crash and resume that does not repeat the flip, a
//! low-traffic run that pauses as inconclusive, and `--check`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/runbooks")
        .join(name)
}

/// Kills the process on drop, so a failing test leaves nothing running.
struct Killer(std::process::Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Sandbox {
    _proc: Killer,
    ready: serde_json::Value,
    _state: tempfile::TempDir,
    state: PathBuf,
}

impl Sandbox {
    fn config(&self) -> String {
        self.ready["config"].as_str().unwrap().to_string()
    }

    fn admin(&self, env: &str) -> String {
        self.ready["envs"][env]["admin"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn state(&self, env: &str) -> serde_json::Value {
        let token = std::fs::read_to_string(self.state.join(env).join("admin-token")).unwrap();
        reqwest::Client::new()
            .get(format!("{}/admin/state", self.admin(env)))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn split(&self, env: &str, route: &str) -> serde_json::Value {
        let s = self.state(env).await;
        s["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == route)
            .unwrap()["split"]
            .clone()
    }

    async fn revisions(&self, env: &str) -> Vec<serde_json::Value> {
        let token = std::fs::read_to_string(self.state.join(env).join("admin-token")).unwrap();
        reqwest::Client::new()
            .get(format!("{}/admin/revisions", self.admin(env)))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A port base in this suite's range (26000–29900) whose 300 ports are free now.
fn free_base(salt: u32) -> u16 {
    for attempt in 0..13u32 {
        let base = 26_000 + ((std::process::id() + salt * 5 + attempt) % 13) as u16 * 300;
        if (0..300).all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range in 26000-29900");
}

fn sandbox(salt: u32, rps: u32) -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let mut last = String::new();
    for attempt in 0..3 {
        let base = free_base(salt + attempt * 3);
        let mut child = Command::new(BIN)
            .args([
                "sandbox",
                "--no-tui",
                "--rps",
                &rps.to_string(),
                "--port-base",
            ])
            .arg(base.to_string())
            .arg("--state-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let proc = Killer(child);
        if let Some(json) = line.strip_prefix("READY ") {
            return Sandbox {
                _proc: proc,
                ready: serde_json::from_str(json).unwrap(),
                state: dir.path().to_path_buf(),
                _state: dir,
            };
        }
        last = line;
    }
    panic!("the sandbox did not start: {last:?}");
}

/// A webhook receiver standing in for Slack.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

async fn hook() -> Hook {
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let b = b.clone();
            async move {
                b.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Hook {
        url: format!("http://{addr}/hook"),
        bodies,
    }
}

struct Run {
    code: i32,
    out: String,
}

fn walk_cmd(sb: &Sandbox, hook: &Hook, runbook: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("walk")
        .arg(runbook)
        .arg("--config")
        .arg(sb.config())
        .args(["--headless", "--actor", "ci@walk-test"])
        .args(args)
        .env("SIGNALBOX_WEBHOOK", &hook.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn walk(sb: &Sandbox, hook: &Hook, runbook: &Path, args: &[&str]) -> Run {
    let o = tokio::time::timeout(
        Duration::from_secs(90),
        walk_cmd(sb, hook, runbook, args).output(),
    )
    .await
    .expect("signalbox walk finished within 90 s")
    .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// Runs a walk, calling `on_line` for each progress line; returns the exit code and output.
async fn walk_watching(
    sb: &Sandbox,
    hook: &Hook,
    runbook: &Path,
    args: &[&str],
    mut on_line: impl AsyncFnMut(&str, &mut tokio::process::Child) -> bool,
) -> Run {
    let mut child = walk_cmd(sb, hook, runbook, args).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .expect("progress within 90 s")
            .unwrap();
        let Some(line) = line else { break };
        out.push_str(&line);
        out.push('\n');
        if on_line(&line, &mut child).await {
            break;
        }
    }
    let status = child.wait().await.unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err).await;
    }
    Run {
        code: status.code().unwrap_or(-1),
        out: out + &err,
    }
}

fn note_of(out: &str) -> String {
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("release note: "))
        .unwrap_or_else(|| panic!("no release note path in: {out}"));
    std::fs::read_to_string(path.trim()).unwrap()
}

async fn blue_green_release_succeeds(sb: &Sandbox) {
    let hook = hook().await;
    let r = walk(
        sb,
        &hook,
        &example("blue-green.yaml"),
        &["--env", "prod", "--yes"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("2/6 prod: flip users to users-green — done"),
        "{}",
        r.out
    );
    let last = r.out.lines().rev().find(|l| !l.is_empty()).unwrap();
    assert!(
        last.starts_with("release note: "),
        "ends with the note path: {}",
        r.out
    );
    let note = note_of(&r.out);
    assert!(note.contains("**Outcome:** released"), "{note}");
    assert!(
        note.contains("| 2 | prod | flip users to users-green | done |"),
        "{note}"
    );
    assert!(
        note.contains("| error ratio |") && note.contains("≤ 2.00%"),
        "gate values: {note}"
    );
    assert!(
        note.contains("--env prod rollback --to 1"),
        "hand rollback: {note}"
    );
    assert_eq!(
        sb.split("prod", "users").await,
        serde_json::json!({"users-blue": 0, "users-green": 100})
    );
    let texts = hook.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("users 1.5.0 is live in prod")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("released")), "{texts:?}");
    let flips: Vec<_> = sb
        .audit()
        .into_iter()
        .filter(|e| e["env"] == "prod" && e["action"]["kind"] == "flip")
        .collect();
    assert_eq!(flips.len(), 1, "one audited flip: {flips:?}");
    assert_eq!(flips[0]["actor"], "ci@walk-test");
    assert_eq!(flips[0]["outcome"], "applied");
}

async fn canary_fault_mid_analysis_rolls_back(sb: &Sandbox) {
    let hook = hook().await;
    let control = sb.ready["control"].as_str().unwrap().to_string();
    let mut injected = false;
    let r = walk_watching(
        sb,
        &hook,
        &example("canary.yaml"),
        &["--env", "stage", "--yes"],
        async |line, _| {
            if !injected && line.contains("3/7 stage: analyze") && line.ends_with('…') {
                let resp = reqwest::Client::new()
                    .put(format!("{control}/sandbox/faults/stage/payments/v2"))
                    .json(&serde_json::json!({"error_rate": 1.0}))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
                injected = true;
            }
            false
        },
    )
    .await;
    assert!(injected, "the analysis started: {}", r.out);
    assert_eq!(r.code, 2, "rolled back by a gate: {}", r.out);
    assert!(
        r.out
            .contains("3/7 stage: analyze payments for 6s — FAILED"),
        "{}",
        r.out
    );
    assert!(
        !r.out.contains("4/7"),
        "nothing after the failed gate ran: {}",
        r.out
    );
    assert_eq!(
        sb.split("stage", "payments").await,
        serde_json::json!({"payments-v1": 100, "payments-v2": 0})
    );
    let texts = hook.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("rolled back by a gate") && t.contains("error ratio")),
        "{texts:?}"
    );
    let note = note_of(&r.out);
    assert!(
        note.contains("| 3 | stage | analyze payments for 6s | FAILED |"),
        "{note}"
    );
    assert!(
        !r.out.contains(&hook.url) && !note.contains(&hook.url),
        "the webhook URL is a credential and never shown"
    );
    assert!(
        note.contains("set payments canary to 0%"),
        "the rollback: {note}"
    );
    let _ = reqwest::Client::new()
        .delete(format!("{control}/sandbox/faults/stage/payments/v2"))
        .send()
        .await;
}

async fn interrupted_run_resumes_without_repeating_the_flip(sb: &Sandbox) {
    let hook = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("dev-blue.yaml");
    std::fs::write(
        &rb,
        "name: users back to blue\nenv: dev\nroute: users\nrollback: revision\nsteps:\n  - flip: { to: users-blue }\n  - wait: 5s\n  - analyze: { duration: 3s, min_requests: 5, max_error_ratio: 0.05 }\n",
    )
    .unwrap();
    let revs_before = sb.revisions("dev").await.len();
    // Crash (SIGKILL) while waiting after the flip.
    let r = walk_watching(sb, &hook, &rb, &[], async |line, child| {
        if line.contains("2/3 dev: wait 5s …") {
            child.start_kill().unwrap();
            return true;
        }
        false
    })
    .await;
    assert_ne!(r.code, 0, "killed: {}", r.out);
    assert_eq!(
        sb.split("dev", "users").await,
        serde_json::json!({"users-blue": 100, "users-green": 0})
    );
    // A new run refuses to start over the unfinished one.
    let again = walk(sb, &hook, &rb, &[]).await;
    assert_eq!(again.code, 1, "{}", again.out);
    assert!(again.out.contains("--resume"), "{}", again.out);
    // Make it harder: the saved state says the flip was still being applied when the
    // process died (as if killed between saving and hearing back from the gateway).
    let state_file = sb.state.join("walks/users-back-to-blue--dev.json");
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(saved["steps"][0]["status"], "done");
    assert_eq!(saved["steps"][1]["status"], "running");
    saved["cursor"] = 0.into();
    saved["steps"][0]["status"] = "running".into();
    saved["steps"][0]["revision"] = serde_json::Value::Null;
    saved["steps"][1]["status"] = "pending".into();
    saved["start_revisions"] = serde_json::json!({});
    std::fs::write(&state_file, saved.to_string()).unwrap();
    // Resume: the environment shows the flip, so it counts as done and is not applied
    // again; the wait runs again.
    let resumed = walk(sb, &hook, &rb, &["--resume"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.out);
    assert!(
        resumed
            .out
            .contains("1/3 dev: flip users to users-blue — was applied before the interruption"),
        "{}",
        resumed.out
    );
    assert!(
        !resumed.out.contains("1/3 dev: flip users to users-blue …"),
        "the flip is not re-run: {}",
        resumed.out
    );
    assert!(
        resumed.out.contains("2/3 dev: wait 5s — done"),
        "{}",
        resumed.out
    );
    let revs = sb.revisions("dev").await;
    assert_eq!(
        revs.len(),
        revs_before + 1,
        "exactly one new revision: {revs:?}"
    );
    let flips = sb
        .audit()
        .into_iter()
        .filter(|e| e["env"] == "dev" && e["action"]["kind"] == "flip")
        .count();
    assert_eq!(flips, 1);
    let note = note_of(&resumed.out);
    assert!(note.contains("resumed"), "the operator log: {note}");
    assert!(
        note.contains("--env dev rollback --to 1"),
        "the hand rollback: {note}"
    );
    assert!(
        note.contains("| 1 | dev | flip users to users-blue | done |"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthroughs_against_the_sandbox() {
    let sb = sandbox(0, 60);
    // Three environments, three walkthroughs at once: each touches only its own.
    tokio::join!(
        blue_green_release_succeeds(&sb),
        canary_fault_mid_analysis_rolls_back(&sb),
        interrupted_run_resumes_without_repeating_the_flip(&sb),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_traffic_is_inconclusive_and_pauses() {
    let sb = sandbox(1, 1);
    let hook = hook().await;
    // Ctrl-C mid-analysis: saved, exit 3; a resume runs the analysis again.
    let r = walk_watching(
        &sb,
        &hook,
        &example("canary.yaml"),
        &["--env", "stage", "--yes", "--no-wait"],
        async |line, child| {
            if line.contains("3/7 stage: analyze payments for 6s —") {
                let pid = child.id().unwrap().to_string();
                Command::new("kill").args(["-INT", &pid]).status().unwrap();
            }
            false
        },
    )
    .await;
    assert_eq!(r.code, 3, "interrupted: {}", r.out);
    assert!(r.out.contains("interrupted"), "{}", r.out);
    let r = walk(
        &sb,
        &hook,
        &example("canary.yaml"),
        &["--env", "stage", "--yes", "--no-wait", "--resume"],
    )
    .await;
    assert!(
        !r.out.contains("2/7 stage"),
        "the weight change is not repeated: {}",
        r.out
    );
    assert_eq!(r.code, 3, "paused awaiting an operator: {}", r.out);
    assert!(
        r.out.contains("analysis inconclusive: not enough data"),
        "{}",
        r.out
    );
    assert!(
        !r.out.contains("4/7"),
        "an inconclusive gate never passes: {}",
        r.out
    );
    assert!(r.out.contains("--resume"), "says how to go on: {}", r.out);
    assert!(
        hook.texts().iter().any(|t| t.contains("paused")),
        "{:?}",
        hook.texts()
    );
    // Without --no-wait a headless run waits at the pause; the operator aborts it from
    // another terminal, and the canary goes back to 0.
    let mut sent = None;
    let a = walk_watching(
        &sb,
        &hook,
        &example("canary.yaml"),
        &["--env", "stage", "--resume"],
        async |line, _| {
            if sent.is_none() && line.contains("waiting for an operator") {
                sent = Some(
                    walk(
                        &sb,
                        &hook,
                        &example("canary.yaml"),
                        &["--env", "stage", "--abort"],
                    )
                    .await,
                );
            }
            false
        },
    )
    .await;
    let sent = sent.expect("the run waited for an operator");
    assert_eq!(sent.code, 0, "{}", sent.out);
    assert!(
        sent.out.contains("sent abort to the running walkthrough"),
        "{}",
        sent.out
    );
    assert_eq!(a.code, 2, "{}", a.out);
    assert!(a.out.contains("aborted the walkthrough"), "{}", a.out);
    assert_eq!(
        sb.split("stage", "payments").await,
        serde_json::json!({"payments-v1": 100, "payments-v2": 0})
    );
    let note = note_of(&a.out);
    assert!(note.contains("aborted"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_across_environments_and_rollback_of_all_of_them() {
    let sb = sandbox(2, 5);
    let hook = hook().await;
    let control = sb.ready["control"].as_str().unwrap().to_string();
    let default_variant = async |env: &str| {
        let s = sb.state(env).await;
        s["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == "new-checkout")
            .unwrap()["default_variant"]
            .clone()
    };
    // prod's checkout backend is failing: dev and stage pass, prod's smoke test fails,
    // and all three go back.
    let fault = reqwest::Client::new()
        .put(format!("{control}/sandbox/faults/prod/orders/v1"))
        .json(&serde_json::json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    let rb = example("flag-rollout.yaml");
    let r = walk(&sb, &hook, &rb, &["--yes"]).await;
    assert_eq!(r.code, 2, "{}", r.out);
    assert!(
        r.out.contains("6/9 stage: smoke GET /api/checkout"),
        "{}",
        r.out
    );
    assert!(r.out.contains("9/9 prod: smoke GET /api/checkout (X-User-Id: user-1) → 200 — FAILED: request 1: GET /api/checkout answered 500"), "{}", r.out);
    for env in ["dev", "stage", "prod"] {
        assert_eq!(default_variant(env).await, "off", "{env} rolled back");
    }
    let note = note_of(&r.out);
    let order: Vec<usize> = [
        "**prod rollback:**",
        "**stage rollback:**",
        "**dev rollback:**",
    ]
    .iter()
    .map(|k| note.find(k).unwrap_or_else(|| panic!("{k} in {note}")))
    .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "most recent first: {note}"
    );
    assert!(note.contains("roll back to revision 1"), "{note}");
    // Fixed: the same runbook now goes all the way.
    let _ = reqwest::Client::new()
        .delete(format!("{control}/sandbox/faults/prod/orders/v1"))
        .send()
        .await
        .unwrap();
    let r = walk(&sb, &hook, &rb, &["--yes"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    for env in ["dev", "stage", "prod"] {
        assert_eq!(default_variant(env).await, "on", "{env} released");
    }
    assert!(hook.texts().iter().any(|t| t.contains("rolled back")));
}

#[test]
fn check_accepts_the_examples_and_rejects_a_bad_runbook() {
    for ex in ["blue-green.yaml", "canary.yaml", "flag-rollout.yaml"] {
        let o = Command::new(BIN)
            .arg("walk")
            .arg(example(ex))
            .arg("--check")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{ex}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(": ok: "));
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nenv: stage\nroute: payments\nsteps:\n  - check: { healthy: [payments-v2] }\n  - set_weight: { percent: 250 }\n  - analyze: { duration: 5s }\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("walk")
        .arg(&bad)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:6:19: steps[1].set_weight.percent: a percentage is 0 to 100"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:7:5: steps[2].analyze: an analysis needs a gate"
        )),
        "{err}"
    );
    // With an environments file, the environments must exist.
    let cfg = dir.path().join("signalbox.toml");
    std::fs::write(
        &cfg,
        "[[environments]]\nname = \"stage\"\nadmin_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    std::fs::write(
        &bad,
        "name: promo\nenv: stage\nroute: x\nsteps:\n  - flip: {}\n  - promote: { env: prod }\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("walk")
        .arg(&bad)
        .arg("--check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{file}:6:21: steps[1].promote.env: no environment \"prod\""
        )),
        "{err}"
    );
    // Environment names are reported with every other problem, at the value.
    std::fs::write(
        &bad,
        "name: bad\nenv: stagee\nroute: payments\nsteps:\n  - set_weight: { percent: 250 }\n  - promote: { env: prod }\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["walk", "--check", "--config"])
        .arg(&cfg)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{file}:2:6: env: no environment \"stagee\"")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:5:19: steps[0].set_weight.percent: a percentage"
        )),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{file}:6:21: steps[1].promote.env: no environment \"prod\""
        )),
        "{err}"
    );
    std::fs::write(
        &bad,
        "name: bad\nenv: stage\nroute: x\nsteps:\n  - flipp: {}\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("walk")
        .arg(&bad)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{file}:5:")) && err.contains("flipp"),
        "{err}"
    );
}

/// A tmux server of its own, killed on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "w", "-S", "-100"])
    }

    /// Waits (bounded) until the screen shows `needle`.
    async fn wait_for(&self, needle: &str) -> String {
        self.wait_for_n(needle, 1).await
    }

    /// Waits (bounded) until the screen shows `needle` `n` times.
    async fn wait_for_n(&self, needle: &str, n: usize) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if s.matches(needle).count() >= n {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no {needle:?} on screen:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_walk_in_a_terminal_and_a_pause_timeout() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (scripts/test.sh installs it)");
    }
    let sb = sandbox(3, 5);
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("interactive.yaml");
    std::fs::write(
        &rb,
        "name: users to blue in stage\nenv: stage\nroute: users\nsteps:\n  - pause: { message: ready to flip users in stage? }\n  - flip: { to: users-blue }\n  - flag: { key: new-checkout, variant: \"on\" }\n  - smoke: { path: /api/users/7, json: { version: blue } }\n",
    )
    .unwrap();
    let tmux = Tmux(format!("sbwalk-{}", std::process::id()));
    let cmd = format!(
        "{BIN} walk {} --config {} --actor alice@tty --prompt; echo EXIT=$?; sleep 60",
        rb.display(),
        sb.config()
    );
    let keys = |k: &[&str]| {
        let mut a = vec!["send-keys", "-t", "w"];
        a.extend_from_slice(k);
        tmux.run(&a);
    };
    let rsa = "[r]etry, [s]kip, [a]bort?";
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "160",
        "-y",
        "50",
        &cmd,
    ]);
    tmux.wait_for("[c]ontinue, [r]etry, [s]kip, [a]bort?").await;
    keys(&["c", "Enter"]);
    // stage asks before every change (confirm = "yes"), showing before → after.
    let s = tmux.wait_for("apply to stage? [y/N]").await;
    assert!(
        s.contains("before: users: users-blue 0 / users-green 100")
            && s.contains("after:  users: users-blue 100 / users-green 0"),
        "{s}"
    );
    // Declined: the walk pauses; retry asks again, and yes applies it.
    keys(&["n", "Enter"]);
    tmux.wait_for_n(rsa, 2).await;
    keys(&["r", "Enter"]);
    tmux.wait_for_n("apply to stage? [y/N]", 2).await;
    keys(&["y", "Enter"]);
    // The flag change is declined and skipped, with a reason.
    tmux.wait_for_n("apply to stage? [y/N]", 3).await;
    keys(&["n", "Enter"]);
    tmux.wait_for_n(rsa, 3).await;
    keys(&["s", "Enter"]);
    tmux.wait_for("reason for skipping (recorded):").await;
    keys(&["not today", "Enter"]);
    let s = tmux.wait_for("EXIT=").await;
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(
        s.contains("4/4 stage: smoke GET /api/users/7 → 200 — done"),
        "{s}"
    );
    assert!(s.contains("release note: "), "{s}");
    assert_eq!(
        sb.split("stage", "users").await,
        serde_json::json!({"users-blue": 100, "users-green": 0})
    );
    let skipped = sb
        .audit()
        .into_iter()
        .find(|e| {
            e["action"]["kind"] == "set_flag"
                && e["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("skipped in walkthrough"))
        })
        .expect("the skip is audited");
    assert_eq!(skipped["outcome"], "cancelled");
    assert_eq!(skipped["actor"], "alice@tty");
    assert!(skipped["error"].as_str().unwrap().contains("not today"));
    let flip = sb
        .audit()
        .into_iter()
        .find(|e| e["env"] == "stage" && e["action"]["kind"] == "flip")
        .expect("the flip is audited");
    assert_eq!(flip["actor"], "alice@tty");

    // Headless, nobody approves in time: the pause's timeout rolls the flip back.
    let hook = hook().await;
    let timed = dir.path().join("timed.yaml");
    std::fs::write(
        &timed,
        "name: timed pause\nenv: stage\nroute: users\nrollback: revision\nsteps:\n  - flip: { to: users-green }\n  - pause: { message: approve within a second, timeout: 1s }\n  - wait: 1s\n",
    )
    .unwrap();
    let r = walk(&sb, &hook, &timed, &["--yes"]).await;
    assert_eq!(r.code, 2, "{}", r.out);
    assert!(
        r.out.contains("waiting for an operator (timeout at"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("3/3"), "{}", r.out);
    assert_eq!(
        sb.split("stage", "users").await,
        serde_json::json!({"users-blue": 100, "users-green": 0})
    );
    let note = note_of(&r.out);
    assert!(note.contains("the pause timeout aborted"), "{note}");
}

/// The library path the cockpit uses: the engine in-process with a [`ChannelOperator`],
/// a UI task answering from the updates, and the walkthrough view drawn from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_in_process_with_a_channel_operator() {
    use signalbox::control::audit::Journal;
    use signalbox::control::envfile;
    use signalbox::walk::store::Store;
    use signalbox::walk::{ChannelOperator, Decision, Engine, EngineOptions, RunEnd, WalkUpdate};

    let sb = sandbox(4, 20);
    let cockpit = envfile::load(Path::new(&sb.config())).unwrap();
    let rb = signalbox::walk::runbook::parse_str(
        "name: in process\nenv: dev\nroute: users\nsteps:\n  - flip: { to: users-blue }\n  - pause: { message: looks fine? }\n  - smoke: { path: /api/users/3, json: { version: blue } }\n",
        "inproc.yaml",
    )
    .unwrap();
    let store = Store::new(sb.state.join("walks"));
    let path = store.state_path(&rb.name, "dev");
    let st = signalbox::walk::WalkState::new(
        "inproc".into(),
        &rb,
        "inproc.yaml",
        "sha",
        "cockpit@test",
        &rb.expand("dev"),
        chrono::Utc::now(),
    );
    let (op, mut rx) = ChannelOperator::new();
    let ui = tokio::spawn(async move {
        let mut last = None;
        let mut asked = Vec::new();
        while let Some(u) = rx.recv().await {
            match u {
                WalkUpdate::State(s) => last = Some(*s),
                WalkUpdate::Line(_) => {}
                WalkUpdate::Decide { reason, reply, .. } => {
                    asked.push(reason);
                    let _ = reply.send(Decision::Continue);
                }
                WalkUpdate::Confirm { reply, .. } => {
                    let _ = reply.send(true);
                }
            }
        }
        (last, asked)
    });
    let opts = EngineOptions {
        cockpit,
        config_path: None,
        actor: "cockpit@test".into(),
        journal: Journal::new(sb.state.join("audit.jsonl")),
        initial_decision: None,
    };
    let mut engine = Engine::new(
        rb,
        "dev",
        opts,
        store,
        path,
        st,
        op,
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let end = engine.run().await.unwrap();
    assert!(
        matches!(end, RunEnd::Finished { ref outcome, .. } if outcome.exit_code() == 0),
        "{end:?}"
    );
    drop(engine);
    let (last, asked) = ui.await.unwrap();
    assert_eq!(asked, ["looks fine?"]);
    let last = last.expect("state updates");
    assert!(last.is_finished());
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    term.draw(|f| {
        signalbox::tui::views::walk::draw(
            f,
            f.area(),
            &last,
            chrono::Utc::now(),
            &signalbox::tui::theme::Theme::monochrome(),
        )
    })
    .unwrap();
    let screen = format!("{}", term.backend());
    assert!(
        screen.contains("✓  1. dev    flip users to users-blue"),
        "{screen}"
    );
    assert!(screen.contains("✓ released"), "{screen}");
}

/// `check: { matches_source }`: the track about to go live in prod must be the one stage
/// serves (stage is on users-green, prod on users-blue in the sandbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_compares_the_track_with_the_source_environment() {
    let sb = sandbox(6, 5);
    let hook = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let rb = |name: &str, track: &str| {
        let p = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!(
                "name: {name}\nenv: prod\nroute: users\nsteps:\n  - check: {{ healthy: [{track}], matches_source: {track}, source: stage }}\n"
            ),
        )
        .unwrap();
        p
    };
    let r = walk(&sb, &hook, &rb("same", "users-green"), &["--yes"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out
            .contains("users-green is what stage serves users from"),
        "{}",
        r.out
    );
    let r = walk(&sb, &hook, &rb("other", "users-blue"), &["--yes"]).await;
    assert_eq!(r.code, 2, "{}", r.out);
    assert!(
        r.out
            .contains("prod would go live on users-blue, but stage serves users from users-green"),
        "{}",
        r.out
    );
    // It failed before changing anything: nothing was rolled back, and it does not say so.
    assert!(
        r.out.contains("stopped before any change") && !r.out.contains("rolled back"),
        "{}",
        r.out
    );
}
