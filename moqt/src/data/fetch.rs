//! Fetch streams (§11.4.4).
//!
//! ```text
//! FETCH_HEADER {
//!   Type (vi64) = 0x5,
//!   Request ID (vi64),
//! }
//! then, per object:
//! {
//!   Serialization Flags (vi64),
//!   [Group ID Delta (vi64),]     -- 0x08
//!   [Subgroup ID (vi64),]        -- flags & 0x03 == 0x03, 0x40 clear
//!   [Object ID Delta (vi64),]    -- 0x04
//!   [Publisher Priority (8),]    -- 0x10
//!   [Properties (..),]           -- 0x20: length + pairs
//!   Object Payload Length (vi64),
//!   [Object Payload (..),]
//! }
//! ```
//! Flags 0x8C and 0x10C are End of Range markers followed by a Group ID
//! and an Object ID only (see [`EndOfRange`]).
//!
//! Fields absent from an object are derived from the prior object, and
//! Group ID deltas go up or down with the fetch's Group Order, so the
//! sans-IO [`FetchDecoder`] / [`FetchEncoder`] carry that state for one
//! stream.

use bytes::{Buf, BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::io::{self, put_varint, DResult, Reader};
use crate::properties::Properties;
use crate::types::{GroupOrder, Location};

/// Stream type of a fetch stream (§3.4).
pub const FETCH_HEADER_TYPE: u64 = 0x05;
/// Mask of the two-bit subgroup field of the flags (§11.4.4.1 Table 8).
pub const SUBGROUP_MODE_MASK: u64 = 0x03;
/// Object ID Delta present.
pub const OBJECT_ID_DELTA_BIT: u64 = 0x04;
/// Group ID Delta present.
pub const GROUP_ID_DELTA_BIT: u64 = 0x08;
/// Publisher Priority present.
pub const PRIORITY_BIT: u64 = 0x10;
/// Properties present.
pub const PROPERTIES_BIT: u64 = 0x20;
/// Forwarding preference Datagram: no Subgroup ID.
pub const DATAGRAM_BIT: u64 = 0x40;
/// Serialization Flags value of End of Non-Existent Range (§11.4.4 Table 7).
pub const END_OF_NON_EXISTENT_RANGE: u64 = 0x8C;
/// Serialization Flags value of End of Unknown Range (§11.4.4 Table 7).
pub const END_OF_UNKNOWN_RANGE: u64 = 0x10C;

/// FETCH_HEADER (§11.4.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FetchHeader {
    /// Request ID of the FETCH.
    pub request_id: u64,
}

impl FetchHeader {
    /// Decode the header including its type.
    pub fn decode<B: Buf + ?Sized>(buf: &mut B) -> Result<Self, DecodeError> {
        io::decode_buf(buf, |r| {
            let t = r.varint()?;
            if t != FETCH_HEADER_TYPE {
                return Err(DecodeError::UnknownStreamType(t));
            }
            Self::decode_after_type(r)
        })
    }

    /// Append the header including its type.
    pub fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        put_varint(buf, FETCH_HEADER_TYPE);
        put_varint(buf, self.request_id);
        Ok(())
    }

    pub(crate) fn decode_after_type(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(FetchHeader {
            request_id: r.varint()?,
        })
    }
}

/// An object on a fetch stream, with absolute IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FetchObject {
    /// Group and Object ID.
    pub location: Location,
    /// Subgroup ID, or `None` for an object whose forwarding preference is
    /// Datagram (flag 0x40).
    pub subgroup_id: Option<u64>,
    /// Publisher Priority.
    pub publisher_priority: u8,
    /// Object Properties.
    pub properties: Properties,
    /// Object Payload (fetch objects carry no Object Status, §11.2.1.1).
    pub payload: Bytes,
}

/// A fetch object's fields up to its payload (see
/// [`FetchDecoder::decode_item_header`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FetchObjectHeader {
    /// Group and Object ID.
    pub location: Location,
    /// Subgroup ID, `None` for Datagram forwarding preference.
    pub subgroup_id: Option<u64>,
    /// Publisher Priority.
    pub publisher_priority: u8,
    /// Object Properties.
    pub properties: Properties,
    /// Object Payload Length.
    pub payload_len: u64,
}

/// Kind of an End of Range marker (§11.4.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndOfRangeKind {
    /// 0x8C: the objects do not exist.
    NonExistent,
    /// 0x10C: the objects' status is unknown.
    Unknown,
}

/// End of Range marker (§11.4.4.2): every Location after the last
/// serialized object (if any) up to and including `location` does not
/// exist or is unknown.
///
/// The draft says only that "the Group ID and Object ID fields are
/// present"; this codec writes and reads them as absolute values, with no
/// Object Payload Length after them (see the crate documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndOfRange {
    /// Non-existent or unknown.
    pub kind: EndOfRangeKind,
    /// Last Location of the range (inclusive).
    pub location: Location,
}

/// One item of a fetch stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FetchItem {
    /// An object.
    Object(FetchObject),
    /// An End of Range marker.
    EndOfRange(EndOfRange),
}

/// One item of a fetch stream, objects without their payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FetchItemHeader {
    /// An object's fields; `payload_len` payload bytes follow.
    Object(FetchObjectHeader),
    /// An End of Range marker.
    EndOfRange(EndOfRange),
}

/// The "prior object" state of §11.4.4.1-§11.4.4.2.
#[derive(Clone, Copy, Debug, Default)]
struct Prior {
    /// From the last object or End of Range marker.
    location: Option<Location>,
    /// From the last actual object (None if it had no Subgroup ID).
    subgroup_id: Option<u64>,
    /// From the last actual object.
    priority: Option<u8>,
}

impl Prior {
    fn after_object(&mut self, h: &FetchObjectHeader) {
        self.location = Some(h.location);
        self.subgroup_id = h.subgroup_id;
        self.priority = Some(h.publisher_priority);
    }
}

fn parse_item(r: &mut Reader<'_>, order: GroupOrder, prior: &Prior) -> DResult<FetchItemHeader> {
    let flags = r.varint()?;
    let kind = match flags {
        END_OF_NON_EXISTENT_RANGE => Some(EndOfRangeKind::NonExistent),
        END_OF_UNKNOWN_RANGE => Some(EndOfRangeKind::Unknown),
        f if f >= 0x80 => {
            return Err(DecodeError::InvalidValue {
                field: "fetch serialization flags",
                value: f,
            })
        }
        _ => None,
    };
    if let Some(kind) = kind {
        let location = Location::decode(r)?;
        return Ok(FetchItemHeader::EndOfRange(EndOfRange { kind, location }));
    }
    let no_prior = |field| DecodeError::NoPriorObject { field };
    let group = if flags & GROUP_ID_DELTA_BIT != 0 {
        let delta = r.varint()?;
        match prior.location {
            None => delta,
            Some(p) => {
                let step = delta.checked_add(1);
                match order {
                    GroupOrder::Ascending => step.and_then(|s| p.group.checked_add(s)),
                    GroupOrder::Descending => step.and_then(|s| p.group.checked_sub(s)),
                }
                .ok_or(DecodeError::Overflow { field: "group id" })?
            }
        }
    } else {
        prior.location.ok_or(no_prior("group id"))?.group
    };
    let subgroup_id = if flags & DATAGRAM_BIT != 0 {
        None
    } else {
        Some(match flags & SUBGROUP_MODE_MASK {
            0x00 => 0,
            0x01 => prior.subgroup_id.ok_or(no_prior("subgroup id"))?,
            0x02 => prior
                .subgroup_id
                .ok_or(no_prior("subgroup id"))?
                .checked_add(1)
                .ok_or(DecodeError::Overflow {
                    field: "subgroup id",
                })?,
            _ => r.varint()?,
        })
    };
    let object = if flags & OBJECT_ID_DELTA_BIT != 0 {
        let delta = r.varint()?;
        match prior.location {
            Some(p) if flags & GROUP_ID_DELTA_BIT == 0 => p
                .object
                .checked_add(delta)
                .ok_or(DecodeError::Overflow { field: "object id" })?,
            _ => delta,
        }
    } else {
        prior
            .location
            .ok_or(no_prior("object id"))?
            .object
            .checked_add(1)
            .ok_or(DecodeError::Overflow { field: "object id" })?
    };
    let publisher_priority = if flags & PRIORITY_BIT != 0 {
        r.u8()?
    } else {
        prior.priority.ok_or(no_prior("publisher priority"))?
    };
    let properties = if flags & PROPERTIES_BIT != 0 {
        Properties::decode_prefixed(r)?
    } else {
        Properties::new()
    };
    let payload_len = r.varint()?;
    Ok(FetchItemHeader::Object(FetchObjectHeader {
        location: Location::new(group, object),
        subgroup_id,
        publisher_priority,
        properties,
        payload_len,
    }))
}

/// Sans-IO decoder for the items after a FETCH_HEADER.
#[derive(Clone, Debug)]
pub struct FetchDecoder {
    order: GroupOrder,
    prior: Prior,
}

impl FetchDecoder {
    /// A decoder for a fetch with Group Order `order` (the GROUP_ORDER
    /// parameter of the FETCH, Ascending when absent, §10.2.8).
    pub fn new(order: GroupOrder) -> Self {
        FetchDecoder {
            order,
            prior: Prior::default(),
        }
    }

    /// Decode the next whole item (objects with their payload).
    pub fn decode_item<B: Buf + ?Sized>(&mut self, buf: &mut B) -> Result<FetchItem, DecodeError> {
        let (order, prior) = (self.order, self.prior);
        let item = io::decode_buf(buf, |r| match parse_item(r, order, &prior)? {
            FetchItemHeader::EndOfRange(e) => Ok((FetchItemHeader::EndOfRange(e), Bytes::new())),
            FetchItemHeader::Object(h) => {
                let payload = r.bytes(h.payload_len)?;
                Ok((FetchItemHeader::Object(h), payload))
            }
        })?;
        Ok(match item {
            (FetchItemHeader::EndOfRange(e), _) => {
                self.prior.location = Some(e.location);
                FetchItem::EndOfRange(e)
            }
            (FetchItemHeader::Object(h), payload) => {
                self.prior.after_object(&h);
                FetchItem::Object(FetchObject {
                    location: h.location,
                    subgroup_id: h.subgroup_id,
                    publisher_priority: h.publisher_priority,
                    properties: h.properties,
                    payload,
                })
            }
        })
    }

    /// Decode the next item up to an object's payload; the caller then
    /// consumes `payload_len` bytes itself.
    pub fn decode_item_header<B: Buf + ?Sized>(
        &mut self,
        buf: &mut B,
    ) -> Result<FetchItemHeader, DecodeError> {
        let (order, prior) = (self.order, self.prior);
        let item = io::decode_buf(buf, |r| parse_item(r, order, &prior))?;
        match &item {
            FetchItemHeader::EndOfRange(e) => self.prior.location = Some(e.location),
            FetchItemHeader::Object(h) => self.prior.after_object(h),
        }
        Ok(item)
    }
}

/// Sans-IO encoder for the items of a fetch stream; picks the most compact
/// flags the prior-object state allows.
#[derive(Clone, Debug)]
pub struct FetchEncoder {
    order: GroupOrder,
    prior: Prior,
}

impl FetchEncoder {
    /// An encoder for a fetch delivered in Group Order `order`.
    pub fn new(order: GroupOrder) -> Self {
        FetchEncoder {
            order,
            prior: Prior::default(),
        }
    }

    /// Append a whole object.
    pub fn encode_object<B: BufMut + ?Sized>(
        &mut self,
        obj: &FetchObject,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        let h = FetchObjectHeader {
            location: obj.location,
            subgroup_id: obj.subgroup_id,
            publisher_priority: obj.publisher_priority,
            properties: obj.properties.clone(),
            payload_len: obj.payload.len() as u64,
        };
        self.encode_object_header(&h, buf)?;
        buf.put_slice(&obj.payload);
        Ok(())
    }

    /// Append an object's fields up to its payload; the caller then writes
    /// exactly `payload_len` bytes.
    pub fn encode_object_header<B: BufMut + ?Sized>(
        &mut self,
        h: &FetchObjectHeader,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        let Location { group, object } = h.location;
        let mut flags = 0u64;
        let mut group_delta = None;
        let mut object_delta = None;
        match self.prior.location {
            None => {
                group_delta = Some(group);
                object_delta = Some(object);
            }
            Some(p) if p.group == group => {
                if p.object.checked_add(1) != Some(object) {
                    if object < p.object {
                        return Err(EncodeError::InvalidValue {
                            field: "object id",
                            reason: "must not decrease within a group",
                        });
                    }
                    object_delta = Some(object - p.object);
                }
            }
            Some(p) => {
                let delta = match self.order {
                    GroupOrder::Ascending if group > p.group => group - p.group - 1,
                    GroupOrder::Descending if group < p.group => p.group - group - 1,
                    _ => {
                        return Err(EncodeError::InvalidValue {
                            field: "group id",
                            reason: "groups must follow the fetch's group order",
                        })
                    }
                };
                group_delta = Some(delta);
                object_delta = Some(object);
            }
        }
        let mut subgroup_field = None;
        match h.subgroup_id {
            None => flags |= DATAGRAM_BIT,
            Some(0) => {}
            Some(s) if self.prior.subgroup_id == Some(s) => flags |= 0x01,
            Some(s) if self.prior.subgroup_id.and_then(|p| p.checked_add(1)) == Some(s) => {
                flags |= 0x02
            }
            Some(s) => {
                flags |= 0x03;
                subgroup_field = Some(s);
            }
        }
        if group_delta.is_some() {
            flags |= GROUP_ID_DELTA_BIT;
        }
        if object_delta.is_some() {
            flags |= OBJECT_ID_DELTA_BIT;
        }
        let priority =
            (self.prior.priority != Some(h.publisher_priority)).then_some(h.publisher_priority);
        if priority.is_some() {
            flags |= PRIORITY_BIT;
        }
        if !h.properties.is_empty() {
            flags |= PROPERTIES_BIT;
        }
        let mut tmp = Vec::new();
        put_varint(&mut tmp, flags);
        if let Some(d) = group_delta {
            put_varint(&mut tmp, d);
        }
        if let Some(s) = subgroup_field {
            put_varint(&mut tmp, s);
        }
        if let Some(d) = object_delta {
            put_varint(&mut tmp, d);
        }
        if let Some(p) = priority {
            tmp.put_u8(p);
        }
        if !h.properties.is_empty() {
            h.properties.encode_prefixed(&mut tmp)?;
        }
        put_varint(&mut tmp, h.payload_len);
        buf.put_slice(&tmp);
        self.prior.after_object(h);
        Ok(())
    }

    /// Append an End of Range marker.
    pub fn encode_end_of_range<B: BufMut + ?Sized>(
        &mut self,
        e: &EndOfRange,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        put_varint(
            buf,
            match e.kind {
                EndOfRangeKind::NonExistent => END_OF_NON_EXISTENT_RANGE,
                EndOfRangeKind::Unknown => END_OF_UNKNOWN_RANGE,
            },
        );
        e.location.encode(buf);
        self.prior.location = Some(e.location);
        Ok(())
    }

    /// Append any item.
    pub fn encode_item<B: BufMut + ?Sized>(
        &mut self,
        item: &FetchItem,
        buf: &mut B,
    ) -> Result<(), EncodeError> {
        match item {
            FetchItem::Object(o) => self.encode_object(o, buf),
            FetchItem::EndOfRange(e) => self.encode_end_of_range(e, buf),
        }
    }
}
