//! The management commands: format, info, lun create/delete/list, copy, check. Each writes what it has
//! to say into `out` (printed on stdout) and returns the exit status. Each runs on a
//! cold image or on the served array alike ([`Place`]).

use std::fmt::Write as _;
use std::path::Path;

use lunsnap::{BlockDevice, LunInfo, LunKind};

use crate::fail::Result;
use crate::image::{self, Access, FormatSpec, Va};
use crate::json;
use crate::size::human;
use crate::target::{self, Place};

/// `format IMAGE --size SIZE [--extent-size SIZE] [--max-luns N] [--force]`
pub fn format(place: &Place, path: &Path, spec: &FormatSpec, out: &mut String) -> Result<u8> {
    place.cold_only(
        "format cannot run on a served image: stop its `lunsnap serve` first, then format it",
    )?;
    let p = image::format(path, spec)?;
    let _ = writeln!(
        out,
        "formatted {}: {} image, extent size {}, LUN numbers 0 to {}; capacity {} for \
         LUNs, metadata provisioned {}",
        path.display(),
        human(spec.size),
        human(u64::from(p.extent_size)),
        p.max_luns.saturating_sub(1),
        human(p.capacity_bytes),
        human(p.metadata_provisioned_bytes)
    );
    Ok(0)
}

/// `info IMAGE [--json]`
pub fn info(place: &Place, path: &Path, as_json: bool, out: &mut String) -> Result<u8> {
    let mut t = place.open(path, Access::Read)?;
    let (p, secure, hosts, len) = t.with(|va| {
        let dev = va.device();
        let len = dev.block_count() * u64::from(dev.block_size());
        Ok((va.pool_info(), va.security_enabled(), va.hosts().len(), len))
    })?;
    let security = if secure {
        "enabled: hosts see only the LUNs they are granted"
    } else {
        "disabled: every host sees every LUN"
    };
    let disk = image::disk_usage(t.file());
    if as_json {
        let shown = path.to_string_lossy().into_owned();
        out.push_str(&json::render(&json::Info::new(
            shown, len, disk, &p, secure, hosts,
        )));
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
        (
            "metadata",
            format!(
                "{} used of {} provisioned",
                human(p.metadata_used_bytes),
                human(p.metadata_provisioned_bytes)
            ),
        ),
        ("generation", p.generation.to_string()),
        ("hosts", hosts.to_string()),
        ("security", String::from(security)),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{:<12} {v}", format!("{k}:"));
    }
    Ok(0)
}

/// Opens `path` for a change, applies `op`, and closes it (every operation has
/// committed before it returns; close commits nothing more).
pub fn change(
    place: &Place,
    path: &Path,
    op: impl FnOnce(&mut Va) -> Result<String>,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Write)?;
    let said = t.with(op)?;
    t.commit()?;
    out.push_str(&said);
    out.push('\n');
    Ok(0)
}

/// A change that NBD clients of the LUNs `exposed` names would see (see
/// [`Target::guarded`](crate::target::Target::guarded)): refused while they have one
/// open, unless `force` ends their connections, which are then listed after `op`'s line.
pub fn change_exposed(
    place: &Place,
    path: &Path,
    force: bool,
    exposed: impl FnOnce(&Va) -> Vec<u32>,
    op: impl FnOnce(&mut Va) -> Result<String>,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Write)?;
    let (said, ended) = t.guarded(force, exposed, op)?;
    t.commit()?;
    let _ = writeln!(out, "{said}");
    for c in ended {
        let _ = writeln!(out, "ended {c}");
    }
    Ok(0)
}

/// `lun create IMAGE LUN --size SIZE`
pub fn lun_create(place: &Place, path: &Path, lun: u32, size: u64, out: &mut String) -> Result<u8> {
    change(
        place,
        path,
        |va| {
            va.create_lun(lun, size)?;
            Ok(format!("created LUN {lun} ({})", human(size)))
        },
        out,
    )
}

/// What `lun delete` is asked to do.
pub struct Delete {
    /// The LUN or copy.
    pub lun: u32,
    /// `--orphan-copies`
    pub orphan: bool,
    /// `--force`
    pub force: bool,
}

/// `lun delete IMAGE LUN [--orphan-copies] [--force]`
pub fn lun_delete(place: &Place, path: &Path, d: &Delete, out: &mut String) -> Result<u8> {
    let Delete { lun, orphan, force } = *d;
    change_exposed(
        place,
        path,
        force,
        |va| target::deleted(va, lun, orphan),
        |va| {
            va.delete(lun, orphan)?;
            Ok(if orphan {
                format!("deleted LUN {lun}; its copies, if any, stand alone")
            } else {
                format!("deleted LUN {lun}")
            })
        },
        out,
    )
}

/// `lun list IMAGE [--json] [--as HOST]`: every LUN, or only those `host` may discover.
pub fn lun_list(
    place: &Place,
    path: &Path,
    as_json: bool,
    host: Option<u64>,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Read)?;
    let (luns, grants) = t.with(|va| {
        let mut luns = va.luns()?;
        if let Some(h) = host {
            let visible = va.as_host(h).visible_luns();
            luns.retain(|l| visible.contains(&l.lun));
        }
        let mut grants = Vec::with_capacity(luns.len());
        for l in &luns {
            grants.push(va.grants(l.lun)?);
        }
        Ok((luns, grants))
    })?;
    if as_json {
        let v: Vec<json::Lun> = luns
            .iter()
            .zip(&grants)
            .map(|(l, g)| json::Lun::new(l, g))
            .collect();
        out.push_str(&json::render(&v));
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "{:>7}  {:<4}  {:>10}  {:>6}  {:<8}  {:>10}  {:>10}  {:>10}  {:<6}  GRANTS",
        "LUN", "KIND", "SIZE", "PARENT", "STATE", "RESERVED", "EXCLUSIVE", "SHARED", "ONLINE"
    );
    for (l, g) in luns.iter().zip(&grants) {
        let _ = writeln!(
            out,
            "{:>7}  {:<4}  {:>10}  {:>6}  {:<8}  {:>10}  {:>10}  {:>10}  {:<6}  {}",
            l.lun,
            json::kind(l.kind),
            human(l.size),
            l.parent
                .map_or_else(|| String::from("-"), |p| p.to_string()),
            state(l),
            human(l.reserved_bytes),
            human(l.exclusive_bytes),
            human(l.shared_bytes),
            if l.online { "yes" } else { "no" },
            grant_list(g)
        );
    }
    Ok(0)
}

/// The GRANTS column: `HOST:read HOST:write ...`, or `-`.
fn grant_list(grants: &[(u64, lunsnap::Access)]) -> String {
    if grants.is_empty() {
        return String::from("-");
    }
    let shown: Vec<String> = grants
        .iter()
        .map(|&(h, a)| format!("{}:{}", json::host_id(h), json::access(a)))
        .collect();
    shown.join(" ")
}

fn state(l: &LunInfo) -> &'static str {
    match (l.kind, l.attached) {
        (LunKind::Lun, _) => "-",
        (LunKind::Copy, true) => "attached",
        (LunKind::Copy, false) => "detached",
    }
}

/// `copy create IMAGE --parent P --copy C [--parent P2 --copy C2 ...] (--attached |
/// --detached)`: one copy with `create_copy`, several (a consistency group) with
/// `create_copies`, at one point in time and all or nothing.
pub fn copy_create(
    place: &Place,
    path: &Path,
    pairs: &[(u32, u32)],
    attached: bool,
    out: &mut String,
) -> Result<u8> {
    change(
        place,
        path,
        |va| {
            if let [(parent, copy)] = *pairs {
                va.create_copy(parent, copy, attached)?;
                return Ok(if attached {
                    format!(
                        "created copy {copy} of LUN {parent}, attached: LUN {parent}'s image \
                         as of now"
                    )
                } else {
                    format!(
                        "created copy {copy} of LUN {parent}, detached: no data until `copy \
                         attach`"
                    )
                });
            }
            va.create_copies(pairs, attached)?;
            let list: Vec<String> = pairs
                .iter()
                .map(|(p, c)| format!("{c} of LUN {p}"))
                .collect();
            Ok(if attached {
                format!(
                    "created copies {}, attached: their parents' images at one point in time",
                    list.join(", ")
                )
            } else {
                format!(
                    "created copies {}, detached: no data until `copy attach`",
                    list.join(", ")
                )
            })
        },
        out,
    )
}

/// `copy attach IMAGE C [C2 ...] [--force]`: one copy with `attach`, several (a
/// consistency group) with `attach_many`, at one point in time and all or nothing.
pub fn copy_attach(
    place: &Place,
    path: &Path,
    copies: &[u32],
    force: bool,
    out: &mut String,
) -> Result<u8> {
    change_exposed(
        place,
        path,
        force,
        |va| target::attached(va, copies),
        |va| {
            if let [copy] = *copies {
                va.attach(copy)?;
                return Ok(format!(
                    "attached copy {copy}: it holds its parent's image as of now"
                ));
            }
            va.attach_many(copies)?;
            let list: Vec<String> = copies.iter().map(ToString::to_string).collect();
            Ok(format!(
                "attached copies {}: each holds its parent's image, all at one point in time",
                list.join(", ")
            ))
        },
        out,
    )
}

/// `copy detach IMAGE C [--force]`
pub fn copy_detach(
    place: &Place,
    path: &Path,
    copy: u32,
    force: bool,
    out: &mut String,
) -> Result<u8> {
    change_exposed(
        place,
        path,
        force,
        |va| target::detached(va, copy),
        |va| {
            va.detach(copy)?;
            Ok(format!(
                "detached copy {copy}: its data and reservation are released"
            ))
        },
        out,
    )
}

/// `copy restore IMAGE C [--force]`
pub fn copy_restore(
    place: &Place,
    path: &Path,
    copy: u32,
    force: bool,
    out: &mut String,
) -> Result<u8> {
    change_exposed(
        place,
        path,
        force,
        |va| target::restored(va, copy),
        |va| {
            va.restore(copy)?;
            Ok(format!(
                "restored from copy {copy}: its parent holds the copy's contents"
            ))
        },
        out,
    )
}

/// `check IMAGE [--json]`: 0 when clean, 1 with every violation on stdout otherwise.
pub fn check(place: &Place, path: &Path, as_json: bool, out: &mut String) -> Result<u8> {
    let mut t = place.open(path, Access::Read)?;
    let (found, p) = t.with(|va| {
        let found: Vec<String> = va.check()?.iter().map(ToString::to_string).collect();
        Ok((found, va.pool_info()))
    })?;
    let clean = found.is_empty();
    if as_json {
        out.push_str(&json::render(&json::Check {
            clean,
            violations: found,
        }));
    } else if clean {
        let _ = writeln!(
            out,
            "{}: clean ({} LUNs, generation {})",
            path.display(),
            p.luns,
            p.generation
        );
    } else {
        for v in &found {
            let _ = writeln!(out, "{v}");
        }
    }
    Ok(if clean { 0 } else { 1 })
}
