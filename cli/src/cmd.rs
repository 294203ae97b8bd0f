//! The management commands: format, info, lun create/delete, copy. Each writes
//! what it has to say into `out` (printed on stdout) and returns the exit status. Each
//! runs on a cold image or on the served array alike ([`Place`]). A command that
//! changes the image says what it did in a line, or with `--json` in an object
//! ([`Done`]).

use std::fmt::Write as _;
use std::path::Path;

use lunsnap::{BlockDevice, Error};
use serde_json::{json, Value};

use crate::fail::{Fail, Result};
use crate::image::{self, Access, FormatSpec, Va};
use crate::json;
use crate::size::{both, human};
use crate::target::{self, Place};

/// What a change did: the line it prints, and the JSON object `--json` prints instead.
pub struct Done {
    /// The line (without its newline).
    pub text: String,
    /// `{"<what was done>": {...}}`
    pub json: Value,
}

impl Done {
    /// `text`, or with `--json` the object `{verb: details}`.
    pub fn new(text: String, verb: &str, details: Value) -> Done {
        let mut m = serde_json::Map::new();
        m.insert(verb.to_string(), details);
        Done {
            text,
            json: Value::Object(m),
        }
    }
}

/// `format IMAGE [--size SIZE] [--extent-size SIZE] [--max-luns N] [--force] [--json]`
pub fn format(
    place: &Place,
    path: &Path,
    spec: &FormatSpec,
    as_json: bool,
    out: &mut String,
) -> Result<u8> {
    let wait = place.cold_only(
        "format cannot run on a served image: stop its `lunsnap serve` first, then format it",
    )?;
    let made = image::format(path, spec, &wait)?;
    let p = &made.info;
    if as_json {
        out.push_str(&json::render(&json!({"formatted": {
            "image": path.to_string_lossy(),
            "image_bytes": made.bytes,
            "block_device": made.device,
            "extent_size": p.extent_size,
            "max_luns": p.max_luns,
            "metadata_copies": p.metadata_copies,
            "capacity_bytes": p.capacity_bytes,
            "metadata_provisioned_bytes": p.metadata_provisioned_bytes,
        }})));
        return Ok(0);
    }
    let numbers = match p.max_luns {
        0 | 1 => String::from("LUN number 0"),
        n => format!("LUN numbers 0 to {}", n - 1),
    };
    let _ = writeln!(
        out,
        "formatted {}: {} {}, extent size {}, {numbers}; capacity {} for LUNs, metadata \
         provisioned {} ({})",
        path.display(),
        human(made.bytes),
        if made.device { "block device" } else { "image" },
        human(u64::from(p.extent_size)),
        human(p.capacity_bytes),
        human(p.metadata_provisioned_bytes),
        copies(p.metadata_copies)
    );
    Ok(0)
}

/// `info IMAGE [--json]`
pub fn info(place: &Place, path: &Path, as_json: bool, out: &mut String) -> Result<u8> {
    let mut t = place.open(path, Access::Read)?;
    let served = t.is_served();
    let (p, secure, hosts, len, lost, pending) = t.with(|va| {
        let dev = va.device();
        let len = dev.block_count() * u64::from(dev.block_size());
        let lost = lost_bytes(va)?;
        let pending = va.pending_bytes()?;
        Ok((
            va.pool_info(),
            va.security_enabled(),
            va.hosts().len(),
            len,
            lost,
            pending,
        ))
    })?;
    let lost_total: u64 = lost.iter().map(|&(_, b)| b).sum();
    let security = if secure {
        "enabled: hosts see only the LUNs they are granted"
    } else {
        "disabled: every host sees every LUN"
    };
    let disk = image::disk_usage(t.file());
    if as_json {
        let shown = path.to_string_lossy().into_owned();
        let mut info = json::Info::new(shown, len, disk, &p, secure, hosts, lost_total);
        info.pending_bytes = pending;
        out.push_str(&json::render(&info));
        return Ok(0);
    }
    let on_disk = disk.map_or_else(String::new, |d| format!(", {} on disk", human(d)));
    let rows = [
        (
            "image",
            format!("{} ({}{on_disk})", path.display(), human(len)),
        ),
        ("extent size", human(u64::from(p.extent_size))),
        (
            "LUNs",
            format!("{} (numbers 0 to {})", p.luns, p.max_luns.saturating_sub(1)),
        ),
        ("capacity", human(p.capacity_bytes)),
        ("reserved", human(p.reserved_bytes)),
        ("unreserved", human(p.unreserved_bytes)),
        ("allocated", human(p.allocated_bytes)),
        ("free", human(p.free_bytes)),
    ];
    // Space of dropped mappings not freed yet: counted in `allocated` until it is.
    let pending_row = (pending > 0 || p.reclaim_queue > 0).then(|| {
        (
            "pending free",
            format!(
                "{} ({}) of dropped mappings, counted as allocated until {}",
                human(pending),
                crate::integrity::count(p.reclaim_queue as usize, "queue entry", "queue entries"),
                crate::reclaim::later(served, "it"),
            ),
        )
    });
    let metadata = [
        (
            "metadata",
            format!(
                "{} used of {} provisioned",
                human(p.metadata_used_bytes),
                human(p.metadata_provisioned_bytes)
            ),
        ),
        (
            "metadata copies",
            match p.metadata_copies {
                1 => String::from("1 (a damaged page cannot be healed)"),
                n => format!("{n} (a damaged page is read from its good copy, and healed)"),
            },
        ),
        ("healed", healed(&p)),
    ];
    let rollback = p.rollback.map(|(lost, kept)| {
        // Not committed since: the image itself does not say so yet.
        let pending = if p.generation == kept {
            "; the next change records it (until then, open it with --allow-rollback)"
        } else {
            ""
        };
        (
            "rollback",
            format!(
                "generation {lost} was lost to damage: an open that allowed it \
                 (--allow-rollback) went back to generation {kept}{pending}"
            ),
        )
    });
    let lost_row = (lost_total > 0).then(|| {
        let luns: Vec<u32> = lost.iter().map(|&(n, _)| n).collect();
        (
            "lost",
            format!(
                "{} of {} {} lost to metadata damage: {} as errors until written or \
                 discarded (`lun list` shows each LUN's)",
                both(lost_total),
                if luns.len() == 1 { "LUN" } else { "LUNs" },
                listed(&luns),
                if lost_total == 1 {
                    "it reads"
                } else {
                    "they read"
                },
            ),
        )
    });
    let rest = [
        ("generation", p.generation.to_string()),
        ("hosts", hosts.to_string()),
        ("security", String::from(security)),
    ];
    let all = rows
        .into_iter()
        .chain(pending_row)
        .chain(metadata)
        .chain(rollback)
        .chain(lost_row)
        .chain(rest);
    for (k, v) in all {
        let _ = writeln!(out, "{:<16} {v}", format!("{k}:"));
    }
    Ok(0)
}

/// The LUNs with bytes lost to metadata damage (`repair`), with how many, in order.
fn lost_bytes(va: &Va) -> Result<Vec<(u32, u64)>> {
    let mut lost = Vec::new();
    for n in va.lun_numbers() {
        let b: u64 = va.lost_ranges(n)?.iter().map(|&(_, l)| l).sum();
        if b > 0 {
            lost.push((n, b));
        }
    }
    Ok(lost)
}

/// `2 copies of every page`, as `format` and `info` say it.
fn copies(n: u32) -> String {
    match n {
        1 => String::from("1 copy of every page"),
        n => format!("{n} copies of every page"),
    }
}

/// `info`'s line on healing: the copies rewritten so far, and those found bad that
/// the next commit rewrites.
fn healed(p: &lunsnap::PoolInfo) -> String {
    let n = |k: u64| {
        if k == 1 {
            String::from("1 bad copy")
        } else {
            format!("{k} bad copies")
        }
    };
    let mut s = format!("{} rewritten so far", n(p.healed_pages));
    if p.pending_heals > 0 {
        let _ = write!(
            s,
            "; {} found since the last commit, rewritten at the next",
            n(p.pending_heals)
        );
    }
    s
}

/// Prints what a change did: its line, or its JSON object with `as_json`;
/// `ended` lists the NBD connections it ended (`Some` for commands that can end them).
fn said(done: Done, ended: Option<Vec<String>>, as_json: bool, out: &mut String) {
    if as_json {
        let mut v = done.json;
        if let (Some(ended), Value::Object(m)) = (&ended, &mut v) {
            m.insert("ended_connections".into(), json!(ended));
        }
        out.push_str(&json::render(&v));
        return;
    }
    let _ = writeln!(out, "{}", done.text);
    for c in ended.unwrap_or_default() {
        let _ = writeln!(out, "ended {c}");
    }
}

/// Opens `path` for a change, applies `op`, and closes it (every operation has
/// committed before it returns; close commits nothing more).
pub fn change(
    place: &Place,
    (path, as_json): (&Path, bool),
    op: impl FnOnce(&mut Va) -> Result<Done>,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Write)?;
    let done = t.with(op)?;
    t.commit()?;
    said(done, None, as_json, out);
    Ok(0)
}

/// A change that NBD clients of the LUNs `exposed` names would see (see
/// [`Target::guarded`](crate::target::Target::guarded)): refused while they have one
/// open, unless `force` ends their connections, which are then listed after `op`'s
/// line (in `ended_connections` with `--json`).
pub fn change_exposed(
    place: &Place,
    (path, as_json, force): (&Path, bool, bool),
    exposed: impl FnOnce(&Va) -> Vec<u32>,
    op: impl FnOnce(&mut Va) -> Result<Done>,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Write)?;
    let (done, ended) = t.guarded(force, exposed, op)?;
    t.commit()?;
    said(done, Some(ended), as_json, out);
    Ok(0)
}

/// `lun create IMAGE LUN --size SIZE [--json]`
pub fn lun_create(
    place: &Place,
    (path, as_json): (&Path, bool),
    lun: u32,
    size: u64,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.create_lun(lun, size).map_err(|e| match e {
            Error::InvalidLunSize { why, .. }
                if size > 0 && size.is_multiple_of(lunsnap::SECTOR) =>
            {
                Fail::new(format!(
                    "invalid LUN size {}: {why}, {}",
                    both(size),
                    both(va.pool_info().capacity_bytes)
                ))
            }
            e => Fail::from(e),
        })?;
        Ok(Done::new(
            format!("created LUN {lun} ({})", human(size)),
            "created",
            json!({"lun": lun, "size": size}),
        ))
    };
    change(place, (path, as_json), op, out)
}

/// What `lun delete` is asked to do.
pub struct Delete {
    /// The LUN or copy.
    pub lun: u32,
    /// `--orphan-copies`
    pub orphan: bool,
    /// `--force`
    pub force: bool,
    /// `--json`
    pub json: bool,
}

/// The copies of `lun` (those that name it as their parent), in number order.
pub fn copies_of(va: &Va, lun: u32) -> Vec<u32> {
    va.lun_numbers()
        .into_iter()
        .filter(|&n| va.lun_status(n).is_ok_and(|s| s.parent == Some(lun)))
        .collect()
}

/// A list of LUN numbers for people: `11, 12 and 13`.
pub fn listed(ns: &[u32]) -> String {
    let s: Vec<String> = ns.iter().map(ToString::to_string).collect();
    match s.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => s.join(""),
    }
}

/// `lun delete IMAGE LUN [--orphan-copies] [--force] [--json]`
pub fn lun_delete(place: &Place, path: &Path, d: &Delete, out: &mut String) -> Result<u8> {
    let Delete {
        lun,
        orphan,
        force,
        json,
    } = *d;
    let op = |va: &mut Va| {
        let copies = copies_of(va, lun);
        va.delete(lun, orphan).map_err(|e| match e {
            Error::HasCopies { .. } if !copies.is_empty() => {
                let (n, them) = match copies.len() {
                    1 => (String::from("1 copy"), "it"),
                    k => (format!("{k} copies"), "them"),
                };
                Fail::new(format!(
                    "LUN {lun} has {n} ({}): delete {them} first, or use --orphan-copies to \
                     delete LUN {lun} and leave {them} standing alone",
                    listed(&copies)
                ))
            }
            e => Fail::from(e),
        })?;
        let text = if copies.is_empty() {
            format!("deleted LUN {lun}")
        } else {
            format!(
                "deleted LUN {lun}; its copies {} stand alone",
                listed(&copies)
            )
        };
        Ok(Done::new(
            text,
            "deleted",
            json!({"lun": lun, "orphaned_copies": copies}),
        ))
    };
    change_exposed(
        place,
        (path, json, force),
        |va| target::deleted(va, lun, orphan),
        op,
        out,
    )
}

/// `copy create IMAGE --parent P --copy C [--parent P2 --copy C2 ...] (--attached |
/// --detached) [--json]`: one copy with `create_copy`, several (a consistency group)
/// with `create_copies`, at one point in time and all or nothing.
pub fn copy_create(
    place: &Place,
    (path, as_json): (&Path, bool),
    pairs: &[(u32, u32)],
    attached: bool,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        match *pairs {
            [(parent, copy)] => va.create_copy(parent, copy, attached)?,
            _ => va.create_copies(pairs, attached)?,
        }
        let state = if attached { "attached" } else { "detached" };
        let made: Vec<Value> = pairs
            .iter()
            .map(|&(p, c)| {
                let size = va.lun_status(c).map_or(0, |s| s.size);
                json!({"lun": c, "parent": p, "size": size})
            })
            .collect();
        let details = json!({"copies": made, "attached": attached});
        let text = match *pairs {
            [(parent, copy)] if attached => format!(
                "created copy {copy} of LUN {parent}, attached: LUN {parent}'s image as of now"
            ),
            [(parent, copy)] => format!(
                "created copy {copy} of LUN {parent}, detached: no data until `copy attach`"
            ),
            _ => {
                let list: Vec<String> = pairs
                    .iter()
                    .map(|(p, c)| format!("{c} of LUN {p}"))
                    .collect();
                let how = if attached {
                    "their parents' images at one point in time"
                } else {
                    "no data until `copy attach`"
                };
                format!("created copies {}, {state}: {how}", list.join(", "))
            }
        };
        Ok(Done::new(text, "created", details))
    };
    change(place, (path, as_json), op, out)
}

/// `copy attach IMAGE C [C2 ...] [--force] [--json]`: one copy with `attach`, several
/// (a consistency group) with `attach_many`, at one point in time and all or nothing.
pub fn copy_attach(
    place: &Place,
    how: (&Path, bool, bool),
    copies: &[u32],
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        let text = if let [copy] = *copies {
            va.attach(copy)?;
            format!("attached copy {copy}: it holds its parent's image as of now")
        } else {
            va.attach_many(copies)?;
            format!(
                "attached copies {}: each holds its parent's image, all at one point in time",
                listed(copies)
            )
        };
        Ok(Done::new(text, "attached", json!({"copies": copies})))
    };
    change_exposed(place, how, |va| target::attached(va, copies), op, out)
}

/// `copy detach IMAGE C [--force] [--json]`
pub fn copy_detach(
    place: &Place,
    how: (&Path, bool, bool),
    copy: u32,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.detach(copy)?;
        Ok(Done::new(
            format!("detached copy {copy}: its data and reservation are released"),
            "detached",
            json!({"copy": copy}),
        ))
    };
    change_exposed(place, how, |va| target::detached(va, copy), op, out)
}

/// `copy restore IMAGE C [--force] [--json]`
pub fn copy_restore(
    place: &Place,
    how: (&Path, bool, bool),
    copy: u32,
    out: &mut String,
) -> Result<u8> {
    let op = |va: &mut Va| {
        va.restore(copy)?;
        let parent = va.lun_status(copy).ok().and_then(|s| s.parent);
        let text = match parent {
            Some(p) => format!("restored LUN {p} from copy {copy}: it holds the copy's contents"),
            None => format!("restored from copy {copy}: its parent holds the copy's contents"),
        };
        Ok(Done::new(
            text,
            "restored",
            json!({"lun": parent, "from_copy": copy}),
        ))
    };
    change_exposed(place, how, |va| target::restored(va, copy), op, out)
}
