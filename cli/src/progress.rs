//! The progress of long transfers (`read`, `write`), on stderr.
//!
//! By default it is shown only when stderr is a terminal, and only for transfers of
//! 16 MiB or more; `--progress` shows it for every transfer, also when stderr is not
//! a terminal, and `--no-progress` never. How it is drawn ([`Mode`]):
//!
//! - on this process's terminal, an indicatif bar;
//! - for a command that runs in `lunsnap serve` for a client on a terminal, one line
//!   that each update overwrites (`\r`), sent back as the command's stderr;
//! - elsewhere (`--progress` into a pipe or a log), one line per tenth of the transfer
//!   done (`lunsnap: read 40% of 4 MiB`), or per 64 MiB when the length is unknown
//!   (a pipe): the same lines whether the image is served or not.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::size::{both, human};

/// Transfers shorter than this finish too fast for a bar to help (unless `--progress`).
const MIN_BYTES: u64 = 16 << 20;

/// With the length unknown, a line per this many bytes (line mode).
const LINE_BYTES: u64 = 64 << 20;

/// The least time between two updates of a redrawn line.
const REDRAW: Duration = Duration::from_millis(250);

/// How progress is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not at all.
    Off,
    /// An indicatif bar on this process's stderr (a terminal).
    Bar,
    /// A line per tenth done (stderr is not a terminal).
    Lines,
    /// One line redrawn in place, for a terminal at the other end of the control socket.
    Redraw,
}

/// Whether, and how, a command shows its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Show {
    /// How it is drawn.
    pub mode: Mode,
    /// `--progress`: also for short transfers.
    pub forced: bool,
}

impl Show {
    /// From the command line (`--progress`, `--no-progress`, and the hidden
    /// `--progress-tty` a forwarded command carries when the user's stderr is a
    /// terminal) and whether stderr is a terminal here.
    pub fn new(progress: bool, no_progress: bool, client_tty: bool, terminal: bool) -> Show {
        let mode = match () {
            () if no_progress => Mode::Off,
            () if terminal => Mode::Bar,
            () if client_tty => Mode::Redraw,
            () if progress => Mode::Lines,
            () => Mode::Off,
        };
        Show {
            mode,
            forced: progress,
        }
    }

    /// Never shown.
    pub fn off() -> Show {
        Show {
            mode: Mode::Off,
            forced: false,
        }
    }
}

/// Where the text of [`Mode::Lines`] and [`Mode::Redraw`] goes.
#[derive(Clone)]
pub enum Text {
    /// This process's stderr.
    Stderr,
    /// A buffer the command's streams pass on (the control socket's stderr).
    Pending(Rc<RefCell<Vec<u8>>>),
}

impl Text {
    fn put(&self, s: &str) {
        match self {
            Text::Stderr => {
                let _ = std::io::stderr().write_all(s.as_bytes());
            }
            Text::Pending(p) => p.borrow_mut().extend_from_slice(s.as_bytes()),
        }
    }
}

/// The progress of one transfer.
pub struct Meter {
    draw: Draw,
    verb: &'static str,
    total: Option<u64>,
    pos: u64,
}

enum Draw {
    Hidden,
    Bar(ProgressBar),
    Lines {
        text: Text,
        shown: u64,
    },
    Redraw {
        text: Text,
        last: Instant,
        start: Instant,
    },
}

/// A meter for a transfer of `total` bytes (`None`: unknown, e.g. from a pipe), named
/// `verb` (`read`, `write`), shown as `show` says, its text going to `text`.
pub fn meter(total: Option<u64>, verb: &'static str, show: Show, text: Text) -> Meter {
    let short = matches!(total, Some(t) if t < MIN_BYTES);
    let draw = match show.mode {
        Mode::Off => Draw::Hidden,
        _ if short && !show.forced => Draw::Hidden,
        Mode::Bar => Draw::Bar(bar(total, verb)),
        Mode::Lines => Draw::Lines { text, shown: 0 },
        Mode::Redraw => Draw::Redraw {
            text,
            last: Instant::now(),
            start: Instant::now(),
        },
    };
    Meter {
        draw,
        verb,
        total,
        pos: 0,
    }
}

fn bar(total: Option<u64>, verb: &'static str) -> ProgressBar {
    match total {
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

impl Meter {
    /// `n` more bytes are done.
    pub fn inc(&mut self, n: u64) {
        self.set_position(self.pos.saturating_add(n));
    }

    /// `pos` bytes are done.
    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        let (verb, total) = (self.verb, self.total);
        match &mut self.draw {
            Draw::Hidden => {}
            Draw::Bar(b) => b.set_position(pos),
            Draw::Lines { text, shown } => lines(text, shown, verb, total, pos),
            Draw::Redraw { text, last, start } => {
                if last.elapsed() >= REDRAW {
                    *last = Instant::now();
                    text.put(&format!("\r{}\x1b[K", status(verb, total, pos, *start)));
                }
            }
        }
    }

    /// The transfer is complete.
    pub fn finish(&mut self) {
        let end = self.total.unwrap_or(self.pos);
        match &mut self.draw {
            Draw::Hidden => {}
            Draw::Bar(b) => b.finish_and_clear(),
            Draw::Lines { text, shown } => {
                if let Some(t) = self.total {
                    lines(text, shown, self.verb, self.total, t);
                } else {
                    text.put(&format!("lunsnap: {} {} in all\n", self.verb, both(end)));
                }
            }
            Draw::Redraw { text, start, .. } => {
                let s = status(self.verb, self.total, end, *start);
                text.put(&format!("\r{s}\x1b[K\n"));
            }
        }
    }
}

/// The lines due at `pos`: one per tenth of `total` (or per [`LINE_BYTES`] when it is
/// unknown) reached since the `shown` ones.
fn lines(text: &Text, shown: &mut u64, verb: &str, total: Option<u64>, pos: u64) {
    match total {
        Some(t) => {
            let reached = if t == 0 || pos >= t {
                10
            } else {
                // pos < t, so this is at most 9 and cannot overflow in u128.
                (u128::from(pos) * 10 / u128::from(t)) as u64
            };
            while *shown < reached {
                *shown += 1;
                text.put(&format!(
                    "lunsnap: {verb} {}% of {}\n",
                    *shown * 10,
                    human(t)
                ));
            }
        }
        None => {
            while (*shown + 1).saturating_mul(LINE_BYTES) <= pos {
                *shown += 1;
                text.put(&format!(
                    "lunsnap: {verb} {} so far\n",
                    human(*shown * LINE_BYTES)
                ));
            }
        }
    }
}

/// The redrawn line: `read 1.6 MiB of 4 MiB (40%), 120 MiB/s`.
fn status(verb: &str, total: Option<u64>, pos: u64, start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        format!(", {}/s", human((pos as f64 / secs) as u64))
    } else {
        String::new()
    };
    match total {
        Some(t) if t > 0 => format!(
            "lunsnap: {verb} {} of {} ({}%){rate}",
            human(pos),
            human(t),
            u128::from(pos.min(t)) * 100 / u128::from(t)
        ),
        _ => format!("lunsnap: {verb} {}{rate}", human(pos)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(total: Option<u64>, steps: &[u64]) -> String {
        let buf = Rc::new(RefCell::new(Vec::new()));
        let show = Show::new(true, false, false, false);
        let mut m = meter(total, "read", show, Text::Pending(buf.clone()));
        for &p in steps {
            m.set_position(p);
        }
        m.finish();
        String::from_utf8(buf.take()).unwrap_or_default()
    }

    #[test]
    fn a_line_per_tenth_whatever_the_steps() {
        let one = lines_of(Some(4 << 20), &[1 << 20, 3 << 20, 4 << 20]);
        let other = lines_of(Some(4 << 20), &[4 << 20]);
        assert_eq!(one, other);
        assert_eq!(one.lines().count(), 10);
        assert!(one.starts_with("lunsnap: read 10% of 4 MiB\n"), "{one}");
        assert!(one.ends_with("lunsnap: read 100% of 4 MiB\n"), "{one}");
        assert_eq!(lines_of(Some(0), &[]).lines().count(), 10);
        let piped = lines_of(None, &[100 << 20, 130 << 20]);
        assert_eq!(
            piped,
            "lunsnap: read 64 MiB so far\nlunsnap: read 128 MiB so far\n\
             lunsnap: read 130 MiB (136314880 bytes) in all\n"
        );
    }

    #[test]
    fn modes() {
        assert_eq!(Show::new(false, false, false, false).mode, Mode::Off);
        assert_eq!(Show::new(false, false, false, true).mode, Mode::Bar);
        assert_eq!(Show::new(true, false, false, false).mode, Mode::Lines);
        assert_eq!(Show::new(false, false, true, false).mode, Mode::Redraw);
        assert_eq!(Show::new(true, true, true, true).mode, Mode::Off);
        // Short transfers draw nothing unless --progress.
        let buf = Rc::new(RefCell::new(Vec::new()));
        let show = Show::new(false, false, true, false);
        let mut m = meter(Some(1 << 20), "read", show, Text::Pending(buf.clone()));
        m.finish();
        assert!(buf.borrow().is_empty());
    }
}
