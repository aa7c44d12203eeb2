//! The relay on the worker loop: a [`dataplane::worker::Application`] that
//! runs one `moqt::Session` per QUIC connection (through [`SessionDriver`])
//! and connects every session to one [`Engine`].
//!
//! Session events become engine calls; engine actions become session calls
//! on the connections they name (reached through [`Connections`], so
//! forwarded objects leave in the same worker iteration). Payloads travel as
//! the same `Bytes` from the publisher's receive buffer to every
//! subscriber's `write_chunks`: no copy until each connection seals.

use std::collections::HashMap;

use dataplane::worker::{Application, Connections};
use moqt::{
    session::{Event as SessionEvent, OutgoingObject, RequestId},
    ControlMessage, DatagramContent, FetchObject, FetchOk, FetchType, Location, ObjectDatagram,
    Parameters, Properties, PublishDone, PublishDoneCode, ReasonPhrase, RequestErrorCode,
    RequestOk, StreamResetCode, SubscriptionFilter, TrackNamespace,
};
use quinn_proto::{Connection, ConnectionHandle, Event};

use crate::{
    cache::CachedObject,
    engine::{self, Action, Engine, EngineConfig, SessionId, TrackId},
    quic::{server_driver, SessionDriver},
};

/// ALPN of MoQT draft-18 over raw QUIC.
pub const MOQT_ALPN: &[u8] = b"moqt-18";

/// Per-connection relay state.
struct Conn {
    driver: SessionDriver,
    /// Downstream subscriptions: request -> (session track alias, streams opened).
    downstream: HashMap<RequestId, (u64, u64)>,
    /// Upstream subscriptions this relay made: request -> (track, alias once known).
    upstream: HashMap<RequestId, (TrackId, Option<u64>)>,
    /// Namespace subscriptions: request -> prefix.
    namespace_prefixes: HashMap<RequestId, TrackNamespace>,
}

impl Conn {
    fn new() -> Self {
        Self {
            driver: server_driver(),
            downstream: HashMap::new(),
            upstream: HashMap::new(),
            namespace_prefixes: HashMap::new(),
        }
    }
}

/// Counters of the glue (the engine has its own).
#[derive(Debug, Default, Clone, Copy)]
pub struct AppStats {
    pub sessions_opened: u64,
    pub sessions_closed_by_violation: u64,
}

pub struct RelayApp {
    engine: Engine,
    conns: HashMap<ConnectionHandle, Conn>,
    pub stats: AppStats,
}

fn sid(ch: ConnectionHandle) -> SessionId {
    SessionId(ch.0 as u64)
}

fn ch_of(s: SessionId) -> ConnectionHandle {
    ConnectionHandle(s.0 as usize)
}

fn erq(id: RequestId) -> engine::RequestId {
    engine::RequestId(id.0)
}

fn srq(id: engine::RequestId) -> RequestId {
    RequestId(id.0)
}

impl RelayApp {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            engine: Engine::new(config),
            conns: HashMap::new(),
            stats: AppStats::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies the session's commands to the connection, then turns its
    /// events into engine calls.
    fn pump(&mut self, ch: ConnectionHandle, conn: &mut Connection) {
        let Some(state) = self.conns.get_mut(&ch) else {
            return;
        };
        state.driver.apply_commands(conn);
        while let Some(ev) = state.driver.session.poll_event() {
            on_session_event(&mut self.engine, state, ch, ev);
        }
        // Answers queued by the events (REQUEST_OK, REQUEST_ERROR) go out now.
        state.driver.apply_commands(conn);
        if state.driver.closed_with.take().is_some() {
            self.stats.sessions_closed_by_violation += 1;
        }
    }

    /// Carries out the engine's actions on the sessions they name.
    fn run_actions(&mut self, conns: &mut Connections<'_>) {
        while let Some(action) = self.engine.poll_action() {
            let target = match &action {
                Action::SubscribeOk { session, .. }
                | Action::RequestError { session, .. }
                | Action::Namespace { session, .. }
                | Action::NamespaceDone { session, .. }
                | Action::PublishDone { session, .. }
                | Action::EndSubgroup { session, .. }
                | Action::Object { session, .. } => *session,
                Action::SubscribeUpstream { publisher, .. }
                | Action::UnsubscribeUpstream { publisher, .. } => *publisher,
            };
            let ch = ch_of(target);
            let Some(state) = self.conns.get_mut(&ch) else {
                continue;
            };
            run_action(state, action);
            if let Some(conn) = conns.get_mut(ch) {
                self.pump(ch, conn);
            }
        }
    }
}

fn on_session_event(engine: &mut Engine, state: &mut Conn, ch: ConnectionHandle, ev: SessionEvent) {
    let me = sid(ch);
    match ev {
        SessionEvent::Request { id, message } => match message {
            ControlMessage::Subscribe(s) => {
                engine.subscribe(me, erq(id), s.track, s.parameters.subscription_filter);
            }
            ControlMessage::PublishNamespace(p) => {
                if state
                    .driver
                    .session
                    .request_ok(id, RequestOk::default())
                    .is_ok()
                {
                    engine.publish_namespace(me, erq(id), p.namespace);
                }
            }
            ControlMessage::SubscribeNamespace(p) => {
                if state
                    .driver
                    .session
                    .request_ok(id, RequestOk::default())
                    .is_ok()
                {
                    state.namespace_prefixes.insert(id, p.prefix.clone());
                    engine.subscribe_namespace(me, erq(id), p.prefix);
                }
            }
            ControlMessage::Fetch(f) => serve_fetch(engine, state, me, id, f.fetch_type),
            _ => {
                let _ = state.driver.session.request_error(
                    id,
                    RequestErrorCode::NotSupported,
                    "not supported by this relay yet",
                );
            }
        },
        SessionEvent::Message { id, message } => {
            let Some((track, _)) = state.upstream.get(&id).copied() else {
                return;
            };
            match message {
                ControlMessage::SubscribeOk(ok) => {
                    state.upstream.insert(id, (track, Some(ok.track_alias)));
                    engine.upstream_subscribed(
                        track,
                        erq(id),
                        ok.track_alias,
                        ok.parameters.largest_object,
                    );
                }
                ControlMessage::RequestError(e) => {
                    state.upstream.remove(&id);
                    engine.upstream_failed(track, e.error_code);
                }
                ControlMessage::PublishDone(d) => {
                    if let Some((_, Some(alias))) = state.upstream.remove(&id) {
                        engine.upstream_done(me, alias, d.status_code);
                    }
                }
                _ => {}
            }
        }
        SessionEvent::RequestCancelled { id, .. } => {
            if state.downstream.remove(&id).is_some() {
                engine.unsubscribe(me, erq(id));
            } else if let Some((track, alias)) = state.upstream.remove(&id) {
                // The publisher cancelled our subscription: its track ends.
                match alias {
                    Some(alias) => {
                        engine.upstream_done(me, alias, PublishDoneCode::SubscriptionEnded)
                    }
                    None => engine.upstream_failed(track, RequestErrorCode::InternalError),
                }
            } else {
                // A downstream subscription not yet answered.
                engine.unsubscribe(me, erq(id));
            }
            state.namespace_prefixes.remove(&id);
        }
        SessionEvent::Object(o) => {
            let object = CachedObject {
                location: o.location,
                subgroup: o.subgroup.unwrap_or(0),
                datagram: o.subgroup.is_none(),
                publisher_priority: o
                    .publisher_priority
                    .unwrap_or(moqt::DEFAULT_PUBLISHER_PRIORITY),
                status: o.status,
                properties: o.properties,
                payload: o.payload,
            };
            engine.object(me, o.track_alias, object);
        }
        SessionEvent::SubgroupEnded {
            track_alias,
            group,
            subgroup: Some(subgroup),
            abort: None,
            ..
        } => {
            engine.subgroup_ended(me, track_alias, group, subgroup);
        }
        SessionEvent::Closed { .. } => engine.session_closed(me),
        _ => {}
    }
}

/// Answers a Joining FETCH from the track's cache (§10.12.2): objects from
/// the requested start through the subscription's Joining Location, on one
/// fetch stream, then FIN. Standalone FETCH is not served yet.
fn serve_fetch(engine: &Engine, state: &mut Conn, me: SessionId, id: RequestId, fetch: FetchType) {
    let session = &mut state.driver.session;
    let (joining, relative) = match fetch {
        FetchType::RelativeJoining(j) => (j, true),
        FetchType::AbsoluteJoining(j) => (j, false),
        FetchType::Standalone(_) => {
            let _ = session.request_error(
                id,
                RequestErrorCode::NotSupported,
                "standalone FETCH is not served yet",
            );
            return;
        }
    };
    let joined = engine::RequestId(joining.joining_request_id);
    let end = match engine.joining_location(me, joined) {
        None => {
            let _ = session.request_error(
                id,
                RequestErrorCode::InvalidJoiningRequestId,
                "no such subscription",
            );
            return;
        }
        Some(None) => {
            let _ =
                session.request_error(id, RequestErrorCode::InvalidRange, "nothing published yet");
            return;
        }
        Some(Some(end)) => end,
    };
    let start_group = if relative {
        end.group.saturating_sub(joining.joining_start)
    } else {
        joining.joining_start
    };
    if start_group > end.group {
        let _ = session.request_error(
            id,
            RequestErrorCode::InvalidRange,
            "start after the joining location",
        );
        return;
    }
    let objects = engine
        .cached_range(me, joined, Location::new(start_group, 0), end)
        .unwrap_or_default();
    let ok = FetchOk {
        end_of_track: false,
        end_location: Location::new(end.group, end.object + 1),
        parameters: Parameters::default(),
        track_properties: Properties::new(),
    };
    if session.fetch_ok(id, ok).is_err() || session.open_fetch_stream(id).is_err() {
        return;
    }
    for o in objects {
        let object = FetchObject {
            location: o.location,
            subgroup_id: Some(o.subgroup),
            publisher_priority: o.publisher_priority,
            properties: o.properties,
            payload: o.payload,
        };
        if session.send_fetch_object(id, object).is_err() {
            return;
        }
    }
    let _ = session.finish_fetch(id);
}

fn run_action(state: &mut Conn, action: Action) {
    let session = &mut state.driver.session;
    match action {
        Action::SubscribeOk {
            request, largest, ..
        } => {
            let params = Parameters {
                largest_object: largest,
                ..Parameters::default()
            };
            if let Ok(alias) = session.subscribe_ok(srq(request), params, Properties::new()) {
                state.downstream.insert(srq(request), (alias, 0));
            }
        }
        Action::RequestError {
            request,
            code,
            reason,
            ..
        } => {
            let _ = session.request_error(srq(request), code, reason);
        }
        Action::SubscribeUpstream { track, name, .. } => {
            let params = Parameters {
                forward: Some(true),
                subscription_filter: Some(SubscriptionFilter::LargestObject),
                ..Parameters::default()
            };
            if let Ok(id) = session.subscribe(name, params) {
                state.upstream.insert(id, (track, None));
            }
        }
        Action::UnsubscribeUpstream { request, .. } => {
            state.upstream.remove(&srq(request));
            let _ = session.cancel(srq(request), StreamResetCode::Cancelled);
        }
        Action::Namespace {
            request, namespace, ..
        } => {
            if let Some(suffix) = namespace_suffix(&state.namespace_prefixes, request, &namespace) {
                let _ = session.namespace(srq(request), suffix);
            }
        }
        Action::NamespaceDone {
            request, namespace, ..
        } => {
            if let Some(suffix) = namespace_suffix(&state.namespace_prefixes, request, &namespace) {
                let _ = session.namespace_done(srq(request), suffix);
            }
        }
        Action::PublishDone { request, code, .. } => {
            let streams = state
                .downstream
                .remove(&srq(request))
                .map(|(_, n)| n)
                .unwrap_or(0);
            let done = PublishDone {
                status_code: code,
                stream_count: streams,
                reason: ReasonPhrase::default(),
            };
            let _ = session.publish_done(srq(request), done);
        }
        Action::EndSubgroup {
            request,
            group,
            subgroup,
            ..
        } => {
            if let Some((alias, _)) = state.downstream.get(&srq(request)) {
                session.end_subgroup(*alias, group, subgroup);
            }
        }
        Action::Object {
            request, object, ..
        } => {
            let Some((alias, streams)) = state.downstream.get_mut(&srq(request)) else {
                return;
            };
            if object.datagram {
                // Datagrams stay datagrams (§11.3): unreliable, never a stream.
                let content = if object.status == moqt::ObjectStatus::Normal {
                    DatagramContent::Payload(object.payload)
                } else {
                    DatagramContent::Status(object.status)
                };
                let datagram = ObjectDatagram {
                    track_alias: *alias,
                    group_id: object.location.group,
                    object_id: object.location.object,
                    publisher_priority: Some(object.publisher_priority),
                    end_of_group: false,
                    properties: object.properties,
                    content,
                };
                let _ = session.send_datagram(&datagram);
                return;
            }
            let out = OutgoingObject {
                track_alias: *alias,
                location: object.location,
                subgroup: object.subgroup,
                publisher_priority: Some(object.publisher_priority),
                status: object.status,
                properties: object.properties,
                payload: object.payload,
            };
            // A stream the glue does not know yet was opened for this object
            // (its OpenUni is still queued): PUBLISH_DONE reports the count.
            if let Ok(stream) = session.send_object(out) {
                if !state.driver.knows_stream(stream) {
                    *streams += 1;
                }
            }
        }
    }
}

/// The part of `namespace` after the prefix of namespace subscription `request`.
fn namespace_suffix(
    prefixes: &HashMap<RequestId, TrackNamespace>,
    request: engine::RequestId,
    namespace: &TrackNamespace,
) -> Option<TrackNamespace> {
    namespace.strip_prefix(prefixes.get(&srq(request))?)
}

impl Application for RelayApp {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        let Some(conn) = conns.get_mut(ch) else {
            return;
        };
        if matches!(event, Event::Connected) {
            self.conns.insert(ch, Conn::new());
            self.engine.session_opened(sid(ch));
            self.stats.sessions_opened += 1;
        }
        let Some(state) = self.conns.get_mut(&ch) else {
            return;
        };
        state.driver.handle_event(conn, &event);
        self.pump(ch, conn);
        self.run_actions(conns);
    }

    fn connection_closed(&mut self, ch: ConnectionHandle) {
        if self.conns.remove(&ch).is_some() {
            // Whatever the engine answers (PUBLISH_DONE to this publisher's
            // subscribers...) is carried out with the next event of those
            // connections; actions toward this session are dropped.
            self.engine.session_closed(sid(ch));
        }
    }
}
