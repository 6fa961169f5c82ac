//! The supervisor itself: a spec ([`SupervisorSpec`]), the runtime that starts a tree ([`Runtime`]), the handle
//! to talk to a running supervisor ([`SupervisorHandle`]), and the run loop that applies strategies, restart
//! intensity and backoff.
//!
//! A supervisor is a single local task on the actix arbiter that owns its children. Each child's life is a
//! future spawned with `actix_rt::spawn`, so a panic in the child ends only that task and is seen here as
//! [`ExitReason::Panicked`]. The loop waits on three things: commands from handles, child exits, and the earliest
//! pending restart deadline on the injected clock.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::child::{
    ChildContext, ChildHandle, ChildKind, ChildSpec, ExitReason, ExitSlot, Restart, Shutdown,
};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::event::{Event, EventBus, EventKind};
use crate::jitter::{FastRandJitter, Jitter};

/// How a supervisor reacts when a child has to be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only that child.
    OneForOne,
    /// Stop all other children (in reverse order) and restart all (in order).
    OneForAll,
    /// Stop the children started after it (in reverse order) and restart it and them (in order).
    RestForOne,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

/// Restart intensity: more than `max_restarts` restarts within `within` make the supervisor give up: it stops
/// all children and exits with a failure, so its parent decides (at the root: the process exits non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

/// The declaration of a supervisor: name, strategy, intensity, default backoff and ordered children.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) backoff: BackoffPolicy,
    pub(crate) children: Vec<ChildSpec>,
    pub(crate) dynamic: Option<String>,
}

impl SupervisorSpec {
    /// A one_for_one supervisor with default intensity (10 in 60 s) and backoff, and no children.
    pub fn new(name: impl Into<String>) -> Self {
        SupervisorSpec {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: BackoffPolicy::default(),
            children: Vec::new(),
            dynamic: None,
        }
    }
    /// Set the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Set the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            within,
        };
        self
    }
    /// Set the default backoff policy of the children.
    pub fn backoff(mut self, policy: BackoffPolicy) -> Self {
        self.backoff = policy;
        self
    }
    /// Append a child (children start in the order they are added).
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
    /// Note, for tree printing, that children are also added at run time (and what they are).
    pub fn dynamic_children(mut self, about: impl Into<String>) -> Self {
        self.dynamic = Some(about.into());
        self
    }
    /// The supervisor's name (its id in its parent).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The declared children.
    pub fn children(&self) -> &[ChildSpec] {
        &self.children
    }

    /// Renders the declared tree, one line per node, with box-drawing branches.
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}  [{}]", self.name, self.describe());
        self.render_children("", &mut out);
        out
    }

    fn describe(&self) -> String {
        format!(
            "supervisor, {}, at most {} restarts in {} s",
            self.strategy.name(),
            self.intensity.max_restarts,
            self.intensity.within.as_secs()
        )
    }

    fn render_children(&self, prefix: &str, out: &mut String) {
        let n = self.children.len() + usize::from(self.dynamic.is_some());
        for (i, c) in self.children.iter().enumerate() {
            let last = i + 1 == n;
            let (branch, cont) = if last {
                ("└── ", "    ")
            } else {
                ("├── ", "│   ")
            };
            let restart = format!("{:?}", c.restart).to_lowercase();
            match &c.kind {
                ChildKind::Worker { about, .. } => {
                    let about = if about.is_empty() {
                        String::new()
                    } else {
                        format!(": {about}")
                    };
                    let _ = writeln!(out, "{prefix}{branch}{}  [worker, {restart}]{about}", c.id);
                }
                ChildKind::Supervisor(f) => {
                    let spec = f();
                    let _ = writeln!(
                        out,
                        "{prefix}{branch}{}  [{}, {restart}]",
                        c.id,
                        spec.describe()
                    );
                    spec.render_children(&format!("{prefix}{cont}"), out);
                }
            }
        }
        if let Some(d) = &self.dynamic {
            let _ = writeln!(out, "{prefix}└── …  (added at run time: {d})");
        }
    }
}

/// What a whole tree shares: clock, jitter source and event bus.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) jitter: Arc<dyn Jitter>,
    pub(crate) events: EventBus,
}

/// Starts supervision trees with an injected clock and jitter source, and hands out their event stream.
#[derive(Debug, Clone)]
pub struct Runtime {
    env: Env,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// Real clock, random jitter.
    pub fn new() -> Self {
        Runtime {
            env: Env {
                clock: Arc::new(SystemClock),
                jitter: Arc::new(FastRandJitter::new()),
                events: EventBus::default(),
            },
        }
    }
    /// Use this clock (e.g. a [`crate::SimClock`] in tests).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.env.clock = Arc::new(clock);
        self
    }
    /// Use this jitter source.
    pub fn with_jitter(mut self, jitter: impl Jitter) -> Self {
        self.env.jitter = Arc::new(jitter);
        self
    }
    /// The tree's event bus.
    pub fn events(&self) -> &EventBus {
        &self.env.events
    }
    /// The tree's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.env.clock.clone()
    }
    /// Start `spec` as a root supervisor on the current actix arbiter (call inside a running `actix::System`).
    pub fn start(&self, spec: SupervisorSpec) -> SupervisorHandle {
        let path = spec.name.clone();
        let (handle, run) = supervisor_task(spec, path, self.env.clone());
        actix_rt::spawn(run);
        handle
    }
}

enum Cmd {
    Add(ChildSpec, oneshot::Sender<Result<(), Error>>),
    Remove(String, oneshot::Sender<Result<(), Error>>),
    Which(oneshot::Sender<Vec<ChildInfo>>),
    Nested(String, oneshot::Sender<Result<SupervisorHandle, Error>>),
    Shutdown,
}

/// A child's state as reported by [`SupervisorHandle::which_children`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildState {
    /// Running since `since`, started `generation` times before.
    Running { since: Instant, generation: u64 },
    /// Waiting to be restarted at `until`.
    Restarting { until: Instant, attempt: u32 },
    /// Not running and not to be restarted (a transient child that finished normally).
    Done,
}

/// One child of a running supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    pub id: String,
    pub restart: Restart,
    pub supervisor: bool,
    pub state: ChildState,
}

/// A cheap, cloneable, thread-safe handle to a running supervisor.
#[derive(Clone, Debug)]
pub struct SupervisorHandle {
    path: String,
    cmd: mpsc::UnboundedSender<Cmd>,
    done: watch::Receiver<Option<ExitReason>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl SupervisorHandle {
    /// The supervisor's path in the tree.
    pub fn path(&self) -> &str {
        &self.path
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .map_err(|_| Error::Stopped(self.path.clone()))?;
        rx.await.map_err(|_| Error::Stopped(self.path.clone()))
    }

    /// Add a child at the end and start it.
    pub async fn add_child(&self, spec: ChildSpec) -> Result<(), Error> {
        self.ask(|tx| Cmd::Add(spec, tx)).await?
    }
    /// Stop a child (gracefully, per its shutdown policy) and forget it.
    pub async fn remove_child(&self, id: &str) -> Result<(), Error> {
        self.ask(|tx| Cmd::Remove(id.to_string(), tx)).await?
    }
    /// The children, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, Error> {
        self.ask(Cmd::Which).await
    }
    /// The handle of a running nested supervisor (it changes when that supervisor restarts).
    pub async fn supervisor(&self, id: &str) -> Result<SupervisorHandle, Error> {
        self.ask(|tx| Cmd::Nested(id.to_string(), tx)).await?
    }
    /// Ask the supervisor to stop its children in reverse order and exit; returns once it has.
    pub async fn shutdown(&self) -> ExitReason {
        let _ = self.cmd.send(Cmd::Shutdown);
        self.wait().await
    }
    /// Wait until the supervisor has exited: [`ExitReason::Shutdown`] after a requested shutdown,
    /// [`ExitReason::Failed`] after an escalation.
    pub async fn wait(&self) -> ExitReason {
        let mut done = self.done.clone();
        match done.wait_for(|d| d.is_some()).await {
            Ok(v) => v.clone().unwrap_or(ExitReason::Killed),
            Err(_) => ExitReason::Killed,
        }
    }
    /// The exit reason if it has exited.
    pub fn exited(&self) -> Option<ExitReason> {
        self.done.borrow().clone()
    }
}

/// Builds a supervisor: its handle and the future that is its whole life (ending with its exit reason).
pub(crate) fn supervisor_task(
    spec: SupervisorSpec,
    path: String,
    env: Env,
) -> (SupervisorHandle, Pin<Box<dyn Future<Output = ExitReason>>>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = watch::channel(None);
    let handle = SupervisorHandle {
        path: path.clone(),
        cmd: cmd_tx.clone(),
        done: done_rx,
    };
    let run = async move {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probes_tx, probes_rx) = mpsc::unbounded_channel();
        let mut sup = Sup {
            path,
            strategy: spec.strategy,
            intensity: spec.intensity,
            default_backoff: spec.backoff,
            children: Vec::new(),
            restarts: VecDeque::new(),
            env,
            exits_tx,
            probes_tx,
            _keep_cmd_open: cmd_tx,
        };
        for c in spec.children {
            sup.push_child(c);
        }
        let reason = sup.run(cmd_rx, exits_rx, probes_rx).await;
        done_tx.send_replace(Some(reason.clone()));
        reason
    };
    (handle, Box::pin(run))
}

struct Exit {
    id: String,
    generation: u64,
    reason: ExitReason,
}

struct Running {
    generation: u64,
    since: Instant,
    /// The run's exit slot (read for its healthy mark when it ends); `None` when the start itself failed.
    exit: Option<ExitSlot>,
    stop: Option<Box<dyn FnOnce()>>,
    abort: Option<AbortHandle>,
    done: watch::Receiver<Option<ExitReason>>,
    nested: Option<SupervisorHandle>,
}

enum State {
    Running(Running),
    Waiting { until: Instant, attempt: u32 },
    Done,
}

struct Slot {
    spec: ChildSpec,
    backoff: Backoff,
    starts: u64,
    state: State,
    /// The readiness probe running while the child waits, if any.
    prober: Option<AbortHandle>,
}

struct Sup {
    path: String,
    strategy: Strategy,
    intensity: Intensity,
    default_backoff: BackoffPolicy,
    children: Vec<Slot>,
    restarts: VecDeque<Instant>,
    env: Env,
    exits_tx: mpsc::UnboundedSender<Exit>,
    probes_tx: mpsc::UnboundedSender<(String, Instant)>,
    _keep_cmd_open: mpsc::UnboundedSender<Cmd>,
}

impl Drop for Sup {
    /// If the supervisor itself is aborted or panics, its children must not outlive it.
    fn drop(&mut self) {
        for slot in &mut self.children {
            if let Some(p) = &slot.prober {
                p.abort();
            }
            if let State::Running(r) = &slot.state
                && let Some(a) = &r.abort
            {
                a.abort();
            }
        }
    }
}

enum Flow {
    Continue,
    Exit(ExitReason),
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

async fn wait_done(mut done: watch::Receiver<Option<ExitReason>>) -> ExitReason {
    match done.wait_for(|d| d.is_some()).await {
        Ok(v) => v.clone().unwrap_or(ExitReason::Killed),
        Err(_) => ExitReason::Killed,
    }
}

impl Sup {
    fn emit(&self, kind: EventKind) {
        self.env.events.emit(Event {
            at: self.env.clock.now(),
            supervisor: self.path.clone(),
            kind,
        });
    }

    fn push_child(&mut self, spec: ChildSpec) {
        let policy = spec.backoff.unwrap_or(self.default_backoff);
        self.children.push(Slot {
            spec,
            backoff: Backoff::new(policy),
            starts: 0,
            prober: None,
            state: State::Waiting {
                until: self.env.clock.now(),
                attempt: 0,
            },
        });
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|s| s.spec.id == id)
    }

    async fn run(
        &mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut exits: mpsc::UnboundedReceiver<Exit>,
        mut probes: mpsc::UnboundedReceiver<(String, Instant)>,
    ) -> ExitReason {
        self.start_due();
        loop {
            let clock = self.env.clock.clone();
            let next = self.next_deadline();
            let timer = async move {
                match next {
                    Some(t) => clock.sleep(t.saturating_duration_since(clock.now())).await,
                    None => std::future::pending().await,
                }
            };
            let flow = tokio::select! {
                biased;
                Some(exit) = exits.recv() => self.on_exit(exit).await,
                Some(cmd) = cmds.recv() => self.on_cmd(cmd).await,
                Some((id, until)) = probes.recv() => { self.on_probe_passed(&id, until); Flow::Continue }
                () = timer => { self.start_due(); Flow::Continue }
            };
            if let Flow::Exit(reason) = flow {
                return reason;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.children
            .iter()
            .filter_map(|s| match s.state {
                State::Waiting { until, .. } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Start, in order, every waiting child whose time has come. Under one_for_all and rest_for_one a child
    /// never starts before an earlier child that is still waiting.
    fn start_due(&mut self) {
        let now = self.env.clock.now();
        for i in 0..self.children.len() {
            match self.children[i].state {
                State::Waiting { until, .. } if until <= now => self.start_child(i),
                State::Waiting { .. } if self.strategy != Strategy::OneForOne => break,
                _ => {}
            }
        }
    }

    fn start_child(&mut self, i: usize) {
        let env = self.env.clone();
        let slot = &mut self.children[i];
        if let Some(p) = slot.prober.take() {
            p.abort();
        }
        let generation = slot.starts;
        slot.starts += 1;
        let id = slot.spec.id.clone();
        let cx = ChildContext {
            id: id.clone(),
            path: format!("{}/{}", self.path, id),
            generation,
            exit: ExitSlot::default(),
            env: env.clone(),
        };
        let started = match &slot.spec.kind {
            ChildKind::Worker { start, .. } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| start(&cx))) {
                    Ok(r) => r,
                    Err(p) => Err(format!("start panicked: {}", panic_message(&*p))),
                }
            }
            ChildKind::Supervisor(make) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| make())) {
                    Ok(spec) => {
                        let (h, run) = supervisor_task(spec, cx.path.clone(), env);
                        let stop_h = h.clone();
                        Ok(ChildHandle {
                            run,
                            stop: Some(Box::new(move || {
                                let _ = stop_h.cmd.send(Cmd::Shutdown);
                            })),
                            nested: Some(h),
                        })
                    }
                    Err(p) => Err(format!(
                        "building the supervisor spec panicked: {}",
                        panic_message(&*p)
                    )),
                }
            }
        };
        let now = self.env.clock.now();
        let (done_tx, done_rx) = watch::channel(None);
        match started {
            Ok(handle) => {
                let join = actix_rt::spawn(handle.run);
                let abort = join.abort_handle();
                let exits = self.exits_tx.clone();
                let cid = id.clone();
                actix_rt::spawn(async move {
                    let reason = match join.await {
                        Ok(r) => r,
                        Err(e) if e.is_panic() => {
                            ExitReason::Panicked(panic_message(&*e.into_panic()))
                        }
                        Err(_) => ExitReason::Killed,
                    };
                    done_tx.send_replace(Some(reason.clone()));
                    let _ = exits.send(Exit {
                        id: cid,
                        generation,
                        reason,
                    });
                });
                self.children[i].state = State::Running(Running {
                    generation,
                    since: now,
                    exit: Some(cx.exit.clone()),
                    stop: handle.stop,
                    abort: Some(abort),
                    done: done_rx,
                    nested: handle.nested,
                });
                self.emit(EventKind::Started {
                    child: id,
                    generation,
                });
            }
            Err(why) => {
                let reason = ExitReason::Failed(format!("could not start: {why}"));
                done_tx.send_replace(Some(reason.clone()));
                self.children[i].state = State::Running(Running {
                    generation,
                    since: now,
                    exit: None,
                    stop: None,
                    abort: None,
                    done: done_rx,
                    nested: None,
                });
                let _ = self.exits_tx.send(Exit {
                    id,
                    generation,
                    reason,
                });
            }
        }
    }

    async fn on_exit(&mut self, exit: Exit) -> Flow {
        let Some(i) = self.index_of(&exit.id) else {
            return Flow::Continue;
        };
        let (since, run) = match &self.children[i].state {
            State::Running(r) if r.generation == exit.generation => (r.since, r.exit.clone()),
            _ => return Flow::Continue, // stale: already stopped by us, or an older generation
        };
        let now = self.env.clock.now();
        let ran_for = now.saturating_duration_since(since);
        // Healthy: declared so by the child, or long enough. A start that failed was no run at all (so even
        // `reset_after: 0` cannot turn a start that keeps failing into a loop of immediate restarts).
        let healthy = run.is_some_and(|slot| {
            slot.is_healthy() || ran_for >= self.children[i].backoff.policy().reset_after
        });
        self.children[i].state = State::Done;
        self.emit(EventKind::Exited {
            child: exit.id.clone(),
            reason: exit.reason.clone(),
            ran_for,
            healthy,
        });
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => exit.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            if self.children[i].spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
            return Flow::Continue;
        }

        // Restart intensity.
        self.restarts.push_back(now);
        while let Some(&t) = self.restarts.front() {
            if now.saturating_duration_since(t) >= self.intensity.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() > self.intensity.max_restarts as usize {
            self.emit(EventKind::Escalated {
                restarts: self.restarts.len(),
                max_restarts: self.intensity.max_restarts,
                within: self.intensity.within,
            });
            self.stop_all().await;
            return Flow::Exit(ExitReason::Failed(format!(
                "restart intensity exceeded: {} restarts within {} s (last: {} {})",
                self.restarts.len(),
                self.intensity.within.as_secs(),
                exit.id,
                exit.reason
            )));
        }

        // Intensity above counts every restart, immediate ones included: a child that declares itself healthy
        // and exits in a loop still escalates.
        let slot = &mut self.children[i];
        if healthy {
            slot.backoff.after_healthy_run();
        }
        let (attempt, delay) = slot.backoff.next_delay(&*self.env.jitter);
        let until = now + delay;
        slot.state = State::Waiting { until, attempt };
        self.start_probe(i, until, delay);
        self.emit(EventKind::Restarting {
            child: exit.id.clone(),
            attempt,
            delay,
            cause: exit.reason.to_string(),
            healthy,
        });

        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![],
            Strategy::OneForAll => (0..self.children.len()).filter(|&j| j != i).collect(),
            Strategy::RestForOne => (i + 1..self.children.len()).collect(),
        };
        let cause = format!(
            "restarted along with {} ({})",
            exit.id,
            self.strategy.name()
        );
        let mut gone = Vec::new();
        for &j in group.iter().rev() {
            let was_running = matches!(self.children[j].state, State::Running(_));
            if was_running {
                self.stop_child(j).await;
            }
            let slot = &mut self.children[j];
            match slot.state {
                State::Done if !was_running => continue, // finished transient: stays finished
                _ if slot.spec.restart == Restart::Temporary => gone.push(slot.spec.id.clone()),
                _ => {
                    slot.state = State::Waiting { until, attempt: 0 };
                    let child = slot.spec.id.clone();
                    self.emit(EventKind::Restarting {
                        child,
                        attempt: 0,
                        delay,
                        cause: cause.clone(),
                        healthy: false,
                    });
                }
            }
        }
        self.children.retain(|s| !gone.contains(&s.spec.id));
        Flow::Continue
    }

    /// While child `i` waits until `until`, run its readiness probe (if it has one and the wait is long enough).
    fn start_probe(&mut self, i: usize, until: Instant, delay: Duration) {
        let slot = &mut self.children[i];
        let Some(probe) = slot.spec.probe.clone() else {
            return;
        };
        if delay < probe.interval * 2 {
            return;
        }
        if let Some(p) = slot.prober.take() {
            p.abort();
        }
        let clock = self.env.clock.clone();
        let tx = self.probes_tx.clone();
        let id = slot.spec.id.clone();
        let task = actix_rt::spawn(async move {
            loop {
                clock.sleep(probe.interval).await;
                if clock.now() >= until {
                    return;
                }
                if (probe.check)().await {
                    let _ = tx.send((id, until));
                    return;
                }
            }
        });
        slot.prober = Some(task.abort_handle());
    }

    /// A probe passed: restart the child now, with the siblings that wait for the same deadline.
    fn on_probe_passed(&mut self, id: &str, until: Instant) {
        let Some(i) = self.index_of(id) else { return };
        if !matches!(self.children[i].state, State::Waiting { until: u, .. } if u == until) {
            return; // stale: it restarted or was stopped meanwhile
        }
        let now = self.env.clock.now();
        for slot in &mut self.children {
            if let State::Waiting { until: u, .. } = &mut slot.state
                && *u == until
            {
                *u = now;
            }
        }
        self.emit(EventKind::Probed {
            child: id.to_string(),
            saved: until.saturating_duration_since(now),
        });
        self.start_due();
    }

    /// Stop one running child per its shutdown policy; leaves it `Done`.
    async fn stop_child(&mut self, i: usize) -> ExitReason {
        let State::Running(mut r) = std::mem::replace(&mut self.children[i].state, State::Done)
        else {
            return ExitReason::Shutdown;
        };
        let shutdown = self.children[i].spec.shutdown;
        let id = self.children[i].spec.id.clone();
        let abort = |r: &Running| {
            if let Some(a) = &r.abort {
                a.abort();
            }
        };
        if shutdown == Shutdown::Kill {
            abort(&r);
        } else if let Some(stop) = r.stop.take() {
            stop();
        }
        let reason = match shutdown {
            Shutdown::Kill | Shutdown::Infinity => wait_done(r.done.clone()).await,
            Shutdown::Timeout(d) => {
                let sleep = self.env.clock.sleep(d);
                tokio::select! {
                    reason = wait_done(r.done.clone()) => reason,
                    () = sleep => {
                        abort(&r);
                        wait_done(r.done.clone()).await
                    }
                }
            }
        };
        let reason = match reason {
            ExitReason::Normal => ExitReason::Shutdown,
            other => other,
        };
        self.emit(EventKind::Stopped {
            child: id,
            killed: reason == ExitReason::Killed,
        });
        reason
    }

    /// Stop every running child, last started first.
    async fn stop_all(&mut self) {
        for i in (0..self.children.len()).rev() {
            if matches!(self.children[i].state, State::Running(_)) {
                self.stop_child(i).await;
            } else {
                self.children[i].state = State::Done;
            }
        }
    }

    async fn on_cmd(&mut self, cmd: Cmd) -> Flow {
        match cmd {
            Cmd::Add(spec, reply) => {
                if self.index_of(&spec.id).is_some() {
                    let _ = reply.send(Err(Error::DuplicateChild(spec.id.clone())));
                } else {
                    self.push_child(spec);
                    self.start_child(self.children.len() - 1);
                    let _ = reply.send(Ok(()));
                }
            }
            Cmd::Remove(id, reply) => match self.index_of(&id) {
                Some(i) => {
                    self.stop_child(i).await;
                    if let Some(p) = self.children.remove(i).prober {
                        p.abort();
                    }
                    let _ = reply.send(Ok(()));
                }
                None => {
                    let _ = reply.send(Err(Error::NoSuchChild(id)));
                }
            },
            Cmd::Which(reply) => {
                let infos = self
                    .children
                    .iter()
                    .map(|s| ChildInfo {
                        id: s.spec.id.clone(),
                        restart: s.spec.restart,
                        supervisor: matches!(s.spec.kind, ChildKind::Supervisor(_)),
                        state: match &s.state {
                            State::Running(r) => ChildState::Running {
                                since: r.since,
                                generation: r.generation,
                            },
                            State::Waiting { until, attempt } => ChildState::Restarting {
                                until: *until,
                                attempt: *attempt,
                            },
                            State::Done => ChildState::Done,
                        },
                    })
                    .collect();
                let _ = reply.send(infos);
            }
            Cmd::Nested(id, reply) => {
                let answer = match self.index_of(&id) {
                    None => Err(Error::NoSuchChild(id)),
                    Some(i) => match &self.children[i].state {
                        State::Running(Running {
                            nested: Some(h), ..
                        }) => Ok(h.clone()),
                        _ => Err(Error::NotASupervisor(id)),
                    },
                };
                let _ = reply.send(answer);
            }
            Cmd::Shutdown => {
                self.stop_all().await;
                return Flow::Exit(ExitReason::Shutdown);
            }
        }
        Flow::Continue
    }
}
