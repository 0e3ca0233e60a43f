//! How the cockpit reaches an environment: a signalbox gateway's admin API, or a Kubernetes
//! namespace ([`crate::k8s::KubeBackend`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::domain::{GatewayStatus, RevisionInfo, Secret};
use crate::gateway::admin::ChangeResult;
use crate::gateway::revisions::RevisionRecord;

/// Why a backend call failed, in a form callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("changed by someone else: the environment is at revision {current}")]
    Conflict { current: u64 },
    /// The backend understood and said no (unknown route, invalid weights, …).
    #[error("{0}")]
    Rejected(String),
    #[error("not authorised: {0}")]
    Unauthorized(String),
    /// RBAC said no; the message names the verb and resource.
    #[error("{0}")]
    Forbidden(String),
    /// The object changed after it was read (a Kubernetes 409, or a newer resourceVersion).
    #[error("{0}")]
    Changed(String),
    #[error("cannot reach {addr}: {error}")]
    Unreachable { addr: String, error: String },
    #[error("{0}")]
    Other(String),
}

/// A change as the backend takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    SetSplit {
        route: String,
        weights: BTreeMap<String, u32>,
    },
    SetFlag {
        key: String,
        state: Option<crate::domain::FlagState>,
        variant: Option<String>,
    },
    Rollback {
        to: u64,
    },
    Rollforward,
    /// A change to a Kubernetes object.
    Kube(crate::k8s::KubeChange),
}

/// An environment's backend.
pub enum Backend {
    Gateway(GatewayBackend),
    Kube(std::sync::Arc<crate::k8s::KubeBackend>),
}

impl Backend {
    /// Where it is: the admin URL, or `kube://CONTEXT/NAMESPACE`.
    pub fn address(&self) -> String {
        match self {
            Self::Gateway(g) => g.address().to_string(),
            Self::Kube(k) => k.address(),
        }
    }

    /// The state in the gateway's shape (for Kubernetes: HTTPRoutes and blue-green Services
    /// as routes, Services and Deployments as upstreams, the flags ConfigMap's flags).
    pub async fn status(&self) -> Result<GatewayStatus, BackendError> {
        match self {
            Self::Gateway(g) => g.status().await,
            Self::Kube(k) => Ok(k.view().await?.to_gateway_status()),
        }
    }

    pub async fn revision(&self, n: u64) -> Result<RevisionRecord, BackendError> {
        match self {
            Self::Gateway(g) => g.revision(n).await,
            Self::Kube(_) => Err(BackendError::Rejected(
                "a Kubernetes environment has no gateway revision history; each Deployment has its own (`ctl rollout-undo DEPLOYMENT`)".into(),
            )),
        }
    }

    pub async fn revisions(&self) -> Result<Vec<RevisionInfo>, BackendError> {
        match self {
            Self::Gateway(g) => g.revisions().await,
            Self::Kube(_) => Err(BackendError::Rejected(
                "a Kubernetes environment has no gateway revision history; each Deployment has its own (`ctl rollout-undo DEPLOYMENT`)".into(),
            )),
        }
    }

    pub fn as_gateway(&self) -> Option<&GatewayBackend> {
        match self {
            Self::Gateway(g) => Some(g),
            Self::Kube(_) => None,
        }
    }

    pub fn as_kube(&self) -> Option<&crate::k8s::KubeBackend> {
        match self {
            Self::Kube(k) => Some(k),
            Self::Gateway(_) => None,
        }
    }
}

/// The HTTP client for a control API (a gateway's admin API, the sandbox's control API):
/// short timeouts, so a dead endpoint shows as an error in the cockpit rather than a hang,
/// and never a proxy, as these are operators' own endpoints.
pub(crate) fn control_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

pub struct GatewayBackend {
    base: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl GatewayBackend {
    pub fn new(admin_url: &str, token: Option<Secret>) -> Self {
        Self {
            base: admin_url.trim_end_matches('/').to_string(),
            token,
            http: control_client(),
        }
    }

    pub fn address(&self) -> &str {
        &self.base
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t.expose()),
            None => rb,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, BackendError> {
        let resp = rb.send().await.map_err(|e| BackendError::Unreachable {
            addr: self.base.clone(),
            error: root(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .map_err(|e| BackendError::Other(format!("bad answer from {}: {e}", self.base)));
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        Err(match status.as_u16() {
            409 => BackendError::Conflict {
                current: body["error"]["current_revision"].as_u64().unwrap_or(0),
            },
            401 | 403 => BackendError::Unauthorized(msg),
            400 | 404 | 422 => BackendError::Rejected(msg),
            _ => BackendError::Other(format!("{} answered {status}: {msg}", self.base)),
        })
    }

    pub async fn status(&self) -> Result<GatewayStatus, BackendError> {
        self.send(self.req(reqwest::Method::GET, "/admin/state"))
            .await
    }

    pub async fn revisions(&self) -> Result<Vec<RevisionInfo>, BackendError> {
        self.send(self.req(reqwest::Method::GET, "/admin/revisions"))
            .await
    }

    pub async fn revision(&self, n: u64) -> Result<RevisionRecord, BackendError> {
        self.send(self.req(reqwest::Method::GET, &format!("/admin/revisions/{n}")))
            .await
    }

    pub async fn apply(
        &self,
        req: &Request,
        if_match: u64,
        actor: &str,
    ) -> Result<ChangeResult, BackendError> {
        use reqwest::Method;
        let rb = match req {
            Request::SetSplit { route, weights } => self
                .req(
                    Method::PUT,
                    &format!("/admin/routes/{}/split", encode(route)),
                )
                .json(&json!({"weights": weights})),
            Request::SetFlag {
                key,
                state,
                variant,
            } => {
                let mut body = serde_json::Map::new();
                if let Some(s) = state {
                    body.insert("state".into(), json!(s));
                }
                if let Some(v) = variant {
                    body.insert("defaultVariant".into(), json!(v));
                }
                self.req(Method::PUT, &format!("/admin/flags/{}", encode(key)))
                    .json(&body)
            }
            Request::Rollback { to } => self
                .req(Method::POST, "/admin/rollback")
                .json(&json!({"to": to})),
            Request::Rollforward => self.req(Method::POST, "/admin/rollforward"),
            Request::Kube(c) => {
                return Err(BackendError::Rejected(format!(
                    "{} is a gateway; it cannot change {}",
                    self.base,
                    c.object()
                )));
            }
        };
        let rb = rb
            .header("if-match", format!("\"{if_match}\""))
            .header("x-signalbox-actor", actor);
        self.send(rb).await
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn root(e: &reqwest::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if cur.to_string() == e.to_string() {
        e.to_string()
    } else {
        format!("{e}: {cur}")
    }
}
