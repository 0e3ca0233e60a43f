//! The gateway's config from a ConfigMap, for running in a cluster: every key of the
//! ConfigMap is written as a file into a local directory (the config YAML and the flagd file
//! it names sit side by side, as a mounted ConfigMap would), and each change to the
//! ConfigMap reloads the gateway from there. A config that does not validate is rejected
//! and logged, and the running config stays; several replicas watching the same ConfigMap
//! converge on the same config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::gateway::state::GatewayState;

/// `NAMESPACE/NAME`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ConfigMapRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected NAMESPACE/NAME"))?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 253
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if !ok(ns) || !ok(name) {
            return Err(format!(
                "{s:?}: namespace and name must be lowercase DNS names (a-z, 0-9, '-', '.')"
            ));
        }
        Ok(Self {
            namespace: ns.into(),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configmap {}/{}", self.namespace, self.name)
    }
}

/// A ConfigMap key is a file name: `[-._a-zA-Z0-9]+`, and not `.` or `..`.
fn safe_key(k: &str) -> bool {
    !k.is_empty()
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// Writes the ConfigMap's data into `dir` (each file replaced atomically by rename).
/// Returns true when any file changed.
pub fn write_files(data: &BTreeMap<String, String>, dir: &Path) -> Result<bool, String> {
    let mut changed = false;
    for (k, v) in data {
        if !safe_key(k) {
            return Err(format!("configmap key {k:?} is not a plain file name"));
        }
        let path = dir.join(k);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == *v) {
            continue;
        }
        let tmp = dir.join(format!(".{k}.tmp"));
        std::fs::write(&tmp, v).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        changed = true;
    }
    Ok(changed)
}

/// Reads the ConfigMap once and writes its files; the path of the config file.
pub async fn fetch(
    client: &Client,
    cm: &ConfigMapRef,
    config_key: &str,
    dir: &Path,
) -> Result<PathBuf, String> {
    let obj = Api::<ConfigMap>::namespaced(client.clone(), &cm.namespace)
        .get(&cm.name)
        .await
        .map_err(|e| format!("{cm}: {e}"))?;
    let data = obj.data.unwrap_or_default();
    if !data.contains_key(config_key) {
        return Err(format!("{cm} has no key {config_key:?}"));
    }
    write_files(&data, dir)?;
    Ok(dir.join(config_key))
}

/// Follows the ConfigMap until shutdown, reloading the gateway whenever its files change.
pub async fn follow(
    client: Client,
    cm: ConfigMapRef,
    dir: PathBuf,
    state: Arc<GatewayState>,
    shutdown: CancellationToken,
) {
    let api = Api::<ConfigMap>::namespaced(client, &cm.namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", cm.name));
    let stream = watcher(api, cfg).default_backoff().applied_objects();
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = shutdown.cancelled() => return,
        };
        match next {
            None => {
                tracing::error!(%cm, "the configmap watch ended; the running config stays");
                return;
            }
            Some(Err(e)) => {
                tracing::warn!(%cm, error = %e, "configmap watch failing; retrying with backoff")
            }
            Some(Ok(obj)) => {
                let data = obj.data.unwrap_or_default();
                match write_files(&data, &dir) {
                    Ok(false) => {}
                    Ok(true) => {
                        super::super::gateway::watch::reload(&state, &format!("{cm} changed"))
                    }
                    Err(e) => {
                        tracing::error!(%cm, error = %e, "config rejected; the running config is unchanged")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_files() {
        let r: ConfigMapRef = "ops/gateway-config".parse().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("ops", "gateway-config")
        );
        assert!("gateway-config".parse::<ConfigMapRef>().is_err());
        assert!("ops/Gateway".parse::<ConfigMapRef>().is_err());

        let dir = tempfile::tempdir().unwrap();
        let data: BTreeMap<String, String> = [
            ("config.yaml".into(), "a: 1\n".into()),
            ("flags.json".into(), "{}".into()),
        ]
        .into();
        assert!(write_files(&data, dir.path()).unwrap());
        assert!(!write_files(&data, dir.path()).unwrap(), "nothing changed");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.yaml")).unwrap(),
            "a: 1\n"
        );
        let evil: BTreeMap<String, String> = [("../x".into(), "".into())].into();
        assert!(write_files(&evil, dir.path()).is_err());
    }
}
