//! The server's log: one line per connection and per management command, on stderr.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes `line` to stderr, prefixed with the time (seconds since the epoch, UTC) so
/// that lines from several connections can be ordered.
pub fn line(line: &str) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    // Nothing useful can be done if stderr is gone.
    let _ = writeln!(std::io::stderr().lock(), "lunsnap serve [{t:.3}] {line}");
}
