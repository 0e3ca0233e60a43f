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
                "{}: ok ({}, {}, {})",
                file.display(),
                count(c.routes.len(), "route"),
                count(c.upstreams.len(), "upstream"),
                count(c.consumers.len(), "consumer")
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `1 route`, `2 routes`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_naturally() {
        assert_eq!(count(1, "consumer"), "1 consumer");
        assert_eq!(count(0, "consumer"), "0 consumers");
        assert_eq!(count(2, "upstream"), "2 upstreams");
    }
}
