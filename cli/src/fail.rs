//! Why a command failed: one line for stderr, exit status 1.

use std::fmt;
use std::path::Path;

/// A failed operation. `main` prints it as `lunsnap: <message>` and exits with 1.
#[derive(Debug)]
pub struct Fail(pub String);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lunsnap::Error> for Fail {
    fn from(e: lunsnap::Error) -> Self {
        Fail(e.to_string())
    }
}

impl<D> From<lunsnap::CloseError<D>> for Fail {
    fn from(e: lunsnap::CloseError<D>) -> Self {
        Fail(e.to_string())
    }
}

/// How the refusal of a locked image begins (`image in use: ...`).
pub const IN_USE: &str = "image in use";

impl Fail {
    /// True for the refusal of an image another process holds locked (maybe a server:
    /// see `forward`).
    pub fn is_in_use(&self) -> bool {
        self.0.starts_with(IN_USE)
    }

    /// An I/O error on `path`, saying what was being done.
    pub fn io(what: &str, path: &Path, e: &std::io::Error) -> Self {
        Fail(format!("cannot {what} {}: {e}", path.display()))
    }
}

/// Shorthand for command results.
pub type Result<T, E = Fail> = std::result::Result<T, E>;
