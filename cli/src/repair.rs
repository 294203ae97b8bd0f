//! `repair`: where both copies of some metadata are bad, rebuild what the rest
//! allows (in the manner of `thin_repair`), in one new commit; then check the result.
//!
//! It is offline: it needs the image to itself (an exclusive lock; a dry run, which
//! writes nothing, a shared one), and is refused on a served image. It says what it
//! kept and what it lost: the unreadable pages, the LUN numbers whose records were
//! lost, the records dropped as invalid, the copies left without their parent, the
//! mappings rebuilt from their readable entries, the hosts, and each range of a LUN
//! whose mapping could not be read. Those ranges read as errors (never as zeros or
//! stale data) until they are written or discarded. Exit status: 0 when the repair
//! ran (even if data was lost: it says so), 1 when it could not; after a real repair
//! the array is checked, and damage or leaks found then give `check`'s 2 or 3.

use std::fmt::Write as _;
use std::path::Path;

use lunsnap::{Array, RepairOptions, RepairReport};
use serde_json::{json, Value};

use crate::cmd::listed;
use crate::fail::{Fail, Result};
use crate::image::{self, Access};
use crate::integrity::{self, Checked};
use crate::json;
use crate::size::{both, human};
use crate::target::Place;

/// Unreadable pages named one by one in the text (`--json` lists the first 1,000).
const NAMED_PAGES: usize = 20;

/// `repair IMAGE [--dry-run] [--json]`
pub fn repair(
    place: &Place,
    path: &Path,
    dry_run: bool,
    as_json: bool,
    out: &mut String,
) -> Result<u8> {
    let wait = place.cold_only(
        "repair cannot run on a served image: it rebuilds the metadata offline; stop its \
         `lunsnap serve` first, then repair it",
    )?;
    // A dry run writes nothing: the file is opened read-only.
    let access = if dry_run { Access::Read } else { Access::Write };
    let file = image::locked(path, access, &wait)?;
    let dev = image::device(file, path)?;
    let opts = RepairOptions {
        open: image::open_options(wait.allow_rollback),
        dry_run,
    };
    let (dev, report) = Array::repair(dev, &opts).map_err(|e| image::refused("repair", path, e))?;
    // After a real repair: the array as it opens now, checked.
    let checked = if dry_run {
        None
    } else {
        let mut va = Array::open(dev, &opts.open).map_err(|e| {
            let f = image::refused("open", path, e);
            Fail::new(format!(
                "the repair committed generation {}, but {}",
                report.generation, f.msg
            ))
        })?;
        Some(integrity::checked(&mut va)?)
    };
    let code = checked.as_ref().map_or(0, |c| c.status().0);
    if as_json {
        out.push_str(&json::render(&report_json(path, &report, checked.as_ref())));
    } else {
        text(path, &report, checked.as_ref(), out);
    }
    Ok(code)
}

/// The bytes of all the lost ranges.
fn lost_bytes(r: &RepairReport) -> u64 {
    r.lost.iter().map(|&(_, _, len)| len).sum()
}

/// The LUNs that lost data, in order, each once.
fn lost_luns(r: &RepairReport) -> Vec<u32> {
    let mut ns: Vec<u32> = r.lost.iter().map(|&(n, _, _)| n).collect();
    ns.dedup();
    ns
}

/// `n things`, or `1 thing`.
fn many(n: usize, one: &str, more: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { more })
}

/// `none`, or the list of `ns` after its count: `2: LUNs 1 and 2`.
fn luns_or_none(ns: &[u32]) -> String {
    match ns {
        [] => String::from("none"),
        [n] => format!("1: LUN {n}"),
        _ => format!("{}: LUNs {}", ns.len(), listed(ns)),
    }
}

/// What the report says, one row per finding, then the lost ranges one per line, and
/// a line that says what the repair did (and whether data was lost); after a real
/// repair, the check's lines.
fn text(path: &Path, r: &RepairReport, checked: Option<&Checked>, out: &mut String) {
    let unreadable = match r.unreadable_count {
        0 => String::from("none"),
        n => {
            let shown: Vec<String> = r
                .unreadable_pages
                .iter()
                .take(NAMED_PAGES)
                .map(u64::to_string)
                .collect();
            let more = n.saturating_sub(shown.len() as u64);
            let mut s = format!(
                "{} with no good copy: {}",
                many(n as usize, "metadata page", "metadata pages"),
                shown.join(", ")
            );
            if more > 0 {
                let _ = write!(s, " and {more} more");
            }
            s
        }
    };
    let records = if r.lost_records.is_empty() {
        String::from("none")
    } else {
        let ranges: Vec<String> = r
            .lost_records
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a} to {b}")
                }
            })
            .collect();
        format!(
            "LUN numbers {} (unreadable: the LUNs that had them, if any, are gone)",
            ranges.join(", ")
        )
    };
    let bad = match r.bad_records.as_slice() {
        [] => String::from("none"),
        [k] => format!("the record of LUN {k} (invalid: dropped)"),
        ks => {
            let keys: Vec<String> = ks.iter().map(u64::to_string).collect();
            format!("the records of LUNs {} (invalid: dropped)", keys.join(", "))
        }
    };
    let hosts = format!(
        "{} kept, {}",
        r.hosts,
        if r.hosts_lost {
            "some lost (their records could not be read: those hosts and their grants are gone)"
        } else {
            "none lost"
        }
    );
    let lost = match r.lost.len() {
        0 => String::from("none"),
        n => format!(
            "{} of {}, in {}:",
            both(lost_bytes(r)),
            match lost_luns(r).as_slice() {
                [l] => format!("LUN {l}"),
                ls => format!("LUNs {}", listed(ls)),
            },
            many(n, "range", "ranges"),
        ),
    };
    let rows = [
        ("unreadable pages", unreadable),
        ("LUNs kept", luns_or_none(&r.luns)),
        ("LUN records lost", records),
        ("bad records", bad),
        (
            "orphaned copies",
            match r.orphaned.as_slice() {
                [] => String::from("none"),
                os => format!("{} (their parent is gone: they stand alone)", listed(os)),
            },
        ),
        ("rebuilt mappings", luns_or_none(&r.rebuilt)),
        ("hosts", hosts),
        ("lost data", lost),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{:<18} {v}", format!("{k}:"));
    }
    for &(lun, offset, len) in &r.lost {
        let _ = writeln!(
            out,
            "  LUN {lun}: offset {offset}, length {len} ({})",
            human(len)
        );
    }
    let (losses, data) = losses(r);
    let said = if losses.is_empty() {
        None
    } else {
        Some(format!(
            "{}{}",
            match (data, r.dry_run) {
                (true, false) => "DATA WAS LOST: ",
                (true, true) => "DATA WOULD BE LOST: ",
                (false, false) => "LOST: ",
                (false, true) => "IT WOULD LOSE: ",
            },
            losses.join("; ")
        ))
    };
    if r.dry_run {
        let would = match said {
            Some(l) => format!("a repair would keep everything else; {l}"),
            None => String::from("a repair would lose nothing"),
        };
        let _ = writeln!(
            out,
            "dry run of the repair of {} (generation {}): nothing was changed; {would}",
            path.display(),
            r.generation
        );
        return;
    }
    let did = match said {
        Some(l) => format!("everything else was kept; {l}"),
        None => String::from("nothing was lost (the reference counts were rebuilt)"),
    };
    let _ = writeln!(
        out,
        "repaired {} in generation {}: {did}",
        path.display(),
        r.generation
    );
    if let Some(c) = checked {
        c.text(path, out);
    }
}

/// What the repair loses (or would: a dry run), for people, and whether that is data
/// (a LUN's ranges, or whole LUNs).
fn losses(r: &RepairReport) -> (Vec<String>, bool) {
    let (read, are, is) = if r.dry_run {
        ("would read", "would be", "would be")
    } else {
        ("read", "are", "is")
    };
    let mut l = Vec::new();
    if !r.lost.is_empty() {
        let luns = lost_luns(r);
        l.push(format!(
            "{} of {} {} ({} listed above) {read} as errors until written or discarded \
             (restore them from a backup)",
            both(lost_bytes(r)),
            if luns.len() == 1 { "LUN" } else { "LUNs" },
            listed(&luns),
            many(r.lost.len(), "range", "ranges")
        ));
    }
    if !r.lost_records.is_empty() {
        l.push(format!(
            "the LUNs whose records could not be read, if there were any, {are} gone"
        ));
    }
    let data = !l.is_empty();
    if !r.bad_records.is_empty() {
        l.push(format!(
            "{} {are} dropped",
            many(
                r.bad_records.len(),
                "invalid LUN record",
                "invalid LUN records"
            )
        ));
    }
    if r.hosts_lost {
        l.push(format!("some hosts (and their grants) {are} gone"));
    }
    if l.is_empty() && r.unreadable_count > 0 {
        l.push(format!(
            "what the unreadable metadata held {is} gone (no LUN's data)"
        ));
    }
    (l, data)
}

/// `repair --json`: `{"repaired": {...}}`, every field of the report, and the check's
/// object after a real repair (null for a dry run).
fn report_json(path: &Path, r: &RepairReport, checked: Option<&Checked>) -> Value {
    let lost: Vec<Value> = r
        .lost
        .iter()
        .map(|&(lun, offset, length)| json!({"lun": lun, "offset": offset, "length": length}))
        .collect();
    let records: Vec<Value> = r
        .lost_records
        .iter()
        .map(|&(first, last)| json!({"first": first, "last": last}))
        .collect();
    let check = checked.map_or(Value::Null, |c| {
        serde_json::to_value(c.json()).unwrap_or(Value::Null)
    });
    json!({"repaired": {
        "image": path.to_string_lossy(),
        "dry_run": r.dry_run,
        "generation": r.generation,
        "complete": r.is_complete(),
        "unreadable_pages": r.unreadable_pages,
        "unreadable_count": r.unreadable_count,
        "luns": r.luns,
        "lost_records": records,
        "bad_records": r.bad_records,
        "orphaned": r.orphaned,
        "rebuilt": r.rebuilt,
        "hosts": r.hosts,
        "hosts_lost": r.hosts_lost,
        "lost": lost,
        "lost_bytes": lost_bytes(r),
        "check": check,
    }})
}
