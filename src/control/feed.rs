//! An environment's live status, as one stream of [`StatusUpdate`]s: the one place the
//! cockpit gets it from. A gateway is polled (its admin API has no push); a Kubernetes
//! namespace is followed through the watches in [`crate::k8s::watch`], so a change shows as
//! soon as the API server reports it, and a watch that is retrying or stopped shows too.
//! One-shot reads (`ctl`, `plan`) do not come here: they read the backend directly.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Env;
use super::backend::Backend;
use crate::domain::kube::{KubeView, WatchState, WatchStatus};
use crate::domain::{GatewayStatus, RevisionInfo};

/// How long to wait before starting the watches again when they cannot start at all
/// (an unreadable kubeconfig, say).
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// One update of an environment's status.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    /// The state, or why it cannot be read now (the last good one stays valid beside it).
    pub status: Result<GatewayStatus, String>,
    /// `None` when not read this time (Kubernetes environments have no revision history).
    pub revisions: Option<Vec<RevisionInfo>>,
    /// One per watched kind; empty for a polled gateway.
    pub watches: Vec<WatchStatus>,
    pub at: DateTime<Utc>,
}

/// A running feed; dropping it stops the polling or the watches.
pub struct Feed {
    rx: mpsc::Receiver<StatusUpdate>,
    task: JoinHandle<()>,
}

impl Feed {
    /// The next update; `None` once the feed has stopped.
    pub async fn next(&mut self) -> Option<StatusUpdate> {
        self.rx.recv().await
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows `env`: a gateway is polled every `poll_every`; a Kubernetes namespace is watched.
pub fn follow(env: Arc<Env>, poll_every: Duration) -> Feed {
    let (tx, rx) = mpsc::channel(4);
    let task = match &env.backend {
        Backend::Gateway(_) => tokio::spawn(poll(env, poll_every, tx)),
        Backend::Kube(k) => tokio::spawn(watch(k.clone(), tx)),
    };
    Feed { rx, task }
}

async fn poll(env: Arc<Env>, every: Duration, tx: mpsc::Sender<StatusUpdate>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let status = env.backend.status().await.map_err(|e| e.to_string());
        let revisions = match status {
            Ok(_) => env.backend.revisions().await.ok(),
            Err(_) => None,
        };
        let u = StatusUpdate {
            status,
            revisions,
            watches: Vec::new(),
            at: Utc::now(),
        };
        if tx.send(u).await.is_err() {
            return;
        }
    }
}

async fn watch(backend: Arc<crate::k8s::KubeBackend>, tx: mpsc::Sender<StatusUpdate>) {
    loop {
        let mut watching = match crate::k8s::watch::start(backend.clone()).await {
            Ok(w) => w,
            Err(e) => {
                let u = StatusUpdate {
                    status: Err(e.to_string()),
                    revisions: None,
                    watches: Vec::new(),
                    at: Utc::now(),
                };
                if tx.send(u).await.is_err() {
                    return;
                }
                tokio::time::sleep(RESTART_AFTER).await;
                continue;
            }
        };
        loop {
            let view = watching.updates.borrow_and_update().clone();
            if let Some(status) = status_of(&view) {
                let u = StatusUpdate {
                    status,
                    revisions: None,
                    watches: view.watches,
                    at: Utc::now(),
                };
                if tx.send(u).await.is_err() {
                    return;
                }
            }
            if watching.updates.changed().await.is_err() {
                // The collector ended; start over rather than show a frozen view.
                break;
            }
        }
        tokio::time::sleep(RESTART_AFTER).await;
    }
}

/// What a watched view says about the environment. `None` while every watch is still
/// making its first list (nothing to show yet); an error when no watch is live, since
/// then nothing on screen can be trusted as current; otherwise the state, with the
/// watches' own states telling which parts may be behind.
pub fn status_of(view: &KubeView) -> Option<Result<GatewayStatus, String>> {
    if view.watches.is_empty()
        || view
            .watches
            .iter()
            .all(|w| matches!(w.state, WatchState::Connecting))
    {
        return None;
    }
    if view.watches.iter().any(|w| w.state.is_live()) {
        return Some(Ok(view.to_gateway_status()));
    }
    let errors: Vec<String> = view
        .watches
        .iter()
        .filter_map(|w| match &w.state {
            WatchState::Retrying { error, .. } | WatchState::Stopped { error } => {
                Some(format!("{}: {error}", w.kind))
            }
            WatchState::Connecting | WatchState::Live { .. } => None,
        })
        .collect();
    Some(Err(format!(
        "no watch on kube://{}/{} is live: {}",
        view.context,
        view.namespace,
        errors.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: &str, state: WatchState) -> WatchStatus {
        WatchStatus {
            kind: kind.into(),
            state,
        }
    }

    #[test]
    fn a_view_is_shown_once_a_watch_is_live_and_is_an_error_when_none_is() {
        let mut v = KubeView {
            context: "prod".into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        assert_eq!(status_of(&v), None, "no watch reported yet");
        v.watches = vec![
            w("deployments", WatchState::Connecting),
            w("services", WatchState::Connecting),
        ];
        assert_eq!(status_of(&v), None, "still listing");
        let retrying = WatchState::Retrying {
            error: "cannot reach https://10.0.0.1: connection refused".into(),
            since: Utc::now(),
            attempts: 2,
        };
        v.watches[1].state = retrying.clone();
        let err = status_of(&v).unwrap().unwrap_err();
        assert!(
            err.contains("kube://prod/shop") && err.contains("services: cannot reach"),
            "{err}"
        );
        v.watches[0].state = WatchState::Live { since: Utc::now() };
        let ok = status_of(&v).unwrap().unwrap();
        assert_eq!(ok.config_hash, "k8s:prod/shop");
        v.watches[0].state = WatchState::Stopped {
            error: "the watch stream ended".into(),
        };
        let err = status_of(&v).unwrap().unwrap_err();
        assert!(err.contains("deployments: the watch stream ended"), "{err}");
    }
}
