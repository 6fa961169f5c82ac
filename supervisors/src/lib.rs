//! OTP-style supervision for actix actors and local tasks.
//!
//! actix's own `Supervisor` restarts an actor at once, without limit, and does not survive a panic. This crate
//! gives what a program that must run unattended for months needs:
//!
//! - **child specs** ([`ChildSpec`]): an id, a start function, a restart type ([`Restart::Permanent`],
//!   [`Restart::Transient`], [`Restart::Temporary`]) and a shutdown policy ([`Shutdown`]: ask, wait, then kill);
//! - **strategies** ([`Strategy`]): one_for_one, one_for_all, rest_for_one; children start in order and stop in
//!   reverse order;
//! - **restart intensity** ([`Intensity`]): more than R restarts within T and the supervisor stops its children
//!   and exits with a failure, so its parent decides; at the root, [`SupervisorHandle::wait`] returns the failure
//!   and the program should exit non-zero;
//! - **backoff** ([`BackoffPolicy`]): per-child capped exponential delays with jitter, for repeated failure:
//!   after a healthy run (declared with [`ExitSlot::healthy`], or long enough) the schedule resets and the first
//!   restart is immediate;
//! - **panics** in a child are caught (each child runs in its own task) and treated as abnormal exits;
//! - **readiness probes** ([`ChildSpec::probe`]): a child waiting out a long backoff restarts as soon as its
//!   dependency answers;
//! - **dynamic children**: [`SupervisorHandle::add_child`] / [`SupervisorHandle::remove_child`];
//! - an **event stream** ([`EventBus`]) of started / exited / restarting / stopped / escalated, also logged with
//!   `tracing`;
//! - an **injectable clock** ([`Clock`], [`SimClock`]) and **jitter source** ([`Jitter`]) so every rule can be
//!   tested under simulated time.
//!
//! # Example
//!
//! A worker actor that fails when told to, supervised with backoff:
//!
//! ```
//! use std::time::Duration;
//! use actix::prelude::*;
//! use supervisors::{
//!     BackoffPolicy, ChildContext, ChildHandle, ChildSpec, EventKind, ExitSlot, Runtime, SupervisorSpec,
//!     Terminate,
//! };
//!
//! struct Worker { exit: ExitSlot }
//! impl Actor for Worker { type Context = Context<Self>; }
//! impl Handler<Terminate> for Worker {
//!     type Result = ();
//!     fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) { ctx.stop() }
//! }
//! #[derive(Message)]
//! #[rtype(result = "()")]
//! struct Break;
//! impl Handler<Break> for Worker {
//!     type Result = ();
//!     fn handle(&mut self, _: Break, ctx: &mut Context<Self>) {
//!         self.exit.fail("told to break");   // why it stops…
//!         ctx.stop();                         // …and stop: the supervisor restarts it after a backoff
//!     }
//! }
//!
//! # actix::System::new().block_on(async {
//! let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
//! let worker = ChildSpec::worker("worker", move |cx: &ChildContext| {
//!     let (handle, addr) = ChildHandle::actor(cx, Worker { exit: cx.exit.clone() });
//!     addr_tx.send(addr).ok();
//!     Ok(handle)
//! });
//! let spec = SupervisorSpec::new("root")
//!     .intensity(5, Duration::from_secs(60))
//!     .backoff(BackoffPolicy { initial: Duration::from_millis(10), ..BackoffPolicy::default() })
//!     .child(worker);
//! let runtime = Runtime::new();
//! let mut events = runtime.events().subscribe();
//! let root = runtime.start(spec);
//!
//! let first = addr_rx.recv().await.unwrap();
//! first.do_send(Break);
//! loop {
//!     if let EventKind::Restarting { attempt, delay, .. } = events.recv().await.unwrap().kind {
//!         assert_eq!(attempt, 1);
//!         assert!(delay <= Duration::from_millis(12));
//!         break;
//!     }
//! }
//! let second = addr_rx.recv().await.unwrap();   // a new actor, started after the delay
//! assert!(second.connected() && !first.connected());
//! root.shutdown().await;
//! # });
//! ```

mod backoff;
mod child;
mod clock;
mod error;
mod event;
mod jitter;
mod supervisor;

pub use backoff::{Backoff, BackoffPolicy};
pub use child::{
    ChildContext, ChildHandle, ChildSpec, ExitReason, ExitSlot, Restart, Shutdown, StartFn,
    Terminate,
};
pub use clock::{Clock, SimClock, Sleep, SystemClock};
pub use error::Error;
pub use event::{Event, EventBus, EventKind, Observer};
pub use jitter::{FastRandJitter, FixedJitter, Jitter, SequenceJitter};
pub use supervisor::{
    ChildInfo, ChildState, Intensity, Runtime, Strategy, SupervisorHandle, SupervisorSpec,
};
