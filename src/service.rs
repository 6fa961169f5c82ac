//! systemd integration (`Type=notify`): `READY=1` once the supervision tree is up, `STATUS=` lines a person
//! can read, `STOPPING=1` on shutdown, and `WATCHDOG=1` pings that are sent only while the root supervisor's
//! loop answers — a wedged runtime or a root supervisor stuck in a call stops the pings, and systemd
//! (`WatchdogSec`) kills and restarts vigil.
//!
//! The notification protocol is one datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace); without it (not started by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use supervisors::{ChildState, SupervisorHandle};

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Sends sd_notify messages (or nothing, outside systemd).
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier::to(std::env::var_os("NOTIFY_SOCKET").map(|s| s.to_string_lossy().into_owned()))
    }

    /// To this socket (`@name` is abstract); `None` sends nothing.
    pub fn to(socket: Option<String>) -> Notifier {
        let target = socket
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(PathBuf::from(s)),
            });
        Notifier { target }
    }

    /// Whether a service manager listens.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Send `msg` (`KEY=value` lines). A failure is logged once per kind and otherwise ignored: recording
    /// never depends on the service manager.
    pub fn send(&self, msg: &str) {
        let Some(target) = &self.target else { return };
        let sent = UnixDatagram::unbound().and_then(|sock| match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)
            }
        });
        if let Err(e) = sent {
            tracing::debug!(
                "sd_notify {:?} not sent: {e}",
                msg.lines().next().unwrap_or("")
            );
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A status line (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }
}

/// How often to ping: half of `$WATCHDOG_USEC`, if the watchdog is on and meant for this process
/// (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    interval_of(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_of(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Waits until every child of `root` runs (the tree is up), then says so.
pub async fn wait_up(root: &SupervisorHandle, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(children) = root.which_children().await
            && !children.is_empty()
            && children
                .iter()
                .all(|c| matches!(c.state, ChildState::Running { .. }))
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pings `WATCHDOG=1` every `every` while the root supervisor answers within `every`; when it does not, stops
/// pinging (and says why in the log and in `STATUS=`) until it answers again. Runs until dropped.
pub async fn watchdog(root: SupervisorHandle, notifier: Notifier, every: Duration) {
    let mut silent = false;
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, root.which_children()).await {
            Ok(Ok(_)) => {
                notifier.send("WATCHDOG=1");
                if silent {
                    tracing::info!("the root supervisor answers again: watchdog pings resume");
                    notifier.status("running");
                    silent = false;
                }
            }
            _ => {
                if !silent {
                    tracing::error!(
                        "the root supervisor did not answer within {} ms: no watchdog ping (systemd restarts vigil if this lasts)",
                        every.as_millis()
                    );
                    notifier.status("root supervisor not answering; watchdog pings stopped");
                    silent = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_half_the_watchdog_and_only_for_this_process() {
        assert_eq!(
            interval_of(Some("4000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            interval_of(Some("4000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(interval_of(Some("4000000"), Some("8"), 7), None);
        assert_eq!(interval_of(Some("0"), None, 7), None);
        assert_eq!(interval_of(Some("x"), None, 7), None);
        assert_eq!(interval_of(None, None, 7), None);
    }

    /// The root supervisor stuck (restarting all its children, it waits 1.5 s for one that ignores the stop
    /// request) while the runtime itself runs on: no ping in that time; pings before and after.
    #[actix_rt::test]
    async fn watchdog_pings_stop_while_the_root_supervisor_is_stuck() {
        use std::sync::mpsc;
        use std::time::Instant;
        use supervisors::{
            ChildHandle, ChildSpec, ExitReason, Runtime, Shutdown, Strategy, SupervisorSpec,
        };

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel::<Instant>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = listener.recv(&mut buf) {
                if &buf[..n] == b"WATCHDOG=1" && tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        });
        let fail = std::sync::Arc::new(tokio::sync::Notify::new());
        let f = fail.clone();
        let spec = SupervisorSpec::new("root")
            .strategy(Strategy::OneForAll)
            .child(ChildSpec::worker("fails", move |_| {
                let f = f.clone();
                Ok(ChildHandle::task(
                    async move {
                        f.notified().await;
                        ExitReason::Failed("told to".into())
                    },
                    || {},
                ))
            }))
            .child(
                ChildSpec::worker("deaf", |_| {
                    Ok(ChildHandle::task(std::future::pending(), || {}))
                })
                .shutdown(Shutdown::Timeout(Duration::from_millis(1500))),
            );
        let root = Runtime::new().start(spec);
        let notifier = Notifier::to(Some(path.display().to_string()));
        let pinger = actix_rt::spawn(watchdog(root.clone(), notifier, Duration::from_millis(100)));
        // Waits for the next ping without blocking the runtime the watchdog runs on.
        let next = async |within: Duration| {
            let deadline = Instant::now() + within;
            loop {
                if let Ok(t) = rx.try_recv() {
                    return t;
                }
                assert!(Instant::now() < deadline, "no ping within {within:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        for _ in 0..3 {
            next(Duration::from_secs(2)).await;
        }
        let stuck_at = Instant::now();
        fail.notify_one();
        // The runtime runs (this loop polls every 5 ms), yet no ping comes while the root waits for "deaf".
        let after = loop {
            let t = next(Duration::from_secs(4)).await;
            if t > stuck_at + Duration::from_millis(150) {
                break t;
            }
        };
        assert!(
            after - stuck_at >= Duration::from_millis(1300),
            "a ping {:?} after the root got stuck",
            after - stuck_at
        );
        next(Duration::from_secs(2)).await;
        pinger.abort();
    }

    #[test]
    fn messages_reach_a_path_socket_and_nothing_happens_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(Some(path.display().to_string()));
        assert!(n.active());
        n.ready("running: 2 cameras");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=running: 2 cameras"
        );
        let none = Notifier::to(None);
        assert!(!none.active());
        none.ready("ignored");
    }
}
