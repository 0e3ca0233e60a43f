//! Live views through kube-runtime watchers and reflector stores (list, then watch from the
//! list's resourceVersion, resume after a drop, re-list after 410 Gone or any error, with
//! backoff).
//! Each kind's connection state is part of the published view, so a watch that is retrying
//! or stopped shows in the UI instead of silently going stale.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Resource;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::client::{KubeBackend, RawNamespace, assemble};
use super::{httproute, secret};
use crate::domain::kube::{KubeView, WatchState, WatchStatus};

type States = Arc<Mutex<BTreeMap<&'static str, WatchState>>>;

/// Running watches; dropping it stops them.
pub struct Watching {
    pub updates: watch::Receiver<KubeView>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn set(states: &States, kind: &'static str, state: WatchState) {
    if let Ok(mut s) = states.lock() {
        s.insert(kind, state);
    }
}

/// Watches the environment's Deployments, Services, HTTPRoutes, flags ConfigMap and Secrets.
pub async fn start(
    backend: Arc<KubeBackend>,
) -> Result<Watching, crate::control::backend::BackendError> {
    let client = backend.client().await?;
    let ns = backend.namespace().to_string();
    let settings = backend.settings().clone();
    let states: States = Arc::default();
    let notify = Arc::new(Notify::new());
    let labels = watcher::Config::default().labels(&settings.selector);
    let mut tasks = Vec::new();

    let (deployments, w) = reflector::store::<Deployment>();
    tasks.push(spawn_kind(
        Api::namespaced(client.clone(), &ns),
        labels.clone(),
        w,
        "deployments",
        &backend,
        &states,
        &notify,
        |_| {},
    ));
    let (services, w) = reflector::store::<Service>();
    tasks.push(spawn_kind(
        Api::namespaced(client.clone(), &ns),
        labels.clone(),
        w,
        "services",
        &backend,
        &states,
        &notify,
        |_| {},
    ));
    let ar = httproute::api_resource();
    let w = Writer::<DynamicObject>::new(ar.clone());
    let routes = w.as_reader();
    tasks.push(spawn_kind(
        Api::namespaced_with(client.clone(), &ns, &ar),
        labels,
        w,
        "httproutes",
        &backend,
        &states,
        &notify,
        |_| {},
    ));
    let (configmaps, w) = reflector::store::<ConfigMap>();
    tasks.push(spawn_kind(
        Api::namespaced(client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.flags_config_map)),
        w,
        "configmaps",
        &backend,
        &states,
        &notify,
        |_| {},
    ));
    let (secrets, w) = reflector::store::<Secret>();
    tasks.push(spawn_kind(
        Api::namespaced(client, &ns),
        watcher::Config::default(),
        w,
        "secrets",
        &backend,
        &states,
        &notify,
        // Values are dropped before the object reaches the store: only key names stay.
        |s: &mut Secret| {
            if let Some(d) = s.data.as_mut() {
                for v in d.values_mut() {
                    *v = ByteString(Vec::new());
                }
            }
            if let Some(d) = s.string_data.as_mut() {
                for v in d.values_mut() {
                    v.clear();
                }
            }
        },
    ));

    // The same context name a one-shot read puts in its view.
    let context = backend.context_name();
    let (tx, rx) = watch::channel(KubeView {
        context: context.clone(),
        namespace: ns.clone(),
        ..Default::default()
    });
    let collector_states = states.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            notify.notified().await;
            // Coalesce a burst of events (an initial list) into one view.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let raw = RawNamespace {
                deployments: cloned(&deployments),
                services: cloned(&services),
                routes: cloned(&routes),
                flags: cloned(&configmaps).into_iter().next(),
                secrets: secrets.state().iter().map(|s| secret::meta(s)).collect(),
            };
            let mut view = assemble(&context, &ns, &settings, &raw);
            view.watches = collector_states
                .lock()
                .map(|s| {
                    s.iter()
                        .map(|(k, v)| WatchStatus {
                            kind: (*k).to_string(),
                            state: v.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if tx.send(view).is_err() {
                return;
            }
        }
    }));
    Ok(Watching { updates: rx, tasks })
}

fn cloned<K: Resource + Clone>(s: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    s.state().iter().map(|o| K::clone(o)).collect()
}

#[allow(clippy::too_many_arguments)]
fn spawn_kind<K>(
    api: Api<K>,
    cfg: watcher::Config,
    writer: Writer<K>,
    kind: &'static str,
    backend: &Arc<KubeBackend>,
    states: &States,
    notify: &Arc<Notify>,
    modify: fn(&mut K),
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let backend = backend.clone();
    let states = states.clone();
    let notify = notify.clone();
    set(&states, kind, WatchState::Connecting);
    tokio::spawn(async move {
        let mut writer = writer;
        let mut attempts = 0u32;
        let mut failing_since = None;
        // After an error the watcher starts over with a list (as client-go's reflector
        // does), so being live again is proven by a completed list rather than assumed:
        // a watch resumed without errors sends nothing until something changes.
        loop {
            let stream = watcher(api.clone(), cfg.clone());
            let mut stream = std::pin::pin!(stream);
            let mut live = false;
            let error = loop {
                match stream.next().await {
                    None => break None,
                    Some(Ok(ev)) => {
                        let ev = ev.modify(modify);
                        writer.apply_watcher_event(&ev);
                        let now_live = matches!(
                            ev,
                            watcher::Event::InitDone
                                | watcher::Event::Apply(_)
                                | watcher::Event::Delete(_)
                        );
                        if now_live && !live {
                            live = true;
                            attempts = 0;
                            failing_since = None;
                            set(&states, kind, WatchState::Live { since: Utc::now() });
                        }
                        if !matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_)) {
                            notify.notify_one();
                        }
                    }
                    Some(Err(e)) => break Some(e),
                }
            };
            let Some(e) = error else {
                break;
            };
            attempts += 1;
            let since = *failing_since.get_or_insert_with(Utc::now);
            let error = describe(&backend, e, kind);
            tracing::warn!(kind, %error, attempts, "watch failing; retrying with backoff");
            set(
                &states,
                kind,
                WatchState::Retrying {
                    error,
                    since,
                    attempts,
                },
            );
            notify.notify_one();
            tokio::time::sleep(backoff(attempts)).await;
        }
        set(
            &states,
            kind,
            WatchState::Stopped {
                error: "the watch stream ended".into(),
            },
        );
        notify.notify_one();
    })
}

/// 0.5 s, 1 s, 2 s, … up to 30 s, with up to a quarter added at random so that many
/// cockpits do not come back at the same instant.
fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempts.saturating_sub(1).min(6));
    let base = base.min(Duration::from_secs(30));
    base + base.mul_f64(fastrand::f64() / 4.0)
}

fn describe(backend: &KubeBackend, e: watcher::Error, kind: &str) -> String {
    match e {
        watcher::Error::InitialListFailed(e) => backend.error(e, "list", kind, None).to_string(),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            backend.error(e, "watch", kind, None).to_string()
        }
        watcher::Error::WatchError(s) if s.code == 410 => {
            format!("{kind}: the watch fell too far behind (410 Gone); listing again")
        }
        watcher::Error::WatchError(s) => backend
            .error(kube::Error::Api(s), "watch", kind, None)
            .to_string(),
        other => format!("{kind}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_with_jitter() {
        for (attempt, base_ms) in [(1, 500), (2, 1000), (3, 2000), (7, 30_000), (40, 30_000)] {
            let d = backoff(attempt).as_millis();
            assert!(
                (base_ms..=base_ms + base_ms / 4).contains(&d),
                "attempt {attempt}: {d} ms"
            );
        }
    }
}
