//! What a gateway reports about itself (`GET /admin/state`, `GET /admin/revisions`), as
//! plain data shared by the gateway (which serves it) and the cockpit (which reads it).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::action::FlagState;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayStatus {
    pub revision: u64,
    pub config_hash: String,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
    pub flags: Vec<FlagStatus>,
}

impl GatewayStatus {
    pub fn route(&self, name: &str) -> Option<&RouteStatus> {
        self.routes.iter().find(|r| r.name == name)
    }
    pub fn upstream(&self, name: &str) -> Option<&UpstreamStatus> {
        self.upstreams.iter().find(|u| u.name == name)
    }
    pub fn flag(&self, key: &str) -> Option<&FlagStatus> {
        self.flags.iter().find(|f| f.key == key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteStatus {
    pub name: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub exact_paths: Vec<String>,
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Upstream → weight.
    pub split: BTreeMap<String, u32>,
    pub canary_by_header: Option<HeaderCanaryStatus>,
    /// The upstream `ctl canary` moves traffic to, when the route has one.
    pub canary: Option<String>,
    pub sticky: Option<String>,
    /// Plugin names in the order they run.
    pub filters: Vec<String>,
    /// The flag that gates this route, if any.
    pub flag: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeaderCanaryStatus {
    pub name: String,
    pub value: String,
    pub upstream: String,
}

impl RouteStatus {
    pub fn total_weight(&self) -> u64 {
        self.split.values().map(|w| u64::from(*w)).sum()
    }

    /// Percent of split traffic an upstream gets, rounded.
    pub fn percent(&self, upstream: &str) -> u32 {
        let total = self.total_weight();
        if total == 0 {
            return 0;
        }
        let w = u64::from(self.split.get(upstream).copied().unwrap_or(0));
        ((w * 100 + total / 2) / total) as u32
    }

    /// The upstream with the most weight (first by name on a tie).
    pub fn live(&self) -> Option<&str> {
        self.split
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(k, _)| k.as_str())
    }

    /// (stable, canary) for a route that has a canary side.
    pub fn canary_pair(&self) -> Option<(&str, &str)> {
        let canary = self.canary.as_deref()?;
        let stable = self.split.keys().find(|k| k.as_str() != canary)?;
        Some((stable.as_str(), canary))
    }

    /// The (stable, canary) a canary step moves weight between: [`Self::canary_pair`], or for
    /// a route with one upstream and a header canary, that upstream and the header canary's
    /// (which the step then adds to the split).
    pub fn canary_step_sides(&self) -> Option<(&str, &str)> {
        if let Some(pair) = self.canary_pair() {
            return Some(pair);
        }
        let by_header = self.canary_by_header.as_ref()?.upstream.as_str();
        let mut ups = self.split.keys();
        match (ups.next(), ups.next()) {
            (Some(only), None) if only != by_header => Some((only.as_str(), by_header)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpstreamStatus {
    pub name: String,
    pub targets: Vec<TargetStatus>,
}

impl UpstreamStatus {
    pub fn healthy_targets(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| t.healthy && !t.ejected)
            .count()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TargetStatus {
    pub addr: String,
    /// Passing active health checks (true when there are none).
    pub healthy: bool,
    /// Sitting out after consecutive failures.
    pub ejected: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlagStatus {
    pub key: String,
    pub state: FlagState,
    pub default_variant: Option<String>,
    pub variants: Vec<String>,
    pub has_targeting: bool,
}

/// One entry of a gateway's revision history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionInfo {
    pub number: u64,
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
    pub actor: String,
    /// What made this revision, in words.
    pub description: String,
    pub change: Change,
    pub hash: String,
}

/// What produced a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The first config, from a file.
    Start {
        source: String,
    },
    /// The config file was read again (SIGHUP, file change, or reset).
    Reload {
        source: String,
    },
    /// A full config arrived through the admin API.
    ReplaceConfig,
    SetSplit {
        route: String,
        weights: BTreeMap<String, u32>,
    },
    SetFlag {
        key: String,
        state: Option<FlagState>,
        variant: Option<String>,
    },
    Rollback {
        to: u64,
        from: u64,
    },
    Rollforward {
        to: u64,
        from: u64,
    },
}

/// Where a flip sends all traffic: `to` when named, else the other side of a two-way split
/// (the side with less traffic now).
pub fn flip_target(split: &BTreeMap<String, u32>, to: Option<&str>) -> Result<String, String> {
    if let Some(to) = to {
        return if split.contains_key(to) {
            Ok(to.to_string())
        } else {
            Err(format!(
                "{to:?} is not in this route's split ({})",
                split.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        };
    }
    match split.len() {
        2 => {}
        1 => {
            return Err(format!(
                "this route has one upstream ({}): there is no other side to flip to",
                split.keys().next().map_or("", String::as_str)
            ));
        }
        n => {
            return Err(format!(
                "this route splits over {n} upstreams; name the one to flip to"
            ));
        }
    }
    let sides: Vec<(&String, &u32)> = split.iter().collect();
    let (x, y) = (sides[0], sides[1]);
    Ok(if x.1 <= y.1 { x.0.clone() } else { y.0.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_picks_the_quiet_side_or_the_named_one() {
        let s: BTreeMap<String, u32> = [("blue".into(), 100), ("green".into(), 0)].into();
        assert_eq!(flip_target(&s, None).unwrap(), "green");
        let s: BTreeMap<String, u32> = [("blue".into(), 0), ("green".into(), 100)].into();
        assert_eq!(flip_target(&s, None).unwrap(), "blue");
        assert_eq!(flip_target(&s, Some("green")).unwrap(), "green");
        assert!(flip_target(&s, Some("red")).is_err());
        let three: BTreeMap<String, u32> =
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)].into();
        assert!(flip_target(&three, None).is_err());
        let one: BTreeMap<String, u32> = [("v1".into(), 100)].into();
        assert_eq!(
            flip_target(&one, None).unwrap_err(),
            "this route has one upstream (v1): there is no other side to flip to"
        );
    }

    fn route(split: &[(&str, u32)], canary: Option<&str>) -> RouteStatus {
        RouteStatus {
            name: "r".into(),
            paths: vec![],
            exact_paths: vec![],
            methods: vec![],
            hosts: vec![],
            split: split.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            canary_by_header: None,
            canary: canary.map(String::from),
            sticky: None,
            filters: vec![],
            flag: None,
        }
    }

    #[test]
    fn live_side_and_percent() {
        let r = route(&[("blue", 100), ("green", 0)], None);
        assert_eq!(r.live(), Some("blue"));
        assert_eq!(r.percent("green"), 0);
        let r = route(&[("v1", 3), ("v2", 1)], Some("v2"));
        assert_eq!(r.percent("v2"), 25);
        assert_eq!(r.canary_pair(), Some(("v1", "v2")));
    }

    #[test]
    fn a_header_canary_is_what_a_canary_step_moves_weight_to() {
        let header = |up: &str| HeaderCanaryStatus {
            name: "X-Canary".into(),
            value: "true".into(),
            upstream: up.into(),
        };
        let mut r = route(&[("v1", 100)], None);
        assert_eq!(r.canary_step_sides(), None);
        r.canary_by_header = Some(header("v2"));
        assert_eq!(r.canary_step_sides(), Some(("v1", "v2")));
        // Two live upstreams besides: which one gives way is not clear, so there is none.
        let mut r = route(&[("blue", 100), ("green", 0)], None);
        r.canary_by_header = Some(header("v2"));
        assert_eq!(r.canary_step_sides(), None);
        // A declared canary wins.
        let mut r = route(&[("v1", 90), ("v2", 10)], Some("v2"));
        r.canary_by_header = Some(header("v3"));
        assert_eq!(r.canary_step_sides(), Some(("v1", "v2")));
    }
}
