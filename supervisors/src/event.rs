//! The supervision event stream: every start, exit, restart decision, stop and escalation, for logs, metrics
//! and tests. Each event is also logged with `tracing` when it is emitted.

use std::sync::{Arc, RwLock};
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
    /// A child ended by itself (or failed to start). `healthy`: the run was healthy, because the child declared
    /// it so ([`crate::ExitSlot::healthy`]) or it lasted at least the backoff's `reset_after` (a failed start is
    /// never healthy).
    Exited {
        child: String,
        reason: ExitReason,
        ran_for: Duration,
        healthy: bool,
    },
    /// A child will be started again after `delay`. `attempt` counts consecutive restarts since its last
    /// healthy run, this one included (0 for a sibling restarted along with it under one_for_all /
    /// rest_for_one). `healthy`: the run that just ended was healthy, so the backoff schedule started over (and
    /// `delay` is 0 if the policy's `immediate_after_healthy` is on); always false for such a sibling.
    Restarting {
        child: String,
        attempt: u32,
        delay: Duration,
        cause: String,
        healthy: bool,
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

/// A function called with every event, on the supervisor's task, before subscribers see it (metrics counters:
/// they must not lose events the way a lagging subscriber may). It must be quick and must not block.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// Fan-out of events to any number of subscribers. Slow subscribers lose the oldest events (never blocks the
/// supervisors). Observers see every event.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    observers: Arc<RwLock<Vec<Observer>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.tx.receiver_count())
            .finish_non_exhaustive()
    }
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
            observers: Arc::default(),
        }
    }

    /// Call `f` with every event emitted from now on, synchronously (see [`Observer`]).
    pub fn observe(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(f));
    }

    /// A new receiver that sees every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub(crate) fn emit(&self, event: Event) {
        log_event(&event);
        for f in self
            .observers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f(&event);
        }
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
            healthy,
        } => {
            let run = if *healthy { " after a healthy run" } else { "" };
            if reason.is_abnormal() {
                tracing::warn!(supervisor = sup, child = %child, %reason, ran_for_ms = ran_for.as_millis() as u64, healthy,
                    "child exited abnormally{run}");
            } else {
                tracing::info!(supervisor = sup, child = %child, %reason, ran_for_ms = ran_for.as_millis() as u64, healthy,
                    "child exited{run}");
            }
        }
        EventKind::Restarting {
            child,
            attempt,
            delay,
            cause,
            healthy,
        } => {
            let why = match (*healthy, delay.is_zero()) {
                (true, true) => ": after a healthy run, restarting at once",
                (true, false) => ": after a healthy run, backoff reset",
                (false, _) => "",
            };
            tracing::warn!(supervisor = sup, child = %child, attempt, delay_ms = delay.as_millis() as u64, reason = %cause, healthy,
                "restarting child in {:.1} s (attempt {attempt}){why}", delay.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Metadata, Subscriber};

    /// Collects each event as `key=value` pairs, the message first, like the fmt subscriber's output.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    impl Subscriber for Lines {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = Line(String::new());
            event.record(&mut line);
            self.0.lock().unwrap().push(line.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn logged(kind: EventKind) -> String {
        let lines = Lines::default();
        let event = Event {
            at: Instant::now(),
            supervisor: "root/cameras/cam1".into(),
            kind,
        };
        tracing::subscriber::with_default(lines.clone(), || log_event(&event));
        let mut all = lines.0.lock().unwrap().clone();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn restarting(attempt: u32, delay_ms: u64, healthy: bool) -> String {
        logged(EventKind::Restarting {
            child: "ffmpeg".into(),
            attempt,
            delay: Duration::from_millis(delay_ms),
            cause: "failed: signal: 9 (SIGKILL)".into(),
            healthy,
        })
    }

    #[test]
    fn exit_and_restart_lines_say_whether_the_run_was_healthy() {
        let line = restarting(1, 0, true);
        assert!(
            line.starts_with(
                "restarting child in 0.0 s (attempt 1): after a healthy run, restarting at once"
            ),
            "{line}"
        );
        for text in [
            "attempt=1",
            "delay_ms=0",
            "healthy=true",
            "child=ffmpeg",
            "supervisor=\"root/cameras/cam1\"",
        ] {
            assert!(line.contains(text), "{text} missing: {line}");
        }
        let line = restarting(1, 500, true);
        assert!(
            line.starts_with(
                "restarting child in 0.5 s (attempt 1): after a healthy run, backoff reset "
            ),
            "{line}"
        );
        let line = restarting(2, 500, false);
        assert!(
            line.starts_with("restarting child in 0.5 s (attempt 2) ")
                && line.contains("attempt=2 delay_ms=500")
                && line.contains("healthy=false")
                && !line.contains("after a healthy run"),
            "{line}"
        );

        let exited = |healthy| {
            logged(EventKind::Exited {
                child: "ffmpeg".into(),
                reason: ExitReason::Failed("boom".into()),
                ran_for: Duration::from_secs(3),
                healthy,
            })
        };
        let line = exited(true);
        assert!(
            line.starts_with("child exited abnormally after a healthy run ")
                && line.contains("healthy=true")
                && line.contains("ran_for_ms=3000"),
            "{line}"
        );
        let line = exited(false);
        assert!(
            line.starts_with("child exited abnormally ") && line.contains("healthy=false"),
            "{line}"
        );
    }

    #[test]
    fn observers_see_every_event_even_when_a_subscriber_lags() {
        let bus = EventBus::new(2);
        let mut lagging = bus.subscribe();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        bus.observe(move |e| s.lock().unwrap().push(e.kind.child().unwrap().to_string()));
        for n in 0..10 {
            bus.emit(Event {
                at: Instant::now(),
                supervisor: "root".into(),
                kind: EventKind::Started {
                    child: format!("c{n}"),
                    generation: 0,
                },
            });
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, (0..10).map(|n| format!("c{n}")).collect::<Vec<_>>());
        // The subscriber kept only the last two.
        assert!(matches!(
            lagging.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(8))
        ));
    }
}
