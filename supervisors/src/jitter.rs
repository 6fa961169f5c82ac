//! Injectable randomness for backoff jitter.
//!
//! [`FastRandJitter`] is the production source; [`FixedJitter`] and [`SequenceJitter`] make backoff schedules
//! exact in tests.

use std::fmt;
use std::sync::Mutex;

/// A source of uniformly distributed numbers in `[0, 1)`, used to spread restart delays.
pub trait Jitter: Send + Sync + fmt::Debug + 'static {
    /// The next number in `[0, 1)`.
    fn next_unit(&self) -> f64;
}

/// Random jitter from a seedable fast PRNG.
#[derive(Debug)]
pub struct FastRandJitter(Mutex<fastrand::Rng>);

impl FastRandJitter {
    /// Seeded from the OS.
    pub fn new() -> Self {
        FastRandJitter(Mutex::new(fastrand::Rng::new()))
    }
    /// Reproducible sequence.
    pub fn with_seed(seed: u64) -> Self {
        FastRandJitter(Mutex::new(fastrand::Rng::with_seed(seed)))
    }
}

impl Default for FastRandJitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Jitter for FastRandJitter {
    fn next_unit(&self) -> f64 {
        self.0.lock().expect("jitter rng poisoned").f64()
    }
}

/// Always the same value (clamped into `[0, 1)`); `FixedJitter(0.5)` means "no jitter" with symmetric spread.
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn next_unit(&self) -> f64 {
        self.0.clamp(0.0, 1.0 - f64::EPSILON)
    }
}

/// Cycles through the given values (each clamped into `[0, 1)`).
#[derive(Debug)]
pub struct SequenceJitter {
    values: Vec<f64>,
    next: Mutex<usize>,
}

impl SequenceJitter {
    /// `values` must not be empty.
    pub fn new(values: Vec<f64>) -> Self {
        assert!(
            !values.is_empty(),
            "SequenceJitter needs at least one value"
        );
        SequenceJitter {
            values,
            next: Mutex::new(0),
        }
    }
}

impl Jitter for SequenceJitter {
    fn next_unit(&self) -> f64 {
        let mut i = self.next.lock().expect("jitter sequence poisoned");
        let v = self.values[*i % self.values.len()];
        *i += 1;
        v.clamp(0.0, 1.0 - f64::EPSILON)
    }
}
