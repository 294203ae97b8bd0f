//! Shared machinery of lunsnap's property, crash and I/O-error tests (the tests are in
//! `tests/`): recognisable data patterns, the operations and a harness that applies
//! each to an [`Array`](lunsnap::Array) and to the reference
//! [`Model`](lunsnap::testing::Model) side by side, and in-memory media for the
//! exhaustive crash test.

pub mod harness;
pub mod media;
pub mod pattern;

pub use harness::{Harness, Op, Step};

/// A count from an environment variable, or `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}
