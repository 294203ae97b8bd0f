//! Replays every input stored by the fuzzers (`fuzz/corpus/*`: the minimized corpus;
//! `fuzz/artifacts/*`: every crash, hang or out-of-memory input found, kept as
//! regressions) through the same target functions, on stable, as an ordinary test.
//! The targets themselves are in `fuzz/src/lib.rs`; `fuzz/README.md` tells how to
//! run the fuzzers.
#![cfg(all(feature = "testing", feature = "std"))]

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../fuzz/src/lib.rs"]
mod targets;

/// The stored inputs of `target`, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no stored inputs for {target} under fuzz/corpus or fuzz/artifacts"
    );
    let start = Instant::now();
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).expect("read a stored input");
        if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    println!(
        "{target}: {} inputs replayed in {:.1?}",
        files.len(),
        start.elapsed()
    );
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
}

#[test]
fn open_check_inputs() {
    replay("open_check", targets::open_check);
}

#[test]
fn ops_powercut_inputs() {
    replay("ops_powercut", targets::ops_powercut);
}
