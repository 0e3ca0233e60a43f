//! The client-facing listener: HTTP/1.1 and h2c on one port, slow-header protection, and
//! a graceful drain on shutdown.
//!
//! A connection starts on signalbox's own HTTP/1.1 serving ([`h1_server`]), which answers
//! the requests without a body that make up most traffic; the first request it does not
//! serve (a body, an upgrade, HTTP/1.0, h2c, anything malformed) hands the connection to
//! hyper for the rest of its life.
//!
//! One task accepts; each connection is then handed to one of the serving threads (the
//! one with the fewest open connections). A serving thread runs its own single-threaded
//! runtime and its own upstream pools (see `Upstream::client`), so a request's client
//! socket, upstream socket and timers all live on one thread: no work stealing and no
//! cross-thread wake-ups on the hot path, which on a small machine cost more than the
//! proxying itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::TryFutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::ServerConfig;
use super::h1_server::{self, Served};
use super::head_timeout::{HeadClock, HeadTimeouts, Timed};
use super::metrics::GatewayMetrics;
use super::proxy;
use super::state::GatewayState;

type Handoff = (std::net::TcpStream, SocketAddr);

/// A serving thread, as the acceptor sees it.
struct Worker {
    tx: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

/// The serving threads of one gateway. Started before the gateway reports itself up, so a
/// failure to create them is a start error rather than a gateway that never answers.
pub struct Workers(Vec<Worker>);

impl Workers {
    pub fn start(state: &Arc<GatewayState>, cfg: &ServerConfig) -> std::io::Result<Self> {
        let n = state.shared.targets.workers();
        let mut workers = Vec::with_capacity(n);
        for index in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let (done_tx, done) = oneshot::channel();
            let open = Arc::new(AtomicUsize::new(0));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (state, cfg, counter) = (state.clone(), cfg.clone(), open.clone());
            std::thread::Builder::new()
                .name(format!("gateway-{index}"))
                .spawn(move || {
                    runtime.block_on(serve_handoffs(index, rx, state, cfg, counter));
                    // Dropping the runtime closes whatever outlived the drain.
                    drop(runtime);
                    let _ = done_tx.send(());
                })?;
            workers.push(Worker { tx, open, done });
        }
        Ok(Self(workers))
    }
}

/// Accepts until `shutdown`, then lets every serving thread drain and waits for them.
pub async fn serve(listener: TcpListener, workers: Workers, shutdown: CancellationToken) {
    let Workers(workers) = workers;
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(x) => x,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection over");
                continue;
            }
        };
        // Keep-alive connections are long-lived: balance by what is open, not by turns.
        let Some(w) = workers
            .iter()
            .filter(|w| !w.tx.is_closed())
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            tracing::error!("every serving thread has stopped; closing the listener");
            break;
        };
        w.open.fetch_add(1, Ordering::Relaxed);
        if w.tx.send((stream, peer)).is_err() {
            w.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    drop(listener);
    let mut done = Vec::with_capacity(workers.len());
    for w in workers {
        // Closing the hand-off channel is the thread's signal to drain.
        drop(w.tx);
        done.push(w.done);
    }
    for d in done {
        let _ = d.await;
    }
}

/// One serving thread: serves every connection handed to it, then drains.
async fn serve_handoffs(
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Handoff>,
    state: Arc<GatewayState>,
    cfg: ServerConfig,
    open: Arc<AtomicUsize>,
) {
    let builder = Arc::new(connection_builder(&cfg));
    let max_head = (cfg.max_header_bytes.0 as usize).max(8192);
    // Cancelled to drain: idle connections close, those serving a request finish it.
    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut heads = HeadTimeouts::new(cfg.header_read_timeout.0);
    let metrics = state.shared.metrics.clone();
    loop {
        let (stream, peer) = tokio::select! {
            handoff = rx.recv() => match handoff {
                Some(h) => h,
                None => break,
            },
            () = heads.tick() => continue,
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "cannot register the connection");
                continue;
            }
        };
        let (state, builder, shutdown) = (state.clone(), builder.clone(), shutdown.clone());
        let client = proxy::Peer::new(peer, index);
        let clock = heads.clock();
        // Counted out on drop, so a connection closed by the head timeout is too.
        let counted = Counted::new(metrics.clone(), open.clone(), clock.clone());
        let service_clock = clock.clone();
        let task = connections.spawn(async move {
            let _counted = counted;
            let handler = |req| proxy::handle(state.clone(), client.clone(), req);
            let served =
                h1_server::serve(stream, &handler, &service_clock, &shutdown, max_head).await;
            let Served::HandOff(io) = served else {
                return;
            };
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                service_clock.head_arrived(req.version());
                let clock = service_clock.clone();
                proxy::handle(state.clone(), client.clone(), req.map(Some))
                    .map_ok(move |resp| resp.map(|body| Timed::new(body, clock)))
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            let mut conn = std::pin::pin!(conn);
            // The connection first: one handed over during a drain has a request in what
            // was read, and hyper's first poll takes it in; only then may the drain make it
            // the last (before that, a graceful shutdown would drop it unanswered).
            let ended = tokio::select! {
                biased;
                ended = conn.as_mut() => ended,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
        });
        heads.watch(clock, task.abort_handle());
    }
    shutdown.cancel();
    connections.close();
    tokio::select! {
        () = connections.wait() => tracing::debug!(thread = index, "client connections drained"),
        _ = tokio::time::sleep(cfg.shutdown_timeout.0) => {
            tracing::warn!(thread = index, timeout = ?cfg.shutdown_timeout.0, "drain timed out; closing remaining connections");
        }
        () = heads.run() => {}
    }
}

/// An open client connection, as the metrics, the acceptor's balancing and the head
/// timeout count it.
struct Counted {
    metrics: Arc<GatewayMetrics>,
    open: Arc<AtomicUsize>,
    clock: Arc<HeadClock>,
}

impl Counted {
    fn new(metrics: Arc<GatewayMetrics>, open: Arc<AtomicUsize>, clock: Arc<HeadClock>) -> Self {
        metrics.connection_opened();
        Self {
            metrics,
            open,
            clock,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.connection_closed();
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.clock.closed();
    }
}

fn connection_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header read timeout is kept per serving thread (`head_timeout`), not by hyper.
        .header_read_timeout(None)
        // hyper answers 431 when the head outgrows its buffer; 8 KiB is its floor.
        // Left at hyper's default of 100 headers (431 above): setting it, even to 100,
        // moves hyper's parser onto a path that initialises the header array per request.
        .max_buf_size((cfg.max_header_bytes.0 as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_bytes.0.min(u64::from(u32::MAX)) as u32);
    if cfg.h2c {
        builder
    } else {
        builder.http1_only()
    }
}
