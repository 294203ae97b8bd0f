//! Shared machinery of lunsnap's property, crash and I/O-error tests (the tests are in
//! `tests/`): recognisable data patterns, the operations and a harness that applies
//! each to an [`Array`](lunsnap::Array) and to the reference
//! [`Model`](lunsnap::testing::Model) side by side, and in-memory media for the
//! exhaustive crash test.

pub mod harness;
pub mod media;
pub mod pattern;

pub use harness::{Harness, Op, Step};

/// SplitMix64: seeds and op mixes of the scripted tests.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        pattern::mix(self.0)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A count from an environment variable, or `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}
