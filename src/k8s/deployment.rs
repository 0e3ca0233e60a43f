//! Deployments and their ReplicaSets: what runs, how far the rollout got, and the pod
//! template `kubectl rollout undo` would restore.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::domain::kube::{DeploymentView, ImageRef, Replicas, RolloutState};

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// Added by the Deployment controller to each ReplicaSet's template; never part of what a
/// Deployment's own template says.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

fn count(v: Option<i32>) -> u32 {
    v.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

pub fn parse(d: &Deployment, track_label: &str) -> DeploymentView {
    let meta = &d.metadata;
    let spec = d.spec.as_ref();
    let template = spec.map(|s| &s.template);
    let pod_labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let status = d.status.as_ref();
    let replicas = Replicas {
        // The API defaults spec.replicas to 1.
        desired: spec.map_or(1, |s| count(Some(s.replicas.unwrap_or(1)))),
        updated: count(status.and_then(|s| s.updated_replicas)),
        ready: count(status.and_then(|s| s.ready_replicas)),
        available: count(status.and_then(|s| s.available_replicas)),
    };
    DeploymentView {
        name: meta.name.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        track: pod_labels.get(track_label).cloned(),
        images: template.map(images).unwrap_or_default(),
        rollout: rollout_state(d, &replicas),
        revision: revision(meta.annotations.as_ref()),
        secret_refs: template.map(super::secret::references).unwrap_or_default(),
        pod_labels,
        replicas,
    }
}

pub fn images(t: &PodTemplateSpec) -> Vec<ImageRef> {
    t.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| ImageRef::parse(&c.name, c.image.as_deref().unwrap_or("")))
        .collect()
}

fn revision(annotations: Option<&BTreeMap<String, String>>) -> Option<u64> {
    annotations?.get(REVISION_ANNOTATION)?.trim().parse().ok()
}

/// As `kubectl rollout status` judges it: the controller has seen the latest spec, the
/// Progressing condition says whether it stalled, and every replica is updated and available.
fn rollout_state(d: &Deployment, r: &Replicas) -> RolloutState {
    let Some(status) = &d.status else {
        return RolloutState::Unknown;
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::Progressing {
            reason: "the controller has not seen the latest spec yet".into(),
        };
    }
    let conds = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conds.iter().find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return RolloutState::Stalled {
            reason: c
                .message
                .clone()
                .unwrap_or_else(|| "progress deadline exceeded".into()),
        };
    }
    if let Some(c) = conds
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
    {
        return RolloutState::Stalled {
            reason: c
                .message
                .clone()
                .unwrap_or_else(|| "a ReplicaSet failed to create pods".into()),
        };
    }
    let total = count(status.replicas);
    if r.updated < r.desired {
        return RolloutState::Progressing {
            reason: format!("{} of {} replicas updated", r.updated, r.desired),
        };
    }
    if total > r.updated {
        return RolloutState::Progressing {
            reason: format!("{} old replicas pending termination", total - r.updated),
        };
    }
    if r.available < r.updated {
        return RolloutState::Progressing {
            reason: format!(
                "{} of {} updated replicas available",
                r.available, r.updated
            ),
        };
    }
    RolloutState::Complete
}

/// True when the ReplicaSet is controlled by this Deployment.
fn owned_by(rs: &ReplicaSet, d: &Deployment) -> bool {
    let Some(uid) = d.metadata.uid.as_deref() else {
        return false;
    };
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// What `kubectl rollout undo` restores: the pod template of the newest ReplicaSet whose
/// revision is below the Deployment's, without the controller's pod-template-hash label.
pub fn previous_template(
    d: &Deployment,
    replica_sets: &[ReplicaSet],
) -> Result<(u64, PodTemplateSpec), String> {
    let name = d.metadata.name.as_deref().unwrap_or("?");
    let current = revision(d.metadata.annotations.as_ref())
        .ok_or_else(|| format!("deployment {name:?} has no {REVISION_ANNOTATION} annotation"))?;
    let (rev, rs) = replica_sets
        .iter()
        .filter(|rs| owned_by(rs, d))
        .filter_map(|rs| revision(rs.metadata.annotations.as_ref()).map(|r| (r, rs)))
        .filter(|(r, _)| *r < current)
        .max_by_key(|(r, _)| *r)
        .ok_or_else(|| {
            format!("deployment {name:?} has no earlier revision than {current} to go back to")
        })?;
    let mut template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| format!("replicaset of revision {rev} has no pod template"))?;
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    Ok((rev, template))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures;

    #[test]
    fn parses_a_deployment_as_the_api_server_returns_it() {
        let list: Vec<Deployment> = fixtures::items("deployments.json");
        let blue = parse(&list[0], "version");
        assert_eq!(blue.name, "users-blue");
        assert_eq!(blue.track.as_deref(), Some("blue"));
        assert_eq!(blue.revision, Some(3));
        assert_eq!(
            blue.replicas,
            Replicas {
                desired: 3,
                updated: 3,
                ready: 3,
                available: 3
            }
        );
        assert_eq!(blue.rollout, RolloutState::Complete);
        assert!(blue.fully_available());
        assert_eq!(
            blue.images[0].digest.as_deref().map(|d| &d[..10]),
            Some("sha256:1a2")
        );
        assert_eq!(blue.images.len(), 2);

        let green = parse(&list[1], "version");
        assert_eq!(green.track.as_deref(), Some("green"));
        assert!(
            matches!(green.rollout, RolloutState::Progressing { .. }),
            "{:?}",
            green.rollout
        );
        assert!(!green.fully_available());

        let stalled = parse(&list[2], "version");
        assert!(
            matches!(stalled.rollout, RolloutState::Stalled { ref reason } if reason.contains("timed out progressing")),
            "{:?}",
            stalled.rollout
        );
    }

    #[test]
    fn undo_takes_the_newest_older_replicaset_and_drops_the_hash_label() {
        let deps: Vec<Deployment> = fixtures::items("deployments.json");
        let rss: Vec<ReplicaSet> = fixtures::items("replicasets.json");
        let (rev, t) = previous_template(&deps[0], &rss).unwrap();
        assert_eq!(rev, 2);
        let labels = t.metadata.unwrap().labels.unwrap();
        assert!(!labels.contains_key(POD_TEMPLATE_HASH));
        assert_eq!(labels["version"], "blue");
        assert_eq!(
            t.spec.unwrap().containers[0].image.as_deref(),
            Some("registry.example.com/shop/users:1.3.0")
        );
        // users-green is at revision 1: nothing to go back to.
        let e = previous_template(&deps[1], &rss).unwrap_err();
        assert!(e.contains("no earlier revision"), "{e}");
    }
}
