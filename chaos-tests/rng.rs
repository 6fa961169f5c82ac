//! The chaos suite's seeded generator (SplitMix64): the seed comes from `VIGIL_CHAOS_SEED` or the clock, and is
//! printed with the scenario's name so that a failing run can be replayed moment for moment.

pub struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    /// The generator of scenario `name`: `VIGIL_CHAOS_SEED` if set, else a fresh seed; printed either way.
    pub fn from_env(name: &str) -> Rng {
        let seed = std::env::var("VIGIL_CHAOS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("chaos scenario {name}: seed {seed} (replay with VIGIL_CHAOS_SEED={seed})");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng { seed, state: seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

#[test]
fn the_same_seed_gives_the_same_moments() {
    let (mut a, mut b) = (Rng::new(42), Rng::new(42));
    let xs: Vec<u64> = (0..5).map(|_| a.between(300, 4700)).collect();
    let ys: Vec<u64> = (0..5).map(|_| b.between(300, 4700)).collect();
    assert_eq!(xs, ys);
    assert!(xs.iter().all(|x| (300..=4700).contains(x)));
    let mut c = Rng::new(43);
    assert_ne!(xs, (0..5).map(|_| c.between(300, 4700)).collect::<Vec<_>>());
}
