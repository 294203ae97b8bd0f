//! Test support for users' own property and crash tests (feature `testing`): the
//! reference [`Model`] of an [`Array`](crate::Array), the power-loss and
//! error-injecting devices ([`PowerCutDevice`], [`ErrorDevice`]), the generator the
//! tests share ([`Rng`]) and the on-disk [`layout`] facts that tests which forge
//! images need.
//!
//! The model is what docs/DESIGN.md §2 promises, written as plainly as possible: a map of
//! sectors per LUN, the copy relationships, the full-size reservations and, to predict
//! the exclusive/shared accounting, `map` and `diff`, a "lineage" token per mapped
//! logical extent (a copy shares its parent's tokens until one of them writes into that
//! extent). Drive it and
//! an `Array` with the same operations, compare every result, and let the model check
//! the array ([`Model::verify`]) and, after a power cut and a reopen, check that what
//! survived obeys the durability rules ([`Model::recover`]).

mod error_device;
pub mod layout;
mod mapping;
mod model;
mod power_cut;
mod rng;
mod verify;

pub use error_device::{ErrorDevice, Fault, FaultOp};
pub use model::Model;
pub use power_cut::{CrashPoint, CutOutcome, CutStats, PowerCutDevice};
pub use rng::{mix, Rng};
pub use verify::Mismatch;
