//! The client-facing listener: HTTP/1.1 and h2c on one port, slow-header protection, and
//! a graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::ServerConfig;
use super::proxy;
use super::state::GatewayState;

pub async fn serve(
    listener: TcpListener,
    state: Arc<GatewayState>,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout.0)
        // hyper answers 431 when the head outgrows its buffer; 8 KiB is its floor.
        .max_buf_size((cfg.max_header_bytes.0 as usize).max(8192))
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_bytes.0.min(u64::from(u32::MAX)) as u32);
    let builder = if cfg.h2c {
        builder
    } else {
        builder.http1_only()
    };
    let graceful = GracefulShutdown::new();
    let metrics = state.shared.metrics.clone();

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
        let state = state.clone();
        let client = proxy::Peer::new(peer);
        let svc = service_fn(move |req| proxy::handle(state.clone(), client.clone(), req));
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned(),
        );
        let metrics = metrics.clone();
        metrics.connection_opened();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            metrics.connection_closed();
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all client connections drained"),
        _ = tokio::time::sleep(cfg.shutdown_timeout.0) => {
            tracing::warn!(timeout = ?cfg.shutdown_timeout.0, "drain timed out; closing remaining connections");
        }
    }
}
