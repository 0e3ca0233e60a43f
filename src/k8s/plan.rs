//! Kubernetes changes and the checks only Kubernetes can make. Pure: it works on a
//! [`KubeView`]; `control` does the reading, asking and applying.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::kube::{DeploymentView, ImageRef, KubeView};
use crate::domain::{Check, FlagState};

/// A change to one object, with the resourceVersion it was planned against. The patch sent
/// carries that version, so a change made in between is a conflict, never overwritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KubeChange {
    /// Point a Service's selector at another track (blue-green flip).
    SelectTrack {
        service: String,
        label: String,
        value: String,
        resource_version: String,
    },
    /// Set an HTTPRoute rule's backend weights.
    SetWeights {
        route: String,
        rule: usize,
        weights: BTreeMap<String, u32>,
        resource_version: String,
    },
    SetFlag {
        config_map: String,
        file_key: String,
        flag: String,
        state: Option<FlagState>,
        variant: Option<String>,
        resource_version: String,
    },
    /// Restore the pod template of ReplicaSet revision `to_revision`.
    RolloutUndo {
        deployment: String,
        to_revision: u64,
        images: Vec<String>,
        resource_version: String,
    },
    /// Set the restartedAt annotation, so every pod is replaced (and re-reads its Secrets).
    Restart {
        deployment: String,
        at: String,
        resource_version: String,
    },
}

impl KubeChange {
    /// `kind/name`, for messages.
    pub fn object(&self) -> String {
        match self {
            Self::SelectTrack { service, .. } => format!("service/{service}"),
            Self::SetWeights { route, .. } => format!("httproute/{route}"),
            Self::SetFlag { config_map, .. } => format!("configmap/{config_map}"),
            Self::RolloutUndo { deployment, .. } | Self::Restart { deployment, .. } => {
                format!("deployment/{deployment}")
            }
        }
    }

    pub fn resource_version(&self) -> &str {
        match self {
            Self::SelectTrack {
                resource_version, ..
            }
            | Self::SetWeights {
                resource_version, ..
            }
            | Self::SetFlag {
                resource_version, ..
            }
            | Self::RolloutUndo {
                resource_version, ..
            }
            | Self::Restart {
                resource_version, ..
            } => resource_version,
        }
    }
}

/// The environment a release is promoted from, for the same-image check.
pub struct Source<'a> {
    pub env: &'a str,
    pub view: Result<&'a KubeView, String>,
}

/// A split worked out on the view's gateway-shaped projection → the Kubernetes change.
/// A blue-green Service becomes a selector flip, with two more checks: the target
/// Deployment is fully available, and runs the image the source environment runs.
pub fn from_split(
    view: &KubeView,
    route: &str,
    weights: &BTreeMap<String, u32>,
    source: Option<Source<'_>>,
    checks: &mut Vec<Check>,
) -> Result<KubeChange, String> {
    if let Some(svc) = view.service(route)
        && let Some(bg) = &svc.blue_green
    {
        let live: Vec<&String> = weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(k, _)| k)
            .collect();
        let [deploy] = live.as_slice() else {
            return Err(format!(
                "service {route:?} is blue-green: all traffic goes to one side ({})",
                bg.sides.values().cloned().collect::<Vec<_>>().join(" or ")
            ));
        };
        let track = bg
            .resolve(deploy)
            .ok_or_else(|| format!("{deploy:?} is not a side of service {route:?}"))?;
        if track == bg.live {
            return Err(format!(
                "service {route:?} already sends traffic to {track}"
            ));
        }
        let target = view
            .deployment(deploy)
            .ok_or_else(|| format!("deployment {deploy:?} is gone"))?;
        checks.push(availability_check(target));
        checks.push(same_image_check(target, route, source));
        return Ok(KubeChange::SelectTrack {
            service: route.to_string(),
            label: bg.track_label.clone(),
            value: track.to_string(),
            resource_version: svc.resource_version.clone(),
        });
    }
    let (r, rule) = view
        .route_rule(route)
        .ok_or_else(|| format!("no HTTPRoute or blue-green Service named {route:?}"))?;
    Ok(KubeChange::SetWeights {
        route: r.name.clone(),
        rule,
        weights: weights.clone(),
        resource_version: r.resource_version.clone(),
    })
}

pub fn availability_check(d: &DeploymentView) -> Check {
    let r = d.replicas;
    let detail = format!(
        "{}: {}/{} available, {}/{} updated, rollout {}",
        d.name,
        r.available,
        r.desired,
        r.updated,
        r.desired,
        d.rollout.label()
    );
    if d.fully_available() {
        Check::pass(format!("{} fully available", d.name), detail)
    } else {
        Check::fail(format!("{} fully available", d.name), detail)
    }
}

/// "Build once, promote the same image": the target runs what the source environment's
/// Service of the same name sends traffic to.
pub fn same_image_check(
    target: &DeploymentView,
    service: &str,
    source: Option<Source<'_>>,
) -> Check {
    const NAME: &str = "same image as the source environment";
    let Some(src) = source else {
        return Check::pass(NAME, "no promote_from environment configured; not compared");
    };
    let view = match src.view {
        Ok(v) => v,
        Err(e) => return Check::fail(NAME, format!("cannot read {}: {e}", src.env)),
    };
    let Some(svc) = view.service(service) else {
        return Check::fail(
            NAME,
            format!("{} has no service {service:?} to compare with", src.env),
        );
    };
    let running: Vec<&DeploymentView> = view.selected(&svc.selector).collect();
    if running.is_empty() {
        return Check::fail(
            NAME,
            format!("service {service:?} in {} selects no deployment", src.env),
        );
    }
    let same = |d: &DeploymentView| {
        !target.images.is_empty()
            && target.images.iter().all(|t| {
                d.images
                    .iter()
                    .any(|s: &ImageRef| s.container == t.container && s.same_image(t))
            })
    };
    match running.iter().find(|d| same(d)) {
        Some(d) => Check::pass(
            NAME,
            format!(
                "{} runs {} as {}/{}",
                target.name,
                target.images_text(),
                src.env,
                d.name
            ),
        ),
        None => Check::fail(
            NAME,
            format!(
                "{} runs {}, but {} runs {}",
                target.name,
                target.images_text(),
                src.env,
                running
                    .iter()
                    .map(|d| d.images_text())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    }
}

/// The flag change on the ConfigMap the view read.
pub fn from_flag(
    view: &KubeView,
    key: &str,
    state: Option<FlagState>,
    variant: Option<String>,
) -> Result<KubeChange, String> {
    let f = view
        .flags
        .as_ref()
        .ok_or_else(|| "there is no flags ConfigMap in this namespace".to_string())?;
    if let Err(e) = &f.flags {
        return Err(format!("configmap {:?}: {e}", f.config_map));
    }
    Ok(KubeChange::SetFlag {
        config_map: f.config_map.clone(),
        file_key: f.key.clone(),
        flag: key.to_string(),
        state,
        variant,
        resource_version: f.resource_version.clone(),
    })
}

/// Restart: before → after and the change.
pub fn restart(
    view: &KubeView,
    deployment: &str,
    at: &str,
) -> Result<(KubeChange, String, String, Vec<Check>), String> {
    let d = view
        .deployment(deployment)
        .ok_or_else(|| format!("no deployment {deployment:?} in {}", view.namespace))?;
    let r = d.replicas;
    let checks = vec![
        if d.rollout == crate::domain::kube::RolloutState::Complete {
            Check::pass(
                "no rollout in progress",
                format!("{deployment}: rollout complete"),
            )
        } else {
            Check::fail(
                "no rollout in progress",
                format!(
                    "{deployment}: rollout {}; wait for it or undo it first",
                    d.rollout.label()
                ),
            )
        },
    ];
    Ok((
        KubeChange::Restart {
            deployment: deployment.to_string(),
            at: at.to_string(),
            resource_version: d.resource_version.clone(),
        },
        format!(
            "{deployment}: {}/{} available, pods as they are",
            r.available, r.desired
        ),
        format!("{deployment}: every pod replaced (restartedAt {at})"),
        checks,
    ))
}

/// Rollout undo to the ReplicaSet revision the backend found.
pub fn rollout_undo(
    view: &KubeView,
    deployment: &str,
    to_revision: u64,
    images: &[ImageRef],
) -> Result<(KubeChange, String, String, Vec<Check>), String> {
    let d = view
        .deployment(deployment)
        .ok_or_else(|| format!("no deployment {deployment:?} in {}", view.namespace))?;
    let text = |imgs: &[ImageRef]| {
        imgs.iter()
            .map(|i| format!("{}={}", i.container, i.image))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let checks = vec![Check::pass(
        "an earlier revision exists",
        format!(
            "revision {} → {to_revision}",
            d.revision.map_or("?".to_string(), |r| r.to_string())
        ),
    )];
    Ok((
        KubeChange::RolloutUndo {
            deployment: deployment.to_string(),
            to_revision,
            images: images.iter().map(|i| i.image.clone()).collect(),
            resource_version: d.resource_version.clone(),
        },
        format!(
            "{deployment} revision {}: {}",
            d.revision.map_or("?".to_string(), |r| r.to_string()),
            text(&d.images)
        ),
        format!(
            "{deployment} template of revision {to_revision}: {}",
            text(images)
        ),
        checks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kube::{BlueGreen, Replicas, RolloutState, ServiceView};

    fn deploy(name: &str, track: &str, image: &str, available: u32) -> DeploymentView {
        DeploymentView {
            name: name.into(),
            resource_version: "7".into(),
            track: Some(track.into()),
            pod_labels: [
                ("app".into(), "users".into()),
                ("version".into(), track.into()),
            ]
            .into(),
            images: vec![ImageRef::parse("api", image)],
            replicas: Replicas {
                desired: 2,
                updated: 2,
                ready: available,
                available,
            },
            rollout: RolloutState::Complete,
            revision: Some(1),
            secret_refs: vec![],
        }
    }

    fn view(green_image: &str, green_available: u32) -> KubeView {
        KubeView {
            namespace: "shop".into(),
            deployments: vec![
                deploy("users-blue", "blue", "api@sha256:aaa", 2),
                deploy("users-green", "green", green_image, green_available),
            ],
            services: vec![ServiceView {
                name: "users".into(),
                resource_version: "41".into(),
                selector: [
                    ("app".into(), "users".into()),
                    ("version".into(), "blue".into()),
                ]
                .into(),
                blue_green: Some(BlueGreen {
                    track_label: "version".into(),
                    live: "blue".into(),
                    sides: [
                        ("blue".into(), "users-blue".into()),
                        ("green".into(), "users-green".into()),
                    ]
                    .into(),
                }),
            }],
            ..Default::default()
        }
    }

    fn stage(image: &str) -> KubeView {
        let mut v = view(image, 2);
        v.services[0]
            .selector
            .insert("version".into(), "green".into());
        v
    }

    fn to_green() -> BTreeMap<String, u32> {
        [("users-blue".into(), 0), ("users-green".into(), 100)].into()
    }

    #[test]
    fn a_flip_selects_the_track_and_checks_availability_and_image() {
        let prod = view("api@sha256:bbb", 2);
        let stage = stage("api@sha256:bbb");
        let mut checks = vec![];
        let c = from_split(
            &prod,
            "users",
            &to_green(),
            Some(Source {
                env: "stage",
                view: Ok(&stage),
            }),
            &mut checks,
        )
        .unwrap();
        assert_eq!(
            c,
            KubeChange::SelectTrack {
                service: "users".into(),
                label: "version".into(),
                value: "green".into(),
                resource_version: "41".into()
            }
        );
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
    }

    #[test]
    fn a_different_image_in_the_source_environment_fails_the_check() {
        let prod = view("api@sha256:bbb", 2);
        let stage = stage("api@sha256:ccc");
        let mut checks = vec![];
        from_split(
            &prod,
            "users",
            &to_green(),
            Some(Source {
                env: "stage",
                view: Ok(&stage),
            }),
            &mut checks,
        )
        .unwrap();
        let c = checks
            .iter()
            .find(|c| c.name.starts_with("same image"))
            .unwrap();
        assert!(!c.passed);
        assert!(
            c.detail.contains("sha256:bbb") && c.detail.contains("sha256:ccc"),
            "{}",
            c.detail
        );
        let mut checks = vec![];
        from_split(
            &prod,
            "users",
            &to_green(),
            Some(Source {
                env: "stage",
                view: Err("unreachable".into()),
            }),
            &mut checks,
        )
        .unwrap();
        assert!(
            checks
                .iter()
                .any(|c| !c.passed && c.detail.contains("unreachable"))
        );
    }

    #[test]
    fn a_partly_available_target_fails_and_flipping_to_the_live_side_is_refused() {
        let prod = view("api@sha256:bbb", 1);
        let mut checks = vec![];
        from_split(&prod, "users", &to_green(), None, &mut checks).unwrap();
        let avail = checks
            .iter()
            .find(|c| c.name.contains("fully available"))
            .unwrap();
        assert!(
            !avail.passed && avail.detail.contains("1/2 available"),
            "{avail:?}"
        );
        let to_blue: BTreeMap<String, u32> =
            [("users-blue".into(), 100), ("users-green".into(), 0)].into();
        assert!(
            from_split(&prod, "users", &to_blue, None, &mut vec![])
                .unwrap_err()
                .contains("already")
        );
        let half: BTreeMap<String, u32> =
            [("users-blue".into(), 50), ("users-green".into(), 50)].into();
        assert!(from_split(&prod, "users", &half, None, &mut vec![]).is_err());
    }
}
