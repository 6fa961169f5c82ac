//! OS processes that never outlive their owner, used by capture (ffmpeg) and by the IPFS link (a daemon vigil
//! owns). Each runs in its own process group, dies with vigil (PR_SET_PDEATHSIG), carries a marker in its
//! environment (so that a later vigil finds what an earlier one left, and never touches anybody else's
//! processes), keeps its last stderr lines for diagnostics with every secret redacted, and is stopped by
//! SIGTERM, a grace period, then SIGKILL of the whole group; it is always reaped.
//!
//! Spawning goes through the [`Spawner`] trait so that tests can substitute the program.

use std::collections::VecDeque;
use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};

/// The environment variable that marks a process as started by vigil; its value says what for (for ffmpeg:
/// the camera folder it records into).
pub const MARKER: &str = "VIGIL_OWNER";

/// Removes secrets from text that may reach a log or an API answer: every listed secret, and the password
/// part of any `scheme://user:password@` URL.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Redact these strings (empty ones are ignored), plus URL passwords.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with secrets replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_url_passwords(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Replace the password of every `scheme://user:password@host` in `text` with `***`.
pub fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        // The authority ends at the first '/', whitespace, quote or end; userinfo ends at its last '@'.
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The last lines a process wrote to stderr (already redacted).
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
}

impl StderrTail {
    fn new(keep: usize) -> Self {
        StderrTail {
            lines: Arc::default(),
            keep,
        }
    }

    fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == self.keep {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The kept lines joined with " | ", or "(nothing)".
    pub fn summary(&self) -> String {
        let l = self.lines();
        if l.is_empty() {
            "(nothing)".to_string()
        } else {
            l.join(" | ")
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    /// Value of the [`MARKER`] environment variable.
    pub marker: String,
    /// Stderr lines kept for diagnostics.
    pub keep: usize,
    /// Label of the debug log line each stderr line is also written to.
    pub label: String,
    pub redactor: Redactor,
}

/// Control over a running process group. Dropping it SIGKILLs the group unless the leader was already reaped.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Pid,
    reaped: Arc<AtomicBool>,
    stderr: StderrTail,
}

/// A spawned process: its control handle and the future of its exit status (which reaps it).
pub struct Spawned {
    pub group: ProcessGroup,
    pub exit: std::pin::Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>>>>,
}

/// Starts processes. [`OsSpawner`] in production; tests may run something else in the program's place.
pub trait Spawner: Send + Sync + std::fmt::Debug {
    fn spawn(&self, cmd: &Command) -> Result<Spawned>;
}

/// Spawns real OS processes with [`ProcessGroup::spawn`].
#[derive(Debug, Default, Clone, Copy)]
pub struct OsSpawner;

impl Spawner for OsSpawner {
    fn spawn(&self, cmd: &Command) -> Result<Spawned> {
        ProcessGroup::spawn(cmd)
    }
}

/// How long an exit waits for the rest of the process's stderr.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

impl ProcessGroup {
    /// Start `cmd` in a new process group, stdin and stdout closed, stderr kept (the last `keep` lines, each
    /// redacted and also logged at debug level with the command's label).
    pub fn spawn(cmd: &Command) -> Result<Spawned> {
        let mut c = tokio::process::Command::new(&cmd.program);
        c.args(&cmd.args)
            .env(MARKER, &cmd.marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = c.spawn().map_err(|source| Error::Spawn {
            program: cmd.program.clone(),
            source,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        let tail = StderrTail::new(cmd.keep);
        let (drained_tx, drained) = tokio::sync::oneshot::channel::<()>();
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            let label = cmd.label.clone();
            let redactor = cmd.redactor.clone();
            actix_rt::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = redactor.redact(&line);
                    tracing::debug!(process = %label, "{line}");
                    tail.push(line);
                }
                let _ = drained_tx.send(());
            });
        }
        let reaped = Arc::new(AtomicBool::new(false));
        let r = reaped.clone();
        let exit = Box::pin(async move {
            let status = child.wait().await;
            r.store(true, Ordering::SeqCst);
            // The exit is reported with the process's last words: let the reader reach the end of the pipe
            // (briefly: a grandchild that inherited it may hold it open).
            let _ = tokio::time::timeout(STDERR_DRAIN, drained).await;
            status
        });
        Ok(Spawned {
            group: ProcessGroup {
                pgid: Pid::from_raw(pid),
                reaped,
                stderr: tail,
            },
            exit,
        })
    }

    /// The leader's PID (= the process group id).
    pub fn pid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// The stderr tail.
    pub fn stderr(&self) -> &StderrTail {
        &self.stderr
    }

    /// Whether the leader has exited and been reaped.
    pub fn reaped(&self) -> bool {
        self.reaped.load(Ordering::SeqCst)
    }

    /// Send `signal` to the whole group (no-op once the leader is reaped: its PID may be reused).
    pub fn signal(&self, signal: Signal) {
        if !self.reaped() {
            let _ = killpg(self.pgid, signal);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The value of [`MARKER`] in a process's environment, if it has one (and we may read it).
fn marker_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{MARKER}=");
    raw.split(|b| *b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix(&prefix).map(str::to_string)
    })
}

/// Kill processes that an earlier vigil started and left behind (it died without stopping them; they also
/// get SIGKILL when vigil dies, through PR_SET_PDEATHSIG, so this is the second line of defence). A process
/// qualifies only if its environment carries [`MARKER`] with a value inside `data_dir`: an operator's own
/// ffmpeg, even one writing under the data folder, is never touched. `redactor` cleans the logged command
/// line. Returns the PIDs killed.
pub fn kill_leftovers(data_dir: &std::path::Path, redactor: &Redactor) -> Vec<i32> {
    let me = std::process::id() as i32;
    let inside = |v: &str| std::path::Path::new(v).starts_with(data_dir);
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !marker_of(pid).is_some_and(|v| inside(&v)) {
            continue;
        }
        let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        tracing::warn!(
            pid,
            "killing a process an earlier vigil run left behind: {}",
            redactor.redact(&args.join(" "))
        );
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        killed.push(pid);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_listed_secrets_are_redacted() {
        let r = Redactor::new(["s3cr:t pass".to_string(), String::new()]);
        assert_eq!(
            r.redact("[rtsp @ 0x55] rtsp://admin:hunter2@10.0.0.5:554/ch1: Server returned 401"),
            "[rtsp @ 0x55] rtsp://admin:***@10.0.0.5:554/ch1: Server returned 401"
        );
        assert_eq!(
            r.redact("open 'rtsp://u:p%40ss@cam/x' and http://host/a and rtsp://onlyuser@cam"),
            "open 'rtsp://u:***@cam/x' and http://host/a and rtsp://onlyuser@cam"
        );
        assert_eq!(r.redact("the key is s3cr:t pass!"), "the key is ***!");
        assert_eq!(r.redact("no secret here"), "no secret here");
        assert_eq!(
            redact_url_passwords("tail rtsp://a:b@h"),
            "tail rtsp://a:***@h"
        );
        assert_eq!(redact_url_passwords("://"), "://");
    }
}
