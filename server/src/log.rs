//! The server's log: one line per connection and per management command, on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Turns the log off (tests that run many servers) or back on.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Writes `line` to stderr, prefixed with the time (seconds since the epoch, UTC) so
/// that lines from several connections can be ordered.
pub fn line(line: &str) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    // Nothing useful can be done if stderr is gone.
    let _ = writeln!(std::io::stderr().lock(), "lunsnap serve [{t:.3}] {line}");
}
