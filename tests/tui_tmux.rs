//! The real binary in a real terminal: `signalbox sandbox` (cockpit included) inside tmux at
//! 80x24. Keys go in with `send-keys`, the screen comes back with `capture-pane`, and the
//! gateways' admin APIs say whether the changes really happened. The tmux server (on its
//! own socket) and every process in it are killed on drop, also when an assertion fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::tmux::{self, Tmux};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
/// Port bases this test may use (each sandbox takes base..base+300).
const BASES: [u16; 3] = [24000, 24300, 24600];

fn free_base() -> u16 {
    free_base_of(&BASES)
}

fn free_base_of(bases: &[u16]) -> u16 {
    for &base in bases {
        if (0..300).all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok()) {
            return base;
        }
    }
    panic!("none of the port bases {bases:?} is free");
}

/// The route's split as the environment's admin API reports it.
fn split(admin: &str, token_file: &Path, route: &str) -> BTreeMap<String, u64> {
    let token = std::fs::read_to_string(token_file).expect("admin token");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let state: serde_json::Value = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{admin}/admin/state"))
            .bearer_auth(token.trim())
            .send()
            .await
            .expect("admin API answers")
            .json()
            .await
            .expect("JSON")
    });
    let r = state["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == route))
        .unwrap_or_else(|| panic!("no route {route} in {state}"));
    serde_json::from_value(r["split"].clone()).expect("split")
}

fn get_json(url: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(url)
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON")
    })
}

#[test]
fn the_cockpit_in_tmux_steps_a_canary_flips_prod_rolls_back_injects_a_fault_and_quits() {
    assert!(
        tmux::available(),
        "this test drives the real binary in tmux: install tmux (apt-get install tmux)"
    );
    let base = free_base();
    let dir = tempfile::tempdir().expect("temp dir");
    let state: PathBuf = dir.path().join("state");
    let run: PathBuf = dir.path().join("run");
    // The shell reports the exit status on the screen once the cockpit is gone, then
    // lingers so the terminal's state can be read from a live pane.
    let tmux = Tmux::start(
        "e2e-cockpit",
        &format!(
            "XDG_RUNTIME_DIR={} {BIN} sandbox --port-base {base} --rps 5 --state-dir {}; echo EXIT=$?; sleep 30",
            run.display(),
            state.display()
        ),
        80,
        24,
    );
    let admin = |i: u16| format!("http://127.0.0.1:{}", base + 100 * i + 1);
    let token = |env: &str| state.join(env).join("admin-token");

    // 1. The overview: every environment as a tab, the routes of the first.
    let s = tmux.wait_for(&["1 dev", "2 stage", "3 prod", "payments", "connected"], 30);
    assert!(s.contains("users"), "{s}");
    // Another terminal finds the running sandbox without --config.
    let ctl = |run: &PathBuf| {
        std::process::Command::new(BIN)
            .args(["ctl", "--env", "stage", "status"])
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", run)
            .env("XDG_CONFIG_HOME", dir.path().join("no-config"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ctl runs")
    };
    let out = ctl(&run);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("stage  revision"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. Stage asks yes/no: step the payments canary (25% → 35%) and confirm.
    tmux.type_keys("2");
    tmux.wait_for(&["http://127.0.0.1:", "v2 25%"], 10);
    tmux.type_keys("j+");
    let s = tmux.wait_for(&["confirm change", "set payments canary to 35%"], 10);
    assert!(s.contains("payments-v1 75 / payments-v2 25"), "before: {s}");
    assert!(s.contains("payments-v1 65 / payments-v2 35"), "after: {s}");
    tmux.key("Enter");
    tmux.wait_for(&["applied as revision"], 10);
    // 3. The gateway took it.
    let sp = split(&admin(1), &token("stage"), "payments");
    assert_eq!(sp.get("payments-v2"), Some(&35), "{sp:?}");
    assert_eq!(sp.get("payments-v1"), Some(&65), "{sp:?}");

    // 4. Prod wants its name typed: flip users blue → green.
    tmux.type_keys("3");
    tmux.wait_for(&["live: users-blue"], 10);
    tmux.type_keys("kkf");
    tmux.wait_for(&["type prod to confirm"], 10);
    tmux.key("Enter");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        tmux.screen().contains("type prod to confirm"),
        "Enter without the name does nothing"
    );
    tmux.type_keys("prod");
    tmux.key("Enter");
    tmux.wait_for(&["applied as revision", "live: users-green"], 10);
    let sp = split(&admin(2), &token("prod"), "users");
    assert_eq!(sp.get("users-green"), Some(&100), "{sp:?}");

    // 5. Roll back (to the previous revision), again with the name.
    tmux.type_keys("r");
    tmux.wait_for(
        &["roll back to the previous revision", "type prod to confirm"],
        10,
    );
    tmux.type_keys("prod");
    tmux.key("Enter");
    tmux.wait_for(&["live: users-blue"], 10);
    let sp = split(&admin(2), &token("prod"), "users");
    assert_eq!(sp.get("users-blue"), Some(&100), "{sp:?}");

    // 6. A fault from the cockpit: x prepares it for dev's payments canary, Enter plans it
    //    (dev asks no confirmation), and the sandbox control API has it.
    tmux.type_keys("1");
    tmux.wait_for(&["v2 50%"], 10);
    tmux.type_keys("kkkjx");
    tmux.wait_for(&[":fault payments-v2 5xx 50"], 10);
    tmux.key("Enter");
    tmux.wait_for(&["applied: dev: inject 50% 5xx into payments-v2"], 10);
    let faults = get_json(&format!(
        "http://127.0.0.1:{}/sandbox/faults/dev/payments/v2",
        base + 99
    ));
    assert_eq!(faults["error_rate"], 0.5, "{faults}");
    let journal = std::fs::read_to_string(state.join("audit.jsonl")).expect("audit journal");
    assert!(
        journal.contains("inject 50% 5xx into payments-v2"),
        "the fault is in the audit journal"
    );

    // 7. q quits with status 0 and leaves the terminal sane: out of the alternate screen,
    //    cursor shown.
    tmux.type_keys("q");
    tmux.wait_for(&["EXIT="], 15);
    let d = tmux.display("#{alternate_on} #{cursor_flag}");
    assert_eq!(d.trim(), "0 1", "normal screen, cursor visible");
    let s = tmux.screen();
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(s.contains("signalbox sandbox: three environments"), "{s}");
    // Gone with the sandbox: the link no longer leads anywhere.
    assert!(!run.join("signalbox/sandbox.toml").exists());
    assert!(!ctl(&run).status.success());
}

/// Port bases of the walkthrough test (26000–27999; each sandbox takes base..base+300).
const WALK_BASES: [u16; 3] = [27000, 27300, 27600];

/// `signalbox walk RUNBOOK` on a terminal opens the cockpit's walkthrough view: the change
/// is confirmed in the dialog, the pause approved with `c`, the release seen on screen and
/// in the gateway, and the process exits 0 with the release note's path.
#[test]
fn walk_on_a_terminal_runs_in_the_cockpit_confirm_continue_release_quit() {
    assert!(
        tmux::available(),
        "this test drives the real binary in tmux: install tmux (apt-get install tmux)"
    );
    let base = free_base_of(&WALK_BASES);
    let dir = tempfile::tempdir().expect("temp dir");
    let state: PathBuf = dir.path().join("state");
    let mut sandbox = std::process::Command::new(BIN)
        .args(["sandbox", "--no-tui", "--rps", "10", "--port-base"])
        .arg(base.to_string())
        .arg("--state-dir")
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the sandbox starts");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sandbox.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("READY line");
    let _sandbox = Kill(sandbox);
    let ready: serde_json::Value =
        serde_json::from_str(line.strip_prefix("READY ").expect("READY {json}")).expect("JSON");
    let config = ready["config"].as_str().expect("config path").to_string();
    let admin = ready["envs"]["stage"]["admin"]
        .as_str()
        .expect("stage admin")
        .to_string();
    let token = state.join("stage").join("admin-token");
    assert_eq!(
        split(&admin, &token, "users").get("users-green"),
        Some(&100),
        "stage starts on green"
    );

    let runbook =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/runbooks/approved-flip.yaml");
    let tmux = Tmux::start(
        "e2e-walk",
        &format!(
            "{BIN} walk {} --config {config} --actor alice@tmux; echo EXIT=$?; sleep 30",
            runbook.display()
        ),
        80,
        24,
    );
    // The walkthrough view, and stage's confirmation of the flip (before → after).
    let s = tmux.wait_for(
        &["walkthrough: users to blue in stage", "confirm change"],
        20,
    );
    assert!(s.contains("flip users to users-blue"), "{s}");
    tmux.key("Enter");
    // The pause: the walk's keys are offered; c approves it.
    let s = tmux.wait_for(
        &["‖ paused: users in stage answers from blue", "c continue"],
        20,
    );
    assert!(s.contains("✓  2. stage  flip users to users-blue"), "{s}");
    assert_eq!(
        split(&admin, &token, "users").get("users-blue"),
        Some(&100),
        "the flip went through the gateway"
    );
    tmux.type_keys("c");
    let s = tmux.wait_for(&["✓ released"], 20);
    assert!(s.contains("✓  4. stage  smoke"), "{s}");
    // Quitting after the release needs no confirmation; the exit code is the walk's.
    tmux.type_keys("q");
    let s = tmux.wait_for(&["EXIT="], 15);
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(s.contains("release note: "), "{s}");
    let d = tmux.display("#{alternate_on} #{cursor_flag}");
    assert_eq!(d.trim(), "0 1", "normal screen, cursor visible");
    let journal = std::fs::read_to_string(state.join("audit.jsonl")).expect("audit journal");
    let flip = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["env"] == "stage" && e["action"]["kind"] == "flip")
        .expect("the flip is audited");
    assert_eq!(flip["actor"], "alice@tmux");
    assert_eq!(flip["outcome"], "applied");
    drop(tmux);

    // Abort from the keyboard at a pause: it asks first, then rolls back by the policy,
    // and the process exits 2.
    let back = dir.path().join("back.yaml");
    std::fs::write(
        &back,
        "name: users back to green\nenv: stage\nroute: users\nrollback: { flip: users-blue }\nsteps:\n  - flip: { to: users-green }\n  - pause: { message: keep green? }\n",
    )
    .expect("runbook");
    let tmux = Tmux::start(
        "e2e-abort",
        &format!(
            "{BIN} walk {} --config {config} --yes; echo EXIT=$?; sleep 30",
            back.display()
        ),
        80,
        24,
    );
    tmux.wait_for(&["‖ paused: keep green?"], 20);
    assert_eq!(
        split(&admin, &token, "users").get("users-green"),
        Some(&100)
    );
    tmux.type_keys("A");
    tmux.wait_for(&["abort the walkthrough", "Enter abort and roll back"], 10);
    tmux.type_keys("wrong build");
    tmux.key("Enter");
    // The outcome line, not the dialog's own "is rolled back by the runbook's policy".
    let screen = tmux.wait_for(&["rolled back: wrong build"], 20);
    let journal = std::fs::read_to_string(state.join("audit.jsonl")).unwrap_or_default();
    assert_eq!(
        split(&admin, &token, "users").get("users-blue"),
        Some(&100),
        "the rollback policy sent users back to blue; screen:\n{screen}\njournal:\n{journal}"
    );
    tmux.type_keys("q");
    let s = tmux.wait_for(&["EXIT="], 15);
    assert!(s.contains("EXIT=2"), "{s}");
}

/// A cockpit whose terminal disappears (the SSH session drops, the tmux server is killed)
/// exits instead of lingering: crossterm spins on a dead tty, so a cockpit that waited for
/// its input thread would burn a core forever on the bastion host.
#[test]
fn the_cockpit_exits_when_its_terminal_goes_away() {
    assert!(tmux::available(), "install tmux (apt-get install tmux)");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("signalbox.toml");
    // Nothing listens there: the cockpit shows the environment as unreachable.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = dead.local_addr().expect("addr");
    drop(dead);
    std::fs::write(
        &config,
        format!("[[environments]]\nname = \"edge\"\nadmin_url = \"http://{admin}\"\n"),
    )
    .expect("config");
    let mut tmux = Tmux::start(
        "e2e-gone",
        &format!("exec {BIN} --config {}", config.display()),
        80,
        24,
    );
    tmux.wait_for(&["edge"], 20);
    let pid = tmux.take_pid().expect("the pane's pid");
    // Quit and lose the terminal at once: the input reader is still polling the tty
    // when it dies (the race that left cockpits spinning after a dropped session).
    tmux.type_keys("q");
    let _ = tmux.cmd(&["kill-server"]);
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let still = alive();
    if still {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        !still,
        "the cockpit (pid {pid}) outlived its terminal by 5 s"
    );
}
