//! The `IpfsLink` actor: watches the Kubo RPC API (`version` every few seconds) and publishes up/down for the
//! pipeline stages, which pause while it is down instead of failing. If the config names a daemon command,
//! the actor also owns that daemon process: it starts it, and ends (so the supervisor restarts both) when the
//! daemon exits.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use supervisors::{Clock, ExitSlot, Terminate};
use tokio::sync::watch;

use super::kubo::Kubo;
use crate::process::{Command, ProcessGroup, Redactor};

/// How the API looked at the last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not checked yet.
    Unknown,
    Up {
        version: String,
    },
    Down {
        reason: String,
    },
}

/// Shared view of the link, for stages and metrics.
#[derive(Debug, Clone)]
pub struct Link {
    rx: watch::Receiver<LinkState>,
}

impl Link {
    /// A link and the sender that updates it.
    pub fn new() -> (watch::Sender<LinkState>, Link) {
        let (tx, rx) = watch::channel(LinkState::Unknown);
        (tx, Link { rx })
    }

    pub fn state(&self) -> LinkState {
        self.rx.borrow().clone()
    }

    pub fn is_up(&self) -> bool {
        matches!(*self.rx.borrow(), LinkState::Up { .. })
    }

    /// Wait until the API is up (returns at once if it is).
    pub async fn wait_up(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| matches!(s, LinkState::Up { .. })).await;
    }
}

/// How often the API is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The actor.
pub struct IpfsLink {
    kubo: Kubo,
    state: Arc<watch::Sender<LinkState>>,
    clock: Arc<dyn Clock>,
    exit: ExitSlot,
    path: String,
    daemon: Option<Vec<String>>,
    /// The owner marker in the daemon's environment (see [`crate::process::MARKER`]).
    marker: String,
    group: Option<ProcessGroup>,
}

impl IpfsLink {
    pub fn new(
        kubo: Kubo,
        state: Arc<watch::Sender<LinkState>>,
        clock: Arc<dyn Clock>,
        exit: ExitSlot,
        path: String,
        daemon: Option<Vec<String>>,
    ) -> Self {
        IpfsLink {
            kubo,
            state,
            clock,
            exit,
            path,
            daemon,
            marker: "vigil-ipfs-daemon".to_string(),
            group: None,
        }
    }

    /// Mark the daemon process with this owner value (a path inside the data folder makes a daemon left by a
    /// crashed vigil a leftover that the next start kills).
    pub fn with_marker(mut self, marker: impl Into<String>) -> Self {
        self.marker = marker.into();
        self
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Checked(LinkState);

impl Actor for IpfsLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(cmd) = self.daemon.clone().filter(|c| !c.is_empty()) {
            let command = Command {
                program: cmd[0].clone(),
                args: cmd[1..].to_vec(),
                marker: self.marker.clone(),
                keep: 8,
                label: self.path.clone(),
                redactor: Redactor::default(),
            };
            match ProcessGroup::spawn(&command) {
                Ok(spawned) => {
                    tracing::info!(actor = %self.path, pid = spawned.group.pid(), "IPFS daemon started: {}", cmd.join(" "));
                    self.group = Some(spawned.group);
                    ctx.spawn(actix::fut::wrap_future(spawned.exit).map(
                        |status, act: &mut Self, ctx| {
                            let tail = act
                                .group
                                .as_ref()
                                .map(|g| g.stderr().summary())
                                .unwrap_or_default();
                            act.exit.fail(format!(
                                "IPFS daemon exited ({status:?}); last stderr: {tail}"
                            ));
                            ctx.stop();
                        },
                    ));
                }
                Err(e) => {
                    self.exit.fail(e.to_string());
                    ctx.stop();
                    return;
                }
            }
        }
        let (kubo, clock, addr) = (self.kubo.clone(), self.clock.clone(), ctx.address());
        actix_rt::spawn(async move {
            while addr.connected() {
                let state = match kubo.version().await {
                    Ok(version) => LinkState::Up { version },
                    Err(e) => LinkState::Down {
                        reason: e.to_string(),
                    },
                };
                addr.do_send(Checked(state));
                clock.sleep(CHECK_EVERY).await;
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.state.send_replace(LinkState::Down {
            reason: "IPFS link stopped".into(),
        });
    }
}

impl Handler<Checked> for IpfsLink {
    type Result = ();
    fn handle(&mut self, Checked(new): Checked, _: &mut Context<Self>) {
        let old = self.state.borrow().clone();
        match (&old, &new) {
            (LinkState::Up { .. }, LinkState::Up { .. })
            | (LinkState::Down { .. }, LinkState::Down { .. }) => {}
            (_, LinkState::Up { version }) => {
                tracing::info!(actor = %self.path, api = %self.kubo.base(), %version, "IPFS API is up: pipeline stages resume")
            }
            (_, LinkState::Down { reason }) => {
                tracing::warn!(actor = %self.path, api = %self.kubo.base(), %reason, "IPFS API is down: stages pause and retry; recording goes on")
            }
            _ => {}
        }
        if old != new {
            self.state.send_replace(new);
        }
    }
}

impl Handler<Terminate> for IpfsLink {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        if let Some(g) = &self.group {
            g.signal(nix::sys::signal::Signal::SIGTERM);
            // The daemon's exit stops the actor; kill it if it lingers.
            ctx.spawn(
                actix::fut::wrap_future(self.clock.sleep(Duration::from_secs(5))).map(
                    |(), act: &mut Self, ctx| {
                        if let Some(g) = &act.group {
                            g.signal(nix::sys::signal::Signal::SIGKILL);
                        }
                        ctx.stop();
                    },
                ),
            );
        } else {
            ctx.stop();
        }
    }
}
