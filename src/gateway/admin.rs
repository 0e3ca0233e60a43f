//! The admin listener: `/metrics`, `/healthz`, `/readyz` (and the admin API).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::state::GatewayState;

pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<GatewayState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.shared.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when a config is loaded and every upstream that takes traffic (weight > 0, or a
/// header-canary target) has at least one available target.
async fn readyz(State(s): State<Arc<GatewayState>>) -> Response {
    let snap = s.snapshot();
    let mut unready = Vec::new();
    for r in &snap.config.routes {
        let mut live: Vec<&String> = r
            .split
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(n, _)| n)
            .collect();
        if let Some(c) = &r.canary_by_header {
            live.push(&c.upstream);
        }
        for name in live {
            if let Some(u) = snap.upstreams.get(name)
                && !u.any_available()
                && !unready.contains(name)
            {
                unready.push(name.clone());
            }
        }
    }
    if unready.is_empty() {
        axum::Json(json!({"status": "ready", "config_hash": snap.hash})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not ready", "upstreams_without_healthy_targets": unready}),
            ),
        )
            .into_response()
    }
}
