//! The [`Session`] facade: it owns the parts and keeps the public methods.
//! See the module documentation for the driving contract.
//!
//! * [`Control`]: SETUP and GOAWAY on the control streams.
//! * [`RequestTable`]: requests in both directions, the peer's Request
//!   IDs, Track Aliases; the one guard of calls on a request.
//! * [`Outgoing`]: our Request IDs and request streams.
//! * [`ObjectStreams`]: subgroup streams, datagrams and fetch streams out.
//! * [`Incoming`]: decoding what the peer sends, with the buffer bounds.
//! * [`StreamTable`] and [`Outbox`]: the streams, and the commands and
//!   events, that all of them share.
//!
//! The parts never close the session themselves: they return a [`Fatal`]
//! and the facade closes, so a close clears every part in one place.

use bytes::Bytes;

use super::control::Control;
use super::incoming::{Cx, Incoming};
use super::objects::{self, FetchOut, ObjectStreams};
use super::outbox::{Fatal, Outbox};
use super::outgoing::Outgoing;
use super::requests::{RequestTable, Rule};
use super::stream::{Kind, Stream};
use super::table::StreamTable;
use super::*;
use crate::codes::RequestErrorCode;
use crate::data::datagram::ObjectDatagram;
use crate::message::{
    Fetch, FetchOk, FetchType, MessageType, Namespace, NamespaceDone, Publish, PublishDone,
    PublishNamespace, RequestError, RequestOk, Subscribe, SubscribeNamespace, SubscribeOk,
    SubscribeTracks, TrackStatus,
};
use crate::names::{FullTrackName, TrackNamespace};
use crate::params::Parameters;
use crate::types::ReasonPhrase;

/// A sans-IO MOQT session (one per connection). See the module
/// documentation for the driving contract.
pub struct Session {
    closed: Option<SessionErrorCode>,
    control: Control,
    requests: RequestTable,
    outgoing: Outgoing,
    objects: ObjectStreams,
    incoming: Incoming,
    streams: StreamTable,
    out: Outbox,
}

impl Session {
    /// A new session. Its first commands open the control stream and write
    /// SETUP (§3.3).
    pub fn new(role: Role, config: SessionConfig) -> Self {
        let mut streams = StreamTable::default();
        let control_stream = streams.open(Kind::ControlSend);
        let mut s = Session {
            closed: None,
            control: Control::new(role, control_stream),
            requests: RequestTable::new(role),
            outgoing: Outgoing::new(role),
            objects: ObjectStreams::default(),
            incoming: Incoming::new(&config),
            streams,
            out: Outbox::default(),
        };
        if s.control.open(config.setup, &mut s.out).is_err() {
            s.close(SessionErrorCode::InternalError, "cannot encode SETUP");
        }
        s
    }

    /// This endpoint's role.
    pub fn role(&self) -> Role {
        self.control.role()
    }

    /// True once the peer's SETUP has been received.
    pub fn is_ready(&self) -> bool {
        self.control.is_ready()
    }

    /// The termination code if the session is closed.
    pub fn closed(&self) -> Option<SessionErrorCode> {
        self.closed
    }

    /// The peer's SETUP, once received.
    pub fn peer_setup(&self) -> Option<&Setup> {
        self.control.peer_setup()
    }

    /// Number of open requests (both directions).
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// How many subgroup streams this session has opened so far. Compared
    /// before and after a send, it tells whether that object opened a new
    /// stream (whose OpenUni is still queued), with no lookup.
    pub fn subgroup_streams_opened(&self) -> u64 {
        self.objects.opened()
    }

    /// The next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.poll_command()
    }

    /// The next command, left in place: a driver can see that the next
    /// write continues the stream it is writing to and hand both over at once.
    pub fn peek_command(&self) -> Option<&Command> {
        self.out.peek_command()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    // ----------------------------------------------------------------
    // Driver inputs
    // ----------------------------------------------------------------

    /// The peer opened a stream; returns the handle the session will use
    /// for it.
    pub fn on_peer_stream(&mut self, bidi: bool) -> StreamRef {
        let s = self.streams.alloc();
        if self.closed.is_none() {
            let kind = if bidi {
                Kind::PendingBidi
            } else {
                Kind::PendingUni
            };
            self.streams.insert(s, Stream::new(kind));
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
        let (incoming, mut cx) = self.incoming();
        let r = incoming.on_stream_data(&mut cx, stream, data, fin);
        self.close_on(r);
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
            aliases: self.requests.alias_count(),
            out_subgroups: self.objects.len(),
            buffered_bytes: self.streams.buffered(),
        }
    }

    /// The peer reset its sending side of a stream (RESET_STREAM).
    pub fn on_stream_reset(&mut self, stream: StreamRef, code: u64) -> Result<(), SessionError> {
        self.check_open()?;
        let code = peer_stream_code(code);
        let (incoming, mut cx) = self.incoming();
        let r = incoming.on_stream_reset(&mut cx, stream, code);
        self.close_on(r);
        self.check_open()
    }

    /// The peer sent STOP_SENDING for our side of a stream.
    pub fn on_stop_sending(&mut self, stream: StreamRef, code: u64) -> Result<(), SessionError> {
        self.check_open()?;
        let code = peer_stream_code(code);
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
                self.requests
                    .on_stop_sending(id, stream, code, &mut self.streams, &mut self.out);
            }
            Kind::DataSend => {
                self.streams.remove(&stream);
                self.out.reset(stream, code);
                self.objects.on_stopped(stream, code, &mut self.out);
                self.requests.forget_fetch_stream(stream);
            }
            Kind::PendingBidi => {
                let st = self.streams.remove(&stream);
                self.incoming.refuse_pending(stream, st, &mut self.out);
            }
            _ => {}
        }
        self.check_open()
    }

    /// A QUIC DATAGRAM arrived (§11.3).
    pub fn on_datagram(&mut self, datagram: Bytes) -> Result<(), SessionError> {
        self.check_open()?;
        let (incoming, mut cx) = self.incoming();
        let r = incoming.on_datagram(&mut cx, datagram);
        self.close_on(r);
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
        self.incoming.clear();
        self.objects.clear();
        self.out.command(Command::Close {
            code,
            reason: reason.to_string(),
        });
        self.out.event(Event::Closed {
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
        self.out.clear_commands();
    }

    /// Send GOAWAY on the control stream (§10.4). A client must pass an
    /// empty URI. Only one GOAWAY is sent per session.
    pub fn go_away(&mut self, new_session_uri: Bytes, timeout: u64) -> Result<(), SessionError> {
        self.check_open()?;
        // On the control stream it names the smallest peer Request ID
        // not processed: the next one the peer may use.
        let request_id = self.requests.goaway_id();
        self.control
            .go_away(new_session_uri, timeout, request_id, &mut self.out)
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
        let alias = self.requests.next_alias();
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
        Ok((id, self.requests.bind_local_alias(id)))
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
        self.outgoing.update(
            id,
            parameters,
            &mut self.requests,
            &mut self.streams,
            &mut self.out,
        )
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
        self.requests.guard(self.closed, id, &Rule::SUBSCRIBE_OK)?;
        let msg = SubscribeOk {
            track_alias: self.requests.next_alias(),
            parameters,
            track_properties,
        };
        self.respond(id, msg.into(), false)?;
        Ok(self.requests.bind_local_alias(id))
    }

    /// REQUEST_OK (§10.5): answers a peer's PUBLISH (as PUBLISH_OK),
    /// TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE,
    /// SUBSCRIBE_TRACKS, or a REQUEST_UPDATE on request `id`'s stream.
    pub fn request_ok(&mut self, id: RequestId, ok: RequestOk) -> Result<(), SessionError> {
        let r = self.requests.guard(self.closed, id, &Rule::REQUEST_OK)?;
        if r.awaits_answer() && matches!(r.kind, MessageType::Subscribe | MessageType::Fetch) {
            // An update answered before the SUBSCRIBE_OK / FETCH_OK: the
            // peer reads that first, so this REQUEST_OK waits for it.
            let data = self.out.encode(&ControlMessage::RequestOk(ok))?;
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
        let r = self.requests.guard(self.closed, id, &Rule::REQUEST_ERROR)?;
        let fin = r.awaits_answer();
        let msg = RequestError {
            error_code: code,
            retry_interval: 0,
            reason: ReasonPhrase::truncated(reason),
            redirect: None,
        };
        self.respond(id, msg.into(), fin)
    }

    /// FETCH_OK (§10.13) for the peer's FETCH; objects then go on
    /// [`Session::open_fetch_stream`].
    pub fn fetch_ok(&mut self, id: RequestId, ok: FetchOk) -> Result<(), SessionError> {
        self.requests.guard(self.closed, id, &Rule::FETCH_OK)?;
        self.respond(id, ok.into(), false)
    }

    /// NAMESPACE (§10.16) on the peer's SUBSCRIBE_NAMESPACE stream.
    pub fn namespace(&mut self, id: RequestId, suffix: TrackNamespace) -> Result<(), SessionError> {
        self.requests.guard(self.closed, id, &Rule::NAMESPACE)?;
        self.respond(id, Namespace { suffix }.into(), false)
    }

    /// NAMESPACE_DONE (§10.17) on the peer's SUBSCRIBE_NAMESPACE stream.
    pub fn namespace_done(
        &mut self,
        id: RequestId,
        suffix: TrackNamespace,
    ) -> Result<(), SessionError> {
        self.requests.guard(self.closed, id, &Rule::NAMESPACE)?;
        self.respond(id, NamespaceDone { suffix }.into(), false)
    }

    /// PUBLISH_DONE (§10.11): ends a subscription we publish (the peer's
    /// SUBSCRIBE or our PUBLISH) and finishes our side of its stream.
    pub fn publish_done(&mut self, id: RequestId, done: PublishDone) -> Result<(), SessionError> {
        self.requests.guard(self.closed, id, &Rule::PUBLISH_DONE)?;
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
        self.requests.guard(self.closed, id, &Rule::ANY)?;
        self.respond(id, message, fin)
    }

    /// FIN our side of request `id`'s stream.
    pub fn finish(&mut self, id: RequestId) -> Result<(), SessionError> {
        let r = self.requests.guard(self.closed, id, &Rule::ANY)?;
        if r.send_done {
            return Ok(());
        }
        r.send_done = true;
        self.out.command(Command::Finish(r.stream));
        self.requests
            .maybe_retire(id, &mut self.streams, &mut self.out);
        Ok(())
    }

    /// Cancel request `id` (§3.3.2): RESET_STREAM and STOP_SENDING with
    /// `code` on whatever directions are open; the request is forgotten.
    pub fn cancel(&mut self, id: RequestId, code: StreamResetCode) -> Result<(), SessionError> {
        let r = self.requests.guard(self.closed, id, &Rule::ANY)?;
        let (stream, send_done, recv_done) = (r.stream, r.send_done, r.recv_done);
        if !send_done {
            self.out.reset(stream, code);
        }
        if !recv_done {
            self.out.stop_sending(stream, code);
        }
        self.streams.remove(&stream);
        self.requests.retire(id, &mut self.streams, &mut self.out);
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
        self.objects.continue_object(obj, part, &mut self.out)
    }

    /// FIN the subgroup stream of (alias, group, subgroup), if open.
    /// A stream whose last object is unfinished (a part never came) is
    /// reset instead: a FIN there would end it inside an object.
    pub fn end_subgroup(&mut self, track_alias: u64, group: u64, subgroup: u64) -> bool {
        self.objects.end(
            (track_alias, group, subgroup),
            &mut self.streams,
            &mut self.out,
        )
    }

    /// Reset the subgroup stream of (alias, group, subgroup), if open.
    pub fn reset_subgroup(
        &mut self,
        track_alias: u64,
        group: u64,
        subgroup: u64,
        code: StreamResetCode,
    ) -> bool {
        self.objects.reset(
            (track_alias, group, subgroup),
            code,
            &mut self.streams,
            &mut self.out,
        )
    }

    /// Reset every open subgroup stream of `track_alias` with `code`: a
    /// subscription that ends closes its streams first (§10.11: no
    /// PUBLISH_DONE while they are open; §11.4.3). Returns how many.
    pub fn reset_track_subgroups(&mut self, track_alias: u64, code: StreamResetCode) -> usize {
        self.objects
            .reset_track(track_alias, code, &mut self.streams, &mut self.out)
    }

    /// Finish (FIN) every open subgroup stream of our track `track_alias`
    /// (a relay draining its subscriptions); returns how many.
    pub fn finish_track_subgroups(&mut self, track_alias: u64) -> usize {
        self.objects
            .finish_track(track_alias, &mut self.streams, &mut self.out)
    }

    /// Send an OBJECT_DATAGRAM (§11.3.1); its alias must be ours.
    pub fn send_datagram(&mut self, datagram: &ObjectDatagram) -> Result<(), SessionError> {
        self.check_open()?;
        self.requests.check_local_alias(datagram.track_alias)?;
        objects::send_datagram(datagram, &mut self.out)
    }

    /// Open the FETCH_HEADER stream (§11.4.4) answering the peer's FETCH
    /// `id` (after [`Session::fetch_ok`]).
    pub fn open_fetch_stream(&mut self, id: RequestId) -> Result<StreamRef, SessionError> {
        let r = self
            .requests
            .guard(self.closed, id, &Rule::OPEN_FETCH_STREAM)?;
        let fetch = FetchOut::open(id, r.fetch_order, &mut self.streams, &mut self.out)?;
        let stream = fetch.stream();
        r.fetch_stream = Some(fetch);
        Ok(stream)
    }

    /// Send one object on the fetch stream of the peer's FETCH `id`; the
    /// payload is written as its own `Bytes`.
    pub fn send_fetch_object(
        &mut self,
        id: RequestId,
        object: FetchObject,
    ) -> Result<(), SessionError> {
        let r = self.requests.guard(self.closed, id, &Rule::ANY)?;
        Ok(r.fetch_out()?.send_object(object, &mut self.out)?)
    }

    /// Send an End of Range marker (§11.4.4) on the fetch stream of the
    /// peer's FETCH `id`: the locations after the last object sent, through
    /// `end.location`, do not exist or are unknown.
    pub fn send_fetch_end_of_range(
        &mut self,
        id: RequestId,
        end: EndOfRange,
    ) -> Result<(), SessionError> {
        let r = self.requests.guard(self.closed, id, &Rule::ANY)?;
        Ok(r.fetch_out()?.end_of_range(&end, &mut self.out)?)
    }

    /// FIN the fetch stream of the peer's FETCH `id`.
    pub fn finish_fetch(&mut self, id: RequestId) -> Result<(), SessionError> {
        let r = self.requests.guard(self.closed, id, &Rule::ANY)?;
        let stream = r.fetch_out()?.stream();
        r.fetch_stream = None;
        self.streams.remove(&stream);
        self.out.command(Command::Finish(stream));
        self.requests
            .maybe_retire(id, &mut self.streams, &mut self.out);
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

    /// Closes the session if a part ran into a violation.
    fn close_on(&mut self, r: Result<(), Fatal>) {
        if let Err(f) = r {
            self.close(f.code, &f.reason);
        }
    }

    /// The incoming side, with the parts it acts on.
    fn incoming(&mut self) -> (&mut Incoming, Cx<'_>) {
        (
            &mut self.incoming,
            Cx {
                control: &mut self.control,
                requests: &mut self.requests,
                streams: &mut self.streams,
                out: &mut self.out,
            },
        )
    }

    fn start_request(
        &mut self,
        build: impl FnOnce(u64) -> ControlMessage,
    ) -> Result<RequestId, SessionError> {
        self.check_open()?;
        self.outgoing.start(
            build,
            self.control.going_away(),
            &mut self.requests,
            &mut self.streams,
            &mut self.out,
        )
    }

    fn respond(
        &mut self,
        id: RequestId,
        msg: ControlMessage,
        fin: bool,
    ) -> Result<(), SessionError> {
        self.requests
            .send(id, msg, fin, &mut self.streams, &mut self.out)
    }

    fn start_object(
        &mut self,
        obj: OutgoingObject,
        length: u64,
        flags: StreamFlags,
    ) -> Result<StreamRef, SessionError> {
        self.check_open()?;
        self.requests.check_local_alias(obj.track_alias)?;
        self.objects
            .start_object(obj, length, flags, &mut self.streams, &mut self.out)
    }
}

/// A stream error code from the peer, also in its WebTransport-mapped form
/// (see `StreamCodeDialect`).
fn peer_stream_code(code: u64) -> StreamResetCode {
    StreamResetCode::from_code(crate::codes::unmap_stream_code(code).0)
}
