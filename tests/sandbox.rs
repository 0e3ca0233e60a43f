//! `signalbox sandbox --no-tui`, the real binary: READY, routing in every environment,
//! live traffic, fault injection, a flip through `ctl`, and a clean stop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

struct Sandbox {
    child: Child,
    ready: serde_json::Value,
    took: Duration,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port base whose 300 ports are free right now. Bases stay below Linux's ephemeral range
/// (32768+), so client sockets of other tests cannot take a port between probe and use.
fn free_base(salt: u32) -> u16 {
    for attempt in 0..50u32 {
        let base = 20_000 + ((std::process::id() + salt * 19 + attempt * 7) % 40) as u16 * 300;
        let free = (0..300)
            .step_by(1)
            .all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range");
}

fn start(base: u16, state: &std::path::Path) -> Sandbox {
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .args([
            "sandbox",
            "--no-tui",
            "--rps",
            "40",
            "--port-base",
            &base.to_string(),
            "--state-dir",
        ])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let took = t.elapsed();
    let Some(json) = line.strip_prefix("READY ") else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no READY line: {line:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    Sandbox {
        child,
        ready: serde_json::from_str(json).unwrap(),
        took,
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

async fn metric(admin: &str, needle: &str) -> f64 {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn run(args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_end_to_end() {
    let state = tempfile::tempdir().unwrap();
    let base = free_base(0);
    let mut sb = start(base, state.path());
    assert!(sb.took < Duration::from_secs(5), "READY took {:?}", sb.took);
    eprintln!("time to READY: {:?}", sb.took);
    let envs = sb.ready["envs"].clone();
    let config = sb.ready["config"].as_str().unwrap().to_string();
    let gw = |e: &str| envs[e]["gateway"].as_str().unwrap().to_string();
    let admin = |e: &str| envs[e]["admin"].as_str().unwrap().to_string();
    assert_eq!(gw("dev"), format!("http://127.0.0.1:{base}"));
    assert_eq!(admin("prod"), format!("http://127.0.0.1:{}", base + 201));

    // Every environment routes, each as it is set up.
    for (env, users) in [("dev", "green"), ("stage", "green"), ("prod", "blue")] {
        let (s, v) = get(&format!("{}/api/users/7", gw(env)), &[]).await;
        assert_eq!(
            (s, v["service"].as_str(), v["version"].as_str()),
            (200, Some("users"), Some(users)),
            "{env}"
        );
        let (_, v) = get(
            &format!("{}/api/search?q=x", gw(env)),
            &[("x-canary", "true")],
        )
        .await;
        assert_eq!(v["version"], "v2");
        let (s, _) = get(&format!("{}/api/orders/1", gw(env)), &[]).await;
        assert_eq!(s, 401, "orders need a key");
        let key = std::fs::read_to_string(state.path().join(env).join("keys/web-app")).unwrap();
        let (s, v) = get(
            &format!("{}/api/orders/1", gw(env)),
            &[("x-api-key", key.trim())],
        )
        .await;
        assert_eq!((s, v["consumer"].as_str()), (200, Some("web-app")));
    }

    // The flag-gated checkout is off, except for the beta cohort; flip it on with ctl.
    let (s, _) = get(
        &format!("{}/api/checkout", gw("dev")),
        &[("x-user-id", "user-1")],
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = get(
        &format!("{}/api/checkout", gw("dev")),
        &[("x-user-id", "beta-1")],
    )
    .await;
    assert_eq!(s, 200);
    let (code, out) = run(&[
        "ctl",
        "--config",
        &config,
        "--env",
        "dev",
        "--yes",
        "flag",
        "new-checkout",
        "on",
    ]);
    assert_eq!(code, 0, "{out}");
    let (s, _) = get(
        &format!("{}/api/checkout", gw("dev")),
        &[("x-user-id", "beta-1")],
    )
    .await;
    assert_eq!(s, 200);
    let (code, out) = run(&[
        "ctl",
        "--config",
        &config,
        "--env",
        "dev",
        "--yes",
        "flag",
        "new-checkout",
        "off",
    ]);
    assert_eq!(code, 0, "{out}");
    let (s, _) = get(
        &format!("{}/api/checkout", gw("dev")),
        &[("x-user-id", "beta-1")],
    )
    .await;
    assert_eq!(s, 404, "a disabled flag closes the route for everyone");

    // Traffic flows on its own.
    let before = metric(&admin("stage"), "signalbox_requests_total").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = metric(&admin("stage"), "signalbox_requests_total").await;
    assert!(
        after - before >= 20.0,
        "generated traffic: {before} → {after}"
    );

    // A fault on one version shows in that version's error counter.
    let (code, out) = run(&[
        "sandbox",
        "fault",
        "--config",
        &config,
        "--env",
        "dev",
        "--service",
        "payments",
        "--version",
        "v2",
        "--error-rate",
        "100%",
    ]);
    assert_eq!(code, 0, "{out}");
    let needle = "signalbox_requests_total{route=\"payments\",upstream=\"payments-v2\",method=\"GET\",status_class=\"5xx\"}";
    let t = Instant::now();
    while metric(&admin("dev"), needle).await < 5.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no 5xx seen on payments-v2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out) = run(&[
        "sandbox",
        "fault",
        "--config",
        &config,
        "--env",
        "dev",
        "--service",
        "payments",
        "--version",
        "v2",
        "--clear",
    ]);
    assert_eq!(code, 0, "{out}");

    // Flip users to blue in stage through ctl, against the running sandbox.
    let (code, out) = run(&[
        "ctl", "--config", &config, "--env", "stage", "--yes", "flip", "users",
    ]);
    assert_eq!(code, 0, "{out}");
    let (_, v) = get(&format!("{}/api/users/7", gw("stage")), &[]).await;
    assert_eq!(v["version"], "blue");
    // Search has only a header canary: a canary step gives its upstream weight too.
    let (code, out) = run(&[
        "ctl", "--config", &config, "--env", "dev", "--yes", "canary", "search", "10",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("search-v1 90 / search-v2 10"), "{out}");

    // SIGTERM: everything stops within 2 s, exit 0, ports released.
    Command::new("kill")
        .args(["-TERM", &sb.child.id().to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    let code = loop {
        if let Some(st) = sb.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "did not stop within 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    for off in [0u16, 1, 10, 13, 99, 100, 216] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + off)).is_err(),
            "port {} still open",
            base + off
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_fast_and_names_it() {
    let (base, _squat) = (1..20)
        .find_map(|salt| {
            let base = free_base(salt);
            std::net::TcpListener::bind(("127.0.0.1", base + 113))
                .ok()
                .map(|l| (base, l))
        })
        .expect("a port to squat on");
    let state = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = Command::new(BIN)
        .args([
            "sandbox",
            "--no-tui",
            "--port-base",
            &base.to_string(),
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {}", base + 113)) && err.contains("payments v2"),
        "{err}"
    );
}
