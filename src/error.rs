//! The crate's error type: one variant per cause, each with a message a user can act on.

use core::fmt;

use crate::device::DeviceErrorKind;

/// Everything that can go wrong in the storage engine and the array.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The block device reported an error.
    Device(DeviceErrorKind),
    /// The device's block size is not a power of two between 512 and 4096 bytes.
    UnsupportedBlockSize(u32),
    /// The device's block size is not the one the array was formatted with: open it
    /// with that block size.
    BlockSizeMismatch {
        /// The block size recorded at format.
        formatted: u32,
        /// The block size the device was opened with.
        device: u32,
    },
    /// The device is too small for the requested layout.
    DeviceTooSmall {
        /// Bytes the layout needs.
        needed: u64,
        /// Bytes the device has.
        available: u64,
    },
    /// A format or open option is out of range; the text says which and why.
    InvalidOptions(&'static str),
    /// A caller-supplied argument is invalid; the text says which and why.
    InvalidArgument(&'static str),
    /// Neither superblock slot holds a lunsnap superblock: the device was never formatted.
    NotFormatted,
    /// The superblock was written in another on-disk format version than this
    /// build's.
    UnsupportedVersion(u32),
    /// Both copies of the superblock slot that may hold the newest commit are
    /// damaged: opening would roll the array back. Opening with `allow_rollback`
    /// accepts that (the rollback is recorded and reported).
    CommitLost {
        /// The generation that cannot be read.
        lost: u64,
        /// The newest generation that can: what a rollback would open.
        kept: u64,
        /// True when a damaged copy still names the lost generation; false when it
        /// may have held an older one instead.
        certain: bool,
    },
    /// The superblock requires features this build does not know (bit mask of them).
    IncompatibleFeatures(u64),
    /// A metadata page failed its checksum: the medium corrupted it.
    Checksum {
        /// Metadata page address (in 4 KiB pages).
        addr: u64,
    },
    /// A metadata page is well-formed but not the one expected at this place
    /// (wrong magic, kind, address or transaction): a misdirected or stale write.
    Misplaced {
        /// Address that was read.
        addr: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// Metadata is structurally inconsistent (a bad pointer, count or size).
    Corrupt {
        /// Address of the offending block, or 0 when none applies.
        addr: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// No free metadata page is left. Format with more metadata space.
    MetadataSpaceExhausted,
    /// No free data extent is left.
    DataSpaceExhausted,
    /// A reference count would exceed its maximum.
    RefcountOverflow {
        /// Block or extent whose count overflowed.
        addr: u64,
    },
    /// A previous device error or failed commit left this handle unusable for
    /// changes; reopen the device to recover the last committed state.
    Poisoned,
    /// The device holds a lunsnap engine but no array (its array header is missing).
    NotAnArray,
    /// A LUN number is not below the array's maximum number of LUNs.
    LunOutOfRange {
        /// The number given.
        lun: u32,
        /// The array's limit (numbers run from 0 to `max_luns - 1`).
        max_luns: u32,
    },
    /// No LUN has this number.
    NoSuchLun(u32),
    /// The LUN number is already in use.
    LunExists(u32),
    /// A LUN size is 0, not a multiple of 512 bytes, or larger than the pool.
    InvalidLunSize {
        /// The size given, in bytes.
        size: u64,
        /// Why it was refused.
        why: &'static str,
    },
    /// Not enough unreserved space in the pool for the LUN's full-size reservation.
    NoSpace {
        /// Bytes the operation must reserve.
        needed: u64,
        /// Bytes still unreserved.
        available: u64,
    },
    /// The operation needs a copy, and this LUN is a plain LUN.
    NotACopy(u32),
    /// The LUN is a detached copy: it has no data and refuses I/O until attached.
    Detached(u32),
    /// The copy's parent was deleted (the copy was orphaned), so it cannot be
    /// attached or restored.
    ParentGone(u32),
    /// The copy's parent is itself a detached copy, so it has no image to copy.
    ParentDetached(u32),
    /// The LUN still has copies; delete them first or ask to orphan them.
    HasCopies {
        /// The LUN that was to be deleted.
        lun: u32,
        /// How many copies name it as their parent.
        copies: u32,
    },
    /// An I/O range does not lie within the LUN.
    OutOfRange {
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// The LUN's size in bytes.
        size: u64,
    },
    /// No host is registered with this id.
    NoSuchHost(u64),
    /// A host with this id is already registered.
    HostExists(u64),
    /// The array already has the most hosts it can register.
    TooManyHosts {
        /// The limit.
        max: u32,
    },
    /// The host has no grant on the LUN, so there is nothing to revoke.
    NotGranted {
        /// The LUN.
        lun: u32,
        /// The host.
        host: u64,
    },
    /// The host may read the LUN but not write it.
    ReadOnlyAccess {
        /// The LUN.
        lun: u32,
        /// The host.
        host: u64,
    },
    /// The LUN is offline: I/O is refused until it is brought online.
    Offline(u32),
    /// Part of the range read was lost to metadata damage: `repair` could not read
    /// its mapping back. It reads as this error until written or discarded.
    LostData {
        /// The LUN.
        lun: u32,
        /// Byte offset of the first lost byte the read touches.
        offset: u64,
        /// Lost bytes from there that the read touches.
        len: u64,
    },
    /// An I/O offset or length is not a multiple of the 512-byte sector.
    Misaligned {
        /// Byte offset of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Device(k) => write!(f, "device error: {k}"),
            Error::UnsupportedBlockSize(b) => write!(
                f,
                "unsupported device block size {b}: must be a power of two from 512 to 4096"
            ),
            Error::BlockSizeMismatch { formatted, device } => write!(
                f,
                "the array was formatted on {formatted}-byte blocks but the device was opened \
                 with {device}-byte blocks: open it with a block size of {formatted}"
            ),
            Error::DeviceTooSmall { needed, available } => write!(
                f,
                "device too small: the layout needs {needed} bytes, the device has {available}"
            ),
            Error::InvalidOptions(w) => write!(f, "invalid options: {w}"),
            Error::InvalidArgument(w) => write!(f, "invalid argument: {w}"),
            Error::NotFormatted => f.write_str("not a lunsnap device: no valid superblock found"),
            Error::UnsupportedVersion(v) if *v < crate::engine::superblock::FORMAT_VERSION => {
                write!(
                    f,
                    "on-disk format version {v} is older than this build's ({}): open it with \
                     the lunsnap that wrote it and copy the LUNs' data out",
                    crate::engine::superblock::FORMAT_VERSION
                )
            }
            Error::UnsupportedVersion(v) => write!(
                f,
                "unsupported on-disk format version {v}: upgrade lunsnap to open this device"
            ),
            Error::CommitLost {
                lost,
                kept,
                certain,
            } => write!(
                f,
                "both copies of the superblock of generation {lost} are damaged: that commit \
                 {} lost and opening would roll the array back to generation {kept}; open \
                 allowing the rollback (--allow-rollback) to accept that",
                if *certain { "is" } else { "may be" }
            ),
            Error::IncompatibleFeatures(m) => write!(
                f,
                "device uses unknown incompatible features {m:#x}: upgrade lunsnap to open it"
            ),
            Error::Checksum { addr } => write!(
                f,
                "checksum mismatch in metadata page {addr}: the metadata is corrupt"
            ),
            Error::Misplaced { addr, what } => {
                write!(
                    f,
                    "metadata page {addr} is not the block expected here: {what}"
                )
            }
            Error::Corrupt { addr, what } => {
                write!(f, "corrupt metadata at block {addr}: {what}")
            }
            Error::MetadataSpaceExhausted => {
                f.write_str("metadata space exhausted: format the device with more metadata space")
            }
            Error::DataSpaceExhausted => f.write_str("no free data extent left in the pool"),
            Error::RefcountOverflow { addr } => {
                write!(f, "reference count of block {addr} would overflow")
            }
            Error::Poisoned => {
                f.write_str("an earlier device error left this handle read-only: reopen the device")
            }
            Error::NotAnArray => {
                f.write_str("the device holds lunsnap metadata but no array: format it as an array")
            }
            Error::LunOutOfRange { lun, max_luns } => write!(
                f,
                "LUN number {lun} is out of range: this array has LUNs 0 to {}",
                max_luns.saturating_sub(1)
            ),
            Error::NoSuchLun(l) => write!(f, "no such LUN: {l}"),
            Error::LunExists(l) => write!(f, "LUN number {l} is already in use"),
            Error::InvalidLunSize { size, why } => write!(f, "invalid LUN size {size}: {why}"),
            Error::NoSpace { needed, available } => write!(
                f,
                "not enough space to reserve: {needed} bytes needed, {available} unreserved"
            ),
            Error::NotACopy(l) => write!(f, "LUN {l} is not a copy"),
            Error::Detached(l) => write!(f, "LUN {l} is a detached copy: attach it first"),
            Error::ParentGone(l) => {
                write!(
                    f,
                    "the parent of copy {l} was deleted: the copy stands alone"
                )
            }
            Error::ParentDetached(l) => write!(
                f,
                "the parent of copy {l} is a detached copy with no data: attach it first"
            ),
            Error::HasCopies { lun, copies } => write!(
                f,
                "LUN {lun} has {copies} {}: delete {} first, or delete LUN {lun} orphaning {}",
                if *copies == 1 { "copy" } else { "copies" },
                if *copies == 1 { "it" } else { "them" },
                if *copies == 1 {
                    "its copy"
                } else {
                    "its copies"
                },
            ),
            Error::OutOfRange { offset, len, size } => write!(
                f,
                "I/O of {len} bytes at offset {offset} is beyond the end of the LUN ({size} bytes)"
            ),
            Error::NoSuchHost(h) => write!(f, "no such host: {h:016x}"),
            Error::HostExists(h) => write!(f, "host {h:016x} is already registered"),
            Error::TooManyHosts { max } => {
                write!(f, "the array already has {max} hosts: remove one first")
            }
            Error::NotGranted { lun, host } => {
                write!(f, "host {host:016x} has no grant on LUN {lun}")
            }
            Error::ReadOnlyAccess { lun, host } => write!(
                f,
                "host {host:016x} may only read LUN {lun}: writing needs a read-write grant"
            ),
            Error::Offline(l) => write!(f, "LUN {l} is offline: bring it online first"),
            Error::LostData { lun, offset, len } => write!(
                f,
                "{len} bytes of LUN {lun} at offset {offset} were lost to metadata damage \
                 (repair could not read their mapping back): write or discard them to use \
                 them again"
            ),
            Error::Misaligned { offset, len } if offset % 512 != 0 => write!(
                f,
                "the offset {offset} is not a multiple of 512: LUNs are read and written in \
                 whole 512-byte sectors"
            ),
            Error::Misaligned { len, .. } => write!(
                f,
                "the length {len} is not a multiple of 512: LUNs are read and written in \
                 whole 512-byte sectors"
            ),
        }
    }
}

impl core::error::Error for Error {}

impl From<DeviceErrorKind> for Error {
    fn from(k: DeviceErrorKind) -> Self {
        Error::Device(k)
    }
}

impl Error {
    /// True for errors that reflect damaged or hostile metadata on the device.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Checksum { .. }
                | Error::Misplaced { .. }
                | Error::Corrupt { .. }
                | Error::CommitLost { .. }
        )
    }

    pub(crate) fn corrupt(addr: u64, what: &'static str) -> Self {
        Error::Corrupt { addr, what }
    }
}

/// The error of [`Array::close`](crate::Array::close): the final commit failed. The
/// device is handed back with the error; reopening it finds the last commit.
pub struct CloseError<D> {
    /// Why the commit failed.
    pub error: Error,
    /// The device, as the failed commit left it.
    pub device: D,
}

impl<D> fmt::Debug for CloseError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<D> fmt::Display for CloseError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "closing the array failed: {}", self.error)
    }
}

impl<D> core::error::Error for CloseError<D> {}

impl<D> From<CloseError<D>> for Error {
    fn from(e: CloseError<D>) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn messages_name_what_is_wrong() {
        let one = Error::HasCopies { lun: 1, copies: 1 }.to_string();
        assert!(one.contains("has 1 copy: delete it first"), "{one}");
        let two = Error::HasCopies { lun: 1, copies: 2 }.to_string();
        assert!(two.contains("has 2 copies: delete them first"), "{two}");
        let m = Error::Misaligned {
            offset: 100,
            len: 0,
        }
        .to_string();
        assert!(
            m.starts_with("the offset 100 is not a multiple of 512"),
            "{m}"
        );
        let m = Error::Misaligned {
            offset: 0,
            len: 100,
        }
        .to_string();
        assert!(
            m.starts_with("the length 100 is not a multiple of 512"),
            "{m}"
        );
    }
}
