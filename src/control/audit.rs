//! The audit journal: JSON Lines, append-only, fsynced per entry. Who, when, where, what,
//! before, after, the preflight results and the outcome. It never holds a secret: entries
//! are built from actions and state, which carry none.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Action, Check, Outcome};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: DateTime<Utc>,
    pub actor: String,
    pub env: String,
    pub action: Action,
    pub description: String,
    pub before: String,
    pub after: String,
    pub checks: Vec<Check>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a freeze or failed check was overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub entries: Vec<AuditEntry>,
    /// Lines that did not parse (a torn last line after a crash, or damage).
    pub skipped: usize,
}

impl Journal {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, entry: &AuditEntry) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        // A crash mid-write can leave a line without its newline; start on a fresh line.
        let len = f.metadata()?.len();
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Every entry that parses, oldest first. A missing file is an empty journal.
    pub fn read(&self) -> std::io::Result<ReadResult> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadResult::default()),
            Err(e) => return Err(e),
        };
        let mut out = ReadResult::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(e) => out.entries.push(e),
                Err(_) => out.skipped += 1,
            }
        }
        Ok(out)
    }

    /// The entries in the last `max_bytes` of the journal, oldest first, so a cockpit can
    /// follow a long journal without reading all of it. The first line of the tail is
    /// dropped when the cut falls inside it (it is not counted as skipped).
    pub fn read_recent(&self, max_bytes: u64) -> std::io::Result<ReadResult> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadResult::default()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(max_bytes);
        // One byte before the cut says whether the cut is at a line start.
        f.seek(SeekFrom::Start(start.saturating_sub(1)))?;
        let mut bytes = Vec::with_capacity((len - start.saturating_sub(1)) as usize);
        f.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let text: &str = if start == 0 {
            &text
        } else {
            // Skip through the first newline: either the byte before the cut, or the end
            // of a line that began before it.
            text.find('\n').map_or("", |i| &text[i + 1..])
        };
        let mut out = ReadResult::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(e) => out.entries.push(e),
                Err(_) => out.skipped += 1,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            time: Utc::now(),
            actor: "alice@host".into(),
            env: "prod".into(),
            action: Action::Flip {
                route: "users".into(),
                to: None,
            },
            description: "flip users to green".into(),
            before: "blue 100 / green 0".into(),
            after: "blue 0 / green 100".into(),
            checks: vec![Check::pass("green healthy", "1/1 targets")],
            outcome: Outcome::Applied,
            revision: Some(n),
            error: None,
            forced: None,
        }
    }

    #[test]
    fn read_recent_returns_whole_entries_from_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("audit.jsonl"));
        assert!(
            j.read_recent(1024).unwrap().entries.is_empty(),
            "missing file"
        );
        for n in 1..=20 {
            j.append(&entry(n)).unwrap();
        }
        let all = j.read_recent(u64::MAX).unwrap();
        assert_eq!((all.entries.len(), all.skipped), (20, 0));
        // Where line 18 starts, from the file itself.
        let text = std::fs::read_to_string(j.path()).unwrap();
        let len = text.len() as u64;
        let start18: usize = text.split_inclusive('\n').take(17).map(str::len).sum();
        // Exactly three lines' worth: the cut is at a line start, nothing is dropped.
        let three = j.read_recent(len - start18 as u64).unwrap();
        let revs: Vec<_> = three.entries.iter().map(|e| e.revision).collect();
        assert_eq!(revs, [Some(18), Some(19), Some(20)]);
        // A cut inside line 18 drops that partial line without calling it damage.
        let two = j.read_recent(len - start18 as u64 - 5).unwrap();
        let revs: Vec<_> = two.entries.iter().map(|e| e.revision).collect();
        assert_eq!((revs, two.skipped), (vec![Some(19), Some(20)], 0));
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_entry_survives() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("a/audit.jsonl"));
        j.append(&entry(1)).unwrap();
        // Simulate a crash halfway through a write.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap();
        f.write_all(br#"{"time":"2026-11-21T10:00:00Z","actor":"bo"#)
            .unwrap();
        drop(f);
        let r = j.read().unwrap();
        assert_eq!((r.entries.len(), r.skipped), (1, 1));
        j.append(&entry(2)).unwrap();
        let r = j.read().unwrap();
        assert_eq!((r.entries.len(), r.skipped), (2, 1));
        assert_eq!(r.entries[1].revision, Some(2));
    }
}
