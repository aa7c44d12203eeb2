//! Engine actions out to one connection's session: answers, offered
//! tracks, and objects sent on the subscription's streams at its priority.

use std::collections::HashMap;

use moqt::{
    session::{OutgoingObject, RequestId, StreamFlags},
    ControlMessage, DatagramContent, FullTrackName, Location, ObjectDatagram, Parameters,
    Properties, PublishDone, PublishDoneCode, ReasonPhrase, RequestOk, StreamResetCode,
    SubscriptionFilter, TrackNamespace,
};

use super::conn::{publisher_delivery_timeout, Conn, Subscription};
use crate::{
    cache::CachedObject,
    engine::{Action, Engine, SessionId, TrackId},
    shed::{self, ShedConfig},
};

/// Groups behind the newest for which dropped subgroups are remembered
/// (their late objects are skipped); older ones cannot still be arriving.
const SHED_MEMORY_GROUPS: u64 = 64;

/// Data streams per subscription whose priority follows the newest group.
/// Older streams keep the priority they had: by then they are sent, or
/// so far behind that their relative order no longer matters.
const REPRIORITIZED_STREAMS: usize = 32;

/// Carries out one engine action on the session of the connection it names.
pub(super) fn run_action(state: &mut Conn, action: Action, shed: &ShedConfig) {
    let session = &mut state.driver.session;
    match action {
        Action::SubscribeOk {
            request,
            largest,
            properties,
            ..
        } => {
            let params = Parameters {
                largest_object: largest,
                ..Parameters::default()
            };
            let publisher_timeout = publisher_delivery_timeout(&properties);
            if let Ok(alias) = session.subscribe_ok(request, params, properties) {
                let sub = state
                    .downstream
                    .entry(request)
                    .or_insert_with(|| Subscription::new(&Parameters::default()));
                sub.alias = Some(alias);
                sub.publisher_timeout = publisher_timeout;
                sub.newest_group = largest.map_or(0, |l| l.group);
            }
        }
        Action::PublishOk { request, .. } => {
            // Forward 1: objects flow (and fill the cache) at once.
            let ok = RequestOk {
                parameters: Parameters {
                    forward: Some(true),
                    ..Parameters::default()
                },
                track_properties: Properties::new(),
            };
            let _ = session.request_ok(request, ok);
        }
        Action::TrackStatusOk {
            request,
            largest,
            properties,
            ..
        } => {
            let ok = RequestOk {
                parameters: Parameters {
                    largest_object: largest,
                    ..Parameters::default()
                },
                track_properties: properties,
            };
            if session.request_ok(request, ok).is_ok() {
                // §10.14: the stream ends after TRACK_STATUS_OK.
                let _ = session.finish(request);
            }
        }
        Action::RequestError {
            request,
            code,
            reason,
            ..
        } => {
            tracing::debug!(request = request.0, ?code, reason, "request refused");
            state.downstream.remove(&request);
            let _ = session.request_error(request, code, reason);
        }
        Action::SubscribeUpstream { track, name, .. } => {
            subscribe_upstream(state, track, name, None);
        }
        Action::UnsubscribeUpstream { request, .. } => {
            state.upstream.remove(&request);
            let _ = session.cancel(request, StreamResetCode::Cancelled);
        }
        Action::Namespace {
            request, namespace, ..
        } => {
            if let Some(suffix) = namespace_suffix(&state.namespace_prefixes, request, &namespace) {
                let _ = session.namespace(request, suffix);
            }
        }
        Action::NamespaceDone {
            request, namespace, ..
        } => {
            if let Some(suffix) = namespace_suffix(&state.namespace_prefixes, request, &namespace) {
                let _ = session.namespace_done(request, suffix);
            }
        }
        Action::PublishDone { request, code, .. } => {
            let sub = state.downstream.remove(&request);
            end_subscription(session, request, sub.as_ref(), code);
        }
        Action::EndSubgroup {
            request,
            group,
            subgroup,
            reset,
            ..
        } => {
            if let Some(sub) = state.downstream.get_mut(&request) {
                if let Some(alias) = sub.alias {
                    match reset {
                        None => {
                            session.end_subgroup(alias, group, subgroup);
                        }
                        // The upstream reset: so does every copy (§11.4.3),
                        // and nothing more of the subgroup goes out.
                        Some(code) => {
                            session.reset_subgroup(alias, group, subgroup, code);
                            sub.dropped.insert((group, subgroup));
                        }
                    }
                }
            }
        }
        Action::Object {
            request, object, ..
        } => send_object(state, request, object, shed),
        // Needs the engine: carried out by `run_actions` itself.
        Action::OfferTrack { .. } => {}
        Action::PublishBlocked {
            request,
            prefix,
            name,
            ..
        } => {
            // The track's namespace after the SUBSCRIBE_TRACKS prefix.
            let suffix = name.namespace().strip_prefix(&prefix);
            let track =
                suffix.and_then(|ns| moqt::FullTrackName::new(ns, name.name().clone()).ok());
            if let Some(track) = track {
                let blocked =
                    ControlMessage::PublishBlocked(moqt::message::PublishBlocked { track });
                let _ = session.send_message(request, blocked, false);
            }
        }
    }
}

/// Ends a downstream subscription: its open subgroup streams are reset
/// first (§10.11: no PUBLISH_DONE while they are open), then PUBLISH_DONE
/// with the number of streams it opened.
pub(super) fn end_subscription(
    session: &mut moqt::session::Session,
    id: RequestId,
    sub: Option<&Subscription>,
    code: PublishDoneCode,
) {
    if let Some(alias) = sub.and_then(|s| s.alias) {
        session.reset_track_subgroups(alias, StreamResetCode::Cancelled);
    }
    let done = PublishDone {
        status_code: code,
        stream_count: sub.map_or(0, |s| s.streams_opened),
        reason: ReasonPhrase::default(),
    };
    let _ = session.publish_done(id, done);
}

/// PUBLISH of a pushed track to a SUBSCRIBE_TRACKS subscriber (§10.19):
/// a downstream subscription of ours that objects follow after PUBLISH_OK.
#[allow(clippy::too_many_arguments)]
pub(super) fn offer_track(
    engine: &mut Engine,
    state: &mut Conn,
    me: SessionId,
    track: TrackId,
    name: moqt::FullTrackName,
    largest: Option<Location>,
    properties: Properties,
    forward: bool,
) {
    let params = Parameters {
        largest_object: largest,
        forward: Some(forward),
        ..Parameters::default()
    };
    match state.driver.session.publish(name, params, properties) {
        Ok((id, alias)) => {
            let mut sub = Subscription::new(&Parameters::default());
            sub.alias = Some(alias);
            sub.newest_group = largest.map_or(0, |l| l.group);
            state.downstream.insert(id, sub);
            state.offered.insert(id);
            engine.offered(me, id, track);
        }
        Err(e) => tracing::debug!(error = %e, "PUBLISH to a track subscriber not sent"),
    }
}

/// One object to one subscriber: a datagram stays a datagram (§11.3);
/// anything else goes on the subscriber's copy of its subgroup stream,
/// whose priority is set when it opens.
pub(super) fn send_object(
    state: &mut Conn,
    request: RequestId,
    object: CachedObject,
    shed: &ShedConfig,
) {
    let Some(sub) = state.downstream.get_mut(&request) else {
        return;
    };
    let Some(alias) = sub.alias else {
        return;
    };
    let driver = &mut state.driver;
    if object.datagram {
        // Datagrams rank by object ID where streams rank by subgroup.
        let priority = sub.priority(
            object.publisher_priority,
            object.location.group,
            object.location.object,
        );
        if shed::datagram_yields(
            priority,
            driver.pending_bytes(),
            state.best_waiting,
            shed.max_backlog_bytes,
        ) {
            state.shed.datagrams_dropped += 1;
            return;
        }
        let content = if object.status == moqt::ObjectStatus::Normal {
            DatagramContent::Payload(object.payload)
        } else {
            DatagramContent::Status(object.status)
        };
        let datagram = ObjectDatagram {
            track_alias: alias,
            group_id: object.location.group,
            object_id: object.location.object,
            publisher_priority: object
                .explicit_priority
                .then_some(object.publisher_priority),
            end_of_group: object.end_of_group,
            properties: object.properties,
            content,
        };
        let len = match &datagram.content {
            DatagramContent::Payload(p) => p.len(),
            DatagramContent::Status(_) => 0,
        };
        if driver.session.send_datagram(&datagram).is_ok() {
            state.traffic.sent(None, len);
        }
        return;
    }
    if sub
        .dropped
        .contains(&(object.location.group, object.subgroup))
    {
        // The rest of a subgroup given up on: the subscriber was told by
        // the stream reset; it resumes with the next subgroup or group.
        state.shed.objects_skipped += 1;
        return;
    }
    let (publisher_priority, group, subgroup) = (
        object.publisher_priority,
        object.location.group,
        object.subgroup,
    );
    let newer_group = object.location.group > sub.newest_group;
    let out = OutgoingObject {
        track_alias: alias,
        location: object.location,
        subgroup: object.subgroup,
        publisher_priority: object
            .explicit_priority
            .then_some(object.publisher_priority),
        status: object.status,
        properties: object.properties,
        payload: object.payload,
    };
    // The upstream stream's header bits, for the stream this may open.
    let flags = StreamFlags {
        end_of_group: object.end_of_group,
        first_object: object.first_object,
    };
    let (part, len) = (object.part, out.payload.len());
    let opened_before = driver.session.subgroup_streams_opened();
    let sent = match object.part {
        None => driver.session.send_object_flagged(out, flags),
        Some(part) => driver.session.send_object_part(out, part, flags),
    };
    if sent.is_ok() {
        state.traffic.sent(part, len);
    }
    let Ok(stream) = sent else {
        // An object that cannot go on its stream (a part of it was lost on
        // the way from another worker, or this subscription started in
        // its middle): if the stream is open it can only be reset, and the
        // rest of the subgroup is skipped like a shed one.
        if driver
            .session
            .reset_subgroup(alias, group, subgroup, StreamResetCode::InternalError)
        {
            sub.dropped.insert((group, subgroup));
        }
        return;
    };
    if newer_group {
        // Group ranks are relative to the newest group: re-rank the others.
        sub.newest_group = object.location.group;
        sub.reprioritize(driver);
        let newest = sub.newest_group;
        sub.dropped
            .retain(|(g, _)| g.saturating_add(SHED_MEMORY_GROUPS) >= newest);
    }
    // This object opened its stream (its OpenUni is still queued).
    if driver.session.subgroup_streams_opened() != opened_before {
        sub.streams_opened += 1;
        if sub.recent.len() == REPRIORITIZED_STREAMS {
            sub.recent.pop_front();
        }
        sub.recent
            .push_back((stream, publisher_priority, group, subgroup));
        driver.set_priority(stream, sub.priority(publisher_priority, group, subgroup));
        state
            .stream_owner
            .insert(stream, (request, group, subgroup));
    }
}

/// The part of `namespace` after the prefix of namespace subscription `request`.
fn namespace_suffix(
    prefixes: &HashMap<RequestId, TrackNamespace>,
    request: RequestId,
    namespace: &TrackNamespace,
) -> Option<TrackNamespace> {
    namespace.strip_prefix(prefixes.get(&request)?)
}

/// How an upstream SUBSCRIBE goes over a link to another relay.
#[derive(Clone, Copy, Debug)]
pub(super) struct OverLink {
    /// The downstream subscriber's remaining rendezvous (ms), so the
    /// upstream relay waits for its publisher as this one would have.
    pub(super) rendezvous: Option<u64>,
}

/// SUBSCRIBE upstream for `track`: to a publisher, Largest Object (the
/// relay aggregates, §9.4). Over a link, Absolute Start {0, 0}: the
/// upstream relay may subscribe to its own publisher on our behalf and
/// receive objects before it answers us (moq-relay does), and those
/// objects would fall before a Largest Object start. Whether the session
/// took the request (it refuses beyond its concurrent requests).
pub(super) fn subscribe_upstream(
    state: &mut Conn,
    track: TrackId,
    name: FullTrackName,
    link: Option<OverLink>,
) -> bool {
    let filter = match link {
        Some(_) => SubscriptionFilter::AbsoluteStart {
            start: Location::new(0, 0),
        },
        None => SubscriptionFilter::LargestObject,
    };
    let params = Parameters {
        forward: Some(true),
        subscription_filter: Some(filter),
        rendezvous_timeout: link.and_then(|l| l.rendezvous),
        ..Parameters::default()
    };
    match state.driver.session.subscribe(name, params) {
        Ok(id) => {
            state.upstream.insert(id, (track, None));
            true
        }
        Err(_) => false,
    }
}
