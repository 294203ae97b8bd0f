//! `write` and `read`: data between a LUN and a file (or stdin / stdout for `-`).
//!
//! Both validate everything they can before they touch anything: the LUN exists and
//! is attached and online, the offset and length are whole sectors inside it, and,
//! with `--as HOST`, the host may reach the LUN (with security enabled, a LUN it has
//! no grant on is "no such LUN" to it, and writing needs a read-write grant). `write` then
//! moves the data in 1 MiB chunks and commits (flushes) once at the end; if it fails
//! part way, it exits without committing, so the image keeps its last committed state.
//!
//! On a served image each chunk is one operation, the array locked for it alone, so
//! NBD clients are served throughout. The served array has one open transaction for
//! everyone, though: the chunks a failing `write` already wrote stay in it (as an NBD
//! client's unflushed writes do), and are committed with the next flush.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use lunsnap::{Error, SECTOR};

use crate::args::{ReadArgs, WriteArgs};
use crate::fail::{Fail, Result};
use crate::image::{Access, Va};
use crate::progress;
use crate::size::human;
use crate::target::{Place, Streams, Target};

/// The unit of transfer: one array operation (one lock of a served array) each.
pub const CHUNK: usize = 1 << 20;

/// True for `-` (stdin or stdout).
pub fn is_std(file: &Path) -> bool {
    file.as_os_str() == "-"
}

/// Reads through the array's own access, or on behalf of `host`.
fn read_at(va: &mut Va, host: Option<u64>, lun: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
    match host {
        Some(h) => va.as_host(h).read(lun, offset, buf)?,
        None => va.read(lun, offset, buf)?,
    }
    Ok(())
}

/// Writes through the array's own access, or on behalf of `host`.
fn write_at(va: &mut Va, host: Option<u64>, lun: u32, offset: u64, buf: &[u8]) -> Result<()> {
    match host {
        Some(h) => va.as_host(h).write(lun, offset, buf)?,
        None => va.write(lun, offset, buf)?,
    }
    Ok(())
}

/// Checks that `len` bytes at `offset` are whole sectors inside attached LUN `lun`,
/// cheaply (a read of one sector, whatever the LUN's size).
fn check_range(va: &mut Va, host: Option<u64>, lun: u32, offset: u64, len: u64) -> Result<()> {
    read_at(va, host, lun, offset, &mut [])?;
    if !len.is_multiple_of(SECTOR) {
        return Err(Error::Misaligned { offset, len }.into());
    }
    if len == 0 {
        return Ok(());
    }
    let beyond = |size| Error::OutOfRange { offset, len, size };
    let last = offset.checked_add(len - SECTOR).ok_or(beyond(u64::MAX))?;
    let mut probe = [0u8; SECTOR as usize];
    let r = match host {
        Some(h) => va.as_host(h).read(lun, last, &mut probe),
        None => va.read(lun, last, &mut probe),
    };
    r.map_err(|e| match e {
        Error::OutOfRange { size, .. } => beyond(size),
        e => e,
    })?;
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The refusal of an input that is not whole sectors.
pub fn unaligned_input(total: u64) -> Fail {
    Fail(format!(
        "the input is {total} bytes long, not a multiple of 512: LUNs are written in whole \
         512-byte sectors (pad it, e.g. with truncate -s %512); the image is unchanged"
    ))
}

/// `write IMAGE LUN FILE [--offset BYTES] [--as HOST]`
pub fn write(
    place: &Place,
    io: &mut dyn Streams,
    spec: &WriteArgs,
    out: &mut String,
) -> Result<u8> {
    let (path, file) = (spec.image.as_path(), spec.file.as_path());
    let (lun, offset, host) = (spec.lun, spec.offset, spec.as_host);
    let mut t = place.open(path, Access::Write)?;
    t.with(|va| {
        match host {
            // An empty write: may the host write the LUN at all?
            Some(h) => va.as_host(h).write(lun, offset, &[])?,
            None => va.read(lun, offset, &mut [])?,
        }
        Ok(())
    })?;
    if let Some(e) = &spec.file_error {
        return Err(Fail(e.clone()));
    }
    let show = io.progress();
    let (mut input, known): (Box<dyn Read + '_>, Option<u64>) = if is_std(file) {
        (io.input(), spec.input_length)
    } else {
        let f = File::open(file).map_err(|e| Fail::io("open", file, &e))?;
        let m = f.metadata().map_err(|e| Fail::io("inspect", file, &e))?;
        let len = m.is_file().then_some(m.len());
        (Box::new(f), len)
    };
    if let Some(len) = known {
        if !len.is_multiple_of(SECTOR) {
            return Err(unaligned_input(len));
        }
        t.with(|va| check_range(va, host, lun, offset, len))?;
    }
    let bar = progress::bar(known, "write", show);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = fill(&mut input, &mut buf).map_err(|e| Fail::io("read", file, &e))?;
        if n == 0 {
            break;
        }
        if !(n as u64).is_multiple_of(SECTOR) {
            // Only an input of unknown length gets here; dropping a cold image's array
            // commits nothing.
            return Err(unaligned_input(done + n as u64));
        }
        t.with(|va| write_at(va, host, lun, offset + done, &buf[..n]))?;
        done += n as u64;
        bar.inc(n as u64);
    }
    // Commits: close() a cold image, flush() a served one.
    t.commit()?;
    bar.finish_and_clear();
    out.push_str(&format!(
        "wrote {} ({done} bytes) to LUN {lun} at offset {offset}\n",
        human(done)
    ));
    Ok(0)
}

/// Where `read` puts the data: stdout, or a file kept sparse where the LUN reads zeros.
pub enum Output<'a> {
    /// Standard output.
    Stream(Box<dyn Write + 'a>),
    /// A file; `sparse` for a regular file (zeros are skipped, not written).
    File {
        /// The file.
        f: File,
        /// Skip zeros.
        sparse: bool,
    },
}

impl Output<'_> {
    /// Creates (or truncates) `file` (the caller made sure it is not the image).
    /// Returns it and whether it existed before.
    pub fn create(file: &Path) -> Result<(Output<'static>, bool)> {
        let existed = file.exists();
        let f = File::create(file).map_err(|e| Fail::io("create", file, &e))?;
        let sparse = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        Ok((Output::File { f, sparse }, existed))
    }

    /// Appends `data`.
    pub fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stream(s) => s.write_all(data),
            Output::File { f, sparse: false } => f.write_all(data),
            Output::File { f, sparse: true } => {
                for piece in data.chunks(64 << 10) {
                    if piece.iter().all(|&b| b == 0) {
                        f.seek(SeekFrom::Current(piece.len() as i64))?;
                    } else {
                        f.write_all(piece)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the output, `len` bytes long.
    pub fn finish(&mut self, len: u64) -> std::io::Result<()> {
        match self {
            Output::Stream(s) => s.flush(),
            // Skipped zeros at the end still count: give the file its full length.
            Output::File { f, sparse } => {
                if *sparse {
                    f.set_len(len)?;
                }
                f.flush()
            }
        }
    }
}

/// `read IMAGE LUN FILE [--offset BYTES] [--length BYTES] [--as HOST]`
pub fn read(place: &Place, io: &mut dyn Streams, spec: &ReadArgs, out: &mut String) -> Result<u8> {
    let (path, file) = (spec.image.as_path(), spec.file.as_path());
    let (lun, offset, host) = (spec.lun, spec.offset, spec.as_host);
    let mut t = place.open(path, Access::Read)?;
    let len = t.with(|va| {
        read_at(va, host, lun, offset, &mut [])?;
        let len = match spec.length {
            Some(l) => l,
            // Whole LUN from the offset (checked above to be within it).
            None => match host {
                Some(h) => va.as_host(h).lun_status(lun)?,
                None => va.lun_status(lun)?,
            }
            .size
            .saturating_sub(offset),
        };
        check_range(va, host, lun, offset, len)?;
        Ok(len)
    })?;
    if let Some(e) = &spec.file_error {
        return Err(Fail(e.clone()));
    }
    let show = io.progress();
    if is_std(file) {
        let stdout = Output::Stream(io.output());
        copy_out(&mut t, spec, len, stdout, Path::new("stdout"), show)?;
        return Ok(0);
    }
    if same_file(path, file) {
        return Err(Fail(same_file_refusal(file)));
    }
    let (output, existed) = Output::create(file)?;
    let r = copy_out(&mut t, spec, len, output, file, show);
    if r.is_err() && !existed {
        let _ = std::fs::remove_file(file);
    }
    r?;
    out.push_str(&read_done(spec, len, file));
    Ok(0)
}

/// The line `read` prints when it has read `len` bytes into `file`.
pub fn read_done(spec: &ReadArgs, len: u64, file: &Path) -> String {
    format!(
        "read {} ({len} bytes) of LUN {} at offset {} into {}\n",
        human(len),
        spec.lun,
        spec.offset,
        file.display()
    )
}

/// The refusal of a `read` into the image itself.
pub fn same_file_refusal(file: &Path) -> String {
    format!(
        "{} is the image itself: refusing to overwrite it",
        file.display()
    )
}

fn copy_out(
    t: &mut Target,
    spec: &ReadArgs,
    len: u64,
    mut output: Output<'_>,
    name: &Path,
    show: bool,
) -> Result<()> {
    let (lun, offset, host) = (spec.lun, spec.offset, spec.as_host);
    let bar = progress::bar(Some(len), "read", show);
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min(usize::try_from(len - done).unwrap_or(CHUNK));
        t.with(|va| read_at(va, host, lun, offset + done, &mut buf[..n]))?;
        output
            .put(&buf[..n])
            .map_err(|e| Fail::io("write", name, &e))?;
        done += n as u64;
        bar.inc(n as u64);
    }
    output
        .finish(len)
        .map_err(|e| Fail::io("write", name, &e))?;
    bar.finish_and_clear();
    Ok(())
}

/// True if `file` names the same file as the image at `image`.
pub fn same_file(image: &Path, file: &Path) -> bool {
    match (std::fs::canonicalize(image), std::fs::canonicalize(file)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
