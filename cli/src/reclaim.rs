//! `reclaim`: free the space that waits in the free queue.
//!
//! `lun delete`, `copy detach`, `copy attach` (a refresh) and `copy restore` drop a
//! mapping in constant time: the array queues it, and its space is freed later, a
//! budget of work at a time. Every command of this tool that changes an image frees
//! all of it before it exits ([`Target::commit`](crate::target::Target::commit)), and
//! `lunsnap serve` frees it in the background; an image that another program left
//! with a queue (the library does not free it at once either), or a served one whose
//! queue should go now, is freed by `reclaim`: all of it, or about `--budget` units
//! of work (tree nodes visited plus extent references released).

use std::fmt::Write as _;
use std::path::Path;

use lunsnap::ReclaimStats;
use serde_json::json;

use crate::fail::Result;
use crate::image::Access;
use crate::integrity::count;
use crate::json;
use crate::size::{both, human};
use crate::target::{self, Place, DRAIN_STEP};

/// `reclaim IMAGE [--budget UNITS] [--json]`
pub fn reclaim(
    place: &Place,
    path: &Path,
    budget: Option<u64>,
    as_json: bool,
    out: &mut String,
) -> Result<u8> {
    let mut t = place.open(path, Access::Write)?;
    let served = t.is_served();
    let (before, entries) = t.with(|va| Ok((va.pending_bytes()?, va.pool_info().reclaim_queue)))?;
    let mut done = ReclaimStats {
        remaining: entries,
        ..ReclaimStats::default()
    };
    // A step at a time: on a served array, NBD clients are served in between.
    while done.remaining > 0 {
        let step = budget.map_or(DRAIN_STEP, |b| b.saturating_sub(done.work).min(DRAIN_STEP));
        if step == 0 {
            break;
        }
        let s = t.with(|va| Ok(va.reclaim(step)?))?;
        target::add(&mut done, &s);
        if s.work == 0 {
            break;
        }
    }
    let after = t.with(|va| Ok(va.pending_bytes()?))?;
    t.commit_leaving_queue()?;
    let freed = before.saturating_sub(after);
    if as_json {
        out.push_str(&json::render(&json!({"reclaimed": {
            "image": path.to_string_lossy(),
            "work": done.work,
            "nodes_freed": done.nodes_freed,
            "extent_refs": done.extent_refs,
            "bytes_freed": freed,
            "pending_bytes": after,
            "remaining": done.remaining,
        }})));
        return Ok(0);
    }
    if entries == 0 {
        let _ = writeln!(
            out,
            "nothing to reclaim in {}: no dropped mapping waits to be freed",
            path.display()
        );
        return Ok(0);
    }
    let left = match done.remaining {
        0 => String::from("nothing waits any more"),
        n => format!(
            "{} still {} ({}): {}",
            count(n as usize, "queue entry", "queue entries"),
            if n == 1 { "waits" } else { "wait" },
            human(after),
            later(served, "it")
        ),
    };
    let _ = writeln!(
        out,
        "reclaimed {}: freed {} of data ({}) and {}, in {}; {left}",
        path.display(),
        both(freed),
        count(
            done.extent_refs as usize,
            "extent reference",
            "extent references"
        ),
        count(done.nodes_freed as usize, "metadata page", "metadata pages"),
        count(done.work as usize, "unit of work", "units of work"),
    );
    Ok(0)
}

/// What frees the space still waiting (`it`): the server of a served image, in the
/// background; otherwise the next `reclaim` or change.
pub fn later(served: bool, it: &str) -> String {
    if served {
        format!("the server frees {it} in the background")
    } else {
        format!("`lunsnap reclaim` (or any change) frees {it}")
    }
}
