//! `lunsnap`: LUNs and business copies in array image files, from the command line.
//!
//! Exit status: 0 success, 1 the operation failed (one line on stderr says why; the
//! image is unchanged), 2 usage error. README.md documents every command.

mod cmd;
mod demo;
mod fail;
mod image;
mod json;
mod progress;
mod size;
mod transfer;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};

use crate::image::FormatSpec;

/// LUNs and point-in-time business copies in a sparse array image file.
#[derive(Parser, Debug)]
#[command(name = "lunsnap", version, about, long_about = None)]
#[command(after_help = "\
SIZE: bytes, or a number with a K, M, G or T suffix (powers of 1024), e.g. 64M.
Exit status: 0 success, 1 the operation failed (the image is unchanged), 2 usage error.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a sparse image file and format an empty array in it
    Format {
        /// The image file to create
        image: PathBuf,
        /// Image size (a multiple of 4K)
        #[arg(long, value_name = "SIZE", value_parser = size::image_size)]
        size: u64,
        /// Data extent size, the unit of copy-on-write: a power of two from 4K to 1M
        /// [default: 16K]
        #[arg(long, value_name = "SIZE", value_parser = size::extent_size)]
        extent_size: Option<u32>,
        /// LUN numbers run from 0 to N-1 (1 to 1048576) [default: 1024]
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(lunsnap::array::MAX_LUNS_LIMIT)))]
        max_luns: Option<u32>,
        /// Replace IMAGE if it exists (only once the new image is complete)
        #[arg(long)]
        force: bool,
    },
    /// Show the pool's figures: capacity, reserved, allocated, free, metadata
    Info {
        image: PathBuf,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Create, delete and list LUNs
    #[command(subcommand)]
    Lun(LunCmd),
    /// Create, attach, detach and restore business copies
    #[command(subcommand)]
    Copy(CopyCmd),
    /// Write FILE (`-`: stdin) to a LUN; its length must be a multiple of 512
    Write {
        image: PathBuf,
        lun: u32,
        /// The data to write; `-` reads stdin
        file: PathBuf,
        /// Byte offset in the LUN (a multiple of 512)
        #[arg(long, value_name = "BYTES", value_parser = size::parse, default_value = "0")]
        offset: u64,
    },
    /// Read a LUN (by default all of it from the offset) into FILE (`-`: stdout)
    Read {
        image: PathBuf,
        lun: u32,
        /// Where the data goes (created or truncated); `-` writes stdout
        file: PathBuf,
        /// Byte offset in the LUN (a multiple of 512)
        #[arg(long, value_name = "BYTES", value_parser = size::parse, default_value = "0")]
        offset: u64,
        /// Bytes to read (a multiple of 512) [default: to the end of the LUN]
        #[arg(long, value_name = "BYTES", value_parser = size::parse)]
        length: Option<u64>,
    },
    /// Verify every invariant of the image's metadata (an fsck; exit 1 if any is broken)
    Check {
        image: PathBuf,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Run the seed's backup and restore cycle end to end, narrating each step
    Demo {
        /// Keep the image in this directory (default: a temporary directory, removed)
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum LunCmd {
    /// Create a LUN reading as zeros; it reserves its full size in the pool
    Create {
        image: PathBuf,
        lun: u32,
        /// LUN size (a multiple of 512)
        #[arg(long, value_name = "SIZE", value_parser = size::parse)]
        size: u64,
    },
    /// Delete a LUN (or a copy), freeing what only it used
    Delete {
        image: PathBuf,
        lun: u32,
        /// Delete a LUN that has copies: attached copies stand alone as plain LUNs,
        /// detached ones stay without a parent
        #[arg(long)]
        orphan_copies: bool,
    },
    /// List the LUNs and copies with their space figures
    List {
        image: PathBuf,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)]
enum CopyCmd {
    /// Define copy C of LUN P: attached (P's image now) or detached (no data yet)
    #[command(group(ArgGroup::new("state").required(true).args(["attached", "detached"])))]
    Create {
        image: PathBuf,
        /// The parent LUN
        #[arg(long, value_name = "P")]
        parent: u32,
        /// The copy's LUN number
        #[arg(long, value_name = "C")]
        copy: u32,
        /// Make the copy now (it reserves the parent's size)
        #[arg(long)]
        attached: bool,
        /// Only define it (no data, no reservation, I/O refused until attached)
        #[arg(long)]
        detached: bool,
    },
    /// Make (or refresh) copy C: it becomes its parent's image now
    Attach { image: PathBuf, copy: u32 },
    /// Discard copy C's data and reservation, keeping its number
    Detach { image: PathBuf, copy: u32 },
    /// Copy to parent: the parent's contents become copy C's (the copy is unchanged)
    Restore { image: PathBuf, copy: u32 },
}

fn run(cmd: Cmd, out: &mut String) -> fail::Result<u8> {
    match cmd {
        Cmd::Format {
            image,
            size,
            extent_size,
            max_luns,
            force,
        } => {
            let spec = FormatSpec {
                size,
                extent_size,
                max_luns,
                force,
            };
            cmd::format(&image, &spec, out)
        }
        Cmd::Info { image, json } => cmd::info(&image, json, out),
        Cmd::Lun(LunCmd::Create { image, lun, size }) => cmd::lun_create(&image, lun, size, out),
        Cmd::Lun(LunCmd::Delete {
            image,
            lun,
            orphan_copies,
        }) => cmd::lun_delete(&image, lun, orphan_copies, out),
        Cmd::Lun(LunCmd::List { image, json }) => cmd::lun_list(&image, json, out),
        Cmd::Copy(CopyCmd::Create {
            image,
            parent,
            copy,
            attached,
            detached: _,
        }) => cmd::copy_create(&image, parent, copy, attached, out),
        Cmd::Copy(CopyCmd::Attach { image, copy }) => cmd::copy_attach(&image, copy, out),
        Cmd::Copy(CopyCmd::Detach { image, copy }) => cmd::copy_detach(&image, copy, out),
        Cmd::Copy(CopyCmd::Restore { image, copy }) => cmd::copy_restore(&image, copy, out),
        Cmd::Write {
            image,
            lun,
            file,
            offset,
        } => transfer::write(&image, lun, &file, offset, out),
        Cmd::Read {
            image,
            lun,
            file,
            offset,
            length,
        } => transfer::read(&image, lun, &file, offset, length, out),
        Cmd::Check { image, json } => cmd::check(&image, json, out),
        Cmd::Demo { dir } => demo::run(dir.as_deref()),
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's default); --help and --version with 0.
    let cli = Cli::parse();
    let mut out = String::new();
    let result = run(cli.cmd, &mut out);
    // (The demo and `read` to stdout print as they go, and leave `out` empty.)
    let printed = if out.is_empty() {
        Ok(())
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
    };
    match (result, printed) {
        (Ok(code), Ok(())) => ExitCode::from(code),
        (Err(e), _) => {
            let _ = writeln!(std::io::stderr(), "lunsnap: {e}");
            ExitCode::from(1)
        }
        (Ok(_), Err(e)) => {
            let _ = writeln!(std::io::stderr(), "lunsnap: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
