//! Child processes that never outlive their owner: each runs in its own process group, dies with vigil
//! (PR_SET_PDEATHSIG), keeps its last stderr lines for diagnostics, and is stopped by SIGTERM, a grace period,
//! then SIGKILL of the whole group — and always reaped.

use std::collections::VecDeque;
use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};

/// The last lines a process wrote to stderr.
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

impl ProcessGroup {
    /// Start `program args…` in a new process group, stdin and stdout closed, stderr kept (last `keep` lines;
    /// each line is also logged at debug level with `label`).
    pub fn spawn(program: &str, args: &[String], keep: usize, label: &str) -> Result<Spawned> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: program.to_string(),
            source,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        let tail = StderrTail::new(keep);
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            let label = label.to_string();
            actix_rt::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(process = %label, "{line}");
                    tail.push(line);
                }
            });
        }
        let reaped = Arc::new(AtomicBool::new(false));
        let r = reaped.clone();
        let exit = Box::pin(async move {
            let status = child.wait().await;
            r.store(true, Ordering::SeqCst);
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

/// Kill ffmpeg processes left by an earlier vigil run that wrote under `data_dir` (found through /proc: their
/// command line names a path inside it). Returns the PIDs killed.
pub fn kill_leftovers(data_dir: &std::path::Path, program_name: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let prefix = format!("{}/", data_dir.display());
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_program = args.first().is_some_and(|a0| {
            std::path::Path::new(a0)
                .file_name()
                .is_some_and(|n| n == program_name)
        });
        if is_program && args.iter().any(|a| a.starts_with(&prefix)) {
            tracing::warn!(
                pid,
                "killing {program_name} left over by an earlier vigil run: {}",
                args.join(" ")
            );
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}
