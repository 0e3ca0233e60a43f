//! The real `signalbox` binary: config check, signals (reload, graceful shutdown), access
//! logs, and secrets that never reach a log line.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Mode, client, free_port, upstream};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

/// A running binary whose stderr is collected; killed on drop, even when a test fails.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(admin: &str) {
    let c = client();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = c.get(format!("http://{admin}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway on {admin} did not come up");
}

#[test]
fn config_check_reports_file_line_column_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "upstreams:\n  blue: { targets: [127.0.0.1:1] }\nroutes:\n  - name: a\n    paths: [/a]\n    split: { blue: 0 }\n  - name: a\n    paths: [/b]\n    split: { green: 1 }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = bad.display();
    assert!(
        err.contains(&format!("{f}:6:5: routes[0].split: all weights are zero")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:7:5: routes[1].name: duplicate route name \"a\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:9:14: routes[1].split.green: unknown upstream \"green\""
        )),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["config", "check", "examples/gateway.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sighup_and_file_change_reload_and_a_bad_file_keeps_the_old_config() {
    let blue = upstream("blue").await;
    let green = upstream("green").await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    let write = |b: u32, g: u32| {
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin_port} }}\nupstreams:\n  blue: {{ targets: [{}] }}\n  green: {{ targets: [{}] }}\nroutes:\n  - {{ name: users, paths: [/], split: {{ blue: {b}, green: {g} }} }}\n",
                blue.target(),
                green.target()
            ),
        )
        .unwrap()
    };
    write(100, 0);
    let p = Proc::spawn(&["gateway", "--config", cfg.to_str().unwrap()], &[]);
    wait_ready(&format!("127.0.0.1:{admin_port}")).await;
    let c = client();
    let url = format!("http://127.0.0.1:{port}/");
    let who = || async {
        c.get(&url)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["upstream"]
            .clone()
    };
    assert_eq!(who().await, "blue");
    let revisions = || async {
        c.get(format!("http://127.0.0.1:{admin_port}/admin/revisions"))
            .send()
            .await
            .unwrap()
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
            .len()
    };
    assert_eq!(revisions().await, 1);

    // A file change is picked up by the watcher, once: the reload reading the file must not
    // set off another one.
    write(0, 100);
    let t = Instant::now();
    while who().await != "green" {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "file change not applied; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        revisions().await,
        2,
        "one save, one revision; log:\n{}",
        p.log()
    );
    // A SIGHUP with the file as it is running is no new revision.
    p.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(revisions().await, 2);
    assert!(
        p.log().contains("unchanged, no new revision"),
        "{}",
        p.log()
    );
    // A broken file is refused; traffic keeps flowing on the old config.
    std::fs::write(
        &cfg,
        "routes: [ { name: x, split: { nowhere: 1 } } ]\nupstreams: {}\n",
    )
    .unwrap();
    p.signal("HUP");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(who().await, "green");
    assert!(
        p.log()
            .contains("config rejected; the running config is unchanged"),
        "{}",
        p.log()
    );
    write(100, 0);
    p.signal("HUP");
    let t = Instant::now();
    while who().await != "blue" {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "SIGHUP reload not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(revisions().await, 3, "{}", p.log());
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let slow = upstream("slow").await;
    slow.set_mode(Mode::Delay(800));
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin_port} }}\nserver: {{ workers: 3 }}\nupstreams:\n  slow: {{ targets: [{}] }}\nroutes:\n  - {{ name: slow, paths: [/], split: {{ slow: 1 }} }}\n",
            slow.target()
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(&["gateway", "--config", cfg.to_str().unwrap()], &[]);
    wait_ready(&format!("127.0.0.1:{admin_port}")).await;
    // `server.workers` serving threads, visible to an operator in `top -H`.
    let mut threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", p.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("gateway-"))
        .collect();
    threads.sort();
    assert_eq!(threads, ["gateway-0", "gateway-1", "gateway-2"]);
    let url = format!("http://127.0.0.1:{port}/");
    let inflight: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(
                async move { client().get(&url).send().await.map(|r| r.status().as_u16()) },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    for t in inflight {
        assert_eq!(
            t.await.unwrap().unwrap(),
            200,
            "an in-flight request was cut off (connections are spread over the serving threads, and every one drains)"
        );
    }
    let code = tokio::task::spawn_blocking(move || {
        let c = p.wait_exit(Duration::from_secs(5));
        (c, p.log())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "log:\n{}", code.1);
    // New connections are refused once it has stopped.
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn access_log_has_one_line_per_request_and_no_secret_ever() {
    let up = upstream("orders").await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    let key_file = dir.path().join("partner.key");
    std::fs::write(&key_file, "FILE-SECRET-4b7e19\n").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin_port} }}\nlog: {{ level: debug, format: json }}\nconsumers:\n  - {{ name: app, keys: [{{ env: TEST_APP_KEY }}] }}\n  - {{ name: partner, keys: [{{ file: {} }}] }}\nupstreams:\n  orders: {{ targets: [{}] }}\n  dead: {{ targets: [127.0.0.1:{}] }}\nroutes:\n  - {{ name: orders, paths: [/orders], split: {{ orders: 1 }}, plugins: {{ key_auth: {{}} }} }}\n  - {{ name: dead, paths: [/dead], split: {{ dead: 1 }}, plugins: {{ key_auth: {{}} }} }}\n",
            key_file.display(),
            up.target(),
            free_port()
        ),
    )
    .unwrap();
    let secrets = [
        "ENV-SECRET-9f3a2c",
        "FILE-SECRET-4b7e19",
        "WRONG-KEY-77d1e0",
        "BEARER-TOKEN-0c55aa",
    ];
    let p = Proc::spawn(
        &["gateway", "--config", cfg.to_str().unwrap()],
        &[("TEST_APP_KEY", secrets[0])],
    );
    wait_ready(&format!("127.0.0.1:{admin_port}")).await;
    let c = client();
    let base = format!("http://127.0.0.1:{port}");
    let r = c
        .get(format!("{base}/orders"))
        .header("x-api-key", secrets[0])
        .header("x-request-id", "rid-ok-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(format!("{base}/orders"))
            .header("x-api-key", secrets[1])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/orders"))
            .header("x-api-key", secrets[2])
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(format!("{base}/dead?apikey={}", secrets[2]))
        .header("x-api-key", secrets[0])
        .header("authorization", format!("Bearer {}", secrets[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = p.log();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "signalbox::access")
        .collect();
    assert_eq!(access.len(), 4, "{log}");
    let first = &access[0]["fields"];
    assert_eq!(first["request_id"], "rid-ok-1");
    assert_eq!(first["route"], "orders");
    assert_eq!(first["upstream"], "orders");
    assert_eq!(first["status"], 200);
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(access[2]["fields"]["status"], 401);
    assert_eq!(access[3]["fields"]["path"], "/dead");
    for s in secrets {
        assert!(!log.contains(s), "secret {s} leaked into the log:\n{log}");
    }
}
