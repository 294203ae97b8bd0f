//! Plain C structs: options in, information out.
//!
//! The structs that may grow (options, device callbacks, LUN and pool information,
//! reclaim statistics, scrub and repair reports) start with `size_t struct_size` (see
//! [`crate::sized`]); the list items (map, diff and lost ranges, grants) are
//! frozen: arrays of them cannot grow without breaking their stride, so richer
//! items would come with new types and functions.

#![allow(non_camel_case_types)]

use core::mem::size_of;

use lunsnap::{
    Access, DiffRange, LunInfo, LunKind, MapRange, PoolInfo, ReclaimStats, RepairReport,
    ScrubReport, Severity,
};

use crate::sized::sized_struct;

/// Options for the `lunsnap_format_*` functions and `lunsnap_min_device_bytes`;
/// start from `lunsnap_format_options_init(&opts, sizeof opts)`. A field this
/// struct lacks (a program built against an older header) takes its default.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_format_options {
    /// `sizeof(lunsnap_format_options)` as the caller's program knows it (set by
    /// `lunsnap_format_options_init`).
    pub struct_size: usize,
    /// Data extent size in bytes: a power of two from 4096 to 1048576 (default 16384).
    pub extent_size: u32,
    /// LUN numbers run from 0 to `max_luns - 1` (1 to 1048576; default 1024).
    pub max_luns: u32,
    /// Metadata cache budget in bytes (default 4 MiB).
    pub cache_bytes: u64,
    /// An id stored in the superblock.
    pub array_id: [u8; 16],
    /// Copies of every metadata page: 1 or 2 (default 2). With two, a page whose
    /// copy is damaged is read from the other and rewritten (healed) by the next
    /// commit or by `lunsnap_scrub`; the second copies take the metadata area's
    /// size again at the device's end. The superblock always has two copies. Any
    /// other value is refused with `LUNSNAP_RESULT_INVALID_OPTIONS`.
    pub metadata_copies: u32,
}

sized_struct!(input lunsnap_format_options {
    extent_size,
    max_luns,
    cache_bytes,
    array_id,
    metadata_copies
});
sized_struct!(output lunsnap_format_options {
    extent_size,
    max_luns,
    cache_bytes,
    array_id,
    metadata_copies
});

/// Options for the `lunsnap_open_*` functions; start from
/// `lunsnap_open_options_init(&opts, sizeof opts)`. A field this struct lacks takes
/// its default.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_open_options {
    /// `sizeof(lunsnap_open_options)` as the caller's program knows it (set by
    /// `lunsnap_open_options_init`).
    pub struct_size: usize,
    /// Metadata cache budget in bytes (default 4 MiB).
    pub cache_bytes: u64,
    /// 0 (the default): when both copies of the superblock that may hold the
    /// newest commit are damaged, the open fails with
    /// `LUNSNAP_RESULT_COMMIT_LOST` rather than silently open an older commit.
    /// 1: open the newest commit that can be read instead (a rollback), recorded
    /// in the array and reported from then on (`lunsnap_pool_info`'s
    /// `rollback_lost_generation` and `rollback_kept_generation`, a
    /// `LUNSNAP_SEVERITY_NOTICE` from `lunsnap_check`). The handle keeps the
    /// setting for `lunsnap_reopen`. Any other value is refused with
    /// `LUNSNAP_RESULT_INVALID_OPTIONS`.
    pub allow_rollback: u8,
}

sized_struct!(input lunsnap_open_options {
    cache_bytes,
    allow_rollback
});
sized_struct!(output lunsnap_open_options {
    cache_bytes,
    allow_rollback
});

/// What a LUN is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lunsnap_lun_kind {
    /// A plain LUN.
    Lun = 0,
    /// A business copy.
    Copy = 1,
}

/// What a host may do with a LUN (`lunsnap_grant`). Functions take it as a
/// `uint32_t`: any other value is refused with `LUNSNAP_RESULT_INVALID_ARGUMENT`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lunsnap_access {
    /// Discover and read the LUN.
    Read = 1,
    /// Discover, read and write the LUN.
    ReadWrite = 2,
}

impl lunsnap_access {
    /// The access a C caller's value names, if any.
    pub(crate) fn from_c(v: u32) -> Option<Access> {
        match v {
            x if x == lunsnap_access::Read as u32 => Some(Access::Read),
            x if x == lunsnap_access::ReadWrite as u32 => Some(Access::ReadWrite),
            _ => None,
        }
    }
}

/// Everything known about one LUN (`lunsnap_get_lun_info`). The caller sets
/// `struct_size`; the library fills the fields inside it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_lun_info {
    /// `sizeof(lunsnap_lun_info)` as the caller's program knows it: set it before
    /// the call (the library never writes past it, and leaves it unchanged).
    pub struct_size: usize,
    /// The LUN number.
    pub lun: u32,
    /// Plain LUN or copy.
    pub kind: lunsnap_lun_kind,
    /// Size in bytes.
    pub size: u64,
    /// 1 if `parent` is meaningful (a copy whose parent exists), else 0.
    pub has_parent: u8,
    /// 0 for a detached copy (no data, I/O refused), else 1.
    pub attached: u8,
    /// The parent LUN when `has_parent` is 1.
    pub parent: u32,
    /// Generation of the commit that created the LUN.
    pub created_generation: u64,
    /// Generation of the commit that last attached the copy (0: never).
    pub attached_generation: u64,
    /// Pool bytes reserved for it (0 when detached).
    pub reserved_bytes: u64,
    /// Bytes of extents only this LUN maps.
    pub exclusive_bytes: u64,
    /// Bytes of extents this LUN shares with another LUN.
    pub shared_bytes: u64,
    /// 1 if the LUN is online, 0 if it is offline (I/O refused with
    /// `LUNSNAP_RESULT_OFFLINE`).
    pub online: u8,
    /// Bytes of the LUN lost to metadata damage (a repair could not read their
    /// mapping back): they read as `LUNSNAP_RESULT_LOST_DATA` until written or
    /// discarded (`lunsnap_lost_ranges` lists them). 0 unless the array was repaired.
    pub lost_bytes: u64,
}

sized_struct!(output lunsnap_lun_info {
    lun,
    kind,
    size,
    has_parent,
    attached,
    parent,
    created_generation,
    attached_generation,
    reserved_bytes,
    exclusive_bytes,
    shared_bytes,
    online,
    lost_bytes
});

impl From<LunInfo> for lunsnap_lun_info {
    fn from(i: LunInfo) -> Self {
        lunsnap_lun_info {
            struct_size: size_of::<lunsnap_lun_info>(),
            lun: i.lun,
            kind: match i.kind {
                LunKind::Lun => lunsnap_lun_kind::Lun,
                LunKind::Copy => lunsnap_lun_kind::Copy,
            },
            size: i.size,
            has_parent: u8::from(i.parent.is_some()),
            attached: u8::from(i.attached),
            parent: i.parent.unwrap_or(0),
            created_generation: i.created_generation,
            attached_generation: i.attached_generation,
            reserved_bytes: i.reserved_bytes,
            exclusive_bytes: i.exclusive_bytes,
            shared_bytes: i.shared_bytes,
            online: u8::from(i.online),
            lost_bytes: i.lost_bytes,
        }
    }
}

/// Pool accounting (`lunsnap_get_pool_info`). The caller sets `struct_size`; the
/// library fills the fields inside it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_pool_info {
    /// `sizeof(lunsnap_pool_info)` as the caller's program knows it: set it before
    /// the call (the library never writes past it, and leaves it unchanged).
    pub struct_size: usize,
    /// Bytes of data the pool can hold for LUNs.
    pub capacity_bytes: u64,
    /// Bytes of data extents in use.
    pub allocated_bytes: u64,
    /// Bytes reserved by the LUNs that are not detached.
    pub reserved_bytes: u64,
    /// Bytes not reserved.
    pub unreserved_bytes: u64,
    /// Bytes of data extents not in use.
    pub free_bytes: u64,
    /// Bytes of metadata pages in use on the device, every copy and the four
    /// superblock pages (two slots, two copies each) included: never 0.
    pub metadata_used_bytes: u64,
    /// Bytes of metadata provisioned at format (sized for the worst case), every
    /// copy and the four superblock pages included.
    pub metadata_provisioned_bytes: u64,
    /// Generation of the newest commit.
    pub generation: u64,
    /// Data extent size in bytes.
    pub extent_size: u32,
    /// Number of LUNs.
    pub luns: u32,
    /// LUN numbers run from 0 to `max_luns - 1`.
    pub max_luns: u32,
    /// Copies of every metadata page: 1 or 2 (`lunsnap_format_options`).
    pub metadata_copies: u32,
    /// Metadata page copies found bad and rewritten from their good copy, over the
    /// array's life (as of the last commit).
    pub healed_pages: u64,
    /// Bad copies found since the last commit (a read fell back to the other
    /// copy), which the next commit (`lunsnap_flush`, any change) rewrites.
    pub pending_heals: u64,
    /// The generation lost by the last rollback an open allowed
    /// (`lunsnap_open_options.allow_rollback`); 0 if the array never lost a commit.
    pub rollback_lost_generation: u64,
    /// The generation that open used instead (the one before the lost one); 0 if
    /// the array never lost a commit.
    pub rollback_kept_generation: u64,
    /// Entries in the free queue: mappings dropped by `lunsnap_delete`,
    /// `lunsnap_detach`, `lunsnap_attach`, `lunsnap_attach_many` and
    /// `lunsnap_restore`, and parts of them, that wait to be freed
    /// (`lunsnap_reclaim`); 0 when nothing waits. The data they alone hold still
    /// counts in `allocated_bytes` (`lunsnap_pending_bytes` says how much).
    pub reclaim_queue: u64,
}

sized_struct!(output lunsnap_pool_info {
    capacity_bytes,
    allocated_bytes,
    reserved_bytes,
    unreserved_bytes,
    free_bytes,
    metadata_used_bytes,
    metadata_provisioned_bytes,
    generation,
    extent_size,
    luns,
    max_luns,
    metadata_copies,
    healed_pages,
    pending_heals,
    rollback_lost_generation,
    rollback_kept_generation,
    reclaim_queue
});

impl From<PoolInfo> for lunsnap_pool_info {
    fn from(p: PoolInfo) -> Self {
        lunsnap_pool_info {
            struct_size: size_of::<lunsnap_pool_info>(),
            capacity_bytes: p.capacity_bytes,
            allocated_bytes: p.allocated_bytes,
            reserved_bytes: p.reserved_bytes,
            unreserved_bytes: p.unreserved_bytes,
            free_bytes: p.free_bytes,
            metadata_used_bytes: p.metadata_used_bytes,
            metadata_provisioned_bytes: p.metadata_provisioned_bytes,
            generation: p.generation,
            extent_size: p.extent_size,
            luns: p.luns,
            max_luns: p.max_luns,
            metadata_copies: p.metadata_copies,
            healed_pages: p.healed_pages,
            pending_heals: p.pending_heals,
            rollback_lost_generation: p.rollback.map_or(0, |(lost, _)| lost),
            rollback_kept_generation: p.rollback.map_or(0, |(_, kept)| kept),
            reclaim_queue: p.reclaim_queue,
        }
    }
}

/// What `lunsnap_reclaim` did. The caller sets `struct_size`; the library fills the
/// fields inside it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_reclaim_stats {
    /// `sizeof(lunsnap_reclaim_stats)` as the caller's program knows it: set it
    /// before the call (the library never writes past it, and leaves it unchanged).
    pub struct_size: usize,
    /// Units of work done: mapping nodes visited plus data extent references
    /// released (`nodes_freed` is at most the nodes visited: a node another
    /// mapping still shares only loses a reference). At most the budget, plus the
    /// extent references of the last leaf freed: a leaf is handled whole.
    pub work: u64,
    /// Metadata pages (mapping nodes) freed.
    pub nodes_freed: u64,
    /// Data extent references released (an extent is freed when its last one goes).
    pub extent_refs: u64,
    /// Entries left in the free queue afterwards (`lunsnap_pool_info.reclaim_queue`):
    /// 0 once nothing waits.
    pub remaining: u64,
}

sized_struct!(output lunsnap_reclaim_stats {
    work,
    nodes_freed,
    extent_refs,
    remaining
});

impl From<ReclaimStats> for lunsnap_reclaim_stats {
    fn from(r: ReclaimStats) -> Self {
        lunsnap_reclaim_stats {
            struct_size: size_of::<lunsnap_reclaim_stats>(),
            work: r.work,
            nodes_freed: r.nodes_freed,
            extent_refs: r.extent_refs,
            remaining: r.remaining,
        }
    }
}

/// What `lunsnap_scrub` did. The caller sets `struct_size`; the library fills the
/// fields inside it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_scrub_report {
    /// `sizeof(lunsnap_scrub_report)` as the caller's program knows it: set it
    /// before the call (the library never writes past it, and leaves it unchanged).
    pub struct_size: usize,
    /// Metadata pages whose copies were read (the superblock copies included).
    pub pages: u64,
    /// Copies that were bad and were rewritten from their good copy, durably: those
    /// the scrub found, and those reads had found before it (pending heals, which
    /// its first commit rewrites). `lunsnap_pool_info.healed_pages` grows by this
    /// much.
    pub healed: u64,
    /// Pages with no good copy left (0: every page the array uses has a good copy
    /// now). With one metadata copy a damaged metadata page is lost (only the
    /// superblock, always in two copies, can still be healed).
    pub lost_count: u64,
    /// How many of the lost pages `lunsnap_scrub_lost` describes: the first
    /// `lost_listed` of them, at most `LUNSNAP_SCRUB_LOST_MAX` (the rest are only
    /// counted).
    pub lost_listed: u64,
}

sized_struct!(output lunsnap_scrub_report {
    pages,
    healed,
    lost_count,
    lost_listed
});

impl From<&ScrubReport> for lunsnap_scrub_report {
    fn from(r: &ScrubReport) -> Self {
        lunsnap_scrub_report {
            struct_size: size_of::<lunsnap_scrub_report>(),
            pages: r.pages,
            healed: r.healed,
            lost_count: r.lost_count,
            lost_listed: r.lost.len() as u64,
        }
    }
}

/// What a repair (`lunsnap_repair_file`, `lunsnap_repair_callbacks`) found and did.
/// The caller sets `struct_size`; the library fills the fields inside it. The
/// ranges it lost are described one by one by `lunsnap_repair_lost`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lunsnap_repair_report {
    /// `sizeof(lunsnap_repair_report)` as the caller's program knows it: set it
    /// before the call (the library never writes past it, and leaves it unchanged).
    pub struct_size: usize,
    /// The generation examined (a dry run), or the one the repair committed.
    pub generation: u64,
    /// Metadata pages with no good copy that the array's trees reach.
    pub unreadable_count: u64,
    /// LUNs whose records were kept.
    pub luns_kept: u64,
    /// Ranges of LUN numbers whose records could not be read: those LUNs, if any,
    /// are gone.
    pub lost_record_ranges: u64,
    /// LUN records read but invalid: dropped.
    pub bad_records: u64,
    /// Copies whose parent is gone: they stand alone now (attached ones as plain
    /// LUNs).
    pub orphaned: u64,
    /// LUNs whose mapping was rebuilt from its readable entries.
    pub rebuilt: u64,
    /// Hosts kept.
    pub hosts: u32,
    /// 1 when some host records could not be read or were invalid (those hosts and
    /// their grants are gone), else 0.
    pub hosts_lost: u8,
    /// 1 for a dry run (nothing was written), else 0.
    pub dry_run: u8,
    /// 1 when nothing was lost (every record, host and mapping read whole: only the
    /// reference counts were rebuilt), else 0.
    pub complete: u8,
    /// Ranges of LUNs whose mapping could not be read (`lunsnap_repair_lost`
    /// describes each): they read as `LUNSNAP_RESULT_LOST_DATA` until written or
    /// discarded.
    pub lost_ranges: u64,
    /// Bytes in those ranges, all LUNs together.
    pub lost_bytes: u64,
}

sized_struct!(output lunsnap_repair_report {
    generation,
    unreadable_count,
    luns_kept,
    lost_record_ranges,
    bad_records,
    orphaned,
    rebuilt,
    hosts,
    hosts_lost,
    dry_run,
    complete,
    lost_ranges,
    lost_bytes
});

impl From<&RepairReport> for lunsnap_repair_report {
    fn from(r: &RepairReport) -> Self {
        lunsnap_repair_report {
            struct_size: size_of::<lunsnap_repair_report>(),
            generation: r.generation,
            unreadable_count: r.unreadable_count,
            luns_kept: r.luns.len() as u64,
            lost_record_ranges: r.lost_records.len() as u64,
            bad_records: r.bad_records.len() as u64,
            orphaned: r.orphaned.len() as u64,
            rebuilt: r.rebuilt.len() as u64,
            hosts: r.hosts,
            hosts_lost: u8::from(r.hosts_lost),
            dry_run: u8::from(r.dry_run),
            complete: u8::from(r.is_complete()),
            lost_ranges: r.lost.len() as u64,
            lost_bytes: r.lost.iter().map(|&(_, _, len)| len).sum(),
        }
    }
}

/// A range of a LUN lost to metadata damage, as `lunsnap_lost_ranges` reports it.
/// A list item: its layout is frozen (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct lunsnap_lost_range {
    /// Byte offset in the LUN (a multiple of 512).
    pub offset: u64,
    /// Length in bytes (a multiple of 512, never 0).
    pub length: u64,
}

impl From<(u64, u64)> for lunsnap_lost_range {
    fn from((offset, length): (u64, u64)) -> Self {
        lunsnap_lost_range { offset, length }
    }
}

/// How much a violation `lunsnap_check` found matters (`lunsnap_check_severity`
/// gives it as a `uint32_t`): the higher, the worse.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum lunsnap_severity {
    /// Worth knowing, nothing to repair: the array was rolled back by an open that
    /// allowed it (`lunsnap_open_options.allow_rollback`).
    Notice = 1,
    /// Space counted as used that nothing references: wasted, never wrong data.
    Leak = 2,
    /// Anything else: metadata that is unreadable or inconsistent.
    Damage = 3,
}

impl From<Severity> for lunsnap_severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Notice => lunsnap_severity::Notice,
            Severity::Leak => lunsnap_severity::Leak,
            Severity::Damage => lunsnap_severity::Damage,
        }
    }
}

/// One range of a LUN, as `lunsnap_map` reports it. A list item: its layout is
/// frozen (24 bytes; richer ranges would come with a new type and new functions).
/// `lost` took a byte of the padding after `shared` in 0.2: a program built
/// against an older header never reads it and sees the same layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct lunsnap_map_range {
    /// Byte offset in the LUN (a multiple of 512).
    pub offset: u64,
    /// Length in bytes (a multiple of 512, never 0).
    pub length: u64,
    /// True when the range is mapped to data extents; false for a hole, which reads
    /// as zeros and occupies no space.
    pub data: bool,
    /// True when another LUN maps the same extents (a copy and its parent before
    /// either wrote there): a write here copies the extent first. Always false for
    /// a hole.
    pub shared: bool,
    /// True when the range's contents were lost to metadata damage (see
    /// `lunsnap_repair_file` and `lunsnap_lost_ranges`): reads of it fail with
    /// `LUNSNAP_ERR_LOST_DATA` until it is written or discarded, whatever `data`
    /// says (`data` and `shared` describe the mapping, usually a hole there).
    /// Boundaries of lost ranges fall on sectors, not extents.
    pub lost: bool,
}

impl From<MapRange> for lunsnap_map_range {
    fn from(r: MapRange) -> Self {
        lunsnap_map_range {
            offset: r.offset,
            length: r.length,
            data: r.data,
            shared: r.shared,
            lost: r.lost,
        }
    }
}

/// A range where two LUNs may differ, as `lunsnap_diff` reports it. A list item:
/// its layout is frozen (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct lunsnap_diff_range {
    /// Byte offset (the same in both LUNs; a multiple of 512).
    pub offset: u64,
    /// Length in bytes (a multiple of 512, never 0).
    pub length: u64,
}

impl From<DiffRange> for lunsnap_diff_range {
    fn from(r: DiffRange) -> Self {
        lunsnap_diff_range {
            offset: r.offset,
            length: r.length,
        }
    }
}

/// One grant on a LUN, as `lunsnap_grants` reports it. A list item: its layout is
/// frozen (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct lunsnap_host_grant {
    /// The host's id.
    pub host: u64,
    /// What it may do (a `lunsnap_access` value).
    pub access: lunsnap_access,
    /// Always 0 (the layout's padding, made explicit).
    pub reserved: u32,
}

impl From<(u64, Access)> for lunsnap_host_grant {
    fn from((host, a): (u64, Access)) -> Self {
        lunsnap_host_grant {
            host,
            access: match a {
                Access::Read => lunsnap_access::Read,
                Access::ReadWrite => lunsnap_access::ReadWrite,
            },
            reserved: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_values_from_c() {
        assert_eq!(lunsnap_access::from_c(1), Some(Access::Read));
        assert_eq!(lunsnap_access::from_c(2), Some(Access::ReadWrite));
        for v in [0, 3, 4, 0x100, u32::MAX] {
            assert_eq!(lunsnap_access::from_c(v), None);
        }
    }

    #[test]
    fn range_layouts_are_the_documented_c_ones() {
        use core::mem::{align_of, offset_of, size_of};
        assert_eq!(offset_of!(lunsnap_map_range, offset), 0);
        assert_eq!(offset_of!(lunsnap_map_range, length), 8);
        assert_eq!(offset_of!(lunsnap_map_range, data), 16);
        assert_eq!(offset_of!(lunsnap_map_range, shared), 17);
        assert_eq!(
            (
                size_of::<lunsnap_map_range>(),
                align_of::<lunsnap_map_range>()
            ),
            (24, 8)
        );
        assert_eq!(offset_of!(lunsnap_diff_range, length), 8);
        assert_eq!(size_of::<lunsnap_diff_range>(), 16);
        assert_eq!(offset_of!(lunsnap_host_grant, access), 8);
        assert_eq!(size_of::<lunsnap_host_grant>(), 16);
        assert_eq!(offset_of!(lunsnap_lost_range, length), 8);
        assert_eq!(size_of::<lunsnap_lost_range>(), 16);
    }

    /// Fields are only ever appended: those of 0.2.0 keep their offsets, the new
    /// ones start at 0.2.0's sizes (format options 40 bytes, open options 16, pool
    /// information 88, whose last 4 bytes were padding and now hold
    /// `metadata_copies`: inside an old caller's struct, so still written), and
    /// `reclaim_queue` after the pool information's 120 bytes that came next.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn appended_fields_follow_the_old_layout() {
        use core::mem::{offset_of, size_of};
        assert_eq!(offset_of!(lunsnap_format_options, array_id), 24);
        assert_eq!(offset_of!(lunsnap_format_options, metadata_copies), 40);
        assert_eq!(size_of::<lunsnap_format_options>(), 48);
        assert_eq!(offset_of!(lunsnap_open_options, allow_rollback), 16);
        assert_eq!(offset_of!(lunsnap_pool_info, max_luns), 80);
        assert_eq!(offset_of!(lunsnap_pool_info, metadata_copies), 84);
        assert_eq!(offset_of!(lunsnap_pool_info, healed_pages), 88);
        assert_eq!(offset_of!(lunsnap_pool_info, pending_heals), 96);
        assert_eq!(offset_of!(lunsnap_pool_info, rollback_lost_generation), 104);
        assert_eq!(offset_of!(lunsnap_pool_info, rollback_kept_generation), 112);
        // Background freeing: appended after the 120 bytes the struct had before.
        assert_eq!(offset_of!(lunsnap_pool_info, reclaim_queue), 120);
        assert_eq!(size_of::<lunsnap_pool_info>(), 128);
        assert_eq!(offset_of!(lunsnap_reclaim_stats, work), 8);
        assert_eq!(offset_of!(lunsnap_reclaim_stats, remaining), 32);
        assert_eq!(size_of::<lunsnap_reclaim_stats>(), 40);
        assert_eq!(size_of::<lunsnap_scrub_report>(), 40);
        // 0.2.0's lun_info was 80 bytes (its last 7 padding, after `online`).
        assert_eq!(offset_of!(lunsnap_lun_info, online), 72);
        assert_eq!(offset_of!(lunsnap_lun_info, lost_bytes), 80);
        assert_eq!(size_of::<lunsnap_lun_info>(), 88);
        assert_eq!(offset_of!(lunsnap_repair_report, hosts), 64);
        assert_eq!(offset_of!(lunsnap_repair_report, lost_ranges), 72);
        assert_eq!(size_of::<lunsnap_repair_report>(), 88);
    }

    #[test]
    fn pool_info_reports_a_rollback_as_two_generations() {
        let mut p = PoolInfo {
            capacity_bytes: 1,
            allocated_bytes: 2,
            reserved_bytes: 3,
            unreserved_bytes: 4,
            free_bytes: 5,
            metadata_used_bytes: 6,
            metadata_provisioned_bytes: 7,
            metadata_copies: 2,
            healed_pages: 8,
            pending_heals: 9,
            rollback: None,
            extent_size: 4096,
            luns: 10,
            max_luns: 11,
            generation: 12,
            reclaim_queue: 13,
        };
        let c = lunsnap_pool_info::from(p);
        assert_eq!(
            (
                c.metadata_copies,
                c.healed_pages,
                c.pending_heals,
                c.rollback_lost_generation,
                c.rollback_kept_generation
            ),
            (2, 8, 9, 0, 0)
        );
        assert_eq!(c.reclaim_queue, 13);
        p.rollback = Some((12, 11));
        let c = lunsnap_pool_info::from(p);
        assert_eq!(
            (c.rollback_lost_generation, c.rollback_kept_generation),
            (12, 11)
        );
    }

    #[test]
    fn reclaim_stats_are_the_cores_and_written_within_the_callers_size() {
        let r = ReclaimStats {
            work: 1,
            nodes_freed: 2,
            extent_refs: 3,
            remaining: 4,
        };
        let c = lunsnap_reclaim_stats::from(r);
        assert_eq!(
            (
                c.struct_size,
                c.work,
                c.nodes_freed,
                c.extent_refs,
                c.remaining
            ),
            (size_of::<lunsnap_reclaim_stats>(), 1, 2, 3, 4)
        );
        // A caller that knows only `work` and `nodes_freed`: nothing past them.
        let mut buf = [0xAAu8; 48];
        let n = core::mem::offset_of!(lunsnap_reclaim_stats, extent_refs);
        buf[..size_of::<usize>()].copy_from_slice(&n.to_ne_bytes());
        // SAFETY: `buf` has 48 bytes; its struct_size says `n`.
        unsafe { crate::sized::put_sized(buf.as_mut_ptr().cast(), &c, "out") }.unwrap();
        let at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap());
        assert_eq!((at(8), at(16)), (1, 2));
        assert!(buf[n..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn severities_grow_with_the_core_ones() {
        let all = [Severity::Notice, Severity::Leak, Severity::Damage];
        for w in all.windows(2) {
            assert!(w[0] < w[1]);
            assert!(lunsnap_severity::from(w[0]) < lunsnap_severity::from(w[1]));
        }
        assert_eq!(lunsnap_severity::from(Severity::Notice) as u32, 1);
        assert_eq!(lunsnap_severity::from(Severity::Damage) as u32, 3);
    }

    #[test]
    fn scrub_reports_count_the_listed_pages() {
        let mut r = ScrubReport {
            pages: 40,
            healed: 3,
            ..ScrubReport::default()
        };
        let c = lunsnap_scrub_report::from(&r);
        assert_eq!(
            (c.pages, c.healed, c.lost_count, c.lost_listed),
            (40, 3, 0, 0)
        );
        r.lost.push(lunsnap::ScrubProblem {
            addr: 7,
            error: lunsnap::Error::Checksum { addr: 7 },
        });
        r.lost_count = 1500;
        let c = lunsnap_scrub_report::from(&r);
        assert_eq!((c.lost_count, c.lost_listed), (1500, 1));
    }

    #[test]
    fn growable_structs_start_with_their_size() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(lunsnap_format_options, struct_size), 0);
        assert_eq!(offset_of!(lunsnap_open_options, struct_size), 0);
        assert_eq!(offset_of!(lunsnap_lun_info, struct_size), 0);
        assert_eq!(offset_of!(lunsnap_pool_info, struct_size), 0);
        assert_eq!(offset_of!(lunsnap_reclaim_stats, struct_size), 0);
        assert_eq!(offset_of!(lunsnap_scrub_report, struct_size), 0);
        assert_eq!(offset_of!(lunsnap_repair_report, struct_size), 0);
        assert_eq!(offset_of!(crate::lunsnap_device_callbacks, struct_size), 0);
    }
}
