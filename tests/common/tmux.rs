//! The real binary in a real terminal: a tmux server on its own socket, keys in with
//! `send-keys`, the screen back with `capture-pane`. The server and every process in the
//! pane are killed on drop, also when an assertion fails.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: String,
    session: String,
    pid: Option<u32>,
}

pub fn available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Tmux {
    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Runs `cmdline` in a `cols`x`rows` pane; `tag` keeps concurrent tests apart.
    pub fn start(tag: &str, cmdline: &str, cols: u16, rows: u16) -> Tmux {
        let mut t = Tmux {
            socket: format!("signalbox-{tag}-{}", std::process::id()),
            session: "cockpit".into(),
            pid: None,
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let session = t.session.clone();
        let out = t.cmd(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            &cols,
            "-y",
            &rows,
            cmdline,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        // Keep the pane after the program exits, to read its exit status.
        t.cmd(&["set-option", "-t", &session, "remain-on-exit", "on"]);
        t.pid = t.display("#{pane_pid}").trim().parse().ok();
        t
    }

    pub fn display(&self, format: &str) -> String {
        String::from_utf8_lossy(
            &self
                .cmd(&["display-message", "-p", "-t", &self.session, format])
                .stdout,
        )
        .into_owned()
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .cmd(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    /// Sends keys literally (`-l`), so `+` or `q` are never read as tmux key names.
    pub fn type_keys(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", &self.session, "-l", keys]);
    }

    pub fn key(&self, name: &str) {
        self.cmd(&["send-keys", "-t", &self.session, name]);
    }

    /// Waits until the screen shows every one of `want` and none of `absent`; fails with
    /// the last screen.
    pub fn wait_screen(&self, want: &[&str], absent: &[&str], secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if want.iter().all(|w| s.contains(w)) && !absent.iter().any(|a| s.contains(a)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting for {want:?} without {absent:?}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pane's process, which drop will then no longer kill: for a test that watches
    /// it go away by itself.
    pub fn take_pid(&mut self) -> Option<u32> {
        self.pid.take()
    }

    pub fn wait_for(&self, want: &[&str], secs: u64) -> String {
        self.wait_screen(want, &[], secs)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // The pane's shell leads a process group: ask, then insist.
            let group = format!("-{pid}");
            let kill = |sig: &str| {
                let _ = Command::new("kill")
                    .args([sig, "--", &group])
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            kill("-TERM");
            std::thread::sleep(Duration::from_millis(300));
            kill("-KILL");
        }
        let _ = self.cmd(&["kill-server"]);
    }
}
