//! An operation sequence with a power-cut countdown, checked against a model: see
//! `lunsnap_fuzz::ops_powercut`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lunsnap_fuzz::ops_powercut(data));
