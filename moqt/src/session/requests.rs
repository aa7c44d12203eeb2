//! The request table (§10.1): requests in both directions, the peer's
//! Request IDs, Track Aliases, and what each request stream may carry.
//!
//! Every call that acts on an existing request goes through one guard,
//! [`RequestTable::guard`], with the [`Rule`] it needs of the request's
//! state; every message we send on a request stream goes through
//! [`RequestTable::send`].

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::objects::FetchOut;
use super::outbox::{Fatal, Outbox};
use super::stream::{Flow, Kind, Stream};
use super::table::StreamTable;
use super::{
    Event, PeerAbort, RequestId, Role, SessionError, StreamRef, MAX_CONCURRENT_REQUESTS,
    MAX_REQUEST_ID_HOLES,
};
use crate::codes::{RequestErrorCode, SessionErrorCode, StreamResetCode};
use crate::message::{ControlMessage, MessageType, RequestError};
use crate::types::{GroupOrder, ReasonPhrase};

#[derive(Debug)]
pub(super) struct Request {
    pub(super) stream: StreamRef,
    pub(super) kind: MessageType,
    /// We sent the request.
    pub(super) local: bool,
    /// The first response has been received (local) or sent (remote).
    pub(super) answered: bool,
    goaway_received: bool,
    pub(super) recv_done: bool,
    pub(super) send_done: bool,
    /// Alias the peer assigned (SUBSCRIBE_OK to us, or its PUBLISH).
    peer_alias: Option<u64>,
    /// Alias we assigned (our SUBSCRIBE_OK or PUBLISH).
    local_alias: Option<u64>,
    /// REQUEST_UPDATEs sent on this stream still awaiting an answer.
    pub(super) updates_sent: u32,
    /// REQUEST_UPDATEs received on this stream still to be answered.
    pub(super) updates_received: u32,
    /// Group order of a FETCH (for decoding / encoding its data stream).
    pub(super) fetch_order: GroupOrder,
    /// Our outgoing fetch stream, if opened.
    pub(super) fetch_stream: Option<FetchOut>,
    /// The incoming fetch stream, if any.
    fetch_recv: Option<StreamRef>,
    /// The peer sent STOP_SENDING while its own side was still open: the
    /// request ends when that side does (its last message, e.g. a
    /// publisher's PUBLISH_DONE, may still be on the way).
    stopped_by_peer: Option<StreamResetCode>,
    /// Answers to REQUEST_UPDATEs that came before our first response
    /// (SUBSCRIBE_OK, FETCH_OK): they follow it on the wire.
    pub(super) deferred: Vec<Bytes>,
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

    /// A peer request we have not answered yet.
    pub(super) fn awaits_answer(&self) -> bool {
        !self.local && !self.answered
    }

    /// Our fetch stream for the peer's FETCH.
    pub(super) fn fetch_out(&mut self) -> Result<&mut FetchOut, SessionError> {
        self.fetch_stream
            .as_mut()
            .ok_or(SessionError::InvalidState("no fetch stream open"))
    }
}

/// What a call needs of a request's state, and why it is refused
/// otherwise ([`SessionError::InvalidState`]).
pub(super) struct Rule {
    allows: fn(&Request) -> bool,
    refusal: &'static str,
}

impl Rule {
    /// Any request that exists.
    pub(super) const ANY: Rule = Rule {
        allows: |_| true,
        refusal: "",
    };
    pub(super) const SUBSCRIBE_OK: Rule = Rule {
        allows: |r| r.awaits_answer() && r.kind == MessageType::Subscribe,
        refusal: "SUBSCRIBE_OK answers an unanswered peer SUBSCRIBE",
    };
    pub(super) const FETCH_OK: Rule = Rule {
        allows: |r| r.awaits_answer() && r.kind == MessageType::Fetch,
        refusal: "FETCH_OK answers an unanswered peer FETCH",
    };
    /// The first answer to a request other than SUBSCRIBE and FETCH, or
    /// the answer to a REQUEST_UPDATE.
    pub(super) const REQUEST_OK: Rule = Rule {
        allows: |r| {
            (r.awaits_answer() && !matches!(r.kind, MessageType::Subscribe | MessageType::Fetch))
                || r.updates_received > 0
        },
        refusal: "nothing to answer with REQUEST_OK",
    };
    pub(super) const REQUEST_ERROR: Rule = Rule {
        allows: |r| r.awaits_answer() || r.updates_received > 0,
        refusal: "nothing to answer with REQUEST_ERROR",
    };
    pub(super) const NAMESPACE: Rule = Rule {
        allows: |r| !r.local && r.kind == MessageType::SubscribeNamespace && r.answered,
        refusal: "NAMESPACE / NAMESPACE_DONE go on an accepted peer SUBSCRIBE_NAMESPACE",
    };
    pub(super) const PUBLISH_DONE: Rule = Rule {
        allows: |r| {
            (!r.local && r.kind == MessageType::Subscribe && r.answered)
                || (r.local && r.kind == MessageType::Publish)
        },
        refusal: "PUBLISH_DONE ends a subscription this side publishes",
    };
    pub(super) const OPEN_FETCH_STREAM: Rule = Rule {
        allows: |r| {
            !r.local && r.kind == MessageType::Fetch && r.answered && r.fetch_stream.is_none()
        },
        refusal: "fetch stream answers an accepted peer FETCH, once",
    };
}

/// Peer Request ID bookkeeping (§10.1): the next ID above everything
/// seen, plus the unused IDs below it.
#[derive(Debug)]
struct PeerIds {
    /// The peer's IDs are odd from a server, even from a client.
    parity: u64,
    /// u128 so that an ID of 2^64-1 still leaves a "next" above it.
    next: u128,
    holes: BTreeSet<u64>,
}

impl PeerIds {
    fn new(parity: u64) -> Self {
        PeerIds {
            parity,
            next: u128::from(parity),
            holes: BTreeSet::new(),
        }
    }

    /// Record `id`: of the wrong parity, or already used, ends the session.
    fn take(&mut self, id: u64) -> Result<(), Fatal> {
        if id % 2 != self.parity {
            return Err(Fatal::new(
                SessionErrorCode::InvalidRequestId,
                "request ID of the wrong parity",
            ));
        }
        let wide = u128::from(id);
        let fresh = if wide >= self.next {
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
        };
        if fresh {
            Ok(())
        } else {
            Err(Fatal::new(
                SessionErrorCode::InvalidRequestId,
                "duplicate request ID",
            ))
        }
    }
}

#[derive(Debug)]
pub(super) struct RequestTable {
    requests: HashMap<RequestId, Request>,
    local: usize,
    remote: usize,
    peer_ids: PeerIds,
    next_alias: u64,
    /// Aliases we assigned (we publish on them).
    local_aliases: HashMap<u64, RequestId>,
    /// The alias [`check_local_alias`](Self::check_local_alias) found last,
    /// until any alias of ours goes: a fan-out sends object after object on
    /// one alias, and each would otherwise probe the map.
    alias_checked: Option<u64>,
    /// Aliases the peer assigned (it publishes on them).
    peer_aliases: HashMap<u64, RequestId>,
}

impl RequestTable {
    pub(super) fn new(role: Role) -> Self {
        RequestTable {
            requests: HashMap::new(),
            local: 0,
            remote: 0,
            peer_ids: PeerIds::new(match role {
                Role::Client => 1,
                Role::Server => 0,
            }),
            next_alias: 0,
            local_aliases: HashMap::new(),
            alias_checked: None,
            peer_aliases: HashMap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }

    pub(super) fn alias_count(&self) -> usize {
        self.local_aliases.len() + self.peer_aliases.len()
    }

    pub(super) fn get_mut(&mut self, id: &RequestId) -> Option<&mut Request> {
        self.requests.get_mut(id)
    }

    /// Forgets every request and alias (the session closed).
    pub(super) fn clear(&mut self) {
        self.requests.clear();
        self.local_aliases.clear();
        self.alias_checked = None;
        self.peer_aliases.clear();
    }

    /// The smallest peer Request ID not processed (a control-stream
    /// GOAWAY, §10.4): every earlier one arrived and was handled, or is a
    /// hole that counts as used.
    pub(super) fn goaway_id(&self) -> u64 {
        u64::try_from(self.peer_ids.next).unwrap_or(u64::MAX)
    }

    /// The request that registered a peer's alias (objects we receive).
    pub(super) fn peer_request(&self, track_alias: u64) -> Option<RequestId> {
        self.peer_aliases.get(&track_alias).copied()
    }

    /// Objects go only on aliases we assigned.
    pub(super) fn check_local_alias(&mut self, track_alias: u64) -> Result<(), SessionError> {
        if self.alias_checked == Some(track_alias) {
            return Ok(());
        }
        if self.local_aliases.contains_key(&track_alias) {
            self.alias_checked = Some(track_alias);
            Ok(())
        } else {
            Err(SessionError::UnknownTrackAlias(track_alias))
        }
    }

    /// The alias [`RequestTable::bind_local_alias`] will assign next.
    pub(super) fn next_alias(&self) -> u64 {
        self.next_alias
    }

    /// Assigns the next alias to our side of request `id`.
    pub(super) fn bind_local_alias(&mut self, id: RequestId) -> u64 {
        let alias = self.next_alias;
        self.next_alias += 1;
        self.local_aliases.insert(alias, id);
        if let Some(r) = self.requests.get_mut(&id) {
            r.local_alias = Some(alias);
        }
        alias
    }

    /// [`MAX_CONCURRENT_REQUESTS`] of ours are open.
    pub(super) fn local_full(&self) -> bool {
        self.local >= MAX_CONCURRENT_REQUESTS
    }

    pub(super) fn insert_local(&mut self, id: RequestId, stream: StreamRef, kind: MessageType) {
        self.requests.insert(id, Request::new(stream, kind, true));
        self.local += 1;
    }

    /// The guard of every call on an existing request: the session is
    /// open, the request exists, and its state allows what `rule` stands
    /// for.
    pub(super) fn guard(
        &mut self,
        closed: Option<SessionErrorCode>,
        id: RequestId,
        rule: &Rule,
    ) -> Result<&mut Request, SessionError> {
        if let Some(code) = closed {
            return Err(SessionError::Closed(code));
        }
        let r = self
            .requests
            .get_mut(&id)
            .ok_or(SessionError::UnknownRequest(id))?;
        if (rule.allows)(r) {
            Ok(r)
        } else {
            Err(SessionError::InvalidState(rule.refusal))
        }
    }

    /// Writes `msg` on request `id`'s stream (then FIN if `fin`), keeping
    /// count of answers; answers to updates held back for our first
    /// response follow it.
    pub(super) fn send(
        &mut self,
        id: RequestId,
        msg: ControlMessage,
        fin: bool,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let data = out.encode(&msg)?;
        let r = self
            .requests
            .get_mut(&id)
            .ok_or(SessionError::UnknownRequest(id))?;
        if r.send_done {
            return Err(SessionError::InvalidState("request stream finished"));
        }
        let ty = msg.message_type();
        let is_response = matches!(
            ty,
            MessageType::SubscribeOk
                | MessageType::FetchOk
                | MessageType::RequestOk
                | MessageType::PublishOk
                | MessageType::RequestError
        );
        let mut deferred = Vec::new();
        if is_response {
            if r.awaits_answer() {
                r.answered = true;
                // Deferred update answers follow an acceptance; a refusal
                // ends the request and them with it.
                deferred = std::mem::take(&mut r.deferred);
                if ty == MessageType::RequestError {
                    deferred.clear();
                }
            } else if r.updates_received > 0 {
                r.updates_received -= 1;
            }
        }
        r.send_done |= fin;
        let stream = r.stream;
        out.write(stream, data, fin && deferred.is_empty());
        let last = deferred.len();
        for (i, d) in deferred.into_iter().enumerate() {
            out.write(stream, d, fin && i + 1 == last);
        }
        self.maybe_retire(id, streams, out);
        Ok(())
    }

    /// Forget a request once both directions (and its fetch streams) are
    /// done.
    pub(super) fn maybe_retire(
        &mut self,
        id: RequestId,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) {
        if let Some(r) = self.requests.get(&id) {
            if r.send_done && r.recv_done && r.fetch_stream.is_none() && r.fetch_recv.is_none() {
                let stream = r.stream;
                streams.remove(&stream);
                self.retire(id, streams, out);
            }
        }
    }

    /// Forget a request now, with its aliases; its fetch streams still
    /// open are reset / stopped.
    pub(super) fn retire(&mut self, id: RequestId, streams: &mut StreamTable, out: &mut Outbox) {
        let Some(r) = self.requests.remove(&id) else {
            return;
        };
        if r.local {
            self.local -= 1;
        } else {
            self.remote -= 1;
        }
        if let Some(a) = r.peer_alias {
            self.peer_aliases.remove(&a);
        }
        if let Some(a) = r.local_alias {
            self.local_aliases.remove(&a);
            self.alias_checked = None;
        }
        if let Some(f) = r.fetch_stream {
            streams.remove(&f.stream());
            out.reset(f.stream(), StreamResetCode::Cancelled);
        }
        if let Some(s) = r.fetch_recv {
            streams.remove(&s);
            out.stop_sending(s, StreamResetCode::Cancelled);
        }
    }

    /// The peer cancelled request `id` (§3.3.2): the directions still
    /// open are closed too and the request is gone.
    pub(super) fn peer_cancelled(
        &mut self,
        id: RequestId,
        abort: PeerAbort,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) {
        let Some(r) = self.requests.get(&id) else {
            return;
        };
        let (stream, send_done, recv_done) = (r.stream, r.send_done, r.recv_done);
        let code = match abort {
            PeerAbort::Reset(c) | PeerAbort::StopSending(c) => c,
        };
        if !send_done {
            out.reset(stream, code);
        }
        if !recv_done && matches!(abort, PeerAbort::StopSending(_)) {
            out.stop_sending(stream, code);
        }
        self.retire(id, streams, out);
        out.event(Event::RequestCancelled { id, abort });
    }

    /// STOP_SENDING on request `id`'s stream. It ends our direction only
    /// (§3.3.2). With the peer's side still open its last word may follow
    /// (a publisher drops its read side right after PUBLISH_DONE, and QUIC
    /// may deliver the STOP_SENDING first): our side is reset and the
    /// request lives until theirs ends.
    pub(super) fn on_stop_sending(
        &mut self,
        id: RequestId,
        stream: StreamRef,
        code: StreamResetCode,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) {
        match self.requests.get_mut(&id) {
            Some(r) if !r.recv_done => {
                if !r.send_done {
                    r.send_done = true;
                    out.reset(stream, code);
                }
                r.stopped_by_peer = Some(code);
            }
            _ => {
                streams.remove(&stream);
                self.peer_cancelled(id, PeerAbort::StopSending(code), streams, out);
            }
        }
    }

    /// The peer finished (FIN) its side of request `id`'s stream.
    pub(super) fn peer_finished(
        &mut self,
        id: RequestId,
        stream: StreamRef,
        streams: &mut StreamTable,
        out: &mut Outbox,
    ) -> Flow {
        if let Some(r) = self.requests.get_mut(&id) {
            if !r.recv_done {
                r.recv_done = true;
                out.event(Event::PeerFinished { id });
            }
            if let Some(code) = r.stopped_by_peer {
                // The peer stopped our side and has now finished its own:
                // the request is over.
                streams.remove(&stream);
                self.retire(id, streams, out);
                out.event(Event::RequestCancelled {
                    id,
                    abort: PeerAbort::StopSending(code),
                });
                return Flow::Drop;
            }
        }
        self.maybe_retire(id, streams, out);
        if self.requests.contains_key(&id) {
            Flow::Keep
        } else {
            Flow::Drop
        }
    }

    /// A peer stopped one of our data streams: if it was a fetch stream,
    /// the request no longer waits for it.
    pub(super) fn forget_fetch_stream(&mut self, stream: StreamRef) {
        for r in self.requests.values_mut() {
            if r.fetch_stream.as_ref().map(FetchOut::stream) == Some(stream) {
                r.fetch_stream = None;
            }
        }
    }

    /// A FETCH_HEADER stream names request `id`: the group order to decode
    /// it with, if it answers a FETCH of ours that has no stream yet.
    pub(super) fn bind_fetch_recv(
        &mut self,
        id: RequestId,
        stream: StreamRef,
    ) -> Option<GroupOrder> {
        match self.requests.get_mut(&id) {
            Some(r) if r.local && r.kind == MessageType::Fetch && r.fetch_recv.is_none() => {
                r.fetch_recv = Some(stream);
                Some(r.fetch_order)
            }
            _ => None,
        }
    }

    /// The incoming fetch stream of request `id` ended.
    pub(super) fn fetch_recv_ended(&mut self, id: RequestId) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.fetch_recv = None;
        }
    }

    /// True for the peer's SUBSCRIBE (the one stream where the UNSUBSCRIBE
    /// of earlier drafts is understood).
    pub(super) fn is_peer_subscribe(&self, id: RequestId) -> bool {
        self.requests
            .get(&id)
            .is_some_and(|r| !r.local && r.kind == MessageType::Subscribe)
    }

    /// The first message on a peer's bidirectional stream: a new request.
    /// Beyond [`MAX_CONCURRENT_REQUESTS`] it is refused (REQUEST_ERROR,
    /// then FIN, §3.3.2) without being surfaced.
    pub(super) fn admit(
        &mut self,
        stream: StreamRef,
        st: &mut Stream,
        msg: ControlMessage,
        out: &mut Outbox,
    ) -> Result<(), Fatal> {
        const NOT_A_REQUEST: &str = "request stream must start with a request";
        let kind = msg.message_type();
        if !kind.starts_request_stream() {
            return Err(Fatal::violation(NOT_A_REQUEST));
        }
        let raw_id = match &msg {
            ControlMessage::Subscribe(m) => m.request_id,
            ControlMessage::Publish(m) => m.request_id,
            ControlMessage::Fetch(m) => m.request_id,
            ControlMessage::TrackStatus(m) => m.request_id,
            ControlMessage::PublishNamespace(m) => m.request_id,
            ControlMessage::SubscribeNamespace(m) => m.request_id,
            ControlMessage::SubscribeTracks(m) => m.request_id,
            _ => return Err(Fatal::violation(NOT_A_REQUEST)),
        };
        self.peer_ids.take(raw_id)?;
        let id = RequestId(raw_id);
        if self.remote >= MAX_CONCURRENT_REQUESTS {
            let err = RequestError {
                error_code: RequestErrorCode::ExcessiveLoad,
                retry_interval: 0,
                reason: ReasonPhrase::default(),
                redirect: None,
            };
            if let Ok(data) = out.encode(&err.into()) {
                out.write(stream, data, true);
            }
            if !st.fin {
                out.stop_sending(stream, StreamResetCode::ExcessiveLoad);
            }
            st.kind = Kind::Discard;
            return Ok(());
        }
        let mut req = Request::new(stream, kind, false);
        if let ControlMessage::Publish(p) = &msg {
            self.register_peer_alias(p.track_alias, id)?;
            req.peer_alias = Some(p.track_alias);
        }
        if let ControlMessage::Fetch(f) = &msg {
            req.fetch_order = f.parameters.group_order.unwrap_or_default();
        }
        self.requests.insert(id, req);
        self.remote += 1;
        st.kind = Kind::Request(id);
        out.event(Event::Request { id, message: msg });
        Ok(())
    }

    /// A later message on request `id`'s stream: it must fit the request
    /// and the direction; then it is surfaced.
    pub(super) fn on_message(
        &mut self,
        id: RequestId,
        msg: ControlMessage,
        out: &mut Outbox,
    ) -> Result<(), Fatal> {
        let Some(r) = self.requests.get_mut(&id) else {
            return Ok(());
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
            return Err(Fatal::violation(
                "message not allowed on this request stream",
            ));
        }
        match &msg {
            ControlMessage::RequestUpdate(u) => {
                self.peer_ids.take(u.request_id)?;
                if let Some(r) = self.requests.get_mut(&id) {
                    r.updates_received += 1;
                }
            }
            ControlMessage::SubscribeOk(ok) => {
                self.register_peer_alias(ok.track_alias, id)?;
                if let Some(r) = self.requests.get_mut(&id) {
                    r.peer_alias = Some(ok.track_alias);
                }
            }
            _ => {}
        }
        out.event(Event::Message { id, message: msg });
        Ok(())
    }

    fn register_peer_alias(&mut self, alias: u64, id: RequestId) -> Result<(), Fatal> {
        if self.peer_aliases.contains_key(&alias) {
            return Err(Fatal::new(
                SessionErrorCode::DuplicateTrackAlias,
                "duplicate track alias",
            ));
        }
        self.peer_aliases.insert(alias, id);
        Ok(())
    }
}
