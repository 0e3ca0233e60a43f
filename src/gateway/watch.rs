//! Reload on config file change. Editors save by rename, so the directory is watched and
//! events are matched by file name, then debounced.

use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::state::{GatewayState, Reloaded};

pub async fn watch_config(state: Arc<GatewayState>, shutdown: CancellationToken) {
    let Some(path) = state.source.clone() else {
        return;
    };
    let Some(dir) = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        })
        .map(|d| d.to_path_buf())
    else {
        return;
    };
    let file_name = path.file_name().map(|f| f.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && changes_content(&ev.kind)
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|f| f.to_os_string()) == file_name)
        {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP instead");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP instead");
        return;
    }
    loop {
        tokio::select! {
            got = rx.recv() => if got.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        // Let a burst of writes settle before reading the file.
        tokio::time::sleep(Duration::from_millis(150)).await;
        while rx.try_recv().is_ok() {}
        reload(&state, "file change");
    }
}

/// Whether an event can mean new content. Opening and reading the file (as every reload
/// does) must not count, or each reload would set off the next.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(m) => !matches!(m, ModifyKind::Metadata(_)),
        EventKind::Access(a) => matches!(a, AccessKind::Close(AccessMode::Write)),
        _ => false,
    }
}

pub fn reload(state: &GatewayState, why: &str) {
    match state.reload_from_file(why) {
        Ok(Reloaded::Applied(rev, snap)) => {
            tracing::info!(reason = why, revision = rev.number, config_hash = %snap.hash, "config reloaded")
        }
        Ok(Reloaded::Unchanged(revision)) => {
            tracing::info!(
                reason = why,
                revision,
                "config reloaded: unchanged, no new revision"
            )
        }
        Err(e) => {
            tracing::error!(reason = why, errors = %e, "config rejected; the running config is unchanged")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RenameMode};

    #[test]
    fn reading_the_file_is_not_a_change_and_writing_or_replacing_it_is() {
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
            EventKind::Remove(notify::event::RemoveKind::File),
        ] {
            assert!(!changes_content(&quiet), "{quiet:?}");
        }
        for change in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(changes_content(&change), "{change:?}");
        }
    }
}
