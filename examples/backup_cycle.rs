//! The backup and restore processes of HP's Business Copy VA guide, end to end, on a
//! sparse image file, told as the library calls that carry them out.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --features std --example backup_cycle [IMAGE]
//! ```
//!
//! The cycle itself is the scenario in `examples/scenario/`, which `lunsnap demo`
//! runs too: configuration (the guide's steps 1c 2c 4c 5c 6c 7c 8c), backup (1c 3c 4c
//! 6c 7c 9c, and an incremental backup: `diff` of two copies, `map` of the changed
//! ranges), restore (1r to 4r) and maintenance (10c) on a 64 MiB image, with a toy
//! database standing in for the application, a power cut in between and a close and
//! reopen at the end. The demo prints the `lunsnap` command of each step; this example
//! prints the library calls (`Array::format`, `create_copy`, `attach_many`, `restore`,
//! ...), and makes and reopens the image with `FileDevice` directly.
//!
//! Every claim is checked; any mismatch stops the program with a message and a
//! non-zero exit status. The image goes in a new temporary directory that is removed
//! at the end, or at the path given as the first argument (created or overwritten, and
//! kept).

mod scenario;

use std::fs::File;
use std::path::{Path, PathBuf};

use lunsnap::{Array, FileDevice, FormatOptions, OpenOptions};
use scenario::{Narrator, Result, TempDir, Va, DEVICE_BLOCK};

/// The library's narration: each step prints the calls it makes, and the image is a
/// plain `FileDevice`.
struct Library;

impl Narrator for Library {
    fn voice<'a>(&self, _cli: &'a str, call: &'a str) -> &'a str {
        call
    }

    fn format(&self, path: &Path, bytes: u64, opts: &FormatOptions) -> Result<Va> {
        let dev = FileDevice::create(path, DEVICE_BLOCK, bytes / u64::from(DEVICE_BLOCK))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Array::format(dev, opts)?)
    }

    fn reopen(&self, file: File, path: &Path) -> Result<Va> {
        drop(file);
        let dev = FileDevice::open(path, DEVICE_BLOCK)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Array::open(dev, &OpenOptions::default())?)
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("backup_cycle: FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let given = args.next().map(PathBuf::from);
    if args.next().is_some() {
        return Err("usage: backup_cycle [IMAGE]".into());
    }
    match given {
        Some(path) if path.exists() && !path.is_file() => {
            Err(format!("{} exists and is not a regular file", path.display()).into())
        }
        Some(path) => scenario::run(&Library, &path, true),
        None => {
            let dir = TempDir::new("lunsnap-backup-cycle")?;
            scenario::run(&Library, &dir.image(), false)
        }
    }
}
