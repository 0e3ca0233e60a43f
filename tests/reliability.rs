//! Changes under load: steady traffic through a real gateway on loopback while an operator's
//! worth of changes goes through `control` (the path the TUI, `ctl` and runbooks take) and
//! through config reloads. The promise is that the changes cost no request: every
//! response is a 2xx and no socket fails.
//!
//! wrk drives the load for 30 s and must reach at least 2,000 requests/s; every change
//! must land inside that window. `SIGNALBOX_RELIABILITY_SECS` and
//! `SIGNALBOX_RELIABILITY_RPS` (the floor) change both for longer runs by hand (see
//! RELIABILITY.md).

mod common;

use std::time::{Duration, Instant};

use common::{gateway, upstream};
use signalbox::control::audit::Journal;
use signalbox::control::{self, Env, envfile};
use signalbox::domain::{Action, Outcome};
use signalbox::gateway::state::{ChangeKind, ChangeRequest};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const FLAGS: &str = r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}"#;

fn config(ups: &[common::Upstream], token: &std::path::Path, header_value: u32) -> String {
    format!(
        r#"admin: {{ token_file: "{}" }}
upstreams:
  blue: {{ targets: ["{}"] }}
  green: {{ targets: ["{}"] }}
  v1: {{ targets: ["{}"] }}
  v2: {{ targets: ["{}"] }}
routes:
  - name: users
    paths: [/users]
    split: {{ blue: 100, green: 0 }}
    plugins:
      request_headers: {{ add: {{ x-config-generation: "{header_value}" }} }}
  - name: payments
    paths: [/pay]
    split: {{ v1: 100, v2: 0 }}
    canary: v2
flags: {FLAGS}
"#,
        token.display(),
        ups[0].target(),
        ups[1].target(),
        ups[2].target(),
        ups[3].target(),
    )
}

/// What the operator does, in the order it is done: 100 flips, 50 canary steps, 20
/// rollbacks, 10 reloads and 10 flag toggles, interleaved evenly.
#[derive(Clone, Copy, Debug)]
enum Change {
    Flip,
    Canary(u32),
    Rollback,
    Reload(u32),
    Flag(bool),
}

fn schedule() -> Vec<Change> {
    let mut lists: Vec<Vec<Change>> = vec![
        (0..100).map(|_| Change::Flip).collect(),
        (0..50)
            .map(|i| Change::Canary([5, 25, 50, 75, 100, 0][i % 6]))
            .collect(),
        (0..20).map(|_| Change::Rollback).collect(),
        (0..10).map(Change::Reload).collect(),
        (0..10).map(|i| Change::Flag(i % 2 == 0)).collect(),
    ];
    // Spread each kind over the whole run: order by the fraction of the way through.
    let mut all: Vec<(f64, Change)> = Vec::new();
    for (k, list) in lists.iter_mut().enumerate() {
        let n = list.len() as f64;
        for (i, c) in list.drain(..).enumerate() {
            all.push(((i as f64 + 0.5 + k as f64 * 0.01) / n, c));
        }
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().map(|(_, c)| c).collect()
}

/// wrk, killed on drop so a failing test leaves no load behind.
struct Wrk(std::process::Child);

impl Wrk {
    fn wait(mut self) -> String {
        let mut out = String::new();
        if let Some(mut s) = self.0.stdout.take() {
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        }
        let status = self.0.wait().unwrap();
        assert!(status.success(), "wrk failed: {out}");
        out
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct WrkReport {
    rps: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    p99: String,
}

impl WrkReport {
    fn parse(out: &str) -> Self {
        let field = |prefix: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
                .map(str::to_string)
        };
        let requests = out
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's output: {out}"));
        // "Socket errors: connect 0, read 1, write 0, timeout 0"
        let socket_errors = field("Socket errors:")
            .map(|s| {
                s.split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        Self {
            rps: field("Requests/sec:")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no rate in wrk's output: {out}")),
            requests,
            non_2xx: field("Non-2xx or 3xx responses:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            socket_errors,
            p99: field("99%").unwrap_or_default(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_worth_of_changes_under_load_fails_no_request() {
    let secs = env_u64("SIGNALBOX_RELIABILITY_SECS", 30);
    let rps = env_u64("SIGNALBOX_RELIABILITY_RPS", 2000);
    let ups = vec![
        upstream("blue").await,
        upstream("green").await,
        upstream("v1").await,
        upstream("v2").await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "reliability-admin-token-1f3c9a").unwrap();
    let gw = gateway(&config(&ups, &token, 0)).await;
    let journal_path = dir.path().join("audit.jsonl");
    let envfile_path = dir.path().join("signalbox.toml");
    std::fs::write(
        &envfile_path,
        format!(
            "actor = \"reliability@ci\"\naudit_log = \"{}\"\n[[environments]]\nname = \"stage\"\nadmin_url = \"http://{}\"\ntoken_file = \"{}\"\nconfirm = \"none\"\nmax_canary_step = 100\n",
            journal_path.display(),
            gw.running().admin_addr,
            token.display()
        ),
    )
    .unwrap();
    let env = Env::connect(envfile::load(&envfile_path).unwrap().environments[0].clone()).unwrap();
    let journal = Journal::new(&journal_path);

    // wrk keeps 16 keep-alive connections busy (two users requests to one payments
    // request) for the whole run; it counts non-2xx answers and socket errors itself.
    let script = dir.path().join("mix.lua");
    std::fs::write(
        &script,
        "local paths = {\"/users\", \"/users\", \"/pay\"}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % 3) + 1])\nend\n",
    )
    .unwrap();
    let load = Wrk(std::process::Command::new("wrk")
        .args(["-t1", "-c16", "--timeout", "5s", "--latency"])
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script)
        .arg(gw.url("/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk is installed (scripts/test.sh installs it)"));

    let started = Instant::now();
    let plan = schedule();
    let gap = Duration::from_secs(secs).mul_f64(0.9) / plan.len() as u32;
    let (mut applied, mut failed_changes) = (0u32, Vec::new());
    for (i, change) in plan.iter().enumerate() {
        tokio::time::sleep_until((started + gap * (i as u32 + 1)).into()).await;
        let action = match *change {
            Change::Flip => Some(Action::Flip {
                route: "users".into(),
                to: None,
            }),
            Change::Canary(percent) => Some(Action::SetCanary {
                route: "payments".into(),
                percent,
            }),
            Change::Rollback => Some(Action::Rollback { to: None }),
            Change::Flag(on) => Some(Action::SetFlag {
                key: "new-checkout".into(),
                state: None,
                variant: Some(if on { "on" } else { "off" }.into()),
            }),
            Change::Reload(n) => {
                // As `kill -HUP` does: the file changes, the gateway reloads it.
                std::fs::write(&gw.config_path, config(&ups, &token, n + 1)).unwrap();
                let r = gw.running().state.change(ChangeRequest {
                    actor: "reliability@ci".into(),
                    if_match: None,
                    kind: ChangeKind::Reload,
                });
                match r {
                    Ok(_) => applied += 1,
                    Err(e) => failed_changes.push(format!("{change:?}: {e}")),
                }
                None
            }
        };
        if let Some(action) = action {
            match control::plan(&env, action, None, chrono::Utc::now()).await {
                Ok(p) => {
                    let r = control::execute(&env, &p, &journal, "reliability@ci").await;
                    if r.outcome == Outcome::Applied {
                        applied += 1;
                    } else {
                        failed_changes.push(format!("{change:?}: {:?}", r.error));
                    }
                }
                // A flip right after a rollback may find nothing to flip: not a failure
                // of the data plane, but counted so the report is honest.
                Err(e) => failed_changes.push(format!("{change:?}: plan: {e}")),
            }
        }
    }
    let changes_took = started.elapsed();
    // Blocking on wrk here would take a runtime thread from the gateway.
    let out = tokio::task::spawn_blocking(move || load.wait())
        .await
        .unwrap();
    let report = WrkReport::parse(&out);
    eprintln!(
        "RELIABILITY changes-under-load: {applied} of {} changes applied in {:.1}s under {:.0} req/s for {secs}s: {} requests, {} non-2xx, {} socket errors (p99 {})",
        plan.len(),
        changes_took.as_secs_f64(),
        report.rps,
        report.requests,
        report.non_2xx,
        report.socket_errors,
        report.p99,
    );
    let (non_2xx, socket) = (report.non_2xx, report.socket_errors);
    assert!(
        changes_took < Duration::from_secs(secs),
        "the changes took {changes_took:?}, longer than the load ran"
    );
    let achieved = report.rps;
    assert_eq!(non_2xx, 0, "non-2xx responses during the changes");
    assert_eq!(socket, 0, "socket errors during the changes");
    assert!(
        failed_changes.is_empty(),
        "{} changes did not apply; the first: {:#?}",
        failed_changes.len(),
        &failed_changes[..failed_changes.len().min(5)]
    );
    assert!(
        achieved >= rps as f64 * 0.95,
        "the load client reached only {achieved:.0} req/s of {rps}"
    );
    // Every change is in the audit journal, and the journal parses.
    let read = Journal::new(&journal_path).read().unwrap();
    assert_eq!(read.skipped, 0, "every audit line parses");
    assert_eq!(
        read.entries.len(),
        180,
        "one audit entry per control change"
    );
    // The traffic really moved: both sides of each route served.
    for u in &ups {
        assert!(u.hits() > 0, "{} never got traffic", u.name);
    }
}
