//! Session events in, engine calls out: the translation of what a peer
//! asked (requests, answers, updates, namespace prefixes) into the engine's
//! terms.

use std::{collections::HashMap, time::Instant};

use moqt::{
    session::{Event as SessionEvent, RequestId},
    ControlMessage, FetchType, Parameters, Properties, PublishDoneCode, RequestErrorCode,
    RequestOk, RequestUpdate, SessionErrorCode, StreamResetCode, TrackNamespace,
    DEFAULT_PUBLISHER_PRIORITY, DEFAULT_SUBSCRIBER_PRIORITY,
};
use quinn_proto::ConnectionHandle;

use super::{
    authz,
    conn::{Conn, Subscription},
    fetch::{answer_fetch, serve_join, PendingJoin},
    send::end_subscription,
    sid,
};
use crate::{
    cache::CachedObject,
    directory::Published,
    engine::{Engine, SessionId},
    group::Peers,
};

pub(super) fn on_session_event(
    engine: &mut Engine,
    state: &mut Conn,
    peers: Option<&Peers>,
    ch: ConnectionHandle,
    ev: SessionEvent,
) {
    let me = sid(ch);
    match ev {
        SessionEvent::Ready { peer_setup } => {
            // Under WebTransport the URI travelled in the CONNECT request;
            // the SETUP must not carry it again (§10.3.1.1-2).
            if state.driver.is_webtransport() {
                let misplaced = if peer_setup.path().is_some() {
                    Some((SessionErrorCode::InvalidPath, "PATH"))
                } else if peer_setup.authority().is_some() {
                    Some((SessionErrorCode::InvalidAuthority, "AUTHORITY"))
                } else {
                    None
                };
                if let Some((code, option)) = misplaced {
                    let reason = format!("{option} option in SETUP over WebTransport");
                    state.driver.session.close(code, &reason);
                    return;
                }
            }
            if let Some(auth) = &mut state.auth {
                authz::admit(auth, &mut state.driver.session, &peer_setup);
            }
        }
        SessionEvent::Request { id, message } => {
            let allowed = state.auth.as_ref().is_none_or(|auth| {
                authz::allow_request(auth, &mut state.driver.session, id, &message)
            });
            if allowed {
                on_request(engine, state, peers, me, id, message);
            }
        }
        SessionEvent::Message {
            id,
            message: ControlMessage::RequestUpdate(update),
        } => on_request_update(engine, state, me, id, update),
        SessionEvent::Message { id, message } if state.offered.contains(&id) => {
            // The answer to our PUBLISH of a pushed track (§10.19).
            state.offered.remove(&id);
            match message {
                ControlMessage::RequestOk(ok) | ControlMessage::PublishOk(ok) => {
                    let p = ok.parameters;
                    if let Some(sub) = state.downstream.get_mut(&id) {
                        // Nothing is sent on the track yet: no rank to redo.
                        sub.take_parameters(&p);
                    }
                    let forward = p.forward.unwrap_or(true);
                    engine.offer_accepted(me, id, forward, p.subscription_filter);
                }
                _ => {
                    // REQUEST_ERROR: the subscriber does not want it.
                    state.downstream.remove(&id);
                    engine.unsubscribe(me, id);
                }
            }
        }
        SessionEvent::Message { id, message } => {
            let Some((track, _)) = state.upstream.get(&id).copied() else {
                return;
            };
            match message {
                ControlMessage::SubscribeOk(ok) => {
                    state.upstream.insert(id, (track, Some(ok.track_alias)));
                    let wanted = engine.upstream_subscribed(
                        track,
                        id,
                        ok.track_alias,
                        ok.parameters.largest_object,
                        ok.track_properties,
                    );
                    if !wanted {
                        state.upstream.remove(&id);
                        let _ = state.driver.session.cancel(id, StreamResetCode::Cancelled);
                    }
                }
                ControlMessage::RequestError(e) => {
                    tracing::debug!(
                        publisher = me.0,
                        code = ?e.error_code,
                        reason = ?e.reason,
                        "upstream SUBSCRIBE refused"
                    );
                    state.upstream.remove(&id);
                    // An upstream relay may not hold a SUBSCRIBE for a
                    // publisher still to come: asked again within the
                    // subscriber's rendezvous.
                    let retried = e.error_code == RequestErrorCode::DoesNotExist
                        && engine.retry_upstream_later(track, Instant::now());
                    if !retried {
                        engine.upstream_failed(track, e.error_code);
                    }
                }
                ControlMessage::PublishDone(d) => {
                    if let Some(peers) = peers {
                        peers.withdrawn(me, id);
                    }
                    if let Some((_, Some(alias))) = state.upstream.remove(&id) {
                        engine.upstream_done(me, alias, d.status_code);
                    }
                    // Our side of the request ends too (the publisher waits
                    // for it, and the session keeps the request until both
                    // sides are done).
                    let _ = state.driver.session.finish(id);
                }
                _ => {}
            }
        }
        SessionEvent::RequestCancelled { id, abort } => {
            tracing::debug!(
                session = me.0,
                request = id.0,
                ?abort,
                "request cancelled by the peer"
            );
            state.offered.remove(&id);
            if let Some(sub) = state.downstream.remove(&id) {
                if let Some(alias) = sub.alias {
                    // Nobody reads them any more: free the subscriber's
                    // stream credit at once.
                    state
                        .driver
                        .session
                        .reset_track_subgroups(alias, StreamResetCode::Cancelled);
                }
                engine.unsubscribe(me, id);
            } else if let Some((track, alias)) = state.upstream.remove(&id) {
                // The publisher cancelled our subscription (or its PUBLISH):
                // its track ends.
                if let Some(peers) = peers {
                    peers.withdrawn(me, id);
                }
                match alias {
                    Some(alias) => {
                        engine.upstream_done(me, alias, PublishDoneCode::SubscriptionEnded)
                    }
                    None => engine.upstream_failed(track, RequestErrorCode::InternalError),
                }
            } else if state.namespace_prefixes.remove(&id).is_some() {
                engine.unsubscribe_namespace(me, id);
            } else if state.track_prefixes.remove(&id).is_some() {
                engine.unsubscribe_tracks(me, id);
            } else if state.published_namespaces.remove(&id) {
                if let Some(peers) = peers {
                    peers.withdrawn(me, id);
                }
                engine.withdraw_namespace(me, id);
            }
            // Otherwise a FETCH or TRACK_STATUS: nothing is held for it but
            // a joining FETCH still waiting (an answer still to come for a
            // TRACK_STATUS finds no request).
            state.pending_joins.retain(|j| j.fetch != id);
        }
        SessionEvent::Object(o) => {
            state.traffic.received(o.part, o.payload.len());
            let object = CachedObject {
                location: o.location,
                subgroup: o.subgroup.unwrap_or(0),
                datagram: o.subgroup.is_none(),
                publisher_priority: o.publisher_priority.unwrap_or(DEFAULT_PUBLISHER_PRIORITY),
                explicit_priority: o.publisher_priority.is_some(),
                end_of_group: o.end_of_group,
                first_object: o.first_object,
                status: o.status,
                properties: o.properties,
                payload: o.payload,
                part: o.part,
            };
            engine.object(me, o.track_alias, object);
        }
        SessionEvent::SubgroupEnded {
            track_alias,
            group,
            subgroup: Some(subgroup),
            abort,
            ..
        } => {
            engine.subgroup_ended(me, track_alias, group, subgroup, abort);
        }
        SessionEvent::Closed { .. } => {
            if let Some(peers) = peers {
                peers.session_gone(me);
            }
            engine.session_closed(me)
        }
        _ => {}
    }
}

/// The first message of a request stream from the peer.
pub(super) fn on_request(
    engine: &mut Engine,
    state: &mut Conn,
    peers: Option<&Peers>,
    me: SessionId,
    id: RequestId,
    message: ControlMessage,
) {
    let session = &mut state.driver.session;
    match message {
        ControlMessage::Subscribe(s) => {
            state
                .downstream
                .insert(id, Subscription::new(&s.parameters));
            let rendezvous =
                engine.rendezvous_deadline(Instant::now(), s.parameters.rendezvous_timeout);
            engine.subscribe_or_wait(
                me,
                id,
                s.track,
                s.parameters.subscription_filter,
                rendezvous,
            );
            if s.parameters.forward == Some(false) {
                engine.set_forward(me, id, false);
            }
        }
        ControlMessage::Publish(p) => {
            // Only a worker in a group needs the name afterwards.
            let name = peers.map(|_| p.track.clone());
            if let Some(track) = engine.publish(
                me,
                id,
                p.track,
                p.track_alias,
                p.parameters.largest_object,
                p.track_properties,
            ) {
                state.upstream.insert(id, (track, Some(p.track_alias)));
                if let (Some(peers), Some(name)) = (peers, name) {
                    peers.published(me, id, Published::Track(name));
                }
            }
        }
        ControlMessage::TrackStatus(t) => engine.track_status(me, id, t.track),
        ControlMessage::PublishNamespace(p) => {
            if session.request_ok(id, RequestOk::default()).is_ok() {
                state.published_namespaces.insert(id);
                if let Some(peers) = peers {
                    peers.published(me, id, Published::Namespace(p.namespace.clone()));
                }
                engine.publish_namespace(me, id, p.namespace);
            }
        }
        ControlMessage::SubscribeNamespace(p) => {
            if accept_prefix(session, id, &state.namespace_prefixes, &p.prefix) {
                state.namespace_prefixes.insert(id, p.prefix.clone());
                engine.subscribe_namespace(me, id, p.prefix);
            }
        }
        ControlMessage::Fetch(f) => {
            let order = f.parameters.group_order.unwrap_or_default();
            let subscriber_priority = f
                .parameters
                .subscriber_priority
                .unwrap_or(DEFAULT_SUBSCRIBER_PRIORITY);
            let join = match f.fetch_type {
                FetchType::Standalone(s) => {
                    let plan = engine.fetch_standalone(me, &s.track, s.start, s.end, order);
                    return answer_fetch(&mut state.driver, id, plan, order, subscriber_priority);
                }
                FetchType::RelativeJoining(j) => PendingJoin {
                    fetch: id,
                    joined: j.joining_request_id,
                    start: j.joining_start,
                    relative: true,
                    order,
                    subscriber_priority,
                },
                FetchType::AbsoluteJoining(j) => PendingJoin {
                    fetch: id,
                    joined: j.joining_request_id,
                    start: j.joining_start,
                    relative: false,
                    order,
                    subscriber_priority,
                },
            };
            if engine.is_pending(me, RequestId(join.joined)) {
                // §10.12.2: the subscription may still be Pending (the
                // relay waits for its upstream): served once it is
                // established, refused if it is not.
                state.pending_joins.push(join);
            } else {
                serve_join(engine, &mut state.driver, me, &join);
            }
        }
        ControlMessage::SubscribeTracks(p) => {
            if accept_prefix(session, id, &state.track_prefixes, &p.prefix) {
                state.track_prefixes.insert(id, p.prefix.clone());
                let forward = p.parameters.forward.unwrap_or(true);
                engine.subscribe_tracks(me, id, p.prefix, forward);
            }
        }
        _ => {
            let _ = session.request_error(
                id,
                RequestErrorCode::NotSupported,
                "not supported by this relay",
            );
        }
    }
}

/// REQUEST_UPDATE on one of the peer's requests (§10.9).
pub(super) fn on_request_update(
    engine: &mut Engine,
    state: &mut Conn,
    me: SessionId,
    id: RequestId,
    update: RequestUpdate,
) {
    let params = update.parameters;
    let session = &mut state.driver.session;
    if let Some(sub) = state.downstream.get_mut(&id) {
        let mut largest = engine.largest_for(me, id);
        if let Some(filter) = params.subscription_filter {
            match engine.update_filter(me, id, filter) {
                Some(l) => largest = l,
                None => {
                    // §10.9.1: a failed update ends the subscription, with
                    // PUBLISH_DONE (UPDATE_FAILED) once it was accepted.
                    let _ = session.request_error(
                        id,
                        RequestErrorCode::InternalError,
                        "no such subscription",
                    );
                    if sub.alias.is_some() {
                        end_subscription(session, id, Some(sub), PublishDoneCode::UpdateFailed);
                    }
                    state.downstream.remove(&id);
                    engine.unsubscribe(me, id);
                    return;
                }
            }
        }
        if let Some(forward) = params.forward {
            engine.set_forward(me, id, forward);
            if let (false, Some(alias)) = (forward, sub.alias) {
                // Forward 0: no more objects, so no stream stays open.
                session.reset_track_subgroups(alias, StreamResetCode::Cancelled);
            }
        }
        if sub.take_parameters(&params) {
            sub.reprioritize(&mut state.driver);
        }
        let ok = RequestOk {
            parameters: Parameters {
                largest_object: largest,
                ..Parameters::default()
            },
            track_properties: Properties::new(),
        };
        let _ = state.driver.session.request_ok(id, ok);
    } else if let Some(current) = state.namespace_prefixes.get_mut(&id) {
        if let (Some(auth), Some(prefix)) = (&state.auth, &params.track_namespace_prefix) {
            // Refused: the subscription keeps its old prefix.
            if !authz::allow_prefix_update(auth, session, id, prefix, &params) {
                return;
            }
        }
        // REQUEST_OK first: later NAMESPACE messages use the new prefix.
        let _ = session.request_ok(id, RequestOk::default());
        if let Some(prefix) = params.track_namespace_prefix {
            *current = prefix.clone();
            engine.update_namespace_prefix(me, id, prefix);
        }
    } else if state.published_namespaces.contains(&id) || state.upstream.contains_key(&id) {
        // Nothing of a PUBLISH_NAMESPACE or PUBLISH that the relay acts on.
        let _ = session.request_ok(id, RequestOk::default());
    } else {
        let _ = session.request_error(
            id,
            RequestErrorCode::NotSupported,
            "nothing to update on this request",
        );
    }
}

/// Answers a SUBSCRIBE_NAMESPACE or SUBSCRIBE_TRACKS: REQUEST_OK, or
/// PREFIX_OVERLAP when its prefix overlaps one of `existing` (the same
/// session's requests of that kind, §10.18, §10.19). Whether accepted.
pub(super) fn accept_prefix(
    session: &mut moqt::session::Session,
    id: RequestId,
    existing: &HashMap<RequestId, TrackNamespace>,
    prefix: &TrackNamespace,
) -> bool {
    let overlaps = existing
        .values()
        .any(|q| q.starts_with(prefix) || prefix.starts_with(q));
    if overlaps {
        let _ = session.request_error(
            id,
            RequestErrorCode::PrefixOverlap,
            "overlaps a subscription of this session with the same role",
        );
        return false;
    }
    session.request_ok(id, RequestOk::default()).is_ok()
}
