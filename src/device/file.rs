//! A block device over a file (feature `std`).

use core::fmt;

use super::mem::check_geometry;
use super::{check_request, BlockDevice, DeviceError, DeviceErrorKind};

/// A block device stored in a file (or a host block device opened as a file).
///
/// [`create`](Self::create) makes a sparse file, so a large device costs disk space only
/// for the blocks written. Reads and writes are positioned I/O (`pread` / `pwrite` on
/// Unix); [`flush`](BlockDevice::flush) is `fdatasync` ([`std::fs::File::sync_data`]).
/// [`discard`](BlockDevice::discard) checks its range and otherwise does nothing.
#[derive(Debug)]
pub struct FileDevice {
    file: std::fs::File,
    block_size: u32,
    block_count: u64,
}

/// The error of a [`FileDevice`]: its [`DeviceErrorKind`] and, for I/O failures, the
/// underlying [`std::io::Error`].
#[derive(Debug)]
pub struct FileDeviceError {
    kind: DeviceErrorKind,
    io: Option<std::io::Error>,
}

impl FileDeviceError {
    fn out_of_range() -> Self {
        FileDeviceError {
            kind: DeviceErrorKind::OutOfRange,
            io: None,
        }
    }

    fn io(err: std::io::Error) -> Self {
        FileDeviceError {
            kind: DeviceErrorKind::Io,
            io: Some(err),
        }
    }

    /// The underlying I/O error, if the failure came from the operating system.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.io.as_ref()
    }

    /// Consumes the error, returning the underlying I/O error if there is one.
    pub fn into_io_error(self) -> Option<std::io::Error> {
        self.io
    }
}

impl DeviceError for FileDeviceError {
    fn kind(&self) -> DeviceErrorKind {
        self.kind
    }
}

impl fmt::Display for FileDeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.io {
            Some(io) => write!(f, "{}: {}", self.kind, io),
            None => fmt::Display::fmt(&self.kind, f),
        }
    }
}

impl std::error::Error for FileDeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<FileDeviceError> for std::io::Error {
    fn from(err: FileDeviceError) -> Self {
        match err.io {
            Some(io) => io,
            None => std::io::Error::new(std::io::ErrorKind::InvalidInput, err),
        }
    }
}

fn invalid_input(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

const BAD_GEOMETRY: &str =
    "invalid device geometry: block size must be a power of two >= 512, block count > 0, \
     total size < 2^64 bytes";

impl FileDevice {
    /// Creates (or truncates) the file at `path` and sizes it to exactly
    /// `block_size * block_count` bytes. On file systems that support it the file is
    /// sparse: it occupies no disk space until written, and reads as zeros.
    ///
    /// # Errors
    /// [`std::io::ErrorKind::InvalidInput`] for an invalid geometry (`block_size` not a
    /// power of two of at least 512, `block_count` zero, or a total size that does not fit
    /// in a `u64`), or any error from opening or sizing the file.
    pub fn create(
        path: impl AsRef<std::path::Path>,
        block_size: u32,
        block_count: u64,
    ) -> std::io::Result<Self> {
        check_geometry(block_size, block_count).ok_or_else(|| invalid_input(BAD_GEOMETRY))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        // check_geometry guarantees this does not overflow.
        file.set_len(u64::from(block_size) * block_count)?;
        Ok(FileDevice {
            file,
            block_size,
            block_count,
        })
    }

    /// Opens an existing file for reading and writing; the block count is the file's
    /// length divided by `block_size`.
    ///
    /// # Errors
    /// [`std::io::ErrorKind::InvalidInput`] if `block_size` is invalid or the file's
    /// length is zero or not a multiple of `block_size`, or any error from opening it.
    pub fn open(path: impl AsRef<std::path::Path>, block_size: u32) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if block_size == 0 || len % u64::from(block_size) != 0 {
            return Err(invalid_input("file length is not a whole number of blocks"));
        }
        let block_count = len / u64::from(block_size);
        Self::from_file(file, block_size, block_count)
    }

    /// Wraps an already open file (or host block device) with the given geometry.
    ///
    /// The file must be open for reading and writing. Its length is not checked: this
    /// allows host block devices, whose metadata length is often zero. Reads beyond the
    /// end of a shorter regular file fail with [`DeviceErrorKind::Io`].
    ///
    /// # Errors
    /// [`std::io::ErrorKind::InvalidInput`] for an invalid geometry (as for
    /// [`create`](Self::create)).
    pub fn from_file(
        file: std::fs::File,
        block_size: u32,
        block_count: u64,
    ) -> std::io::Result<Self> {
        check_geometry(block_size, block_count).ok_or_else(|| invalid_input(BAD_GEOMETRY))?;
        Ok(FileDevice {
            file,
            block_size,
            block_count,
        })
    }

    /// Returns the underlying file.
    pub fn into_file(self) -> std::fs::File {
        self.file
    }

    /// Byte offset of a validated request.
    fn offset(&self, lba: u64, len: usize) -> Result<u64, FileDeviceError> {
        if !check_request(self.block_size, self.block_count, lba, len) {
            return Err(FileDeviceError::out_of_range());
        }
        // lba < block_count (or len == 0 and lba <= block_count), and
        // block_count * block_size fits in u64 (checked at construction).
        Ok(lba * u64::from(self.block_size))
    }

    #[cfg(unix)]
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    #[cfg(unix)]
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
    }

    #[cfg(not(unix))]
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        use std::io::{Read, Seek};
        self.file.seek(std::io::SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }

    #[cfg(not(unix))]
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        self.file.seek(std::io::SeekFrom::Start(offset))?;
        self.file.write_all(buf)
    }
}

impl BlockDevice for FileDevice {
    type Error = FileDeviceError;

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let offset = self.offset(lba, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        self.read_at(buf, offset).map_err(FileDeviceError::io)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        let offset = self.offset(lba, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        self.write_at(buf, offset).map_err(FileDeviceError::io)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.file.sync_data().map_err(FileDeviceError::io)
    }

    /// Punches a hole in the file over the blocks (`fallocate` with `PUNCH_HOLE` and
    /// `KEEP_SIZE`, on Linux): they read as zeros and stop occupying disk space; the
    /// file keeps its length. Where the file system (or the system) cannot punch
    /// holes the blocks simply keep their content, as a hint allows.
    /// [`DeviceErrorKind::OutOfRange`] if the range runs past the end.
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        let bs = u64::from(self.block_size);
        match lba.checked_add(count) {
            Some(end) if end <= self.block_count => {
                if count > 0 {
                    punch_hole(&self.file, lba * bs, count * bs);
                }
                Ok(())
            }
            _ => Err(FileDeviceError::out_of_range()),
        }
    }
}

/// Deallocates `len` bytes at `offset` of `file`, keeping its size (best effort).
#[cfg(target_os = "linux")]
fn punch_hole(file: &std::fs::File, offset: u64, len: u64) {
    use rustix::fs::{fallocate, FallocateFlags};
    // Unsupported (EOPNOTSUPP) or failed: the content stays, which is allowed.
    let _ = fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    );
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &std::fs::File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::path::PathBuf;
    use std::vec;
    use std::vec::Vec;

    /// A unique temporary path, removed on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(tag: &str) -> Self {
            use core::sync::atomic::{AtomicU32, Ordering};
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = std::format!("lunsnap-filedev-{}-{}-{}", std::process::id(), tag, n);
            TempPath(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn create_write_flush_reopen() {
        let p = TempPath::new("reopen");
        let data = pattern(1, 4096 * 3);
        {
            let mut d = FileDevice::create(&p.0, 4096, 100).unwrap();
            assert_eq!((d.block_size(), d.block_count()), (4096, 100));
            d.write(97, &data).unwrap();
            d.write(0, &data[..4096]).unwrap();
            d.flush().unwrap();
            let mut buf = vec![0u8; 4096 * 3];
            d.read(97, &mut buf).unwrap();
            assert_eq!(buf, data);
        }
        assert_eq!(std::fs::metadata(&p.0).unwrap().len(), 4096 * 100);
        let mut d = FileDevice::open(&p.0, 4096).unwrap();
        assert_eq!(d.block_count(), 100);
        let mut buf = vec![0xEEu8; 4096 * 4];
        d.read(96, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert_eq!(&buf[4096..], &data[..]);
        d.read(0, &mut buf[..4096]).unwrap();
        assert_eq!(&buf[..4096], &data[..4096]);
        // Same file seen with a smaller block size.
        drop(d);
        let d = FileDevice::open(&p.0, 512).unwrap();
        assert_eq!(d.block_count(), 800);
        let f = d.into_file();
        assert_eq!(f.metadata().unwrap().len(), 409_600);
    }

    #[cfg(unix)]
    #[test]
    fn create_is_sparse() {
        use std::os::unix::fs::MetadataExt;
        let p = TempPath::new("sparse");
        let blocks = (1u64 << 30) / 4096; // 1 GiB
        let mut d = FileDevice::create(&p.0, 4096, blocks).unwrap();
        d.write(blocks / 2, &pattern(2, 4096)).unwrap();
        d.write(blocks - 1, &pattern(3, 4096)).unwrap();
        d.flush().unwrap();
        let md = std::fs::metadata(&p.0).unwrap();
        assert_eq!(md.len(), 1 << 30);
        // st_blocks is in 512-byte units; a few written blocks must not allocate the file.
        let allocated = md.blocks() * 512;
        assert!(allocated < 16 << 20, "allocated {allocated} bytes");
        let mut buf = vec![0xEEu8; 4096];
        d.read(12345, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_requests() {
        let p = TempPath::new("bad");
        let mut d = FileDevice::create(&p.0, 512, 16).unwrap();
        let data = pattern(4, 512);
        let mut buf = vec![0u8; 1024];
        let oor = DeviceErrorKind::OutOfRange;
        assert_eq!(d.write(16, &data).unwrap_err().kind(), oor);
        assert_eq!(d.write(15, &buf).unwrap_err().kind(), oor);
        assert_eq!(d.read(15, &mut buf).unwrap_err().kind(), oor);
        assert_eq!(d.write(0, &data[..100]).unwrap_err().kind(), oor);
        assert_eq!(d.read(0, &mut buf[..513]).unwrap_err().kind(), oor);
        assert_eq!(d.write(u64::MAX, &data).unwrap_err().kind(), oor);
        assert_eq!(d.read(u64::MAX - 1, &mut buf).unwrap_err().kind(), oor);
        assert_eq!(d.discard(u64::MAX, 2).unwrap_err().kind(), oor);
        assert_eq!(d.discard(8, 9).unwrap_err().kind(), oor);
        d.discard(8, 8).unwrap();
        d.write(16, &[]).unwrap();
        d.read(16, &mut []).unwrap();
        // The rejected writes changed nothing and did not grow the file.
        assert_eq!(std::fs::metadata(&p.0).unwrap().len(), 512 * 16);
        d.read(14, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let e = d.write(16, &data).unwrap_err();
        assert!(e.io_error().is_none());
        assert!(!std::format!("{e}").is_empty());
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bad_geometry_and_files() {
        let p = TempPath::new("geom");
        let inv = std::io::ErrorKind::InvalidInput;
        assert_eq!(FileDevice::create(&p.0, 1000, 4).unwrap_err().kind(), inv);
        assert_eq!(FileDevice::create(&p.0, 256, 4).unwrap_err().kind(), inv);
        assert_eq!(FileDevice::create(&p.0, 4096, 0).unwrap_err().kind(), inv);
        assert_eq!(
            FileDevice::create(&p.0, 4096, u64::MAX).unwrap_err().kind(),
            inv
        );
        // Empty file.
        std::fs::write(&p.0, b"").unwrap();
        assert_eq!(FileDevice::open(&p.0, 512).unwrap_err().kind(), inv);
        // Not a whole number of blocks.
        std::fs::write(&p.0, vec![0u8; 1000]).unwrap();
        assert_eq!(FileDevice::open(&p.0, 512).unwrap_err().kind(), inv);
        assert_eq!(FileDevice::open(&p.0, 0).unwrap_err().kind(), inv);
        // Missing file.
        let missing = TempPath::new("missing");
        assert_eq!(
            FileDevice::open(&missing.0, 512).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[test]
    fn io_errors_map_to_io() {
        // A file shorter than the declared geometry: reading past its end is an I/O error.
        let p = TempPath::new("short");
        std::fs::write(&p.0, vec![7u8; 512]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p.0)
            .unwrap();
        let mut d = FileDevice::from_file(f, 512, 4).unwrap();
        let mut buf = vec![0u8; 512];
        d.read(0, &mut buf).unwrap();
        assert_eq!(buf, vec![7u8; 512]);
        let e = d.read(2, &mut buf).unwrap_err();
        assert_eq!(e.kind(), DeviceErrorKind::Io);
        assert!(e.io_error().is_some());
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.into_io_error().is_some());

        // A read-only file: writes fail with Io.
        let f = std::fs::File::open(&p.0).unwrap();
        let mut d = FileDevice::from_file(f, 512, 1).unwrap();
        assert_eq!(
            d.write(0, &pattern(5, 512)).unwrap_err().kind(),
            DeviceErrorKind::Io
        );
    }
}
