//! Talking to the API server: the client from a kubeconfig (or in-cluster), one-shot reads
//! of the namespace, and changes sent with the resourceVersion they were planned against.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio::sync::OnceCell;

use super::deployment::{self, RESTARTED_AT_ANNOTATION};
use super::plan::KubeChange;
use super::secret::{self, SecretMeta};
use super::{KubeSettings, flags, httproute, service};
use crate::control::backend::BackendError;
use crate::domain::kube::{DeploymentView, ImageRef, KubeView};

/// Who changed an object last through signalbox (the audit journal has the details).
pub const CHANGED_BY_ANNOTATION: &str = "signalbox.dev/changed-by";
const FIELD_MANAGER: &str = "signalbox";

/// Where the cluster's address and credentials come from.
#[derive(Clone, Debug)]
pub enum KubeconfigSource {
    /// `$KUBECONFIG` or `~/.kube/config`, else the in-cluster service account.
    Default,
    File(PathBuf),
    Inline(Box<Kubeconfig>),
}

pub struct KubeBackend {
    source: KubeconfigSource,
    context: Option<String>,
    namespace: String,
    settings: KubeSettings,
    client: OnceCell<(Client, String)>,
}

/// Everything one read of the namespace returns, before parsing.
#[derive(Default)]
pub struct RawNamespace {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub routes: Vec<DynamicObject>,
    pub flags: Option<ConfigMap>,
    pub secrets: Vec<SecretMeta>,
}

/// The view from raw objects. Pure.
pub fn assemble(
    context: &str,
    namespace: &str,
    settings: &KubeSettings,
    raw: &RawNamespace,
) -> KubeView {
    let mut deployments: Vec<DeploymentView> = raw
        .deployments
        .iter()
        .map(|d| deployment::parse(d, &settings.track_label))
        .collect();
    deployments.sort_by(|a, b| a.name.cmp(&b.name));
    let mut services: Vec<_> = raw
        .services
        .iter()
        .map(|s| service::parse(s, &settings.track_label, &deployments))
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes = Vec::new();
    for r in &raw.routes {
        match httproute::parse(r) {
            Ok(v) => routes.push(v),
            Err(e) => {
                tracing::warn!(namespace, error = %e, "skipping an HTTPRoute that does not parse")
            }
        }
    }
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    KubeView {
        context: context.to_string(),
        namespace: namespace.to_string(),
        secrets: secret::views(&deployments, &raw.secrets),
        flags: raw
            .flags
            .as_ref()
            .map(|cm| flags::parse(cm, settings.flags_key.as_deref())),
        deployments,
        services,
        routes,
        watches: Vec::new(),
    }
}

impl KubeBackend {
    pub fn new(
        source: KubeconfigSource,
        context: Option<String>,
        namespace: String,
        settings: KubeSettings,
    ) -> Self {
        Self {
            source,
            context,
            namespace,
            settings,
            client: OnceCell::new(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// `kube://CONTEXT/NAMESPACE`, for headers and messages.
    pub fn address(&self) -> String {
        format!(
            "kube://{}/{}",
            self.context.as_deref().unwrap_or("(current context)"),
            self.namespace
        )
    }

    /// The kube context's name, `(current)` when the kubeconfig's current one is used.
    pub fn context_name(&self) -> String {
        self.context.clone().unwrap_or_else(|| "(current)".into())
    }

    async fn config(&self) -> Result<Config, String> {
        let opts = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        match &self.source {
            KubeconfigSource::Inline(k) => {
                Config::from_custom_kubeconfig(k.as_ref().clone(), &opts)
                    .await
                    .map_err(|e| e.to_string())
            }
            KubeconfigSource::File(p) => {
                let k = Kubeconfig::read_from(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Config::from_custom_kubeconfig(k, &opts)
                    .await
                    .map_err(|e| format!("{}: {e}", p.display()))
            }
            KubeconfigSource::Default if self.context.is_some() => Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| e.to_string()),
            KubeconfigSource::Default => Config::infer().await.map_err(|e| e.to_string()),
        }
    }

    /// The client, made on first use (reading a kubeconfig is async).
    pub async fn client(&self) -> Result<Client, BackendError> {
        let (c, _) = self
            .client
            .get_or_try_init(|| async {
                let cfg = self.config().await.map_err(|e| BackendError::Unreachable {
                    addr: self.address(),
                    error: format!("kubeconfig: {e}"),
                })?;
                let url = cfg.cluster_url.to_string();
                let client = Client::try_from(cfg).map_err(|e| BackendError::Unreachable {
                    addr: url.clone(),
                    error: e.to_string(),
                })?;
                Ok::<_, BackendError>((client, url))
            })
            .await?;
        Ok(c.clone())
    }

    fn cluster_url(&self) -> String {
        self.client
            .get()
            .map_or_else(|| self.address(), |(_, u)| u.clone())
    }

    /// An API error in words a person can act on: the verb and resource a 403 refused,
    /// "changed by someone else" for a 409, the server's address when it cannot be reached.
    pub fn error(
        &self,
        e: kube::Error,
        verb: &str,
        resource: &str,
        name: Option<&str>,
    ) -> BackendError {
        let what = match name {
            Some(n) => format!("{resource} {n:?}"),
            None => resource.to_string(),
        };
        match e {
            kube::Error::Api(s) => match s.code {
                403 => BackendError::Forbidden(format!(
                    "forbidden: cannot {verb} {what} in namespace {:?} (context {}): {}",
                    self.namespace,
                    self.context_name(),
                    s.message
                )),
                401 => BackendError::Unauthorized(format!(
                    "the cluster did not accept the credentials for context {}: {}",
                    self.context_name(),
                    s.message
                )),
                409 => BackendError::Changed(format!(
                    "changed by someone else: {what} was modified after it was read; look again and retry ({})",
                    s.message
                )),
                404 => BackendError::Rejected(format!(
                    "{what} not found in namespace {:?}",
                    self.namespace
                )),
                _ => BackendError::Rejected(format!(
                    "cannot {verb} {what}: {} ({})",
                    s.message, s.code
                )),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => BackendError::Unreachable {
                addr: self.cluster_url(),
                error: root(&e),
            },
            other => BackendError::Other(format!("{verb} {what}: {}", root(&other))),
        }
    }

    fn list_params(&self) -> ListParams {
        ListParams::default().labels(&self.settings.selector)
    }

    /// One read of everything the cockpit shows.
    pub async fn read(&self) -> Result<RawNamespace, BackendError> {
        let c = self.client().await?;
        let ns = &self.namespace;
        let lp = self.list_params();
        let deployments = Api::<Deployment>::namespaced(c.clone(), ns)
            .list(&lp)
            .await
            .map_err(|e| self.error(e, "list", "deployments", None))?
            .items;
        let services = Api::<Service>::namespaced(c.clone(), ns)
            .list(&lp)
            .await
            .map_err(|e| self.error(e, "list", "services", None))?
            .items;
        let routes_api =
            Api::<DynamicObject>::namespaced_with(c.clone(), ns, &httproute::api_resource());
        let routes = match routes_api.list(&lp).await {
            Ok(l) => l.items,
            // The Gateway API CRDs are not installed: no routes, not an error.
            Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
            Err(e) => {
                return Err(self.error(e, "list", "httproutes.gateway.networking.k8s.io", None));
            }
        };
        let flags = Api::<ConfigMap>::namespaced(c.clone(), ns)
            .get_opt(&self.settings.flags_config_map)
            .await
            .map_err(|e| {
                self.error(
                    e,
                    "get",
                    "configmaps",
                    Some(&self.settings.flags_config_map),
                )
            })?;
        let mut names: Vec<String> = deployments
            .iter()
            .flat_map(|d| {
                d.spec
                    .as_ref()
                    .map(|s| secret::references(&s.template))
                    .unwrap_or_default()
            })
            .map(|r| r.secret)
            .collect();
        names.sort();
        names.dedup();
        let secrets_api = Api::<Secret>::namespaced(c, ns);
        let mut secrets = Vec::new();
        for n in names {
            // Read, keep key names and age, drop the rest at once.
            if let Some(s) = secrets_api
                .get_opt(&n)
                .await
                .map_err(|e| self.error(e, "get", "secrets", Some(&n)))?
            {
                secrets.push(secret::meta(&s));
            }
        }
        Ok(RawNamespace {
            deployments,
            services,
            routes,
            flags,
            secrets,
        })
    }

    pub async fn view(&self) -> Result<KubeView, BackendError> {
        let raw = self.read().await?;
        Ok(assemble(
            &self.context_name(),
            &self.namespace,
            &self.settings,
            &raw,
        ))
    }

    /// The revision `rollout undo` would go back to, and the images its template runs.
    pub async fn undo_target(&self, name: &str) -> Result<(u64, Vec<ImageRef>), BackendError> {
        let (d, rss) = self.deployment_and_replicasets(name).await?;
        let (rev, t) = deployment::previous_template(&d, &rss).map_err(BackendError::Rejected)?;
        Ok((rev, deployment::images(&t)))
    }

    async fn deployment_and_replicasets(
        &self,
        name: &str,
    ) -> Result<(Deployment, Vec<ReplicaSet>), BackendError> {
        let c = self.client().await?;
        let d = Api::<Deployment>::namespaced(c.clone(), &self.namespace)
            .get(name)
            .await
            .map_err(|e| self.error(e, "get", "deployments", Some(name)))?;
        let selector = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let rss = Api::<ReplicaSet>::namespaced(c, &self.namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.error(e, "list", "replicasets", None))?
            .items;
        Ok((d, rss))
    }

    fn stale(&self, what: &str, base: &str, now: Option<&str>) -> BackendError {
        BackendError::Changed(format!(
            "changed by someone else: {what} is at resourceVersion {} but the plan was made at {base}; look again and retry",
            now.unwrap_or("?")
        ))
    }

    /// Applies a change. Each request carries the resourceVersion the plan was based on, so
    /// the API server refuses (409) if the object changed in between.
    pub async fn apply(&self, change: &KubeChange, actor: &str) -> Result<String, BackendError> {
        let c = self.client().await?;
        let ns = &self.namespace;
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let rv = change.resource_version();
        let meta = json!({
            "resourceVersion": rv,
            "annotations": {CHANGED_BY_ANNOTATION: actor},
        });
        let new_rv = match change {
            KubeChange::SelectTrack {
                service,
                label,
                value,
                ..
            } => {
                let patch =
                    json!({"metadata": meta, "spec": {"selector": {label.as_str(): value}}});
                Api::<Service>::namespaced(c, ns)
                    .patch(service, &pp, &Patch::Strategic(&patch))
                    .await
                    .map_err(|e| self.error(e, "patch", "services", Some(service)))?
                    .metadata
                    .resource_version
            }
            KubeChange::SetWeights {
                route,
                rule,
                weights,
                ..
            } => {
                let api = Api::<DynamicObject>::namespaced_with(c, ns, &httproute::api_resource());
                let res = "httproutes.gateway.networking.k8s.io";
                let obj = api
                    .get(route)
                    .await
                    .map_err(|e| self.error(e, "get", res, Some(route)))?;
                if obj.metadata.resource_version.as_deref() != Some(rv) {
                    return Err(self.stale(
                        &format!("httproute {route:?}"),
                        rv,
                        obj.metadata.resource_version.as_deref(),
                    ));
                }
                let rules = httproute::rules_with_weights(&obj, *rule, weights)
                    .map_err(BackendError::Rejected)?;
                // HTTPRoutes are custom resources: JSON merge patch (no strategic merge), which
                // replaces the rules list whole; every other field of it is carried through.
                let patch = json!({"metadata": meta, "spec": {"rules": rules}});
                api.patch(route, &pp, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| self.error(e, "patch", res, Some(route)))?
                    .metadata
                    .resource_version
            }
            KubeChange::SetFlag {
                config_map,
                file_key,
                flag,
                state,
                variant,
                ..
            } => {
                let api = Api::<ConfigMap>::namespaced(c, ns);
                let cm = api
                    .get(config_map)
                    .await
                    .map_err(|e| self.error(e, "get", "configmaps", Some(config_map)))?;
                if cm.metadata.resource_version.as_deref() != Some(rv) {
                    return Err(self.stale(
                        &format!("configmap {config_map:?}"),
                        rv,
                        cm.metadata.resource_version.as_deref(),
                    ));
                }
                let (_, text) = flags::file(&cm, Some(file_key)).map_err(BackendError::Rejected)?;
                let new_text = flags::edit(text, flag, *state, variant.as_deref())
                    .map_err(BackendError::Rejected)?;
                let patch = json!({"metadata": meta, "data": {file_key.as_str(): new_text}});
                api.patch(config_map, &pp, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| self.error(e, "patch", "configmaps", Some(config_map)))?
                    .metadata
                    .resource_version
            }
            KubeChange::RolloutUndo {
                deployment: name,
                to_revision,
                ..
            } => {
                let (mut d, rss) = self.deployment_and_replicasets(name).await?;
                if d.metadata.resource_version.as_deref() != Some(rv) {
                    return Err(self.stale(
                        &format!("deployment {name:?}"),
                        rv,
                        d.metadata.resource_version.as_deref(),
                    ));
                }
                let (rev, template) =
                    deployment::previous_template(&d, &rss).map_err(BackendError::Rejected)?;
                if rev != *to_revision {
                    return Err(BackendError::Changed(format!(
                        "changed by someone else: the revision before deployment {name:?}'s current one is now {rev}, not {to_revision}; look again and retry"
                    )));
                }
                // As `kubectl rollout undo`: the whole template is replaced, so fields the
                // newer template added do not linger. The object keeps its resourceVersion.
                let Some(spec) = d.spec.as_mut() else {
                    return Err(BackendError::Rejected(format!(
                        "deployment {name:?} has no spec"
                    )));
                };
                spec.template = template;
                d.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(CHANGED_BY_ANNOTATION.into(), actor.into());
                Api::<Deployment>::namespaced(c, ns)
                    .replace(
                        name,
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..Default::default()
                        },
                        &d,
                    )
                    .await
                    .map_err(|e| self.error(e, "update", "deployments", Some(name)))?
                    .metadata
                    .resource_version
            }
            KubeChange::Restart {
                deployment: name,
                at,
                ..
            } => {
                let patch = json!({
                    "metadata": meta,
                    "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: at}}}},
                });
                Api::<Deployment>::namespaced(c, ns)
                    .patch(name, &pp, &Patch::Strategic(&patch))
                    .await
                    .map_err(|e| self.error(e, "patch", "deployments", Some(name)))?
                    .metadata
                    .resource_version
            }
        };
        Ok(new_rv.unwrap_or_default())
    }

    /// Reads the object back: does it now say what the change meant it to?
    pub async fn verify(&self, change: &KubeChange) -> Result<bool, BackendError> {
        let view = self.view().await?;
        Ok(match change {
            KubeChange::SelectTrack {
                service,
                label,
                value,
                ..
            } => view
                .service(service)
                .is_some_and(|s| s.selector.get(label) == Some(value)),
            KubeChange::SetWeights {
                route,
                rule,
                weights,
                ..
            } => view.route(route).is_some_and(|r| {
                r.rules.get(*rule).is_some_and(|rl| {
                    let split = rl.split();
                    weights.iter().all(|(k, w)| split.get(k) == Some(w))
                })
            }),
            KubeChange::SetFlag {
                flag,
                state,
                variant,
                ..
            } => view
                .flags
                .as_ref()
                .and_then(|f| f.flags.as_ref().ok())
                .and_then(|fs| fs.iter().find(|f| &f.key == flag))
                .is_some_and(|f| {
                    state.is_none_or(|s| f.state == s)
                        && variant
                            .as_ref()
                            .is_none_or(|v| f.default_variant.as_ref() == Some(v))
                }),
            KubeChange::RolloutUndo {
                deployment, images, ..
            } => view
                .deployment(deployment)
                .is_some_and(|d| d.images.iter().map(|i| &i.image).eq(images.iter())),
            KubeChange::Restart { deployment, at, .. } => {
                let c = self.client().await?;
                let d = Api::<Deployment>::namespaced(c, &self.namespace)
                    .get(deployment)
                    .await
                    .map_err(|e| self.error(e, "get", "deployments", Some(deployment)))?;
                d.spec
                    .and_then(|s| s.template.metadata)
                    .and_then(|m| m.annotations)
                    .and_then(|a| a.get(RESTARTED_AT_ANNOTATION).cloned())
                    .as_ref()
                    == Some(at)
            }
        })
    }
}

fn root(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    let mut out = e.to_string();
    while let Some(next) = cur.source() {
        let s = next.to_string();
        if !out.contains(&s) {
            out = format!("{out}: {s}");
        }
        cur = next;
    }
    out
}
