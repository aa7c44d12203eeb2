//! The [`Session`] state machine. See the module documentation.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};

use super::table::StreamTable;
use super::*;
use crate::codes::RequestErrorCode;
use crate::data::datagram::{Datagram, DatagramContent, ObjectDatagram};
use crate::data::fetch::{
    EndOfRange, FetchDecoder, FetchEncoder, FetchHeader, FetchItem, FetchObjectHeader,
};
use crate::data::stream::{StreamType, UniStreamHeader};
use crate::data::subgroup::SubgroupObjectHeader;
use crate::data::subgroup::{SubgroupDecoder, SubgroupEncoder, SubgroupHeader, SubgroupId};
use crate::error::DecodeError;
use crate::message::{
    Fetch, FetchOk, FetchType, GoAway, MessageType, Namespace, NamespaceDone, Publish, PublishDone,
    PublishNamespace, RequestError, RequestOk, RequestUpdate, Subscribe, SubscribeNamespace,
    SubscribeOk, SubscribeTracks, TrackStatus,
};
use crate::names::{FullTrackName, TrackNamespace};
use crate::params::Parameters;
use crate::types::{GroupOrder, ReasonPhrase};

/// What a stream is, as far as the session knows.
#[derive(Debug)]
enum Kind {
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

/// An incoming subgroup stream: its decoder and, while an object is
/// delivered in parts (cut-through), what is left of that object.
#[derive(Debug)]
struct SubgroupIn {
    dec: SubgroupDecoder,
    partial: Option<PartialObject>,
}

/// An object whose header was read and whose payload is delivered in parts
/// as it arrives ([`SessionConfig::cut_through_bytes`]).
#[derive(Debug)]
struct PartialObject {
    object_id: u64,
    first_object: bool,
    /// Taken by the first part.
    properties: Option<Properties>,
    length: u64,
    delivered: u64,
}

#[derive(Debug)]
pub(super) struct Stream {
    kind: Kind,
    /// Bytes received but not yet decoded (an incomplete item).
    buf: BytesMut,
    fin: bool,
}

impl Stream {
    /// Memory the receive buffer holds (its capacity: what it costs).
    pub(super) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// An incoming object stream (subgroup or fetch).
    pub(super) fn is_data(&self) -> bool {
        matches!(self.kind, Kind::Subgroup(_) | Kind::Fetch(..))
    }
}

#[derive(Debug)]
struct Request {
    stream: StreamRef,
    kind: MessageType,
    /// We sent the request.
    local: bool,
    /// The first response has been received (local) or sent (remote).
    answered: bool,
    goaway_received: bool,
    recv_done: bool,
    send_done: bool,
    /// Alias the peer assigned (SUBSCRIBE_OK to us, or its PUBLISH).
    peer_alias: Option<u64>,
    /// Alias we assigned (our SUBSCRIBE_OK or PUBLISH).
    local_alias: Option<u64>,
    /// REQUEST_UPDATEs sent on this stream still awaiting an answer.
    updates_sent: u32,
    /// REQUEST_UPDATEs received on this stream still to be answered.
    updates_received: u32,
    /// Group order of a FETCH (for decoding / encoding its data stream).
    fetch_order: GroupOrder,
    /// Our outgoing fetch stream, if opened.
    fetch_stream: Option<(StreamRef, FetchEncoder)>,
    /// The incoming fetch stream, if any.
    fetch_recv: Option<StreamRef>,
    /// The peer sent STOP_SENDING while its own side was still open: the
    /// request ends when that side does (its last message, e.g. a
    /// publisher's PUBLISH_DONE, may still be on the way).
    stopped_by_peer: Option<StreamResetCode>,
    /// Answers to REQUEST_UPDATEs that came before our first response
    /// (SUBSCRIBE_OK, FETCH_OK): they follow it on the wire.
    deferred: Vec<Bytes>,
}

enum LegacyUnsubscribe {
    Incomplete,
    Taken,
}

struct OutSubgroup {
    stream: StreamRef,
    enc: SubgroupEncoder,
    /// An object sent in parts and not complete yet: (Object ID, payload
    /// bytes written, payload length). Nothing else may follow it.
    unfinished: Option<(u64, u64, u64)>,
}

/// Peer Request ID bookkeeping (§10.1): the next ID above everything
/// seen, plus the unused IDs below it.
#[derive(Debug)]
struct PeerIds {
    /// u128 so that an ID of 2^64-1 still leaves a "next" above it.
    next: u128,
    holes: BTreeSet<u64>,
}

impl PeerIds {
    /// Record `id`; false if it was already used.
    fn take(&mut self, id: u64) -> bool {
        let wide = u128::from(id);
        if wide >= self.next {
            // Remember at most MAX_REQUEST_ID_HOLES skipped IDs (the
            // highest ones); an earlier gap counts as used. All of them
            // are below `id`, so they fit in u64.
            let gap = (wide - self.next) / 2;
            let keep = gap.min(MAX_REQUEST_ID_HOLES as u128);
            for k in (gap - keep)..gap {
                self.holes.insert((self.next + 2 * k) as u64);
            }
            while self.holes.len() > MAX_REQUEST_ID_HOLES {
                self.holes.pop_first();
            }
            self.next = wide + 2;
            true
        } else {
            self.holes.remove(&id)
        }
    }
}

/// A sans-IO MOQT session (one per connection). See the module
/// documentation for the driving contract.
pub struct Session {
    role: Role,
    config: SessionConfig,
    closed: Option<SessionErrorCode>,
    ready: bool,
    peer_setup: Option<Setup>,
    control_send: StreamRef,
    control_recv: Option<StreamRef>,
    goaway_received: bool,
    goaway_sent: bool,
    next_stream: u64,
    streams: StreamTable,
    /// Peer streams waiting for SETUP, in arrival order.
    pre_setup: Vec<StreamRef>,
    pre_setup_datagrams: Vec<Bytes>,
    requests: HashMap<RequestId, Request>,
    local_requests: usize,
    remote_requests: usize,
    next_request_id: u64,
    peer_ids: PeerIds,
    next_alias: u64,
    /// Aliases we assigned (we publish on them).
    local_aliases: HashMap<u64, RequestId>,
    /// Aliases the peer assigned (it publishes on them).
    peer_aliases: HashMap<u64, RequestId>,
    out_subgroups: HashMap<(u64, u64, u64), OutSubgroup>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    scratch: BytesMut,
}

/// Result of decoding on one stream: keep the stream or drop it.
enum Flow {
    Keep,
    Drop,
}

impl Session {
    /// A new session. Its first commands open the control stream and write
    /// SETUP (§3.3).
    pub fn new(role: Role, config: SessionConfig) -> Self {
        let mut s = Session {
            role,
            closed: None,
            ready: false,
            peer_setup: None,
            control_send: StreamRef(0),
            control_recv: None,
            goaway_received: false,
            goaway_sent: false,
            next_stream: 1,
            streams: StreamTable::default(),
            pre_setup: Vec::new(),
            pre_setup_datagrams: Vec::new(),
            requests: HashMap::new(),
            local_requests: 0,
            remote_requests: 0,
            next_request_id: match role {
                Role::Client => 0,
                Role::Server => 1,
            },
            peer_ids: PeerIds {
                next: match role {
                    Role::Client => 1,
                    Role::Server => 0,
                },
                holes: BTreeSet::new(),
            },
            next_alias: 0,
            local_aliases: HashMap::new(),
            peer_aliases: HashMap::new(),
            out_subgroups: HashMap::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            scratch: BytesMut::new(),
            config,
        };
        s.streams.insert(
            s.control_send,
            Stream {
                kind: Kind::ControlSend,
                buf: BytesMut::new(),
                fin: false,
            },
        );
        s.commands.push_back(Command::OpenUni(s.control_send));
        let setup = ControlMessage::Setup(s.config.setup.clone());
        match s.encode(&setup) {
            Ok(data) => s.commands.push_back(Command::Write {
                stream: s.control_send,
                data,
                fin: false,
            }),
            Err(_) => s.close(SessionErrorCode::InternalError, "cannot encode SETUP"),
        }
        s
    }

    /// This endpoint's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the peer's SETUP has been received.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The termination code if the session is closed.
    pub fn closed(&self) -> Option<SessionErrorCode> {
        self.closed
    }

    /// The peer's SETUP, once received.
    pub fn peer_setup(&self) -> Option<&Setup> {
        self.peer_setup.as_ref()
    }

    /// Number of open requests (both directions).
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// The next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----------------------------------------------------------------
    // Driver inputs
    // ----------------------------------------------------------------

    /// The peer opened a stream; returns the handle the session will use
    /// for it.
    pub fn on_peer_stream(&mut self, bidi: bool) -> StreamRef {
        let s = self.alloc_stream();
        if self.closed.is_none() {
            self.streams.insert(
                s,
                Stream {
                    kind: if bidi {
                        Kind::PendingBidi
                    } else {
                        Kind::PendingUni
                    },
                    buf: BytesMut::new(),
                    fin: false,
                },
            );
        }
        s
    }

    /// Bytes arrived on a stream (`fin`: the peer finished it). Data for
    /// streams the session no longer tracks is ignored. `Err` means the
    /// session is closed (possibly by this input).
    pub fn on_stream_data(
        &mut self,
        stream: StreamRef,
        data: Bytes,
        fin: bool,
    ) -> Result<(), SessionError> {
        self.check_open()?;
        let Some(mut st) = self.streams.remove(&stream) else {
            return Ok(());
        };
        st.fin |= fin;
        let waits_for_setup = !self.ready && self.must_wait(&st, &data);
        let flow = if waits_for_setup {
            // §3.3: buffer until SETUP, bounded.
            st.buf.extend_from_slice(&data);
            if !self.pre_setup.contains(&stream) {
                self.pre_setup.push(stream);
            }
            if st.buf.len() > MAX_PRE_SETUP_STREAM_BYTES
                || self.pre_setup.len() > MAX_PRE_SETUP_STREAMS
            {
                self.pre_setup.retain(|s| *s != stream);
                self.refuse_stream(stream, &st, StreamResetCode::ExcessiveLoad);
                Flow::Drop
            } else {
                Flow::Keep
            }
        } else if st.buf.is_empty() {
            // Zero-copy path: decode straight from the received chunk,
            // keep only an incomplete tail.
            let mut data = data;
            let flow = self.process(stream, &mut st, &mut data);
            if matches!(flow, Flow::Keep) && data.has_remaining() {
                st.buf.extend_from_slice(&data);
            }
            flow
        } else {
            append(&mut st.buf, &data);
            let mut buf = std::mem::take(&mut st.buf);
            let flow = self.process(stream, &mut st, &mut buf);
            st.buf = buf;
            flow
        };
        let flow = match flow {
            // A stream buffered until SETUP may well be finished already
            // (a client FINs its request stream right after the request):
            // its FIN is judged when it is processed after SETUP.
            Flow::Keep if waits_for_setup => Flow::Keep,
            Flow::Keep => self.after_process(stream, &mut st),
            Flow::Drop => Flow::Drop,
        };
        if matches!(flow, Flow::Keep) && self.closed.is_none() {
            self.streams.insert(stream, st);
            self.enforce_buffer_bound();
        }
        self.check_open()
    }

    /// Bytes the session holds in receive buffers (incomplete objects and
    /// messages) over all streams: at most about
    /// [`SessionConfig::max_buffered_bytes`] plus one chunk.
    pub fn buffered_bytes(&self) -> usize {
        self.streams.buffered()
    }

    /// What the session holds now: a finished session's state is all
    /// gone, so a long-lived one's counts are bounded by what is live.
    pub fn footprint(&self) -> SessionFootprint {
        SessionFootprint {
            streams: self.streams.len(),
            requests: self.requests.len(),
            aliases: self.local_aliases.len() + self.peer_aliases.len(),
            out_subgroups: self.out_subgroups.len(),
            buffered_bytes: self.streams.buffered(),
        }
    }

    /// The peer reset its sending side of a stream (RESET_STREAM).
    pub fn on_stream_reset(&mut self, stream: StreamRef, code: u64) -> Result<(), SessionError> {
        self.check_open()?;
        // Also in the WebTransport-mapped form (see `StreamCodeDialect`).
        let code = StreamResetCode::from_code(crate::codes::unmap_stream_code(code).0);
        let Some(st) = self.streams.remove(&stream) else {
            return Ok(());
        };
        self.pre_setup.retain(|s| *s != stream);
        match st.kind {
            Kind::ControlRecv | Kind::ControlSend => {
                self.close(SessionErrorCode::ProtocolViolation, "control stream reset");
            }
            Kind::PendingBidi => self.commands.push_back(Command::Reset {
                stream,
                code: StreamResetCode::Cancelled,
            }),
            Kind::Request(id) => self.peer_cancelled(id, PeerAbort::Reset(code)),
            Kind::Subgroup(SubgroupIn { dec, .. }) => self.events.push_back(Event::SubgroupEnded {
                stream,
                track_alias: dec.header().track_alias,
                group: dec.header().group_id,
                subgroup: dec.subgroup_id(),
                abort: Some(code),
            }),
            Kind::Fetch(id, _) => {
                if let Some(r) = self.requests.get_mut(&id) {
                    r.fetch_recv = None;
                }
                self.events.push_back(Event::FetchEnded {
                    id,
                    abort: Some(code),
                })
            }
            Kind::PendingUni | Kind::Discard | Kind::DataSend => {}
        }
        self.check_open()
    }

    /// The peer sent STOP_SENDING for our side of a stream.
    pub fn on_stop_sending(&mut self, stream: StreamRef, code: u64) -> Result<(), SessionError> {
        self.check_open()?;
        let code = StreamResetCode::from_code(crate::codes::unmap_stream_code(code).0);
        let Some(st) = self.streams.get(&stream) else {
            return Ok(());
        };
        match st.kind {
            Kind::ControlSend => {
                self.close(
                    SessionErrorCode::ProtocolViolation,
                    "control stream stopped",
                );
            }
            Kind::Request(id) => {
                match self.requests.get_mut(&id) {
                    // STOP_SENDING ends our direction only (§3.3.2). With the
                    // peer's side still open its last word may follow (a
                    // publisher drops its read side right after PUBLISH_DONE,
                    // and QUIC may deliver the STOP_SENDING first): our side
                    // is reset and the request lives until theirs ends.
                    Some(r) if !r.recv_done => {
                        if !r.send_done {
                            r.send_done = true;
                            self.commands.push_back(Command::Reset { stream, code });
                        }
                        r.stopped_by_peer = Some(code);
                    }
                    _ => {
                        self.streams.remove(&stream);
                        self.peer_cancelled(id, PeerAbort::StopSending(code));
                    }
                }
            }
            Kind::DataSend => {
                self.streams.remove(&stream);
                self.commands.push_back(Command::Reset { stream, code });
                let key = self
                    .out_subgroups
                    .iter()
                    .find(|(_, o)| o.stream == stream)
                    .map(|(k, _)| *k);
                if let Some(key) = key {
                    self.out_subgroups.remove(&key);
                    self.events.push_back(Event::SubgroupStopped {
                        track_alias: key.0,
                        group: key.1,
                        subgroup: key.2,
                        code,
                    });
                }
                for r in self.requests.values_mut() {
                    if r.fetch_stream.as_ref().map(|f| f.0) == Some(stream) {
                        r.fetch_stream = None;
                    }
                }
            }
            Kind::PendingBidi => {
                let st = self.streams.remove(&stream);
                self.pre_setup.retain(|s| *s != stream);
                if let Some(st) = st {
                    self.refuse_stream(stream, &st, StreamResetCode::Cancelled);
                }
            }
            _ => {}
        }
        self.check_open()
    }

    /// A QUIC DATAGRAM arrived (§11.3).
    pub fn on_datagram(&mut self, datagram: Bytes) -> Result<(), SessionError> {
        self.check_open()?;
        if !self.ready {
            if self.pre_setup_datagrams.len() < MAX_PRE_SETUP_DATAGRAMS {
                self.pre_setup_datagrams.push(datagram);
            }
            return Ok(());
        }
        self.process_datagram(&datagram);
        self.check_open()
    }

    // ----------------------------------------------------------------
    // Application: session level
    // ----------------------------------------------------------------

    /// Close the session (§3.5). Emits [`Command::Close`] and
    /// [`Event::Closed`]; idempotent.
    pub fn close(&mut self, code: SessionErrorCode, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(code);
        self.streams.clear();
        self.requests.clear();
        self.pre_setup.clear();
        self.pre_setup_datagrams.clear();
        self.local_aliases.clear();
        self.peer_aliases.clear();
        self.out_subgroups.clear();
        self.commands.push_back(Command::Close {
            code,
            reason: reason.to_string(),
        });
        self.events.push_back(Event::Closed {
            code,
            reason: reason.to_string(),
        });
    }

    /// The connection was closed by the peer or the transport: the session
    /// forgets everything and emits only [`Event::Closed`] (no command).
    pub fn on_connection_closed(&mut self, code: u64, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        self.close(SessionErrorCode::from_code(code), reason);
        self.commands.clear();
    }

    /// Send GOAWAY on the control stream (§10.4). A client must pass an
    /// empty URI. Only one GOAWAY is sent per session.
    pub fn go_away(&mut self, new_session_uri: Bytes, timeout: u64) -> Result<(), SessionError> {
        self.check_open()?;
        if self.role == Role::Client && !new_session_uri.is_empty() {
            return Err(SessionError::InvalidState(
                "a client's GOAWAY carries an empty URI",
            ));
        }
        if self.goaway_sent {
            return Err(SessionError::InvalidState("GOAWAY already sent"));
        }
        // §10.4: on the control stream it names the smallest peer request
        // ID not processed: the next one the peer may use (every earlier
        // one arrived and was handled, or is a hole that counts as used).
        let request_id = u64::try_from(self.peer_ids.next).unwrap_or(u64::MAX);
        let data = self.encode(&ControlMessage::GoAway(GoAway {
            new_session_uri,
            timeout,
            request_id: Some(request_id),
        }))?;
        self.goaway_sent = true;
        self.commands.push_back(Command::Write {
            stream: self.control_send,
            data,
            fin: false,
        });
        Ok(())
    }

    // ----------------------------------------------------------------
    // Application: requests
    // ----------------------------------------------------------------

    /// SUBSCRIBE (§10.7).
    pub fn subscribe(
        &mut self,
        track: FullTrackName,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        self.start_request(|request_id| {
            Subscribe {
                request_id,
                track,
                parameters,
            }
            .into()
        })
    }

    /// PUBLISH (§10.10); the session assigns the Track Alias, returned with
    /// the Request ID.
    pub fn publish(
        &mut self,
        track: FullTrackName,
        parameters: Parameters,
        track_properties: Properties,
    ) -> Result<(RequestId, u64), SessionError> {
        let alias = self.next_alias;
        let id = self.start_request(|request_id| {
            Publish {
                request_id,
                track,
                track_alias: alias,
                parameters,
                track_properties,
            }
            .into()
        })?;
        self.next_alias += 1;
        self.local_aliases.insert(alias, id);
        if let Some(r) = self.requests.get_mut(&id) {
            r.local_alias = Some(alias);
        }
        Ok((id, alias))
    }

    /// FETCH (§10.12).
    pub fn fetch(
        &mut self,
        fetch_type: FetchType,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        let order = parameters.group_order.unwrap_or_default();
        let id = self.start_request(|request_id| {
            Fetch {
                request_id,
                fetch_type,
                parameters,
            }
            .into()
        })?;
        if let Some(r) = self.requests.get_mut(&id) {
            r.fetch_order = order;
        }
        Ok(id)
    }

    /// TRACK_STATUS (§10.14).
    pub fn track_status(
        &mut self,
        track: FullTrackName,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        self.start_request(|request_id| {
            TrackStatus {
                request_id,
                track,
                parameters,
            }
            .into()
        })
    }

    /// PUBLISH_NAMESPACE (§10.15).
    pub fn publish_namespace(
        &mut self,
        namespace: TrackNamespace,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        self.start_request(|request_id| {
            PublishNamespace {
                request_id,
                namespace,
                parameters,
            }
            .into()
        })
    }

    /// SUBSCRIBE_NAMESPACE (§10.18).
    pub fn subscribe_namespace(
        &mut self,
        prefix: TrackNamespace,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        self.start_request(|request_id| {
            SubscribeNamespace {
                request_id,
                prefix,
                parameters,
            }
            .into()
        })
    }

    /// SUBSCRIBE_TRACKS (§10.19).
    pub fn subscribe_tracks(
        &mut self,
        prefix: TrackNamespace,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        self.start_request(|request_id| {
            SubscribeTracks {
                request_id,
                prefix,
                parameters,
            }
            .into()
        })
    }

    /// REQUEST_UPDATE (§10.9) on the stream of request `id`; consumes and
    /// returns a new Request ID (§10.1).
    pub fn request_update(
        &mut self,
        id: RequestId,
        parameters: Parameters,
    ) -> Result<RequestId, SessionError> {
        self.check_open()?;
        let update_id = self.next_request_id;
        let data = self.encode(&ControlMessage::RequestUpdate(RequestUpdate {
            request_id: update_id,
            parameters,
        }))?;
        let r = self.request_mut(id)?;
        if r.send_done {
            return Err(SessionError::InvalidState("request stream finished"));
        }
        r.updates_sent += 1;
        let stream = r.stream;
        self.next_request_id += 2;
        self.write(stream, data, false);
        Ok(RequestId(update_id))
    }

    // ----------------------------------------------------------------
    // Application: responses and messages on request streams
    // ----------------------------------------------------------------

    /// SUBSCRIBE_OK (§10.8) for the peer's SUBSCRIBE; the session assigns
    /// and returns the Track Alias objects are then sent with.
    pub fn subscribe_ok(
        &mut self,
        id: RequestId,
        parameters: Parameters,
        track_properties: Properties,
    ) -> Result<u64, SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        if r.local || r.kind != MessageType::Subscribe || r.answered {
            return Err(SessionError::InvalidState(
                "SUBSCRIBE_OK answers an unanswered peer SUBSCRIBE",
            ));
        }
        let alias = self.next_alias;
        let msg = SubscribeOk {
            track_alias: alias,
            parameters,
            track_properties,
        };
        self.respond(id, msg.into(), false)?;
        self.next_alias += 1;
        self.local_aliases.insert(alias, id);
        if let Some(r) = self.requests.get_mut(&id) {
            r.local_alias = Some(alias);
        }
        Ok(alias)
    }

    /// REQUEST_OK (§10.5): answers a peer's PUBLISH (as PUBLISH_OK),
    /// TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE,
    /// SUBSCRIBE_TRACKS, or a REQUEST_UPDATE on request `id`'s stream.
    pub fn request_ok(&mut self, id: RequestId, ok: RequestOk) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        let first = !r.local
            && !r.answered
            && !matches!(r.kind, MessageType::Subscribe | MessageType::Fetch);
        if !first && r.updates_received == 0 {
            return Err(SessionError::InvalidState(
                "nothing to answer with REQUEST_OK",
            ));
        }
        let before_first_response = !r.local
            && !r.answered
            && matches!(r.kind, MessageType::Subscribe | MessageType::Fetch);
        if before_first_response {
            // An update answered before the SUBSCRIBE_OK / FETCH_OK: the
            // peer reads that first, so this REQUEST_OK waits for it.
            let data = self.encode(&ControlMessage::RequestOk(ok))?;
            let r = self.request_mut(id)?;
            r.updates_received -= 1;
            r.deferred.push(data);
            return Ok(());
        }
        self.respond(id, ok.into(), false)
    }

    /// REQUEST_ERROR (§10.6) for the peer's request (then FIN, §3.3.2) or
    /// for a REQUEST_UPDATE on its stream (no FIN).
    pub fn request_error(
        &mut self,
        id: RequestId,
        code: RequestErrorCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        let first = !r.local && !r.answered;
        if !first && r.updates_received == 0 {
            return Err(SessionError::InvalidState(
                "nothing to answer with REQUEST_ERROR",
            ));
        }
        let msg = RequestError {
            error_code: code,
            retry_interval: 0,
            reason: ReasonPhrase::truncated(reason),
            redirect: None,
        };
        self.respond(id, msg.into(), first)
    }

    /// FETCH_OK (§10.13) for the peer's FETCH; objects then go on
    /// [`Session::open_fetch_stream`].
    pub fn fetch_ok(&mut self, id: RequestId, ok: FetchOk) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        if r.local || r.kind != MessageType::Fetch || r.answered {
            return Err(SessionError::InvalidState(
                "FETCH_OK answers an unanswered peer FETCH",
            ));
        }
        self.respond(id, ok.into(), false)
    }

    /// NAMESPACE (§10.16) on the peer's SUBSCRIBE_NAMESPACE stream.
    pub fn namespace(&mut self, id: RequestId, suffix: TrackNamespace) -> Result<(), SessionError> {
        self.namespace_msg(id, Namespace { suffix }.into())
    }

    /// NAMESPACE_DONE (§10.17) on the peer's SUBSCRIBE_NAMESPACE stream.
    pub fn namespace_done(
        &mut self,
        id: RequestId,
        suffix: TrackNamespace,
    ) -> Result<(), SessionError> {
        self.namespace_msg(id, NamespaceDone { suffix }.into())
    }

    /// PUBLISH_DONE (§10.11): ends a subscription we publish (the peer's
    /// SUBSCRIBE or our PUBLISH) and finishes our side of its stream.
    pub fn publish_done(&mut self, id: RequestId, done: PublishDone) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        let ok = (!r.local && r.kind == MessageType::Subscribe && r.answered)
            || (r.local && r.kind == MessageType::Publish);
        if !ok {
            return Err(SessionError::InvalidState(
                "PUBLISH_DONE ends a subscription this side publishes",
            ));
        }
        self.respond(id, done.into(), true)
    }

    /// Any other message on request `id`'s stream (e.g. PUBLISH_BLOCKED,
    /// a per-request GOAWAY), sent as is.
    pub fn send_message(
        &mut self,
        id: RequestId,
        message: ControlMessage,
        fin: bool,
    ) -> Result<(), SessionError> {
        self.check_open()?;
        self.request_ref(id)?;
        self.respond(id, message, fin)
    }

    /// FIN our side of request `id`'s stream.
    pub fn finish(&mut self, id: RequestId) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_mut(id)?;
        if r.send_done {
            return Ok(());
        }
        r.send_done = true;
        let stream = r.stream;
        self.commands.push_back(Command::Finish(stream));
        self.maybe_retire(id);
        Ok(())
    }

    /// Cancel request `id` (§3.3.2): RESET_STREAM and STOP_SENDING with
    /// `code` on whatever directions are open; the request is forgotten.
    pub fn cancel(&mut self, id: RequestId, code: StreamResetCode) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        let (stream, send_done, recv_done) = (r.stream, r.send_done, r.recv_done);
        if !send_done {
            self.commands.push_back(Command::Reset { stream, code });
        }
        if !recv_done {
            self.commands
                .push_back(Command::StopSending { stream, code });
        }
        self.streams.remove(&stream);
        self.retire(id);
        Ok(())
    }

    // ----------------------------------------------------------------
    // Application: objects
    // ----------------------------------------------------------------

    /// Send an object on the subgroup stream of (alias, group, subgroup),
    /// opening it (with its SUBGROUP_HEADER, §11.4.2) on first use. The
    /// payload is written as its own `Bytes`. Returns the stream.
    pub fn send_object(&mut self, obj: OutgoingObject) -> Result<StreamRef, SessionError> {
        self.send_object_flagged(obj, StreamFlags::default())
    }

    /// [`send_object`](Self::send_object) with the header bits of a stream
    /// this object opens (ignored when the stream is already open).
    pub fn send_object_flagged(
        &mut self,
        obj: OutgoingObject,
        flags: StreamFlags,
    ) -> Result<StreamRef, SessionError> {
        let length = obj.payload.len() as u64;
        self.start_object(obj, length, flags)
    }

    /// Send one part of an object (cut-through): the first part (offset 0)
    /// writes the object's header with the whole payload length and opens
    /// the stream like [`send_object_flagged`](Self::send_object_flagged);
    /// each later part must continue exactly where the previous one ended,
    /// and no other object may go on the stream until the last part. A
    /// part that does not fit is refused with `InvalidState`: the caller
    /// resets the stream ([`reset_subgroup`](Self::reset_subgroup)) since
    /// the object cannot be completed. Only `payload` and the location of
    /// a later part are used.
    pub fn send_object_part(
        &mut self,
        obj: OutgoingObject,
        part: PayloadPart,
        flags: StreamFlags,
    ) -> Result<StreamRef, SessionError> {
        if obj.payload.len() as u64 > part.length.saturating_sub(part.offset) {
            return Err(SessionError::InvalidState("part runs past the object"));
        }
        if part.is_first() {
            return self.start_object(obj, part.length, flags);
        }
        self.check_open()?;
        let key = (obj.track_alias, obj.location.group, obj.subgroup);
        let Some(out) = self.out_subgroups.get_mut(&key) else {
            return Err(SessionError::InvalidState("no stream for this part"));
        };
        let Some((id, written, length)) = out.unfinished.as_mut() else {
            return Err(SessionError::InvalidState("no object in progress"));
        };
        if *id != obj.location.object || *written != part.offset {
            return Err(SessionError::InvalidState("part out of sequence"));
        }
        *written += obj.payload.len() as u64;
        if *written == *length {
            out.unfinished = None;
        }
        let stream = out.stream;
        if !obj.payload.is_empty() {
            self.write(stream, obj.payload, false);
        }
        Ok(stream)
    }

    /// Writes an object's header declaring `length` payload bytes, then the
    /// payload given (all of it, or a first part).
    fn start_object(
        &mut self,
        obj: OutgoingObject,
        length: u64,
        flags: StreamFlags,
    ) -> Result<StreamRef, SessionError> {
        self.check_open()?;
        if !self.local_aliases.contains_key(&obj.track_alias) {
            return Err(SessionError::UnknownTrackAlias(obj.track_alias));
        }
        let key = (obj.track_alias, obj.location.group, obj.subgroup);
        let h = SubgroupObjectHeader {
            object_id: obj.location.object,
            properties: obj.properties,
            status: obj.status,
            payload_len: length,
        };
        let unfinished = (length > obj.payload.len() as u64).then_some((
            h.object_id,
            obj.payload.len() as u64,
            length,
        ));
        if let Some(out) = self.out_subgroups.get_mut(&key) {
            if out.unfinished.is_some() {
                return Err(SessionError::InvalidState(
                    "the previous object is unfinished",
                ));
            }
            let stream = out.stream;
            out.enc.encode_object_header(&h, &mut self.scratch)?;
            // Only once its header is written is the object in progress.
            out.unfinished = unfinished;
            let head = self.scratch.split().freeze();
            self.write(stream, head, false);
        } else {
            let header = SubgroupHeader {
                track_alias: obj.track_alias,
                group_id: obj.location.group,
                subgroup_id: if obj.subgroup == 0 {
                    SubgroupId::Zero
                } else {
                    SubgroupId::Explicit(obj.subgroup)
                },
                publisher_priority: obj.publisher_priority,
                has_properties: true,
                end_of_group: flags.end_of_group,
                first_object: flags.first_object,
            };
            let mut enc = SubgroupEncoder::new(header);
            self.scratch.clear();
            enc.encode_header(&mut self.scratch)?;
            if let Err(e) = enc.encode_object_header(&h, &mut self.scratch) {
                self.scratch.clear();
                return Err(e.into());
            }
            let head = self.scratch.split().freeze();
            let stream = self.alloc_stream();
            self.streams.insert(
                stream,
                Stream {
                    kind: Kind::DataSend,
                    buf: BytesMut::new(),
                    fin: false,
                },
            );
            self.out_subgroups.insert(
                key,
                OutSubgroup {
                    stream,
                    enc,
                    unfinished,
                },
            );
            self.commands.push_back(Command::OpenUni(stream));
            self.write(stream, head, false);
        }
        let stream = self.out_subgroups[&key].stream;
        if !obj.payload.is_empty() {
            self.write(stream, obj.payload, false);
        }
        Ok(stream)
    }

    /// FIN the subgroup stream of (alias, group, subgroup), if open.
    /// A stream whose last object is unfinished (a part never came) is
    /// reset instead: a FIN there would end it inside an object.
    pub fn end_subgroup(&mut self, track_alias: u64, group: u64, subgroup: u64) -> bool {
        match self.out_subgroups.remove(&(track_alias, group, subgroup)) {
            Some(out) => {
                self.streams.remove(&out.stream);
                self.commands.push_back(match out.unfinished {
                    None => Command::Finish(out.stream),
                    Some(_) => Command::Reset {
                        stream: out.stream,
                        code: StreamResetCode::InternalError,
                    },
                });
                true
            }
            None => false,
        }
    }

    /// Reset the subgroup stream of (alias, group, subgroup), if open.
    pub fn reset_subgroup(
        &mut self,
        track_alias: u64,
        group: u64,
        subgroup: u64,
        code: StreamResetCode,
    ) -> bool {
        match self.out_subgroups.remove(&(track_alias, group, subgroup)) {
            Some(out) => {
                self.streams.remove(&out.stream);
                self.commands.push_back(Command::Reset {
                    stream: out.stream,
                    code,
                });
                true
            }
            None => false,
        }
    }

    /// Reset every open subgroup stream of `track_alias` with `code`: a
    /// subscription that ends closes its streams first (§10.11: no
    /// PUBLISH_DONE while they are open; §11.4.3). Returns how many.
    pub fn reset_track_subgroups(&mut self, track_alias: u64, code: StreamResetCode) -> usize {
        let keys = self.track_subgroups(track_alias);
        for key in &keys {
            if let Some(out) = self.out_subgroups.remove(key) {
                self.streams.remove(&out.stream);
                self.commands.push_back(Command::Reset {
                    stream: out.stream,
                    code,
                });
            }
        }
        keys.len()
    }

    /// The open outgoing subgroups of our track `track_alias`.
    fn track_subgroups(&self, track_alias: u64) -> Vec<(u64, u64, u64)> {
        self.out_subgroups
            .keys()
            .filter(|k| k.0 == track_alias)
            .copied()
            .collect()
    }

    /// Finish (FIN) every open subgroup stream of our track `track_alias`
    /// (a relay draining its subscriptions); returns how many.
    pub fn finish_track_subgroups(&mut self, track_alias: u64) -> usize {
        let keys = self.track_subgroups(track_alias);
        for &(alias, group, subgroup) in &keys {
            self.end_subgroup(alias, group, subgroup);
        }
        keys.len()
    }

    /// Send an OBJECT_DATAGRAM (§11.3.1); its alias must be ours.
    pub fn send_datagram(&mut self, datagram: &ObjectDatagram) -> Result<(), SessionError> {
        self.check_open()?;
        if !self.local_aliases.contains_key(&datagram.track_alias) {
            return Err(SessionError::UnknownTrackAlias(datagram.track_alias));
        }
        self.scratch.clear();
        datagram.encode(&mut self.scratch)?;
        let data = self.scratch.split().freeze();
        self.commands.push_back(Command::SendDatagram(data));
        Ok(())
    }

    /// Open the FETCH_HEADER stream (§11.4.4) answering the peer's FETCH
    /// `id` (after [`Session::fetch_ok`]).
    pub fn open_fetch_stream(&mut self, id: RequestId) -> Result<StreamRef, SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        if r.local || r.kind != MessageType::Fetch || !r.answered || r.fetch_stream.is_some() {
            return Err(SessionError::InvalidState(
                "fetch stream answers an accepted peer FETCH, once",
            ));
        }
        let order = r.fetch_order;
        self.scratch.clear();
        FetchHeader { request_id: id.0 }.encode(&mut self.scratch)?;
        let head = self.scratch.split().freeze();
        let stream = self.alloc_stream();
        self.streams.insert(
            stream,
            Stream {
                kind: Kind::DataSend,
                buf: BytesMut::new(),
                fin: false,
            },
        );
        if let Some(r) = self.requests.get_mut(&id) {
            r.fetch_stream = Some((stream, FetchEncoder::new(order)));
        }
        self.commands.push_back(Command::OpenUni(stream));
        self.write(stream, head, false);
        Ok(stream)
    }

    /// Send one object on the fetch stream of the peer's FETCH `id`; the
    /// payload is written as its own `Bytes`.
    pub fn send_fetch_object(
        &mut self,
        id: RequestId,
        object: FetchObject,
    ) -> Result<(), SessionError> {
        self.check_open()?;
        let Some(r) = self.requests.get_mut(&id) else {
            return Err(SessionError::UnknownRequest(id));
        };
        let Some((stream, enc)) = r.fetch_stream.as_mut() else {
            return Err(SessionError::InvalidState("no fetch stream open"));
        };
        let stream = *stream;
        let h = FetchObjectHeader {
            location: object.location,
            subgroup_id: object.subgroup_id,
            publisher_priority: object.publisher_priority,
            properties: object.properties,
            payload_len: object.payload.len() as u64,
        };
        self.scratch.clear();
        enc.encode_object_header(&h, &mut self.scratch)?;
        let head = self.scratch.split().freeze();
        self.write(stream, head, false);
        if !object.payload.is_empty() {
            self.write(stream, object.payload, false);
        }
        Ok(())
    }

    /// Send an End of Range marker (§11.4.4) on the fetch stream of the
    /// peer's FETCH `id`: the locations after the last object sent, through
    /// `end.location`, do not exist or are unknown.
    pub fn send_fetch_end_of_range(
        &mut self,
        id: RequestId,
        end: EndOfRange,
    ) -> Result<(), SessionError> {
        self.check_open()?;
        let Some(r) = self.requests.get_mut(&id) else {
            return Err(SessionError::UnknownRequest(id));
        };
        let Some((stream, enc)) = r.fetch_stream.as_mut() else {
            return Err(SessionError::InvalidState("no fetch stream open"));
        };
        let stream = *stream;
        self.scratch.clear();
        enc.encode_end_of_range(&end, &mut self.scratch)?;
        let data = self.scratch.split().freeze();
        self.write(stream, data, false);
        Ok(())
    }

    /// FIN the fetch stream of the peer's FETCH `id`.
    pub fn finish_fetch(&mut self, id: RequestId) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_mut(id)?;
        let Some((stream, _)) = r.fetch_stream.take() else {
            return Err(SessionError::InvalidState("no fetch stream open"));
        };
        self.streams.remove(&stream);
        self.commands.push_back(Command::Finish(stream));
        self.maybe_retire(id);
        Ok(())
    }

    // ----------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------

    fn check_open(&self) -> Result<(), SessionError> {
        match self.closed {
            Some(code) => Err(SessionError::Closed(code)),
            None => Ok(()),
        }
    }

    fn alloc_stream(&mut self) -> StreamRef {
        let s = StreamRef(self.next_stream);
        self.next_stream += 1;
        s
    }

    fn encode(&mut self, msg: &ControlMessage) -> Result<Bytes, EncodeError> {
        self.scratch.clear();
        msg.encode(&mut self.scratch)?;
        Ok(self.scratch.split().freeze())
    }

    fn write(&mut self, stream: StreamRef, data: Bytes, fin: bool) {
        self.commands
            .push_back(Command::Write { stream, data, fin });
    }

    fn request_ref(&self, id: RequestId) -> Result<&Request, SessionError> {
        self.requests
            .get(&id)
            .ok_or(SessionError::UnknownRequest(id))
    }

    fn request_mut(&mut self, id: RequestId) -> Result<&mut Request, SessionError> {
        self.requests
            .get_mut(&id)
            .ok_or(SessionError::UnknownRequest(id))
    }

    fn start_request(
        &mut self,
        build: impl FnOnce(u64) -> ControlMessage,
    ) -> Result<RequestId, SessionError> {
        self.check_open()?;
        if self.goaway_received {
            return Err(SessionError::GoingAway);
        }
        if self.local_requests >= MAX_CONCURRENT_REQUESTS {
            return Err(SessionError::TooManyRequests);
        }
        let id = self.next_request_id;
        let msg = build(id);
        let kind = msg.message_type();
        let data = self.encode(&msg)?;
        self.next_request_id += 2;
        let stream = self.alloc_stream();
        self.streams.insert(
            stream,
            Stream {
                kind: Kind::Request(RequestId(id)),
                buf: BytesMut::new(),
                fin: false,
            },
        );
        self.requests
            .insert(RequestId(id), Request::new(stream, kind, true));
        self.local_requests += 1;
        self.commands.push_back(Command::OpenBi(stream));
        self.write(stream, data, false);
        Ok(RequestId(id))
    }

    fn respond(
        &mut self,
        id: RequestId,
        msg: ControlMessage,
        fin: bool,
    ) -> Result<(), SessionError> {
        let data = self.encode(&msg)?;
        let r = self.request_mut(id)?;
        if r.send_done {
            return Err(SessionError::InvalidState("request stream finished"));
        }
        let is_response = matches!(
            msg.message_type(),
            MessageType::SubscribeOk
                | MessageType::FetchOk
                | MessageType::RequestOk
                | MessageType::PublishOk
                | MessageType::RequestError
        );
        let mut deferred = Vec::new();
        if is_response {
            if !r.local && !r.answered {
                r.answered = true;
                // Deferred update answers follow an acceptance; a refusal
                // ends the request and them with it.
                deferred = std::mem::take(&mut r.deferred);
                if msg.message_type() == MessageType::RequestError {
                    deferred.clear();
                }
            } else if r.updates_received > 0 {
                r.updates_received -= 1;
            }
        }
        r.send_done |= fin;
        let stream = r.stream;
        self.write(stream, data, fin && deferred.is_empty());
        let last = deferred.len();
        for (i, d) in deferred.into_iter().enumerate() {
            self.write(stream, d, fin && i + 1 == last);
        }
        self.maybe_retire(id);
        Ok(())
    }

    fn namespace_msg(&mut self, id: RequestId, msg: ControlMessage) -> Result<(), SessionError> {
        self.check_open()?;
        let r = self.request_ref(id)?;
        if r.local || r.kind != MessageType::SubscribeNamespace || !r.answered {
            return Err(SessionError::InvalidState(
                "NAMESPACE / NAMESPACE_DONE go on an accepted peer SUBSCRIBE_NAMESPACE",
            ));
        }
        self.respond(id, msg, false)
    }

    /// Forget a request once both directions are done.
    fn maybe_retire(&mut self, id: RequestId) {
        if let Some(r) = self.requests.get(&id) {
            if r.send_done && r.recv_done && r.fetch_stream.is_none() && r.fetch_recv.is_none() {
                let stream = r.stream;
                self.streams.remove(&stream);
                self.retire(id);
            }
        }
    }

    fn retire(&mut self, id: RequestId) {
        if let Some(r) = self.requests.remove(&id) {
            if r.local {
                self.local_requests -= 1;
            } else {
                self.remote_requests -= 1;
            }
            if let Some(a) = r.peer_alias {
                self.peer_aliases.remove(&a);
            }
            if let Some(a) = r.local_alias {
                self.local_aliases.remove(&a);
            }
            if let Some((s, _)) = r.fetch_stream {
                self.streams.remove(&s);
                self.commands.push_back(Command::Reset {
                    stream: s,
                    code: StreamResetCode::Cancelled,
                });
            }
            if let Some(s) = r.fetch_recv {
                self.streams.remove(&s);
                self.commands.push_back(Command::StopSending {
                    stream: s,
                    code: StreamResetCode::Cancelled,
                });
            }
        }
    }

    /// UNSUBSCRIBE (type 0xA of drafts up to 16) on the request stream of a
    /// SUBSCRIBE the peer made. Draft-18 has no such message (a subscriber
    /// resets its stream instead) and an unknown type closes the session,
    /// but a widely deployed draft-18 stack (moq-transport 0.17) still ends
    /// its subscriptions this way: it is taken as a cancel of that
    /// subscription, and on any other stream it stays unknown.
    fn legacy_unsubscribe<B: Buf>(&self, id: RequestId, buf: &mut B) -> Option<LegacyUnsubscribe> {
        const UNSUBSCRIBE: u8 = 0x0A;
        let head = buf.chunk();
        if head.first() != Some(&UNSUBSCRIBE) {
            return None;
        }
        let r = self.requests.get(&id)?;
        if r.local || r.kind != MessageType::Subscribe {
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

    fn peer_cancelled(&mut self, id: RequestId, abort: PeerAbort) {
        let Some(r) = self.requests.get(&id) else {
            return;
        };
        let (stream, send_done, recv_done) = (r.stream, r.send_done, r.recv_done);
        let code = match abort {
            PeerAbort::Reset(c) | PeerAbort::StopSending(c) => c,
        };
        if !send_done {
            self.commands.push_back(Command::Reset { stream, code });
        }
        if !recv_done && matches!(abort, PeerAbort::StopSending(_)) {
            self.commands
                .push_back(Command::StopSending { stream, code });
        }
        self.retire(id);
        self.events.push_back(Event::RequestCancelled { id, abort });
    }

    /// True if this stream's data must wait for SETUP (§3.3).
    fn must_wait(&self, st: &Stream, data: &Bytes) -> bool {
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
    fn refuse_stream(&mut self, stream: StreamRef, st: &Stream, code: StreamResetCode) {
        if matches!(st.kind, Kind::PendingBidi) {
            self.commands.push_back(Command::Reset { stream, code });
        }
        if !st.fin {
            self.commands
                .push_back(Command::StopSending { stream, code });
        }
    }

    /// Stop reading a data stream whose track is malformed (§2.4.2).
    fn stop_malformed(&mut self, stream: StreamRef, st: &mut Stream) {
        if !st.fin {
            self.commands.push_back(Command::StopSending {
                stream,
                code: StreamResetCode::MalformedTrack,
            });
        }
        st.kind = Kind::Discard;
    }

    fn fail(&mut self, e: &DecodeError) -> Flow {
        let code = e
            .session_error_code()
            .unwrap_or(SessionErrorCode::ProtocolViolation);
        self.close(code, &e.to_string());
        Flow::Drop
    }

    fn violation(&mut self, reason: &str) -> Flow {
        self.close(SessionErrorCode::ProtocolViolation, reason);
        Flow::Drop
    }

    /// Checks after decoding: FIN handling and buffer bounds.
    fn after_process(&mut self, stream: StreamRef, st: &mut Stream) -> Flow {
        if self.closed.is_some() {
            return Flow::Drop;
        }
        let leftover = !st.buf.is_empty();
        if st.fin {
            match &st.kind {
                Kind::ControlRecv => return self.violation("control stream finished"),
                Kind::PendingUni | Kind::PendingBidi => {
                    return if leftover {
                        self.violation("stream finished inside its header")
                    } else {
                        Flow::Drop
                    };
                }
                Kind::Request(id) => {
                    let id = *id;
                    if leftover {
                        return self.violation("request stream finished inside a message");
                    }
                    if let Some(r) = self.requests.get_mut(&id) {
                        if !r.recv_done {
                            r.recv_done = true;
                            self.events.push_back(Event::PeerFinished { id });
                        }
                        if let Some(code) = r.stopped_by_peer {
                            // The peer stopped our side and has now finished
                            // its own: the request is over.
                            self.streams.remove(&stream);
                            self.retire(id);
                            self.events.push_back(Event::RequestCancelled {
                                id,
                                abort: PeerAbort::StopSending(code),
                            });
                            return Flow::Drop;
                        }
                    }
                    self.maybe_retire(id);
                    return if self.requests.contains_key(&id) {
                        Flow::Keep
                    } else {
                        Flow::Drop
                    };
                }
                Kind::Subgroup(SubgroupIn { dec, partial }) => {
                    if leftover || partial.is_some() {
                        return self.violation("subgroup stream finished inside an object");
                    }
                    let h = dec.header();
                    self.events.push_back(Event::SubgroupEnded {
                        stream,
                        track_alias: h.track_alias,
                        group: h.group_id,
                        subgroup: dec.subgroup_id(),
                        abort: None,
                    });
                    return Flow::Drop;
                }
                Kind::Fetch(id, _) => {
                    let id = *id;
                    if leftover {
                        return self.violation("fetch stream finished inside an object");
                    }
                    if let Some(r) = self.requests.get_mut(&id) {
                        r.fetch_recv = None;
                    }
                    self.events.push_back(Event::FetchEnded { id, abort: None });
                    self.maybe_retire(id);
                    return Flow::Drop;
                }
                Kind::Discard => return Flow::Drop,
                Kind::ControlSend | Kind::DataSend => {}
            }
        }
        if st.buf.len() > self.config.max_object_size {
            // Only data streams can get here: control messages are
            // bounded by their 16-bit length.
            self.stop_excessive(stream, st);
        }
        if matches!(st.kind, Kind::Discard) || st.buf.is_empty() {
            // Free, not just empty: an idle or discarding stream holds no
            // memory (the next chunk is decoded in place).
            st.buf = BytesMut::new();
        }
        Flow::Keep
    }

    /// Stops a data stream that holds more than the session may buffer
    /// (EXCESSIVE_LOAD); its data is discarded from now on.
    fn stop_excessive(&mut self, stream: StreamRef, st: &mut Stream) {
        st.buf = BytesMut::new();
        self.commands.push_back(Command::StopSending {
            stream,
            code: StreamResetCode::ExcessiveLoad,
        });
        match std::mem::replace(&mut st.kind, Kind::Discard) {
            Kind::Subgroup(SubgroupIn { dec, .. }) => self.events.push_back(Event::SubgroupEnded {
                stream,
                track_alias: dec.header().track_alias,
                group: dec.header().group_id,
                subgroup: dec.subgroup_id(),
                abort: Some(StreamResetCode::ExcessiveLoad),
            }),
            Kind::Fetch(id, _) => {
                if let Some(r) = self.requests.get_mut(&id) {
                    r.fetch_recv = None;
                }
                self.events.push_back(Event::FetchEnded {
                    id,
                    abort: Some(StreamResetCode::ExcessiveLoad),
                });
            }
            _ => {}
        }
    }

    /// Over the connection's buffer bound: stops the data streams holding
    /// the most until it fits. Only this peer's own streams pay. Control
    /// and request messages are not counted out: each is at most 64 KiB,
    /// so with a bound above (request streams + 1) × 64 KiB they cannot
    /// exceed it alone.
    fn enforce_buffer_bound(&mut self) {
        while self.streams.buffered() > self.config.max_buffered_bytes {
            let Some(stream) = self.streams.largest_data_buffer() else {
                return;
            };
            let Some(mut st) = self.streams.remove(&stream) else {
                return;
            };
            self.stop_excessive(stream, &mut st);
            self.streams.insert(stream, st);
        }
    }

    /// Decode everything complete at the front of `buf` for this stream.
    fn process<B: Buf>(&mut self, stream: StreamRef, st: &mut Stream, buf: &mut B) -> Flow {
        loop {
            if self.closed.is_some() {
                return Flow::Drop;
            }
            match &mut st.kind {
                Kind::PendingUni => match UniStreamHeader::decode(buf) {
                    Err(DecodeError::Incomplete) => return Flow::Keep,
                    Err(e) => return self.fail(&e),
                    Ok(UniStreamHeader::Control(setup)) => {
                        if self.control_recv.is_some() {
                            return self.violation("second control stream");
                        }
                        self.control_recv = Some(stream);
                        st.kind = Kind::ControlRecv;
                        if let Flow::Drop = self.on_setup(setup) {
                            return Flow::Drop;
                        }
                        self.flush_pre_setup();
                    }
                    Ok(UniStreamHeader::Subgroup(h)) => {
                        st.kind = Kind::Subgroup(SubgroupIn {
                            dec: SubgroupDecoder::new(h),
                            partial: None,
                        });
                    }
                    Ok(UniStreamHeader::Fetch(h)) => {
                        let id = RequestId(h.request_id);
                        match self.requests.get_mut(&id) {
                            Some(r)
                                if r.local
                                    && r.kind == MessageType::Fetch
                                    && r.fetch_recv.is_none() =>
                            {
                                r.fetch_recv = Some(stream);
                                st.kind = Kind::Fetch(id, FetchDecoder::new(r.fetch_order));
                            }
                            _ => {
                                // A FETCH we cancelled, or never sent.
                                if !st.fin {
                                    self.commands.push_back(Command::StopSending {
                                        stream,
                                        code: StreamResetCode::Cancelled,
                                    });
                                }
                                st.kind = Kind::Discard;
                            }
                        }
                    }
                    Ok(UniStreamHeader::Padding) => st.kind = Kind::Discard,
                },
                Kind::PendingBidi => match ControlMessage::decode(buf) {
                    Err(DecodeError::Incomplete) => return Flow::Keep,
                    Err(e) => return self.fail(&e),
                    Ok(msg) => {
                        if let Flow::Drop = self.on_new_request(stream, st, msg) {
                            return Flow::Drop;
                        }
                    }
                },
                Kind::ControlRecv => match ControlMessage::decode(buf) {
                    Err(DecodeError::Incomplete) => return Flow::Keep,
                    Err(e) => return self.fail(&e),
                    Ok(ControlMessage::GoAway(g)) => {
                        if self.goaway_received {
                            return self.violation("second GOAWAY on the control stream");
                        }
                        if self.role == Role::Server && !g.new_session_uri.is_empty() {
                            return self.violation("client GOAWAY with a New Session URI");
                        }
                        // Our own request IDs: even from a client, odd from
                        // a server (§10.1); absent is malformed on the
                        // control stream (§10.4).
                        let ours = match self.role {
                            Role::Client => 0,
                            Role::Server => 1,
                        };
                        if g.request_id.is_none_or(|id| id % 2 != ours) {
                            self.close(
                                SessionErrorCode::InvalidRequestId,
                                "GOAWAY Request ID missing or of the wrong parity",
                            );
                            return Flow::Drop;
                        }
                        self.goaway_received = true;
                        self.events.push_back(Event::GoAway {
                            new_session_uri: g.new_session_uri,
                            timeout: g.timeout,
                        });
                    }
                    Ok(m) => {
                        let _ = m;
                        return self.violation("unexpected message on the control stream");
                    }
                },
                Kind::Request(id) => {
                    let id = *id;
                    match self.legacy_unsubscribe(id, buf) {
                        Some(LegacyUnsubscribe::Incomplete) => return Flow::Keep,
                        Some(LegacyUnsubscribe::Taken) => {
                            self.peer_cancelled(id, PeerAbort::Reset(StreamResetCode::Cancelled));
                            return Flow::Drop;
                        }
                        None => {}
                    }
                    match ControlMessage::decode(buf) {
                        Err(DecodeError::Incomplete) => return Flow::Keep,
                        Err(e) => return self.fail(&e),
                        Ok(msg) => {
                            if let Flow::Drop = self.on_request_message(id, msg) {
                                return Flow::Drop;
                            }
                        }
                    }
                }
                Kind::Subgroup(SubgroupIn { dec, partial }) => {
                    if let Some(p) = partial {
                        // Cut-through: pass on what arrived once there is
                        // enough of it, or the rest of the object.
                        let missing = p.length - p.delivered;
                        let available = buf.remaining() as u64;
                        let enough = self.config.cut_through_bytes.unwrap_or(0) as u64;
                        if available == 0 || (available < missing && available < enough) {
                            return Flow::Keep;
                        }
                        let n = available.min(missing);
                        let part = PayloadPart {
                            offset: p.delivered,
                            length: p.length,
                        };
                        p.delivered += n;
                        let h = *dec.header();
                        self.events.push_back(Event::Object(Object {
                            track_alias: h.track_alias,
                            request: self.peer_aliases.get(&h.track_alias).copied(),
                            location: Location::new(h.group_id, p.object_id),
                            subgroup: dec.subgroup_id(),
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
                            *partial = None;
                        }
                        continue;
                    }
                    match dec.decode_object(buf) {
                        Err(DecodeError::Incomplete) => {
                            // An object that is not all here: refuse it now if
                            // it declares more than may be buffered, start
                            // passing it on in parts if it is long.
                            let Ok(head) = dec.peek_object_header(buf) else {
                                return Flow::Keep;
                            };
                            if head.payload_len > self.config.max_object_size as u64 {
                                self.stop_excessive(stream, st);
                                continue;
                            }
                            let cut = self.config.cut_through_bytes;
                            if cut.is_none_or(|n| head.payload_len <= n as u64) {
                                return Flow::Keep;
                            }
                            let head = dec
                                .decode_object_header(buf)
                                .expect("a header that was just peeked");
                            *partial = Some(PartialObject {
                                object_id: head.object_id,
                                first_object: dec.header().first_object
                                    && dec.first_object_id() == Some(head.object_id),
                                properties: Some(head.properties),
                                length: head.payload_len,
                                delivered: 0,
                            });
                        }
                        Err(e) if e.session_error_code().is_none() => {
                            // A malformed track (§2.4.2), not a broken session.
                            let h = *dec.header();
                            let subgroup = dec.subgroup_id();
                            self.stop_malformed(stream, st);
                            self.events.push_back(Event::SubgroupEnded {
                                stream,
                                track_alias: h.track_alias,
                                group: h.group_id,
                                subgroup,
                                abort: Some(StreamResetCode::MalformedTrack),
                            });
                        }
                        Err(e) => return self.fail(&e),
                        Ok(obj) => {
                            let h = *dec.header();
                            let subgroup = dec.subgroup_id();
                            let request = self.peer_aliases.get(&h.track_alias).copied();
                            self.events.push_back(Event::Object(Object {
                                track_alias: h.track_alias,
                                request,
                                location: Location::new(h.group_id, obj.object_id),
                                subgroup,
                                publisher_priority: h.publisher_priority,
                                status: obj.status,
                                properties: obj.properties,
                                payload: obj.payload,
                                end_of_group: h.end_of_group,
                                first_object: h.first_object
                                    && dec.first_object_id() == Some(obj.object_id),
                                stream: Some(stream),
                                part: None,
                            }));
                        }
                    }
                }
                Kind::Fetch(id, dec) => {
                    let id = *id;
                    match dec.decode_item(buf) {
                        Err(DecodeError::Incomplete) => return Flow::Keep,
                        Err(e) if e.session_error_code().is_none() => {
                            self.stop_malformed(stream, st);
                            if let Some(r) = self.requests.get_mut(&id) {
                                r.fetch_recv = None;
                            }
                            self.events.push_back(Event::FetchEnded {
                                id,
                                abort: Some(StreamResetCode::MalformedTrack),
                            });
                        }
                        Err(e) => return self.fail(&e),
                        Ok(FetchItem::Object(object)) => {
                            self.events.push_back(Event::FetchObject { id, object })
                        }
                        Ok(FetchItem::EndOfRange(end)) => {
                            self.events.push_back(Event::FetchEndOfRange { id, end })
                        }
                    }
                }
                Kind::Discard | Kind::ControlSend | Kind::DataSend => {
                    buf.advance(buf.remaining());
                    return Flow::Keep;
                }
            }
        }
    }

    fn on_setup(&mut self, setup: Setup) -> Flow {
        if self.role == Role::Client && setup.path().is_some() {
            self.close(SessionErrorCode::InvalidPath, "PATH in a server's SETUP");
            return Flow::Drop;
        }
        self.ready = true;
        self.peer_setup = Some(setup.clone());
        self.events.push_back(Event::Ready { peer_setup: setup });
        Flow::Keep
    }

    /// Run the streams and datagrams buffered before SETUP (§3.3).
    fn flush_pre_setup(&mut self) {
        for stream in std::mem::take(&mut self.pre_setup) {
            if self.closed.is_some() {
                return;
            }
            let Some(mut st) = self.streams.remove(&stream) else {
                continue;
            };
            let mut buf = std::mem::take(&mut st.buf);
            let flow = self.process(stream, &mut st, &mut buf);
            st.buf = buf;
            let flow = match flow {
                Flow::Keep => self.after_process(stream, &mut st),
                Flow::Drop => Flow::Drop,
            };
            if matches!(flow, Flow::Keep) && self.closed.is_none() {
                self.streams.insert(stream, st);
            }
        }
        for d in std::mem::take(&mut self.pre_setup_datagrams) {
            if self.closed.is_some() {
                return;
            }
            self.process_datagram(&d);
        }
    }

    fn on_new_request(&mut self, stream: StreamRef, st: &mut Stream, msg: ControlMessage) -> Flow {
        let kind = msg.message_type();
        if !kind.starts_request_stream() {
            return self.violation("request stream must start with a request");
        }
        let raw_id = match &msg {
            ControlMessage::Subscribe(m) => m.request_id,
            ControlMessage::Publish(m) => m.request_id,
            ControlMessage::Fetch(m) => m.request_id,
            ControlMessage::TrackStatus(m) => m.request_id,
            ControlMessage::PublishNamespace(m) => m.request_id,
            ControlMessage::SubscribeNamespace(m) => m.request_id,
            ControlMessage::SubscribeTracks(m) => m.request_id,
            _ => return self.violation("request stream must start with a request"),
        };
        if let Flow::Drop = self.take_peer_id(raw_id) {
            return Flow::Drop;
        }
        let id = RequestId(raw_id);
        if self.remote_requests >= MAX_CONCURRENT_REQUESTS {
            // Refuse without surfacing (§3.3.2: REQUEST_ERROR then FIN).
            let err = RequestError {
                error_code: RequestErrorCode::ExcessiveLoad,
                retry_interval: 0,
                reason: ReasonPhrase::default(),
                redirect: None,
            };
            if let Ok(data) = self.encode(&err.into()) {
                self.write(stream, data, true);
            }
            if !st.fin {
                self.commands.push_back(Command::StopSending {
                    stream,
                    code: StreamResetCode::ExcessiveLoad,
                });
            }
            st.kind = Kind::Discard;
            return Flow::Keep;
        }
        let mut req = Request::new(stream, kind, false);
        if let ControlMessage::Publish(p) = &msg {
            if let Flow::Drop = self.register_peer_alias(p.track_alias, id) {
                return Flow::Drop;
            }
            req.peer_alias = Some(p.track_alias);
        }
        if let ControlMessage::Fetch(f) = &msg {
            req.fetch_order = f.parameters.group_order.unwrap_or_default();
        }
        self.requests.insert(id, req);
        self.remote_requests += 1;
        st.kind = Kind::Request(id);
        self.events.push_back(Event::Request { id, message: msg });
        Flow::Keep
    }

    fn take_peer_id(&mut self, raw: u64) -> Flow {
        let parity = match self.role {
            Role::Client => 1,
            Role::Server => 0,
        };
        if raw % 2 != parity {
            self.close(
                SessionErrorCode::InvalidRequestId,
                "request ID of the wrong parity",
            );
            return Flow::Drop;
        }
        if !self.peer_ids.take(raw) {
            self.close(SessionErrorCode::InvalidRequestId, "duplicate request ID");
            return Flow::Drop;
        }
        Flow::Keep
    }

    fn register_peer_alias(&mut self, alias: u64, id: RequestId) -> Flow {
        if self.peer_aliases.contains_key(&alias) {
            self.close(
                SessionErrorCode::DuplicateTrackAlias,
                "duplicate track alias",
            );
            return Flow::Drop;
        }
        self.peer_aliases.insert(alias, id);
        Flow::Keep
    }

    /// A message after the first on a request stream: check it fits the
    /// request and direction, then surface it.
    fn on_request_message(&mut self, id: RequestId, msg: ControlMessage) -> Flow {
        let Some(r) = self.requests.get_mut(&id) else {
            return Flow::Keep;
        };
        let ty = msg.message_type();
        let kind = r.kind;
        let allowed = match ty {
            MessageType::Setup => false,
            t if t.starts_request_stream() => false,
            MessageType::GoAway => {
                if r.goaway_received {
                    false
                } else {
                    r.goaway_received = true;
                    true
                }
            }
            MessageType::RequestUpdate => true,
            MessageType::SubscribeOk
            | MessageType::FetchOk
            | MessageType::RequestOk
            | MessageType::PublishOk
            | MessageType::RequestError => {
                if r.local && !r.answered {
                    let fits = match ty {
                        MessageType::SubscribeOk => kind == MessageType::Subscribe,
                        MessageType::FetchOk => kind == MessageType::Fetch,
                        MessageType::RequestError => true,
                        _ => !matches!(kind, MessageType::Subscribe | MessageType::Fetch),
                    };
                    if fits {
                        r.answered = true;
                    }
                    fits
                } else if r.updates_sent > 0
                    && matches!(ty, MessageType::RequestOk | MessageType::RequestError)
                {
                    r.updates_sent -= 1;
                    true
                } else {
                    false
                }
            }
            MessageType::PublishDone => {
                (r.local && kind == MessageType::Subscribe && r.answered)
                    || (!r.local && kind == MessageType::Publish)
            }
            MessageType::Namespace | MessageType::NamespaceDone | MessageType::PublishBlocked => {
                r.local
                    && r.answered
                    && matches!(
                        kind,
                        MessageType::SubscribeNamespace | MessageType::SubscribeTracks
                    )
            }
            _ => false,
        };
        if !allowed {
            return self.violation("message not allowed on this request stream");
        }
        match &msg {
            ControlMessage::RequestUpdate(u) => {
                if let Flow::Drop = self.take_peer_id(u.request_id) {
                    return Flow::Drop;
                }
                if let Some(r) = self.requests.get_mut(&id) {
                    r.updates_received += 1;
                }
            }
            ControlMessage::SubscribeOk(ok) => {
                if let Flow::Drop = self.register_peer_alias(ok.track_alias, id) {
                    return Flow::Drop;
                }
                if let Some(r) = self.requests.get_mut(&id) {
                    r.peer_alias = Some(ok.track_alias);
                }
            }
            _ => {}
        }
        self.events.push_back(Event::Message { id, message: msg });
        Flow::Keep
    }

    fn process_datagram(&mut self, data: &Bytes) {
        match Datagram::decode(data) {
            Err(e) => {
                self.fail(&e);
            }
            Ok(Datagram::Padding { .. }) => {}
            Ok(Datagram::Object(d)) => {
                let (status, payload) = match d.content {
                    DatagramContent::Payload(p) => (ObjectStatus::Normal, p),
                    DatagramContent::Status(s) => (s, Bytes::new()),
                };
                let request = self.peer_aliases.get(&d.track_alias).copied();
                self.events.push_back(Event::Object(Object {
                    track_alias: d.track_alias,
                    request,
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
    }
}

impl Request {
    fn new(stream: StreamRef, kind: MessageType, local: bool) -> Self {
        Request {
            stream,
            kind,
            local,
            answered: false,
            goaway_received: false,
            recv_done: false,
            send_done: false,
            peer_alias: None,
            local_alias: None,
            updates_sent: 0,
            updates_received: 0,
            fetch_order: GroupOrder::Ascending,
            fetch_stream: None,
            fetch_recv: None,
            stopped_by_peer: None,
            deferred: Vec::new(),
        }
    }
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
