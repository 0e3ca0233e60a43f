//! A real Prometheus server for tests: started on a free loopback port with a private
//! TSDB directory and a generated config that scrapes the given targets, killed on drop
//! (also when the test fails).
//!
//! The binary is `$SIGNALBOX_PROMETHEUS_BIN`, else `prometheus` on `PATH` or in
//! /usr/bin. A missing binary fails the test with instructions; it never skips.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN_ENV: &str = "SIGNALBOX_PROMETHEUS_BIN";

/// Where the prometheus binary is; panics with install instructions if nowhere.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{BIN_ENV}={} is not a file; point it at a prometheus binary or install one \
             with `apt-get install -y prometheus`",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "prometheus is not installed, and this test needs a real Prometheus server. \
                 Install it with `apt-get update && apt-get install -y prometheus` (CI does), \
                 or set {BIN_ENV} to a prometheus binary."
            )
        })
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (as `job="gateway"`, path `/metrics`) every
    /// `interval`, and waits until its HTTP API is ready. Data arrives from the first
    /// scrape on; use [`Prometheus::wait_for`] for it.
    pub async fn start(targets: &[SocketAddr], interval: Duration) -> Prometheus {
        let bin = binary();
        let mut last_log = String::new();
        // A port picked free can be taken before Prometheus binds it; try a few.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(&config, config_yaml(targets, interval)).expect("write config");
            let child = spawn(&bin, dir.path(), addr);
            let mut p = Prometheus {
                child,
                addr,
                dir,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client"),
            };
            if p.wait_ready(Duration::from_secs(30)).await {
                return p;
            }
            last_log = p.log();
        }
        panic!("prometheus did not become ready; last log:\n{last_log}");
    }

    /// Kills the server (an outage); [`Prometheus::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same address with the same data, and waits until
    /// it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(&binary(), self.dir.path(), self.addr);
        assert!(
            self.wait_ready(Duration::from_secs(30)).await,
            "prometheus did not come back; log:\n{}",
            self.log()
        );
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let ready = self
                .client
                .get(format!("{}/-/ready", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Runs an instant query and returns the whole API response (status may be "error").
    pub async fn query_raw(&self, query: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("query {query:?}: {e}"));
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("query {query:?}: {e}"))
    }

    /// Runs an instant query and returns `data.result`, panicking on a query error.
    pub async fn query(&self, query: &str) -> Value {
        let v = self.query_raw(query).await;
        assert_eq!(v["status"], "success", "query {query:?} failed: {v}");
        v["data"]["result"].clone()
    }

    /// Polls a query until its result is a non-empty vector, for at most `within`.
    pub async fn wait_for(&self, query: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.query(query).await;
            if r.as_array().is_some_and(|a| !a.is_empty()) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {query:?} after {within:?}; prometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The end of Prometheus's log, for failure messages.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("prometheus.log")) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts prometheus with the config, data and log in `dir`, appending to the log.
fn spawn(bin: &std::path::Path, dir: &std::path::Path, addr: SocketAddr) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("prometheus.log"))
        .expect("log file");
    Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--storage.tsdb.retention.time=1h")
        .arg("--log.level=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

fn config_yaml(targets: &[SocketAddr], interval: Duration) -> String {
    let secs = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: {i}\n  scrape_timeout: {i}\n  evaluation_interval: {i}\n\
         scrape_configs:\n  - job_name: gateway\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: [{}]\n",
        list.join(", "),
        i = secs(interval)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
