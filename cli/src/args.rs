//! The command line: every command and option (README.md documents them), parsed by
//! clap the same way from the shell and from the control socket of `lunsnap serve`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};

use crate::access::{parse_host, parse_host_name, Level};
use crate::size;

/// LUNs and point-in-time business copies in a sparse array image file.
#[derive(Parser, Debug)]
#[command(name = "lunsnap", version, about, long_about = None)]
#[command(after_help = "\
IMAGE: the file (or block device) that holds the array, made by `lunsnap format`.
LUN: a LUN number, from 0 to the image's --max-luns minus 1 (P, C and COPY are the
  numbers of a parent LUN and of a copy).
SIZE, BYTES: bytes, or a number with a K, M, G or T suffix (powers of 1024), e.g. 64M;
  LUN sizes, offsets and lengths are multiples of 512 (whole sectors).
HOST: a host id, exactly 16 hex digits (64 bits, like a WWN), e.g. 50060b0000c26204.
While `lunsnap serve IMAGE` runs, every other command on IMAGE runs on the served array
through its control socket, with the same output and exit status.
Exit status: 0 success (also when a reader of stdout goes away), 1 the operation failed
(the image is unchanged), 2 usage error. `check` (as qemu-img check): 0 clean (notes
only), 1 could not check, 2 damage found, 3 only leaked space found. `scrub`: 0 every
metadata page has a good copy (bad copies were healed), 1 could not scrub, 2 some page
has no good copy left. `repair`: 0 the repair ran (also when data was lost: it says
so), 1 it could not run (2 or 3 if the check after it found damage or leaks).")]
pub struct Cli {
    /// The control socket of `lunsnap serve IMAGE`, through which commands run on a
    /// served image [default: $LUNSNAP_CONTROL, else IMAGE.ctl]
    #[arg(long, global = true, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// (Sent by a command forwarded to `lunsnap serve`: its IMAGE, resolved where it
    /// was typed, which the server compares with the image it serves.)
    #[arg(long, global = true, hide = true, value_name = "PATH")]
    pub resolved_image: Option<PathBuf>,
    /// Show the progress of `read`, `write` and `scrub`, even when stderr is not a
    /// terminal (then as a line per tenth done) [default: on a terminal, 16 MiB or more]
    #[arg(long, global = true, overrides_with = "no_progress")]
    pub progress: bool,
    /// Never show progress
    #[arg(long, global = true, overrides_with = "progress")]
    pub no_progress: bool,
    /// (Sent by a forwarded command whose stderr is a terminal: progress is drawn on
    /// one line that the next update overwrites.)
    #[arg(long, global = true, hide = true)]
    pub progress_tty: bool,
    /// If another process holds the image locked, retry for up to SECONDS before
    /// giving up with "image in use" (as `flock -w`); a served image is not waited for:
    /// the command runs in its server at once [default: 0, no waiting]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = size::seconds)]
    pub wait: Option<Duration>,
    /// Open an image whose newest commit is unreadable (both copies of its superblock
    /// damaged) at the commit before it, losing the newest one; without it such an
    /// image is refused, naming the generation. The rollback is recorded at the next
    /// change (e.g. `scrub`) and noted by `info` and `check`. A served image was
    /// opened by its server (`serve --allow-rollback`): the option does nothing there
    #[arg(long, global = true)]
    pub allow_rollback: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a sparse image file and format an empty array in it, or format a block
    /// device (a disk, a partition, a loop device) whole
    Format {
        /// The image file to create, or a block device to format (refused if it holds a
        /// file system or an array, unless --force)
        image: PathBuf,
        /// Image size (a multiple of 4K); required for an image file, not given for a
        /// block device (formatted whole)
        #[arg(long, value_name = "SIZE", value_parser = size::image_size, allow_negative_numbers = true)]
        size: Option<u64>,
        /// Data extent size, the unit of copy-on-write: a power of two from 4K to 1M
        /// [default: 16K]
        #[arg(long, value_name = "SIZE", value_parser = size::extent_size)]
        extent_size: Option<u32>,
        /// LUN numbers run from 0 to N-1 (1 to 1048576) [default: 1024]
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(lunsnap::MAX_LUNS_LIMIT)))]
        max_luns: Option<u32>,
        /// Copies of every metadata page, 1 or 2: with 2, a damaged page is read from
        /// its other copy and rewritten (healed) [default: 2]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=2))]
        metadata_copies: Option<u32>,
        /// Replace IMAGE if it exists (a file: only once the new image is complete), or
        /// format a block device that holds a file system or an array (its data is lost)
        #[arg(long)]
        force: bool,
        /// Print what was made as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Show the pool's figures: capacity, reserved, allocated, free (and what waits to
    /// be freed), metadata
    Info {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Create, delete and list LUNs; take them offline and online
    #[command(subcommand)]
    Lun(LunCmd),
    /// Create, attach, detach and restore business copies
    #[command(subcommand)]
    Copy(CopyCmd),
    /// Write FILE (`-`: stdin) to a LUN; its length must be a multiple of 512
    Write(WriteArgs),
    /// Read a LUN (by default all of it from the offset) into FILE (`-`: stdout)
    Read(ReadArgs),
    /// Show which ranges of a LUN hold data (shared with another LUN or not) and which
    /// are holes (read as zeros, occupy nothing)
    Map(MapArgs),
    /// Show the ranges where two LUNs may differ (exact at extent granularity: a range
    /// not shown reads the same in both)
    Diff(DiffArgs),
    /// Unmap a range of a LUN: it reads as zeros and its space is freed (committed)
    Discard(DiscardArgs),
    /// Free the space of dropped mappings (deleted LUNs, detached or refreshed copies,
    /// restored parents) that still waits to be freed, and say what was freed (changes
    /// free it all before they exit, `serve` in the background)
    Reclaim {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Stop after about UNITS units of work (tree nodes visited plus extent
        /// references released; the last leaf is finished whole) [default: free
        /// everything]
        #[arg(long, value_name = "UNITS",
              value_parser = clap::value_parser!(u64).range(1..))]
        budget: Option<u64>,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Register, unregister and list the hosts that access control knows
    #[command(subcommand)]
    Host(HostCmd),
    /// Let a host discover and read (read) or also write (write) a LUN
    Grant {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The LUN number
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        lun: u32,
        /// The host (16 hex digits)
        #[arg(value_parser = parse_host)]
        host: u64,
        /// What the host may do: read, or write (read and write)
        #[arg(long, value_enum)]
        access: Level,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Remove a host's grant on a LUN
    Revoke {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The LUN number
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        lun: u32,
        /// The host (16 hex digits)
        #[arg(value_parser = parse_host)]
        host: u64,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Turn host access control on (hosts see only granted LUNs) or off
    #[command(subcommand)]
    Security(SecurityCmd),
    /// Verify every invariant of the image's metadata (an fsck): exit 0 clean, 2 damage
    /// found, 3 only leaked space found, 1 could not check
    Check {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Read both copies of every metadata page in use and rewrite each bad copy from
    /// its good one: exit 0 when every page has a good copy, 2 when some page has none
    Scrub {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Rebuild what damaged metadata allows (where both copies of some pages are bad),
    /// offline, in one new commit; say what was kept and what was lost (ranges that
    /// then read as errors until written or discarded), then check the result: exit
    /// 0 when the repair ran (even if data was lost), 1 when it could not
    Repair {
        /// The image file (or block device) holding the array (not served: stop its
        /// `lunsnap serve` first)
        image: PathBuf,
        /// Only say what a repair would keep and lose; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print what was found and done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Serve the image's LUNs over NBD (each LUN and attached copy is the export
    /// named by its number) until SIGINT or SIGTERM; other lunsnap commands on the
    /// image run on the live array through the control socket (--control)
    Serve {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// unix:PATH or tcp:HOST:PORT, optionally with ,host=HOST (its clients act for
        /// that host); repeatable [default: unix:IMAGE.nbd]
        #[arg(long, value_name = "ADDR", value_parser = lunsnap_server::parse_listen)]
        listen: Vec<lunsnap_server::ListenSpec>,
        /// Most clients served at once
        #[arg(long, value_name = "N", default_value_t = lunsnap_server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// TLS for TCP listeners: the server's certificate (PEM)
        #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        /// TLS: the server's private key (PEM)
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
        tls_key: Option<PathBuf>,
        /// TLS: the CA that signs clients' certificates (PEM); a client certificate's
        /// common name is the host it acts for (its id or registered name)
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
        tls_ca: Option<PathBuf>,
    },
    /// Run the backup and restore cycle of HP's Business Copy VA guide end to end, narrating each step
    Demo {
        /// Keep the image in this directory (default: a temporary directory, removed)
        dir: Option<PathBuf>,
    },
}

/// `write IMAGE LUN FILE [--offset BYTES] [--as HOST]`
#[derive(Args, Debug, Clone)]
pub struct WriteArgs {
    /// The image file (or block device) holding the array
    pub image: PathBuf,
    /// The LUN number
    #[arg(value_parser = size::lun, allow_negative_numbers = true)]
    pub lun: u32,
    /// The data to write; `-` reads stdin
    pub file: PathBuf,
    /// Byte offset in the LUN (a multiple of 512)
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, default_value = "0",
          allow_negative_numbers = true)]
    pub offset: u64,
    /// Write as this host: with security enabled it needs a write grant on the LUN
    #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
    pub as_host: Option<u64>,
    /// Store zeros as data, so allocation follows writes (by default whole extents of
    /// zeros are unmapped: they read as zeros and occupy nothing)
    #[arg(long)]
    pub allocate: bool,
    /// Write only the ranges this file lists (the FILE.ranges of `read --changed-since`,
    /// or what `diff --json` prints), each from FILE at its offset: applies an
    /// incremental backup over a full one
    #[arg(long, value_name = "RANGES")]
    pub ranges: Option<PathBuf>,
    /// Print what was written as a JSON object
    #[arg(long)]
    pub json: bool,
    /// (Sent by a forwarded `write --ranges`: stdin carries the ranges, then their data.)
    #[arg(long, hide = true)]
    pub records: bool,
    /// (The length of the input `-` stands for, when known: a forwarded `write`
    /// sends its file's, so that a bad length is refused before anything is written.)
    #[arg(long, hide = true, value_name = "BYTES")]
    pub input_length: Option<u64>,
    /// (A forwarded `write` could not open its FILE: fail with this message where
    /// FILE would be opened.)
    #[arg(long, hide = true, value_name = "MESSAGE")]
    pub file_error: Option<String>,
}

/// `read IMAGE LUN FILE [--offset BYTES] [--length BYTES] [--as HOST]`
#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// The image file (or block device) holding the array
    pub image: PathBuf,
    /// The LUN number
    #[arg(value_parser = size::lun, allow_negative_numbers = true)]
    pub lun: u32,
    /// Where the data goes (created or truncated); `-` writes stdout
    pub file: PathBuf,
    /// Byte offset in the LUN (a multiple of 512)
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, default_value = "0",
          allow_negative_numbers = true)]
    pub offset: u64,
    /// Bytes to read (a multiple of 512) [default: to the end of the LUN]
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, allow_negative_numbers = true)]
    pub length: Option<u64>,
    /// Read as this host: with security enabled it needs a grant on the LUN
    #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
    pub as_host: Option<u64>,
    /// An incremental backup: write into FILE only the ranges where the LUN differs
    /// from LUN BASE (at their offsets; FILE keeps the full length and is sparse
    /// elsewhere), and list them in FILE.ranges. Restore: `write IMAGE LUN FULL`, then
    /// `write IMAGE LUN FILE --ranges FILE.ranges` for each incremental, oldest first
    #[arg(long, value_name = "BASE", value_parser = size::lun, allow_negative_numbers = true)]
    pub changed_since: Option<u32>,
    /// Write the LUN's bytes to stdout even if it is a terminal
    #[arg(long)]
    pub force: bool,
    /// (Sent by a forwarded `read` into a file: stdout carries records of the data
    /// ranges, holes left out, instead of the bytes.)
    #[arg(long, hide = true)]
    pub records: bool,
    /// (A forwarded `read` may not write its FILE: fail with this message where
    /// FILE would be created.)
    #[arg(long, hide = true, value_name = "MESSAGE")]
    pub file_error: Option<String>,
}

/// `map IMAGE LUN [--offset BYTES] [--length BYTES] [--json] [--as HOST]`
#[derive(Args, Debug, Clone)]
pub struct MapArgs {
    /// The image file (or block device) holding the array
    pub image: PathBuf,
    /// The LUN number
    #[arg(value_parser = size::lun, allow_negative_numbers = true)]
    pub lun: u32,
    /// Byte offset in the LUN (a multiple of 512)
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, default_value = "0",
          allow_negative_numbers = true)]
    pub offset: u64,
    /// Bytes to map (a multiple of 512) [default: to the end of the LUN]
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, allow_negative_numbers = true)]
    pub length: Option<u64>,
    /// Print a JSON array, in the manner of `qemu-img map --output=json`
    #[arg(long)]
    pub json: bool,
    /// Map as this host: with security enabled it needs a grant on the LUN
    #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
    pub as_host: Option<u64>,
}

/// `diff IMAGE A B [--offset BYTES] [--length BYTES] [--json] [--as HOST]`
#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    /// The image file (or block device) holding the array
    pub image: PathBuf,
    /// One LUN (e.g. yesterday's copy)
    #[arg(value_parser = size::lun, allow_negative_numbers = true)]
    pub a: u32,
    /// The other (e.g. today's copy)
    #[arg(value_parser = size::lun, allow_negative_numbers = true)]
    pub b: u32,
    /// Byte offset in both LUNs (a multiple of 512)
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, default_value = "0",
          allow_negative_numbers = true)]
    pub offset: u64,
    /// Bytes to compare (a multiple of 512) [default: to the end of the LUNs, which
    /// must then be of one size]
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, allow_negative_numbers = true)]
    pub length: Option<u64>,
    /// Print a JSON object
    #[arg(long)]
    pub json: bool,
    /// Compare as this host: with security enabled it needs a grant on both LUNs
    #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
    pub as_host: Option<u64>,
}

/// `discard IMAGE LUN --offset BYTES --length BYTES [--as HOST]`
#[derive(Args, Debug, Clone)]
pub struct DiscardArgs {
    /// The image file (or block device) holding the array
    pub image: PathBuf,
    /// The LUN number
    #[arg(value_parser = size::lun, allow_negative_numbers = true)]
    pub lun: u32,
    /// Byte offset in the LUN (a multiple of 512)
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, allow_negative_numbers = true)]
    pub offset: u64,
    /// Bytes to discard (a multiple of 512)
    #[arg(long, value_name = "BYTES", value_parser = size::sectors, allow_negative_numbers = true)]
    pub length: u64,
    /// Discard as this host: with security enabled it needs a write grant on the LUN
    #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
    pub as_host: Option<u64>,
    /// Print what was discarded as a JSON object
    #[arg(long)]
    pub json: bool,
}

/// `lun ...`
#[derive(Subcommand, Debug)]
pub enum LunCmd {
    /// Create a LUN reading as zeros; it reserves its full size in the pool
    Create {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The new LUN's number
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        lun: u32,
        /// LUN size (a multiple of 512)
        #[arg(long, value_name = "SIZE", value_parser = size::lun_size, allow_negative_numbers = true)]
        size: u64,
        /// Print what was created as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Delete a LUN (or a copy), freeing what only it used
    Delete {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The LUN or copy to delete
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        lun: u32,
        /// Delete a LUN that has copies: attached copies stand alone as plain LUNs,
        /// detached ones stay without a parent
        #[arg(long)]
        orphan_copies: bool,
        /// If the image is served and NBD clients have the LUN open, end their
        /// connections (their acknowledged writes stay); without it the command is refused
        #[arg(long)]
        force: bool,
        /// Print what was deleted as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// List the LUNs and copies with their space figures, state and grants
    List {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print a JSON array (with --tree, each LUN's copies nested in it)
        #[arg(long)]
        json: bool,
        /// Only the LUNs this host may discover
        #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
        as_host: Option<u64>,
        /// Only the copies of LUN N (with --tree, and their copies in turn)
        #[arg(long, value_name = "N", value_parser = size::lun, allow_negative_numbers = true)]
        copies_of: Option<u32>,
        /// The lineage: each LUN with its copies indented below it, copies of copies
        /// deeper
        #[arg(long)]
        tree: bool,
    },
    /// Take a LUN offline: its I/O is refused, management operations still work
    Offline {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The LUN number
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        lun: u32,
        /// If the image is served and NBD clients have the LUN open, end their
        /// connections (their acknowledged writes stay); without it the command is refused
        #[arg(long)]
        force: bool,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Bring an offline LUN back online
    Online {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The LUN number
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        lun: u32,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
}

/// `host ...`
#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Register a host by its id, with an optional label
    Add {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The host's id (16 hex digits)
        #[arg(value_parser = parse_host)]
        host: u64,
        /// A label for people (at most 56 bytes)
        #[arg(long, default_value = "", value_parser = parse_host_name)]
        name: String,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Unregister a host, removing its grants
    Remove {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The host's id (16 hex digits)
        #[arg(value_parser = parse_host)]
        host: u64,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// List the registered hosts
    List {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
}

/// `security ...`
#[derive(Subcommand, Debug)]
pub enum SecurityCmd {
    /// Each host sees, reads and writes only the LUNs it is granted
    Enable {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Every host sees every LUN (grants are kept for the next `enable`)
    Disable {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
}

/// `copy ...`
#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)]
pub enum CopyCmd {
    /// Define copy C of LUN P: attached (P's image now) or detached (no data yet).
    /// Several --parent/--copy pairs make a consistency group: every copy at one
    /// point in time, all or nothing
    #[command(group(ArgGroup::new("state").required(true).args(["attached", "detached"])))]
    Create {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The parent LUN (repeat with --copy for a group: the Nth --parent goes with
        /// the Nth --copy)
        #[arg(long, value_name = "P", required = true, value_parser = size::lun,
              allow_negative_numbers = true)]
        parent: Vec<u32>,
        /// The copy's LUN number
        #[arg(long, value_name = "C", required = true, value_parser = size::lun,
              allow_negative_numbers = true)]
        copy: Vec<u32>,
        /// Make the copy now (it reserves the parent's size)
        #[arg(long)]
        attached: bool,
        /// Only define it (no data, no reservation, I/O refused until attached)
        #[arg(long)]
        detached: bool,
        /// Print what was created as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Make (or refresh) copy C: it becomes its parent's image now. Several copies
    /// are attached as a consistency group: one point in time, all or nothing
    Attach {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The copies (LUN numbers)
        #[arg(value_name = "COPY", required = true, value_parser = size::lun,
              allow_negative_numbers = true)]
        copies: Vec<u32>,
        /// If the image is served and NBD clients have a copy open, end their
        /// connections (their acknowledged writes stay); without it the command is refused
        #[arg(long)]
        force: bool,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Discard copy C's data and reservation, keeping its number
    Detach {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The copy (a LUN number)
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        copy: u32,
        /// If the image is served and NBD clients have the copy open, end their
        /// connections (their acknowledged writes stay); without it the command is refused
        #[arg(long)]
        force: bool,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Copy to parent: the parent's contents become copy C's (the copy is unchanged)
    Restore {
        /// The image file (or block device) holding the array
        image: PathBuf,
        /// The copy (a LUN number) whose contents its parent gets
        #[arg(value_parser = size::lun, allow_negative_numbers = true)]
        copy: u32,
        /// If the image is served and NBD clients have the copy's parent open, end their
        /// connections (their acknowledged writes stay); without it the command is refused
        #[arg(long)]
        force: bool,
        /// Print what was done as a JSON object
        #[arg(long)]
        json: bool,
    },
}

/// What clap cannot check: `copy create` pairs each --parent with a --copy, names
/// each copy once and no copy as a parent; `copy attach` names each copy once; `read
/// --changed-since` needs a FILE (FILE.ranges goes beside it); `format` needs --size
/// for a file, none for a block device, and a size its options fit in.
pub fn validate(cli: &Cli) -> Result<(), clap::Error> {
    use clap::error::ErrorKind;
    match &cli.cmd {
        Cmd::Copy(CopyCmd::Create { parent, copy, .. }) => {
            pairs(parent, copy).map_err(|(k, m)| usage(&["copy", "create"], k, m))
        }
        Cmd::Copy(CopyCmd::Attach { copies, .. }) => match twice(copies) {
            Some(c) => Err(usage(
                &["copy", "attach"],
                ErrorKind::ValueValidation,
                format!("copy {c} is given twice: name each copy of the group once"),
            )),
            None => Ok(()),
        },
        Cmd::Read(r) if r.changed_since.is_some() && r.file.as_os_str() == "-" && !r.records => {
            Err(usage(
                &["read"],
                ErrorKind::ArgumentConflict,
                "--changed-since writes FILE and FILE.ranges beside it: give a file, not `-`"
                    .to_string(),
            ))
        }
        Cmd::Format {
            image,
            size,
            extent_size,
            max_luns,
            metadata_copies,
            ..
        } => {
            let opts = crate::image::format_options(*extent_size, *max_luns, *metadata_copies);
            format_size(image, *size, &opts).map_err(|(k, m)| usage(&["format"], k, m))
        }
        _ => Ok(()),
    }
}

/// Checks `format`'s --size: required for an image file and large enough for the
/// options, not given for a block device (formatted whole).
fn format_size(
    image: &Path,
    size: Option<u64>,
    opts: &lunsnap::FormatOptions,
) -> Result<(), (clap::error::ErrorKind, String)> {
    use clap::error::ErrorKind;
    let device = crate::image::is_block_device(image);
    match size {
        None if !device => Err((
            ErrorKind::MissingRequiredArgument,
            String::from(
                "--size is required: give the image file's size, e.g. --size 1G (only a \
                 block device is formatted without it, whole)",
            ),
        )),
        Some(_) if device => Err((
            ErrorKind::ArgumentConflict,
            format!(
                "{} is a block device: it is formatted whole; leave out --size",
                image.display()
            ),
        )),
        Some(n) => {
            let what = format!("--size {}", crate::size::both(n));
            match crate::image::too_small(&what, n, opts, true) {
                Some(why) => Err((ErrorKind::ValueValidation, why)),
                None => Ok(()),
            }
        }
        None => Ok(()),
    }
}

/// The first number `ns` holds twice.
fn twice(ns: &[u32]) -> Option<u32> {
    ns.iter()
        .enumerate()
        .find(|(i, n)| ns[..*i].contains(n))
        .map(|(_, &n)| n)
}

/// Checks the --parent/--copy pairs of `copy create`.
fn pairs(parent: &[u32], copy: &[u32]) -> Result<(), (clap::error::ErrorKind, String)> {
    use clap::error::ErrorKind;
    if parent.len() != copy.len() {
        return Err((
            ErrorKind::WrongNumberOfValues,
            format!(
                "{} --parent and {} --copy: give one --copy for each --parent",
                parent.len(),
                copy.len()
            ),
        ));
    }
    if let Some(c) = twice(copy) {
        return Err((
            ErrorKind::ValueValidation,
            format!("--copy {c} is given twice: each copy of a group needs its own number"),
        ));
    }
    if let Some(c) = copy.iter().find(|c| parent.contains(c)) {
        return Err((
            ErrorKind::ValueValidation,
            format!(
                "{c} is both a --copy and a --parent: a copy of a group cannot be the parent \
                 of another (make it first, then copy it)"
            ),
        ));
    }
    Ok(())
}

/// A usage error of the subcommand at `path`, as clap words its own.
fn usage(path: &[&str], kind: clap::error::ErrorKind, msg: String) -> clap::Error {
    let mut c = Cli::command();
    c.build();
    let mut sub = Some(&mut c);
    for name in path {
        sub = sub.and_then(|s| s.find_subcommand_mut(name));
    }
    match sub {
        Some(s) => s.error(kind, msg),
        None => Cli::command().error(kind, msg),
    }
}

impl Cmd {
    /// The image the command works on (none for `demo`).
    pub fn image(&self) -> Option<&Path> {
        match self {
            Cmd::Format { image, .. }
            | Cmd::Info { image, .. }
            | Cmd::Grant { image, .. }
            | Cmd::Revoke { image, .. }
            | Cmd::Check { image, .. }
            | Cmd::Scrub { image, .. }
            | Cmd::Repair { image, .. }
            | Cmd::Reclaim { image, .. }
            | Cmd::Serve { image, .. } => Some(image),
            Cmd::Write(w) => Some(&w.image),
            Cmd::Read(r) => Some(&r.image),
            Cmd::Map(m) => Some(&m.image),
            Cmd::Diff(d) => Some(&d.image),
            Cmd::Discard(d) => Some(&d.image),
            Cmd::Lun(c) => Some(match c {
                LunCmd::Create { image, .. }
                | LunCmd::Delete { image, .. }
                | LunCmd::List { image, .. }
                | LunCmd::Offline { image, .. }
                | LunCmd::Online { image, .. } => image,
            }),
            Cmd::Copy(c) => Some(match c {
                CopyCmd::Create { image, .. }
                | CopyCmd::Attach { image, .. }
                | CopyCmd::Detach { image, .. }
                | CopyCmd::Restore { image, .. } => image,
            }),
            Cmd::Host(c) => Some(match c {
                HostCmd::Add { image, .. }
                | HostCmd::Remove { image, .. }
                | HostCmd::List { image, .. } => image,
            }),
            Cmd::Security(
                SecurityCmd::Enable { image, .. } | SecurityCmd::Disable { image, .. },
            ) => Some(image),
            Cmd::Demo { .. } => None,
        }
    }
}
