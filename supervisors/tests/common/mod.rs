//! Test harness shared by the supervision tests: a scriptable worker actor, a log of lifecycle steps, and
//! helpers to wait for events under a simulated clock.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use supervisors::{
    ChildContext, ChildHandle, ChildSpec, Event, EventKind, ExitSlot, FixedJitter, Runtime,
    SimClock, Terminate,
};
use tokio::sync::broadcast;

/// What happened to the workers, in order: "start a", "stop a", "drop a".
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    pub fn count(&self, s: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|x| *x == s).count()
    }
}

/// Current address of each worker by id.
#[derive(Clone, Default)]
pub struct Addrs(Arc<Mutex<HashMap<String, Addr<Worker>>>>);

impl Addrs {
    pub fn get(&self, id: &str) -> Addr<Worker> {
        self.0
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("worker {id} never started"))
    }
}

pub struct Worker {
    id: String,
    exit: ExitSlot,
    log: Log,
    ignore_stop: bool,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.log.push(format!("drop {}", self.id));
    }
}

impl Handler<Terminate> for Worker {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        if !self.ignore_stop {
            self.log.push(format!("stop {}", self.id));
            ctx.stop();
        }
    }
}

/// Scripted behaviours.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Do {
    /// Declare the current run healthy ([`ExitSlot::healthy`]) and keep running.
    Healthy,
    Fail,
    Finish,
    Panic,
}

impl Handler<Do> for Worker {
    type Result = ();
    fn handle(&mut self, msg: Do, ctx: &mut Context<Self>) {
        match msg {
            Do::Healthy => self.exit.healthy(),
            Do::Fail => {
                self.exit.fail(format!("{} was told to fail", self.id));
                ctx.stop();
            }
            Do::Finish => ctx.stop(),
            Do::Panic => panic!("{} was told to panic", self.id),
        }
    }
}

#[derive(Clone, Default)]
pub struct World {
    pub log: Log,
    pub addrs: Addrs,
}

impl World {
    pub fn worker(&self, id: &str) -> ChildSpec {
        self.worker_with(id, false)
    }

    /// A worker that ignores [`Terminate`].
    pub fn stubborn(&self, id: &str) -> ChildSpec {
        self.worker_with(id, true)
    }

    fn worker_with(&self, id: &str, ignore_stop: bool) -> ChildSpec {
        let world = self.clone();
        let wid = id.to_string();
        ChildSpec::worker(id, move |cx: &ChildContext| {
            world.log.push(format!("start {wid}"));
            let (h, addr) = ChildHandle::actor(
                cx,
                Worker {
                    id: wid.clone(),
                    exit: cx.exit.clone(),
                    log: world.log.clone(),
                    ignore_stop,
                },
            );
            world.addrs.0.lock().unwrap().insert(wid.clone(), addr);
            Ok(h)
        })
    }

    pub fn send(&self, id: &str, what: Do) {
        self.addrs.get(id).do_send(what);
    }
}

pub struct Harness {
    pub clock: SimClock,
    pub runtime: Runtime,
    pub events: broadcast::Receiver<Event>,
}

impl Harness {
    /// Simulated clock, jitter fixed at the midpoint (so delays equal the un-jittered schedule).
    pub fn new() -> Self {
        Self::with_runtime(|r| r.with_jitter(FixedJitter(0.5)))
    }

    pub fn with_runtime(f: impl FnOnce(Runtime) -> Runtime) -> Self {
        let clock = SimClock::new();
        let runtime = f(Runtime::new().with_clock(clock.clone()));
        let events = runtime.events().subscribe();
        Harness {
            clock,
            runtime,
            events,
        }
    }

    /// The next event matching `pred`, skipping others; fails the test after 5 s of real time.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(e)) if pred(&e) => return e,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => panic!("event stream broke while waiting for {what}: {e}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn started(&mut self, child: &str) -> u64 {
        let e = self
            .expect(
                &format!("{child} started"),
                |e| matches!(&e.kind, EventKind::Started { child: c, .. } if c == child),
            )
            .await;
        match e.kind {
            EventKind::Started { generation, .. } => generation,
            _ => unreachable!(),
        }
    }

    /// Waits for `child` to exit; returns the whole event.
    pub async fn exited(&mut self, child: &str) -> Event {
        self.expect(
            &format!("{child} exited"),
            |e| matches!(&e.kind, EventKind::Exited { child: c, .. } if c == child),
        )
        .await
    }

    /// Waits for the restart decision of `child`; returns (attempt, delay).
    pub async fn restarting(&mut self, child: &str) -> (u32, Duration) {
        let e = self
            .expect(
                &format!("{child} restarting"),
                |e| matches!(&e.kind, EventKind::Restarting { child: c, .. } if c == child),
            )
            .await;
        match e.kind {
            EventKind::Restarting { attempt, delay, .. } => (attempt, delay),
            _ => unreachable!(),
        }
    }

    /// Lets every ready task run (messages, exits, starts) without moving the clock.
    pub async fn settle(&self) {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    /// Moves the simulated clock and lets everything react.
    pub async fn advance(&self, d: Duration) {
        self.settle().await;
        self.clock.advance(d);
        self.settle().await;
    }

    /// Events emitted so far that nobody has read.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
