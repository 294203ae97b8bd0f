//! Why a command failed: one line for stderr and the exit status it calls for.
//!
//! Exit status 1 is an operation that failed, 2 a usage error (something the command
//! line alone makes wrong), and a closed standard output ends the command quietly with
//! 0, as for other Unix tools (`lunsnap read IMG 1 - | head -c 100`).
//!
//! The array's errors are shown with their own text ([`lunsnap::Error`]'s `Display`),
//! except where the tool can say more: sizes in human units with the exact bytes, and
//! which option of the command line does what the message asks.

use std::fmt;
use std::path::Path;

use lunsnap::Error;

use crate::size::both;

/// What kind of failure it is, which decides the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The operation failed: exit status 1.
    Failed,
    /// A usage error found after parsing (the command line alone is wrong): 2.
    Usage,
    /// Standard output was closed by its reader: the command ends quietly, 0.
    Closed,
}

/// A failed command. `main` prints it as `lunsnap: <message>` and exits with the
/// status of its [`Kind`].
#[derive(Debug)]
pub struct Fail {
    /// The message, without the `lunsnap: ` prefix.
    pub msg: String,
    /// The kind of failure.
    pub kind: Kind,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let kind = match e {
            // Only the command line can make these (the tool's parser catches the
            // common cases first, with clap's wording).
            Error::InvalidArgument(_) | Error::Misaligned { .. } => Kind::Usage,
            Error::InvalidLunSize { size, .. }
                if size == 0 || !size.is_multiple_of(lunsnap::SECTOR) =>
            {
                Kind::Usage
            }
            _ => Kind::Failed,
        };
        Fail {
            msg: explain(&e),
            kind,
        }
    }
}

impl<D> From<lunsnap::CloseError<D>> for Fail {
    fn from(e: lunsnap::CloseError<D>) -> Self {
        Fail::new(format!("closing the array failed: {}", explain(&e.error)))
    }
}

/// The message for an array error: its own text, or the tool's where it says more.
pub fn explain(e: &Error) -> String {
    match *e {
        Error::NoSpace { needed, available } => format!(
            "not enough space to reserve: needs {}, {} free",
            both(needed),
            both(available)
        ),
        Error::DeviceTooSmall { needed, available } => format!(
            "too small: an array needs at least {}, and this one has {}",
            both(needed),
            both(available)
        ),
        Error::HasCopies { lun, copies } => format!(
            "LUN {lun} has {copies} cop{}: delete {} first, or use --orphan-copies to \
             delete LUN {lun} and leave {} standing alone",
            if copies == 1 { "y" } else { "ies" },
            if copies == 1 { "it" } else { "them" },
            if copies == 1 { "it" } else { "them" },
        ),
        Error::OutOfRange { offset, len, size } => format!(
            "{} at offset {offset} runs beyond the end of the LUN, which is {}",
            both(len),
            both(size)
        ),
        Error::Misaligned { offset, .. } if !offset.is_multiple_of(lunsnap::SECTOR) => format!(
            "the offset {offset} is not a multiple of 512: LUNs are read and written in \
             whole 512-byte sectors"
        ),
        Error::Misaligned { len, .. } => format!(
            "the length {len} is not a multiple of 512: LUNs are read and written in whole \
             512-byte sectors"
        ),
        Error::InvalidLunSize { size, why } if size.is_multiple_of(lunsnap::SECTOR) && size > 0 => {
            format!("invalid LUN size {}: {why}", both(size))
        }
        Error::InvalidArgument(why) => format!("invalid argument: {why}"),
        _ => e.to_string(),
    }
}

/// How the refusal of a locked image begins (`image in use: ...`).
pub const IN_USE: &str = "image in use";

impl Fail {
    /// An operation that failed (exit status 1), saying why.
    pub fn new(msg: impl Into<String>) -> Self {
        Fail {
            msg: msg.into(),
            kind: Kind::Failed,
        }
    }

    /// A usage error (exit status 2) the parser could not see.
    pub fn usage(msg: impl Into<String>) -> Self {
        Fail {
            msg: msg.into(),
            kind: Kind::Usage,
        }
    }

    /// Standard output was closed: the command ends quietly (exit status 0).
    pub fn closed() -> Self {
        Fail {
            msg: String::from("standard output closed"),
            kind: Kind::Closed,
        }
    }

    /// True for the refusal of an image another process holds locked (maybe a server:
    /// see `forward`).
    pub fn is_in_use(&self) -> bool {
        self.msg.starts_with(IN_USE)
    }

    /// An I/O error on `path`, saying what was being done.
    pub fn io(what: &str, path: &Path, e: &std::io::Error) -> Self {
        Fail::new(format!("cannot {what} {}: {e}", path.display()))
    }

    /// A failed write to standard output: [`Kind::Closed`] if its reader went away.
    pub fn stdout(e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Fail::closed()
        } else {
            Fail::new(format!("cannot write to stdout: {e}"))
        }
    }

    /// The exit status this failure calls for.
    pub fn code(&self) -> u8 {
        match self.kind {
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::Closed => 0,
        }
    }

    /// Prints the failure on `stderr` (nothing for a closed stdout) and returns its exit
    /// status.
    pub fn report(&self, stderr: &mut dyn std::io::Write) -> u8 {
        if self.kind != Kind::Closed {
            let _ = writeln!(stderr, "lunsnap: {self}");
        }
        self.code()
    }
}

/// Shorthand for command results.
pub type Result<T, E = Fail> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_errors_say_more_in_human_units() {
        let e = Fail::from(Error::NoSpace {
            needed: 256 << 20,
            available: 239_599_616,
        });
        assert_eq!(e.kind, Kind::Failed);
        assert_eq!(
            e.msg,
            "not enough space to reserve: needs 256 MiB (268435456 bytes), 228.5 MiB \
             (239599616 bytes) free"
        );
        let e = Fail::from(Error::HasCopies { lun: 1, copies: 1 });
        assert!(e.msg.contains("has 1 copy: delete it first"), "{e}");
        assert!(e.msg.contains("--orphan-copies"), "{e}");
        let e = Fail::from(Error::HasCopies { lun: 1, copies: 3 });
        assert!(e.msg.contains("has 3 copies: delete them first"), "{e}");
        let e = Fail::from(Error::Misaligned {
            offset: 100,
            len: 0,
        });
        assert_eq!(e.code(), 2);
        assert!(
            e.msg.starts_with("the offset 100 is not a multiple of 512"),
            "{e}"
        );
        let e = Fail::from(Error::InvalidArgument("host name longer than 56 bytes"));
        assert_eq!(e.code(), 2);
        assert_eq!(Fail::from(Error::NoSuchLun(5)).msg, "no such LUN: 5");
    }

    #[test]
    fn a_closed_stdout_is_quiet() {
        let e = Fail::stdout(&std::io::ErrorKind::BrokenPipe.into());
        let mut err = Vec::new();
        assert_eq!(e.report(&mut err), 0);
        assert!(err.is_empty());
        let e = Fail::stdout(&std::io::Error::other("disk full"));
        assert_eq!(e.report(&mut err), 1);
        assert_eq!(
            String::from_utf8_lossy(&err),
            "lunsnap: cannot write to stdout: disk full\n"
        );
    }
}
