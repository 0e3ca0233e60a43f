//! The Secrets a Deployment uses (env, envFrom, volumes, projected volumes): names, key names
//! and age. Values are dropped as soon as a Secret is read; nothing here keeps one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};

use crate::domain::kube::{DeploymentView, SecretUse, SecretView};

/// Every Secret (and key) a pod template refers to, sorted and without duplicates.
pub fn references(t: &PodTemplateSpec) -> Vec<SecretUse> {
    let mut out = BTreeSet::new();
    let Some(spec) = &t.spec else {
        return Vec::new();
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                out.insert(SecretUse {
                    secret: r.name.clone(),
                    key: Some(r.key.clone()),
                    optional: r.optional.unwrap_or(false),
                });
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                out.insert(SecretUse {
                    secret: r.name.clone(),
                    key: None,
                    optional: r.optional.unwrap_or(false),
                });
            }
        }
    }
    let mut add_volume = |name: &str,
                          items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
                          optional: Option<bool>| {
        let optional = optional.unwrap_or(false);
        match items {
            Some(items) if !items.is_empty() => {
                for i in items {
                    out.insert(SecretUse {
                        secret: name.to_string(),
                        key: Some(i.key.clone()),
                        optional,
                    });
                }
            }
            _ => {
                out.insert(SecretUse {
                    secret: name.to_string(),
                    key: None,
                    optional,
                });
            }
        }
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = &v.secret
            && let Some(name) = &s.secret_name
        {
            add_volume(name, s.items.as_ref(), s.optional);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &p.secret {
                add_volume(&s.name, s.items.as_ref(), s.optional);
            }
        }
    }
    out.into_iter().collect()
}

/// Key names and creation time of a Secret. Its values are not looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    pub keys: Vec<String>,
    pub created: Option<DateTime<Utc>>,
}

pub fn meta(s: &Secret) -> SecretMeta {
    let mut keys: BTreeSet<String> = s.data.iter().flat_map(|d| d.keys().cloned()).collect();
    keys.extend(s.string_data.iter().flat_map(|d| d.keys().cloned()));
    SecretMeta {
        name: s.metadata.name.clone().unwrap_or_default(),
        keys: keys.into_iter().collect(),
        created: s
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| super::to_chrono(&t.0)),
    }
}

/// One entry per Secret the Deployments reference, with the keys they need that it lacks
/// (a missing Secret lacks every required key).
pub fn views(deployments: &[DeploymentView], secrets: &[SecretMeta]) -> Vec<SecretView> {
    let by_name: BTreeMap<&str, &SecretMeta> =
        secrets.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: BTreeMap<String, SecretView> = BTreeMap::new();
    for d in deployments {
        for r in &d.secret_refs {
            let found = by_name.get(r.secret.as_str());
            let v = out.entry(r.secret.clone()).or_insert_with(|| SecretView {
                name: r.secret.clone(),
                exists: found.is_some(),
                keys: found.map(|s| s.keys.clone()).unwrap_or_default(),
                created: found.and_then(|s| s.created),
                used_by: Vec::new(),
                missing_keys: Vec::new(),
            });
            if !v.used_by.contains(&d.name) {
                v.used_by.push(d.name.clone());
            }
            if r.optional {
                continue;
            }
            let missing = match &r.key {
                Some(k) if !v.keys.contains(k) => Some(k.clone()),
                None if !v.exists => Some("(whole secret)".to_string()),
                _ => None,
            };
            if let Some(k) = missing
                && !v.missing_keys.contains(&k)
            {
                v.missing_keys.push(k);
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures;
    use k8s_openapi::api::apps::v1::Deployment;

    #[test]
    fn finds_every_reference_and_flags_missing_keys_without_reading_values() {
        let deps: Vec<Deployment> = fixtures::items("deployments.json");
        let views_: Vec<DeploymentView> = deps
            .iter()
            .map(|d| crate::k8s::deployment::parse(d, "version"))
            .collect();
        let refs = &views_[0].secret_refs;
        assert!(refs.contains(&SecretUse {
            secret: "users-db".into(),
            key: Some("password".into()),
            optional: false
        }));
        assert!(refs.contains(&SecretUse {
            secret: "users-api-keys".into(),
            key: None,
            optional: false
        }));
        assert!(refs.contains(&SecretUse {
            secret: "users-tls".into(),
            key: Some("tls.crt".into()),
            optional: false
        }));

        let secrets: Vec<Secret> = fixtures::items("secrets.json");
        let metas: Vec<SecretMeta> = secrets.iter().map(meta).collect();
        let db = metas.iter().find(|m| m.name == "users-db").unwrap();
        assert_eq!(db.keys, ["password", "username"]);
        assert!(db.created.is_some());
        let v = views(&views_, &metas);
        let db = v.iter().find(|s| s.name == "users-db").unwrap();
        assert!(db.missing_keys.is_empty());
        let tls = v.iter().find(|s| s.name == "users-tls").unwrap();
        assert_eq!(
            tls.missing_keys,
            ["tls.crt"],
            "the fixture's TLS secret lacks tls.crt"
        );
        let gone = v.iter().find(|s| s.name == "users-api-keys").unwrap();
        assert!(!gone.exists);
        assert_eq!(gone.missing_keys, ["(whole secret)"]);
        // No value from the fixtures appears anywhere in what we keep.
        let dump = format!("{v:?}{metas:?}");
        assert!(
            !dump.contains("czNjcjN0") && !dump.contains("s3cr3t"),
            "{dump}"
        );
    }
}
