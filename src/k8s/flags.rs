//! Feature flags kept in a ConfigMap as a flagd JSON file.

use k8s_openapi::api::core::v1::ConfigMap;

use crate::domain::FlagState;
use crate::domain::kube::FlagsView;
use crate::flags::FlagStore;

/// The flag file in the ConfigMap: `key` when it is set, else the only `*.json` entry.
pub fn file<'a>(cm: &'a ConfigMap, key: Option<&str>) -> Result<(String, &'a str), String> {
    let name = cm.metadata.name.as_deref().unwrap_or("?");
    let data = cm.data.as_ref();
    match key {
        Some(k) => data
            .and_then(|d| d.get(k))
            .map(|v| (k.to_string(), v.as_str()))
            .ok_or_else(|| format!("configmap {name:?} has no key {k:?}")),
        None => {
            let json: Vec<_> = data
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.ends_with(".json"))
                .collect();
            match json.as_slice() {
                [(k, v)] => Ok(((*k).clone(), v.as_str())),
                [] => Err(format!("configmap {name:?} holds no *.json flag file")),
                _ => Err(format!(
                    "configmap {name:?} holds several *.json files; set flags_key to pick one"
                )),
            }
        }
    }
}

pub fn parse(cm: &ConfigMap, key: Option<&str>) -> FlagsView {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let rv = cm.metadata.resource_version.clone().unwrap_or_default();
    match file(cm, key) {
        Ok((k, text)) => FlagsView {
            config_map: name,
            key: k,
            resource_version: rv,
            flags: FlagStore::from_json(text)
                .map(|s| s.statuses())
                .map_err(|e| e.to_string()),
        },
        Err(e) => FlagsView {
            config_map: name,
            key: key.unwrap_or_default().to_string(),
            resource_version: rv,
            flags: Err(e),
        },
    }
}

/// The flag file with one flag changed; it must parse before and after.
pub fn edit(
    text: &str,
    key: &str,
    state: Option<FlagState>,
    variant: Option<&str>,
) -> Result<String, String> {
    let mut store = FlagStore::from_json(text).map_err(|e| e.to_string())?;
    if let Some(s) = state {
        store = store.with_state(key, s).map_err(|e| e.to_string())?;
    }
    if let Some(v) = variant {
        store = store
            .with_default_variant(key, v)
            .map_err(|e| e.to_string())?;
    }
    Ok(store.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures;

    #[test]
    fn reads_the_flag_file_and_edits_one_flag() {
        let cms: Vec<ConfigMap> = fixtures::items("configmaps.json");
        let flags = cms
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("signalbox-flags"))
            .unwrap();
        let v = parse(flags, None);
        assert_eq!(v.key, "flags.flagd.json");
        let list = v.flags.unwrap();
        let checkout = list.iter().find(|f| f.key == "new-checkout").unwrap();
        assert_eq!(checkout.state, FlagState::Disabled);
        let (_, text) = file(flags, None).unwrap();
        let after = edit(text, "new-checkout", Some(FlagState::Enabled), None).unwrap();
        let store = FlagStore::from_json(&after).unwrap();
        assert_eq!(
            store.summary("new-checkout").unwrap().state,
            FlagState::Enabled
        );
        assert!(edit(text, "ghost", Some(FlagState::Enabled), None).is_err());
        assert!(edit(text, "new-checkout", None, Some("purple")).is_err());
    }

    #[test]
    fn a_missing_key_or_bad_json_is_reported() {
        let cms: Vec<ConfigMap> = fixtures::items("configmaps.json");
        let flags = &cms[0];
        assert!(
            parse(flags, Some("nope.json"))
                .flags
                .unwrap_err()
                .contains("nope.json")
        );
        let mut broken = flags.clone();
        broken
            .data
            .as_mut()
            .unwrap()
            .insert("flags.flagd.json".into(), "{not json".into());
        assert!(parse(&broken, Some("flags.flagd.json")).flags.is_err());
    }
}
