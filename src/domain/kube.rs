//! A Kubernetes namespace as the cockpit sees it: Deployments, Services (and which colour is
//! live), HTTPRoute splits, the flags ConfigMap, the Secrets the Deployments use, and how the
//! watches that keep all of it fresh are doing. Pure data; `crate::k8s` fills it in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::status::{FlagStatus, GatewayStatus, RouteStatus, TargetStatus, UpstreamStatus};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeView {
    pub context: String,
    pub namespace: String,
    pub deployments: Vec<DeploymentView>,
    pub services: Vec<ServiceView>,
    pub routes: Vec<HttpRouteView>,
    /// The flags ConfigMap; `None` when it does not exist.
    pub flags: Option<FlagsView>,
    pub secrets: Vec<SecretView>,
    /// One per watched kind; empty for a one-shot read.
    pub watches: Vec<WatchStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub name: String,
    pub resource_version: String,
    /// The value of the track label (e.g. `blue`), from the pod template.
    pub track: Option<String>,
    /// The pod template's labels: what a Service selector matches.
    pub pod_labels: BTreeMap<String, String>,
    pub images: Vec<ImageRef>,
    pub replicas: Replicas,
    pub rollout: RolloutState,
    /// `deployment.kubernetes.io/revision`.
    pub revision: Option<u64>,
    pub secret_refs: Vec<SecretUse>,
}

impl DeploymentView {
    /// Every desired replica runs the current template and is available.
    pub fn fully_available(&self) -> bool {
        let r = &self.replicas;
        r.desired > 0 && r.updated >= r.desired && r.available >= r.desired
    }

    /// True when `selector` (non-empty) selects this Deployment's pods.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| self.pod_labels.get(k) == Some(v))
    }

    /// `api@sha256:…, sidecar:1.2`
    pub fn images_text(&self) -> String {
        self.images
            .iter()
            .map(|i| i.image.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub container: String,
    /// The reference as written in the pod template.
    pub image: String,
    /// `sha256:…` when the reference pins a digest.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(container: &str, image: &str) -> Self {
        let digest = image
            .split_once('@')
            .map(|(_, d)| d.to_string())
            .filter(|d| d.contains(':'));
        Self {
            container: container.to_string(),
            image: image.to_string(),
            digest,
        }
    }

    /// Two references name the same image: equal digests when both pin one, else equal
    /// references.
    pub fn same_image(&self, other: &ImageRef) -> bool {
        match (&self.digest, &other.digest) {
            (Some(a), Some(b)) => a == b,
            _ => self.image == other.image,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    pub desired: u32,
    pub updated: u32,
    pub ready: u32,
    pub available: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    Complete,
    Progressing {
        reason: String,
    },
    /// The progress deadline passed (`ProgressDeadlineExceeded`) or a ReplicaSet failed.
    Stalled {
        reason: String,
    },
    #[default]
    Unknown,
}

impl RolloutState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Progressing { .. } => "progressing",
            Self::Stalled { .. } => "stalled",
            Self::Unknown => "unknown",
        }
    }
}

/// One Secret a Deployment uses, and how.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretUse {
    pub secret: String,
    /// A single key (env `secretKeyRef`, or a volume `items` entry); `None` means the whole
    /// Secret (`envFrom`, a volume without items).
    pub key: Option<String>,
    /// `secretKeyRef` or `envFrom` with `optional: true`.
    pub optional: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub resource_version: String,
    pub selector: BTreeMap<String, String>,
    pub blue_green: Option<BlueGreen>,
}

/// A Service whose selector picks one of two Deployments that differ only by the track label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlueGreen {
    pub track_label: String,
    /// The track value the selector points at now.
    pub live: String,
    /// Track value → Deployment name, for both sides.
    pub sides: BTreeMap<String, String>,
}

impl BlueGreen {
    /// The side that is not live.
    pub fn idle(&self) -> Option<&str> {
        self.sides
            .keys()
            .find(|k| **k != self.live)
            .map(String::as_str)
    }

    /// A track value or a Deployment name → the track value.
    pub fn resolve(&self, side: &str) -> Option<&str> {
        self.sides
            .iter()
            .find(|(track, deploy)| *track == side || *deploy == side)
            .map(|(t, _)| t.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRouteView {
    pub name: String,
    pub resource_version: String,
    pub hostnames: Vec<String>,
    pub rules: Vec<RuleView>,
    /// The backend that takes canary traffic (annotation `signalbox.dev/canary`, else the
    /// second backend of a two-way rule).
    pub canary: Option<String>,
}

impl HttpRouteView {
    /// The name the cockpit uses for rule `i`: the route's own name when it has one rule.
    pub fn rule_name(&self, i: usize) -> String {
        if self.rules.len() == 1 {
            self.name.clone()
        } else {
            format!("{}/{i}", self.name)
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    pub path_prefixes: Vec<String>,
    pub exact_paths: Vec<String>,
    pub methods: Vec<String>,
    pub backends: Vec<BackendWeight>,
}

impl RuleView {
    pub fn split(&self) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for b in &self.backends {
            *m.entry(b.name.clone()).or_insert(0) += b.weight;
        }
        m
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendWeight {
    pub name: String,
    pub port: Option<i32>,
    /// Gateway API default: 1.
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagsView {
    pub config_map: String,
    pub key: String,
    pub resource_version: String,
    /// The flags, or why the file in the ConfigMap did not parse.
    pub flags: Result<Vec<FlagStatus>, String>,
}

/// A Secret referenced by a Deployment: names, key names and age. Never values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    pub name: String,
    pub exists: bool,
    pub keys: Vec<String>,
    pub created: Option<DateTime<Utc>>,
    /// Deployments that reference it.
    pub used_by: Vec<String>,
    /// Keys referenced (and not optional) that the Secret lacks.
    pub missing_keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// `deployments`, `services`, …
    pub kind: String,
    pub state: WatchState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WatchState {
    Connecting,
    Live {
        since: DateTime<Utc>,
    },
    /// Errors; the watcher retries with backoff. What it last saw is still shown.
    Retrying {
        error: String,
        since: DateTime<Utc>,
        attempts: u32,
    },
    /// The watch ended and will not come back by itself.
    Stopped {
        error: String,
    },
}

impl WatchState {
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live { .. })
    }
}

impl KubeView {
    pub fn deployment(&self, name: &str) -> Option<&DeploymentView> {
        self.deployments.iter().find(|d| d.name == name)
    }
    pub fn service(&self, name: &str) -> Option<&ServiceView> {
        self.services.iter().find(|s| s.name == name)
    }
    pub fn route(&self, name: &str) -> Option<&HttpRouteView> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// A cockpit route name (`users`, or `users/1` for a rule of a multi-rule route) →
    /// the HTTPRoute and the rule index.
    pub fn route_rule(&self, name: &str) -> Option<(&HttpRouteView, usize)> {
        if let Some(r) = self.route(name)
            && r.rules.len() == 1
        {
            return Some((r, 0));
        }
        let (route, idx) = name.rsplit_once('/')?;
        let r = self.route(route)?;
        let i: usize = idx.parse().ok()?;
        (i < r.rules.len()).then_some((r, i))
    }

    /// Deployments a Service selector picks.
    pub fn selected<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a DeploymentView> {
        self.deployments
            .iter()
            .filter(move |d| d.selected_by(selector))
    }

    /// The view as the gateway-shaped status the cockpit's panels and `control` share:
    /// HTTPRoute rules and blue-green Services become routes, Services and Deployments
    /// become upstreams (a target per Deployment or replica, healthy when available).
    pub fn to_gateway_status(&self) -> GatewayStatus {
        let mut routes = Vec::new();
        for r in &self.routes {
            for (i, rule) in r.rules.iter().enumerate() {
                let split = rule.split();
                routes.push(RouteStatus {
                    name: r.rule_name(i),
                    paths: rule.path_prefixes.clone(),
                    exact_paths: rule.exact_paths.clone(),
                    methods: rule.methods.clone(),
                    hosts: r.hostnames.clone(),
                    canary: r.canary.clone().filter(|c| split.contains_key(c)),
                    split,
                    canary_by_header: None,
                    sticky: None,
                    filters: vec!["httproute".into()],
                    flag: None,
                });
            }
        }
        for s in &self.services {
            if let Some(bg) = &s.blue_green {
                routes.push(RouteStatus {
                    name: s.name.clone(),
                    paths: vec![],
                    exact_paths: vec![],
                    methods: vec![],
                    hosts: vec![],
                    split: bg
                        .sides
                        .values()
                        .map(|d| {
                            let live = bg.sides.get(&bg.live) == Some(d);
                            (d.clone(), if live { 100 } else { 0 })
                        })
                        .collect(),
                    canary_by_header: None,
                    canary: None,
                    sticky: None,
                    filters: vec!["service-selector".into()],
                    flag: None,
                });
            }
        }
        let mut upstreams = Vec::new();
        for s in &self.services {
            upstreams.push(UpstreamStatus {
                name: s.name.clone(),
                targets: self
                    .selected(&s.selector)
                    .map(|d| TargetStatus {
                        addr: format!("{} {}/{}", d.name, d.replicas.available, d.replicas.desired),
                        healthy: d.fully_available(),
                        ejected: false,
                    })
                    .collect(),
            });
        }
        for d in &self.deployments {
            upstreams.push(UpstreamStatus {
                name: d.name.clone(),
                targets: (0..d.replicas.desired)
                    .map(|i| TargetStatus {
                        addr: format!("{}#{i}", d.name),
                        healthy: i < d.replicas.available,
                        ejected: false,
                    })
                    .collect(),
            });
        }
        let flags = self
            .flags
            .as_ref()
            .and_then(|f| f.flags.as_ref().ok().cloned())
            .unwrap_or_default();
        GatewayStatus {
            revision: 0,
            config_hash: format!("k8s:{}/{}", self.context, self.namespace),
            routes,
            upstreams,
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_decide_image_equality_when_both_pin_one() {
        let a = ImageRef::parse("api", "reg.example/api:1.4@sha256:aaa");
        let b = ImageRef::parse("api", "reg.example/api:latest@sha256:aaa");
        let c = ImageRef::parse("api", "reg.example/api:1.4@sha256:bbb");
        let d = ImageRef::parse("api", "reg.example/api:1.4");
        assert_eq!(a.digest.as_deref(), Some("sha256:aaa"));
        assert!(a.same_image(&b));
        assert!(!a.same_image(&c));
        assert!(!a.same_image(&d), "a tag is not proof of the same digest");
        assert!(d.same_image(&ImageRef::parse("x", "reg.example/api:1.4")));
    }

    #[test]
    fn multi_rule_routes_are_named_by_index() {
        let rule = RuleView {
            backends: vec![BackendWeight {
                name: "a".into(),
                port: None,
                weight: 1,
            }],
            ..Default::default()
        };
        let v = KubeView {
            routes: vec![
                HttpRouteView {
                    name: "one".into(),
                    rules: vec![rule.clone()],
                    ..Default::default()
                },
                HttpRouteView {
                    name: "two".into(),
                    rules: vec![rule.clone(), rule],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            v.route_rule("one").map(|(r, i)| (&r.name[..], i)),
            Some(("one", 0))
        );
        assert_eq!(
            v.route_rule("two/1").map(|(r, i)| (&r.name[..], i)),
            Some(("two", 1))
        );
        assert!(v.route_rule("two").is_none());
        assert!(v.route_rule("two/2").is_none());
        let names: Vec<_> = v
            .to_gateway_status()
            .routes
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["one", "two/0", "two/1"]);
    }
}
