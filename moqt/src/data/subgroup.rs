//! Subgroup streams (§11.4.2).
//!
//! ```text
//! SUBGROUP_HEADER {
//!   Type (i) = 0b0XX1XXXX except SUBGROUP_ID_MODE 0b11,
//!   Track Alias (vi64),
//!   Group ID (vi64),
//!   [Subgroup ID (vi64),]        -- SUBGROUP_ID_MODE 0b10
//!   [Publisher Priority (8),]    -- DEFAULT_PRIORITY bit clear
//! }
//! then, per object:
//! {
//!   Object ID Delta (vi64),
//!   [Properties (..),]           -- PROPERTIES bit set: length + pairs
//!   Object Payload Length (vi64),
//!   [Object Status (vi64),]      -- only when the length is 0
//!   [Object Payload (..),]
//! }
//! ```
//! Object IDs are delta-encoded: the first object's ID is its delta, each
//! later one is the previous ID plus delta plus one. The sans-IO
//! [`SubgroupDecoder`] and [`SubgroupEncoder`] keep that state for one
//! stream.

use bytes::{Buf, BufMut, Bytes};

use crate::data::ObjectStatus;
use crate::error::{DecodeError, EncodeError};
use crate::io::{self, put_varint, DResult, Reader};
use crate::properties::Properties;

/// PROPERTIES bit (0x01).
pub const PROPERTIES_BIT: u64 = 0x01;
/// SUBGROUP_ID_MODE field mask (0x06).
pub const SUBGROUP_ID_MODE_MASK: u64 = 0x06;
/// END_OF_GROUP bit (0x08).
pub const END_OF_GROUP_BIT: u64 = 0x08;
/// Bit 4, always set in a subgroup stream type (0x10).
pub const SUBGROUP_TYPE_BIT: u64 = 0x10;
/// DEFAULT_PRIORITY bit (0x20).
pub const DEFAULT_PRIORITY_BIT: u64 = 0x20;
/// FIRST_OBJECT bit (0x40).
pub const FIRST_OBJECT_BIT: u64 = 0x40;

/// True for the valid SUBGROUP_HEADER types: `0b0XX1XXXX` with
/// SUBGROUP_ID_MODE other than 0b11 (§11.4.2).
pub const fn is_subgroup_type(t: u64) -> bool {
    t < 0x80 && t & SUBGROUP_TYPE_BIT != 0 && t & SUBGROUP_ID_MODE_MASK != SUBGROUP_ID_MODE_MASK
}

/// How the Subgroup ID is conveyed (SUBGROUP_ID_MODE, §11.4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubgroupId {
    /// 0b00: absent, the Subgroup ID is 0.
    #[default]
    Zero,
    /// 0b01: absent, the Subgroup ID is the Object ID of the first object
    /// on the stream.
    FirstObjectId,
    /// 0b10: present in the header.
    Explicit(u64),
}

impl SubgroupId {
    fn mode(self) -> u64 {
        match self {
            SubgroupId::Zero => 0b00,
            SubgroupId::FirstObjectId => 0b01,
            SubgroupId::Explicit(_) => 0b10,
        }
    }
}

/// SUBGROUP_HEADER (§11.4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubgroupHeader {
    /// Track Alias (§11.1).
    pub track_alias: u64,
    /// Group ID.
    pub group_id: u64,
    /// Subgroup ID mode and value.
    pub subgroup_id: SubgroupId,
    /// Publisher Priority; `None` sets DEFAULT_PRIORITY (inherit the
    /// subscription's priority).
    pub publisher_priority: Option<u8>,
    /// PROPERTIES bit: every object carries a Properties field.
    pub has_properties: bool,
    /// END_OF_GROUP bit: the subgroup holds the group's largest object.
    pub end_of_group: bool,
    /// FIRST_OBJECT bit: the first object on the stream is the first
    /// object of the subgroup.
    pub first_object: bool,
}

impl SubgroupHeader {
    /// The stream type value for these flags.
    pub fn stream_type(&self) -> u64 {
        let mut t = SUBGROUP_TYPE_BIT | (self.subgroup_id.mode() << 1);
        if self.has_properties {
            t |= PROPERTIES_BIT;
        }
        if self.end_of_group {
            t |= END_OF_GROUP_BIT;
        }
        if self.publisher_priority.is_none() {
            t |= DEFAULT_PRIORITY_BIT;
        }
        if self.first_object {
            t |= FIRST_OBJECT_BIT;
        }
        t
    }

    /// Decode the header including its type from the front of `buf`.
    pub fn decode<B: Buf + ?Sized>(buf: &mut B) -> Result<Self, DecodeError> {
        io::decode_buf(buf, |r| {
            let t = r.varint()?;
            Self::decode_after_type(r, t)
        })
    }

    /// Append the header including its type.
    pub fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        put_varint(buf, self.stream_type());
        put_varint(buf, self.track_alias);
        put_varint(buf, self.group_id);
        if let SubgroupId::Explicit(id) = self.subgroup_id {
            put_varint(buf, id);
        }
        if let Some(p) = self.publisher_priority {
            buf.put_u8(p);
        }
        Ok(())
    }

    pub(crate) fn decode_after_type(r: &mut Reader<'_>, t: u64) -> DResult<Self> {
        if !is_subgroup_type(t) {
            return Err(DecodeError::UnknownStreamType(t));
        }
        let track_alias = r.varint()?;
        let group_id = r.varint()?;
        let subgroup_id = match (t & SUBGROUP_ID_MODE_MASK) >> 1 {
            0b00 => SubgroupId::Zero,
            0b01 => SubgroupId::FirstObjectId,
            _ => SubgroupId::Explicit(r.varint()?),
        };
        let publisher_priority = if t & DEFAULT_PRIORITY_BIT == 0 {
            Some(r.u8()?)
        } else {
            None
        };
        Ok(SubgroupHeader {
            track_alias,
            group_id,
            subgroup_id,
            publisher_priority,
            has_properties: t & PROPERTIES_BIT != 0,
            end_of_group: t & END_OF_GROUP_BIT != 0,
            first_object: t & FIRST_OBJECT_BIT != 0,
        })
    }
}

/// An object on a subgroup stream, with its absolute Object ID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubgroupObject {
    /// Object ID.
    pub object_id: u64,
    /// Object Properties; must be empty unless the header's PROPERTIES bit
    /// is set, and for non-Normal objects.
    pub properties: Properties,
    /// Object Status; must be Normal when the payload is not empty.
    pub status: ObjectStatus,
    /// Object Payload.
    pub payload: Bytes,
}

/// The fields of a subgroup object up to its payload, for callers that
/// stream payloads: after [`SubgroupDecoder::decode_object_header`] the next
/// `payload_len` bytes of the stream are the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubgroupObjectHeader {
    /// Object ID.
    pub object_id: u64,
    /// Object Properties.
    pub properties: Properties,
    /// Object Status (Normal when `payload_len > 0`).
    pub status: ObjectStatus,
    /// Object Payload Length.
    pub payload_len: u64,
}

/// Sans-IO decoder for the objects of one subgroup stream.
#[derive(Clone, Debug)]
pub struct SubgroupDecoder {
    header: SubgroupHeader,
    prev_object_id: Option<u64>,
    first_object_id: Option<u64>,
}

impl SubgroupDecoder {
    /// A decoder for the objects following `header`.
    pub fn new(header: SubgroupHeader) -> Self {
        SubgroupDecoder {
            header,
            prev_object_id: None,
            first_object_id: None,
        }
    }

    /// The stream header.
    pub fn header(&self) -> &SubgroupHeader {
        &self.header
    }

    /// The Subgroup ID; in mode [`SubgroupId::FirstObjectId`] it is known
    /// only once the first object has been decoded.
    pub fn subgroup_id(&self) -> Option<u64> {
        match self.header.subgroup_id {
            SubgroupId::Zero => Some(0),
            SubgroupId::FirstObjectId => self.first_object_id,
            SubgroupId::Explicit(id) => Some(id),
        }
    }

    /// The ID of the first object decoded on this stream.
    pub fn first_object_id(&self) -> Option<u64> {
        self.first_object_id
    }

    /// The ID of the last object decoded.
    pub fn last_object_id(&self) -> Option<u64> {
        self.prev_object_id
    }

    /// Decode the next whole object (header and payload).
    /// [`DecodeError::Incomplete`] until all of it is buffered.
    pub fn decode_object<B: Buf + ?Sized>(
        &mut self,
        buf: &mut B,
    ) -> Result<SubgroupObject, DecodeError> {
        let (props, prev) = (self.header.has_properties, self.prev_object_id);
        let obj = io::decode_buf(buf, |r| {
            let h = parse_object_header(r, props, prev)?;
            Ok(SubgroupObject {
                object_id: h.object_id,
                properties: h.properties,
                status: h.status,
                payload: r.bytes(h.payload_len)?,
            })
        })?;
        self.advance(obj.object_id);
        Ok(obj)
    }

    /// Decode the next object's fields up to its payload; the caller then
    /// consumes `payload_len` payload bytes from the stream itself.
    pub fn decode_object_header<B: Buf + ?Sized>(
        &mut self,
        buf: &mut B,
    ) -> Result<SubgroupObjectHeader, DecodeError> {
        let (props, prev) = (self.header.has_properties, self.prev_object_id);
        let h = io::decode_buf(buf, |r| parse_object_header(r, props, prev))?;
        self.advance(h.object_id);
        Ok(h)
    }

    /// The next object's fields up to its payload, without consuming
    /// anything or moving the decoder on; its properties come back empty.
    /// A cut-through reader looks at `payload_len` before committing.
    pub fn peek_object_header<B: Buf + ?Sized>(
        &self,
        buf: &B,
    ) -> Result<SubgroupObjectHeader, DecodeError> {
        let (props, prev) = (self.header.has_properties, self.prev_object_id);
        io::peek_buf(buf, |r| parse_object_header(r, props, prev))
    }

    fn advance(&mut self, id: u64) {
        self.first_object_id.get_or_insert(id);
        self.prev_object_id = Some(id);
    }
}

fn parse_object_header(
    r: &mut Reader<'_>,
    has_properties: bool,
    prev: Option<u64>,
) -> DResult<SubgroupObjectHeader> {
    let delta = r.varint()?;
    let object_id = match prev {
        None => delta,
        Some(p) => p
            .checked_add(delta)
            .and_then(|v| v.checked_add(1))
            .ok_or(DecodeError::Overflow { field: "object id" })?,
    };
    let properties = if has_properties {
        Properties::decode_prefixed(r)?
    } else {
        Properties::new()
    };
    let payload_len = r.varint()?;
    let status = if payload_len == 0 {
        ObjectStatus::from_code(r.varint()?)?
    } else {
        ObjectStatus::Normal
    };
    if status != ObjectStatus::Normal && !properties.is_empty() {
        return Err(DecodeError::PropertiesOnStatusObject);
    }
    Ok(SubgroupObjectHeader {
        object_id,
        properties,
        status,
        payload_len,
    })
}

/// Sans-IO encoder for one subgroup stream: computes Object ID deltas and
/// checks the objects against the header's flags.
#[derive(Clone, Debug)]
pub struct SubgroupEncoder {
    header: SubgroupHeader,
    prev_object_id: Option<u64>,
}

impl SubgroupEncoder {
    /// An encoder for a stream with `header`.
    pub fn new(header: SubgroupHeader) -> Self {
        SubgroupEncoder {
            header,
            prev_object_id: None,
        }
    }

    /// The stream header.
    pub fn header(&self) -> &SubgroupHeader {
        &self.header
    }

    /// Append the stream header (type included).
    pub fn encode_header<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        self.header.encode(buf)
    }

    /// Append a whole object.
    pub fn encode_object<B: BufMut + ?Sized>(
        &mut self,
        obj: &SubgroupObject,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        let h = SubgroupObjectHeader {
            object_id: obj.object_id,
            properties: obj.properties.clone(),
            status: obj.status,
            payload_len: obj.payload.len() as u64,
        };
        self.encode_object_header(&h, buf)?;
        buf.put_slice(&obj.payload);
        Ok(())
    }

    /// Append an object's fields up to its payload; the caller then writes
    /// exactly `payload_len` payload bytes.
    pub fn encode_object_header<B: BufMut + ?Sized>(
        &mut self,
        h: &SubgroupObjectHeader,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        let delta = match self.prev_object_id {
            None => h.object_id,
            Some(p) if h.object_id > p => h.object_id - p - 1,
            Some(_) => {
                return Err(EncodeError::InvalidValue {
                    field: "object id",
                    reason: "must be greater than the previous object's on the stream",
                })
            }
        };
        if !self.header.has_properties && !h.properties.is_empty() {
            return Err(EncodeError::InvalidValue {
                field: "object properties",
                reason: "the subgroup header's PROPERTIES bit is not set",
            });
        }
        if h.status != ObjectStatus::Normal && (h.payload_len != 0 || !h.properties.is_empty()) {
            return Err(EncodeError::InvalidValue {
                field: "object status",
                reason: "non-Normal objects have no payload and no properties",
            });
        }
        if h.properties.is_empty() {
            // The common case, on the fan-out's hot path (once per object
            // per subscriber): nothing can fail any more, so the at most
            // four varints go straight out, with no temporary buffer.
            put_varint(buf, delta);
            if self.header.has_properties {
                put_varint(buf, 0);
            }
            put_varint(buf, h.payload_len);
            if h.payload_len == 0 {
                put_varint(buf, h.status.code());
            }
            self.prev_object_id = Some(h.object_id);
            return Ok(());
        }
        // Properties can fail to encode: build the header aside so that a
        // failure writes nothing.
        let mut tmp = Vec::new();
        put_varint(&mut tmp, delta);
        if self.header.has_properties {
            h.properties.encode_prefixed(&mut tmp)?;
        }
        put_varint(&mut tmp, h.payload_len);
        if h.payload_len == 0 {
            put_varint(&mut tmp, h.status.code());
        }
        buf.put_slice(&tmp);
        self.prev_object_id = Some(h.object_id);
        Ok(())
    }
}
