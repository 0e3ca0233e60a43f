//! Secrets never leave their files: a whole session against the real binary — the sandbox
//! with live traffic, `ctl` changes, a headless walkthrough with a webhook, hostile requests
//! carrying credentials, and the cockpit in tmux — then every log, journal, revision,
//! release note, command output and captured screen is searched for every secret value.
//! The expected number of hits is zero.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
            .expect("tmux is installed (scripts/test.sh installs it)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// A port base whose 300 ports are free now, below the ephemeral range.
fn free_base() -> u16 {
    for attempt in 0..60u32 {
        let base = 20_000 + ((std::process::id() * 7 + attempt * 13 + 5) % 40) as u16 * 300;
        if (0..300).all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Runs the binary to completion: (exit code, stdout + stderr).
fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_in_any_log_journal_note_output_or_screen() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sandbox");
    let base = free_base();
    let mut sandbox = Proc(
        Command::new(BIN)
            .args(["sandbox", "--no-tui", "--rps", "40", "--port-base"])
            .arg(base.to_string())
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(sandbox.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(line.strip_prefix("READY ").expect("READY line")).unwrap();
    let config = ready["config"].as_str().unwrap().to_string();
    let mut captured = vec![("READY line".to_string(), line.clone())];

    // Every secret the sandbox made: admin tokens and consumers' API keys.
    let mut secret_files = Vec::new();
    files_under(&state, &mut secret_files);
    secret_files.retain(|p| {
        p.file_name().is_some_and(|n| n == "admin-token")
            || p.parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "keys")
    });
    let mut secrets: Vec<String> = secret_files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
        .collect();
    assert!(
        secrets.len() >= 6,
        "admin tokens and API keys: {secret_files:?}"
    );
    // A chat webhook URL is a credential too.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let webhook = format!("http://{hook_addr}/services/T0SECRET/B0SECRET/xoxb-secret-path-9d2e");
    secrets.push(webhook.clone());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let rec = received.clone();
    let hook_task = tokio::spawn(async move {
        let app = axum::Router::new().fallback(axum::routing::post(move |body: String| {
            let rec = rec.clone();
            async move {
                rec.lock().unwrap().push(body);
                "ok"
            }
        }));
        axum::serve(hook, app).await.unwrap();
    });

    // Hostile and ordinary requests that carry credentials.
    let envs = ready["envs"].as_object().unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    for (name, e) in envs {
        let gw = e["gateway"].as_str().unwrap();
        let admin = e["admin"].as_str().unwrap();
        let token = std::fs::read_to_string(state.join(name).join("admin-token")).unwrap();
        let token = token.trim();
        let key = std::fs::read_to_string(state.join(name).join("keys/web-app")).unwrap();
        let key = key.trim();
        let mut statuses = Vec::new();
        for req in [
            c.get(format!("{admin}/admin/state?token={token}")),
            c.get(format!("{admin}/admin/state?access_token={token}")),
            c.post(format!("{admin}/admin/rollback"))
                .bearer_auth(format!("{token}x")),
            c.get(format!("{gw}/api/orders/1")).header("x-api-key", key),
            c.get(format!("{gw}/api/orders/1?apikey={key}")),
            c.get(format!("{gw}/api/orders/1"))
                .header("x-api-key", format!("{key}-wrong")),
            c.get(format!("{gw}/api/users/1"))
                .header("authorization", format!("Bearer {token}")),
        ] {
            let r = req.send().await.unwrap();
            statuses.push(r.status().as_u16());
            let headers = format!("{} {:?}", r.status(), r.headers());
            captured.push((
                format!("{name} response"),
                format!("{headers} {}", r.text().await.unwrap()),
            ));
        }
        // The credentials were really used: refused where misplaced or wrong, taken where right.
        assert_eq!(
            [
                statuses[0],
                statuses[1],
                statuses[2],
                statuses[3],
                statuses[5]
            ],
            [400, 400, 401, 200, 401],
            "{name}: {statuses:?}"
        );
    }

    // Changes through ctl, in text and JSON.
    for args in [
        vec!["ctl", "--config", &config, "--env", "prod", "status"],
        vec![
            "ctl", "--config", &config, "--env", "stage", "--output", "json", "status",
        ],
        vec![
            "ctl", "--config", &config, "--env", "dev", "--yes", "flip", "users",
        ],
        vec![
            "ctl", "--config", &config, "--env", "dev", "--yes", "canary", "payments", "60",
        ],
        vec![
            "ctl", "--config", &config, "--env", "dev", "--yes", "rollback",
        ],
        vec![
            "ctl",
            "--config",
            &config,
            "--env",
            "dev",
            "--output",
            "json",
            "revisions",
        ],
    ] {
        let (code, out) = run(&args, &[]);
        assert!(code == 0 || code == 3, "{args:?}: exit {code}: {out}");
        captured.push((format!("{args:?}"), out));
    }

    // A headless walkthrough with the webhook, and its release note.
    let (code, out) = run(
        &[
            "walk",
            "examples/runbooks/blue-green.yaml",
            "--config",
            &config,
            "--env",
            "dev",
            "--headless",
            "--yes",
            "--state-dir",
            dir.path().join("walks").to_str().unwrap(),
        ],
        &[("SIGNALBOX_WEBHOOK", &webhook)],
    );
    assert!(matches!(code, 0 | 2), "walk exit {code}: {out}");
    captured.push(("walk output".into(), out));
    let t = Instant::now();
    while received.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !received.lock().unwrap().is_empty(),
        "the webhook was notified"
    );
    for body in received.lock().unwrap().iter() {
        captured.push(("webhook body".into(), body.clone()));
    }

    // The cockpit in tmux, on every view a key reaches.
    let tmux = Tmux(format!("signalbox-secrets-{}", std::process::id()));
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "120",
        "-y",
        "40",
        &format!("{BIN} --config {config}"),
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for keys in [
        &[][..],
        &["Tab"],
        &["Tab"],
        &["?"],
        &["Escape", "h"],
        &["Escape", "a"],
    ] {
        if !keys.is_empty() {
            let mut a = vec!["send-keys", "-t", "w"];
            a.extend(keys.iter());
            tmux.run(&a);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let screen = tmux.run(&["capture-pane", "-p", "-t", "w"]);
        captured.push((format!("screen after {keys:?}"), screen));
    }
    tmux.run(&["send-keys", "-t", "w", "q"]);
    drop(tmux);

    // Stop the sandbox and gather everything it wrote.
    Command::new("kill")
        .args(["-TERM", &sandbox.0.id().to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    while sandbox.0.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    if let Some(mut e) = sandbox.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    captured.push(("sandbox stderr".into(), stderr));
    hook_task.abort();

    let mut written = Vec::new();
    files_under(dir.path(), &mut written);
    let mut searched = 0usize;
    for p in written.iter().filter(|p| !secret_files.contains(p)) {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        captured.push((p.display().to_string(), text));
    }
    let mut hits = Vec::new();
    for (what, text) in &captured {
        searched += text.len();
        for s in &secrets {
            if text.contains(s.as_str()) {
                hits.push(format!("{what} contains a secret ({} chars)", s.len()));
            }
        }
    }
    eprintln!(
        "SECRETS: {} secrets searched for in {} captures ({} KiB: logs, journals, revisions, release notes, command output, webhook bodies, screens): {} hits",
        secrets.len(),
        captured.len(),
        searched / 1024,
        hits.len()
    );
    assert!(hits.is_empty(), "{hits:#?}");
    assert!(
        captured.iter().any(|(w, _)| w.ends_with(".md")),
        "a release note was written and searched"
    );
    assert!(
        captured.iter().any(|(w, _)| w.ends_with("audit.jsonl")),
        "the audit journal was searched"
    );
}
