//! Services: the selector, and so which colour is live.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use crate::domain::kube::{BlueGreen, DeploymentView, ServiceView};

pub fn parse(s: &Service, track_label: &str, deployments: &[DeploymentView]) -> ServiceView {
    let selector = s
        .spec
        .as_ref()
        .and_then(|sp| sp.selector.clone())
        .unwrap_or_default();
    ServiceView {
        name: s.metadata.name.clone().unwrap_or_default(),
        resource_version: s.metadata.resource_version.clone().unwrap_or_default(),
        blue_green: blue_green(&selector, track_label, deployments),
        selector,
    }
}

/// A blue-green pair: the selector names a track, and exactly two Deployments match the rest
/// of the selector with pod labels that differ only by the track.
pub fn blue_green(
    selector: &BTreeMap<String, String>,
    track_label: &str,
    deployments: &[DeploymentView],
) -> Option<BlueGreen> {
    let live = selector.get(track_label)?;
    let mut rest = selector.clone();
    rest.remove(track_label);
    if rest.is_empty() {
        return None;
    }
    let candidates: Vec<&DeploymentView> = deployments
        .iter()
        .filter(|d| d.selected_by(&rest) && d.track.is_some())
        .collect();
    let [a, b] = candidates.as_slice() else {
        return None;
    };
    let without = |d: &DeploymentView| {
        let mut l = d.pod_labels.clone();
        l.remove(track_label);
        l
    };
    if a.track == b.track || without(a) != without(b) {
        return None;
    }
    let sides: BTreeMap<String, String> = [a, b]
        .iter()
        .filter_map(|d| Some((d.track.clone()?, d.name.clone())))
        .collect();
    sides.contains_key(live).then(|| BlueGreen {
        track_label: track_label.to_string(),
        live: live.clone(),
        sides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployments() -> Vec<DeploymentView> {
        fixtures::items::<Deployment>("deployments.json")
            .iter()
            .map(|d| crate::k8s::deployment::parse(d, "version"))
            .collect()
    }

    #[test]
    fn recognises_the_pair_and_the_live_colour() {
        let deps = deployments();
        let svcs: Vec<Service> = fixtures::items("services.json");
        let users = parse(&svcs[0], "version", &deps);
        assert_eq!(users.name, "users");
        let bg = users.blue_green.expect("users is blue-green");
        assert_eq!(bg.live, "blue");
        assert_eq!(bg.idle(), Some("green"));
        assert_eq!(bg.sides["green"], "users-green");
        assert_eq!(bg.resolve("users-green"), Some("green"));
        // The canary Service selects by app only: no track in its selector.
        let canary = parse(&svcs[1], "version", &deps);
        assert!(canary.blue_green.is_none());
    }

    #[test]
    fn deployments_that_differ_by_more_than_the_track_are_no_pair() {
        let mut deps = deployments();
        deps[1]
            .pod_labels
            .insert("tier".into(), "experimental".into());
        let sel: BTreeMap<String, String> = [
            ("app".into(), "users".into()),
            ("version".into(), "blue".into()),
        ]
        .into();
        assert!(blue_green(&sel, "version", &deps).is_none());
        // A selector without the track label is not a flip switch.
        let sel: BTreeMap<String, String> = [("app".into(), "users".into())].into();
        assert!(blue_green(&sel, "version", &deployments()).is_none());
    }
}
