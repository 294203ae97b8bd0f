//! The backup and restore cycle of HP's Business Copy VA guide, end to end, on a
//! sparse image file: the one scenario that `lunsnap demo` and the `backup_cycle`
//! example both run.
//!
//! The guide partitions its procedures into four processes: configuration (steps 1c
//! 2c 4c 5c 6c 7c 8c, once), backup (1c 3c 4c 6c 7c 9c, on a schedule), restore (1r to
//! 4r, on demand) and maintenance (10c, by hand). The scenario runs them on a 64 MiB
//! image with a toy database standing in for the application (volume group `vg_db`:
//! LUNs 1 to 3; their business copies 11 to 13, made as one consistency group; the
//! database host may reach only the parents, the backup host only reads the copies),
//! adds an incremental backup to the backup process (today's copy of the redo log
//! against yesterday's, which was backed up in full: only the ranges that differ are
//! read, and the full backup plus the incremental restore today's copy exactly),
//! cuts the power in between, and ends by closing and reopening the image.
//!
//! Each step prints the guide's step number, what it does, the guide's command where
//! it has one (`armcopy`, `armcfg`), and what does the same here, in the voice of the
//! run's [`Narrator`]: the `lunsnap` command line (the demo) or the library calls (the
//! example). Every claim is verified: a mismatch ends the run with an error.
//!
//! The files live in `examples/scenario/`, beside the example that declares
//! `mod scenario;`; the command-line tool, which depends on `lunsnap`, includes the
//! same files with `#[path]` (`cli/src/demo/mod.rs`). They use only `lunsnap`'s public
//! API and `std`, within the `lunsnap` crate's MSRV.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lunsnap::{Array, FileDevice, FormatOptions};

/// Prints one line of narration. It is best effort: a closed stdout must not stop the
/// run (or panic it).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod backup;
mod checks;
mod configure;
mod db;
mod incremental;
mod maintain;
mod restore;
mod tell;

use db::{Database, MIB};

/// What the scenario's steps return: any error ends the run.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The array the scenario drives: one pool on an image file.
pub type Va = Array<FileDevice>;

/// Size of the sparse image file.
pub const IMAGE_BYTES: u64 = 64 * MIB;
/// The image's device block.
pub const DEVICE_BLOCK: u32 = 4096;
/// The image's file name, in the directory it is made in.
pub const IMAGE_NAME: &str = "lunsnap-demo.img";
/// LUN numbers run from 0 to `MAX_LUNS - 1`.
const MAX_LUNS: u32 = 64;
/// The guide's `<array-id>`, stored in the superblock.
const ARRAY_ID: [u8; 16] = *b"VA7100-demo-0001";
/// The host the database runs on (a WWN-like id).
const DB_HOST: u64 = 0x5006_0b00_00c2_6201;
/// The backup host, which imports the copies and backs them up.
const BACKUP_HOST: u64 = 0x5006_0b00_00c2_6204;

/// Who tells the run, and how it reaches its image file: all that differs between
/// `lunsnap demo` and the `backup_cycle` example.
pub trait Narrator {
    /// The narration's voice: of two wordings, the one it speaks. Under each step
    /// `cli` is the `lunsnap` command line that does the same (the demo's choice) and
    /// `call` the library calls the scenario makes (the example's); the run's name
    /// and the labels of those lines are chosen the same way.
    fn voice<'a>(&self, cli: &'a str, call: &'a str) -> &'a str;
    /// Creates a sparse image of `bytes` at `path` (replacing one an earlier run left)
    /// and formats an array with `opts` in it.
    fn format(&self, path: &Path, bytes: u64, opts: &FormatOptions) -> Result<Va>;
    /// Opens the array again in `file`, the image at `path`, as a power cut or a close
    /// left it.
    fn reopen(&self, file: File, path: &Path) -> Result<Va>;
}

/// A new temporary directory, removed with everything in it however the run ends.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes a new directory `<prefix>-<pid>-<nanos>` in the system's temporary one.
    pub fn new(prefix: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }

    /// Where the run's image goes in it.
    pub fn image(&self) -> PathBuf {
        self.0.join(IMAGE_NAME)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a run carries from step to step besides the array.
struct Cycle<'a> {
    n: &'a dyn Narrator,
    path: &'a Path,
    db: Database,
}

/// Runs the whole cycle on a new image at `path`, told by `n`; `kept` says whether the
/// image stays after the run. Returns at the first mismatch or failure.
pub fn run(n: &dyn Narrator, path: &Path, kept: bool) -> Result<()> {
    let started = Instant::now();
    tell::banner(n, path, kept);
    let mut c = Cycle {
        n,
        path,
        db: Database::new(),
    };
    let mut va = configure::setup(&mut c)?;
    let export = configure::configuration(&mut c, &mut va)?;
    let backup = backup::backup(&mut c, &mut va, &export)?;
    restore::restore(&mut c, &mut va, &backup)?;
    let mut va = restore::power_cut(&mut c, va, &backup)?;
    let at_refresh = maintain::maintenance(&mut c, &mut va)?;
    maintain::finish(&mut c, va, &at_refresh, started)
}
