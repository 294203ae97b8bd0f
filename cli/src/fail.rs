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

impl Fail {
    /// An I/O error on `path`, saying what was being done.
    pub fn io(what: &str, path: &Path, e: &std::io::Error) -> Self {
        Fail(format!("cannot {what} {}: {e}", path.display()))
    }
}

/// Shorthand for command results.
pub type Result<T, E = Fail> = std::result::Result<T, E>;
