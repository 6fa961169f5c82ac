//! Injectable time for the supervisor: a [`Clock`] gives "now" and sleeps.
//!
//! Production code uses [`SystemClock`] (tokio's timer). Tests use [`SimClock`], a virtual clock that only moves
//! when the test calls [`SimClock::advance`], so backoff delays, restart-intensity windows, healthy-run resets and
//! shutdown timeouts are tested exactly and instantly.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A boxed sleep future, as returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Source of time for supervisors (and, later, for anything else that must be testable under simulated time).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant on this clock.
    fn now(&self) -> Instant;
    /// A future that completes once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Sleep;
    /// The wall-clock time on this clock (for time stamps and names; never for measuring durations, since the
    /// wall clock may step). Simulated clocks move it with their virtual time.
    fn wall(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

/// The real clock, backed by tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }
}

#[derive(Debug)]
struct SimState {
    now: Instant,
    /// Wall-clock time at `start`.
    wall_start: std::time::SystemTime,
    start: Instant,
    timers: Vec<(Instant, Waker)>,
}

/// A virtual clock for tests: time stands still until [`SimClock::advance`] moves it.
///
/// Cloning gives another handle to the same clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    state: Arc<Mutex<SimState>>,
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SimClock {
    /// A new virtual clock whose "now" starts at the real current instant.
    pub fn new() -> Self {
        let now = Instant::now();
        SimClock {
            state: Arc::new(Mutex::new(SimState {
                now,
                wall_start: std::time::SystemTime::now(),
                start: now,
                timers: Vec::new(),
            })),
        }
    }

    /// Moves virtual time forward by `d` and wakes every sleep whose deadline has passed.
    pub fn advance(&self, d: Duration) {
        let due: Vec<Waker> = {
            let mut s = self.state.lock().expect("sim clock poisoned");
            s.now += d;
            let now = s.now;
            let (due, pending): (Vec<_>, Vec<_>) = s.timers.drain(..).partition(|(t, _)| *t <= now);
            s.timers = pending;
            due.into_iter().map(|(_, w)| w).collect()
        };
        for w in due {
            w.wake();
        }
    }

    /// The earliest deadline of a sleep that is still pending, if any (useful to step from timer to timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.state.lock().expect("sim clock poisoned");
        s.timers.iter().map(|(t, _)| *t).min()
    }
}

struct SimSleep {
    deadline: Instant,
    state: Arc<Mutex<SimState>>,
}

impl Future for SimSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().expect("sim clock poisoned");
        if s.now >= self.deadline {
            Poll::Ready(())
        } else {
            let deadline = self.deadline;
            s.timers
                .retain(|(t, w)| !(*t == deadline && w.will_wake(cx.waker())));
            s.timers.push((deadline, cx.waker().clone()));
            Poll::Pending
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.state.lock().expect("sim clock poisoned").now
    }
    fn wall(&self) -> std::time::SystemTime {
        let s = self.state.lock().expect("sim clock poisoned");
        s.wall_start + s.now.saturating_duration_since(s.start)
    }
    fn sleep(&self, d: Duration) -> Sleep {
        let deadline = self.now() + d;
        Box::pin(SimSleep {
            deadline,
            state: self.state.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn sim_sleep_completes_only_after_advance() {
        let clock = SimClock::new();
        let start = clock.now();
        let mut sleep = clock.sleep(Duration::from_secs(5));
        assert!(futures_poll_once(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(4));
        assert!(futures_poll_once(&mut sleep).is_pending());
        assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(5)));
        clock.advance(Duration::from_secs(1));
        assert!(futures_poll_once(&mut sleep).is_ready());
        assert_eq!(clock.now() - start, Duration::from_secs(5));
    }

    #[test]
    fn the_wall_clock_moves_with_simulated_time() {
        let clock = SimClock::new();
        let w0 = clock.wall();
        clock.advance(Duration::from_secs(3600));
        assert_eq!(
            clock.wall().duration_since(w0).unwrap(),
            Duration::from_secs(3600)
        );
        let real = SystemClock;
        assert!(real.wall() >= w0);
    }

    fn futures_poll_once(f: &mut Sleep) -> Poll<()> {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        f.as_mut().poll(&mut cx)
    }
}
