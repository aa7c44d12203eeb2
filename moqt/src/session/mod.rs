//! Sans-IO MOQT session state machine (draft-ietf-moq-transport-18).
//!
//! A [`Session`] sees transport streams only through [`StreamRef`] handles
//! and bytes: the driver (a quinn-proto worker loop, a quinn/tokio client,
//! or an in-memory test harness) feeds it what arrives
//! ([`Session::on_peer_stream`], [`Session::on_stream_data`],
//! [`Session::on_stream_reset`], [`Session::on_stop_sending`],
//! [`Session::on_datagram`]) and carries out the [`Command`]s it emits
//! ([`Session::poll_command`]): open streams, write `Bytes`, finish, reset,
//! stop sending, send datagrams, close the connection. The application
//! reads [`Event`]s ([`Session::poll_event`]) and acts through the
//! request, response and object methods. No I/O, no async, no clocks.
//!
//! # Implemented
//!
//! * Session initialization (§3.3): each side opens its control stream
//!   with SETUP at construction; [`Event::Ready`] once the peer's SETUP
//!   arrives. Request streams and object streams (and datagrams) arriving
//!   earlier are buffered, bounded by [`MAX_PRE_SETUP_STREAMS`],
//!   [`MAX_PRE_SETUP_STREAM_BYTES`] and [`MAX_PRE_SETUP_DATAGRAMS`];
//!   beyond the bounds they are reset / dropped (§3.3 allows it).
//!   A server's SETUP carrying PATH closes with INVALID_PATH (§3.5).
//! * Control stream rules (§3.3, §3.4, Table 5): a second control stream,
//!   any message other than GOAWAY after SETUP, a FIN, RESET_STREAM or
//!   STOP_SENDING on a control stream close with PROTOCOL_VIOLATION;
//!   unknown unidirectional stream types close the session (§3.4).
//! * Requests (§3.3, §10.1): one bidirectional stream per request; the
//!   first message must be one of the seven request types
//!   ([`MessageType::starts_request_stream`](crate::MessageType::starts_request_stream)), else PROTOCOL_VIOLATION.
//!   Request IDs: client even from 0, server odd from 1, +2; wrong parity
//!   or a duplicate (including REQUEST_UPDATE's own ID) closes with
//!   INVALID_REQUEST_ID. Duplicate detection is bounded
//!   ([`MAX_REQUEST_ID_HOLES`]). Responses are checked against the request
//!   they answer (SUBSCRIBE_OK only for SUBSCRIBE, FETCH_OK only for
//!   FETCH, REQUEST_OK for the others or for a REQUEST_UPDATE, NAMESPACE /
//!   NAMESPACE_DONE / PUBLISH_BLOCKED only on namespace streams,
//!   PUBLISH_DONE from the publisher of an established subscription, at
//!   most one GOAWAY per stream, §10.4); violations close with
//!   PROTOCOL_VIOLATION.
//! * Cancellation (§3.3.2, §3.3.3): [`Session::cancel`] resets and stops
//!   both directions with a [`StreamResetCode`]; a peer's RESET_STREAM or
//!   STOP_SENDING on a request stream ends the request locally (the other
//!   direction is reset / stopped too) and surfaces as
//!   [`Event::RequestCancelled`].
//! * Track aliases (§10.8, §10.10, §11.1): the publisher side assigns them
//!   (SUBSCRIBE_OK, PUBLISH); a duplicate alias from the peer closes with
//!   DUPLICATE_TRACK_ALIAS. Aliases are freed when their request ends.
//! * Objects (§11): subgroup streams decoded with [`SubgroupDecoder`](crate::SubgroupDecoder),
//!   OBJECT_DATAGRAMs with [`Datagram`](crate::Datagram), both surfaced as
//!   [`Event::Object`] with zero-copy payloads (an object spanning several
//!   received chunks is assembled once). Sending: [`Session::send_object`]
//!   opens one unidirectional stream per (alias, group, subgroup), writes
//!   the header, and each object as a small header write plus the payload
//!   `Bytes` untouched; [`Session::end_subgroup`], [`Session::reset_subgroup`],
//!   [`Session::send_datagram`]. Cut-through (opt-in,
//!   [`SessionConfig::cut_through_bytes`]): a long object on a subgroup
//!   stream is surfaced in parts ([`Object::part`]) as it arrives, and
//!   [`Session::send_object_part`] writes one out the same way.
//!   FETCH_HEADER streams for our FETCHes are
//!   decoded ([`Event::FetchObject`]); the publisher side sends them with
//!   [`Session::open_fetch_stream`] / [`Session::send_fetch_object`].
//!   Padding streams and datagrams are discarded (§11.5).
//! * Termination (§3.5): any malformed input closes with the code of
//!   [`DecodeError::session_error_code`](crate::DecodeError::session_error_code) ([`Command::Close`] plus
//!   [`Event::Closed`]); afterwards every input is ignored. A decode error
//!   without a session code (a malformed track, §2.4.2) on a data stream
//!   stops that stream with MALFORMED_TRACK instead. The driver reports a
//!   connection closed from outside with [`Session::on_connection_closed`]. GOAWAY
//!   ([`Session::go_away`]; a client's URI must be empty, a received
//!   non-empty one from a client closes with PROTOCOL_VIOLATION; a second
//!   GOAWAY closes with PROTOCOL_VIOLATION) surfaces as [`Event::GoAway`];
//!   after receiving one, new local requests fail with
//!   [`SessionError::GoingAway`] (§10.4 "SHOULD NOT initiate").
//!
//! # Not implemented
//!
//! * Timers of any kind (GOAWAY_TIMEOUT, CONTROL_MESSAGE_TIMEOUT,
//!   DATA_STREAM_TIMEOUT, delivery timeouts, §8): the driver owns clocks.
//! * Authorization tokens and the token alias cache (§10.2.2), AUTHORITY
//!   and PATH syntax checks, extension negotiation (§3.2).
//! * Subscription semantics: filters, forward state, largest location,
//!   joining-fetch range checks, FETCH_OK range checks, priorities — those
//!   are the relay engine's; the session only carries the messages.
//! * Objects whose Track Alias is unknown are surfaced with
//!   `request: None` rather than buffered or dropped; the application
//!   decides.
//! * Outgoing subgroup streams always set the PROPERTIES bit (one extra
//!   byte per object) so objects may carry properties; the FIRST_OBJECT
//!   and END_OF_GROUP header bits are set only as the caller passes them
//!   ([`Session::send_object_flagged`]).
//! * Bounds: an object on a data stream declaring a payload over
//!   [`SessionConfig::max_object_size`] stops its stream with
//!   EXCESSIVE_LOAD as soon as its header is read; all streams' buffers together
//!   are bounded by [`SessionConfig::max_buffered_bytes`]
//!   ([`Session::buffered_bytes`] reports what they hold, so the driver
//!   can tie flow-control credit to it).

mod control;
mod incoming;
mod objects;
mod outbox;
mod outgoing;
mod requests;
mod state;
mod stream;
mod table;

use bytes::Bytes;

use crate::codes::{SessionErrorCode, StreamResetCode};
use crate::data::fetch::{EndOfRange, FetchObject};
use crate::data::ObjectStatus;
use crate::error::EncodeError;
use crate::message::ControlMessage;
use crate::properties::Properties;
use crate::setup::Setup;
use crate::types::Location;

pub use state::Session;

/// Maximum number of peer-opened streams buffered before the peer's SETUP
/// arrives (§3.3); further streams are reset / stopped with EXCESSIVE_LOAD.
pub const MAX_PRE_SETUP_STREAMS: usize = 64;
/// Maximum bytes buffered per peer-opened stream before the peer's SETUP
/// arrives (§3.3); beyond it the stream is reset / stopped.
pub const MAX_PRE_SETUP_STREAM_BYTES: usize = 64 * 1024;
/// Maximum datagrams buffered before the peer's SETUP; later ones are
/// dropped (datagrams are unreliable anyway).
pub const MAX_PRE_SETUP_DATAGRAMS: usize = 64;
/// Maximum concurrent requests in each direction. Local requests beyond it
/// fail with [`SessionError::TooManyRequests`]; peer requests beyond it
/// are answered with REQUEST_ERROR (EXCESSIVE_LOAD) and never surfaced.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// How many unused peer Request IDs below the highest seen are remembered
/// for duplicate detection (§10.1). Older gaps are forgotten: an ID that
/// arrives that late counts as a duplicate.
pub const MAX_REQUEST_ID_HOLES: usize = 4096;
/// Default for [`SessionConfig::max_object_size`].
pub const DEFAULT_MAX_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// Default for [`SessionConfig::max_buffered_bytes`].
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;

/// Counts of what a [`Session`] holds ([`Session::footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFootprint {
    /// Streams tracked (open in at least one direction).
    pub streams: usize,
    /// Requests in either direction not finished yet.
    pub requests: usize,
    /// Track aliases, ours and the peer's.
    pub aliases: usize,
    /// Outgoing subgroup streams open.
    pub out_subgroups: usize,
    /// Receive-buffer memory (see [`SessionConfig::max_buffered_bytes`]).
    pub buffered_bytes: usize,
}

impl SessionFootprint {
    /// Adds another session's counts (totals over connections).
    pub fn add(&mut self, o: &SessionFootprint) {
        self.streams += o.streams;
        self.requests += o.requests;
        self.aliases += o.aliases;
        self.out_subgroups += o.out_subgroups;
        self.buffered_bytes += o.buffered_bytes;
    }
}

/// The session's handle for one transport stream. The driver keeps the
/// mapping to the real stream IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamRef(pub u64);

/// A Request ID (§10.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Which end of the connection this session is (§10.1 parity, §10.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The QUIC client: even Request IDs.
    Client,
    /// The QUIC server: odd Request IDs.
    Server,
}

/// Session configuration.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The SETUP this endpoint sends on its control stream (§10.3).
    pub setup: Setup,
    /// Largest object payload accepted on an incoming data stream: one
    /// declaring more stops the stream with EXCESSIVE_LOAD once its header
    /// is read (nor may a buffered object with its header exceed it).
    pub max_object_size: usize,
    /// Most memory the receive buffers of all streams together may hold
    /// (incomplete objects and messages). Beyond it the data streams
    /// holding the most are stopped with EXCESSIVE_LOAD until it fits; if
    /// control or request messages hold it, the session is closed with
    /// EXCESSIVE_LOAD.
    pub max_buffered_bytes: usize,
    /// Cut-through delivery: an object on a subgroup stream whose payload
    /// is longer than this is delivered in parts ([`Object::part`]) as it
    /// arrives, each part at least this long (the last may be shorter),
    /// instead of buffered whole. A stream then holds at most about this
    /// much. `None` (the default): objects are delivered whole.
    pub cut_through_bytes: Option<usize>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            setup: Setup::default(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            cut_through_bytes: None,
        }
    }
}

/// What the driver must do on the transport, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Open a unidirectional stream and bind it to this handle.
    OpenUni(StreamRef),
    /// Open a bidirectional stream and bind it to this handle.
    OpenBi(StreamRef),
    /// Append `data` to the stream, then finish it if `fin`.
    Write {
        /// The stream.
        stream: StreamRef,
        /// Bytes to send (an object payload is passed through untouched).
        data: Bytes,
        /// Finish the stream after the data.
        fin: bool,
    },
    /// Finish the stream (FIN) without more data.
    Finish(StreamRef),
    /// RESET_STREAM the sending side.
    Reset {
        /// The stream.
        stream: StreamRef,
        /// §3.3.3 code.
        code: StreamResetCode,
    },
    /// STOP_SENDING on the receiving side.
    StopSending {
        /// The stream.
        stream: StreamRef,
        /// §3.3.3 code.
        code: StreamResetCode,
    },
    /// Send one QUIC DATAGRAM.
    SendDatagram(Bytes),
    /// Close the connection (§3.5). Always the last command.
    Close {
        /// Termination code.
        code: SessionErrorCode,
        /// Reason phrase.
        reason: String,
    },
}

/// How a request or data stream was ended by the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAbort {
    /// The peer reset its sending side (RESET_STREAM).
    Reset(StreamResetCode),
    /// The peer asked us to stop sending (STOP_SENDING).
    StopSending(StreamResetCode),
}

/// An object received on a subgroup stream or in a datagram (§11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Track Alias from the header (§11.1).
    pub track_alias: u64,
    /// The subscription or PUBLISH that registered the alias, if known.
    pub request: Option<RequestId>,
    /// Group and Object ID.
    pub location: Location,
    /// Subgroup ID; `None` for datagrams.
    pub subgroup: Option<u64>,
    /// Publisher Priority; `None` when the header says "use the default".
    pub publisher_priority: Option<u8>,
    /// Object Status.
    pub status: ObjectStatus,
    /// Object Properties.
    pub properties: Properties,
    /// Payload: a slice of the received bytes.
    pub payload: Bytes,
    /// Datagram END_OF_GROUP bit or subgroup header END_OF_GROUP bit.
    pub end_of_group: bool,
    /// The first object ever published in its subgroup: the first object
    /// of a stream whose header has the FIRST_OBJECT bit (§2.2).
    pub first_object: bool,
    /// The stream it arrived on; `None` for datagrams.
    pub stream: Option<StreamRef>,
    /// `None`: `payload` is the whole object. `Some`: one part of an object
    /// delivered while it streams in ([`SessionConfig::cut_through_bytes`]);
    /// parts come in order, the first (offset 0) carrying the properties,
    /// later ones only payload bytes.
    pub part: Option<PayloadPart>,
}

/// Where a part of an object sits in the object's payload (cut-through
/// delivery and sending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadPart {
    /// Offset of the part's first byte in the payload.
    pub offset: u64,
    /// The whole payload's length (its Object Payload Length).
    pub length: u64,
}

impl PayloadPart {
    /// The part that starts the object.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }

    /// Whether a part of `len` bytes at this offset ends the object.
    pub fn ends_with(&self, len: usize) -> bool {
        self.offset.saturating_add(len as u64) >= self.length
    }
}

/// An object to send with [`Session::send_object`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingObject {
    /// Track Alias of the subscription (assigned by this session).
    pub track_alias: u64,
    /// Group and Object ID; Object IDs must increase within a subgroup.
    pub location: Location,
    /// Subgroup ID.
    pub subgroup: u64,
    /// Publisher Priority written in the subgroup header when the stream
    /// is opened; `None` uses the default (§11.4.2).
    pub publisher_priority: Option<u8>,
    /// Object Status (Normal unless the payload is empty).
    pub status: ObjectStatus,
    /// Object Properties.
    pub properties: Properties,
    /// Payload, written as its own `Bytes` (zero-copy).
    pub payload: Bytes,
}

/// Header bits of a subgroup stream that a relay passes on (§11.4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamFlags {
    /// END_OF_GROUP: the subgroup holds its group's largest object.
    pub end_of_group: bool,
    /// FIRST_OBJECT: the stream starts with the subgroup's first object.
    pub first_object: bool,
}

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's SETUP arrived (§3.3); buffered streams are processed now.
    Ready {
        /// The peer's SETUP options.
        peer_setup: Setup,
    },
    /// A new request from the peer: the first message of a request stream
    /// (SUBSCRIBE, PUBLISH, FETCH, TRACK_STATUS, PUBLISH_NAMESPACE,
    /// SUBSCRIBE_NAMESPACE or SUBSCRIBE_TRACKS).
    Request {
        /// Its Request ID.
        id: RequestId,
        /// The message.
        message: ControlMessage,
    },
    /// A later message on a request stream: a response (SUBSCRIBE_OK,
    /// REQUEST_OK, REQUEST_ERROR, FETCH_OK), PUBLISH_DONE, NAMESPACE,
    /// NAMESPACE_DONE, PUBLISH_BLOCKED, REQUEST_UPDATE (whose own
    /// Request ID is inside the message), or GOAWAY for this request.
    Message {
        /// The request whose stream carried it.
        id: RequestId,
        /// The message.
        message: ControlMessage,
    },
    /// The peer finished (FIN) its side of a request stream.
    PeerFinished {
        /// The request.
        id: RequestId,
    },
    /// The peer cancelled a request (§3.3.2); the request is gone.
    RequestCancelled {
        /// The request.
        id: RequestId,
        /// How.
        abort: PeerAbort,
    },
    /// GOAWAY received on the control stream (§10.4).
    GoAway {
        /// New Session URI (empty: reuse the current one).
        new_session_uri: Bytes,
        /// Timeout, milliseconds.
        timeout: u64,
    },
    /// An object (subgroup stream or datagram).
    Object(Object),
    /// A subgroup stream ended: FIN (`abort == None`) or reset.
    SubgroupEnded {
        /// The stream.
        stream: StreamRef,
        /// Track Alias from its header.
        track_alias: u64,
        /// Group ID.
        group: u64,
        /// Subgroup ID, if known.
        subgroup: Option<u64>,
        /// Reset code, or `None` for a clean FIN.
        abort: Option<StreamResetCode>,
    },
    /// The peer sent STOP_SENDING on one of our subgroup streams; the
    /// session reset it and forgot it.
    SubgroupStopped {
        /// Track Alias.
        track_alias: u64,
        /// Group ID.
        group: u64,
        /// Subgroup ID.
        subgroup: u64,
        /// STOP_SENDING code.
        code: StreamResetCode,
    },
    /// An object on the FETCH_HEADER stream answering our FETCH (§11.4.4).
    FetchObject {
        /// The FETCH.
        id: RequestId,
        /// The object.
        object: FetchObject,
    },
    /// An End of Range marker on a fetch stream (§11.4.4.2).
    FetchEndOfRange {
        /// The FETCH.
        id: RequestId,
        /// The marker.
        end: EndOfRange,
    },
    /// The fetch stream ended: FIN (`abort == None`) or reset.
    FetchEnded {
        /// The FETCH.
        id: RequestId,
        /// Reset code, or `None` for a clean FIN.
        abort: Option<StreamResetCode>,
    },
    /// The session is closed (by either side's violation or the
    /// application); nothing else follows.
    Closed {
        /// Termination code.
        code: SessionErrorCode,
        /// Reason.
        reason: String,
    },
}

/// Why an application call was refused. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is closed.
    #[error("session closed ({0:?})")]
    Closed(SessionErrorCode),
    /// No such request (never existed, or already ended).
    #[error("unknown request {0:?}")]
    UnknownRequest(RequestId),
    /// No subscription of ours uses this Track Alias.
    #[error("unknown track alias {0}")]
    UnknownTrackAlias(u64),
    /// A GOAWAY was received; no new requests (§10.4).
    #[error("the peer sent GOAWAY")]
    GoingAway,
    /// [`MAX_CONCURRENT_REQUESTS`] local requests are open.
    #[error("too many concurrent requests")]
    TooManyRequests,
    /// The call does not fit the request's state.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// The message or object cannot be encoded.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}
