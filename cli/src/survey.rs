//! `map`, `diff` and `discard`: where a LUN holds data, where two LUNs may differ,
//! and unmapping a range. `map` and `diff` walk the range a window at a time (one
//! array operation each), so their cost follows the mapped or changed extents, not
//! the LUN's size.

use std::fmt::Write as _;

use crate::args::{DiffArgs, DiscardArgs, MapArgs};
use crate::fail::{Fail, Result};
use crate::image::Access;
use crate::json::{self, Extent, Ranges, Span};
use crate::readout::{diff_at, lun_size, map_at, WINDOW};
use crate::size::human;
use crate::target::Place;

/// `map IMAGE LUN [--offset BYTES] [--length BYTES] [--json] [--as HOST]`
pub fn map(place: &Place, spec: &MapArgs, out: &mut String) -> Result<u8> {
    let (lun, offset, host) = (spec.lun, spec.offset, spec.as_host);
    let mut t = place.open(&spec.image, Access::Read)?;
    let len = t.with(|va| {
        map_at(va, host, lun, offset, 0)?;
        Ok(match spec.length {
            Some(l) => l,
            None => lun_size(va, host, lun)?.saturating_sub(offset),
        })
    })?;
    let mut all: Vec<Extent> = Vec::new();
    let mut pos = 0;
    while pos < len {
        let n = WINDOW.min(len - pos);
        let got = t.with(|va| map_at(va, host, lun, offset + pos, n))?;
        for r in got {
            let e = Extent {
                start: r.offset,
                length: r.length,
                data: r.data,
                zero: !r.data && !r.lost,
                shared: r.shared,
                lost: r.lost,
            };
            // Windows split ranges that one call would give whole: join them.
            match all.last_mut() {
                Some(l)
                    if l.start + l.length == e.start
                        && (l.data, l.shared, l.lost) == (e.data, e.shared, e.lost) =>
                {
                    l.length += e.length
                }
                _ => all.push(e),
            }
        }
        pos += n;
    }
    if spec.json {
        out.push_str(&json::render(&all));
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "{:>15}  {:>15}  {:<4}  SHARED",
        "START", "LENGTH", "KIND"
    );
    for e in &all {
        let (kind, shared) = match (e.lost, e.data, e.shared) {
            (true, false, _) => ("lost", "-"),
            (true, true, true) => ("lost", "yes"),
            (true, true, false) => ("lost", "no"),
            (false, false, _) => ("hole", "-"),
            (false, true, true) => ("data", "yes"),
            (false, true, false) => ("data", "no"),
        };
        let _ = writeln!(
            out,
            "{:>15}  {:>15}  {kind:<4}  {shared}",
            e.start, e.length
        );
    }
    let data: u64 = all.iter().filter(|e| e.data).map(|e| e.length).sum();
    let shared: u64 = all.iter().filter(|e| e.shared).map(|e| e.length).sum();
    let _ = writeln!(
        out,
        "LUN {lun}: {} ({data} bytes) of {} mapped, {} ({shared} bytes) of it shared with \
         other LUNs; the rest are holes",
        human(data),
        human(len),
        human(shared)
    );
    let lost: u64 = all.iter().filter(|e| e.lost).map(|e| e.length).sum();
    if lost > 0 {
        let _ = writeln!(
            out,
            "{} ({lost} bytes) lost to metadata damage (kind lost): reads of it fail until              it is written or discarded",
            human(lost)
        );
    }
    Ok(0)
}

/// `diff IMAGE A B [--offset BYTES] [--length BYTES] [--json] [--as HOST]`
pub fn diff(place: &Place, spec: &DiffArgs, out: &mut String) -> Result<u8> {
    let (a, b, offset, host) = (spec.a, spec.b, spec.offset, spec.as_host);
    let mut t = place.open(&spec.image, Access::Read)?;
    let len = t.with(|va| {
        let (sa, sb) = (lun_size(va, host, a)?, lun_size(va, host, b)?);
        diff_at(va, host, (a, b), offset, 0)?;
        match spec.length {
            Some(l) => Ok(l),
            None if sa == sb => Ok(sa.saturating_sub(offset)),
            None => Err(Fail::new(format!(
                "LUN {a} ({}) and LUN {b} ({}) differ in size: compare a range inside both \
                 with --offset and --length",
                human(sa),
                human(sb)
            ))),
        }
    })?;
    let mut spans: Vec<Span> = Vec::new();
    let mut pos = 0;
    while pos < len {
        let n = WINDOW.min(len - pos);
        for r in t.with(|va| diff_at(va, host, (a, b), offset + pos, n))? {
            match spans.last_mut() {
                Some(l) if l.end() == r.offset => l.length += r.length,
                _ => spans.push(Span {
                    start: r.offset,
                    length: r.length,
                }),
            }
        }
        pos += n;
    }
    let ranges = Ranges::new(spans);
    if spec.json {
        out.push_str(&json::render(&ranges));
        return Ok(0);
    }
    if !ranges.ranges.is_empty() {
        let _ = writeln!(out, "{:>15}  {:>15}", "START", "LENGTH");
    }
    for s in &ranges.ranges {
        let _ = writeln!(out, "{:>15}  {:>15}", s.start, s.length);
    }
    let n = ranges.ranges.len();
    let _ = writeln!(
        out,
        "LUNs {a} and {b} may differ in {n} range{}, {} ({} bytes) of {}; the rest reads the \
         same",
        if n == 1 { "" } else { "s" },
        human(ranges.total_bytes),
        ranges.total_bytes,
        human(len)
    );
    Ok(0)
}

/// `discard IMAGE LUN --offset BYTES --length BYTES [--as HOST]`
pub fn discard(place: &Place, spec: &DiscardArgs, out: &mut String) -> Result<u8> {
    let (lun, offset, len, host) = (spec.lun, spec.offset, spec.length, spec.as_host);
    let mut t = place.open(&spec.image, Access::Write)?;
    t.with(|va| {
        match host {
            Some(h) => va.as_host(h).discard(lun, offset, len)?,
            None => va.discard(lun, offset, len)?,
        }
        Ok(())
    })?;
    t.commit()?;
    if spec.json {
        let v = serde_json::json!({"discarded": {"lun": lun, "offset": offset, "length": len}});
        out.push_str(&json::render(&v));
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "discarded {} ({len} bytes) of LUN {lun} at offset {offset}: it reads as zeros, \
         and what only it used is free",
        human(len)
    );
    Ok(0)
}
