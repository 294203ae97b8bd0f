//! How the scenario prints: sections, steps, the guide's and this run's commands, and
//! the pool's and the LUNs' figures.

use std::path::Path;
use std::time::Duration;

use lunsnap::{LunInfo, LunKind, PoolInfo};

use super::db::MIB;
use super::{Cycle, Narrator, Result, Va, ARRAY_ID, IMAGE_BYTES};

/// The first lines: what runs, and on which image.
pub(super) fn banner(n: &dyn Narrator, path: &Path, kept: bool) {
    say!(
        "{}: the backup and restore processes of HP's Business Copy VA guide, end to end",
        n.voice("lunsnap demo", "backup_cycle")
    );
    let keeps = n.voice(
        "kept: inspect it with `lunsnap info $IMG`, `lunsnap lun list $IMG`",
        "kept",
    );
    say!(
        "IMG={} ({} sparse image of 4 KiB blocks; {})",
        path.display(),
        size(IMAGE_BYTES),
        if kept { keeps } else { "removed at the end" }
    );
}

/// A process of the guide (or the scenario's own setup, power cut and reopen).
pub(super) fn section(title: &str) {
    say!();
    say!("== {title}");
}

/// A step: the guide's step number (or a label of the scenario's own) and what it does.
pub(super) fn step(label: &str, text: &str) {
    say!("{label:>5} {text}");
}

/// The guide's command for the step.
pub(super) fn guide(command: &str) {
    say!("        guide:   {command}");
}

/// A finding or a figure under a step.
pub(super) fn detail(text: &str) {
    say!("        {text}");
}

impl Cycle<'_> {
    /// What does the step's work here, in the narrator's voice: the `lunsnap` command
    /// line `cli` or the library calls `call`. An empty one has nothing to show.
    pub(super) fn how(&self, cli: &str, call: &str) {
        let text = self.n.voice(cli, call);
        if !text.is_empty() {
            say!("        {}: {text}", self.n.voice("lunsnap", "library"));
        }
    }
}

/// The pool's figures, with a note in parentheses if `note` is not empty.
pub(super) fn pool(p: &PoolInfo, note: &str) {
    detail(&format!(
        "pool: capacity {}, reserved {}, unreserved {}, allocated {}, free {}, metadata {} \
         of {}{}",
        size(p.capacity_bytes),
        size(p.reserved_bytes),
        size(p.unreserved_bytes),
        size(p.allocated_bytes),
        size(p.free_bytes),
        size(p.metadata_used_bytes),
        size(p.metadata_provisioned_bytes),
        aside(note)
    ));
}

/// One LUN's figures, with a note in parentheses if `note` is not empty.
pub(super) fn lun(va: &mut Va, n: u32, note: &str) -> Result<()> {
    let l = va.lun_info(n)?;
    let what = match (l.kind, l.parent) {
        (LunKind::Lun, _) => String::from("plain LUN"),
        (LunKind::Copy, None) => String::from("orphaned copy"),
        (LunKind::Copy, Some(_)) => format!("copy {}", relation(&l)),
    };
    detail(&format!(
        "LUN {n}: {what}, reserved {}, exclusive {}, shared {}{}",
        size(l.reserved_bytes),
        size(l.exclusive_bytes),
        size(l.shared_bytes),
        aside(note)
    ));
    Ok(())
}

/// One row of the table of LUNs.
pub(super) fn lun_row(l: &LunInfo) {
    let kind = match l.kind {
        LunKind::Lun => "lun",
        LunKind::Copy => "copy",
    };
    detail(&format!(
        "LUN {:>2}  {kind:<4} {:>6}  {:<16} reserved {:>7}  exclusive {:>7}  shared {:>7}",
        l.lun,
        size(l.size),
        relation(l),
        size(l.reserved_bytes),
        size(l.exclusive_bytes),
        size(l.shared_bytes)
    ));
}

/// A copy's parent and state (`-` for none).
fn relation(l: &LunInfo) -> String {
    match (l.parent, l.attached) {
        (Some(p), true) => format!("of {p}, attached"),
        (Some(p), false) => format!("of {p}, detached"),
        (None, _) => String::from("-"),
    }
}

fn aside(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    }
}

/// The guide's `<array-id>`, as text.
pub(super) fn array_id() -> String {
    String::from_utf8_lossy(&ARRAY_ID).into_owned()
}

/// A host id as the command line takes it: 16 hex digits.
pub(super) fn host(id: u64) -> String {
    format!("{id:016x}")
}

/// Bytes in the largest binary unit that keeps a whole number before the point.
pub(super) fn size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (MIB, "MiB"), (1 << 10, "KiB")];
    let (unit, name) = UNITS
        .into_iter()
        .find(|&(unit, _)| n >= unit)
        .unwrap_or((1, "B"));
    let x = n as f64 / unit as f64;
    if x.fract() == 0.0 {
        format!("{x:.0} {name}")
    } else {
        format!("{x:.1} {name}")
    }
}

/// A duration in milliseconds.
pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes of disk the image really occupies, as text (`unknown` where not known).
pub(super) fn disk_usage(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(path) {
            return size(meta.blocks() * 512);
        }
    }
    let _ = path;
    String::from("unknown")
}
