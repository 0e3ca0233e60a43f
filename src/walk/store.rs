//! Where walkthroughs keep their progress: one JSON file per (runbook, environment) in the
//! state dir, replaced atomically and fsynced after every transition; a lock file so two
//! processes never drive the same walkthrough; finished runs and release notes beside it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::machine::{STATE_FORMAT, WalkState};

pub struct Store {
    dir: PathBuf,
}

/// An operator's decision for a walkthrough another process is driving (a headless run
/// waiting at a pause), handed over through a file beside the state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecisionRequest {
    /// The step (index) the decision is about; a stale one is ignored.
    pub step: usize,
    /// `continue`, `retry`, `skip` or `abort`.
    pub decision: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub actor: String,
}

/// Held while a process drives a walkthrough; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active state file for a runbook against its first environment.
    pub fn state_path(&self, runbook: &str, env: &str) -> PathBuf {
        self.dir
            .join(format!("{}--{}.json", slug(runbook), slug(env)))
    }

    fn decision_path(state: &Path) -> PathBuf {
        state.with_extension("decision.json")
    }

    /// Hands a decision to the process driving the walkthrough.
    pub fn send_decision(&self, state: &Path, d: &DecisionRequest) -> Result<(), String> {
        let path = Self::decision_path(state);
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec(d).map_err(|e| e.to_string())?)
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    pub fn has_decision(&self, state: &Path) -> bool {
        Self::decision_path(state).exists()
    }

    /// Takes (removes) a decision sent by another process, if there is one.
    pub fn take_decision(&self, state: &Path) -> Result<Option<DecisionRequest>, String> {
        let path = Self::decision_path(state);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let _ = std::fs::remove_file(&path);
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not a decision: {e}", path.display()))
    }

    /// Takes the walkthrough's lock; `None` when another process holds it.
    pub fn lock(&self, state: &Path) -> Result<Option<Lock>, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = state.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }

    pub fn load(&self, path: &Path) -> Result<Option<WalkState>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let state: WalkState = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a walkthrough state file: {e}", path.display()))?;
        if state.format != STATE_FORMAT {
            return Err(format!(
                "{}: state format {} is not {STATE_FORMAT}; finish it with the signalbox that started it",
                path.display(),
                state.format
            ));
        }
        Ok(Some(state))
    }

    /// Replaces the file atomically: write a temporary file, fsync it, rename it over the
    /// old one, fsync the directory. A crash leaves the old or the new state, never half.
    pub fn save(&self, path: &Path, state: &WalkState) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot save {}: {e}", path.display());
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Moves a finished run out of the way (so the runbook can run again) and returns
    /// where it went.
    pub fn archive(&self, path: &Path, state: &WalkState) -> Result<PathBuf, String> {
        let done = self.dir.join("done");
        std::fs::create_dir_all(&done)
            .map_err(|e| format!("cannot create {}: {e}", done.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "walk".into());
        let to = done.join(format!(
            "{stem}--{}.json",
            state.started_at.format("%Y%m%dT%H%M%SZ")
        ));
        self.save(&to, state)?;
        std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        Ok(to)
    }

    /// Writes the release note and returns its path.
    pub fn write_note(&self, state: &WalkState, env: &str, text: &str) -> Result<PathBuf, String> {
        let notes = self.dir.join("notes");
        std::fs::create_dir_all(&notes)
            .map_err(|e| format!("cannot create {}: {e}", notes.display()))?;
        let p = notes.join(format!(
            "{}--{}--{}.md",
            slug(&state.runbook),
            slug(env),
            state.started_at.format("%Y%m%dT%H%M%SZ")
        ));
        let mut f = File::create(&p).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok(p)
    }
}

/// File-name-safe: lower-case letters, digits and dashes.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-').to_string();
    if t.is_empty() { "walk".into() } else { t }
}

/// The default state dir: beside the audit journal, in `walks/`.
pub fn default_dir(audit_log: &Path) -> PathBuf {
    audit_log
        .parent()
        .map(|p| p.join("walks"))
        .unwrap_or_else(|| PathBuf::from("walks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::runbook::parse_str;

    #[test]
    fn saves_atomically_locks_and_archives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("walks"));
        let rb = parse_str(
            "name: Users 1.5 / blue-green\nenv: prod\nroute: users\nsteps:\n  - wait: 1s\n",
            "r.yaml",
        )
        .unwrap();
        let p = store.state_path(&rb.name, "prod");
        assert!(p.ends_with("users-1-5-blue-green--prod.json"), "{p:?}");
        assert_eq!(store.load(&p).unwrap(), None);
        let lock = store.lock(&p).unwrap().expect("free");
        assert!(store.lock(&p).unwrap().is_none(), "held");
        let d = DecisionRequest {
            step: 2,
            decision: "abort".into(),
            reason: Some("bad smell".into()),
            actor: "bo".into(),
        };
        store.send_decision(&p, &d).unwrap();
        assert!(store.has_decision(&p));
        assert_eq!(store.take_decision(&p).unwrap(), Some(d));
        assert_eq!(store.take_decision(&p).unwrap(), None);
        let st = WalkState::new(
            "id".into(),
            &rb,
            "r.yaml",
            "sha",
            "ci",
            &rb.expand("prod"),
            chrono::Utc::now(),
        );
        store.save(&p, &st).unwrap();
        assert_eq!(store.load(&p).unwrap().as_ref(), Some(&st));
        assert!(!p.with_extension("json.tmp").exists());
        let to = store.archive(&p, &st).unwrap();
        assert!(!p.exists() && to.exists());
        drop(lock);
        assert!(store.lock(&p).unwrap().is_some());
        std::fs::write(&p, "{\"format\": 99}").unwrap();
        assert!(store.load(&p).is_err());
    }
}
