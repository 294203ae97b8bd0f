//! `check` and `scrub`: is the metadata consistent, and does every metadata page still
//! have a good copy.
//!
//! `check` is an fsck, with the exit status of `qemu-img check`: 0 clean (notes, such
//! as a past rollback, do not count), 1 the check could not run, 2 damage found, 3 only
//! leaked space found. It opens the image read-only and changes nothing.
//!
//! `scrub` reads both copies of every metadata page in use and rewrites each bad copy
//! from its good one, durably: 0 when every page has a good copy now, 2 when some page
//! has none. It opens the image for writing (a served image: under the array lock).

use std::fmt::Write as _;
use std::path::Path;

use lunsnap::Severity;
use serde_json::json;

use crate::fail::Result;
use crate::image::{Access, Va};
use crate::json;
use crate::progress;
use crate::target::{Place, Streams};

/// Exit status of `check` when it found damage (and of `scrub` when a page has no
/// good copy left).
pub const DAMAGE: u8 = 2;
/// Exit status of `check` when it found only leaked space.
pub const LEAKS: u8 = 3;

/// Bytes of one metadata page (the unit scrub's progress counts).
const PAGE: u64 = 4096;

/// The name of a severity, in JSON and as the prefix of `check`'s lines.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Notice => "note",
        Severity::Leak => "leak",
        Severity::Damage => "damage",
    }
}

/// `n thing`, or `n things`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What `check` found: each finding once, in the order found, and the figures its
/// summary line gives.
pub struct Checked {
    /// (severity, message without its severity's label), each once.
    pub found: Vec<(Severity, String)>,
    /// LUNs in the array.
    pub luns: u32,
    /// The generation checked.
    pub generation: u64,
}

impl Checked {
    /// How many findings of severity `s`.
    fn of(&self, s: Severity) -> usize {
        self.found.iter().filter(|(x, _)| *x == s).count()
    }

    /// The exit status `check` gives for these findings, and its `status` word.
    pub fn status(&self) -> (u8, &'static str) {
        match (self.of(Severity::Damage), self.of(Severity::Leak)) {
            (0, 0) => (0, "clean"),
            (0, _) => (LEAKS, "leaks"),
            _ => (DAMAGE, "damage"),
        }
    }

    /// `check --json`'s object.
    pub fn json(&self) -> json::Check {
        let (code, status) = self.status();
        let findings: Vec<json::Violation> = self
            .found
            .iter()
            .map(|(s, m)| json::Violation {
                severity: severity(*s),
                message: m.clone(),
            })
            .collect();
        json::Check {
            clean: code == 0,
            status,
            violations: self.found.iter().map(|(_, m)| m.clone()).collect(),
            findings,
            summary: json::CheckSummary {
                notes: self.of(Severity::Notice),
                leaks: self.of(Severity::Leak),
                damage: self.of(Severity::Damage),
            },
        }
    }

    /// `check`'s lines: each finding with its label, then the summary of `path`.
    pub fn text(&self, path: &Path, out: &mut String) {
        for (s, m) in &self.found {
            let _ = writeln!(out, "{}: {m}", severity(*s));
        }
        let luns = count(self.luns as usize, "LUN", "LUNs");
        let generation = self.generation;
        let (damage, leaks) = (self.of(Severity::Damage), self.of(Severity::Leak));
        let _ = match (damage, leaks) {
            (0, 0) => writeln!(
                out,
                "{}: clean ({luns}, generation {generation})",
                path.display()
            ),
            (0, _) => writeln!(
                out,
                "{}: {} found: space counted as in use by references that do not exist (it \
                 is wasted; no data is wrong) ({luns}, generation {generation})",
                path.display(),
                count(leaks, "leak", "leaks"),
            ),
            (_, 0) => writeln!(
                out,
                "{}: damaged: {} found ({luns}, generation {generation})",
                path.display(),
                count(damage, "problem", "problems"),
            ),
            (_, _) => writeln!(
                out,
                "{}: damaged: {} and {} found ({luns}, generation {generation})",
                path.display(),
                count(damage, "problem", "problems"),
                count(leaks, "leak", "leaks"),
            ),
        };
    }
}

/// Checks the open array `va`: each finding once, in the order found.
pub fn checked(va: &mut Va) -> Result<Checked> {
    let all: Vec<(Severity, String)> = va
        .check()?
        .iter()
        .map(|v| {
            let s = v.severity();
            let text = v.to_string();
            // A notice may name itself already ("note: ..."): it is labelled when
            // printed.
            let text = match text.strip_prefix(&format!("{}: ", severity(s))) {
                Some(rest) => rest.to_string(),
                None => text,
            };
            (s, text)
        })
        .collect();
    let mut found: Vec<(Severity, String)> = Vec::with_capacity(all.len());
    for f in all {
        if !found.contains(&f) {
            found.push(f);
        }
    }
    let p = va.pool_info();
    Ok(Checked {
        found,
        luns: p.luns,
        generation: p.generation,
    })
}

/// `check IMAGE [--json]`
pub fn check(place: &Place, path: &Path, as_json: bool, out: &mut String) -> Result<u8> {
    let mut t = place.open(path, Access::Read)?;
    let c = t.with(checked)?;
    let (code, _) = c.status();
    if as_json {
        out.push_str(&json::render(&c.json()));
    } else {
        c.text(path, out);
    }
    Ok(code)
}

/// `scrub IMAGE [--json]`
pub fn scrub(
    place: &Place,
    io: &mut dyn Streams,
    path: &Path,
    as_json: bool,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Write)?;
    let (show, text) = io.progress();
    let (report, healed, p) = t.with(|va: &mut Va| {
        let before = va.pool_info().healed_pages;
        let mut bar: Option<progress::Meter> = None;
        let report = va.scrub(|done, total| {
            bar.get_or_insert_with(|| {
                progress::meter(
                    Some(total.saturating_mul(PAGE)),
                    "scrub",
                    show,
                    text.clone(),
                )
            })
            .set_position(done.saturating_mul(PAGE));
        })?;
        if let Some(b) = &mut bar {
            b.finish();
        }
        let after = va.pool_info();
        // The copies the scrub rewrote, and those reads had found bad before it (its
        // first commit rewrites them): the array's running count says both.
        let healed = after.healed_pages.saturating_sub(before).max(report.healed);
        Ok((report, healed, after))
    })?;
    t.commit()?;
    // Each page once, in the order found.
    let mut lost: Vec<(u64, String)> = Vec::with_capacity(report.lost.len());
    for l in &report.lost {
        let e = (l.addr, l.error.to_string());
        if !lost.contains(&e) {
            lost.push(e);
        }
    }
    let more = report.lost_count.saturating_sub(report.lost.len() as u64);
    let lost_count = lost.len() as u64 + more;
    let code = if lost_count == 0 { 0 } else { DAMAGE };
    if as_json {
        let pages: Vec<json::LostPage> = lost
            .iter()
            .map(|(addr, error)| json::LostPage {
                page: *addr,
                error: error.clone(),
            })
            .collect();
        let v = json!({"scrubbed": {
            "image": path.to_string_lossy(),
            "pages": report.pages,
            "metadata_copies": p.metadata_copies,
            "healed": healed,
            "healthy": lost_count == 0,
            "lost_count": lost_count,
            "lost": pages,
        }});
        out.push_str(&json::render(&v));
        return Ok(code);
    }
    for (addr, error) in &lost {
        let _ = writeln!(out, "metadata page {addr}: no good copy left: {error}");
    }
    if more > 0 {
        let _ = writeln!(
            out,
            "... and {more} more {} with no good copy left (the first {} are listed)",
            if more == 1 { "page" } else { "pages" },
            lost.len()
        );
    }
    let read = if p.metadata_copies >= 2 {
        "both copies of each"
    } else {
        "one copy of each, two of the superblocks: a damaged page cannot be healed"
    };
    let end = if lost_count == 0 {
        String::from("every page has a good copy")
    } else {
        format!(
            "{} no good copy left: the image is damaged (`lunsnap check` tells what it \
             affects)",
            match lost_count {
                1 => String::from("1 page has"),
                n => format!("{n} pages have"),
            }
        )
    };
    let _ = writeln!(
        out,
        "scrubbed {}: read {} ({read}), healed {}; {end}",
        path.display(),
        count(report.pages as usize, "metadata page", "metadata pages"),
        count(healed as usize, "bad copy", "bad copies"),
    );
    Ok(code)
}
