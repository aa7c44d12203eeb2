//! Control messages (§10) and their framing.
//!
//! ```text
//! MOQT Control Message {
//!   Message Type (vi64),
//!   Message Length (16),     -- big-endian, so at most 65535
//!   Message Payload (..),
//! }
//! ```
//!
//! [`ControlMessage::decode`] reads one framed message from the front of a
//! buffer. It returns [`DecodeError::Incomplete`] (consuming nothing) until
//! the whole message is buffered, rejects unknown types as soon as the type
//! is readable, and requires the payload to be consumed exactly.

use bytes::{Buf, BufMut, Bytes};

use crate::codes::{PublishDoneCode, RequestErrorCode};
use crate::error::{DecodeError, EncodeError};
use crate::io::{
    self, check_decoded_len, check_len, put_len_bytes, put_varint, DResult, EResult, Reader,
};
pub use crate::message_type::MessageType;
use crate::names::{FullTrackName, TrackNamespace};
use crate::params::Parameters;
use crate::properties::Properties;
use crate::setup::Setup;
use crate::types::{Location, ReasonPhrase};

/// Maximum Message Payload length: the Message Length field is 16 bits
/// (§10, §10.2).
pub const MAX_CONTROL_MESSAGE_LEN: usize = 0xFFFF;
/// Maximum length of the GOAWAY New Session URI (§10.4).
pub const MAX_GOAWAY_URI_LEN: usize = 8192;
/// PUBLISH_DONE Stream Count when the publisher cannot count its streams
/// exactly: 2^62 - 1 (§10.11).
pub const STREAM_COUNT_UNKNOWN: u64 = (1 << 62) - 1;
/// Message types reserved by earlier drafts (§10 Table 5); decoding them
/// fails with [`DecodeError::UnknownMessageType`].
pub const RESERVED_MESSAGE_TYPES: [u64; 5] = [0x01, 0x40, 0x41, 0x20, 0x21];

/// GOAWAY (§10.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoAway {
    /// New Session URI, at most [`MAX_GOAWAY_URI_LEN`] bytes; empty to reuse
    /// the current URI (always empty from a client).
    pub new_session_uri: Bytes,
    /// Timeout in milliseconds; 0 means none.
    pub timeout: u64,
    /// Request ID: present only on the control stream.
    pub request_id: Option<u64>,
}

impl GoAway {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        let len = r.varint()?;
        check_decoded_len("new session uri", len, MAX_GOAWAY_URI_LEN)?;
        let new_session_uri = r.bytes(len)?;
        let timeout = r.varint()?;
        let request_id = if r.is_empty() {
            None
        } else {
            Some(r.varint()?)
        };
        Ok(GoAway {
            new_session_uri,
            timeout,
            request_id,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        check_len(
            "new session uri",
            self.new_session_uri.len(),
            MAX_GOAWAY_URI_LEN,
        )?;
        put_len_bytes(buf, &self.new_session_uri);
        put_varint(buf, self.timeout);
        if let Some(id) = self.request_id {
            put_varint(buf, id);
        }
        Ok(())
    }
}

/// REQUEST_OK (§10.5), also called PUBLISH_OK, REQUEST_UPDATE_OK,
/// TRACK_STATUS_OK, SUBSCRIBE_NAMESPACE_OK and PUBLISH_NAMESPACE_OK.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestOk {
    /// Parameters.
    pub parameters: Parameters,
    /// Track Properties: the rest of the message; only TRACK_STATUS_OK
    /// carries any.
    pub track_properties: Properties,
}

impl RequestOk {
    fn decode_payload(r: &mut Reader<'_>, ty: MessageType) -> DResult<Self> {
        Ok(RequestOk {
            parameters: Parameters::decode(r, ty)?,
            track_properties: Properties::decode_rest(r)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>, ty: MessageType) -> EResult<()> {
        self.parameters.encode(buf, ty)?;
        self.track_properties.encode_rest(buf)
    }
}

/// Redirect structure of REQUEST_ERROR with code REDIRECT (§10.6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// Connect URI; empty to use the current session's URI.
    pub connect_uri: Bytes,
    /// Track Namespace and Track Name for the retried request; both empty
    /// to reuse the original ones.
    pub track: FullTrackName,
}

impl Redirect {
    /// True when namespace and name are both empty: retry with the
    /// original Full Track Name.
    pub fn keeps_track(&self) -> bool {
        self.track.namespace().is_empty() && self.track.name().is_empty()
    }

    fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let len = r.varint()?;
        let connect_uri = r.bytes(len)?;
        let track = FullTrackName::decode(r)?;
        Ok(Redirect { connect_uri, track })
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        put_len_bytes(buf, &self.connect_uri);
        self.track.encode(buf);
    }
}

/// REQUEST_ERROR (§10.6.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestError {
    /// Error Code.
    pub error_code: RequestErrorCode,
    /// Retry Interval: minimum milliseconds before retrying, plus one; 0
    /// means do not retry.
    pub retry_interval: u64,
    /// Error Reason.
    pub reason: ReasonPhrase,
    /// Present if and only if the code is REDIRECT.
    pub redirect: Option<Redirect>,
}

impl RequestError {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        let error_code = RequestErrorCode::from_code(r.varint()?);
        let retry_interval = r.varint()?;
        let reason = ReasonPhrase::decode(r)?;
        let redirect = if error_code == RequestErrorCode::Redirect {
            Some(Redirect::decode(r)?)
        } else {
            None
        };
        Ok(RequestError {
            error_code,
            retry_interval,
            reason,
            redirect,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        let is_redirect = self.error_code == RequestErrorCode::Redirect;
        if is_redirect != self.redirect.is_some() {
            return Err(EncodeError::InvalidValue {
                field: "redirect",
                reason: "present if and only if the error code is REDIRECT",
            });
        }
        put_varint(buf, self.error_code.code());
        put_varint(buf, self.retry_interval);
        self.reason.encode(buf)?;
        if let Some(redirect) = &self.redirect {
            redirect.encode(buf);
        }
        Ok(())
    }
}

/// SUBSCRIBE (§10.7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subscribe {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Track Namespace and Track Name.
    pub track: FullTrackName,
    /// Parameters.
    pub parameters: Parameters,
}

/// TRACK_STATUS (§10.14): the SUBSCRIBE format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrackStatus {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Track Namespace and Track Name.
    pub track: FullTrackName,
    /// Parameters.
    pub parameters: Parameters,
}

macro_rules! subscribe_like {
    ($t:ident, $ty:expr) => {
        impl $t {
            fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
                Ok($t {
                    request_id: r.varint()?,
                    track: FullTrackName::decode(r)?,
                    parameters: Parameters::decode(r, $ty)?,
                })
            }

            fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
                put_varint(buf, self.request_id);
                self.track.encode(buf);
                self.parameters.encode(buf, $ty)
            }
        }
    };
}
subscribe_like!(Subscribe, MessageType::Subscribe);
subscribe_like!(TrackStatus, MessageType::TrackStatus);

/// SUBSCRIBE_OK (§10.8).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscribeOk {
    /// Track Alias (§11.1).
    pub track_alias: u64,
    /// Parameters.
    pub parameters: Parameters,
    /// Track Properties (the rest of the message).
    pub track_properties: Properties,
}

impl SubscribeOk {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(SubscribeOk {
            track_alias: r.varint()?,
            parameters: Parameters::decode(r, MessageType::SubscribeOk)?,
            track_properties: Properties::decode_rest(r)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        put_varint(buf, self.track_alias);
        self.parameters.encode(buf, MessageType::SubscribeOk)?;
        self.track_properties.encode_rest(buf)
    }
}

/// REQUEST_UPDATE (§10.9).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestUpdate {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Parameters to change.
    pub parameters: Parameters,
}

impl RequestUpdate {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(RequestUpdate {
            request_id: r.varint()?,
            parameters: Parameters::decode(r, MessageType::RequestUpdate)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        put_varint(buf, self.request_id);
        self.parameters.encode(buf, MessageType::RequestUpdate)
    }
}

/// PUBLISH (§10.10).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Publish {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Track Namespace and Track Name.
    pub track: FullTrackName,
    /// Track Alias (§11.1).
    pub track_alias: u64,
    /// Parameters.
    pub parameters: Parameters,
    /// Track Properties (the rest of the message).
    pub track_properties: Properties,
}

impl Publish {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(Publish {
            request_id: r.varint()?,
            track: FullTrackName::decode(r)?,
            track_alias: r.varint()?,
            parameters: Parameters::decode(r, MessageType::Publish)?,
            track_properties: Properties::decode_rest(r)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        put_varint(buf, self.request_id);
        self.track.encode(buf);
        put_varint(buf, self.track_alias);
        self.parameters.encode(buf, MessageType::Publish)?;
        self.track_properties.encode_rest(buf)
    }
}

/// PUBLISH_DONE (§10.11).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublishDone {
    /// Status Code.
    pub status_code: PublishDoneCode,
    /// Number of data streams opened for the subscription, or
    /// [`STREAM_COUNT_UNKNOWN`].
    pub stream_count: u64,
    /// Error Reason.
    pub reason: ReasonPhrase,
}

impl PublishDone {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(PublishDone {
            status_code: PublishDoneCode::from_code(r.varint()?),
            stream_count: r.varint()?,
            reason: ReasonPhrase::decode(r)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        put_varint(buf, self.status_code.code());
        put_varint(buf, self.stream_count);
        self.reason.encode(buf)
    }
}

/// Standalone Fetch structure (§10.12.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StandaloneFetch {
    /// Track Namespace and Track Name.
    pub track: FullTrackName,
    /// Start Location.
    pub start: Location,
    /// End Location, plus one object; Object 0 requests the whole group.
    pub end: Location,
}

/// Joining Fetch structure (§10.12.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct JoiningFetch {
    /// Request ID of the subscription to join.
    pub joining_request_id: u64,
    /// Relative (groups before the Joining Location) or absolute start
    /// group, depending on the Fetch Type.
    pub joining_start: u64,
}

/// Fetch Type and its structure (§10.12 Table 6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FetchType {
    /// Standalone Fetch (0x1).
    Standalone(StandaloneFetch),
    /// Relative Joining Fetch (0x2).
    RelativeJoining(JoiningFetch),
    /// Absolute Joining Fetch (0x3).
    AbsoluteJoining(JoiningFetch),
}

impl FetchType {
    /// The Fetch Type code.
    pub fn code(&self) -> u64 {
        match self {
            FetchType::Standalone(_) => 0x1,
            FetchType::RelativeJoining(_) => 0x2,
            FetchType::AbsoluteJoining(_) => 0x3,
        }
    }
}

/// FETCH (§10.12.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fetch {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Fetch Type with its Standalone or Joining structure.
    pub fetch_type: FetchType,
    /// Parameters.
    pub parameters: Parameters,
}

impl Fetch {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        let request_id = r.varint()?;
        let joining = |r: &mut Reader<'_>| -> DResult<JoiningFetch> {
            Ok(JoiningFetch {
                joining_request_id: r.varint()?,
                joining_start: r.varint()?,
            })
        };
        let fetch_type = match r.varint()? {
            0x1 => FetchType::Standalone(StandaloneFetch {
                track: FullTrackName::decode(r)?,
                start: Location::decode(r)?,
                end: Location::decode(r)?,
            }),
            0x2 => FetchType::RelativeJoining(joining(r)?),
            0x3 => FetchType::AbsoluteJoining(joining(r)?),
            value => {
                return Err(DecodeError::InvalidValue {
                    field: "fetch type",
                    value,
                })
            }
        };
        Ok(Fetch {
            request_id,
            fetch_type,
            parameters: Parameters::decode(r, MessageType::Fetch)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        put_varint(buf, self.request_id);
        put_varint(buf, self.fetch_type.code());
        match &self.fetch_type {
            FetchType::Standalone(s) => {
                s.track.encode(buf);
                s.start.encode(buf);
                s.end.encode(buf);
            }
            FetchType::RelativeJoining(j) | FetchType::AbsoluteJoining(j) => {
                put_varint(buf, j.joining_request_id);
                put_varint(buf, j.joining_start);
            }
        }
        self.parameters.encode(buf, MessageType::Fetch)
    }
}

/// FETCH_OK (§10.13).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FetchOk {
    /// End Of Track (8 bits, 0 or 1).
    pub end_of_track: bool,
    /// End Location: last Object plus one, or Object 0 for the whole group.
    pub end_location: Location,
    /// Parameters (draft-18 defines none for FETCH_OK).
    pub parameters: Parameters,
    /// Track Properties (the rest of the message).
    pub track_properties: Properties,
}

impl FetchOk {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        let end_of_track = match r.u8()? {
            0 => false,
            1 => true,
            value => {
                return Err(DecodeError::InvalidValue {
                    field: "end of track",
                    value: value.into(),
                })
            }
        };
        Ok(FetchOk {
            end_of_track,
            end_location: Location::decode(r)?,
            parameters: Parameters::decode(r, MessageType::FetchOk)?,
            track_properties: Properties::decode_rest(r)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        buf.put_u8(u8::from(self.end_of_track));
        self.end_location.encode(buf);
        self.parameters.encode(buf, MessageType::FetchOk)?;
        self.track_properties.encode_rest(buf)
    }
}

/// PUBLISH_NAMESPACE (§10.15).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishNamespace {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Track Namespace.
    pub namespace: TrackNamespace,
    /// Parameters.
    pub parameters: Parameters,
}

/// SUBSCRIBE_NAMESPACE (§10.18).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscribeNamespace {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Track Namespace Prefix (0 to 32 fields).
    pub prefix: TrackNamespace,
    /// Parameters.
    pub parameters: Parameters,
}

/// SUBSCRIBE_TRACKS (§10.19).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscribeTracks {
    /// Request ID (§10.1).
    pub request_id: u64,
    /// Track Namespace Prefix (0 to 32 fields).
    pub prefix: TrackNamespace,
    /// Parameters.
    pub parameters: Parameters,
}

macro_rules! namespace_request {
    ($t:ident, $field:ident, $ty:expr) => {
        impl $t {
            fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
                Ok($t {
                    request_id: r.varint()?,
                    $field: TrackNamespace::decode(r)?,
                    parameters: Parameters::decode(r, $ty)?,
                })
            }

            fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
                put_varint(buf, self.request_id);
                self.$field.encode(buf);
                self.parameters.encode(buf, $ty)
            }
        }
    };
}
namespace_request!(PublishNamespace, namespace, MessageType::PublishNamespace);
namespace_request!(SubscribeNamespace, prefix, MessageType::SubscribeNamespace);
namespace_request!(SubscribeTracks, prefix, MessageType::SubscribeTracks);

/// NAMESPACE (§10.16).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Track Namespace Suffix (after the SUBSCRIBE_NAMESPACE prefix).
    pub suffix: TrackNamespace,
}

/// NAMESPACE_DONE (§10.17).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NamespaceDone {
    /// Track Namespace Suffix (after the SUBSCRIBE_NAMESPACE prefix).
    pub suffix: TrackNamespace,
}

macro_rules! suffix_only {
    ($t:ident) => {
        impl $t {
            fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
                Ok($t {
                    suffix: TrackNamespace::decode(r)?,
                })
            }

            fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
                self.suffix.encode(buf);
                Ok(())
            }
        }
    };
}
suffix_only!(Namespace);
suffix_only!(NamespaceDone);

/// PUBLISH_BLOCKED (§10.20).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishBlocked {
    /// Track Namespace Suffix (after the SUBSCRIBE_TRACKS prefix) and Track
    /// Name.
    pub track: FullTrackName,
}

impl PublishBlocked {
    fn decode_payload(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(PublishBlocked {
            track: FullTrackName::decode(r)?,
        })
    }

    fn encode_payload(&self, buf: &mut Vec<u8>) -> EResult<()> {
        self.track.encode(buf);
        Ok(())
    }
}

/// Any control message (§10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ControlMessage {
    /// SETUP (0x2F00).
    Setup(Setup),
    /// GOAWAY (0x10).
    GoAway(GoAway),
    /// SUBSCRIBE (0x3).
    Subscribe(Subscribe),
    /// SUBSCRIBE_OK (0x4).
    SubscribeOk(SubscribeOk),
    /// PUBLISH (0x1D).
    Publish(Publish),
    /// PUBLISH_OK under the type 0x1E that Table 5 still lists; same layout
    /// as REQUEST_OK. Send [`ControlMessage::RequestOk`] instead (§10.5).
    PublishOk(RequestOk),
    /// PUBLISH_DONE (0xB).
    PublishDone(PublishDone),
    /// FETCH (0x16).
    Fetch(Fetch),
    /// FETCH_OK (0x18).
    FetchOk(FetchOk),
    /// TRACK_STATUS (0xD).
    TrackStatus(TrackStatus),
    /// PUBLISH_NAMESPACE (0x6).
    PublishNamespace(PublishNamespace),
    /// SUBSCRIBE_NAMESPACE (0x50).
    SubscribeNamespace(SubscribeNamespace),
    /// SUBSCRIBE_TRACKS (0x51).
    SubscribeTracks(SubscribeTracks),
    /// NAMESPACE (0x8).
    Namespace(Namespace),
    /// NAMESPACE_DONE (0xE).
    NamespaceDone(NamespaceDone),
    /// PUBLISH_BLOCKED (0xF).
    PublishBlocked(PublishBlocked),
    /// REQUEST_UPDATE (0x2).
    RequestUpdate(RequestUpdate),
    /// REQUEST_OK (0x7).
    RequestOk(RequestOk),
    /// REQUEST_ERROR (0x5).
    RequestError(RequestError),
}

macro_rules! from_message {
    ($($var:ident($t:ty)),* $(,)?) => {
        $(impl From<$t> for ControlMessage {
            fn from(m: $t) -> Self {
                ControlMessage::$var(m)
            }
        })*
    };
}
from_message!(
    Setup(Setup),
    GoAway(GoAway),
    Subscribe(Subscribe),
    SubscribeOk(SubscribeOk),
    Publish(Publish),
    PublishDone(PublishDone),
    Fetch(Fetch),
    FetchOk(FetchOk),
    TrackStatus(TrackStatus),
    PublishNamespace(PublishNamespace),
    SubscribeNamespace(SubscribeNamespace),
    SubscribeTracks(SubscribeTracks),
    Namespace(Namespace),
    NamespaceDone(NamespaceDone),
    PublishBlocked(PublishBlocked),
    RequestUpdate(RequestUpdate),
    RequestOk(RequestOk),
    RequestError(RequestError),
);

impl ControlMessage {
    /// The message type.
    pub fn message_type(&self) -> MessageType {
        match self {
            ControlMessage::Setup(_) => MessageType::Setup,
            ControlMessage::GoAway(_) => MessageType::GoAway,
            ControlMessage::Subscribe(_) => MessageType::Subscribe,
            ControlMessage::SubscribeOk(_) => MessageType::SubscribeOk,
            ControlMessage::Publish(_) => MessageType::Publish,
            ControlMessage::PublishOk(_) => MessageType::PublishOk,
            ControlMessage::PublishDone(_) => MessageType::PublishDone,
            ControlMessage::Fetch(_) => MessageType::Fetch,
            ControlMessage::FetchOk(_) => MessageType::FetchOk,
            ControlMessage::TrackStatus(_) => MessageType::TrackStatus,
            ControlMessage::PublishNamespace(_) => MessageType::PublishNamespace,
            ControlMessage::SubscribeNamespace(_) => MessageType::SubscribeNamespace,
            ControlMessage::SubscribeTracks(_) => MessageType::SubscribeTracks,
            ControlMessage::Namespace(_) => MessageType::Namespace,
            ControlMessage::NamespaceDone(_) => MessageType::NamespaceDone,
            ControlMessage::PublishBlocked(_) => MessageType::PublishBlocked,
            ControlMessage::RequestUpdate(_) => MessageType::RequestUpdate,
            ControlMessage::RequestOk(_) => MessageType::RequestOk,
            ControlMessage::RequestError(_) => MessageType::RequestError,
        }
    }

    /// Decode one framed message from the front of `buf` and advance past
    /// it. [`DecodeError::Incomplete`] (nothing consumed) until the whole
    /// message is buffered; any other error is fatal for the session.
    pub fn decode<B: Buf + ?Sized>(buf: &mut B) -> Result<Self, DecodeError> {
        io::decode_buf(buf, Self::parse)
    }

    /// Like [`ControlMessage::decode`], with "incomplete" as `Ok(None)`.
    pub fn try_decode<B: Buf + ?Sized>(buf: &mut B) -> Result<Option<Self>, DecodeError> {
        match Self::decode(buf) {
            Ok(m) => Ok(Some(m)),
            Err(DecodeError::Incomplete) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Append the framed message (type, 16-bit length, payload). Fails,
    /// writing nothing, if the payload would exceed
    /// [`MAX_CONTROL_MESSAGE_LEN`] or a field breaks a limit.
    pub fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> Result<(), EncodeError> {
        let mut payload = Vec::new();
        match self {
            ControlMessage::Setup(m) => m.encode_payload(&mut payload)?,
            ControlMessage::GoAway(m) => m.encode_payload(&mut payload)?,
            ControlMessage::Subscribe(m) => m.encode_payload(&mut payload)?,
            ControlMessage::SubscribeOk(m) => m.encode_payload(&mut payload)?,
            ControlMessage::Publish(m) => m.encode_payload(&mut payload)?,
            ControlMessage::PublishOk(m) => {
                m.encode_payload(&mut payload, MessageType::PublishOk)?
            }
            ControlMessage::PublishDone(m) => m.encode_payload(&mut payload)?,
            ControlMessage::Fetch(m) => m.encode_payload(&mut payload)?,
            ControlMessage::FetchOk(m) => m.encode_payload(&mut payload)?,
            ControlMessage::TrackStatus(m) => m.encode_payload(&mut payload)?,
            ControlMessage::PublishNamespace(m) => m.encode_payload(&mut payload)?,
            ControlMessage::SubscribeNamespace(m) => m.encode_payload(&mut payload)?,
            ControlMessage::SubscribeTracks(m) => m.encode_payload(&mut payload)?,
            ControlMessage::Namespace(m) => m.encode_payload(&mut payload)?,
            ControlMessage::NamespaceDone(m) => m.encode_payload(&mut payload)?,
            ControlMessage::PublishBlocked(m) => m.encode_payload(&mut payload)?,
            ControlMessage::RequestUpdate(m) => m.encode_payload(&mut payload)?,
            ControlMessage::RequestOk(m) => {
                m.encode_payload(&mut payload, MessageType::RequestOk)?
            }
            ControlMessage::RequestError(m) => m.encode_payload(&mut payload)?,
        }
        check_len(
            "control message payload",
            payload.len(),
            MAX_CONTROL_MESSAGE_LEN,
        )?;
        put_varint(buf, self.message_type().code());
        buf.put_u16(payload.len() as u16);
        buf.put_slice(&payload);
        Ok(())
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(Bytes::from(v))
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> DResult<Self> {
        let code = r.varint()?;
        let ty = MessageType::from_code(code).ok_or(DecodeError::UnknownMessageType(code))?;
        let len = r.u16()?;
        let mut p = r.sub(u64::from(len), "control message")?;
        let p = &mut p;
        let msg = match ty {
            MessageType::Setup => ControlMessage::Setup(Setup::decode_payload(p)?),
            MessageType::GoAway => ControlMessage::GoAway(GoAway::decode_payload(p)?),
            MessageType::Subscribe => ControlMessage::Subscribe(Subscribe::decode_payload(p)?),
            MessageType::SubscribeOk => {
                ControlMessage::SubscribeOk(SubscribeOk::decode_payload(p)?)
            }
            MessageType::Publish => ControlMessage::Publish(Publish::decode_payload(p)?),
            MessageType::PublishOk => ControlMessage::PublishOk(RequestOk::decode_payload(p, ty)?),
            MessageType::PublishDone => {
                ControlMessage::PublishDone(PublishDone::decode_payload(p)?)
            }
            MessageType::Fetch => ControlMessage::Fetch(Fetch::decode_payload(p)?),
            MessageType::FetchOk => ControlMessage::FetchOk(FetchOk::decode_payload(p)?),
            MessageType::TrackStatus => {
                ControlMessage::TrackStatus(TrackStatus::decode_payload(p)?)
            }
            MessageType::PublishNamespace => {
                ControlMessage::PublishNamespace(PublishNamespace::decode_payload(p)?)
            }
            MessageType::SubscribeNamespace => {
                ControlMessage::SubscribeNamespace(SubscribeNamespace::decode_payload(p)?)
            }
            MessageType::SubscribeTracks => {
                ControlMessage::SubscribeTracks(SubscribeTracks::decode_payload(p)?)
            }
            MessageType::Namespace => ControlMessage::Namespace(Namespace::decode_payload(p)?),
            MessageType::NamespaceDone => {
                ControlMessage::NamespaceDone(NamespaceDone::decode_payload(p)?)
            }
            MessageType::PublishBlocked => {
                ControlMessage::PublishBlocked(PublishBlocked::decode_payload(p)?)
            }
            MessageType::RequestUpdate => {
                ControlMessage::RequestUpdate(RequestUpdate::decode_payload(p)?)
            }
            MessageType::RequestOk => ControlMessage::RequestOk(RequestOk::decode_payload(p, ty)?),
            MessageType::RequestError => {
                ControlMessage::RequestError(RequestError::decode_payload(p)?)
            }
        };
        p.finish("control message")?;
        Ok(msg)
    }
}
