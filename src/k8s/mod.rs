//! The Kubernetes backend: an environment is a kube context and a namespace. Deployments,
//! Services (blue-green by selector), Gateway API HTTPRoutes (canary weights), a flags
//! ConfigMap and the Secrets the Deployments use are read through kube-rs (one file per kind
//! parses objects into `domain::kube`), and changed with patches that carry the
//! resourceVersion they were based on.

pub mod client;
pub mod config_source;
pub mod deployment;
pub mod flags;
pub mod httproute;
pub mod plan;
pub mod secret;
pub mod service;
pub mod watch;

use serde::{Deserialize, Serialize};

pub use client::KubeBackend;
pub use plan::KubeChange;

/// Per-environment Kubernetes settings (`[environments.kube]` in signalbox.toml).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSettings {
    /// Label selector for the Deployments, Services and HTTPRoutes that belong to the app.
    #[serde(default = "default_selector")]
    pub selector: String,
    /// The pod label that tells blue from green (or one version from another).
    #[serde(default = "default_track_label")]
    pub track_label: String,
    /// The ConfigMap holding the flagd JSON file.
    #[serde(default = "default_flags_config_map")]
    pub flags_config_map: String,
    /// The key in that ConfigMap; default: its only `*.json` key.
    #[serde(default)]
    pub flags_key: Option<String>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            selector: default_selector(),
            track_label: default_track_label(),
            flags_config_map: default_flags_config_map(),
            flags_key: None,
        }
    }
}

fn default_selector() -> String {
    "app.kubernetes.io/part-of".into()
}
fn default_track_label() -> String {
    "version".into()
}
fn default_flags_config_map() -> String {
    "signalbox-flags".into()
}

pub(crate) fn to_chrono(t: &k8s_openapi::jiff::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).ok()?)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use serde::de::DeserializeOwned;

    /// The `items` of a list fixture, in the shape a real API server returns.
    pub fn items<T: DeserializeOwned>(file: &str) -> Vec<T> {
        let path = format!("{}/tests/fixtures/k8s/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_value(v["items"].clone()).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}
