//! Array images in files: opening with a lock, formatting without clobbering.
//!
//! Every image is a file of 4 KiB device blocks. A command that changes an image
//! holds an exclusive lock on it ([`std::fs::File::try_lock`]); one that only reads
//! holds a shared lock. A second process that cannot get its lock fails at once with
//! "image in use" rather than waiting or corrupting anything.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lunsnap::DEFAULT_EXTENT_SIZE;
use lunsnap::{Array, FileDevice, FormatOptions, PoolInfo};

use crate::fail::{Fail, Result, IN_USE};
use crate::size::IMAGE_BLOCK;

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

/// Opens the array in the image at `path`, locked for `access`.
pub fn open(path: &Path, access: Access) -> Result<Va> {
    let file = OpenOptions::new()
        .read(true)
        .write(access == Access::Write)
        .open(path)
        .map_err(|e| Fail::io("open", path, &e))?;
    let meta = file.metadata().map_err(|e| Fail::io("inspect", path, &e))?;
    if meta.is_dir() {
        return Err(Fail(format!(
            "{} is a directory, not a lunsnap image",
            path.display()
        )));
    }
    lock(&file, path, access)?;
    reopen(file, path)
}

/// Opens the array in an already open and locked image file.
pub fn reopen(file: File, path: &Path) -> Result<Va> {
    let dev = device(file, path)?;
    Array::open(dev, &lunsnap::OpenOptions::default())
        .map_err(|e| Fail(format!("cannot open {}: {e}", path.display())))
}

/// Takes the lock `access` needs on `file`, without waiting.
pub fn lock(file: &File, path: &Path, access: Access) -> Result<()> {
    let r = match access {
        Access::Write => file.try_lock(),
        Access::Read => file.try_lock_shared(),
    };
    match r {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(Fail(format!(
            "{IN_USE}: another process holds a lock on {}",
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(Fail::io("lock", path, &e)),
    }
}

/// A block device over the whole of `file` (a regular file or a host block device).
fn device(mut file: File, path: &Path) -> Result<FileDevice> {
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|e| Fail::io("measure", path, &e))?;
    if len == 0 || !len.is_multiple_of(IMAGE_BLOCK) {
        return Err(Fail(format!(
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
    /// Image size in bytes (a positive multiple of 4 KiB).
    pub size: u64,
    /// Data extent size (default: the library's).
    pub extent_size: Option<u32>,
    /// Maximum number of LUNs (default: the library's).
    pub max_luns: Option<u32>,
    /// Replace an existing file.
    pub force: bool,
}

/// Creates a sparse image of `spec.size` bytes at `path` and formats an empty array
/// in it. An existing file is refused unless `spec.force`; it is then replaced only
/// once the new image is complete (formatted beside it, then renamed over it), so a
/// failure leaves it as it was.
pub fn format(path: &Path, spec: &FormatSpec) -> Result<PoolInfo> {
    let defaults = FormatOptions::default();
    let opts = FormatOptions {
        extent_size: spec.extent_size.unwrap_or(DEFAULT_EXTENT_SIZE),
        max_luns: spec.max_luns.unwrap_or(defaults.max_luns),
        ..defaults
    };
    match std::fs::symlink_metadata(path) {
        Ok(_) if !spec.force => Err(exists(path)),
        Ok(_) => replace(path, spec.size, &opts),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, spec.size, &opts),
        Err(e) => Err(Fail::io("inspect", path, &e)),
    }
}

fn exists(path: &Path) -> Fail {
    Fail(format!(
        "{} already exists: use --force to replace it",
        path.display()
    ))
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
    let r = lock(&file, shown, Access::Write).and_then(|()| write_array(file, shown, size, opts));
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
fn replace(path: &Path, size: u64, opts: &FormatOptions) -> Result<PoolInfo> {
    let target = std::fs::canonicalize(path).map_err(|e| Fail::io("resolve", path, &e))?;
    let meta = std::fs::metadata(&target).map_err(|e| Fail::io("inspect", path, &e))?;
    if !meta.is_file() {
        return Err(Fail(format!(
            "{} is not a regular file: format writes image files only",
            path.display()
        )));
    }
    // Hold the old image's lock until it is replaced: nobody may be using it.
    let old = File::open(&target).map_err(|e| Fail::io("open", path, &e))?;
    lock(&old, path, Access::Write)?;
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
    Array::format(dev, opts).map_err(|e| Fail(format!("cannot format {}: {e}", path.display())))
}

/// Closes a freshly formatted array (format committed and flushed it) and returns its figures.
fn finish(va: Va, path: &Path) -> Result<PoolInfo> {
    let info = va.pool_info();
    va.close()
        .map_err(|e| Fail(format!("cannot format {}: {e}", path.display())))?;
    Ok(info)
}

/// Bytes of disk the file at `path` occupies (its allocated blocks), where known.
pub fn disk_usage(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
