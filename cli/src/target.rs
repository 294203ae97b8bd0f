//! Where a command finds its array: an image file it opens and locks itself (cold), or
//! the array `lunsnap serve` holds open (live), reached through its control socket.
//!
//! Every command is written once, against [`Target`]: it runs each array operation
//! through [`Target::with`], which on a live array holds the array lock for that one
//! operation only (NBD clients are served in between), and ends with
//! [`Target::commit`] when it changed anything. So a command prints the same, and exits
//! the same, whether the image is served or not.

use std::cell::RefCell;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use lunsnap::{LunKind, ReclaimStats};
use lunsnap_server::{ControlIo, Shared};

use crate::fail::{Fail, Result};
use crate::image::{self, Access, Opening, Va};
use crate::progress::{Show, Text};

/// Where the commands of one run find their arrays.
#[derive(Clone)]
pub enum Place {
    /// Each command opens (and locks) its image file itself, waiting for the lock as
    /// `--wait` says.
    Cold(Opening),
    /// The served array, and the image file it is in (its canonical path).
    Live {
        /// The array and the connections of the server.
        shared: Arc<Shared>,
        /// The served image file.
        image: PathBuf,
    },
}

/// One command's array.
pub enum Target {
    /// An image the command opened and locked.
    Cold {
        /// The open array.
        va: Box<Va>,
        /// The image, as the command was given it.
        path: PathBuf,
    },
    /// The served array.
    Live {
        /// The server's shared state.
        shared: Arc<Shared>,
        /// The image, as the command was given it (for messages).
        path: PathBuf,
        /// The served image file (for questions about the file itself).
        file: PathBuf,
    },
}

impl Place {
    /// The array in the image at `path`: opened and locked for `access` when cold; the
    /// served array (the caller checked that `path` is its image) when live.
    pub fn open(&self, path: &Path, access: Access) -> Result<Target> {
        Ok(match self {
            Place::Cold(wait) => Target::Cold {
                va: Box::new(image::open(path, access, wait)?),
                path: path.to_path_buf(),
            },
            Place::Live { shared, image } => Target::Live {
                shared: shared.clone(),
                path: path.to_path_buf(),
                file: image.clone(),
            },
        })
    }

    /// Refuses a command that cannot run on a served image (`format`, `serve`,
    /// `demo`); on a cold one, returns how long to wait for its lock.
    pub fn cold_only(&self, why: &str) -> Result<Opening> {
        match self {
            Place::Cold(wait) => Ok(wait.clone()),
            Place::Live { .. } => Err(Fail::new(why.to_string())),
        }
    }
}

impl Target {
    /// The image file itself (for its size on disk).
    pub fn file(&self) -> &Path {
        match self {
            Target::Cold { path, .. } => path,
            Target::Live { file, .. } => file,
        }
    }

    /// True for the array `lunsnap serve` holds.
    pub fn is_served(&self) -> bool {
        matches!(self, Target::Live { .. })
    }

    /// Runs one operation on the array; a live array is locked for its duration only.
    pub fn with<R>(&mut self, op: impl FnOnce(&mut Va) -> Result<R>) -> Result<R> {
        match self {
            Target::Cold { va, .. } => op(va),
            Target::Live { shared, .. } => op(&mut shared.lock()),
        }
    }

    /// Runs `op`, which changes what NBD clients of the LUNs `exposed` names see, under
    /// one array lock: if clients have one of them open, it is refused (naming their
    /// connections) unless `force`, and with `force` those connections end. Returns
    /// `op`'s result and the connections ended (none on a cold image).
    ///
    /// The connections end after `op` succeeded but before the lock is released: none
    /// of their requests can run after the change (each takes the lock and finds its
    /// connection ended), and a refused `op` ends nobody.
    pub fn guarded<R>(
        &mut self,
        force: bool,
        exposed: impl FnOnce(&Va) -> Vec<u32>,
        op: impl FnOnce(&mut Va) -> Result<R>,
    ) -> Result<(R, Vec<String>)> {
        let shared = match self {
            Target::Cold { va, .. } => return Ok((op(va)?, Vec::new())),
            Target::Live { shared, .. } => shared.clone(),
        };
        let mut a = shared.lock();
        let mut used: Vec<(u32, Vec<String>)> = Vec::new();
        for lun in exposed(&a) {
            let users = shared.users(&a, lun);
            if !users.is_empty() {
                used.push((lun, users));
            }
        }
        if !used.is_empty() && !force {
            return Err(in_use(&used));
        }
        let r = op(&mut a)?;
        let mut ended = Vec::new();
        for (lun, users) in used {
            shared.disconnect(&a, lun);
            ended.extend(users);
        }
        Ok((r, ended))
    }

    /// Makes what the command changed durable: a cold image is committed, the space of
    /// every mapping waiting in its free queue is freed ([`drain`]: a deleted LUN's, a
    /// refreshed or detached copy's, a restored parent's; there is no server to do it
    /// later), and it is closed (its lock released); a live array is flushed (a
    /// commit, as an NBD flush), and the server's reclaimer frees what waits in the
    /// background. Either way, bad metadata copies that reads found are rewritten from
    /// their good copy.
    pub fn commit(self) -> Result<()> {
        match self {
            Target::Cold { mut va, .. } => {
                va.flush()?;
                drain(&mut va).map_err(|e| {
                    Fail::new(format!(
                        "the command's change is committed, but freeing the space it \
                         released failed: {} (`lunsnap reclaim` frees it later)",
                        e.msg
                    ))
                })?;
                va.close().map(drop).map_err(Fail::from)
            }
            Target::Live { shared, .. } => shared.lock().flush().map_err(Fail::from),
        }
    }

    /// As [`Target::commit`], but what waits in the free queue stays there: for
    /// `reclaim --budget`, which frees only as much as it was given.
    pub fn commit_leaving_queue(self) -> Result<()> {
        match self {
            // Every reclaim step committed; close commits what else changed (a
            // rewritten bad copy) without a flush's share of reclamation.
            Target::Cold { va, .. } => va.close().map(drop).map_err(Fail::from),
            Target::Live { shared, .. } => shared.lock().flush().map_err(Fail::from),
        }
    }
}

/// Work (tree nodes visited plus extent references released) that freeing does in
/// each of its commits: 64 K units, tens of milliseconds at most.
pub const DRAIN_STEP: u64 = 16 * lunsnap::RECLAIM_PER_FLUSH;

/// Frees everything that waits in `va`'s free queue, [`DRAIN_STEP`] units of work
/// per commit, and says what was done (`remaining` is 0).
pub fn drain(va: &mut Va) -> Result<ReclaimStats> {
    let mut total = ReclaimStats::default();
    while va.reclaim_pending() {
        let s = va.reclaim(DRAIN_STEP)?;
        add(&mut total, &s);
        if s.work == 0 {
            break;
        }
    }
    Ok(total)
}

/// Adds the work of `s` to `total`; `total.remaining` becomes `s`'s.
pub fn add(total: &mut ReclaimStats, s: &ReclaimStats) {
    total.work += s.work;
    total.nodes_freed += s.nodes_freed;
    total.extent_refs += s.extent_refs;
    total.remaining = s.remaining;
}

/// The refusal of a change under connected clients.
fn in_use(used: &[(u32, Vec<String>)]) -> Fail {
    let which: Vec<String> = used
        .iter()
        .map(|(lun, users)| format!("LUN {lun} is open over NBD by {}", users.join(" and ")))
        .collect();
    let (whose, them) = if used.iter().map(|(_, u)| u.len()).sum::<usize>() == 1 {
        (
            "its client sees",
            "the client first, or use --force to end the connection",
        )
    } else {
        (
            "their clients see",
            "the clients first, or use --force to end the connections",
        )
    };
    Fail::new(format!(
        "{}: this would change what {whose}; disconnect {them} (acknowledged writes stay)",
        which.join("; ")
    ))
}

/// The LUNs restoring from `copy` changes under their clients: its parent, when the
/// restore can go ahead (otherwise none, and the array gives its own refusal).
pub fn restored(a: &Va, copy: u32) -> Vec<u32> {
    match a.lun_status(copy) {
        Ok(s) if s.kind == LunKind::Copy && s.attached => s.parent.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The copies among `copies` that attaching would change under their clients: the
/// attached copies of an attached parent (others are refused by the array, or have no
/// clients).
pub fn attached(a: &Va, copies: &[u32]) -> Vec<u32> {
    copies
        .iter()
        .copied()
        .filter(|&c| match a.lun_status(c) {
            Ok(s) if s.kind == LunKind::Copy && s.attached => s
                .parent
                .and_then(|p| a.lun_status(p).ok())
                .is_some_and(|p| p.attached),
            _ => false,
        })
        .collect()
}

/// `copy` if detaching it would change what its clients see (it is a copy).
pub fn detached(a: &Va, copy: u32) -> Vec<u32> {
    match a.lun_status(copy) {
        Ok(s) if s.kind == LunKind::Copy => vec![copy],
        _ => Vec::new(),
    }
}

/// `lun` if deleting it can go ahead (it exists; without `orphan`, it has no copies).
pub fn deleted(a: &Va, lun: u32, orphan: bool) -> Vec<u32> {
    if a.lun_status(lun).is_err() {
        return Vec::new();
    }
    let has_copies = || {
        a.lun_numbers()
            .into_iter()
            .any(|n| a.lun_status(n).is_ok_and(|s| s.parent == Some(lun)))
    };
    if !orphan && has_copies() {
        return Vec::new();
    }
    vec![lun]
}

/// `lun` if it exists.
pub fn existing(a: &Va, lun: u32) -> Vec<u32> {
    if a.lun_status(lun).is_ok() {
        vec![lun]
    } else {
        Vec::new()
    }
}

/// A command's standard input and output: the process's own, or the control socket's.
pub trait Streams {
    /// Standard input.
    fn input(&mut self) -> Box<dyn Read + '_>;
    /// Standard output.
    fn output(&mut self) -> Box<dyn Write + '_>;
    /// Is standard output a terminal (where binary data is not written unasked)?
    fn output_is_terminal(&self) -> bool;
    /// How long transfers show their progress, and where its text goes.
    fn progress(&self) -> (Show, Text);
}

/// The process's own standard streams.
pub struct Std {
    /// How progress is shown (`--progress`, `--no-progress`, stderr a terminal).
    pub show: Show,
}

impl Streams for Std {
    fn input(&mut self) -> Box<dyn Read + '_> {
        Box::new(std::io::stdin().lock())
    }

    fn output(&mut self) -> Box<dyn Write + '_> {
        Box::new(std::io::stdout().lock())
    }

    fn output_is_terminal(&self) -> bool {
        std::io::stdout().is_terminal()
    }

    fn progress(&self) -> (Show, Text) {
        (self.show, Text::Stderr)
    }
}

/// A forwarded command's streams: the control socket. Its progress text (the
/// server's stderr is not the user's) waits in `pending` and goes out as the command's
/// stderr whenever its input is read or its output written, and when it ends.
pub struct Socket<'a> {
    /// The socket.
    pub io: &'a mut ControlIo,
    /// How progress is shown (never as a bar: see [`Show::new`]).
    pub show: Show,
    /// Progress text not sent yet.
    pub pending: Rc<RefCell<Vec<u8>>>,
}

impl Socket<'_> {
    /// Sends the pending progress text.
    pub fn send_pending(io: &mut ControlIo, pending: &RefCell<Vec<u8>>) -> std::io::Result<()> {
        let text = pending.take();
        if text.is_empty() {
            return Ok(());
        }
        io.stderr().write_all(&text)
    }
}

/// The socket's stdin or stdout, passing on pending progress text as it goes.
struct Relay<'a> {
    io: &'a mut ControlIo,
    pending: Rc<RefCell<Vec<u8>>>,
}

impl Read for Relay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Socket::send_pending(self.io, &self.pending)?;
        self.io.read(buf)
    }
}

impl Write for Relay<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Socket::send_pending(self.io, &self.pending)?;
        self.io.stdout().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Socket::send_pending(self.io, &self.pending)
    }
}

impl Streams for Socket<'_> {
    fn input(&mut self) -> Box<dyn Read + '_> {
        Box::new(Relay {
            io: self.io,
            pending: self.pending.clone(),
        })
    }

    fn output(&mut self) -> Box<dyn Write + '_> {
        Box::new(Relay {
            io: self.io,
            pending: self.pending.clone(),
        })
    }

    /// The client checked its own stdout before it sent the command.
    fn output_is_terminal(&self) -> bool {
        false
    }

    fn progress(&self) -> (Show, Text) {
        (self.show, Text::Pending(self.pending.clone()))
    }
}
