//! Outages seen from the cockpit (issue 10, "Faults"): the real binary in tmux against three
//! real `signalbox gateway` processes and a fourth whose `/metrics` is stage's metrics
//! source. Killing prod's gateway (by PID) must put an error panel naming its admin address
//! on screen while the other environments keep rendering and keys keep working; starting
//! it again on the same ports must bring prod back. The same for the metrics source.
//! Every process is killed on drop, also when an assertion fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tmux::{self, Tmux};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
/// Port bases this test may use: each takes base..base+8.
const BASES: [u16; 3] = [25000, 25100, 25200];

/// A `signalbox gateway` process; killed on drop.
struct Gateway {
    config: PathBuf,
    state: PathBuf,
    admin: u16,
    child: Option<Child>,
}

impl Gateway {
    fn new(dir: &Path, name: &str, port: u16, admin: u16) -> Gateway {
        let config = dir.join(format!("{name}.yaml"));
        // The upstream is never called: the cockpit reads state, it sends no traffic.
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin} }}\n\
                 upstreams:\n  {name}-v1: {{ targets: [127.0.0.1:9] }}\n  {name}-v2: {{ targets: [127.0.0.1:9] }}\n\
                 routes:\n  - {{ name: {name}-api, paths: [/api], split: {{ {name}-v1: 90, {name}-v2: 10 }}, canary: {name}-v2 }}\n"
            ),
        )
        .expect("gateway config");
        let mut g = Gateway {
            config,
            state: dir.join(format!("{name}-state")),
            admin,
            child: None,
        };
        g.start();
        g
    }

    /// Starts the gateway and waits for its admin API; retries while the old process's
    /// ports are still being released.
    fn start(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(BIN)
                .args(["gateway", "--config"])
                .arg(&self.config)
                .arg("--state-dir")
                .arg(&self.state)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .env_remove("RUST_LOG")
                .spawn()
                .expect("gateway starts");
            let ready = Instant::now() + Duration::from_secs(5);
            while Instant::now() < ready {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if healthz(self.admin) {
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "the gateway on admin port {} did not come up",
                self.admin
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// SIGKILL by PID: the admin API disappears at once.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bare HTTP/1.0 GET of `/healthz`, so the check needs no runtime.
fn healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.ends_with(b"200")
}

fn free_base() -> u16 {
    for base in BASES {
        if (0..8).all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok()) {
            return base;
        }
    }
    panic!("none of the port bases {BASES:?} is free");
}

#[test]
fn the_cockpit_shows_a_dead_admin_api_and_a_dead_metrics_source_and_recovers_from_both() {
    assert!(
        tmux::available(),
        "this test drives the real binary in tmux: install tmux (apt-get install tmux)"
    );
    let base = free_base();
    let dir = tempfile::tempdir().expect("temp dir");
    let _dev = Gateway::new(dir.path(), "dev", base, base + 1);
    let _stage = Gateway::new(dir.path(), "stage", base + 2, base + 3);
    let mut prod = Gateway::new(dir.path(), "prod", base + 4, base + 5);
    let mut source = Gateway::new(dir.path(), "mx", base + 6, base + 7);
    let prod_admin = format!("http://127.0.0.1:{}", base + 5);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", base + 7);
    let config = dir.path().join("signalbox.toml");
    std::fs::write(
        &config,
        format!(
            "audit_log = \"{audit}\"\n\n\
             [[environments]]\nname = \"dev\"\nadmin_url = \"http://127.0.0.1:{dev}\"\n\n\
             [[environments]]\nname = \"stage\"\nadmin_url = \"http://127.0.0.1:{stage}\"\n\
             [environments.metrics]\nkind = \"scrape\"\nurl = \"{metrics_url}\"\ninterval = \"500ms\"\ntimeout = \"500ms\"\n\n\
             [[environments]]\nname = \"prod\"\nadmin_url = \"{prod_admin}\"\nconfirm = \"type-name\"\n",
            audit = dir.path().join("audit.jsonl").display(),
            dev = base + 1,
            stage = base + 3,
        ),
    )
    .expect("cockpit config");
    let tmux = Tmux::start(
        "outage",
        &format!(
            "{BIN} --config {}; echo EXIT=$?; sleep 30",
            config.display()
        ),
        80,
        24,
    );

    // Everything up: prod is connected.
    tmux.wait_for(&["1 dev", "2 stage", "3 prod", "dev-api", "connected"], 30);
    tmux.type_keys("3");
    tmux.wait_for(&["prod-api", "connected", &prod_admin], 10);

    // 1. prod's gateway dies: an error panel naming the address, within a bounded time.
    prod.kill();
    let t = Instant::now();
    let s = tmux.wait_for(&["DOWN", "prod admin API not answering", &prod_admin], 10);
    let seen_after = t.elapsed();
    assert!(s.contains("prod-api"), "the last known routes stay: {s}");
    // The other environments keep rendering, and keys still work.
    tmux.type_keys("1");
    tmux.wait_screen(&["dev-api", "connected"], &["not answering"], 5);
    tmux.type_keys("?");
    tmux.wait_for(&["keys"], 5);
    tmux.key("Escape");
    tmux.type_keys("3");
    tmux.wait_for(&["prod admin API not answering"], 5);

    // 2. Back on the same ports: prod recovers.
    prod.start();
    let t = Instant::now();
    tmux.wait_screen(&["prod-api", "connected"], &["not answering", "DOWN"], 10);
    let recovered_after = t.elapsed();

    // 3. Stage's metrics source dies: its live panel says so, the admin API is still fine.
    tmux.type_keys("2");
    tmux.wait_screen(&["stage-api", "connected", "live"], &[&metrics_url], 10);
    source.kill();
    let s = tmux.wait_for(&["cannot reach", &metrics_url], 10);
    assert!(
        s.contains("metrics unavailable") || s.contains("STALE"),
        "the live panel is marked: {s}"
    );
    assert!(s.contains("connected"), "the admin API is still up: {s}");
    assert!(!s.contains("DOWN"), "the admin API is still up: {s}");
    tmux.type_keys("1");
    tmux.wait_screen(&["dev-api", "connected"], &[&metrics_url], 5);
    tmux.type_keys("2");
    tmux.wait_for(&["stage-api", &metrics_url], 5);

    // 4. The source returns: the panel recovers.
    source.start();
    tmux.wait_screen(
        &["stage-api", "connected", "live"],
        &[&metrics_url, "metrics unavailable", "STALE"],
        15,
    );

    // Still alive and responsive: q quits with status 0.
    tmux.type_keys("q");
    let s = tmux.wait_for(&["EXIT="], 10);
    assert!(s.contains("EXIT=0"), "{s}");
    eprintln!(
        "prod down shown after {seen_after:?}, recovery shown after {recovered_after:?} (poll every 1 s)"
    );
}
