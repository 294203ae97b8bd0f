//! `lun list`: every LUN and copy with its figures, state and grants (and, after a
//! `repair` that lost data, the bytes each LUN lost); only those a host
//! may discover (`--as`), only the copies of one LUN (`--copies-of`), and the lineage
//! (`--tree`: each LUN with its copies indented below it, copies of copies deeper).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use lunsnap::{LunInfo, LunKind};
use serde_json::Value;

use crate::fail::Result;
use crate::image::Access;
use crate::json;
use crate::size::human;
use crate::target::Place;

/// What `lun list` is asked for.
pub struct ListSpec {
    /// `--json`
    pub json: bool,
    /// `--as HOST`
    pub host: Option<u64>,
    /// `--copies-of N`
    pub copies_of: Option<u32>,
    /// `--tree`
    pub tree: bool,
}

/// JSON trees nest at most this deep; deeper copies are listed at this depth.
const MAX_NESTING: usize = 256;

/// One LUN as listed: its figures and grants.
type Row = (LunInfo, Vec<(u64, lunsnap::Access)>);

/// `lun list IMAGE [--json] [--as HOST] [--copies-of N] [--tree]`
pub fn lun_list(place: &Place, path: &Path, spec: &ListSpec, out: &mut String) -> Result<u8> {
    let mut t = place.open(path, Access::Read)?;
    let rows: Vec<Row> = t.with(|va| {
        let mut luns = va.luns()?;
        if let Some(h) = spec.host {
            let visible = va.as_host(h).visible_luns();
            luns.retain(|l| visible.contains(&l.lun));
        }
        if let Some(n) = spec.copies_of {
            // The LUN must exist (for a host: be visible to it).
            match spec.host {
                Some(h) => va.as_host(h).lun_status(n).map(drop)?,
                None => va.lun_status(n).map(drop)?,
            }
        }
        let mut rows = Vec::with_capacity(luns.len());
        for l in luns {
            let g = va.grants(l.lun)?;
            rows.push((l, g));
        }
        Ok(rows)
    })?;
    let order = lineage(&rows, spec.copies_of, spec.tree);
    if spec.json {
        let v = if spec.tree {
            nested(&rows, &order)
        } else {
            let v: Vec<json::Lun> = order
                .iter()
                .map(|&(_, i)| json::Lun::new(&rows[i].0, &rows[i].1))
                .collect();
            serde_json::to_value(v).unwrap_or(Value::Null)
        };
        out.push_str(&json::render(&v));
        return Ok(0);
    }
    table(&rows, &order, spec.tree, out);
    Ok(0)
}

/// The rows to list, in order, each with its depth in the lineage: all in number
/// order (only the copies of `copies_of` if given); with `tree`, each LUN followed by
/// its copies, depth first (under `copies_of`: its copies, and theirs in turn).
fn lineage(rows: &[Row], copies_of: Option<u32>, tree: bool) -> Vec<(usize, usize)> {
    if !tree {
        return (0..rows.len())
            .filter(|&i| copies_of.is_none_or(|n| rows[i].0.parent == Some(n)))
            .map(|i| (0, i))
            .collect();
    }
    let index: BTreeMap<u32, usize> = rows.iter().enumerate().map(|(i, r)| (r.0.lun, i)).collect();
    let mut children: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (i, (l, _)) in rows.iter().enumerate() {
        match (l.parent, copies_of) {
            (Some(p), Some(n)) if p == n => roots.push(i),
            (Some(p), _) if index.contains_key(&p) => children.entry(p).or_default().push(i),
            // A copy whose parent is not listed (deleted, or hidden from the host)
            // stands at the top.
            (_, None) => roots.push(i),
            _ => {}
        }
    }
    let mut order = Vec::with_capacity(rows.len());
    let mut seen = HashSet::new();
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (0, i)).collect();
    while let Some((depth, i)) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        order.push((depth, i));
        if let Some(kids) = children.get(&rows[i].0.lun) {
            stack.extend(kids.iter().rev().map(|&k| (depth + 1, k)));
        }
    }
    order
}

/// The `--tree --json` array: each LUN's object with its copies nested in `copies`.
fn nested(rows: &[Row], order: &[(usize, usize)]) -> Value {
    // Open objects, outermost first; each is closed into its parent's `copies`.
    let mut open: Vec<Value> = Vec::new();
    let mut top: Vec<Value> = Vec::new();
    let close = |open: &mut Vec<Value>, top: &mut Vec<Value>| {
        if let Some(done) = open.pop() {
            match open.last_mut().and_then(|p| p.get_mut("copies")) {
                Some(Value::Array(a)) => a.push(done),
                _ => top.push(done),
            }
        }
    };
    for &(depth, i) in order {
        let depth = depth.min(MAX_NESTING);
        while open.len() > depth {
            close(&mut open, &mut top);
        }
        let mut v =
            serde_json::to_value(json::Lun::new(&rows[i].0, &rows[i].1)).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("copies".into(), Value::Array(Vec::new()));
        }
        open.push(v);
    }
    while !open.is_empty() {
        close(&mut open, &mut top);
    }
    Value::Array(top)
}

/// The table, its LUN column indented by depth for a tree.
fn table(rows: &[Row], order: &[(usize, usize)], tree: bool, out: &mut String) {
    let label = |depth: usize, lun: u32| format!("{}{lun}", "  ".repeat(depth));
    let width = order
        .iter()
        .map(|&(d, i)| label(d, rows[i].0.lun).len())
        .max()
        .unwrap_or(0)
        .max(7);
    let lun_head = if tree {
        format!("{:<width$}", "LUN")
    } else {
        format!("{:>width$}", "LUN")
    };
    // The LOST column only when a LUN listed has bytes lost to metadata damage.
    let lost = order.iter().any(|&(_, i)| rows[i].0.lost_bytes > 0);
    let lost_head = if lost {
        format!("{:>10}  ", "LOST")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{lun_head}  {:<4}  {:>10}  {:>6}  {:<8}  {:>10}  {:>10}  {:>10}  {:<6}  {lost_head}GRANTS",
        "KIND", "SIZE", "PARENT", "STATE", "RESERVED", "EXCLUSIVE", "SHARED", "ONLINE"
    );
    for &(depth, i) in order {
        let (l, g) = &rows[i];
        let lun = if tree {
            format!("{:<width$}", label(depth, l.lun))
        } else {
            format!("{:>width$}", l.lun)
        };
        let lost_cell = if !lost {
            String::new()
        } else if l.lost_bytes > 0 {
            format!("{:>10}  ", human(l.lost_bytes))
        } else {
            format!("{:>10}  ", "-")
        };
        let _ = writeln!(
            out,
            "{lun}  {:<4}  {:>10}  {:>6}  {:<8}  {:>10}  {:>10}  {:>10}  {:<6}  {lost_cell}{}",
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
