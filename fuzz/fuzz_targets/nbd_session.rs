//! An NBD client session given as bytes against the real server code: see
//! `src/nbd.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/nbd.rs"]
mod nbd;

fuzz_target!(|data: &[u8]| nbd::nbd_session(data));
