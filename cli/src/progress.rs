//! The progress bar of long transfers: on stderr, and only when stderr is a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// Transfers shorter than this finish too fast for a bar to help.
const MIN_BYTES: u64 = 16 << 20;

/// A bar for a transfer of `total` bytes (`None`: unknown, e.g. from a pipe), or a
/// hidden one that draws nothing when `show` is false (see [`Streams::progress`]:
/// stderr is not a terminal, or the command runs in a server) or the transfer is short.
///
/// [`Streams::progress`]: crate::target::Streams::progress
pub fn bar(total: Option<u64>, verb: &'static str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    match total {
        Some(t) if t < MIN_BYTES => ProgressBar::hidden(),
        Some(t) => ProgressBar::new(t)
            .with_style(style(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
            ))
            .with_message(verb),
        None => ProgressBar::new_spinner()
            .with_style(style("{msg} {spinner} {bytes} {bytes_per_sec}"))
            .with_message(verb),
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
