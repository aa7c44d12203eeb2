//! What arrives from the peer: stream bytes decoded item by item (straight
//! from the received `Bytes` when nothing is buffered), datagrams, streams
//! held until the peer's SETUP (§3.3), and the bounds on what is buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::control::Control;
use super::outbox::{Fatal, Outbox};
use super::requests::RequestTable;
use super::stream::{Flow, Kind, Stream, SubgroupIn, SubgroupStep};
use super::table::StreamTable;
use super::{
    Event, Object, PeerAbort, RequestId, SessionConfig, StreamRef, MAX_PRE_SETUP_DATAGRAMS,
    MAX_PRE_SETUP_STREAMS, MAX_PRE_SETUP_STREAM_BYTES,
};
use crate::codes::StreamResetCode;
use crate::data::datagram::{Datagram, DatagramContent};
use crate::data::fetch::{FetchDecoder, FetchItem};
use crate::data::stream::{StreamType, UniStreamHeader};
use crate::data::ObjectStatus;
use crate::error::DecodeError;
use crate::message::ControlMessage;
use crate::types::Location;

/// The other parts decoding acts on, borrowed for one driver input.
pub(super) struct Cx<'a> {
    pub(super) control: &'a mut Control,
    pub(super) requests: &'a mut RequestTable,
    pub(super) streams: &'a mut StreamTable,
    pub(super) out: &'a mut Outbox,
}

#[derive(Debug)]
pub(super) struct Incoming {
    max_object_size: usize,
    max_buffered_bytes: usize,
    cut_through: Option<usize>,
    /// Peer streams waiting for SETUP, in arrival order.
    pre_setup: Vec<StreamRef>,
    pre_setup_datagrams: Vec<Bytes>,
}

impl Incoming {
    pub(super) fn new(config: &SessionConfig) -> Self {
        Incoming {
            max_object_size: config.max_object_size,
            max_buffered_bytes: config.max_buffered_bytes,
            cut_through: config.cut_through_bytes,
            pre_setup: Vec::new(),
            pre_setup_datagrams: Vec::new(),
        }
    }

    pub(super) fn clear(&mut self) {
        self.pre_setup.clear();
        self.pre_setup_datagrams.clear();
    }

    /// Bytes arrived on a stream (`fin`: the peer finished it).
    pub(super) fn on_stream_data(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamRef,
        data: Bytes,
        fin: bool,
    ) -> Result<(), Fatal> {
        let Some(mut st) = cx.streams.remove(&stream) else {
            return Ok(());
        };
        st.fin |= fin;
        let waits_for_setup = !cx.control.is_ready() && must_wait(&st, &data);
        let flow = if waits_for_setup {
            self.hold(stream, &mut st, &data, cx.out)
        } else if st.buf.is_empty() {
            // Zero-copy path: decode straight from the received chunk,
            // keep only an incomplete tail.
            let mut data = data;
            let flow = self.process(cx, stream, &mut st, &mut data)?;
            if matches!(flow, Flow::Keep) && data.has_remaining() {
                st.buf.extend_from_slice(&data);
            }
            flow
        } else {
            append(&mut st.buf, &data);
            let mut buf = std::mem::take(&mut st.buf);
            let flow = self.process(cx, stream, &mut st, &mut buf)?;
            st.buf = buf;
            flow
        };
        let flow = match flow {
            // A stream buffered until SETUP may well be finished already
            // (a client FINs its request stream right after the request):
            // its FIN is judged when it is processed after SETUP.
            Flow::Keep if waits_for_setup => Flow::Keep,
            Flow::Keep => self.after_process(cx, stream, &mut st)?,
            Flow::Drop => Flow::Drop,
        };
        if matches!(flow, Flow::Keep) {
            cx.streams.insert(stream, st);
            self.enforce_buffer_bound(cx);
        }
        Ok(())
    }

    /// The peer reset its sending side of a stream (RESET_STREAM).
    pub(super) fn on_stream_reset(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamRef,
        code: StreamResetCode,
    ) -> Result<(), Fatal> {
        let Some(st) = cx.streams.remove(&stream) else {
            return Ok(());
        };
        self.pre_setup.retain(|s| *s != stream);
        match st.kind {
            Kind::ControlRecv | Kind::ControlSend => {
                return Err(Fatal::violation("control stream reset"));
            }
            Kind::PendingBidi => cx.out.reset(stream, StreamResetCode::Cancelled),
            Kind::Request(id) => {
                cx.requests
                    .peer_cancelled(id, PeerAbort::Reset(code), cx.streams, cx.out)
            }
            Kind::Subgroup(sub) => cx.out.event(sub.ended(stream, Some(code))),
            Kind::Fetch(id, _) => {
                cx.requests.fetch_recv_ended(id);
                cx.out.event(Event::FetchEnded {
                    id,
                    abort: Some(code),
                });
            }
            Kind::PendingUni | Kind::Discard | Kind::DataSend => {}
        }
        Ok(())
    }

    /// The peer stopped a bidirectional stream whose first message was
    /// not read yet: we will not read it either.
    pub(super) fn refuse_pending(
        &mut self,
        stream: StreamRef,
        st: Option<Stream>,
        out: &mut Outbox,
    ) {
        self.pre_setup.retain(|s| *s != stream);
        if let Some(st) = st {
            refuse(stream, &st, StreamResetCode::Cancelled, out);
        }
    }

    /// A QUIC DATAGRAM arrived (§11.3).
    pub(super) fn on_datagram(&mut self, cx: &mut Cx<'_>, datagram: Bytes) -> Result<(), Fatal> {
        if !cx.control.is_ready() {
            if self.pre_setup_datagrams.len() < MAX_PRE_SETUP_DATAGRAMS {
                self.pre_setup_datagrams.push(datagram);
            }
            return Ok(());
        }
        process_datagram(cx, &datagram)
    }

    /// §3.3: buffers a stream that must wait for SETUP, within bounds.
    fn hold(&mut self, stream: StreamRef, st: &mut Stream, data: &[u8], out: &mut Outbox) -> Flow {
        st.buf.extend_from_slice(data);
        if !self.pre_setup.contains(&stream) {
            self.pre_setup.push(stream);
        }
        if st.buf.len() > MAX_PRE_SETUP_STREAM_BYTES || self.pre_setup.len() > MAX_PRE_SETUP_STREAMS
        {
            self.pre_setup.retain(|s| *s != stream);
            refuse(stream, st, StreamResetCode::ExcessiveLoad, out);
            Flow::Drop
        } else {
            Flow::Keep
        }
    }

    /// Decode everything complete at the front of `buf` for this stream.
    fn process<B: Buf>(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamRef,
        st: &mut Stream,
        buf: &mut B,
    ) -> Result<Flow, Fatal> {
        loop {
            match &mut st.kind {
                Kind::PendingUni => match UniStreamHeader::decode(buf) {
                    Err(DecodeError::Incomplete) => return Ok(Flow::Keep),
                    Err(e) => return Err(Fatal::decode(&e)),
                    Ok(UniStreamHeader::Control(setup)) => {
                        cx.control.bind_peer_stream(stream)?;
                        st.kind = Kind::ControlRecv;
                        cx.control.on_setup(setup, cx.out)?;
                        self.flush_pre_setup(cx)?;
                    }
                    Ok(UniStreamHeader::Subgroup(h)) => {
                        st.kind = Kind::Subgroup(SubgroupIn::new(h));
                    }
                    Ok(UniStreamHeader::Fetch(h)) => {
                        let id = RequestId(h.request_id);
                        match cx.requests.bind_fetch_recv(id, stream) {
                            Some(order) => st.kind = Kind::Fetch(id, FetchDecoder::new(order)),
                            None => {
                                // A FETCH we cancelled, or never sent.
                                if !st.fin {
                                    cx.out.stop_sending(stream, StreamResetCode::Cancelled);
                                }
                                st.kind = Kind::Discard;
                            }
                        }
                    }
                    Ok(UniStreamHeader::Padding) => st.kind = Kind::Discard,
                },
                Kind::PendingBidi => match ControlMessage::decode(buf) {
                    Err(DecodeError::Incomplete) => return Ok(Flow::Keep),
                    Err(e) => return Err(Fatal::decode(&e)),
                    Ok(msg) => cx.requests.admit(stream, st, msg, cx.out)?,
                },
                Kind::ControlRecv => match ControlMessage::decode(buf) {
                    Err(DecodeError::Incomplete) => return Ok(Flow::Keep),
                    Err(e) => return Err(Fatal::decode(&e)),
                    Ok(ControlMessage::GoAway(g)) => cx.control.on_goaway(g, cx.out)?,
                    Ok(_) => {
                        return Err(Fatal::violation("unexpected message on the control stream"))
                    }
                },
                Kind::Request(id) => {
                    let id = *id;
                    match legacy_unsubscribe(cx.requests, id, buf) {
                        Some(LegacyUnsubscribe::Incomplete) => return Ok(Flow::Keep),
                        Some(LegacyUnsubscribe::Taken) => {
                            cx.requests.peer_cancelled(
                                id,
                                PeerAbort::Reset(StreamResetCode::Cancelled),
                                cx.streams,
                                cx.out,
                            );
                            return Ok(Flow::Drop);
                        }
                        None => {}
                    }
                    match ControlMessage::decode(buf) {
                        Err(DecodeError::Incomplete) => return Ok(Flow::Keep),
                        Err(e) => return Err(Fatal::decode(&e)),
                        Ok(msg) => cx.requests.on_message(id, msg, cx.out)?,
                    }
                }
                Kind::Subgroup(sub) => {
                    let requests = &*cx.requests;
                    let step = sub.step(
                        stream,
                        buf,
                        self.max_object_size,
                        self.cut_through,
                        |alias| requests.peer_request(alias),
                        cx.out,
                    );
                    match step {
                        SubgroupStep::Wait => return Ok(Flow::Keep),
                        SubgroupStep::Started | SubgroupStep::Delivered => {}
                        SubgroupStep::TooLarge => stop_excessive(cx, stream, st),
                        SubgroupStep::Malformed => {
                            // A malformed track (§2.4.2), not a broken session.
                            let ended = sub.ended(stream, Some(StreamResetCode::MalformedTrack));
                            stop_malformed(stream, st, cx.out);
                            cx.out.event(ended);
                        }
                        SubgroupStep::Failed(e) => return Err(Fatal::decode(&e)),
                    }
                }
                Kind::Fetch(id, dec) => {
                    let id = *id;
                    match dec.decode_item(buf) {
                        Err(DecodeError::Incomplete) => return Ok(Flow::Keep),
                        Err(e) if e.session_error_code().is_none() => {
                            stop_malformed(stream, st, cx.out);
                            cx.requests.fetch_recv_ended(id);
                            cx.out.event(Event::FetchEnded {
                                id,
                                abort: Some(StreamResetCode::MalformedTrack),
                            });
                        }
                        Err(e) => return Err(Fatal::decode(&e)),
                        Ok(FetchItem::Object(object)) => {
                            cx.out.event(Event::FetchObject { id, object })
                        }
                        Ok(FetchItem::EndOfRange(end)) => {
                            cx.out.event(Event::FetchEndOfRange { id, end })
                        }
                    }
                }
                Kind::Discard | Kind::ControlSend | Kind::DataSend => {
                    buf.advance(buf.remaining());
                    return Ok(Flow::Keep);
                }
            }
        }
    }

    /// Checks after decoding: FIN handling and buffer bounds.
    fn after_process(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamRef,
        st: &mut Stream,
    ) -> Result<Flow, Fatal> {
        let leftover = !st.buf.is_empty();
        if st.fin {
            match &st.kind {
                Kind::ControlRecv => return Err(Fatal::violation("control stream finished")),
                Kind::PendingUni | Kind::PendingBidi => {
                    return if leftover {
                        Err(Fatal::violation("stream finished inside its header"))
                    } else {
                        Ok(Flow::Drop)
                    };
                }
                Kind::Request(id) => {
                    if leftover {
                        return Err(Fatal::violation("request stream finished inside a message"));
                    }
                    return Ok(cx.requests.peer_finished(*id, stream, cx.streams, cx.out));
                }
                Kind::Subgroup(sub) => {
                    if leftover || sub.in_object() {
                        return Err(Fatal::violation(
                            "subgroup stream finished inside an object",
                        ));
                    }
                    cx.out.event(sub.ended(stream, None));
                    return Ok(Flow::Drop);
                }
                Kind::Fetch(id, _) => {
                    let id = *id;
                    if leftover {
                        return Err(Fatal::violation("fetch stream finished inside an object"));
                    }
                    cx.requests.fetch_recv_ended(id);
                    cx.out.event(Event::FetchEnded { id, abort: None });
                    cx.requests.maybe_retire(id, cx.streams, cx.out);
                    return Ok(Flow::Drop);
                }
                Kind::Discard => return Ok(Flow::Drop),
                Kind::ControlSend | Kind::DataSend => {}
            }
        }
        if st.buf.len() > self.max_object_size {
            // Only data streams can get here: control messages are
            // bounded by their 16-bit length.
            stop_excessive(cx, stream, st);
        }
        if matches!(st.kind, Kind::Discard) || st.buf.is_empty() {
            // Free, not just empty: an idle or discarding stream holds no
            // memory (the next chunk is decoded in place).
            st.buf = BytesMut::new();
        }
        Ok(Flow::Keep)
    }

    /// Over the connection's buffer bound: stops the data streams holding
    /// the most until it fits. Only this peer's own streams pay. Control
    /// and request messages are not counted out: each is at most 64 KiB,
    /// so with a bound above (request streams + 1) × 64 KiB they cannot
    /// exceed it alone.
    fn enforce_buffer_bound(&self, cx: &mut Cx<'_>) {
        while cx.streams.buffered() > self.max_buffered_bytes {
            let Some(stream) = cx.streams.largest_data_buffer() else {
                return;
            };
            let Some(mut st) = cx.streams.remove(&stream) else {
                return;
            };
            stop_excessive(cx, stream, &mut st);
            cx.streams.insert(stream, st);
        }
    }

    /// Run the streams and datagrams buffered before SETUP (§3.3).
    fn flush_pre_setup(&mut self, cx: &mut Cx<'_>) -> Result<(), Fatal> {
        for stream in std::mem::take(&mut self.pre_setup) {
            let Some(mut st) = cx.streams.remove(&stream) else {
                continue;
            };
            let mut buf = std::mem::take(&mut st.buf);
            let flow = self.process(cx, stream, &mut st, &mut buf)?;
            st.buf = buf;
            let flow = match flow {
                Flow::Keep => self.after_process(cx, stream, &mut st)?,
                Flow::Drop => Flow::Drop,
            };
            if matches!(flow, Flow::Keep) {
                cx.streams.insert(stream, st);
            }
        }
        for d in std::mem::take(&mut self.pre_setup_datagrams) {
            process_datagram(cx, &d)?;
        }
        Ok(())
    }
}

/// True if this stream's data must wait for SETUP (§3.3).
fn must_wait(st: &Stream, data: &Bytes) -> bool {
    match st.kind {
        Kind::PendingBidi => true,
        Kind::PendingUni => {
            // The control stream is read at once; an unknown type
            // closes the session at once too (§3.4).
            // A type is at most 9 bytes: probe without copying more.
            let mut probe = BytesMut::new();
            let have = st.buf.len().min(9);
            probe.extend_from_slice(&st.buf[..have]);
            probe.extend_from_slice(&data[..data.len().min(9 - have)]);
            !matches!(
                StreamType::peek(&probe),
                Ok(StreamType::Control) | Err(DecodeError::UnknownStreamType(_))
            )
        }
        _ => false,
    }
}

/// Reset / stop a peer stream we will not read.
fn refuse(stream: StreamRef, st: &Stream, code: StreamResetCode, out: &mut Outbox) {
    if matches!(st.kind, Kind::PendingBidi) {
        out.reset(stream, code);
    }
    if !st.fin {
        out.stop_sending(stream, code);
    }
}

/// Stop reading a data stream whose track is malformed (§2.4.2).
fn stop_malformed(stream: StreamRef, st: &mut Stream, out: &mut Outbox) {
    if !st.fin {
        out.stop_sending(stream, StreamResetCode::MalformedTrack);
    }
    st.kind = Kind::Discard;
}

/// Stops a data stream that holds more than the session may buffer
/// (EXCESSIVE_LOAD); its data is discarded from now on.
fn stop_excessive(cx: &mut Cx<'_>, stream: StreamRef, st: &mut Stream) {
    st.buf = BytesMut::new();
    cx.out.stop_sending(stream, StreamResetCode::ExcessiveLoad);
    match std::mem::replace(&mut st.kind, Kind::Discard) {
        Kind::Subgroup(sub) => cx
            .out
            .event(sub.ended(stream, Some(StreamResetCode::ExcessiveLoad))),
        Kind::Fetch(id, _) => {
            cx.requests.fetch_recv_ended(id);
            cx.out.event(Event::FetchEnded {
                id,
                abort: Some(StreamResetCode::ExcessiveLoad),
            });
        }
        _ => {}
    }
}

fn process_datagram(cx: &mut Cx<'_>, data: &Bytes) -> Result<(), Fatal> {
    match Datagram::decode(data) {
        Err(e) => return Err(Fatal::decode(&e)),
        Ok(Datagram::Padding { .. }) => {}
        Ok(Datagram::Object(d)) => {
            let (status, payload) = match d.content {
                DatagramContent::Payload(p) => (ObjectStatus::Normal, p),
                DatagramContent::Status(s) => (s, Bytes::new()),
            };
            cx.out.event(Event::Object(Object {
                track_alias: d.track_alias,
                request: cx.requests.peer_request(d.track_alias),
                location: Location::new(d.group_id, d.object_id),
                subgroup: None,
                publisher_priority: d.publisher_priority,
                status,
                properties: d.properties,
                payload,
                end_of_group: d.end_of_group,
                first_object: false,
                stream: None,
                part: None,
            }));
        }
    }
    Ok(())
}

enum LegacyUnsubscribe {
    Incomplete,
    Taken,
}

/// UNSUBSCRIBE (type 0xA of drafts up to 16) on the request stream of a
/// SUBSCRIBE the peer made. Draft-18 has no such message (a subscriber
/// resets its stream instead) and an unknown type closes the session,
/// but a widely deployed draft-18 stack (moq-transport 0.17) still ends
/// its subscriptions this way: it is taken as a cancel of that
/// subscription, and on any other stream it stays unknown.
fn legacy_unsubscribe<B: Buf>(
    requests: &RequestTable,
    id: RequestId,
    buf: &mut B,
) -> Option<LegacyUnsubscribe> {
    const UNSUBSCRIBE: u8 = 0x0A;
    let head = buf.chunk();
    if head.first() != Some(&UNSUBSCRIBE) || !requests.is_peer_subscribe(id) {
        return None;
    }
    if head.len() < 3 {
        return Some(LegacyUnsubscribe::Incomplete);
    }
    let len = 3 + usize::from(u16::from_be_bytes([head[1], head[2]]));
    if head.len() < len {
        return Some(LegacyUnsubscribe::Incomplete);
    }
    buf.advance(len);
    Some(LegacyUnsubscribe::Taken)
}

/// Appends to a receive buffer growing it by a quarter at a time rather
/// than doubling: what a connection buffers is bounded by capacity, so a
/// large incomplete object should not cost twice its size.
fn append(buf: &mut BytesMut, data: &[u8]) {
    if buf.capacity() - buf.len() < data.len() {
        let want = (buf.len() + data.len()).max(buf.len() + buf.len() / 4);
        let mut grown = BytesMut::with_capacity(want);
        grown.extend_from_slice(buf);
        *buf = grown;
    }
    buf.extend_from_slice(data);
}
