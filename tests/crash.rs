//! `kill -9` of the real gateway binary in the middle of rapid changes. After a restart on
//! the same state directory the revision history must be consistent (contiguous numbers,
//! every revision readable, the live state at HEAD), nothing the gateway acknowledged may
//! be lost, and the audit journal must parse.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{client, free_port, upstream};
use signalbox::control::audit::Journal;
use signalbox::control::{self, Env, envfile};
use signalbox::domain::{Action, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
const TOKEN: &str = "crash-test-admin-token-77ab";

/// The gateway process, killed on drop even when an assertion fails.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path, state: &std::path::Path) -> Gateway {
    Gateway(
        Command::new(BIN)
            .arg("gateway")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_ready(admin: &str) {
    let c = client();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = c.get(format!("http://{admin}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway on {admin} did not come up after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_rapid_changes_loses_no_acknowledged_revision() {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin: {{ listen: {admin}, token_file: {} }}\nupstreams:\n  blue: {{ targets: [{}] }}\n  green: {{ targets: [{}] }}\nroutes:\n  - {{ name: users, paths: [/users], split: {{ blue: 100, green: 0 }} }}\n",
            token.display(),
            blue.target(),
            green.target()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let journal_path = dir.path().join("audit.jsonl");
    let envfile_path = dir.path().join("signalbox.toml");
    std::fs::write(
        &envfile_path,
        format!(
            "audit_log = \"{}\"\n[[environments]]\nname = \"stage\"\nadmin_url = \"http://{admin}\"\ntoken_file = \"{}\"\nconfirm = \"none\"\n",
            journal_path.display(),
            token.display()
        ),
    )
    .unwrap();
    let env = Arc::new(
        Env::connect(envfile::load(&envfile_path).unwrap().environments[0].clone()).unwrap(),
    );
    let journal = Arc::new(Journal::new(&journal_path));
    let c = client();

    let mut total_acknowledged = 0;
    for cycle in 0..3u64 {
        let mut gw = start(&config, &state);
        wait_ready(&admin).await;

        // Two writers change the gateway as fast as they can, each remembering the
        // highest revision the gateway acknowledged.
        let acknowledged = Arc::new(AtomicU64::new(0));
        let count = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (env, journal, acknowledged, count) = (
                    env.clone(),
                    journal.clone(),
                    acknowledged.clone(),
                    count.clone(),
                );
                tokio::spawn(async move {
                    for i in 0.. {
                        let action = if (i + w) % 3 == 2 {
                            Action::Rollback { to: None }
                        } else {
                            Action::Flip {
                                route: "users".into(),
                                to: None,
                            }
                        };
                        let Ok(plan) = control::plan(&env, action, None, chrono::Utc::now()).await
                        else {
                            break; // the gateway is gone
                        };
                        let r = control::execute(&env, &plan, &journal, "crash@ci").await;
                        // Unverified: the gateway acknowledged the revision, then died
                        // before the read-back.
                        if matches!(r.outcome, Outcome::Applied | Outcome::Unverified)
                            && let Some(n) = r.revision
                        {
                            acknowledged.fetch_max(n, Ordering::SeqCst);
                        }
                        if r.outcome == Outcome::Applied {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        // Kill at a different moment each cycle, while the writers are busy.
        tokio::time::sleep(Duration::from_millis(400 + 250 * cycle)).await;
        gw.0.kill().unwrap(); // SIGKILL
        gw.0.wait().unwrap();
        for w in writers {
            w.await.unwrap();
        }
        let acked = acknowledged.load(Ordering::SeqCst);
        total_acknowledged += count.load(Ordering::SeqCst);
        assert!(acked > 0, "cycle {cycle}: no change landed before the kill");

        // Restart on the same state directory.
        let _gw = start(&config, &state);
        wait_ready(&admin).await;
        let revisions: Vec<serde_json::Value> = c
            .get(format!("http://{admin}/admin/revisions"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let numbers: Vec<u64> = revisions
            .iter()
            .map(|r| r["number"].as_u64().unwrap())
            .collect();
        let head = numbers[0];
        assert!(
            head >= acked,
            "cycle {cycle}: revision {acked} was acknowledged but the history ends at {head}"
        );
        assert!(
            numbers.windows(2).all(|w| w[0] == w[1] + 1),
            "cycle {cycle}: the history has gaps or disorder: {numbers:?}"
        );
        for n in &numbers {
            let r = c
                .get(format!("http://{admin}/admin/revisions/{n}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "cycle {cycle}: revision {n} unreadable");
        }
        let live: serde_json::Value = c
            .get(format!("http://{admin}/admin/state"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            live["revision"].as_u64(),
            Some(head),
            "cycle {cycle}: the gateway runs HEAD"
        );
        eprintln!(
            "CRASH cycle {cycle}: killed after revision {acked} was acknowledged; restarted at HEAD {head} with {} revisions in history",
            numbers.len()
        );
        // The restarted gateway is killed too, cleanly this time (drop), before the next
        // cycle starts it again.
    }

    let read = journal.read().unwrap();
    assert_eq!(read.skipped, 0, "every audit line parses");
    let applied = read
        .entries
        .iter()
        .filter(|e| serde_json::to_value(e).unwrap()["outcome"] == "applied")
        .count() as u64;
    assert_eq!(
        applied, total_acknowledged,
        "the journal records every acknowledged change as applied"
    );
    eprintln!(
        "CRASH summary: 3 kill -9 cycles, {total_acknowledged} acknowledged changes, {} journal entries, all parse",
        read.entries.len()
    );
}
