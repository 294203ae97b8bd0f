//! `write`: data from a file (or stdin for `-`) into a LUN, whole or only the ranges
//! an incremental backup lists (`--ranges`); and what `read` shares with it.
//!
//! Both validate everything they can before they touch anything: the LUN exists and
//! is attached and online, the offset and length are whole sectors inside it, and,
//! with `--as HOST`, the host may reach the LUN (with security enabled, a LUN it has
//! no grant on is "no such LUN" to it, and writing needs a read-write grant). `write` then
//! moves the data in 1 MiB chunks (aligned in the LUN, so that zero detection sees
//! whole extents) and commits (flushes) once at the end; if it fails part way, it
//! exits without committing, so the image keeps its last committed state.
//!
//! On a served image each chunk is one operation, the array locked for it alone, so
//! NBD clients are served throughout. The served array has one open transaction for
//! everyone, though: the chunks a failing `write` already wrote stay in it (as an NBD
//! client's unflushed writes do), and are committed with the next flush.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use lunsnap::{Error, SECTOR};

use crate::args::WriteArgs;
use crate::fail::{Fail, Result};
use crate::image::{Access, Va};
use crate::json::Span;
use crate::progress::{self, Show, Text};
use crate::ranges::{self, Source};
use crate::size::human;
use crate::target::{Place, Streams, Target};

/// The unit of transfer: one array operation (one lock of a served array) each.
pub const CHUNK: usize = 1 << 20;

/// True for `-` (stdin or stdout).
pub fn is_std(file: &Path) -> bool {
    file.as_os_str() == "-"
}

/// Reads through the array's own access, or on behalf of `host`.
pub fn read_at(
    va: &mut Va,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    match host {
        Some(h) => va.as_host(h).read(lun, offset, buf)?,
        None => va.read(lun, offset, buf)?,
    }
    Ok(())
}

/// How `write` writes: as whom, and whether zeros are stored as data.
#[derive(Clone, Copy)]
struct How {
    host: Option<u64>,
    lun: u32,
    /// `--allocate`: zero detection off for this write's chunks.
    allocate: bool,
}

/// Writes through the array's own access, or on behalf of `how.host`; with
/// `how.allocate`, zero detection is off for this one operation (a served array's
/// other users keep theirs: the array is locked for the operation).
fn write_at(va: &mut Va, how: How, offset: u64, buf: &[u8]) -> Result<()> {
    let detect = va.detect_zeros();
    if how.allocate {
        va.set_detect_zeros(false);
    }
    let r = match how.host {
        Some(h) => va.as_host(h).write(how.lun, offset, buf),
        None => va.write(how.lun, offset, buf),
    };
    va.set_detect_zeros(detect);
    Ok(r?)
}

/// The length of the chunk at LUN offset `pos` with `left` bytes to go: up to the
/// next CHUNK boundary of the LUN, so that every extent lies inside one chunk.
pub fn chunk_at(pos: u64, left: u64) -> usize {
    let to_boundary = CHUNK as u64 - pos % CHUNK as u64;
    to_boundary.min(left) as usize
}

/// A read of `buf.len()` bytes at `offset` of LUN `lun` (through `host`'s access) as a
/// probe of the LUN, the access and the range: one that touches a range lost to
/// metadata damage (`repair`) passes, for the array refuses it only once everything
/// else is checked (a write clears such a range; `read` refuses it with its own
/// check, which names all of the lost range it touches).
pub fn probe_at(
    va: &mut Va,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    buf: &mut [u8],
) -> lunsnap::Result<()> {
    let r = match host {
        Some(h) => va.as_host(h).read(lun, offset, buf),
        None => va.read(lun, offset, buf),
    };
    match r {
        Err(Error::LostData { .. }) => Ok(()),
        r => r,
    }
}

/// Checks that `len` bytes at `offset` are whole sectors inside attached LUN `lun`,
/// cheaply (a read of one sector, whatever the LUN's size).
pub fn check_range(va: &mut Va, host: Option<u64>, lun: u32, offset: u64, len: u64) -> Result<()> {
    probe_at(va, host, lun, offset, &mut [])?;
    if !len.is_multiple_of(SECTOR) {
        return Err(Error::Misaligned { offset, len }.into());
    }
    if len == 0 {
        return Ok(());
    }
    let beyond = |size| Error::OutOfRange { offset, len, size };
    let last = offset.checked_add(len - SECTOR).ok_or(beyond(u64::MAX))?;
    let mut probe = [0u8; SECTOR as usize];
    probe_at(va, host, lun, last, &mut probe).map_err(|e| match e {
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
    Fail::new(format!(
        "the input is {total} bytes long, not a multiple of 512: LUNs are written in whole \
         512-byte sectors (pad it, e.g. with truncate -s %512); the image is unchanged"
    ))
}

/// `write IMAGE LUN FILE [--offset BYTES] [--as HOST] [--allocate] [--ranges RANGES]`
pub fn write(
    place: &Place,
    io: &mut dyn Streams,
    spec: &WriteArgs,
    out: &mut String,
) -> Result<u8> {
    let how = How {
        host: spec.as_host,
        lun: spec.lun,
        allocate: spec.allocate,
    };
    let (lun, offset) = (spec.lun, spec.offset);
    let mut t = place.open(&spec.image, Access::Write)?;
    t.with(|va| {
        match how.host {
            // An empty write: may the host write the LUN at all?
            Some(h) => va.as_host(h).write(lun, offset, &[])?,
            None => probe_at(va, None, lun, offset, &mut [])?,
        }
        Ok(())
    })?;
    if let Some(e) = &spec.file_error {
        return Err(Fail::new(e.clone()));
    }
    let show = io.progress();
    let (input, known) = open_input(io, spec)?;
    if !spec.records && spec.ranges.is_none() {
        let input: Box<dyn Read + '_> = match input {
            Source::File(f) => Box::new(f),
            Source::Stream(s, _) | Source::Packed(s) => s,
        };
        return write_whole(t, spec, (input, known, show), out);
    }
    let (spans, source) = match (input, &spec.ranges) {
        (Source::Stream(mut s, _), _) if spec.records => {
            (ranges::decode_head(&mut s)?, Source::Packed(s))
        }
        (source, Some(r)) => (ranges::load(r)?, source),
        (source, None) => (Vec::new(), source),
    };
    let r = Ranged {
        how,
        spans,
        known,
        show,
    };
    write_ranges(t, spec, r, source, out)
}

/// The input of `write`: FILE (and its length, if it is a regular file), or stdin
/// (the length a forwarded `write` was given, if any).
fn open_input<'a>(io: &'a mut dyn Streams, spec: &WriteArgs) -> Result<(Source<'a>, Option<u64>)> {
    let file = spec.file.as_path();
    if is_std(file) {
        return Ok((Source::Stream(io.input(), 0), spec.input_length));
    }
    let f = File::open(file).map_err(|e| Fail::io("open", file, &e))?;
    let m = f.metadata().map_err(|e| Fail::io("inspect", file, &e))?;
    let len = m.is_file().then_some(m.len());
    Ok((Source::File(f), len))
}

/// Writes all of the input at the offset.
fn write_whole(
    mut t: Target,
    spec: &WriteArgs,
    (mut input, known, show): (Box<dyn Read + '_>, Option<u64>, (Show, Text)),
    out: &mut String,
) -> Result<u8> {
    let (file, lun, offset) = (spec.file.as_path(), spec.lun, spec.offset);
    let how = How {
        host: spec.as_host,
        lun,
        allocate: spec.allocate,
    };
    if let Some(len) = known {
        if !len.is_multiple_of(SECTOR) {
            return Err(unaligned_input(len));
        }
        t.with(|va| check_range(va, how.host, lun, offset, len))?;
    }
    let mut bar = progress::meter(known, "write", show.0, show.1);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let want = chunk_at(offset + done, CHUNK as u64);
        let n = fill(&mut input, &mut buf[..want]).map_err(|e| Fail::io("read", file, &e))?;
        if n == 0 {
            break;
        }
        if !(n as u64).is_multiple_of(SECTOR) {
            // Only an input of unknown length gets here; dropping a cold image's array
            // commits nothing.
            return Err(unaligned_input(done + n as u64));
        }
        t.with(|va| write_at(va, how, offset + done, &buf[..n]))?;
        done += n as u64;
        bar.inc(n as u64);
    }
    // Commits: close() a cold image, flush() a served one.
    t.commit()?;
    bar.finish();
    wrote(spec, done, None, out);
    Ok(0)
}

/// A `write --ranges`: the ranges, and what is known of FILE.
struct Ranged {
    how: How,
    spans: Vec<Span>,
    /// FILE's length, when known.
    known: Option<u64>,
    show: (Show, Text),
}

/// Writes the bytes of `r.spans` from `source` into the LUN, each range at the
/// write's offset plus its start in FILE; checks them all first.
fn write_ranges(
    mut t: Target,
    spec: &WriteArgs,
    r: Ranged,
    mut source: Source<'_>,
    out: &mut String,
) -> Result<u8> {
    let (file, offset, how) = (spec.file.as_path(), spec.offset, r.how);
    let reach = r.spans.last().map_or(0, Span::end);
    if let Some(len) = r.known.filter(|&len| len < reach) {
        return Err(Fail::new(format!(
            "{} is {len} bytes long, but its ranges reach byte {reach}: it is not the \
             file they were read with",
            file.display()
        )));
    }
    t.with(|va| check_range(va, how.host, how.lun, offset, reach))?;
    let total: u64 = r.spans.iter().map(|s| s.length).sum();
    let mut bar = progress::meter(Some(total), "write", r.show.0, r.show.1);
    let mut buf = vec![0u8; CHUNK];
    for s in &r.spans {
        let mut done = 0;
        while done < s.length {
            let n = chunk_at(offset + s.start + done, s.length - done);
            let at = s.start + done;
            source
                .fetch(at, &mut buf[..n])
                .map_err(|e| ranges::fetch_error(file, at, &e))?;
            t.with(|va| write_at(va, how, offset + at, &buf[..n]))?;
            done += n as u64;
            bar.inc(n as u64);
        }
    }
    t.commit()?;
    bar.finish();
    wrote(spec, total, Some(r.spans.len()), out);
    Ok(0)
}

/// What `write` says once it has written `bytes` (in `ranges` ranges, for `--ranges`).
fn wrote(spec: &WriteArgs, bytes: u64, ranges: Option<usize>, out: &mut String) {
    let (lun, offset) = (spec.lun, spec.offset);
    if spec.json {
        let v = serde_json::json!({"wrote": {
            "lun": lun, "offset": offset, "bytes": bytes, "ranges": ranges,
        }});
        out.push_str(&crate::json::render(&v));
        return;
    }
    let listed = match ranges {
        Some(n) => format!(", in the {n} range{} listed", if n == 1 { "" } else { "s" }),
        None => String::new(),
    };
    out.push_str(&format!(
        "wrote {} ({bytes} bytes) to LUN {lun} at offset {offset}{listed}\n",
        human(bytes)
    ));
}

/// True if `file` names the same file as the image at `image`.
pub fn same_file(image: &Path, file: &Path) -> bool {
    match (std::fs::canonicalize(image), std::fs::canonicalize(file)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The refusal of a `read` into the image itself.
pub fn same_file_refusal(file: &Path) -> String {
    format!(
        "{} is the image itself: refusing to overwrite it",
        file.display()
    )
}
