//! One stream as the session sees it: what it carries and, on the receive
//! side, the bytes not decoded yet and the decoder of a subgroup stream,
//! including an object being delivered in parts (cut-through).

use bytes::{Buf, BytesMut};

use super::outbox::Outbox;
use super::{Event, Object, PayloadPart, RequestId, StreamRef};
use crate::codes::StreamResetCode;
use crate::data::fetch::FetchDecoder;
use crate::data::subgroup::{SubgroupDecoder, SubgroupHeader};
use crate::data::ObjectStatus;
use crate::error::DecodeError;
use crate::properties::Properties;
use crate::types::Location;

/// What a stream is, as far as the session knows.
#[derive(Debug)]
pub(super) enum Kind {
    /// Peer-opened unidirectional stream whose type is not read yet.
    PendingUni,
    /// Peer-opened bidirectional stream whose first message is not read yet.
    PendingBidi,
    /// The peer's control stream.
    ControlRecv,
    /// Our control stream.
    ControlSend,
    /// A request stream (either side opened it).
    Request(RequestId),
    /// Incoming subgroup stream.
    Subgroup(SubgroupIn),
    /// Incoming fetch stream for one of our FETCHes.
    Fetch(RequestId, FetchDecoder),
    /// Incoming data to be ignored (padding, stopped streams).
    Discard,
    /// Our outgoing data stream (subgroup or fetch).
    DataSend,
}

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) kind: Kind,
    /// Bytes received but not yet decoded (an incomplete item).
    pub(super) buf: BytesMut,
    pub(super) fin: bool,
}

impl Stream {
    pub(super) fn new(kind: Kind) -> Self {
        Stream {
            kind,
            buf: BytesMut::new(),
            fin: false,
        }
    }

    /// Memory the receive buffer holds (its capacity: what it costs).
    pub(super) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// An incoming object stream (subgroup or fetch).
    pub(super) fn is_data(&self) -> bool {
        matches!(self.kind, Kind::Subgroup(_) | Kind::Fetch(..))
    }
}

/// Result of decoding on one stream: keep the stream or drop it.
pub(super) enum Flow {
    Keep,
    Drop,
}

/// An incoming subgroup stream: its decoder and, while an object is
/// delivered in parts (cut-through), what is left of that object.
#[derive(Debug)]
pub(super) struct SubgroupIn {
    dec: SubgroupDecoder,
    partial: Option<PartialObject>,
}

/// An object whose header was read and whose payload is delivered in parts
/// as it arrives ([`super::SessionConfig::cut_through_bytes`]).
#[derive(Debug)]
struct PartialObject {
    object_id: u64,
    first_object: bool,
    /// Taken by the first part.
    properties: Option<Properties>,
    length: u64,
    delivered: u64,
}

/// What one decoding step on a subgroup stream produced.
pub(super) enum SubgroupStep {
    /// Nothing more until more bytes arrive.
    Wait,
    /// A long object's header was read: its payload follows in parts.
    Started,
    /// An object, or a part of one, went out as an event.
    Delivered,
    /// The next object declares more than may be buffered.
    TooLarge,
    /// The track is malformed (§2.4.2); the session stays up.
    Malformed,
    /// Malformed beyond the track: the session ends.
    Failed(DecodeError),
}

impl SubgroupIn {
    pub(super) fn new(header: SubgroupHeader) -> Self {
        SubgroupIn {
            dec: SubgroupDecoder::new(header),
            partial: None,
        }
    }

    /// Inside an object delivered in parts: a FIN here cuts it short.
    pub(super) fn in_object(&self) -> bool {
        self.partial.is_some()
    }

    /// The event that reports this stream's end.
    pub(super) fn ended(&self, stream: StreamRef, abort: Option<StreamResetCode>) -> Event {
        let h = self.dec.header();
        Event::SubgroupEnded {
            stream,
            track_alias: h.track_alias,
            group: h.group_id,
            subgroup: self.dec.subgroup_id(),
            abort,
        }
    }

    /// Decodes the next object, or the next part of one, from the front
    /// of `buf` and emits it, with the request `request` finds for its
    /// alias. Payloads are slices of `buf`, never copies; the event is
    /// built where it is queued (an object is too large to pass around).
    #[inline] // one call site, once per object: keep it in the decode loop
    pub(super) fn step<B: Buf>(
        &mut self,
        stream: StreamRef,
        buf: &mut B,
        max_object_size: usize,
        cut_through: Option<usize>,
        request: impl FnOnce(u64) -> Option<RequestId>,
        out: &mut Outbox,
    ) -> SubgroupStep {
        if let Some(p) = &mut self.partial {
            // Cut-through: pass on what arrived once there is enough of
            // it, or the rest of the object.
            let missing = p.length - p.delivered;
            let available = buf.remaining() as u64;
            let enough = cut_through.unwrap_or(0) as u64;
            if available == 0 || (available < missing && available < enough) {
                return SubgroupStep::Wait;
            }
            let n = available.min(missing);
            let part = PayloadPart {
                offset: p.delivered,
                length: p.length,
            };
            p.delivered += n;
            let h = self.dec.header();
            out.event(Event::Object(Object {
                track_alias: h.track_alias,
                request: request(h.track_alias),
                location: Location::new(h.group_id, p.object_id),
                subgroup: self.dec.subgroup_id(),
                publisher_priority: h.publisher_priority,
                status: ObjectStatus::Normal,
                properties: p.properties.take().unwrap_or_default(),
                payload: buf.copy_to_bytes(n as usize),
                end_of_group: h.end_of_group,
                first_object: p.first_object,
                stream: Some(stream),
                part: Some(part),
            }));
            if p.delivered == p.length {
                self.partial = None;
            }
            return SubgroupStep::Delivered;
        }
        match self.dec.decode_object(buf) {
            Err(DecodeError::Incomplete) => {
                // An object that is not all here: refuse it now if it
                // declares more than may be buffered, start passing it on
                // in parts if it is long.
                let Ok(head) = self.dec.peek_object_header(buf) else {
                    return SubgroupStep::Wait;
                };
                if head.payload_len > max_object_size as u64 {
                    return SubgroupStep::TooLarge;
                }
                if cut_through.is_none_or(|n| head.payload_len <= n as u64) {
                    return SubgroupStep::Wait;
                }
                let head = self
                    .dec
                    .decode_object_header(buf)
                    .expect("a header that was just peeked");
                self.partial = Some(PartialObject {
                    object_id: head.object_id,
                    first_object: self.dec.header().first_object
                        && self.dec.first_object_id() == Some(head.object_id),
                    properties: Some(head.properties),
                    length: head.payload_len,
                    delivered: 0,
                });
                SubgroupStep::Started
            }
            Err(e) if e.session_error_code().is_none() => SubgroupStep::Malformed,
            Err(e) => SubgroupStep::Failed(e),
            Ok(obj) => {
                let h = self.dec.header();
                out.event(Event::Object(Object {
                    track_alias: h.track_alias,
                    request: request(h.track_alias),
                    location: Location::new(h.group_id, obj.object_id),
                    subgroup: self.dec.subgroup_id(),
                    publisher_priority: h.publisher_priority,
                    status: obj.status,
                    properties: obj.properties,
                    payload: obj.payload,
                    end_of_group: h.end_of_group,
                    first_object: h.first_object
                        && self.dec.first_object_id() == Some(obj.object_id),
                    stream: Some(stream),
                    part: None,
                }));
                SubgroupStep::Delivered
            }
        }
    }
}
