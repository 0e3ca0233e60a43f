//! Shared test harness: real upstream servers and real gateways on loopback sockets.
#![allow(dead_code)]

pub mod prometheus;
pub mod tmux;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use signalbox::gateway::{GatewayOptions, RunningGateway};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a test upstream behaves; switchable while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Status(u16),
    Delay(u64),
    /// Accept and never answer.
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Answer bytes that are not HTTP.
    Garbage,
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Bytes of request bodies received.
    pub body_bytes: Arc<AtomicU64>,
    mode: Arc<std::sync::Mutex<Mode>>,
    task: JoinHandle<()>,
    /// Cancels every open connection: a killed process closes its sockets.
    conns: tokio_util::sync::CancellationToken,
}

impl Upstream {
    /// Stops the server as `kill -9` would: the listener goes away (new connections are
    /// refused) and every open connection is closed.
    pub fn kill(&self) {
        self.task.abort();
        self.conns.cancel();
    }
    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP server answering `{"upstream": name, "path": ..., "headers": {...}, "header_lines": [[name, value], ...]}`.
pub async fn upstream(name: &str) -> Upstream {
    upstream_on(name, "127.0.0.1:0".parse().unwrap()).await
}

pub async fn upstream_on(name: &str, addr: SocketAddr) -> Upstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    let body_bytes = Arc::new(AtomicU64::new(0));
    let mode = Arc::new(std::sync::Mutex::new(Mode::Ok));
    let (h, b, m, n) = (
        hits.clone(),
        body_bytes.clone(),
        mode.clone(),
        name.to_string(),
    );
    let conns = tokio_util::sync::CancellationToken::new();
    let cancel = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let (h, b, m, n) = (h.clone(), b.clone(), m.clone(), n.clone());
            let cancel = cancel.clone();
            tokio::spawn(cancel.run_until_cancelled_owned(async move {
                let mode = *m.lock().unwrap();
                match mode {
                    Mode::Reset => {
                        use tokio::io::AsyncReadExt;
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf).await;
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.set_zero_linger();
                        drop(stream);
                        return;
                    }
                    Mode::Garbage => {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf).await;
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = stream
                            .write_all(b"\x00\x01garbage that is not http\r\n\r\n")
                            .await;
                        return;
                    }
                    _ => {}
                }
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (h, b, m, n) = (h.clone(), b.clone(), m.clone(), n.clone());
                    async move { Ok::<_, Infallible>(answer(req, &n, &h, &b, &m).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }));
        }
    });
    Upstream {
        name: name.to_string(),
        addr,
        hits,
        connections,
        body_bytes,
        mode,
        task,
        conns,
    }
}

async fn answer(
    req: Request<Incoming>,
    name: &str,
    hits: &AtomicUsize,
    body_bytes: &AtomicU64,
    mode: &std::sync::Mutex<Mode>,
) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let m = *mode.lock().unwrap();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let method = req.method().to_string();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    // Every line, in order: the map above keeps one value per name.
    let header_lines: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    body_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    let status = match m {
        Mode::Status(s) => s,
        Mode::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            200
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            200
        }
        _ => 200,
    };
    let v = serde_json::json!({"upstream": name, "path": path, "method": method, "headers": headers, "header_lines": header_lines, "body_len": body.len()});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("connection", "keep-alive")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

/// A gateway started in-process from YAML, on ephemeral loopback ports.
pub struct Gateway {
    pub gw: Option<RunningGateway>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.as_ref().unwrap().addr, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.as_ref().unwrap().admin_addr, path)
    }
    pub fn running(&self) -> &RunningGateway {
        self.gw.as_ref().unwrap()
    }
    pub async fn stop(mut self) {
        if let Some(g) = self.gw.take() {
            g.shutdown().await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(g) = self.gw.take() {
            g.shutdown_token().cancel();
            g.state.stop();
        }
    }
}

pub async fn gateway(yaml: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let gw = RunningGateway::start(GatewayOptions {
        config: config_path.clone(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        state_dir: Some(dir.path().join("state")),
        watch_config: false,
        reset_to_file: false,
    })
    .await
    .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
    Gateway {
        gw: Some(gw),
        dir,
        config_path,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.unwrap()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a metrics feed satisfies `ok`; returns how long that took, or panics with
/// the last feed.
pub async fn wait_feed(
    rx: &mut tokio::sync::watch::Receiver<signalbox::domain::metrics::MetricsFeed>,
    within: Duration,
    what: &str,
    ok: impl Fn(&signalbox::domain::metrics::MetricsFeed) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        if ok(&rx.borrow_and_update()) {
            return t.elapsed();
        }
        let left = within.saturating_sub(t.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: not within {within:?}; last feed: {}",
            serde_json::to_string(&*rx.borrow()).unwrap()
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}
