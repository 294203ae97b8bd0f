//! The engine's error type: one variant per cause, each with a message a user can act on.

use core::fmt;

use crate::device::DeviceErrorKind;

/// Everything that can go wrong in the storage engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The block device reported an error.
    Device(DeviceErrorKind),
    /// The device's block size is not a power of two between 512 and 4096 bytes.
    UnsupportedBlockSize(u32),
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
    /// The superblock was written by a newer, unknown on-disk format version.
    UnsupportedVersion(u32),
    /// The superblock requires features this build does not know (bit mask of them).
    IncompatibleFeatures(u64),
    /// A metadata block failed its checksum: the medium corrupted it.
    Checksum {
        /// Metadata block address (in 4 KiB pages).
        addr: u64,
    },
    /// A metadata block is well-formed but not the one expected at this place
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
    /// No free metadata block is left. Format with more metadata space.
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
            Error::DeviceTooSmall { needed, available } => write!(
                f,
                "device too small: the layout needs {needed} bytes, the device has {available}"
            ),
            Error::InvalidOptions(w) => write!(f, "invalid options: {w}"),
            Error::InvalidArgument(w) => write!(f, "invalid argument: {w}"),
            Error::NotFormatted => f.write_str("not a lunsnap device: no valid superblock found"),
            Error::UnsupportedVersion(v) => write!(
                f,
                "unsupported on-disk format version {v}: upgrade lunsnap to open this device"
            ),
            Error::IncompatibleFeatures(m) => write!(
                f,
                "device uses unknown incompatible features {m:#x}: upgrade lunsnap to open it"
            ),
            Error::Checksum { addr } => write!(
                f,
                "checksum mismatch in metadata block {addr}: the metadata is corrupt"
            ),
            Error::Misplaced { addr, what } => {
                write!(
                    f,
                    "metadata block {addr} is not the block expected here: {what}"
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
            Error::Checksum { .. } | Error::Misplaced { .. } | Error::Corrupt { .. }
        )
    }

    pub(crate) fn corrupt(addr: u64, what: &'static str) -> Self {
        Error::Corrupt { addr, what }
    }
}
