//! Result codes: stable numbers, never reused, each with a static message.

use lunsnap::{DeviceErrorKind, Error};

/// The result of every fallible function. `LUNSNAP_RESULT_OK` (0) is success; the
/// numbers of the others are stable and never reused.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lunsnap_result {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL (the array handle too: a NULL handle
    /// gives this code, not `LUNSNAP_RESULT_INVALID_HANDLE`).
    NullPointer = 1,
    /// The array handle is not a live handle (never returned by this library, or
    /// already freed).
    InvalidHandle = 2,
    /// An argument is out of range (`lunsnap_last_error_message` says which, and
    /// why).
    InvalidArgument = 3,
    /// A format or open option is invalid.
    InvalidOptions = 4,
    /// A string argument is not valid UTF-8 or a path cannot be used.
    InvalidPath = 5,
    /// The device reported an I/O error (or a callback returned non-zero).
    DeviceIo = 10,
    /// An access was beyond the end of the device.
    DeviceOutOfRange = 11,
    /// The device is gone (file closed, callbacks detached).
    DeviceNotConnected = 12,
    /// Another device error.
    DeviceOther = 13,
    /// The device's block size is not a power of two from 512 to 4096.
    UnsupportedBlockSize = 14,
    /// The device is too small for the array.
    DeviceTooSmall = 15,
    /// The array was formatted with another device block size than the device was
    /// opened with (the message names both): open it with the block size it was
    /// formatted with.
    BlockSizeMismatch = 16,
    /// Both copies of the superblock that may hold the newest commit are damaged:
    /// opening would roll the array back to the commit before it, so the open is
    /// refused (the message names both generations, and says whether the newer
    /// one certainly existed). Open with `lunsnap_open_options.allow_rollback` set
    /// to accept the rollback.
    CommitLost = 17,
    /// Part of the range read was lost to metadata damage: a repair
    /// (`lunsnap_repair_file`, `lunsnap_repair_callbacks`) could not read its mapping
    /// back. It reads as this error, never as zeros or stale data, until it is
    /// written or discarded (the message names the LUN, the offset and the length;
    /// `lunsnap_lost_ranges` lists a LUN's lost ranges).
    LostData = 18,
    /// The device holds no lunsnap array (never formatted).
    NotFormatted = 20,
    /// The device holds lunsnap metadata but no array.
    NotAnArray = 21,
    /// The device was written by an on-disk format version this build does not
    /// read: a newer one (upgrade lunsnap), or an older one (the message says so).
    UnsupportedVersion = 22,
    /// The device uses incompatible features this build does not know.
    IncompatibleFeatures = 23,
    /// Metadata is corrupt (checksum, misplaced block, or inconsistent structure).
    Corrupt = 24,
    /// An earlier device error left the handle refusing changes: reopen it.
    Poisoned = 25,
    /// No free metadata block is left (should be impossible: provisioned at format).
    MetadataSpaceExhausted = 26,
    /// No free data extent is left (should be impossible: sizes are reserved).
    DataSpaceExhausted = 27,
    /// A reference count would overflow.
    RefcountOverflow = 28,
    /// The LUN number is not below the array's maximum number of LUNs.
    LunOutOfRange = 30,
    /// No LUN has this number.
    NoSuchLun = 31,
    /// The LUN number is already in use.
    LunExists = 32,
    /// The LUN size is 0, not a multiple of 512, or larger than the pool.
    InvalidLunSize = 33,
    /// Not enough unreserved space for the full-size reservation.
    NoSpace = 34,
    /// The operation needs a copy; this LUN is a plain LUN.
    NotACopy = 35,
    /// The LUN is a detached copy: no data, I/O refused until attached.
    Detached = 36,
    /// The copy's parent was deleted.
    ParentGone = 37,
    /// The copy's parent is a detached copy with no data.
    ParentDetached = 38,
    /// The LUN still has copies (delete them, or ask to orphan them).
    HasCopies = 39,
    /// The I/O range is beyond the end of the LUN.
    OutOfRange = 40,
    /// The I/O offset or length is not a multiple of 512.
    Misaligned = 41,
    /// A panic was caught inside the library (a bug: please report it). The handle
    /// refuses further use.
    Panic = 50,
    /// The library failed to allocate memory.
    OutOfMemory = 51,
    /// The handle is unusable after a failed `lunsnap_reopen`: free it.
    Unusable = 52,
    /// No host is registered with this id.
    NoSuchHost = 60,
    /// A host with this id is already registered.
    HostExists = 61,
    /// The host has no grant on the LUN (nothing to revoke).
    NotGranted = 62,
    /// The host's grant on the LUN is read-only: writes are refused.
    ReadOnlyAccess = 63,
    /// The LUN is offline: I/O is refused until it is brought online.
    Offline = 64,
    /// The array already has the most hosts it can register (64).
    TooManyHosts = 65,
    /// An error this version of the C ABI does not classify.
    Other = 99,
}

impl From<&Error> for lunsnap_result {
    fn from(e: &Error) -> Self {
        match e {
            Error::Device(k) => match k {
                DeviceErrorKind::Io => R::DeviceIo,
                DeviceErrorKind::OutOfRange => R::DeviceOutOfRange,
                DeviceErrorKind::NotConnected => R::DeviceNotConnected,
                _ => R::DeviceOther,
            },
            Error::UnsupportedBlockSize(_) => R::UnsupportedBlockSize,
            Error::DeviceTooSmall { .. } => R::DeviceTooSmall,
            Error::BlockSizeMismatch { .. } => R::BlockSizeMismatch,
            Error::CommitLost { .. } => R::CommitLost,
            Error::LostData { .. } => R::LostData,
            Error::InvalidOptions(_) => R::InvalidOptions,
            Error::InvalidArgument(_) => R::InvalidArgument,
            Error::NotFormatted => R::NotFormatted,
            Error::UnsupportedVersion(_) => R::UnsupportedVersion,
            Error::IncompatibleFeatures(_) => R::IncompatibleFeatures,
            Error::Checksum { .. } | Error::Misplaced { .. } | Error::Corrupt { .. } => R::Corrupt,
            Error::MetadataSpaceExhausted => R::MetadataSpaceExhausted,
            Error::DataSpaceExhausted => R::DataSpaceExhausted,
            Error::RefcountOverflow { .. } => R::RefcountOverflow,
            Error::Poisoned => R::Poisoned,
            Error::NotAnArray => R::NotAnArray,
            Error::LunOutOfRange { .. } => R::LunOutOfRange,
            Error::NoSuchLun(_) => R::NoSuchLun,
            Error::LunExists(_) => R::LunExists,
            Error::InvalidLunSize { .. } => R::InvalidLunSize,
            Error::NoSpace { .. } => R::NoSpace,
            Error::NotACopy(_) => R::NotACopy,
            Error::Detached(_) => R::Detached,
            Error::ParentGone(_) => R::ParentGone,
            Error::ParentDetached(_) => R::ParentDetached,
            Error::HasCopies { .. } => R::HasCopies,
            Error::OutOfRange { .. } => R::OutOfRange,
            Error::Misaligned { .. } => R::Misaligned,
            Error::NoSuchHost(_) => R::NoSuchHost,
            Error::HostExists(_) => R::HostExists,
            Error::NotGranted { .. } => R::NotGranted,
            Error::ReadOnlyAccess { .. } => R::ReadOnlyAccess,
            Error::Offline(_) => R::Offline,
            Error::TooManyHosts { .. } => R::TooManyHosts,
            _ => R::Other,
        }
    }
}

impl From<Error> for lunsnap_result {
    fn from(e: Error) -> Self {
        lunsnap_result::from(&e)
    }
}

use lunsnap_result as R;

/// Every code with its message (NUL-terminated for C).
pub(crate) const MESSAGES: &[(lunsnap_result, &[u8])] = &[
    (R::Ok, b"success\0"),
    (R::NullPointer, b"a required pointer argument is NULL\0"),
    (
        R::InvalidHandle,
        b"not a live array handle (never opened, or already freed)\0",
    ),
    (R::InvalidArgument, b"an argument is out of range\0"),
    (R::InvalidOptions, b"invalid format or open options\0"),
    (
        R::InvalidPath,
        b"the path is not valid UTF-8 or cannot be used\0",
    ),
    (R::DeviceIo, b"device I/O error\0"),
    (
        R::DeviceOutOfRange,
        b"device access beyond the end of the device\0",
    ),
    (R::DeviceNotConnected, b"the device is not connected\0"),
    (R::DeviceOther, b"device error\0"),
    (
        R::UnsupportedBlockSize,
        b"unsupported device block size: must be a power of two from 512 to 4096\0",
    ),
    (R::DeviceTooSmall, b"the device is too small for an array\0"),
    (
        R::BlockSizeMismatch,
        b"the array was formatted with another device block size: open it with that one\0",
    ),
    (
        R::CommitLost,
        b"the newest commit's superblock is damaged in both copies: opening would roll the array back (allow_rollback accepts that)\0",
    ),
    (
        R::LostData,
        b"part of the range read was lost to metadata damage (a repair could not read its mapping back): write or discard it to use it again\0",
    ),
    (
        R::NotFormatted,
        b"not a lunsnap device: no valid superblock found\0",
    ),
    (
        R::NotAnArray,
        b"the device holds lunsnap metadata but no array\0",
    ),
    (
        R::UnsupportedVersion,
        b"unsupported on-disk format version (newer or older than this build reads)\0",
    ),
    (
        R::IncompatibleFeatures,
        b"the device uses unknown incompatible features\0",
    ),
    (R::Corrupt, b"corrupt metadata on the device\0"),
    (
        R::Poisoned,
        b"an earlier device error left the array read-only: reopen it\0",
    ),
    (R::MetadataSpaceExhausted, b"metadata space exhausted\0"),
    (
        R::DataSpaceExhausted,
        b"no free data extent left in the pool\0",
    ),
    (R::RefcountOverflow, b"a reference count would overflow\0"),
    (
        R::LunOutOfRange,
        b"LUN number out of range for this array\0",
    ),
    (R::NoSuchLun, b"no such LUN\0"),
    (R::LunExists, b"LUN number already in use\0"),
    (
        R::InvalidLunSize,
        b"invalid LUN size: 0, not a multiple of 512, or larger than the pool\0",
    ),
    (R::NoSpace, b"not enough unreserved space in the pool\0"),
    (R::NotACopy, b"the LUN is not a copy\0"),
    (
        R::Detached,
        b"the LUN is a detached copy: attach it first\0",
    ),
    (R::ParentGone, b"the copy's parent was deleted\0"),
    (
        R::ParentDetached,
        b"the copy's parent is a detached copy with no data\0",
    ),
    (
        R::HasCopies,
        b"the LUN has copies: delete them first, or orphan them\0",
    ),
    (R::OutOfRange, b"I/O beyond the end of the LUN\0"),
    (
        R::Misaligned,
        b"I/O offset or length not a multiple of 512 bytes\0",
    ),
    (
        R::Panic,
        b"internal error (a caught panic): the handle is unusable\0",
    ),
    (R::OutOfMemory, b"out of memory\0"),
    (
        R::Unusable,
        b"the handle is unusable after a failed reopen: free it\0",
    ),
    (R::NoSuchHost, b"no host is registered with this id\0"),
    (
        R::HostExists,
        b"a host with this id is already registered\0",
    ),
    (R::NotGranted, b"the host has no grant on the LUN\0"),
    (
        R::ReadOnlyAccess,
        b"the host may only read the LUN: write refused\0",
    ),
    (R::Offline, b"the LUN is offline: bring it online first\0"),
    (
        R::TooManyHosts,
        b"the array already has the most hosts it can register\0",
    ),
    (R::Other, b"unclassified error\0"),
];

/// The message of a result code, NUL-terminated.
pub(crate) fn message(code: u32) -> &'static [u8] {
    MESSAGES
        .iter()
        .find(|(r, _)| *r as u32 == code)
        .map_or(b"unknown lunsnap result code\0", |(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_their_own_codes() {
        let cases = [
            (Error::NoSuchHost(7), lunsnap_result::NoSuchHost, 60),
            (Error::HostExists(7), lunsnap_result::HostExists, 61),
            (
                Error::NotGranted { lun: 1, host: 7 },
                lunsnap_result::NotGranted,
                62,
            ),
            (
                Error::ReadOnlyAccess { lun: 1, host: 7 },
                lunsnap_result::ReadOnlyAccess,
                63,
            ),
            (Error::Offline(1), lunsnap_result::Offline, 64),
            (
                Error::BlockSizeMismatch {
                    formatted: 4096,
                    device: 512,
                },
                lunsnap_result::BlockSizeMismatch,
                16,
            ),
            (
                Error::CommitLost {
                    lost: 9,
                    kept: 8,
                    certain: true,
                },
                lunsnap_result::CommitLost,
                17,
            ),
            (
                Error::LostData {
                    lun: 3,
                    offset: 8192,
                    len: 4096,
                },
                lunsnap_result::LostData,
                18,
            ),
        ];
        for (e, want, code) in cases {
            assert_eq!(lunsnap_result::from(&e), want, "{e}");
            assert_eq!(want as u32, code);
        }
    }

    #[test]
    fn every_code_has_a_distinct_message() {
        let mut seen = std::collections::HashSet::new();
        for (r, m) in MESSAGES {
            assert_eq!(message(*r as u32), *m);
            assert!(m.ends_with(b"\0"));
            assert!(seen.insert(*r as u32), "{r:?} listed twice");
        }
    }
}
