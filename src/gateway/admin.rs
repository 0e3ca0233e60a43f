//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the admin API under `/admin`.
//!
//! Every mutation needs the bearer token (from `admin.token_env` or `admin.token_file`);
//! when a token is configured, reads under `/admin` need it too. Mutations take an
//! `If-Match` revision: a stale one answers 409 with the current revision, so two operators
//! cannot overwrite each other blindly. Every change becomes a revision.

// Errors here are whole HTTP responses, built once per failed call: size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::OpenApi;

use super::state::{ChangeError, ChangeKind, ChangeRequest, GatewayState};
use super::status::status;
use crate::domain::secret::constant_time_eq;
use crate::domain::status::{GatewayStatus, RevisionInfo};
use crate::domain::{FlagState, Secret};

#[derive(Clone)]
struct Admin {
    state: Arc<GatewayState>,
    token: Option<Arc<Secret>>,
}

pub fn router(state: Arc<GatewayState>, token: Option<Secret>) -> Router {
    let admin = Admin {
        state,
        token: token.map(Arc::new),
    };
    let api = Router::new()
        .route("/admin/state", get(get_state))
        .route("/admin/revisions", get(get_revisions))
        .route("/admin/revisions/{number}", get(get_revision))
        .route("/admin/routes/{route}/split", put(put_split))
        .route("/admin/routes/{route}/flip", post(post_flip))
        .route("/admin/flags/{key}", put(put_flag))
        .route("/admin/rollback", post(post_rollback))
        .route("/admin/rollforward", post(post_rollforward))
        .route("/admin/config", post(post_config))
        .route("/admin/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep_one))
        .route("/ofrep/v1/evaluate/flags", post(ofrep_all))
        .merge(api)
        .with_state(admin)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "signalbox gateway admin API",
        description = "Read and change a running signalbox gateway. Every change is a numbered revision."
    ),
    paths(
        get_state,
        get_revisions,
        get_revision,
        put_split,
        post_flip,
        put_flag,
        post_rollback,
        post_rollforward,
        post_config
    ),
    components(schemas(
        GatewayStatus,
        RevisionInfo,
        ChangeResult,
        SplitBody,
        FlipBody,
        FlagBody,
        RollbackBody,
        ApiError
    ))
)]
struct ApiDoc;

/// The OpenAPI document, as served at `/admin/openapi.json`.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    // Documented here rather than through a macro: it is the document itself.
    let p = utoipa::openapi::path::PathItem::new(
        utoipa::openapi::HttpMethod::Get,
        utoipa::openapi::path::OperationBuilder::new()
            .summary(Some("This OpenAPI document"))
            .response("200", utoipa::openapi::Response::new("OpenAPI 3.1 JSON")),
    );
    doc.paths.paths.insert("/admin/openapi.json".into(), p);
    doc.to_pretty_json().unwrap_or_default()
}

/// An admin API error: `{"error": {"code", "message", ...}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiError {
    error: serde_json::Value,
}

fn api_error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    extra: serde_json::Value,
) -> Response {
    let mut e = json!({"code": code, "message": message.into()});
    if let (Some(obj), serde_json::Value::Object(x)) = (e.as_object_mut(), extra) {
        obj.extend(x);
    }
    (status, axum::Json(ApiError { error: e })).into_response()
}

const MUTATING: [axum::http::Method; 3] = [
    axum::http::Method::PUT,
    axum::http::Method::POST,
    axum::http::Method::DELETE,
];

async fn authorize(State(a): State<Admin>, req: Request, next: Next) -> Response {
    if let Some(q) = req.uri().query()
        && q.split('&').any(|kv| {
            let k = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            k.contains("token") || k == "auth" || k == "authorization" || k == "key"
        })
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "token_in_query",
            "credentials are not accepted in the query string (they end up in logs); send Authorization: Bearer <token>",
            json!({}),
        );
    }
    let mutating = MUTATING.contains(req.method());
    match &a.token {
        None if mutating => api_error(
            StatusCode::UNAUTHORIZED,
            "no_admin_token",
            "this gateway has no admin token configured (admin.token_env or admin.token_file), so changes are disabled",
            json!({}),
        ),
        None => next.run(req).await,
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => {
                    next.run(req).await
                }
                Some(_) => api_error(
                    StatusCode::UNAUTHORIZED,
                    "bad_token",
                    "the bearer token is not valid",
                    json!({}),
                ),
                None => {
                    let mut r = api_error(
                        StatusCode::UNAUTHORIZED,
                        "missing_token",
                        "send Authorization: Bearer <token>",
                        json!({}),
                    );
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    r
                }
            }
        }
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        a.state.shared.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when a config is loaded and every upstream that takes traffic (weight > 0, or a
/// header-canary target) has at least one available target.
async fn readyz(State(a): State<Admin>) -> Response {
    let snap = a.state.snapshot();
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
        axum::Json(json!({"status": "ready", "revision": snap.revision, "config_hash": snap.hash}))
            .into_response()
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

fn with_etag(mut r: Response, revision: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{revision}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

#[utoipa::path(get, path = "/admin/state", responses((status = 200, description = "Revision, routes with splits, upstream health, flags, config hash", body = GatewayStatus)))]
async fn get_state(State(a): State<Admin>) -> Response {
    let snap = a.state.snapshot();
    with_etag(axum::Json(status(&snap)).into_response(), snap.revision)
}

#[utoipa::path(get, path = "/admin/revisions", responses((status = 200, description = "Revision history, newest first", body = Vec<RevisionInfo>)))]
async fn get_revisions(State(a): State<Admin>) -> Response {
    axum::Json(a.state.revisions()).into_response()
}

#[utoipa::path(get, path = "/admin/revisions/{number}", params(("number" = u64, Path, description = "Revision number")),
    responses((status = 200, description = "One revision with its full config"), (status = 404, body = ApiError)))]
async fn get_revision(State(a): State<Admin>, Path(number): Path<u64>) -> Response {
    match a.state.revision(number) {
        Some(r) => axum::Json(r).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("revision {number} is not in the history"),
            json!({}),
        ),
    }
}

/// A change's result: the new revision and the state it produced.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeResult {
    pub revision: RevisionInfo,
    pub state: GatewayStatus,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    /// Upstream → integer weight; replaces the route's split.
    weights: BTreeMap<String, u32>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlipBody {
    /// The upstream to send 100% to; default: the other side of a two-way split.
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagBody {
    #[serde(default)]
    state: Option<FlagState>,
    #[serde(default, rename = "defaultVariant")]
    default_variant: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The revision to go back to; default: the one before the current.
    #[serde(default)]
    to: Option<u64>,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_required(body)
}

fn parse_required<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
            json!({}),
        )
    })
}

/// `If-Match: "12"` (or `12`, or `W/"12"`).
fn if_match(h: &HeaderMap) -> Result<Option<u64>, Response> {
    let Some(v) = h.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .unwrap_or("")
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"');
    if s == "*" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        api_error(
            StatusCode::BAD_REQUEST,
            "bad_if_match",
            "If-Match must be a revision number, e.g. \"12\"",
            json!({}),
        )
    })
}

fn actor(h: &HeaderMap) -> String {
    h.get("x-signalbox-actor")
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "admin-api".into())
}

async fn run_change(a: &Admin, headers: &HeaderMap, kind: ChangeKind) -> Response {
    let if_match = match if_match(headers) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let req = ChangeRequest {
        actor: actor(headers),
        if_match,
        kind,
    };
    let state = a.state.clone();
    // Persisting a revision fsyncs: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || state.change(req)).await;
    match result {
        Ok(Ok((info, snap))) => {
            let n = info.number;
            with_etag(
                axum::Json(ChangeResult {
                    revision: info,
                    state: status(&snap),
                })
                .into_response(),
                n,
            )
        }
        Ok(Err(e)) => change_error(&e),
        Err(e) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the change did not complete: {e}"),
            json!({}),
        ),
    }
}

fn change_error(e: &ChangeError) -> Response {
    match e {
        ChangeError::Conflict { current, .. } => api_error(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
            json!({"current_revision": current}),
        ),
        ChangeError::NotFound(m) => {
            api_error(StatusCode::NOT_FOUND, "not_found", m.clone(), json!({}))
        }
        ChangeError::Invalid(m) => api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            m.clone(),
            json!({}),
        ),
        ChangeError::Config(c) => api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            c.to_string(),
            json!({"issues": c.0.iter().map(|i| json!({"line": i.line, "column": i.col, "path": i.path, "message": i.message})).collect::<Vec<_>>()}),
        ),
        ChangeError::Storage(m) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            m.clone(),
            json!({}),
        ),
    }
}

#[utoipa::path(put, path = "/admin/routes/{route}/split", params(("route" = String, Path)), request_body = SplitBody,
    responses((status = 200, body = ChangeResult), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn put_split(
    State(a): State<Admin>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse_required::<SplitBody>(&body) {
        Ok(b) => {
            run_change(
                &a,
                &headers,
                ChangeKind::SetSplit {
                    route,
                    weights: b.weights,
                },
            )
            .await
        }
        Err(r) => r,
    }
}

#[utoipa::path(post, path = "/admin/routes/{route}/flip", params(("route" = String, Path)), request_body = FlipBody,
    responses((status = 200, body = ChangeResult), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn post_flip(
    State(a): State<Admin>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse_body::<FlipBody>(&body) {
        Ok(b) => run_change(&a, &headers, ChangeKind::Flip { route, to: b.to }).await,
        Err(r) => r,
    }
}

#[utoipa::path(put, path = "/admin/flags/{key}", params(("key" = String, Path)), request_body = FlagBody,
    responses((status = 200, body = ChangeResult), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn put_flag(
    State(a): State<Admin>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse_required::<FlagBody>(&body) {
        Ok(FlagBody {
            state: None,
            default_variant: None,
        }) => api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give state and/or defaultVariant",
            json!({}),
        ),
        Ok(b) => {
            run_change(
                &a,
                &headers,
                ChangeKind::SetFlag {
                    key,
                    state: b.state,
                    variant: b.default_variant,
                },
            )
            .await
        }
        Err(r) => r,
    }
}

#[utoipa::path(post, path = "/admin/rollback", request_body = RollbackBody,
    responses((status = 200, body = ChangeResult), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn post_rollback(State(a): State<Admin>, headers: HeaderMap, body: Bytes) -> Response {
    match parse_body::<RollbackBody>(&body) {
        Ok(b) => run_change(&a, &headers, ChangeKind::Rollback { to: b.to }).await,
        Err(r) => r,
    }
}

#[utoipa::path(post, path = "/admin/rollforward",
    responses((status = 200, body = ChangeResult), (status = 401, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn post_rollforward(State(a): State<Admin>, headers: HeaderMap) -> Response {
    run_change(&a, &headers, ChangeKind::Rollforward).await
}

#[utoipa::path(post, path = "/admin/config", request_body(content = String, description = "A full gateway config, YAML or JSON", content_type = "application/yaml"),
    responses((status = 200, body = ChangeResult), (status = 401, body = ApiError), (status = 409, body = ApiError), (status = 422, description = "Rejected, with line, column and field path of every problem", body = ApiError)))]
async fn post_config(State(a): State<Admin>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the config must be UTF-8 text",
            json!({}),
        );
    };
    match super::config::parse_str(text, "<request>") {
        Ok(cfg) => {
            run_change(
                &a,
                &headers,
                ChangeKind::Replace {
                    config: Box::new(cfg),
                    text: Some(text.to_string()),
                },
            )
            .await
        }
        Err(e) => change_error(&ChangeError::Config(e)),
    }
}

/// OFREP: services evaluate flags with any OpenFeature SDK's OFREP provider. Open like
/// `/metrics`: it answers flag values, never changes them.
async fn ofrep_one(State(a): State<Admin>, Path(key): Path<String>, body: Bytes) -> Response {
    let snap = a.state.snapshot();
    let Some(flags) = &snap.flags else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": "this gateway serves no flags"}))).into_response();
    };
    let (status, v) = crate::flags::ofrep::evaluate_one(flags, &key, &body);
    if let Some(variant) = v["variant"].as_str() {
        a.state.shared.metrics.flag_evaluated(&key, variant);
    }
    (
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK),
        axum::Json(v),
    )
        .into_response()
}

async fn ofrep_all(State(a): State<Admin>, body: Bytes) -> Response {
    let snap = a.state.snapshot();
    let Some(flags) = &snap.flags else {
        return axum::Json(json!({"flags": []})).into_response();
    };
    let (status, v) = crate::flags::ofrep::evaluate_all(flags, &body);
    for f in v["flags"].as_array().into_iter().flatten() {
        if let (Some(k), Some(var)) = (f["key"].as_str(), f["variant"].as_str()) {
            a.state.shared.metrics.flag_evaluated(k, var);
        }
    }
    (
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK),
        axum::Json(v),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
