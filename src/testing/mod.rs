//! Test support for users' own property and crash tests (feature `testing`): the
//! reference [`Model`] of an [`Array`](crate::Array), and (re-exported from
//! [`device::testing`](crate::device::testing)) the power-loss and error-injecting
//! devices.
//!
//! The model is what DESIGN.md §2 promises, written as plainly as possible: a map of
//! sectors per LUN, the copy relationships, the full-size reservations and, to predict
//! the exclusive/shared accounting, a "lineage" token per mapped logical extent (a copy
//! shares its parent's tokens until one of them writes into that extent). Drive it and
//! an `Array` with the same operations, compare every result, and let the model check
//! the array ([`Model::verify`]) and, after a power cut and a reopen, check that what
//! survived obeys the durability rules ([`Model::recover`]).

mod model;
mod verify;

pub use crate::device::testing::{
    CrashPoint, CutOutcome, CutStats, ErrorDevice, Fault, FaultOp, PowerCutDevice,
};
pub use model::Model;
pub use verify::Mismatch;
