//! The supervision event stream: every start, exit, restart decision, stop and escalation, for logs, metrics
//! and tests. Each event is also logged with `tracing` when it is emitted.

use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::child::ExitReason;

/// One thing that happened in a supervision tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When, on the tree's clock.
    pub at: Instant,
    /// Path of the supervisor that reports it, e.g. `root/cameras`.
    pub supervisor: String,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A child was started; `generation` counts earlier starts.
    Started { child: String, generation: u64 },
    /// A child ended by itself (or failed to start).
    Exited {
        child: String,
        reason: ExitReason,
        ran_for: Duration,
    },
    /// A child will be started again after `delay`. `attempt` counts consecutive restarts since its last
    /// healthy run (0 for a sibling restarted along with it under one_for_all / rest_for_one).
    Restarting {
        child: String,
        attempt: u32,
        delay: Duration,
        cause: String,
    },
    /// A child's readiness probe passed while it waited for a restart: it restarts now, `saved` earlier than
    /// its backoff delay.
    Probed { child: String, saved: Duration },
    /// A child was stopped by its supervisor (shutdown, removal, or a sibling's restart); `killed` when it
    /// ignored the stop request past its shutdown timeout.
    Stopped { child: String, killed: bool },
    /// More than `max_restarts` restarts within `within`: the supervisor stops all children and fails, so its
    /// parent decides.
    Escalated {
        restarts: usize,
        max_restarts: u32,
        within: Duration,
    },
}

impl EventKind {
    /// The child the event is about, if any.
    pub fn child(&self) -> Option<&str> {
        match self {
            EventKind::Started { child, .. }
            | EventKind::Exited { child, .. }
            | EventKind::Restarting { child, .. }
            | EventKind::Probed { child, .. }
            | EventKind::Stopped { child, .. } => Some(child),
            EventKind::Escalated { .. } => None,
        }
    }
}

/// Fan-out of events to any number of subscribers. Slow subscribers lose the oldest events (never blocks the
/// supervisors).
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl EventBus {
    /// A bus that buffers up to `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            tx: broadcast::channel(capacity).0,
        }
    }

    /// A new receiver that sees every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub(crate) fn emit(&self, event: Event) {
        log_event(&event);
        let _ = self.tx.send(event);
    }
}

fn log_event(e: &Event) {
    let sup = e.supervisor.as_str();
    match &e.kind {
        EventKind::Started { child, generation } => {
            tracing::info!(supervisor = sup, child = %child, generation, "child started");
        }
        EventKind::Exited {
            child,
            reason,
            ran_for,
        } => {
            if reason.is_abnormal() {
                tracing::warn!(supervisor = sup, child = %child, %reason, ran_for_ms = ran_for.as_millis() as u64, "child exited abnormally");
            } else {
                tracing::info!(supervisor = sup, child = %child, %reason, ran_for_ms = ran_for.as_millis() as u64, "child exited");
            }
        }
        EventKind::Restarting {
            child,
            attempt,
            delay,
            cause,
        } => {
            tracing::warn!(supervisor = sup, child = %child, attempt, delay_ms = delay.as_millis() as u64, reason = %cause,
                "restarting child in {:.1} s (attempt {attempt})", delay.as_secs_f64());
        }
        EventKind::Probed { child, saved } => {
            tracing::info!(supervisor = sup, child = %child, saved_ms = saved.as_millis() as u64,
                "readiness probe passed: restarting now instead of in {:.1} s", saved.as_secs_f64());
        }
        EventKind::Stopped { child, killed } => {
            if *killed {
                tracing::warn!(supervisor = sup, child = %child, "child ignored the stop request and was killed");
            } else {
                tracing::info!(supervisor = sup, child = %child, "child stopped");
            }
        }
        EventKind::Escalated {
            restarts,
            max_restarts,
            within,
        } => {
            tracing::error!(
                supervisor = sup,
                restarts,
                max_restarts,
                within_s = within.as_secs_f64(),
                "restart intensity exceeded: stopping all children and escalating to the parent"
            );
        }
    }
}
