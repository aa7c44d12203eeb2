//! The engine's tracks, in memory: standalone FETCH, pushed tracks (PUBLISH),
//! TRACK_STATUS, forward state, namespaces, and peer workers as sessions.

mod common;

use bytes::Bytes;
use common::*;
use moqt::{
    FullTrackName, GroupOrder, Location, Properties, PublishDoneCode, RequestErrorCode,
    SubscriptionFilter,
};
use relay_engine::engine::{Action, Engine, EngineConfig, RequestId, SessionId};

#[test]
fn standalone_fetch_serves_the_cache_and_marks_what_the_relay_never_saw() {
    let mut e = relaying(&[(SUB_A, 0, None)]);
    // The relay joined in the middle of group 4.
    for (g, o) in [(4, 3), (4, 4), (5, 0), (5, 1), (6, 0), (6, 1), (6, 2)] {
        e.object(PUB, 7, obj(g, o));
    }
    drain(&mut e);
    // Groups 3..=5 whole (End Location (5, 0): "all of group 5").
    let plan = e
        .fetch_standalone(
            SUB_B,
            &track("video"),
            Location::new(3, 0),
            Location::new(5, 0),
            GroupOrder::Ascending,
        )
        .unwrap();
    assert_eq!(plan.unknown_through, Some(Location::new(4, u64::MAX)));
    // In descending order the marker names the range's other end.
    assert_eq!(plan.start, Location::new(3, 0));
    assert_eq!(locations(&plan.objects), [(5, 0), (5, 1)]);
    assert_eq!(plan.end, Location::new(5, u64::MAX));
    // Beyond the largest object: the response ends at the largest (6, 2).
    let plan = e
        .fetch_standalone(
            SUB_B,
            &track("video"),
            Location::new(6, 1),
            Location::new(9, 0),
            GroupOrder::Ascending,
        )
        .unwrap();
    assert_eq!(plan.end, Location::new(6, 2));
    assert_eq!(plan.unknown_through, None);
    assert_eq!(locations(&plan.objects), [(6, 1), (6, 2)]);
    // Start after the largest, end before start, unknown tracks.
    for (start, end, code) in [
        ((7, 0), (8, 0), RequestErrorCode::InvalidRange),
        ((6, 2), (6, 1), RequestErrorCode::InvalidRange),
    ] {
        let got = e.fetch_standalone(
            SUB_B,
            &track("video"),
            Location::new(start.0, start.1),
            Location::new(end.0, end.1),
            GroupOrder::Ascending,
        );
        assert_eq!(got.unwrap_err().0, code, "{start:?}..{end:?}");
    }
    let not_relayed = e.fetch_standalone(
        SUB_B,
        &track("audio"),
        Location::new(0, 0),
        Location::new(1, 0),
        GroupOrder::Ascending,
    );
    assert_eq!(not_relayed.unwrap_err().0, RequestErrorCode::NotSupported);
    let foreign = FullTrackName::new(ns(&["other"]), Bytes::from_static(b"x")).unwrap();
    let unknown = e.fetch_standalone(
        SUB_B,
        &foreign,
        Location::new(0, 0),
        Location::new(1, 0),
        GroupOrder::Ascending,
    );
    assert_eq!(unknown.unwrap_err().0, RequestErrorCode::DoesNotExist);
}

#[test]
fn a_published_track_is_relayed_without_an_upstream_subscribe_and_outlives_its_subscribers() {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A, SUB_B] {
        e.session_opened(s);
    }
    // The publisher's Track Properties reach every subscriber (§2.5).
    let mut props = Properties::new();
    props
        .push(moqt::kvp::KeyValuePair::bytes(0x3f, "from the publisher").unwrap())
        .unwrap();
    let t = e.publish(
        PUB,
        RequestId(1),
        track("video"),
        11,
        Some(Location::new(2, 0)),
        props.clone(),
    );
    assert!(t.is_some());
    assert_eq!(
        drain(&mut e),
        [Action::PublishOk {
            session: PUB,
            request: RequestId(1)
        }]
    );
    // A second source for the same track is refused.
    assert!(e
        .publish(
            SUB_B,
            RequestId(1),
            track("video"),
            3,
            None,
            Properties::new()
        )
        .is_none());
    assert!(matches!(
        drain(&mut e)[..],
        [Action::RequestError {
            session: SUB_B,
            code: RequestErrorCode::Uninterested,
            ..
        }]
    ));
    // Subscribing needs no upstream SUBSCRIBE: SUBSCRIBE_OK at once.
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    assert_eq!(
        drain(&mut e),
        [Action::SubscribeOk {
            session: SUB_A,
            request: RequestId(0),
            largest: Some(Location::new(2, 0)),
            properties: props.clone(),
        }]
    );
    e.object(PUB, 11, obj(3, 0));
    assert!(matches!(
        drain(&mut e)[..],
        [Action::Object { session: SUB_A, .. }]
    ));
    // The last subscriber leaves: the track stays (no upstream to end).
    e.unsubscribe(SUB_A, RequestId(0));
    assert_eq!(drain(&mut e), []);
    assert_eq!(e.track_count(), 1);
    e.object(PUB, 11, obj(3, 1));
    e.subscribe(SUB_B, RequestId(0), track("video"), None);
    drain(&mut e);
    // PUBLISH_DONE from the publisher ends it for its subscribers.
    e.upstream_done(PUB, 11, PublishDoneCode::TrackEnded);
    assert_eq!(
        drain(&mut e),
        [Action::PublishDone {
            session: SUB_B,
            request: RequestId(0),
            code: PublishDoneCode::TrackEnded,
        }]
    );
    assert_eq!(e.track_count(), 0);
}

#[test]
fn track_status_answers_from_the_relay_or_after_one_upstream_subscribe() {
    let mut e = relaying(&[(SUB_A, 0, None)]);
    e.object(PUB, 7, obj(4, 2));
    drain(&mut e);
    e.track_status(SUB_B, RequestId(0), track("video"));
    assert_eq!(
        drain(&mut e),
        [Action::TrackStatusOk {
            session: SUB_B,
            request: RequestId(0),
            largest: Some(Location::new(4, 2)),
            properties: Properties::new(),
        }]
    );
    // A track nobody relays: subscribe upstream, answer, let go.
    e.track_status(SUB_B, RequestId(2), track("audio"));
    let actions = drain(&mut e);
    let [Action::SubscribeUpstream {
        track: t,
        publisher: PUB,
        ..
    }] = actions[..]
    else {
        panic!("{actions:?}");
    };
    assert!(e.upstream_subscribed(
        t,
        RequestId(3),
        8,
        Some(Location::new(9, 1)),
        Properties::new()
    ));
    assert_eq!(
        drain(&mut e),
        [
            Action::TrackStatusOk {
                session: SUB_B,
                request: RequestId(2),
                largest: Some(Location::new(9, 1)),
                properties: Properties::new(),
            },
            Action::UnsubscribeUpstream {
                publisher: PUB,
                request: RequestId(3),
            }
        ]
    );
    assert_eq!(e.track_count(), 1, "only video is relayed");
    // No publisher for the namespace.
    let foreign = FullTrackName::new(ns(&["other"]), Bytes::from_static(b"x")).unwrap();
    e.track_status(SUB_B, RequestId(4), foreign);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::RequestError {
            code: RequestErrorCode::DoesNotExist,
            ..
        }]
    ));
}

#[test]
fn forward_state_and_filter_updates_apply_from_the_next_object() {
    let mut e = relaying(&[(SUB_A, 0, None), (SUB_B, 0, None)]);
    drain(&mut e);
    assert!(e.set_forward(SUB_B, RequestId(0), false));
    e.object(PUB, 7, obj(0, 0));
    let to: Vec<_> = drain(&mut e)
        .into_iter()
        .filter_map(|a| match a {
            Action::Object { session, .. } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(to, [SUB_A], "SUB_B is not forwarded");
    assert!(e.set_forward(SUB_B, RequestId(0), true));
    // SUB_A narrows to groups 5..=6.
    let largest = e.update_filter(
        SUB_A,
        RequestId(0),
        SubscriptionFilter::AbsoluteRange {
            start: Location::new(5, 0),
            end_group_delta: 1,
        },
    );
    assert_eq!(largest, Some(Some(Location::new(0, 0))));
    for g in [1, 5, 6, 7] {
        e.object(PUB, 7, obj(g, 0));
    }
    let mut got: Vec<(SessionId, u64)> = drain(&mut e)
        .into_iter()
        .filter_map(|a| match a {
            Action::Object {
                session, object, ..
            } => Some((session, object.location.group)),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (SUB_A, 5),
            (SUB_A, 6),
            (SUB_B, 1),
            (SUB_B, 5),
            (SUB_B, 6),
            (SUB_B, 7)
        ]
    );
    assert_eq!(
        e.update_filter(SUB_A, RequestId(9), SubscriptionFilter::LargestObject),
        None
    );
    assert!(!e.set_forward(SUB_A, RequestId(9), true));
}

#[test]
fn withdrawn_and_updated_namespaces() {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A, SUB_B] {
        e.session_opened(s);
    }
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    e.publish_namespace(PUB, RequestId(2), ns(&["vod", "x"]));
    e.subscribe_namespace(SUB_A, RequestId(0), ns(&["live"]));
    drain(&mut e);
    // The prefix moves to "vod": the vod namespace is announced.
    assert!(e.update_namespace_prefix(SUB_A, RequestId(0), ns(&["vod"])));
    assert_eq!(
        drain(&mut e),
        [Action::Namespace {
            session: SUB_A,
            request: RequestId(0),
            namespace: ns(&["vod", "x"]),
        }]
    );
    // Withdrawing vod/x: NAMESPACE_DONE, and no new subscriptions route there.
    e.withdraw_namespace(PUB, RequestId(2));
    assert_eq!(
        drain(&mut e),
        [Action::NamespaceDone {
            session: SUB_A,
            request: RequestId(0),
            namespace: ns(&["vod", "x"]),
        }]
    );
    let vod = FullTrackName::new(ns(&["vod", "x"]), Bytes::from_static(b"a")).unwrap();
    e.subscribe(SUB_B, RequestId(0), vod, None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::RequestError {
            code: RequestErrorCode::DoesNotExist,
            ..
        }]
    ));
    // A cancelled namespace subscription hears nothing more.
    e.unsubscribe_namespace(SUB_A, RequestId(0));
    e.publish_namespace(PUB, RequestId(4), ns(&["vod", "y"]));
    assert_eq!(drain(&mut e), []);
    assert!(!e.update_namespace_prefix(SUB_A, RequestId(0), ns(&["live"])));
}

#[test]
fn an_upstream_answer_nobody_waits_for_any_more_is_refused() {
    let mut e = Engine::new(EngineConfig::default());
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    let [Action::SubscribeUpstream { track: t, .. }] = drain(&mut e)[..] else {
        panic!()
    };
    e.unsubscribe(SUB_A, RequestId(0));
    assert_eq!(drain(&mut e), [], "nothing to cancel before the answer");
    assert!(!e.upstream_subscribed(t, RequestId(1), 7, None, Properties::new()));
    assert_eq!(e.track_count(), 0);
}

#[test]
fn worker_pseudo_sessions_never_collide_with_connections() {
    let w = SessionId::worker(3);
    assert!(w.is_worker() && !SessionId(u32::MAX as u64).is_worker());
    assert_eq!(w.worker_index(), Some(3));
    assert_eq!(SessionId(5).worker_index(), None);
    assert_ne!(SessionId::worker(0), SessionId::worker(1));
}

/// Another worker's namespace routes local subscribers to it, but a
/// subscription from a worker only ever goes to a local publisher, so
/// requests cannot loop between workers; local publishers win ties.
#[test]
fn peer_workers_as_publishers_and_subscribers() {
    let peer = SessionId::worker(1);
    let other = SessionId::worker(2);
    let mut e = Engine::new(EngineConfig::default());
    e.publish_namespace(peer, RequestId(10), ns(&["live", "cam1"]));
    e.publish_namespace(other, RequestId(11), ns(&["live", "cam2"]));
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::SubscribeUpstream { publisher, .. }] if publisher == peer
    ));
    // A worker asking for a track only another worker publishes: refused.
    let cam2 = FullTrackName::new(ns(&["live", "cam2"]), Bytes::from_static(b"a")).unwrap();
    e.subscribe(peer, RequestId(0), cam2.clone(), None);
    e.subscribe(other, RequestId(0), track("audio"), None);
    let actions = drain(&mut e);
    assert!(
        actions.iter().all(|a| matches!(
            a,
            Action::RequestError {
                code: RequestErrorCode::DoesNotExist,
                ..
            }
        )) && actions.len() == 2,
        "{actions:?}"
    );
    // A local publisher of the same namespace wins over the peer.
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam2"]));
    e.subscribe(SUB_B, RequestId(0), cam2, None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::SubscribeUpstream { publisher, .. }] if publisher == PUB
    ));
    // A PUBLISH-pushed track on another worker, until it is withdrawn.
    let pushed = FullTrackName::new(ns(&["push"]), Bytes::from_static(b"t")).unwrap();
    e.set_remote_track(pushed.clone(), Some(other));
    e.subscribe(SUB_A, RequestId(2), pushed.clone(), None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::SubscribeUpstream { publisher, .. }] if publisher == other
    ));
    e.set_remote_track(pushed.clone(), None);
    e.subscribe(SUB_B, RequestId(4), track_in(&pushed, "u"), None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::RequestError {
            code: RequestErrorCode::DoesNotExist,
            ..
        }]
    ));
}
