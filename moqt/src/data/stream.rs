//! Unidirectional stream types (§3.4) and padding streams (§11.5.1).
//!
//! | type         | stream                                      |
//! |--------------|---------------------------------------------|
//! | 0x05         | FETCH_HEADER ([`FetchHeader`])              |
//! | 0b0XX1XXXX   | SUBGROUP_HEADER ([`SubgroupHeader`])        |
//! | 0x2F00       | control stream, opened by SETUP ([`Setup`]) |
//! | 0x132B3E28   | PADDING: zero bytes to be discarded         |

use bytes::{Buf, BufMut};

use crate::data::fetch::{FetchHeader, FETCH_HEADER_TYPE};
use crate::data::subgroup::{is_subgroup_type, SubgroupHeader};
use crate::error::{DecodeError, EncodeError};
use crate::io::{self, put_varint, DResult, Reader};
use crate::message::ControlMessage;
use crate::setup::Setup;

/// Stream type of a control stream: the SETUP message type (§3.4).
pub const CONTROL_STREAM_TYPE: u64 = 0x2F00;
/// Stream type of a padding stream (§11.5.1).
pub const PADDING_STREAM_TYPE: u64 = 0x132B_3E28;

/// Kind of a unidirectional stream, from its first varint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// Control stream (0x2F00); the varint is the type of its SETUP.
    Control,
    /// Subgroup stream with this SUBGROUP_HEADER type.
    Subgroup(u8),
    /// Fetch stream (0x05).
    Fetch,
    /// Padding stream (0x132B3E28).
    Padding,
}

impl StreamType {
    /// Classify a stream type value; `None` for unknown or invalid types
    /// (the session "MUST" then be closed, §3.4).
    pub fn from_code(t: u64) -> Option<Self> {
        match t {
            CONTROL_STREAM_TYPE => Some(StreamType::Control),
            FETCH_HEADER_TYPE => Some(StreamType::Fetch),
            PADDING_STREAM_TYPE => Some(StreamType::Padding),
            t if is_subgroup_type(t) => Some(StreamType::Subgroup(t as u8)),
            _ => None,
        }
    }

    /// The stream type value.
    pub fn code(self) -> u64 {
        match self {
            StreamType::Control => CONTROL_STREAM_TYPE,
            StreamType::Subgroup(t) => u64::from(t),
            StreamType::Fetch => FETCH_HEADER_TYPE,
            StreamType::Padding => PADDING_STREAM_TYPE,
        }
    }

    /// The type of the stream starting at `buf`, without consuming
    /// anything.
    pub fn peek<B: Buf + ?Sized>(buf: &B) -> Result<Self, DecodeError> {
        let t = io::peek_buf(buf, |r| r.varint())?;
        StreamType::from_code(t).ok_or(DecodeError::UnknownStreamType(t))
    }
}

/// The beginning of a unidirectional stream (§3.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UniStreamHeader {
    /// A control stream; its whole SETUP message has been consumed, further
    /// messages are read with [`ControlMessage::decode`].
    Control(Setup),
    /// A subgroup stream; objects follow (see
    /// [`SubgroupDecoder`](crate::data::subgroup::SubgroupDecoder)).
    Subgroup(SubgroupHeader),
    /// A fetch stream; items follow (see
    /// [`FetchDecoder`](crate::data::fetch::FetchDecoder)).
    Fetch(FetchHeader),
    /// A padding stream; the rest of the stream is to be discarded.
    Padding,
}

impl UniStreamHeader {
    /// Decode the stream type and header from the front of `buf`.
    /// [`DecodeError::Incomplete`] (nothing consumed) until it is complete.
    pub fn decode<B: Buf + ?Sized>(buf: &mut B) -> Result<Self, DecodeError> {
        io::decode_buf(buf, Self::parse)
    }

    fn parse(r: &mut Reader<'_>) -> DResult<Self> {
        match r.peek_varint()? {
            CONTROL_STREAM_TYPE => match ControlMessage::parse(r)? {
                ControlMessage::Setup(s) => Ok(UniStreamHeader::Control(s)),
                // parse() picked the type from the same varint.
                other => Err(DecodeError::UnknownStreamType(other.message_type().code())),
            },
            FETCH_HEADER_TYPE => {
                r.varint()?;
                Ok(UniStreamHeader::Fetch(FetchHeader::decode_after_type(r)?))
            }
            PADDING_STREAM_TYPE => {
                r.varint()?;
                Ok(UniStreamHeader::Padding)
            }
            _ => {
                let t = r.varint()?;
                Ok(UniStreamHeader::Subgroup(
                    SubgroupHeader::decode_after_type(r, t)?,
                ))
            }
        }
    }

    /// Append the stream type and header (the whole SETUP message for a
    /// control stream, only the type for a padding stream).
    pub fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        match self {
            UniStreamHeader::Control(s) => ControlMessage::Setup(s.clone()).encode(buf),
            UniStreamHeader::Subgroup(h) => h.encode(buf),
            UniStreamHeader::Fetch(h) => h.encode(buf),
            UniStreamHeader::Padding => {
                put_varint(buf, PADDING_STREAM_TYPE);
                Ok(())
            }
        }
    }
}

/// Append `len` bytes of padding-stream data (zeros, §11.5.1).
pub fn encode_padding<B: BufMut + ?Sized>(len: usize, buf: &mut B) {
    buf.put_bytes(0, len);
}
