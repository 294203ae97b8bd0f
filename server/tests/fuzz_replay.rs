//! Replays every stored input of the `nbd_session` fuzz target (`fuzz/corpus/
//! nbd_session/`, and any crash kept under `fuzz/artifacts/nbd_session/`) through
//! the same function, on stable, as an ordinary test. The target is in
//! `fuzz/src/nbd.rs`; `fuzz/README.md` tells how to run the fuzzer.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

#[path = "../../fuzz/src/nbd.rs"]
mod nbd;

#[test]
fn nbd_session_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join("nbd_session")) {
            files.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_file()),
            );
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no stored inputs under fuzz/corpus/nbd_session"
    );
    let start = Instant::now();
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).expect("read a stored input");
        if panic::catch_unwind(AssertUnwindSafe(|| nbd::nbd_session(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    println!(
        "nbd_session: {} inputs replayed in {:.1?}",
        files.len(),
        start.elapsed()
    );
    assert!(failed.is_empty(), "nbd_session fails on {failed:#?}");
}
