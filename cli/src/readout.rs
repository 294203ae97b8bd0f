//! `read`: a LUN into a file (or stdout for `-`), skipping holes; with
//! `--changed-since BASE`, only the ranges where it differs from BASE (an incremental
//! backup), listed in FILE.ranges.
//!
//! The LUN is walked a window at a time with `map` (and `diff` for an incremental
//! read), so holes and unchanged ranges cost no device reads: they are left as holes
//! in a file (a never-written LUN of any size reads in milliseconds) and written as
//! zeros to a stream. Data is read in 1 MiB chunks, each one array operation (one lock
//! of a served array). A range lost to metadata damage (`repair` lists them) is
//! never read as a hole: the read fails with the array's error, naming it.

use std::io::BufWriter;
use std::path::Path;

use lunsnap::{DiffRange, Error, MapRange};

use crate::args::ReadArgs;
use crate::fail::{Fail, Result};
use crate::image::{Access, Va};
use crate::progress::{self, Show, Text};
use crate::ranges;
use crate::sink::{Encoder, Local, Out, Sink};
use crate::size::human;
use crate::target::{Place, Streams, Target};
use crate::transfer::{
    check_range, chunk_at, is_std, probe_at, read_at, same_file, same_file_refusal, CHUNK,
};

/// The span of one `map` or `diff` call: one array operation (one lock of a served
/// array) costs O(mapped extents in it), whatever its size.
pub const WINDOW: u64 = 1 << 30;

/// `map` through the array's own access, or on behalf of `host`.
pub fn map_at(
    va: &mut Va,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    len: u64,
) -> Result<Vec<MapRange>> {
    Ok(match host {
        Some(h) => va.as_host(h).map(lun, offset, len)?,
        None => va.map(lun, offset, len)?,
    })
}

/// `diff` through the array's own access, or on behalf of `host`.
pub fn diff_at(
    va: &mut Va,
    host: Option<u64>,
    (a, b): (u32, u32),
    offset: u64,
    len: u64,
) -> Result<Vec<DiffRange>> {
    Ok(match host {
        Some(h) => va.as_host(h).diff(a, b, offset, len)?,
        None => va.diff(a, b, offset, len)?,
    })
}

/// Refuses a read of `len` bytes at `offset` of LUN `lun` that touches a range lost
/// to metadata damage (`repair` could not read its mapping back), with the array's
/// own error. The array refuses such a read itself, but `read` skips holes, and a
/// lost range maps nothing: it would be read as zeros.
pub fn not_lost(va: &Va, lun: u32, offset: u64, len: u64) -> Result<()> {
    let end = offset.saturating_add(len);
    let touched = va
        .lost_ranges(lun)?
        .into_iter()
        .find(|&(s, l)| s < end && offset < s.saturating_add(l));
    match touched {
        Some((s, l)) => {
            let from = s.max(offset);
            Err(Error::LostData {
                lun,
                offset: from,
                len: s.saturating_add(l).min(end) - from,
            }
            .into())
        }
        None => Ok(()),
    }
}

/// The size of LUN `lun` as `host` sees it.
pub fn lun_size(va: &mut Va, host: Option<u64>, lun: u32) -> Result<u64> {
    Ok(match host {
        Some(h) => va.as_host(h).lun_status(lun)?,
        None => va.lun_status(lun)?,
    }
    .size)
}

/// `read IMAGE LUN FILE [--offset BYTES] [--length BYTES] [--as HOST]
/// [--changed-since BASE]`
pub fn read(place: &Place, io: &mut dyn Streams, spec: &ReadArgs, out: &mut String) -> Result<u8> {
    let (path, file) = (spec.image.as_path(), spec.file.as_path());
    // Before anything else, so that a served image is never asked (its server's
    // stdout is a socket: the client checks its own here).
    if is_std(file) && !spec.records && !spec.force && io.output_is_terminal() {
        return Err(Fail::new(
            "refusing to write binary data to a terminal; redirect it or use --force",
        ));
    }
    let mut t = place.open(path, Access::Read)?;
    let len = t.with(|va| checked_length(va, spec))?;
    if let Some(e) = &spec.file_error {
        return Err(Fail::new(e.clone()));
    }
    let show = io.progress();
    if spec.records {
        let mut sink = Encoder(Box::new(BufWriter::with_capacity(CHUNK + 64, io.output())));
        return produce(&mut t, spec, len, &mut sink, show).map(|()| 0);
    }
    if is_std(file) {
        let mut sink = Local::new(Out::Stream(io.output()), Path::new("stdout"), None);
        return produce(&mut t, spec, len, &mut sink, show).map(|()| 0);
    }
    let sidecar = spec.changed_since.map(|_| ranges::sidecar(file));
    for f in std::iter::once(file).chain(sidecar.as_deref()) {
        if same_file(path, f) {
            return Err(Fail::new(same_file_refusal(f)));
        }
    }
    let (mut sink, existed) = create(file, sidecar)?;
    let r = produce(&mut t, spec, len, &mut sink, show);
    if r.is_err() && !existed {
        let _ = std::fs::remove_file(file);
    }
    r?;
    out.push_str(&read_done(spec, len, file, sink.listed()));
    Ok(0)
}

/// Creates (or truncates) `file` for a read; an incremental read's FILE.ranges
/// (`sidecar`) left by an earlier run is removed, so that it never goes with another
/// FILE. Returns the output and whether FILE existed.
pub fn create(file: &Path, sidecar: Option<std::path::PathBuf>) -> Result<(Local<'static>, bool)> {
    if let Some(s) = &sidecar {
        match std::fs::remove_file(s) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Fail::io("remove", s, &e))
            }
            _ => {}
        }
    }
    let (out, existed) = Out::create(file)?;
    Ok((Local::new(out, file, sidecar), existed))
}

/// Checks the read `spec` asks for; returns its length.
fn checked_length(va: &mut Va, spec: &ReadArgs) -> Result<u64> {
    let (lun, offset, host) = (spec.lun, spec.offset, spec.as_host);
    probe_at(va, host, lun, offset, &mut [])?;
    let len = match spec.length {
        Some(l) => l,
        // Whole LUN from the offset (checked above to be within it).
        None => lun_size(va, host, lun)?.saturating_sub(offset),
    };
    check_range(va, host, lun, offset, len)?;
    not_lost(va, lun, offset, len)?;
    if let Some(base) = spec.changed_since {
        let size = lun_size(va, host, base)?;
        // Attached, and the offset within it.
        diff_at(va, host, (base, lun), offset.min(size), 0)?;
        if offset.saturating_add(len) > size {
            return Err(Fail::new(format!(
                "LUN {base} is {} ({size} bytes): it does not hold the {len} bytes at offset \
                 {offset} read of LUN {lun}; an incremental backup compares copies of one LUN",
                human(size)
            )));
        }
    }
    Ok(len)
}

/// Reads what `spec` asks for (`len` bytes) into `sink`: the data of each window (of
/// its changed ranges, for an incremental read), holes skipped.
fn produce(
    t: &mut Target,
    spec: &ReadArgs,
    len: u64,
    sink: &mut dyn Sink,
    (show, text): (Show, Text),
) -> Result<()> {
    let (lun, offset, host) = (spec.lun, spec.offset, spec.as_host);
    let mut bar = progress::meter(Some(len), "read", show, text);
    sink.begin(len)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < len {
        let n = WINDOW.min(len - pos);
        let at = offset + pos;
        let (listed, data) = t.with(|va| {
            let mapped = map_at(va, host, lun, at, n)?;
            not_lost(va, lun, at, n)?;
            let data = mapped
                .iter()
                .filter(|r| r.data)
                .map(|r| (r.offset, r.length));
            Ok(match spec.changed_since {
                None => (Vec::new(), data.collect()),
                Some(base) => {
                    let changed = diff_at(va, host, (base, lun), at, n)?;
                    let changed: Vec<(u64, u64)> =
                        changed.iter().map(|r| (r.offset, r.length)).collect();
                    let data = intersect(&data.collect::<Vec<_>>(), &changed);
                    (changed, data)
                }
            })
        })?;
        for (s, l) in listed {
            sink.range(s - offset, l)?;
        }
        for (s, l) in data {
            let mut done = 0;
            while done < l {
                let k = chunk_at(s + done, l - done);
                t.with(|va| read_at(va, host, lun, s + done, &mut buf[..k]))?;
                sink.data(s + done - offset, &buf[..k])?;
                done += k as u64;
                bar.set_position(s + done - offset);
            }
        }
        pos += n;
        bar.set_position(pos);
    }
    sink.end()?;
    bar.finish();
    Ok(())
}

/// The parts of the ranges `a` that lie in the ranges `b` (both in order, apart).
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (a0, a1) = (a[i].0, a[i].0 + a[i].1);
        let (b0, b1) = (b[j].0, b[j].0 + b[j].1);
        let (lo, hi) = (a0.max(b0), a1.min(b1));
        if lo < hi {
            out.push((lo, hi - lo));
        }
        if a1 <= b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The line `read` prints when it has read `len` bytes into `file`; `listed` is the
/// count and bytes of an incremental read's ranges.
pub fn read_done(spec: &ReadArgs, len: u64, file: &Path, listed: Option<(usize, u64)>) -> String {
    match (spec.changed_since, listed) {
        (Some(base), Some((count, bytes))) => format!(
            "read {} ({bytes} bytes) of LUN {} changed since LUN {base}, in {count} range{}, \
             into {} ({} long, sparse elsewhere); the ranges are in {}\n",
            human(bytes),
            spec.lun,
            if count == 1 { "" } else { "s" },
            file.display(),
            human(len),
            ranges::sidecar(file).display()
        ),
        _ => format!(
            "read {} ({len} bytes) of LUN {} at offset {} into {}\n",
            human(len),
            spec.lun,
            spec.offset,
            file.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::intersect;

    #[test]
    fn intersections() {
        assert_eq!(
            intersect(&[(0, 100)], &[(10, 5), (50, 100)]),
            [(10, 5), (50, 50)]
        );
        assert_eq!(
            intersect(&[(0, 10), (20, 10)], &[(5, 20)]),
            [(5, 5), (20, 5)]
        );
        assert_eq!(intersect(&[(0, 10)], &[(10, 10)]), []);
        assert_eq!(intersect(&[], &[(0, 10)]), []);
    }
}
