//! Real OS processes under supervision (real clock): a supervised `sleep` killed with SIGKILL is restarted with
//! backoff, a process group that ignores SIGTERM is killed after the shutdown timeout, and no zombie or orphan
//! is left after restarts or after the supervisor stops.

use std::cell::Cell;
use std::process::Stdio;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use supervisors::{
    BackoffPolicy, ChildContext, ChildHandle, ChildSpec, EventKind, ExitSlot, Runtime, Shutdown,
    SupervisorSpec, Terminate,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// PIDs of each started process: (leader, background grandchild if the script printed one).
type Pids = Arc<Mutex<Vec<(i32, Option<i32>)>>>;

/// Owns one process group; stops when the process exits (a failure), SIGTERMs the group on Terminate, and
/// SIGKILLs the group when dropped (e.g. after its task is aborted) unless the leader was already reaped.
struct Proc {
    script: String,
    exit: ExitSlot,
    pids: Pids,
    pgid: Option<Pid>,
    reaped: Rc<Cell<bool>>,
    stopping: bool,
}

impl Actor for Proc {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut child = match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.script)
            .process_group(0)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                self.exit.fail(format!("spawn failed: {e}"));
                ctx.stop();
                return;
            }
        };
        let pid = child.id().expect("running child has a pid") as i32;
        self.pgid = Some(Pid::from_raw(pid));
        let stdout = child.stdout.take().expect("piped stdout");
        let pids = self.pids.clone();
        let reaped = self.reaped.clone();
        let fut = async move {
            // The script prints the PID of its background grandchild, if any.
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line).await;
            pids.lock().unwrap().push((pid, line.trim().parse().ok()));
            let status = child.wait().await;
            reaped.set(true);
            status
        };
        ctx.spawn(fut.into_actor(self).map(|status, act, ctx| {
            if !act.stopping {
                match status {
                    Ok(s) => act.exit.fail(format!("process exited: {s}")),
                    Err(e) => act
                        .exit
                        .fail(format!("waiting for the process failed: {e}")),
                }
            }
            ctx.stop();
        }));
    }
}

impl Handler<Terminate> for Proc {
    type Result = ();
    fn handle(&mut self, _: Terminate, _: &mut Context<Self>) {
        self.stopping = true;
        if let Some(pg) = self.pgid {
            let _ = killpg(pg, Signal::SIGTERM);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pg) = self.pgid
            && !self.reaped.get()
        {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

fn proc_spec(id: &str, script: &str, pids: Pids) -> ChildSpec {
    let script = script.to_string();
    ChildSpec::worker(id, move |cx: &ChildContext| {
        let (h, _) = ChildHandle::actor(
            cx,
            Proc {
                script: script.clone(),
                exit: cx.exit.clone(),
                pids: pids.clone(),
                pgid: None,
                reaped: Rc::new(Cell::new(false)),
                stopping: false,
            },
        );
        Ok(h)
    })
}

/// `Some(state letter)` from /proc/PID/stat, `None` when the PID no longer exists.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Gone, or a zombie that is not ours (an orphaned grandchild waiting for init) — i.e. not running and not a
/// zombie left by this process.
fn is_gone(pid: i32) -> bool {
    match proc_state(pid) {
        None => true,
        Some(('Z', ppid)) => ppid != std::process::id() as i32,
        Some(_) => false,
    }
}

/// Our own children: (pid, state).
fn my_children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| match proc_state(pid) {
            Some((s, ppid)) if ppid == me => Some((pid, s)),
            _ => None,
        })
        .collect()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 2 s: {what}");
}

async fn next_pid(pids: &Pids, n: usize) -> (i32, Option<i32>) {
    let p = pids.clone();
    eventually(&format!("process #{n} started"), move || {
        p.lock().unwrap().len() >= n
    })
    .await;
    pids.lock().unwrap()[n - 1]
}

// One test function: the checks scan all children of this test process, so they must not run in parallel
// with other process-spawning tests.
#[actix_rt::test]
async fn supervised_processes_are_restarted_with_backoff_and_never_left_behind() {
    let policy = BackoffPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        factor: 2.0,
        jitter: 0.2,
        reset_after: Duration::from_secs(60),
        immediate_after_healthy: true,
    };
    let runtime = Runtime::new();
    let mut events = runtime.events().subscribe();
    let sleeper_pids = Arc::new(Mutex::new(Vec::new()));
    let stubborn_pids = Arc::new(Mutex::new(Vec::new()));
    let root = runtime.start(
        SupervisorSpec::new("root")
            .backoff(policy)
            .child(proc_spec(
                "sleeper",
                "echo; exec sleep 1000",
                sleeper_pids.clone(),
            ))
            .child(
                proc_spec(
                    "stubborn",
                    "trap '' TERM; sleep 1000 & echo $!; wait",
                    stubborn_pids.clone(),
                )
                .shutdown(Shutdown::Timeout(Duration::from_millis(500))),
            ),
    );

    // SIGKILL the sleeper twice: restarted each time after a growing, jittered delay.
    let mut last = next_pid(&sleeper_pids, 1).await.0;
    for attempt in 1..=2u32 {
        let killed_at = tokio::time::Instant::now();
        kill(Pid::from_raw(last), Signal::SIGKILL).unwrap();
        let (got_attempt, delay) = loop {
            let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap();
            if let EventKind::Restarting {
                child,
                attempt,
                delay,
                cause,
                healthy,
            } = e.kind
                && child == "sleeper"
            {
                assert!(
                    cause.contains("SIGKILL") || cause.contains("signal: 9"),
                    "cause: {cause}"
                );
                assert!(!healthy, "a short run that never declared itself healthy");
                break (attempt, delay);
            }
        };
        assert_eq!(got_attempt, attempt);
        let (lo, hi) = policy.bounds(attempt);
        assert!(
            delay >= lo && delay <= hi,
            "{delay:?} not in [{lo:?}, {hi:?}]"
        );
        let (pid, _) = next_pid(&sleeper_pids, attempt as usize + 1).await;
        assert!(
            killed_at.elapsed() >= delay,
            "restarted before its backoff delay"
        );
        assert_ne!(pid, last);
        let old = last;
        eventually("killed process reaped (no zombie)", || is_gone(old)).await;
        last = pid;
    }
    assert!(
        proc_state(last).is_some_and(|(s, _)| s != 'Z'),
        "the new process runs"
    );

    // Stop everything: the stubborn group ignores SIGTERM and is SIGKILLed after 500 ms.
    let (sh, grandchild) = next_pid(&stubborn_pids, 1).await;
    let grandchild = grandchild.expect("stubborn script printed its background PID");
    let started = tokio::time::Instant::now();
    root.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "stubborn child waited its timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "and was then killed: {took:?}"
    );
    for pid in [last, sh, grandchild] {
        eventually(&format!("pid {pid} gone after shutdown"), || is_gone(pid)).await;
    }
    eventually("no children and no zombies left", || {
        my_children().is_empty()
    })
    .await;
}
