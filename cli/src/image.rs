//! Array images in files and on block devices: opening with a lock, formatting without
//! clobbering.
//!
//! Every image is a file (or a block device) of 4 KiB device blocks. A command that
//! changes an image holds an exclusive lock on it ([`std::fs::File::try_lock`]); one
//! that only reads holds a shared lock. A second process that cannot get its lock
//! fails with "image in use" rather than corrupting anything: at once, or after
//! retrying for the time `--wait` gives ([`Opening`]).
//!
//! An image whose newest commit cannot be read (both copies of its superblock
//! damaged) is refused with the core's message, naming the generation lost, unless
//! `--allow-rollback`: it then opens at the commit before.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lunsnap::DEFAULT_EXTENT_SIZE;
use lunsnap::{Array, Error, FileDevice, FormatOptions, PoolInfo};

use crate::fail::{explain, Fail, Result, IN_USE};
use crate::signature;
use crate::size::{both, human, IMAGE_BLOCK};

/// An open array over an image file.
pub type Va = Array<FileDevice>;

/// How a command uses an image: the lock it takes and how it opens the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Shared lock, file opened read-only: the command never changes the image.
    Read,
    /// Exclusive lock, file opened for reading and writing.
    Write,
}

/// How a command opens its image: how long it retries taking a lock that another
/// process holds (`--wait`), and whether it accepts a rollback (`--allow-rollback`).
#[derive(Clone, Debug, Default)]
pub struct Opening {
    /// The longest wait (none: fail at once).
    pub limit: Option<Duration>,
    /// The control socket of a server that may hold the image (`--control`): a served
    /// image is not waited for (the command runs in the server instead).
    pub control: Option<PathBuf>,
    /// Open at the newest readable commit when the newest one is lost to damage
    /// (`--allow-rollback`); without it such an image is refused.
    pub allow_rollback: bool,
}

/// Opens the array in the image at `path`, locked for `access` (waiting as `wait` says).
/// With [`Access::Read`] nothing is written to the image: bad metadata copies found
/// on the way are read from their good copy, and left for the next change to rewrite.
pub fn open(path: &Path, access: Access, wait: &Opening) -> Result<Va> {
    let file = locked(path, access, wait)?;
    reopen(file, path, wait.allow_rollback)
}

/// The image file at `path`, opened and locked for `access` (waiting as `wait` says):
/// what [`open`] opens the array in, and what `repair` repairs.
pub fn locked(path: &Path, access: Access, wait: &Opening) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(access == Access::Write)
        .open(path)
        .map_err(|e| Fail::io("open", path, &e))?;
    let meta = file.metadata().map_err(|e| Fail::io("inspect", path, &e))?;
    if meta.is_dir() {
        return Err(Fail::new(format!(
            "{} is a directory, not a lunsnap image",
            path.display()
        )));
    }
    lock(&file, path, access, wait)?;
    Ok(file)
}

/// Opens the array in an already open and locked image file; `allow_rollback`: see
/// [`Opening::allow_rollback`].
pub fn reopen(file: File, path: &Path, allow_rollback: bool) -> Result<Va> {
    let dev = device(file, path)?;
    Array::open(dev, &open_options(allow_rollback)).map_err(|e| refused("open", path, e))
}

/// The open options of `--allow-rollback`.
pub fn open_options(allow_rollback: bool) -> lunsnap::OpenOptions {
    lunsnap::OpenOptions {
        allow_rollback,
        ..lunsnap::OpenOptions::default()
    }
}

/// Why the array in the image at `path` could not be opened (or repaired: `verb`).
pub fn refused(verb: &str, path: &Path, e: Error) -> Fail {
    match e {
        Error::BlockSizeMismatch { formatted, device } => Fail::new(format!(
            "cannot {verb} {}: its array was formatted on {formatted}-byte blocks, but \
             lunsnap opens images of {device}-byte blocks (as it formats them); use the \
             library with a FileDevice of {formatted}-byte blocks to {verb} it",
            path.display()
        )),
        e => Fail::new(format!("cannot {verb} {}: {}", path.display(), explain(&e))),
    }
}

/// Takes the lock `access` needs on `file`: at once, or retrying for as long as `wait`
/// allows while another process holds it (not when a server holds it: see [`Opening`]).
pub fn lock(file: &File, path: &Path, access: Access, wait: &Opening) -> Result<()> {
    let start = Instant::now();
    loop {
        let r = match access {
            Access::Write => file.try_lock(),
            Access::Read => file.try_lock_shared(),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Fail::io("lock", path, &e)),
        }
        let left = wait
            .limit
            .and_then(|l| l.checked_sub(start.elapsed()))
            .filter(|l| !l.is_zero());
        match left {
            Some(left) if !served(path, wait) => {
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            _ => return Err(in_use(path, wait)),
        }
    }
}

/// The refusal of an image that another process holds locked.
fn in_use(path: &Path, wait: &Opening) -> Fail {
    let waited = match wait.limit {
        Some(l) if !l.is_zero() && !served(path, wait) => {
            format!(" (still, after waiting {} s)", l.as_secs_f64())
        }
        _ => String::new(),
    };
    Fail::new(format!(
        "{IN_USE}: another process holds a lock on {}{waited}",
        path.display()
    ))
}

/// True if a server answers on the control socket of the image at `path`.
fn served(path: &Path, wait: &Opening) -> bool {
    let ctl = crate::serve::control_path(path, wait.control.as_deref());
    ctl.exists() && std::os::unix::net::UnixStream::connect(&ctl).is_ok()
}

/// A block device over the whole of `file` (a regular file or a host block device).
pub fn device(mut file: File, path: &Path) -> Result<FileDevice> {
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|e| Fail::io("measure", path, &e))?;
    if len == 0 || !len.is_multiple_of(IMAGE_BLOCK) {
        return Err(Fail::new(format!(
            "{} is not a lunsnap image: its length ({len} bytes) is not a positive multiple \
             of {IMAGE_BLOCK}",
            path.display()
        )));
    }
    FileDevice::from_file(file, IMAGE_BLOCK as u32, len / IMAGE_BLOCK)
        .map_err(|e| Fail::io("use", path, &e))
}

/// What `format` is asked to make.
#[derive(Clone, Debug)]
pub struct FormatSpec {
    /// Image size in bytes (a positive multiple of 4 KiB); none for a block device.
    pub size: Option<u64>,
    /// Data extent size (default: the library's).
    pub extent_size: Option<u32>,
    /// Maximum number of LUNs (default: the library's).
    pub max_luns: Option<u32>,
    /// Copies of every metadata page, 1 or 2 (default: the library's, 2).
    pub metadata_copies: Option<u32>,
    /// Replace an existing file, or format over a device's contents.
    pub force: bool,
}

/// What `format` made.
pub struct Made {
    /// The new array's figures.
    pub info: PoolInfo,
    /// The image's length in bytes.
    pub bytes: u64,
    /// True for a block device (false: an image file).
    pub device: bool,
}

/// The format options of `--extent-size`, `--max-luns` and `--metadata-copies`
/// (defaults: the library's).
pub fn format_options(
    extent_size: Option<u32>,
    max_luns: Option<u32>,
    metadata_copies: Option<u32>,
) -> FormatOptions {
    let defaults = FormatOptions::default();
    FormatOptions {
        extent_size: extent_size.unwrap_or(DEFAULT_EXTENT_SIZE),
        max_luns: max_luns.unwrap_or(defaults.max_luns),
        metadata_copies: metadata_copies.unwrap_or(defaults.metadata_copies),
        ..defaults
    }
}

/// True if `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Why an array with `opts` does not fit in `size` bytes (`what` names them, e.g.
/// `--size 1 MiB (1048576 bytes)`), with what would fit (a larger `--size` for a
/// `file`, else a larger device, or fewer LUN numbers); `None` if it fits.
pub fn too_small(what: &str, size: u64, opts: &FormatOptions, file: bool) -> Option<String> {
    let least = opts.min_device_bytes().ok()?;
    if size >= least {
        return None;
    }
    let fits = |m: u32| {
        let o = FormatOptions {
            max_luns: m,
            ..opts.clone()
        };
        o.min_device_bytes().is_ok_and(|b| b <= size)
    };
    let mib = 1u64 << 20;
    let larger = if file {
        format!("give --size {}M or more", least.div_ceil(mib))
    } else {
        String::from("use a larger device")
    };
    let copies = match opts.metadata_copies {
        1 => String::from("1 copy"),
        n => format!("{n} copies"),
    };
    let mut msg = format!(
        "{what} is too small: with LUN numbers 0 to {} (--max-luns), {} extents and {copies} \
         of the metadata (--metadata-copies), an array needs at least {}; {larger}",
        opts.max_luns.saturating_sub(1),
        human(u64::from(opts.extent_size)),
        both(least),
    );
    if opts.max_luns > 1 && fits(1) {
        // The most LUN numbers that fit: min_device_bytes grows with max_luns.
        let (mut lo, mut hi) = (1u32, opts.max_luns - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        msg.push_str(&format!(
            ", or allow fewer LUNs: --max-luns {lo} fits in {}",
            human(size)
        ));
    }
    Some(msg)
}

/// Makes an empty array at `path`: a new sparse image file of `spec.size` bytes, or the
/// whole of a block device. An existing file is refused unless `spec.force`; it is
/// then replaced only once the new image is complete (formatted beside it, then
/// renamed over it), so a failure leaves it as it was. A block device is refused if it
/// holds a file system or an array (a known signature), unless `spec.force`.
pub fn format(path: &Path, spec: &FormatSpec, wait: &Opening) -> Result<Made> {
    let opts = format_options(spec.extent_size, spec.max_luns, spec.metadata_copies);
    if is_block_device(path) {
        return format_device(path, spec.force, &opts, wait);
    }
    let Some(size) = spec.size else {
        return Err(Fail::usage(format!(
            "{}: give the image's size with --size (only a block device is formatted \
             without it)",
            path.display()
        )));
    };
    let info = match std::fs::symlink_metadata(path) {
        Ok(_) if !spec.force => Err(exists(path)),
        Ok(_) => replace(path, size, &opts, wait),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, size, &opts),
        Err(e) => Err(Fail::io("inspect", path, &e)),
    }?;
    Ok(Made {
        info,
        bytes: size,
        device: false,
    })
}

/// The refusal of an existing file, saying what it holds where it is recognized.
fn exists(path: &Path) -> Fail {
    let holds = File::open(path)
        .ok()
        .and_then(|f| signature::probe(&f).ok().flatten())
        .map_or_else(String::new, |what| format!(" and holds {what}"));
    Fail::new(format!(
        "{} already exists{holds}: use --force to replace it",
        path.display()
    ))
}

/// Formats the whole of the block device at `path` in place.
fn format_device(path: &Path, force: bool, opts: &FormatOptions, wait: &Opening) -> Result<Made> {
    let mut file = open_device(path)?;
    lock(&file, path, Access::Write, wait)?;
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|e| Fail::io("measure", path, &e))?;
    let blocks = len / IMAGE_BLOCK;
    if let Some(what) = signature::probe(&file).map_err(|e| Fail::io("read", path, &e))? {
        if !force {
            return Err(Fail::new(format!(
                "{} holds {what}: use --force to format over it (everything on it is lost)",
                path.display()
            )));
        }
    }
    let shown = format!("{} ({})", path.display(), both(blocks * IMAGE_BLOCK));
    if let Some(why) = too_small(&shown, blocks * IMAGE_BLOCK, opts, false) {
        return Err(Fail::new(why));
    }
    let dev = FileDevice::from_file(file, IMAGE_BLOCK as u32, blocks)
        .map_err(|e| Fail::io("use", path, &e))?;
    let va = Array::format(dev, opts)
        .map_err(|e| Fail::new(format!("cannot format {}: {}", path.display(), explain(&e))))?;
    Ok(Made {
        info: finish(va, path)?,
        bytes: blocks * IMAGE_BLOCK,
        device: true,
    })
}

/// Opens a block device for formatting: for reading and writing, and on Linux
/// exclusively (`O_EXCL`: refused while it is mounted or another program holds it so).
fn open_device(path: &Path) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
    }
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ResourceBusy {
            Fail::new(format!(
                "{} is in use (mounted, or held by another program): unmount or release it first",
                path.display()
            ))
        } else {
            Fail::io("open", path, &e)
        }
    })
}

/// Creates a new file at `path` (never an existing one) holding a formatted image.
/// The file is removed again if anything fails. Messages name the file `shown`.
pub fn create_new(path: &Path, shown: &Path, size: u64, opts: &FormatOptions) -> Result<Va> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists(shown),
            _ => Fail::io("create", shown, &e),
        })?;
    // The lock goes with the file into the device, and lasts as long as the array.
    let r = lock(&file, shown, Access::Write, &Opening::default())
        .and_then(|()| write_array(file, shown, size, opts));
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

fn create(path: &Path, size: u64, opts: &FormatOptions) -> Result<PoolInfo> {
    let va = create_new(path, path, size, opts)?;
    finish(va, path).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

/// Formats a temporary file beside the existing image, then renames it over it.
fn replace(path: &Path, size: u64, opts: &FormatOptions, wait: &Opening) -> Result<PoolInfo> {
    let target = std::fs::canonicalize(path).map_err(|e| Fail::io("resolve", path, &e))?;
    let meta = std::fs::metadata(&target).map_err(|e| Fail::io("inspect", path, &e))?;
    if !meta.is_file() {
        return Err(Fail::new(format!(
            "{} is neither a regular file nor a block device: format writes image files \
             and block devices only",
            path.display()
        )));
    }
    // Hold the old image's lock until it is replaced: nobody may be using it.
    let old = File::open(&target).map_err(|e| Fail::io("open", path, &e))?;
    lock(&old, path, Access::Write, wait)?;
    let tmp = temp_beside(&target);
    let va = create_new(&tmp, path, size, opts)?;
    let r = finish(va, path).and_then(|info| {
        std::fs::set_permissions(&tmp, meta.permissions())
            .and_then(|()| std::fs::rename(&tmp, &target))
            .map_err(|e| Fail::io("replace", path, &e))?;
        Ok(info)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drop(old);
    r
}

fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.lunsnap-format-{}", std::process::id()))
}

fn write_array(file: File, path: &Path, size: u64, opts: &FormatOptions) -> Result<Va> {
    // A sparse file: blocks are allocated only when written.
    file.set_len(size).map_err(|e| Fail::io("size", path, &e))?;
    let dev = FileDevice::from_file(file, IMAGE_BLOCK as u32, size / IMAGE_BLOCK)
        .map_err(|e| Fail::io("use", path, &e))?;
    Array::format(dev, opts)
        .map_err(|e| Fail::new(format!("cannot format {}: {}", path.display(), explain(&e))))
}

/// Closes a freshly formatted array (format committed and flushed it) and returns its figures.
fn finish(va: Va, path: &Path) -> Result<PoolInfo> {
    let info = va.pool_info();
    va.close().map_err(|e| {
        Fail::new(format!(
            "cannot format {}: {}",
            path.display(),
            explain(&e.error)
        ))
    })?;
    Ok(info)
}

/// Bytes of disk the file at `path` occupies (its allocated blocks), where known: for
/// a regular file (a block device has no such figure).
pub fn disk_usage(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.blocks() * 512)
}
