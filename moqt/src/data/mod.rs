//! Data streams and datagrams (§11).
//!
//! * [`stream`]: the unidirectional stream type (§3.4) and stream headers,
//!   padding streams (§11.5.1).
//! * [`subgroup`]: SUBGROUP_HEADER with all its type bits and the object
//!   fields that follow it (§11.4.2).
//! * [`fetch`]: FETCH_HEADER and the flag-compressed fetch objects with
//!   End of Range markers (§11.4.4).
//! * [`datagram`]: OBJECT_DATAGRAM in all its type variants, and padding
//!   datagrams (§11.3.1, §11.5.2).

pub mod datagram;
pub mod fetch;
pub mod stream;
pub mod subgroup;

use crate::error::DecodeError;

/// Object Status (§11.2.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ObjectStatus {
    /// 0x0: a normal object (implicit for non-empty payloads).
    #[default]
    Normal,
    /// 0x3: no object with this Group ID and an Object ID greater than or
    /// equal to this one exists.
    EndOfGroup,
    /// 0x4: no object at this Location or later exists.
    EndOfTrack,
}

impl ObjectStatus {
    /// The wire value.
    pub const fn code(self) -> u64 {
        match self {
            ObjectStatus::Normal => 0x0,
            ObjectStatus::EndOfGroup => 0x3,
            ObjectStatus::EndOfTrack => 0x4,
        }
    }

    /// From a wire value. The draft says other values "SHOULD be treated
    /// as a protocol error"; this codec does.
    pub fn from_code(code: u64) -> Result<Self, DecodeError> {
        match code {
            0x0 => Ok(ObjectStatus::Normal),
            0x3 => Ok(ObjectStatus::EndOfGroup),
            0x4 => Ok(ObjectStatus::EndOfTrack),
            value => Err(DecodeError::InvalidValue {
                field: "object status",
                value,
            }),
        }
    }
}
