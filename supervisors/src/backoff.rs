//! Per-child restart delays: a capped exponential schedule (from `backon`) spread by injected jitter, reset
//! after a healthy run, after which the first restart is immediate: backoff is for repeated failure.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::jitter::Jitter;

/// How restart delays grow for one child.
///
/// The n-th consecutive restart waits `min(initial * factor^(n-1), max)`, then multiplied by a random factor in
/// `[1 - jitter, 1 + jitter]` and capped at `max` again.
///
/// A run is healthy when the child declared it so ([`crate::ExitSlot::healthy`]) or when it lasted at least
/// `reset_after`. After a healthy run the schedule starts over: with `immediate_after_healthy` (the default) the
/// restart is immediate (delay 0, attempt 1) and the following consecutive restarts wait `initial`,
/// `initial * factor`, … (attempts 2, 3, …); without it they wait `initial`, `initial * factor`, … from
/// attempt 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Growth per consecutive restart (>= 1).
    pub factor: f32,
    /// Relative spread, `0.0..=1.0`; 0.2 means ±20 %.
    pub jitter: f64,
    /// A run at least this long counts as healthy (as does one the child declared healthy) and resets the
    /// schedule.
    pub reset_after: Duration,
    /// After a healthy run, restart at once (delay 0) and only then start the schedule at `initial`. When false,
    /// a healthy run only resets the schedule, so the restart waits `initial`.
    pub immediate_after_healthy: bool,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
            immediate_after_healthy: true,
        }
    }
}

impl BackoffPolicy {
    /// The delay bounds `(lowest, highest)` the n-th consecutive restart (1-based) may get on the schedule that
    /// is not preceded by a healthy run (delays are whole milliseconds). After a healthy run with
    /// `immediate_after_healthy`, attempt 1 waits 0 and attempt n > 1 gets `bounds(n - 1)`.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let base = self.base(attempt);
        let lo = base.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0));
        let hi = base
            .mul_f64(1.0 + self.jitter.clamp(0.0, 1.0))
            .min(self.max);
        (
            Duration::from_millis(lo.as_millis() as u64),
            Duration::from_millis(hi.as_micros().div_ceil(1000) as u64),
        )
    }

    fn base(&self, attempt: u32) -> Duration {
        let mut d = self.initial.as_secs_f64()
            * (self.factor.max(1.0) as f64).powi(attempt.saturating_sub(1) as i32);
        if !d.is_finite() {
            d = self.max.as_secs_f64();
        }
        Duration::from_secs_f64(d.min(self.max.as_secs_f64()))
    }

    fn schedule(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.factor.max(1.0))
            .without_max_times()
            .build()
    }
}

/// The running state of one child's backoff.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    schedule: ExponentialBackoff,
    attempt: u32,
    /// The next restart is the immediate one that follows a healthy run.
    immediate: bool,
}

impl Backoff {
    /// Fresh state for `policy`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            schedule: policy.schedule(),
            policy,
            attempt: 0,
            immediate: false,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Forget earlier restarts: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.schedule = self.policy.schedule();
        self.attempt = 0;
        self.immediate = false;
    }

    /// A healthy run ended: forget earlier restarts; with [`BackoffPolicy::immediate_after_healthy`] the next
    /// delay is zero and the ones after it `initial`, `initial * factor`, …; without it, as [`Backoff::reset`].
    pub fn after_healthy_run(&mut self) {
        self.reset();
        self.immediate = self.policy.immediate_after_healthy;
    }

    /// Consecutive restarts so far (since the last reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next delay, jittered with `jitter`; returns `(attempt, delay)`.
    pub fn next_delay(&mut self, jitter: &dyn Jitter) -> (u32, Duration) {
        self.attempt += 1;
        if std::mem::take(&mut self.immediate) {
            // The restart right after a healthy run: no wait, and no draw from the jitter source.
            return (self.attempt, Duration::ZERO);
        }
        let base = self
            .schedule
            .next()
            .unwrap_or(self.policy.max)
            .min(self.policy.max);
        let spread = self.policy.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (2.0 * jitter.next_unit() - 1.0);
        let delay = base.mul_f64(factor.max(0.0)).min(self.policy.max);
        // Whole milliseconds: the f32 growth factor leaves sub-microsecond noise that helps nobody.
        (
            self.attempt,
            Duration::from_millis((delay.as_secs_f64() * 1000.0).round() as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jitter::{FixedJitter, SequenceJitter};

    #[test]
    fn schedule_doubles_and_caps() {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
            immediate_after_healthy: true,
        };
        let mut b = Backoff::new(policy);
        let delays: Vec<u64> = (0..6)
            .map(|_| b.next_delay(&FixedJitter(0.3)).1.as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.next_delay(&FixedJitter(0.3)), (1, Duration::from_secs(1)));
    }

    #[test]
    fn after_a_healthy_run_the_first_restart_is_immediate_then_the_schedule_starts_over() {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
            immediate_after_healthy: true,
        };
        let delays = |b: &mut Backoff, n: usize| -> Vec<(u32, u64)> {
            (0..n)
                .map(|_| {
                    let (a, d) = b.next_delay(&FixedJitter(0.3));
                    (a, d.as_secs())
                })
                .collect()
        };
        let mut b = Backoff::new(policy);
        assert_eq!(delays(&mut b, 3), [(1, 1), (2, 2), (3, 4)]);
        b.after_healthy_run();
        assert_eq!(delays(&mut b, 4), [(1, 0), (2, 1), (3, 2), (4, 4)]);
        // reset() alone keeps its meaning: the next delay is `initial`.
        b.after_healthy_run();
        b.reset();
        assert_eq!(delays(&mut b, 1), [(1, 1)]);

        let mut old = Backoff::new(BackoffPolicy {
            immediate_after_healthy: false,
            ..policy
        });
        assert_eq!(delays(&mut old, 2), [(1, 1), (2, 2)]);
        old.after_healthy_run();
        assert_eq!(delays(&mut old, 3), [(1, 1), (2, 2), (3, 4)]);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let policy = BackoffPolicy {
            jitter: 0.25,
            ..BackoffPolicy::default()
        };
        let mut b = Backoff::new(policy);
        let j = SequenceJitter::new(vec![0.0, 0.999_999, 0.5]);
        let (_, d1) = b.next_delay(&j);
        let (_, d2) = b.next_delay(&j);
        let (_, d3) = b.next_delay(&j);
        assert_eq!(d1, Duration::from_millis(375)); // 500 ms * 0.75
        assert_eq!(d2, Duration::from_millis(1250)); // 1 s * 1.25
        assert_eq!(d3, Duration::from_secs(2)); // 2 s * 1.0
        for a in 1..=3 {
            let (lo, hi) = policy.bounds(a);
            assert!(lo <= hi);
        }
    }
}
