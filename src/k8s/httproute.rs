//! Gateway API HTTPRoutes (`gateway.networking.k8s.io/v1`), read as dynamic objects: the
//! rules, their matches, and the weighted `backendRefs` that make a canary split.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::kube::{BackendWeight, HttpRouteView, RuleView};

pub const CANARY_ANNOTATION: &str = "signalbox.dev/canary";

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    hostnames: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Rule {
    matches: Vec<Match>,
    backend_refs: Vec<BackendRef>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Match {
    path: Option<PathMatch>,
    method: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PathMatch {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BackendRef {
    name: String,
    port: Option<i32>,
    weight: Option<u32>,
}

pub fn parse(obj: &DynamicObject) -> Result<HttpRouteView, String> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let spec: Spec = match obj.data.get("spec") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("httproute {name:?}: spec: {e}"))?,
        None => Spec::default(),
    };
    let rules: Vec<RuleView> = spec
        .rules
        .into_iter()
        .map(|r| {
            let mut rule = RuleView::default();
            // No matches means the Gateway API default: PathPrefix /.
            if r.matches.is_empty() {
                rule.path_prefixes.push("/".into());
            }
            for m in r.matches {
                match m.path {
                    Some(p) => {
                        let value = p.value.unwrap_or_else(|| "/".into());
                        match p.kind.as_deref() {
                            Some("Exact") => rule.exact_paths.push(value),
                            Some("RegularExpression") => {
                                rule.path_prefixes.push(format!("~{value}"))
                            }
                            _ => rule.path_prefixes.push(value),
                        }
                    }
                    None => rule.path_prefixes.push("/".into()),
                }
                if let Some(method) = m.method
                    && !rule.methods.contains(&method)
                {
                    rule.methods.push(method);
                }
            }
            rule.path_prefixes.dedup();
            rule.backends = r
                .backend_refs
                .into_iter()
                .map(|b| BackendWeight {
                    name: b.name,
                    port: b.port,
                    weight: b.weight.unwrap_or(1),
                })
                .collect();
            rule
        })
        .collect();
    let annotated = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CANARY_ANNOTATION))
        .cloned();
    let canary = annotated.or_else(|| {
        rules
            .iter()
            .find(|r| r.backends.len() == 2)
            .map(|r| r.backends[1].name.clone())
    });
    Ok(HttpRouteView {
        name,
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        hostnames: spec.hostnames,
        rules,
        canary,
    })
}

/// The route's `spec.rules` with rule `rule`'s backend weights set from `weights` (a backend
/// not named keeps its weight). Every other field is carried through unchanged, because a
/// JSON merge patch replaces lists whole.
pub fn rules_with_weights(
    obj: &DynamicObject,
    rule: usize,
    weights: &BTreeMap<String, u32>,
) -> Result<Value, String> {
    let name = obj.metadata.name.as_deref().unwrap_or("?");
    let mut rules = obj
        .data
        .get("spec")
        .and_then(|s| s.get("rules"))
        .cloned()
        .ok_or_else(|| format!("httproute {name:?} has no spec.rules"))?;
    let refs = rules
        .get_mut(rule)
        .and_then(|r| r.get_mut("backendRefs"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| format!("httproute {name:?} has no backendRefs in rule {rule}"))?;
    for (backend, w) in weights {
        let mut found = false;
        for r in refs.iter_mut() {
            if r.get("name").and_then(Value::as_str) == Some(backend) {
                r["weight"] = Value::from(*w);
                found = true;
            }
        }
        if !found {
            return Err(format!(
                "httproute {name:?} rule {rule} has no backendRef {backend:?}"
            ));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures;

    #[test]
    fn rules_matches_and_weights() {
        let routes: Vec<DynamicObject> = fixtures::items("httproutes.json");
        let orders = parse(&routes[0]).unwrap();
        assert_eq!(orders.name, "orders");
        assert_eq!(orders.hostnames, ["shop.example.com"]);
        assert_eq!(orders.rules.len(), 1);
        let split = orders.rules[0].split();
        assert_eq!(split["orders-stable"], 90);
        assert_eq!(split["orders-canary"], 10);
        assert_eq!(orders.canary.as_deref(), Some("orders-canary"));
        assert_eq!(orders.rules[0].path_prefixes, ["/api/orders"]);
        assert_eq!(orders.rules[0].methods, ["GET", "POST"]);

        let users = parse(&routes[1]).unwrap();
        assert_eq!(users.rules.len(), 2);
        assert_eq!(users.rule_name(1), "users/1");
        assert_eq!(users.rules[1].exact_paths, ["/api/users/health"]);
        // An unset weight is 1, as the Gateway API says.
        assert_eq!(users.rules[0].backends[0].weight, 1);
    }

    #[test]
    fn weights_change_and_everything_else_stays() {
        let routes: Vec<DynamicObject> = fixtures::items("httproutes.json");
        let w: BTreeMap<String, u32> =
            [("orders-stable".into(), 75), ("orders-canary".into(), 25)].into();
        let rules = rules_with_weights(&routes[0], 0, &w).unwrap();
        assert_eq!(rules[0]["backendRefs"][0]["weight"], 75);
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 25);
        assert_eq!(rules[0]["backendRefs"][1]["port"], 8080);
        assert_eq!(rules[0]["matches"][0]["path"]["value"], "/api/orders");
        let bad: BTreeMap<String, u32> = [("ghost".into(), 1)].into();
        assert!(
            rules_with_weights(&routes[0], 0, &bad)
                .unwrap_err()
                .contains("ghost")
        );
        assert!(rules_with_weights(&routes[0], 3, &w).is_err());
    }

    #[test]
    fn a_malformed_spec_is_an_error_not_a_panic() {
        let mut routes: Vec<DynamicObject> = fixtures::items("httproutes.json");
        routes[0].data["spec"]["rules"] = Value::from("nope");
        assert!(parse(&routes[0]).unwrap_err().contains("orders"));
    }
}
