//! The `--json` output: the shapes scripts depend on (see README.md).

use lunsnap::{Access, HostInfo, LunInfo, LunKind, PoolInfo};
use serde::{Deserialize, Serialize};

/// One LUN of `lun list --json`.
#[derive(Serialize)]
pub struct Lun {
    pub lun: u32,
    pub size: u64,
    /// `"lun"` or `"copy"`.
    pub kind: &'static str,
    pub parent: Option<u32>,
    /// True for plain LUNs; false for a detached copy.
    pub attached: bool,
    pub reserved_bytes: u64,
    pub exclusive_bytes: u64,
    pub shared_bytes: u64,
    pub created_generation: u64,
    pub attached_generation: u64,
    /// False while the LUN is offline (I/O refused).
    pub online: bool,
    /// Bytes lost to metadata damage (`repair` could not read their mapping back):
    /// they read as errors until written or discarded. 0 unless repaired.
    pub lost_bytes: u64,
    /// The hosts granted access to the LUN, by host id.
    pub grants: Vec<Grant>,
}

impl Lun {
    /// The object for `l`, whose grants are `grants`.
    pub fn new(l: &LunInfo, grants: &[(u64, Access)]) -> Self {
        Lun {
            lun: l.lun,
            size: l.size,
            kind: kind(l.kind),
            parent: l.parent,
            attached: l.attached,
            reserved_bytes: l.reserved_bytes,
            exclusive_bytes: l.exclusive_bytes,
            shared_bytes: l.shared_bytes,
            created_generation: l.created_generation,
            attached_generation: l.attached_generation,
            online: l.online,
            lost_bytes: l.lost_bytes,
            grants: grants
                .iter()
                .map(|&(h, a)| Grant {
                    host: host_id(h),
                    access: access(a),
                })
                .collect(),
        }
    }
}

/// One grant in `lun list --json`.
#[derive(Serialize)]
pub struct Grant {
    /// The host id, 16 lowercase hex digits.
    pub host: String,
    /// `"read"` or `"write"` (read-write).
    pub access: &'static str,
}

/// One host of `host list --json`.
#[derive(Serialize)]
pub struct Host {
    /// The host id, 16 lowercase hex digits.
    pub host: String,
    pub name: String,
}

impl From<&HostInfo> for Host {
    fn from(h: &HostInfo) -> Self {
        Host {
            host: host_id(h.id),
            name: h.name.clone(),
        }
    }
}

/// A host id as the tool prints it (and parses it): 16 lowercase hex digits.
pub fn host_id(id: u64) -> String {
    format!("{id:016x}")
}

/// The name of an access level, in JSON, tables and on the command line.
pub fn access(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::ReadWrite => "write",
    }
}

/// The name of a LUN kind, in JSON and in tables.
pub fn kind(k: LunKind) -> &'static str {
    match k {
        LunKind::Lun => "lun",
        LunKind::Copy => "copy",
    }
}

/// `info --json`: the pool's figures and the image file's.
#[derive(Serialize)]
pub struct Info {
    pub image: String,
    /// The image file's length.
    pub image_bytes: u64,
    /// Disk space the (sparse) image file occupies, where the platform tells.
    pub image_allocated_bytes: Option<u64>,
    pub capacity_bytes: u64,
    pub allocated_bytes: u64,
    pub reserved_bytes: u64,
    pub unreserved_bytes: u64,
    pub free_bytes: u64,
    pub metadata_used_bytes: u64,
    pub metadata_provisioned_bytes: u64,
    /// Copies of every metadata page: 1 or 2.
    pub metadata_copies: u32,
    /// Bad metadata page copies rewritten from their good copy, over the image's life
    /// (as of its last commit).
    pub healed_pages: u64,
    /// Bad copies found since the last commit, which the next commit rewrites.
    pub pending_heals: u64,
    /// The last rollback an open allowed (`--allow-rollback`); null if none.
    pub rollback: Option<Rollback>,
    pub extent_size: u32,
    /// Number of LUNs (plain and copies).
    pub luns: u32,
    pub max_luns: u32,
    pub generation: u64,
    /// Host access control on: hosts see only the LUNs they are granted.
    pub security: bool,
    /// Number of registered hosts.
    pub hosts: usize,
    /// Bytes of all LUNs lost to metadata damage (`repair` could not read their
    /// mapping back): they read as errors until written or discarded. 0 unless
    /// repaired.
    pub lost_bytes: u64,
    /// Bytes of data that dropped mappings (deleted LUNs, detached or refreshed
    /// copies, restored parents) still hold in the free queue: counted in
    /// `allocated_bytes` until freed (`lunsnap reclaim`, any change, or `serve` in the
    /// background). 0 when nothing waits.
    pub pending_bytes: u64,
    /// Entries in the free queue (dropped mappings, and parts of them); 0 when
    /// nothing waits.
    pub reclaim_queue: u64,
}

impl Info {
    /// The figures of pool `p`, with the image file's and the access-control state
    /// (`security` on or off, `hosts` registered).
    pub fn new(
        image: String,
        image_bytes: u64,
        allocated: Option<u64>,
        p: &PoolInfo,
        security: bool,
        hosts: usize,
        lost_bytes: u64,
    ) -> Self {
        Info {
            image,
            image_bytes,
            image_allocated_bytes: allocated,
            capacity_bytes: p.capacity_bytes,
            allocated_bytes: p.allocated_bytes,
            reserved_bytes: p.reserved_bytes,
            unreserved_bytes: p.unreserved_bytes,
            free_bytes: p.free_bytes,
            metadata_used_bytes: p.metadata_used_bytes,
            metadata_provisioned_bytes: p.metadata_provisioned_bytes,
            metadata_copies: p.metadata_copies,
            healed_pages: p.healed_pages,
            pending_heals: p.pending_heals,
            rollback: p.rollback.map(|(lost, kept)| Rollback {
                lost_generation: lost,
                kept_generation: kept,
            }),
            extent_size: p.extent_size,
            luns: p.luns,
            max_luns: p.max_luns,
            generation: p.generation,
            security,
            hosts,
            lost_bytes,
            // Not in PoolInfo (it takes a walk of the mappings): the caller sets it.
            pending_bytes: 0,
            reclaim_queue: p.reclaim_queue,
        }
    }
}

/// A rollback in `info --json`: the newest commit was lost to damage, and an open
/// allowed the array to go back to the one before.
#[derive(Serialize)]
pub struct Rollback {
    /// The generation lost.
    pub lost_generation: u64,
    /// The generation opened instead.
    pub kept_generation: u64,
}

/// `check --json`.
#[derive(Serialize)]
pub struct Check {
    /// No damage and no leak (notes do not count): exit status 0.
    pub clean: bool,
    /// `"clean"`, `"leaks"` (only leaks: exit status 3) or `"damage"` (exit status 2).
    pub status: &'static str,
    /// Each violation's message once, in the order found (as before severities
    /// were added: kept for scripts that read it).
    pub violations: Vec<String>,
    /// The same violations with their severity.
    pub findings: Vec<Violation>,
    /// How many of each severity.
    pub summary: CheckSummary,
}

/// One violation of `check --json`.
#[derive(Serialize)]
pub struct Violation {
    /// `"note"` (worth knowing, nothing wrong), `"leak"` (space counted as in use
    /// that nothing references) or `"damage"`.
    pub severity: &'static str,
    /// What is wrong, as `check` prints it after its severity.
    pub message: String,
}

/// The counts of `check --json`.
#[derive(Serialize)]
pub struct CheckSummary {
    pub notes: usize,
    pub leaks: usize,
    pub damage: usize,
}

/// A metadata page with no good copy left, in `scrub --json`.
#[derive(Serialize)]
pub struct LostPage {
    /// Its address, in 4 KiB pages from the start of the image.
    pub page: u64,
    /// Why its copy is bad.
    pub error: String,
}

/// One range of `map --json`, in the manner of `qemu-img map --output=json`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the LUN.
    pub start: u64,
    pub length: u64,
    /// True where the LUN maps data; false for a hole.
    pub data: bool,
    /// True for a hole that reads as zeros (neither data nor lost).
    pub zero: bool,
    /// True where another LUN maps the same data (a copy and its parent before either
    /// wrote there); false for holes.
    pub shared: bool,
    /// True where the contents were lost to metadata damage (`repair` could not read
    /// their mapping back): reads fail until the range is written or discarded.
    pub lost: bool,
}

/// One range of `diff --json` and of the FILE.ranges of `read --changed-since`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Byte offset: in the LUNs (`diff`), in FILE (FILE.ranges).
    pub start: u64,
    pub length: u64,
}

impl Span {
    /// Where the range ends (exclusive); saturates rather than wraps.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.length)
    }
}

/// `diff --json`, and the FILE.ranges that `read --changed-since` writes and `write
/// --ranges` reads.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    /// In order, none overlapping, adjacent ones merged.
    pub ranges: Vec<Span>,
    /// The sum of their lengths.
    pub total_bytes: u64,
}

impl Ranges {
    /// The list of `spans`, with their total.
    pub fn new(spans: Vec<Span>) -> Self {
        let total_bytes = spans.iter().map(|s| s.length).sum();
        Ranges {
            ranges: spans,
            total_bytes,
        }
    }
}

/// Pretty JSON followed by a newline.
pub fn render<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs cannot fail; fall back to null all the same.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| String::from("null"));
    s.push('\n');
    s
}
