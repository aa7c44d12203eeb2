//! Sans-IO wire codec for Media over QUIC Transport,
//! draft-ietf-moq-transport-18 (MOQT).
//!
//! No I/O, no async, no transport types: values are encoded into any
//! [`bytes::BufMut`] and decoded from any [`bytes::Buf`]. Byte fields
//! (payloads, names, property values) are [`bytes::Bytes`] slices of the
//! input, zero-copy when the input is `Bytes` or `BytesMut`.
//!
//! # Decoding from a stream
//!
//! Stream decoders ([`ControlMessage::decode`], [`UniStreamHeader::decode`],
//! [`SubgroupDecoder`], [`FetchDecoder`]) read one item from the front of
//! the buffer. They return [`DecodeError::Incomplete`] (consuming nothing)
//! while the item is not entirely buffered, so a reader appends what it
//! receives and calls again; every other [`DecodeError`] means the input is
//! malformed, and [`DecodeError::session_error_code`] names the termination
//! code the draft prescribes. Datagrams are decoded whole
//! ([`Datagram::decode`]); truncation there is [`DecodeError::Truncated`].
//! Nothing panics on any input, and limits are the `MAX_*` constants.
//! Non-contiguous buffers (e.g. `Chain`) are read through
//! `Buf::chunks_vectored`, which every buffer type of `bytes` implements.
//!
//! # What is implemented
//!
//! * [`varint`]: the 1-9 byte integer of §1.4.1, selected by leading one
//!   bits (not the QUIC varint); non-minimal encodings are accepted as the
//!   draft requires.
//! * Common structures: [`Location`] (§1.4.2), Key-Value-Pairs with the
//!   even/odd type rule and delta-encoded types ([`kvp`], §1.4.3),
//!   [`ReasonPhrase`] (§1.4.4), [`TrackNamespace`] and [`FullTrackName`]
//!   with the 32-field and 4096-byte limits (§2.4.1) and their textual form
//!   (§1.5), [`Properties`] with accessors for every property of §12
//!   including Immutable Properties and the Mandatory Track Property range
//!   (§2.5.1).
//! * Control messages (§10): every message of Table 5 in
//!   [`ControlMessage`], framed as `Type (vi64), Length (16), Payload` with
//!   the 65535-byte limit; SETUP with its Setup Options (§10.3); Message
//!   Parameters (§10.2) as the typed [`Parameters`], including the
//!   Authorization Token structure and the Subscription Filter; the
//!   Redirect structure of REQUEST_ERROR (§10.6.1); Standalone and Joining
//!   FETCH (§10.12).
//! * Data plane (§11): stream types ([`UniStreamHeader`], [`StreamType`]),
//!   SUBGROUP_HEADER with every type bit and the object fields with Object
//!   ID deltas, status and properties ([`data::subgroup`]); FETCH_HEADER and
//!   fetch objects with serialization flags, group-order-aware deltas and
//!   End of Range markers ([`data::fetch`]); every OBJECT_DATAGRAM type
//!   ([`data::datagram`]); padding streams and datagrams (§11.5).
//! * Codes (§3.3.3, §3.5, §10.6.2, §10.11, §15.10): [`SessionErrorCode`],
//!   [`RequestErrorCode`], [`PublishDoneCode`], [`StreamResetCode`], with
//!   unknown (GREASE, §14) values preserved.
//!
//! # Left out, deliberately
//!
//! * In the codec, session state: Request ID parity and uniqueness (§10.1),
//!   Track Alias uniqueness, which message may come first or next on which
//!   stream. The codec gives the tables ([`MessageType::starts_request_stream`],
//!   [`parameter_allowed`]) and [`session`] enforces them; see its module
//!   doc for what the session leaves out (timers, the token alias cache of
//!   §10.2.2, role-dependent SETUP checks, FETCH/FETCH_OK range checks).
//! * Unknown Message Parameters and unknown control message types are
//!   errors, as §10.2 and §10 require: their encodings cannot be skipped,
//!   so parameters added by negotiated extensions cannot be carried.
//! * URI syntax of PATH, AUTHORITY, GOAWAY and Redirect URIs (§3.1.1) is not
//!   checked: those are bytes here, validated by the session
//!   (MALFORMED_PATH, MALFORMED_AUTHORITY).
//! * The draft sets no limit on Object Properties Length or Object Payload
//!   Length; callers must bound their own buffering (use
//!   [`SubgroupDecoder::decode_object_header`] and
//!   [`FetchDecoder::decode_item_header`] to stream large payloads).
//! * Encoders always write minimal varints and the most compact flags; a
//!   decoded value re-encodes to the same value, not always to the same
//!   bytes (e.g. a non-minimal varint, an explicit Object ID 0 in a
//!   datagram).
//!
//! # Ambiguities resolved
//!
//! * End of Range markers in fetch streams (§11.4.4.2) carry an absolute
//!   Group ID and Object ID and no Object Payload Length (the delta reading
//!   of 0x8C/0x10C cannot express a range ending in the prior group).
//! * In a fetch stream an Object ID Delta without a Group ID Delta adds to
//!   the prior Object ID without the "+1" of subgroup streams, as
//!   §11.4.4.1 words it; after a leading End of Range marker the next
//!   object's deltas are relative to the marker; an object with Datagram
//!   forwarding preference leaves no "prior Subgroup ID".
//! * RENDEZVOUS_TIMEOUT and FILL_TIMEOUT (§10.2.5-10.2.6) state no encoding;
//!   they are varints (milliseconds), like the other timeouts.
//! * TRACK_NAMESPACE_PREFIX (§10.2.14) is a bare Track Namespace, with no
//!   length prefix.
//! * PUBLISH_OK: Table 5 still lists type 0x1E while §10.5 makes PUBLISH_OK
//!   a REQUEST_OK (0x7). 0x1E is decoded with the REQUEST_OK layout
//!   ([`ControlMessage::PublishOk`]); senders should use REQUEST_OK.
//! * Which parameter may appear where follows the per-parameter lists of
//!   §10.2.2-10.2.14. REQUEST_OK serves five requests under one type, so it
//!   accepts the union of what those responses allow; TRACK_STATUS accepts
//!   only AUTHORIZATION_TOKEN and FETCH_OK none, as no other definition
//!   names them.
//! * An OBJECT_DATAGRAM without the STATUS bit and with an empty payload is
//!   accepted as a Normal zero-length object. Object Status values other
//!   than 0x0, 0x3, 0x4 are rejected (the draft says SHOULD).
//! * The Properties example of §11.6 ("Properties Length = 33", "Length =
//!   21" for the 14-byte "traceID:123456") only adds up with QUIC varints
//!   and a 21-byte value; the test vector here re-derives the lengths with
//!   the draft-18 integer (22 and 14).
//! * Property accessors use the meanings of §15.8 Table 14; the
//!   provisional LOC registrations of Table 15 reuse some of those types.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The ALPN of MoQT over raw QUIC for this draft (§3.1): `moqt-18`.
pub const ALPN: &[u8] = b"moqt-18";

pub mod codes;
pub mod data;
pub mod error;
mod io;
pub mod kvp;
pub mod message;
mod message_type;
pub mod names;
pub mod params;
pub mod properties;
pub mod session;
pub mod setup;
pub mod types;
pub mod varint;

pub use codes::{is_grease, PublishDoneCode, RequestErrorCode, SessionErrorCode, StreamResetCode};
pub use data::datagram::{Datagram, DatagramContent, ObjectDatagram};
pub use data::fetch::{
    EndOfRange, EndOfRangeKind, FetchDecoder, FetchEncoder, FetchHeader, FetchItem,
    FetchItemHeader, FetchObject, FetchObjectHeader,
};
pub use data::stream::{StreamType, UniStreamHeader};
pub use data::subgroup::{
    SubgroupDecoder, SubgroupEncoder, SubgroupHeader, SubgroupId, SubgroupObject,
    SubgroupObjectHeader,
};
pub use data::ObjectStatus;
pub use error::{DecodeError, EncodeError};
pub use kvp::{KeyValuePair, KvValue, MAX_KVP_VALUE_LEN};
pub use message::{
    ControlMessage, Fetch, FetchOk, FetchType, GoAway, JoiningFetch, MessageType, Namespace,
    NamespaceDone, Publish, PublishBlocked, PublishDone, PublishNamespace, Redirect, RequestError,
    RequestOk, RequestUpdate, StandaloneFetch, Subscribe, SubscribeNamespace, SubscribeOk,
    SubscribeTracks, TrackStatus, MAX_CONTROL_MESSAGE_LEN, MAX_GOAWAY_URI_LEN,
    STREAM_COUNT_UNKNOWN,
};
pub use names::{
    FullTrackName, NameParseError, TrackNamespace, MAX_FULL_TRACK_NAME_LEN, MAX_NAMESPACE_FIELDS,
};
pub use params::{
    parameter_allowed, AuthToken, Parameters, SubscriptionFilter, DEFAULT_SUBSCRIBER_PRIORITY,
};
pub use properties::{Properties, DEFAULT_PUBLISHER_PRIORITY};
pub use session::Session;
pub use setup::{Setup, SetupOption};
pub use types::{GroupOrder, Location, ReasonPhrase, MAX_REASON_PHRASE_LEN};
