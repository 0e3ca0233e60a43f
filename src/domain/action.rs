//! What an operator can do to an environment, and what came of it. Pure data: the TUI,
//! `ctl` and walkthroughs build these; `control` checks, applies and records them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A flag's on/off switch, as flagd spells it. A disabled flag resolves to the caller's
/// default with reason `DISABLED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FlagState {
    Enabled,
    Disabled,
}

impl FlagState {
    /// The spelling in flag files: `ENABLED` or `DISABLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagState::Enabled => "ENABLED",
            FlagState::Disabled => "DISABLED",
        }
    }
}

impl fmt::Display for FlagState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FlagState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ENABLED" => Ok(FlagState::Enabled),
            "DISABLED" => Ok(FlagState::Disabled),
            other => Err(format!(
                "state must be \"ENABLED\" or \"DISABLED\", found \"{other}\""
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Replace a route's weights.
    SetSplit {
        route: String,
        weights: BTreeMap<String, u32>,
    },
    /// Send `percent` of a route's traffic to its canary, the rest to stable.
    SetCanary { route: String, percent: u32 },
    /// Send 100% to `to`, or to the other upstream of a two-way route.
    Flip { route: String, to: Option<String> },
    SetFlag {
        key: String,
        state: Option<FlagState>,
        variant: Option<String>,
    },
    /// Apply an earlier revision again; `None` is the one before the current.
    Rollback { to: Option<u64> },
    /// Re-apply the revision the last rollback rolled back from.
    Rollforward,
    /// Sandbox only: give the service behind `upstream` (`service-version`) these faults;
    /// all-zero clears them.
    SetFault { upstream: String, faults: FaultSpec },
    /// Kubernetes: restore a Deployment's previous pod template (`kubectl rollout undo`).
    RolloutUndo { deployment: String },
    /// Kubernetes: replace every pod of a Deployment (the restartedAt annotation).
    Restart { deployment: String },
}

/// Faults for one sandbox service version (percent rather than a ratio keeps `Action` `Eq`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Share of requests answered 500, 0 to 100.
    #[serde(default)]
    pub error_percent: u32,
    /// Added to every answer.
    #[serde(default)]
    pub latency_ms: u64,
    /// The port refuses connections.
    #[serde(default)]
    pub down: bool,
}

impl FaultSpec {
    pub fn is_clear(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.error_percent > 0 {
            parts.push(format!("{}% 5xx", self.error_percent));
        }
        if self.latency_ms > 0 {
            parts.push(format!("+{}ms latency", self.latency_ms));
        }
        if self.down {
            parts.push("down".to_string());
        }
        if parts.is_empty() {
            write!(f, "no faults")
        } else {
            write!(f, "{}", parts.join(", "))
        }
    }
}

impl Action {
    pub fn is_rollback(&self) -> bool {
        matches!(self, Action::Rollback { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SetSplit { route, weights } => {
                write!(f, "set {route} weights to {}", weights_text(weights))
            }
            Action::SetCanary { route, percent } => write!(f, "set {route} canary to {percent}%"),
            Action::Flip {
                route,
                to: Some(to),
            } => write!(f, "flip {route} to {to}"),
            Action::Flip { route, to: None } => write!(f, "flip {route} to the other side"),
            Action::SetFlag {
                key,
                state,
                variant,
            } => {
                write!(f, "set flag {key}")?;
                if let Some(s) = state {
                    write!(
                        f,
                        " {}",
                        if *s == FlagState::Enabled {
                            "on"
                        } else {
                            "off"
                        }
                    )?;
                }
                if let Some(v) = variant {
                    write!(f, " default variant {v}")?;
                }
                Ok(())
            }
            Action::Rollback { to: Some(n) } => write!(f, "roll back to revision {n}"),
            Action::Rollback { to: None } => write!(f, "roll back to the previous revision"),
            Action::Rollforward => write!(f, "roll forward"),
            Action::SetFault { upstream, faults } if faults.is_clear() => {
                write!(f, "clear faults of {upstream}")
            }
            Action::SetFault { upstream, faults } => write!(f, "inject {faults} into {upstream}"),
            Action::RolloutUndo { deployment } => {
                write!(f, "undo the last rollout of {deployment}")
            }
            Action::Restart { deployment } => write!(f, "restart {deployment}"),
        }
    }
}

/// `blue 100 / green 0`
pub fn weights_text(w: &BTreeMap<String, u32>) -> String {
    w.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// One preflight check and how it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: true,
            detail: detail.into(),
        }
    }
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: false,
            detail: detail.into(),
        }
    }
}

/// How a change ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    /// Stopped by a failed preflight check or a policy (read-only, freeze, confirmation).
    Refused,
    /// The operator said no.
    Cancelled,
    /// Someone else changed the environment first.
    Conflict,
    /// Applied, but the read-back did not show the change.
    Unverified,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_as_sentences_and_roundtrip_as_json() {
        let a = Action::SetSplit {
            route: "users".into(),
            weights: [("blue".into(), 0), ("green".into(), 100)].into(),
        };
        assert_eq!(a.to_string(), "set users weights to blue 0 / green 100");
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["kind"], "set_split");
        assert_eq!(serde_json::from_value::<Action>(j).unwrap(), a);
        let f = Action::SetFlag {
            key: "new-ui".into(),
            state: Some(FlagState::Enabled),
            variant: None,
        };
        assert_eq!(f.to_string(), "set flag new-ui on");
    }
}
