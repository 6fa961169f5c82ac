//! Children: how they are declared ([`ChildSpec`]), what a started child looks like to its supervisor
//! ([`ChildHandle`]), what a child is told at start ([`ChildContext`]) and how it ended ([`ExitReason`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};

use crate::backoff::BackoffPolicy;
use crate::supervisor::{Env, SupervisorSpec};

/// When a child that exited is started again (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whatever the exit (a camera that dropped makes ffmpeg exit 0: it is still restarted).
    Permanent,
    /// Restarted only after an abnormal exit (failure, panic, kill).
    Transient,
    /// Never restarted; removed from the supervisor when it exits.
    Temporary,
}

/// How a child is stopped by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Ask it to stop, wait this long, then kill it (abort its task, which drops its state).
    Timeout(Duration),
    /// Ask it to stop and wait as long as it takes (for supervisors, which bound their own children's stops).
    Infinity,
    /// Kill at once.
    Kill,
}

/// Why a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It finished on its own without reporting a failure.
    Normal,
    /// It was stopped at its supervisor's request and complied.
    Shutdown,
    /// It reported a failure (see [`ExitSlot::fail`]) or could not be started.
    Failed(String),
    /// It panicked; the panic message.
    Panicked(String),
    /// It was killed: it ignored a stop request for longer than its shutdown timeout, or was killed outright.
    Killed,
}

impl ExitReason {
    /// Failure, panic or kill: what a transient child is restarted for.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal exit"),
            ExitReason::Shutdown => f.write_str("shut down"),
            ExitReason::Failed(why) => write!(f, "failed: {why}"),
            ExitReason::Panicked(msg) => write!(f, "panicked: {msg}"),
            ExitReason::Killed => f.write_str("killed"),
        }
    }
}

/// Where a running child records why it is about to stop, and whether its current run has been healthy.
/// Shared between the child and its supervisor; the supervisor reads it when the child's task ends. An unset
/// reason means [`ExitReason::Normal`]. Every start gets a fresh slot, so both belong to one run.
#[derive(Debug, Clone, Default)]
pub struct ExitSlot(Arc<SlotState>);

#[derive(Debug, Default)]
struct SlotState {
    reason: Mutex<Option<ExitReason>>,
    healthy: AtomicBool,
}

impl ExitSlot {
    /// Record a failure; the child should then stop (an actor: `ctx.stop()`).
    pub fn fail(&self, why: impl Into<String>) {
        self.set(ExitReason::Failed(why.into()));
    }
    /// Record any reason (the first one recorded wins).
    pub fn set(&self, reason: ExitReason) {
        let mut slot = self.0.reason.lock().expect("exit slot poisoned");
        if slot.is_none() {
            *slot = Some(reason);
        }
    }
    /// Declare the current run healthy (e.g. a recorder that has finished its first segment). When this run
    /// ends, however it ends, its child's backoff schedule starts over and, unless
    /// [`BackoffPolicy::immediate_after_healthy`] is off, the child is restarted at once. Idempotent; it does
    /// not record an exit reason.
    pub fn healthy(&self) {
        self.0.healthy.store(true, Ordering::Release);
    }
    /// Whether [`ExitSlot::healthy`] has been called during this run.
    pub fn is_healthy(&self) -> bool {
        self.0.healthy.load(Ordering::Acquire)
    }
    pub(crate) fn take(&self) -> Option<ExitReason> {
        self.0.reason.lock().expect("exit slot poisoned").take()
    }
}

/// What a child's start function is given.
#[derive(Debug, Clone)]
pub struct ChildContext {
    /// The child's id within its supervisor.
    pub id: String,
    /// Full path in the tree, e.g. `root/cameras/cam1`.
    pub path: String,
    /// How many times this child has been started before (0 on the first start).
    pub generation: u64,
    /// Report an abnormal exit here before stopping, and call [`ExitSlot::healthy`] once the run is healthy.
    pub exit: ExitSlot,
    pub(crate) env: Env,
}

impl ChildContext {
    /// The clock the tree runs on (inject the same clock into the child's own timers).
    pub fn clock(&self) -> Arc<dyn crate::Clock> {
        self.env.clock.clone()
    }
}

/// A stop request sent to a supervised actor. The usual handler calls `ctx.stop()`, after cleaning up.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Terminate;

type StopFn = Box<dyn FnOnce()>;

/// A started (not yet running) child: the future that is its whole life, and how to ask it to stop.
/// The supervisor spawns the future on the current actix arbiter, so it can see the child end, panic or be
/// aborted.
pub struct ChildHandle {
    pub(crate) run: Pin<Box<dyn Future<Output = ExitReason>>>,
    pub(crate) stop: Option<StopFn>,
    pub(crate) nested: Option<crate::SupervisorHandle>,
}

impl fmt::Debug for ChildHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildHandle").finish_non_exhaustive()
    }
}

impl ChildHandle {
    /// Supervise an actix actor. Returns the handle for the supervisor and the actor's address for the caller.
    /// The actor stops on [`Terminate`]; it reports failures through `cx.exit` before stopping itself.
    pub fn actor<A>(cx: &ChildContext, actor: A) -> (ChildHandle, Addr<A>)
    where
        A: Actor<Context = Context<A>> + Handler<Terminate>,
    {
        let ctx: Context<A> = Context::new();
        let addr = ctx.address();
        let fut = ctx.into_future(actor);
        let slot = cx.exit.clone();
        let stop_addr = addr.clone();
        let handle = ChildHandle {
            run: Box::pin(async move {
                fut.await;
                slot.take().unwrap_or(ExitReason::Normal)
            }),
            stop: Some(Box::new(move || stop_addr.do_send(Terminate))),
            nested: None,
        };
        (handle, addr)
    }

    /// Supervise a plain future. `stop` asks it to finish (e.g. cancels a token it watches); if it is not done
    /// within the shutdown timeout its task is aborted.
    pub fn task<F>(run: F, stop: impl FnOnce() + 'static) -> ChildHandle
    where
        F: Future<Output = ExitReason> + 'static,
    {
        ChildHandle {
            run: Box::pin(run),
            stop: Some(Box::new(stop)),
            nested: None,
        }
    }
}

/// A cheap readiness check (e.g. "does the camera answer?") run while a child waits out a long backoff.
pub type ProbeFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool>>> + Send + Sync>;

/// A readiness probe: tried every `interval` while the child waits for a restart that is at least two
/// intervals away; when it passes, the child (and siblings waiting with it) restart at once.
#[derive(Clone)]
pub struct Probe {
    pub(crate) interval: Duration,
    pub(crate) check: ProbeFn,
}

/// The function a supervisor calls to (re)start a worker.
pub type StartFn = Arc<dyn Fn(&ChildContext) -> Result<ChildHandle, String> + Send + Sync>;
/// Builds a nested supervisor's spec each time it (re)starts, so it can follow current configuration.
pub type SpecFn = Arc<dyn Fn() -> SupervisorSpec + Send + Sync>;

#[derive(Clone)]
pub(crate) enum ChildKind {
    Worker { start: StartFn, about: String },
    Supervisor(SpecFn),
}

/// The declaration of one child: id, how to start it, when to restart it, how to stop it.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) backoff: Option<BackoffPolicy>,
    pub(crate) probe: Option<Probe>,
    pub(crate) kind: ChildKind,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A worker: permanent, 5 s graceful shutdown, the supervisor's backoff policy.
    pub fn worker<F>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(&ChildContext) -> Result<ChildHandle, String> + Send + Sync + 'static,
    {
        ChildSpec {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            backoff: None,
            probe: None,
            kind: ChildKind::Worker {
                start: Arc::new(start),
                about: String::new(),
            },
        }
    }

    /// A nested supervisor, built from a fixed spec. Permanent, waits for its children to stop.
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        let id = spec.name.clone();
        Self::supervisor_fn(id, move || spec.clone())
    }

    /// A nested supervisor whose spec is produced anew at every (re)start.
    pub fn supervisor_fn<F>(id: impl Into<String>, spec: F) -> Self
    where
        F: Fn() -> SupervisorSpec + Send + Sync + 'static,
    {
        ChildSpec {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Shutdown::Infinity,
            backoff: None,
            probe: None,
            kind: ChildKind::Supervisor(Arc::new(spec)),
        }
    }

    /// Set the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Set how the child is stopped.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Use this backoff policy instead of the supervisor's.
    pub fn backoff(mut self, policy: BackoffPolicy) -> Self {
        self.backoff = Some(policy);
        self
    }

    /// While this child waits out a backoff delay of at least two `interval`s, run `check` every `interval`;
    /// as soon as it returns true the child is restarted without waiting for the rest of the delay. For a
    /// process that depends on something external (a camera), this makes recovery as fast as the dependency
    /// comes back, whatever the backoff has grown to.
    pub fn probe<F, Fut>(mut self, interval: Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + 'static,
    {
        self.probe = Some(Probe {
            interval,
            check: Arc::new(move || Box::pin(check())),
        });
        self
    }

    /// A one-line description shown by tree printing.
    pub fn about(mut self, text: impl Into<String>) -> Self {
        if let ChildKind::Worker { about, .. } = &mut self.kind {
            *about = text.into();
        }
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The child's restart type.
    pub fn restart_type(&self) -> Restart {
        self.restart
    }
}
