//! `Array::open` + `check()` and a few operations on an arbitrary image: see
//! `lunsnap_fuzz::open_check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lunsnap_fuzz::open_check(data));
