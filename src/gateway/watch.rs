//! Reload on config file change. Editors save by rename, so the directory is watched and
//! events are matched by file name, then debounced.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::state::GatewayState;

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

pub fn reload(state: &GatewayState, why: &str) {
    match state.reload_from_file(why) {
        Ok((rev, snap)) => {
            tracing::info!(reason = why, revision = rev.number, config_hash = %snap.hash, "config reloaded")
        }
        Err(e) => {
            tracing::error!(reason = why, errors = %e, "config rejected; the running config is unchanged")
        }
    }
}
