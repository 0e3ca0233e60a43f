//! `signalbox config check FILE`.

use std::path::Path;

use crate::gateway::config;

/// Exit 0 when the file is valid; else print `FILE:LINE:COL: field.path: message` lines on
/// stderr and exit 1.
pub fn check(file: &Path) -> i32 {
    match config::load_file(file) {
        Ok(loaded) => {
            let c = &loaded.config;
            println!(
                "{}: ok ({} routes, {} upstreams, {} consumers)",
                file.display(),
                c.routes.len(),
                c.upstreams.len(),
                c.consumers.len()
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
