//! `lunsnap demo [DIR]`: the backup and restore processes of HP's Business Copy VA
//! guide, end to end, told as `lunsnap` commands.
//!
//! The cycle is the scenario in `examples/scenario/` (included below with `#[path]`),
//! which the library's `backup_cycle` example runs too: configuration (the guide's
//! steps 1c 2c 4c 5c 6c 7c 8c), backup (1c 3c 4c 6c 7c 9c, then an incremental
//! backup with `diff` and `read --changed-since`), restore (1r to 4r) and
//! maintenance (10c) on a sparse 64 MiB image, with a toy database standing in for the
//! application. Each step prints the guide's step number, the guide's command where it
//! has one, and the `lunsnap` command that does the same; the array itself is driven
//! through the library, in an image this command's own way (locked, like every image
//! the tool opens). Every claim is verified: any mismatch stops the demo with exit
//! status 1.

#[path = "../../../examples/scenario/mod.rs"]
mod scenario;

use std::fs::File;
use std::path::Path;

use lunsnap::FormatOptions;

use crate::fail::{Fail, Result};
use crate::image;
use scenario::{Narrator, TempDir, Va, IMAGE_NAME};

/// The command line's narration: each step prints its `lunsnap` command, and the image
/// is made and opened as the other commands do it.
struct Cli;

impl Narrator for Cli {
    fn voice<'a>(&self, cli: &'a str, _call: &'a str) -> &'a str {
        cli
    }

    fn format(&self, path: &Path, bytes: u64, opts: &FormatOptions) -> scenario::Result<Va> {
        // The demo's own image: replaced if an earlier run left it (unless it is in use).
        if path.exists() {
            let f = File::open(path).map_err(|e| Fail::io("open", path, &e).msg)?;
            image::lock(&f, path, image::Access::Write, &image::Opening::default())
                .map_err(|e| e.msg)?;
            std::fs::remove_file(path).map_err(|e| Fail::io("remove", path, &e).msg)?;
        }
        Ok(image::create_new(path, path, bytes, opts).map_err(|e| e.msg)?)
    }

    fn reopen(&self, file: File, path: &Path) -> scenario::Result<Va> {
        // The file keeps its lock across the reopen.
        Ok(image::reopen(file, path, false).map_err(|e| e.msg)?)
    }
}

/// Runs the demo in `dir` (kept) or in a new temporary directory (removed).
pub fn run(dir: Option<&Path>) -> Result<u8> {
    let fail = |e: Box<dyn std::error::Error>| Fail::new(format!("demo: {e}"));
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Fail::io("create directory", d, &e))?;
            scenario::run(&Cli, &d.join(IMAGE_NAME), true).map_err(fail)?;
        }
        None => {
            let temp = TempDir::new("lunsnap-demo").map_err(fail)?;
            scenario::run(&Cli, &temp.image(), false).map_err(fail)?;
        }
    }
    Ok(0)
}
