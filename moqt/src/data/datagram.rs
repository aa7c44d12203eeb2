//! Datagrams: OBJECT_DATAGRAM (§11.3.1) and padding datagrams (§11.5.2).
//!
//! ```text
//! OBJECT_DATAGRAM {
//!   Type (i) = 0x00..0x0F / 0x20..0x21 / 0x24..0x25 / 0x28..0x29 / 0x2C..0x2D,
//!   Track Alias (vi64),
//!   Group ID (vi64),
//!   [Object ID (vi64),]          -- ZERO_OBJECT_ID bit clear
//!   [Publisher Priority (8),]    -- DEFAULT_PRIORITY bit clear
//!   [Properties (..),]           -- PROPERTIES bit set, length > 0
//!   [Object Status (vi64),]      -- STATUS bit set
//!   [Object Payload (..),]       -- STATUS bit clear: rest of the datagram
//! }
//! ```

use bytes::{BufMut, Bytes};

use crate::data::ObjectStatus;
use crate::error::{DecodeError, EncodeError};
use crate::io::{self, put_varint, DResult, Reader};
use crate::properties::Properties;

/// PROPERTIES bit (0x01).
pub const PROPERTIES_BIT: u64 = 0x01;
/// END_OF_GROUP bit (0x02).
pub const END_OF_GROUP_BIT: u64 = 0x02;
/// ZERO_OBJECT_ID bit (0x04).
pub const ZERO_OBJECT_ID_BIT: u64 = 0x04;
/// DEFAULT_PRIORITY bit (0x08).
pub const DEFAULT_PRIORITY_BIT: u64 = 0x08;
/// STATUS bit (0x20).
pub const STATUS_BIT: u64 = 0x20;
/// Datagram type of a padding datagram (§11.5.2).
pub const PADDING_DATAGRAM_TYPE: u64 = 0x132B_3E29;

/// True for the valid OBJECT_DATAGRAM types: `0b00X0XXXX` without both
/// STATUS and END_OF_GROUP (§11.3.1).
pub const fn is_object_datagram_type(t: u64) -> bool {
    t < 0x30
        && t & 0x10 == 0
        && t & (STATUS_BIT | END_OF_GROUP_BIT) != (STATUS_BIT | END_OF_GROUP_BIT)
}

/// What follows the object header in an OBJECT_DATAGRAM.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DatagramContent {
    /// STATUS bit clear: the payload (status Normal).
    Payload(Bytes),
    /// STATUS bit set: an Object Status and no payload.
    Status(ObjectStatus),
}

impl Default for DatagramContent {
    fn default() -> Self {
        DatagramContent::Payload(Bytes::new())
    }
}

/// OBJECT_DATAGRAM (§11.3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectDatagram {
    /// Track Alias (§11.1).
    pub track_alias: u64,
    /// Group ID.
    pub group_id: u64,
    /// Object ID; 0 is sent with the ZERO_OBJECT_ID bit.
    pub object_id: u64,
    /// Publisher Priority; `None` sets DEFAULT_PRIORITY.
    pub publisher_priority: Option<u8>,
    /// END_OF_GROUP bit (not allowed with a status).
    pub end_of_group: bool,
    /// Object Properties; non-empty sets the PROPERTIES bit (an empty
    /// properties block with the bit set is a PROTOCOL_VIOLATION).
    pub properties: Properties,
    /// Payload or status.
    pub content: DatagramContent,
}

impl ObjectDatagram {
    /// The datagram type for these fields.
    pub fn datagram_type(&self) -> u64 {
        let mut t = 0;
        if !self.properties.is_empty() {
            t |= PROPERTIES_BIT;
        }
        if self.end_of_group {
            t |= END_OF_GROUP_BIT;
        }
        if self.object_id == 0 {
            t |= ZERO_OBJECT_ID_BIT;
        }
        if self.publisher_priority.is_none() {
            t |= DEFAULT_PRIORITY_BIT;
        }
        if matches!(self.content, DatagramContent::Status(_)) {
            t |= STATUS_BIT;
        }
        t
    }

    fn decode_after_type(r: &mut Reader<'_>, t: u64) -> DResult<Self> {
        if !is_object_datagram_type(t) {
            return Err(DecodeError::UnknownDatagramType(t));
        }
        let track_alias = r.varint()?;
        let group_id = r.varint()?;
        let object_id = if t & ZERO_OBJECT_ID_BIT != 0 {
            0
        } else {
            r.varint()?
        };
        let publisher_priority = if t & DEFAULT_PRIORITY_BIT != 0 {
            None
        } else {
            Some(r.u8()?)
        };
        let properties = if t & PROPERTIES_BIT != 0 {
            let len = r.varint()?;
            if len == 0 {
                return Err(DecodeError::InvalidValue {
                    field: "datagram properties length",
                    value: 0,
                });
            }
            let mut sub = r.sub(len, "object properties")?;
            Properties::decode_rest(&mut sub)?
        } else {
            Properties::new()
        };
        let content = if t & STATUS_BIT != 0 {
            let status = ObjectStatus::from_code(r.varint()?)?;
            if status != ObjectStatus::Normal && !properties.is_empty() {
                return Err(DecodeError::PropertiesOnStatusObject);
            }
            r.finish("object datagram")?;
            DatagramContent::Status(status)
        } else {
            DatagramContent::Payload(r.rest())
        };
        Ok(ObjectDatagram {
            track_alias,
            group_id,
            object_id,
            publisher_priority,
            end_of_group: t & END_OF_GROUP_BIT != 0,
            properties,
            content,
        })
    }

    /// Append the datagram. Fails for a status with END_OF_GROUP, or
    /// properties on a non-Normal status.
    pub fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        if let DatagramContent::Status(status) = self.content {
            if self.end_of_group {
                return Err(EncodeError::InvalidValue {
                    field: "end of group",
                    reason: "a status datagram cannot signal end of group",
                });
            }
            if status != ObjectStatus::Normal && !self.properties.is_empty() {
                return Err(EncodeError::InvalidValue {
                    field: "object properties",
                    reason: "only Normal objects can have properties",
                });
            }
        }
        let mut tmp = Vec::new();
        put_varint(&mut tmp, self.datagram_type());
        put_varint(&mut tmp, self.track_alias);
        put_varint(&mut tmp, self.group_id);
        if self.object_id != 0 {
            put_varint(&mut tmp, self.object_id);
        }
        if let Some(p) = self.publisher_priority {
            tmp.put_u8(p);
        }
        if !self.properties.is_empty() {
            self.properties.encode_prefixed(&mut tmp)?;
        }
        match &self.content {
            DatagramContent::Status(s) => put_varint(&mut tmp, s.code()),
            DatagramContent::Payload(p) => tmp.extend_from_slice(p),
        }
        buf.put_slice(&tmp);
        Ok(())
    }
}

/// Any MOQT datagram.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Datagram {
    /// OBJECT_DATAGRAM.
    Object(ObjectDatagram),
    /// Padding datagram (§11.5.2) with `len` bytes of padding after the
    /// type; the receiver discards them.
    Padding {
        /// Padding bytes after the type.
        len: usize,
    },
}

impl Datagram {
    /// Decode a whole datagram; the payload is a zero-copy slice of it.
    /// Truncation is an error here ([`DecodeError::Truncated`]), never
    /// [`DecodeError::Incomplete`].
    pub fn decode(datagram: &Bytes) -> Result<Self, DecodeError> {
        io::decode_all(datagram, "datagram", |r| {
            let t = r.varint()?;
            if t == PADDING_DATAGRAM_TYPE {
                // "The receiver MUST discard all data received in a
                // padding datagram": the content is not inspected.
                let len = r.remaining();
                r.rest();
                return Ok(Datagram::Padding { len });
            }
            Ok(Datagram::Object(ObjectDatagram::decode_after_type(r, t)?))
        })
    }

    /// Append the datagram (padding bytes are zeros).
    pub fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        match self {
            Datagram::Object(d) => d.encode(buf),
            Datagram::Padding { len } => {
                put_varint(buf, PADDING_DATAGRAM_TYPE);
                buf.put_bytes(0, *len);
                Ok(())
            }
        }
    }
}
