//! The cockpit's environments file (`signalbox.toml`, else
//! `$XDG_CONFIG_HOME/signalbox/config.toml`): which environments exist, how to reach
//! them, and the safeguards each one has.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CockpitConfig {
    /// Who changes are recorded as; default `$USER@hostname`.
    #[serde(default)]
    pub actor: Option<String>,
    /// The audit journal (JSON Lines); default `$XDG_STATE_HOME/signalbox/audit.jsonl`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Colour theme for the TUI.
    #[serde(default)]
    pub theme: Option<String>,
    /// Key overrides by action name, e.g. `flip = "b"` or `quit = ["q", "ctrl-c"]`.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, KeySpec>,
    /// Present when the environments are a running `signalbox sandbox`.
    #[serde(default)]
    pub sandbox: Option<SandboxRef>,
    pub environments: Vec<EnvDef>,
}

/// A `[keys]` entry: one key or a list of keys (parsed by the cockpit's keymap).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum KeySpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRef {
    /// The sandbox control API (fault injection).
    pub control_url: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvDef {
    pub name: String,
    /// What the environment is: a signalbox gateway (default) or a Kubernetes namespace.
    #[serde(default)]
    pub kind: EnvKind,
    /// The gateway admin API, e.g. `http://127.0.0.1:9080` (gateway environments).
    #[serde(default)]
    pub admin_url: String,
    /// Where clients reach the gateway, e.g. `https://api.stage.example.com`; runbook
    /// smoke tests send their requests here.
    #[serde(default)]
    pub gateway_url: Option<String>,
    /// Kubernetes: the kubeconfig context (default: the current one).
    #[serde(default)]
    pub context: Option<String>,
    /// Kubernetes: the namespace (required for `kind = "kubernetes"`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubernetes: the kubeconfig file (default: `$KUBECONFIG`, `~/.kube/config`, then
    /// in-cluster).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The environment a release is promoted from: a blue-green flip here must run the
    /// image that environment runs.
    #[serde(default)]
    pub promote_from: Option<String>,
    /// Kubernetes: labels and names (`[environments.kube]`).
    #[serde(default)]
    pub kube: crate::k8s::KubeSettings,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub confirm: ConfirmPolicy,
    #[serde(default)]
    pub read_only: bool,
    /// Largest canary weight change in one step, in percentage points.
    #[serde(default)]
    pub max_canary_step: Option<u32>,
    /// The canary step `+`/`-` moves by in the TUI.
    #[serde(default = "default_step")]
    pub canary_step: u32,
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// Where the live panels come from; default: scrape the gateway's `/metrics` next to
    /// `admin_url`.
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsSourceConfig>,
}

/// What kind of backend an environment has.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EnvKind {
    #[default]
    Gateway,
    Kubernetes,
}

impl EnvDef {
    /// Where the environment is, for headers and messages.
    pub fn address(&self) -> String {
        match self.kind {
            EnvKind::Gateway => self.admin_url.clone(),
            EnvKind::Kubernetes => format!(
                "kube://{}/{}",
                self.context.as_deref().unwrap_or("(current context)"),
                self.namespace.as_deref().unwrap_or("?")
            ),
        }
    }

    /// The configured metrics source, or a scrape of the gateway's own `/metrics`.
    pub fn metrics_source(&self) -> crate::metrics::MetricsSourceConfig {
        self.metrics.clone().unwrap_or_else(|| {
            crate::metrics::MetricsSourceConfig::Scrape(crate::metrics::ScrapeConfig::new(format!(
                "{}/metrics",
                self.admin_url.trim_end_matches('/')
            )))
        })
    }
}

fn default_step() -> u32 {
    5
}

/// What an operator must do before a change goes through.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmPolicy {
    /// No question asked.
    None,
    /// A yes/no question.
    #[default]
    Yes,
    /// The operator types the environment's name.
    TypeName,
}

/// A time when changes are refused unless forced with a reason. Either an absolute range
/// (`from`/`to`, RFC 3339) or a weekly one (`days` with optional `start`/`end`, UTC).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// e.g. `["fri", "sat", "sun"]`.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM` UTC; default the whole day.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    pub reason: String,
}

impl FreezeWindow {
    pub fn covers(&self, now: DateTime<Utc>) -> bool {
        if self.from.is_some() || self.to.is_some() {
            return self.from.is_none_or(|f| now >= f) && self.to.is_none_or(|t| now < t);
        }
        if self.days.is_empty() {
            return false;
        }
        let day_ok = self
            .days
            .iter()
            .any(|d| d.parse::<Weekday>().is_ok_and(|w| w == now.weekday()));
        let t = now.time();
        let start = self
            .start
            .as_deref()
            .and_then(|s| NaiveTime::parse_from_str(s, "%H:%M").ok())
            .unwrap_or(NaiveTime::MIN);
        let end = self
            .end
            .as_deref()
            .and_then(|s| NaiveTime::parse_from_str(s, "%H:%M").ok());
        day_ok && t >= start && end.is_none_or(|e| t < e)
    }
}

impl CockpitConfig {
    pub fn env(&self, name: &str) -> Option<&EnvDef> {
        self.environments.iter().find(|e| e.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        if self.environments.is_empty() {
            return Err("no [[environments]] defined".into());
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.environments {
            if !seen.insert(&e.name) {
                return Err(format!("environment {:?} is defined twice", e.name));
            }
            if let Some(g) = &e.gateway_url
                && !(g.starts_with("http://") || g.starts_with("https://"))
            {
                return Err(format!(
                    "environment {:?}: gateway_url must start with http:// or https://",
                    e.name
                ));
            }
            match e.kind {
                EnvKind::Gateway => {
                    if !(e.admin_url.starts_with("http://") || e.admin_url.starts_with("https://"))
                    {
                        return Err(format!(
                            "environment {:?}: admin_url must start with http:// or https://",
                            e.name
                        ));
                    }
                }
                EnvKind::Kubernetes => {
                    if e.namespace.as_deref().is_none_or(str::is_empty) {
                        return Err(format!(
                            "environment {:?}: kind = \"kubernetes\" needs namespace = \"...\"",
                            e.name
                        ));
                    }
                }
            }
            if let Some(src) = &e.promote_from
                && (src == &e.name || !self.environments.iter().any(|x| &x.name == src))
            {
                return Err(format!(
                    "environment {:?}: promote_from = {src:?} is not another environment in this file",
                    e.name
                ));
            }
            for (i, f) in e.freeze.iter().enumerate() {
                for t in [&f.start, &f.end].into_iter().flatten() {
                    if NaiveTime::parse_from_str(t, "%H:%M").is_err() {
                        return Err(format!(
                            "environment {:?}: freeze[{i}]: {t:?} is not HH:MM",
                            e.name
                        ));
                    }
                }
                for d in &f.days {
                    if d.parse::<Weekday>().is_err() {
                        return Err(format!(
                            "environment {:?}: freeze[{i}]: {d:?} is not a weekday",
                            e.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `--config`, else `./signalbox.toml`, else `$XDG_CONFIG_HOME/signalbox/config.toml`, else
/// the environments file of a `signalbox sandbox` running its cockpit ([`sandbox_link`]).
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let local = PathBuf::from("signalbox.toml");
    if local.exists() {
        return Some(local);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("signalbox").join("config.toml");
    if p.exists() {
        return Some(p);
    }
    // `exists` follows the link: one left by a sandbox that was killed points nowhere.
    sandbox_link().filter(|l| l.exists())
}

/// Where a sandbox running its cockpit links its environments file, so that `ctl`, `walk`
/// and `sandbox fault` in another terminal find it while the cockpit covers the screen:
/// `$XDG_RUNTIME_DIR/signalbox/sandbox.toml`, else `~/.local/state/signalbox/sandbox.toml`.
pub fn sandbox_link() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(dir.join("signalbox").join("sandbox.toml"))
}

/// The link from [`sandbox_link`] to a running sandbox's environments file; removed on drop
/// unless another sandbox has taken it over since.
pub struct SandboxLink {
    link: PathBuf,
    target: PathBuf,
}

impl SandboxLink {
    pub fn create(target: &Path) -> std::io::Result<Self> {
        let link = sandbox_link().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither XDG_RUNTIME_DIR nor HOME is set",
            )
        })?;
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let target = std::path::absolute(target)?;
        // The newest sandbox wins: a link left by one that was killed is replaced.
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)?;
        Ok(Self { link, target })
    }
}

impl Drop for SandboxLink {
    fn drop(&mut self) {
        if std::fs::read_link(&self.link).is_ok_and(|t| t == self.target) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

pub fn load(path: &Path) -> Result<CockpitConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // FILE:LINE:COL: field.path: message, as for the gateway's config.
    let located = |e: &toml::de::Error, field: Option<String>| {
        let (line, col) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                (
                    before.matches('\n').count() + 1,
                    s.start - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                )
            })
            .unwrap_or((1, 1));
        let field = field
            .filter(|f| f != ".")
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        format!(
            "{}:{line}:{col}: {field}{}",
            path.display(),
            e.message().trim_end()
        )
    };
    let de = toml::Deserializer::parse(&text).map_err(|e| located(&e, None))?;
    let cfg: CockpitConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        located(e.inner(), Some(field))
    })?;
    cfg.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

/// The default actor: `$USER@hostname`.
pub fn default_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

pub fn default_audit_log() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("signalbox")
        .join("audit.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_example_and_reports_positions() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/signalbox.toml"
        ))
        .unwrap();
        let cfg: CockpitConfig = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        let prod = cfg.env("prod").unwrap();
        assert_eq!(prod.confirm, ConfirmPolicy::TypeName);
        assert_eq!(prod.max_canary_step, Some(25));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(
            &p,
            "[[environments]]\nname = \"x\"\nadmin_url = \"http://a\"\nconfirm = \"maybe\"\n",
        )
        .unwrap();
        let e = load(&p).unwrap_err();
        assert!(
            e.contains("bad.toml:4:11: environments[0].confirm: unknown variant `maybe`"),
            "{e}"
        );
    }

    #[test]
    fn kubernetes_environments() {
        let text = r#"
[[environments]]
name = "stage"
kind = "kubernetes"
context = "stage-eu"
namespace = "shop"

[[environments]]
name = "prod"
kind = "kubernetes"
namespace = "shop"
promote_from = "stage"
[environments.kube]
track_label = "track"
flags_config_map = "flags"
"#;
        let cfg: CockpitConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let prod = cfg.env("prod").unwrap();
        assert_eq!(prod.kind, EnvKind::Kubernetes);
        assert_eq!(prod.kube.track_label, "track");
        assert_eq!(prod.kube.selector, "app.kubernetes.io/part-of");
        assert_eq!(cfg.env("stage").unwrap().address(), "kube://stage-eu/shop");

        let no_ns: CockpitConfig =
            toml::from_str("[[environments]]\nname = \"x\"\nkind = \"kubernetes\"\n").unwrap();
        assert!(no_ns.validate().unwrap_err().contains("namespace"));
        let bad_src: CockpitConfig = toml::from_str(
            "[[environments]]\nname = \"x\"\nkind = \"kubernetes\"\nnamespace = \"a\"\npromote_from = \"qa\"\n",
        )
        .unwrap();
        assert!(bad_src.validate().unwrap_err().contains("qa"));
    }

    #[test]
    fn freeze_windows() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let abs = FreezeWindow {
            from: Some(at("2026-12-24T00:00:00Z")),
            to: Some(at("2026-12-27T00:00:00Z")),
            days: vec![],
            start: None,
            end: None,
            reason: "holidays".into(),
        };
        assert!(abs.covers(at("2026-12-25T12:00:00Z")));
        assert!(!abs.covers(at("2026-12-27T00:00:00Z")));
        let weekly = FreezeWindow {
            from: None,
            to: None,
            days: vec!["fri".into()],
            start: Some("16:00".into()),
            end: None,
            reason: "no Friday deploys".into(),
        };
        assert!(
            weekly.covers(at("2026-11-20T17:00:00Z")),
            "a Friday evening"
        );
        assert!(!weekly.covers(at("2026-11-20T15:00:00Z")));
        assert!(!weekly.covers(at("2026-11-21T17:00:00Z")), "a Saturday");
    }
}
