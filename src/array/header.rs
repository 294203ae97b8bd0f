//! The array header: the array's own fields in the superblock's client bytes (the
//! engine stores them with every commit and knows nothing of their meaning).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LSNPARRY` |
//! | 8 | 4 | array format version ([`ARRAY_VERSION`]) |
//! | 12 | 4 | `max_luns` (1 to 2^20) |
//! | 16 | 1 | flags: bit 0 = host security enabled; other bits zero |
//! | 17 | 47 | zero |

use crate::engine::CLIENT_BYTES;
use crate::error::{Error, Result};

use super::MAX_LUNS_LIMIT;

const MAGIC: &[u8; 8] = b"LSNPARRY";
/// The array format version this build writes and reads.
pub(crate) const ARRAY_VERSION: u32 = 1;
const FLAG_SECURITY: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_SECURITY;

/// The decoded array header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ArrayHeader {
    /// LUN numbers run from 0 to `max_luns - 1`.
    pub max_luns: u32,
    /// Host access control is on.
    pub security: bool,
}

impl ArrayHeader {
    /// The client bytes that hold this header.
    pub fn encode(&self) -> [u8; CLIENT_BYTES] {
        let mut c = [0u8; CLIENT_BYTES];
        c[..8].copy_from_slice(MAGIC);
        c[8..12].copy_from_slice(&ARRAY_VERSION.to_le_bytes());
        c[12..16].copy_from_slice(&self.max_luns.to_le_bytes());
        c[16] = if self.security { FLAG_SECURITY } else { 0 };
        c
    }

    /// Reads the header from the client bytes: [`Error::NotAnArray`] without the
    /// magic, [`Error::UnsupportedVersion`] for another version, and
    /// [`Error::Corrupt`] for any field out of range or a reserved bit set.
    pub fn decode(c: &[u8; CLIENT_BYTES]) -> Result<ArrayHeader> {
        if &c[..8] != MAGIC {
            return Err(Error::NotAnArray);
        }
        let version = u32::from_le_bytes([c[8], c[9], c[10], c[11]]);
        if version != ARRAY_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let max_luns = u32::from_le_bytes([c[12], c[13], c[14], c[15]]);
        if max_luns == 0
            || max_luns > MAX_LUNS_LIMIT
            || c[16] & !KNOWN_FLAGS != 0
            || c[17..].iter().any(|&b| b != 0)
        {
            return Err(Error::Corrupt {
                addr: 0,
                what: "array header is invalid",
            });
        }
        Ok(ArrayHeader {
            max_luns,
            security: c[16] & FLAG_SECURITY != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_reserved_bits() {
        for h in [
            ArrayHeader {
                max_luns: 1,
                security: false,
            },
            ArrayHeader {
                max_luns: MAX_LUNS_LIMIT,
                security: true,
            },
        ] {
            assert_eq!(ArrayHeader::decode(&h.encode()), Ok(h));
        }
        let mut c = ArrayHeader {
            max_luns: 4,
            security: false,
        }
        .encode();
        c[16] = 2;
        assert!(ArrayHeader::decode(&c).is_err());
        c[16] = 0;
        c[63] = 1;
        assert!(ArrayHeader::decode(&c).is_err());
        assert_eq!(
            ArrayHeader::decode(&[0; CLIENT_BYTES]),
            Err(Error::NotAnArray)
        );
    }
}
