//! Revision history: every change to a running gateway is a numbered revision holding the
//! full effective config, persisted in the state dir so a restart resumes where it was.
//!
//! Layout: `STATE_DIR/revisions/00000042.json` (one per revision) and `STATE_DIR/HEAD`
//! (the applied revision's number). Every file is written to a temp file, fsynced, renamed
//! into place and the directory fsynced, so a crash leaves either the old or the new file,
//! never half of one.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::GatewayConfig;
use crate::domain::RevisionInfo;

/// History kept on disk and in memory; older revisions are pruned.
pub const KEEP: usize = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevisionRecord {
    #[serde(flatten)]
    pub info: RevisionInfo,
    pub config: GatewayConfig,
    /// The flagd document in force, when the gateway serves flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<serde_json::Value>,
}

pub struct RevisionStore {
    dir: Option<PathBuf>,
    records: VecDeque<RevisionRecord>,
    head: u64,
}

impl RevisionStore {
    /// Opens (creating) a state dir, or an in-memory store with `None`.
    pub fn open(dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = dir else {
            return Ok(Self {
                dir: None,
                records: VecDeque::new(),
                head: 0,
            });
        };
        let revs = dir.join("revisions");
        std::fs::create_dir_all(&revs)
            .map_err(|e| anyhow::anyhow!("cannot create state dir {}: {e}", revs.display()))?;
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&revs)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<RevisionRecord>(&b).map_err(|e| e.to_string())
                }) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable revision file")
                }
            }
        }
        records.sort_by_key(|r| r.info.number);
        let newest = records.last().map_or(0, |r| r.info.number);
        let head = std::fs::read_to_string(dir.join("HEAD"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|n| records.iter().any(|r| r.info.number == *n))
            .unwrap_or(newest);
        // HEAD is written after the revision file and before the change is applied or
        // acknowledged, so a revision newer than HEAD is one a crash cut short: nobody was
        // told of it and it never ran. Remove it rather than let the history and the
        // running config disagree.
        if head < newest {
            for r in records.iter().filter(|r| r.info.number > head) {
                tracing::warn!(
                    revision = r.info.number,
                    head,
                    "removing a revision that was written but never made HEAD (interrupted change)"
                );
                let _ = std::fs::remove_file(revs.join(format!("{:08}.json", r.info.number)));
            }
            records.retain(|r| r.info.number <= head);
        }
        let skip = records.len().saturating_sub(KEEP);
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            records: records.into_iter().skip(skip).collect(),
            head,
        })
    }

    pub fn head(&self) -> Option<&RevisionRecord> {
        self.get(self.head)
    }

    pub fn head_number(&self) -> u64 {
        self.head
    }

    pub fn get(&self, n: u64) -> Option<&RevisionRecord> {
        self.records.iter().find(|r| r.info.number == n)
    }

    pub fn next_number(&self) -> u64 {
        self.records.back().map_or(0, |r| r.info.number) + 1
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RevisionInfo> {
        self.records.iter().rev().map(|r| r.info.clone()).collect()
    }

    /// Persists a new revision and makes it the head. Nothing changes if writing fails.
    pub fn append(&mut self, record: RevisionRecord) -> anyhow::Result<()> {
        if let Some(dir) = &self.dir {
            let revs = dir.join("revisions");
            let body = serde_json::to_vec_pretty(&record)?;
            write_atomic(&revs.join(format!("{:08}.json", record.info.number)), &body)?;
            write_atomic(
                &dir.join("HEAD"),
                format!("{}\n", record.info.number).as_bytes(),
            )?;
        }
        self.head = record.info.number;
        self.records.push_back(record);
        while self.records.len() > KEEP {
            if let Some(old) = self.records.pop_front()
                && let Some(dir) = &self.dir
            {
                let _ = std::fs::remove_file(
                    dir.join("revisions")
                        .join(format!("{:08}.json", old.info.number)),
                );
            }
        }
        Ok(())
    }
}

/// Write to a temp file beside `path`, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Change;

    fn record(n: u64) -> RevisionRecord {
        let config = crate::gateway::config::parse_str(
            "upstreams: { a: { targets: [127.0.0.1:1] } }\nroutes: [ { name: r, paths: [/], split: { a: 1 } } ]\n",
            "t",
        )
        .unwrap();
        RevisionRecord {
            info: RevisionInfo {
                number: n,
                time: chrono::Utc::now(),
                actor: "test".into(),
                description: format!("rev {n}"),
                change: Change::ReplaceConfig,
                hash: format!("h{n}"),
            },
            config,
            flags: None,
        }
    }

    #[test]
    fn persists_resumes_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RevisionStore::open(Some(dir.path())).unwrap();
        assert!(s.head().is_none());
        for n in 1..=(KEEP as u64 + 5) {
            s.append(record(n)).unwrap();
        }
        let files = std::fs::read_dir(dir.path().join("revisions"))
            .unwrap()
            .count();
        assert_eq!(files, KEEP);
        let again = RevisionStore::open(Some(dir.path())).unwrap();
        assert_eq!(again.head_number(), KEEP as u64 + 5);
        assert_eq!(again.list().len(), KEEP);
        assert_eq!(again.list()[0].number, KEEP as u64 + 5);
        assert!(again.get(5).is_none(), "pruned");
        assert_eq!(again.next_number(), KEEP as u64 + 6);
    }

    #[test]
    fn head_file_wins_garbage_is_skipped_and_an_interrupted_revision_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RevisionStore::open(Some(dir.path())).unwrap();
        for n in 1..=3 {
            s.append(record(n)).unwrap();
        }
        std::fs::write(dir.path().join("HEAD"), "2\n").unwrap();
        std::fs::write(dir.path().join("revisions/00000009.json"), "{ torn").unwrap();
        let again = RevisionStore::open(Some(dir.path())).unwrap();
        assert_eq!(again.head_number(), 2);
        // Revision 3 was written but never made HEAD: a change cut short by a crash.
        assert_eq!(again.list().len(), 2);
        assert_eq!(again.next_number(), 3);
        assert!(!dir.path().join("revisions/00000003.json").exists());
    }
}
