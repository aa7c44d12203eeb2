//! The relay engine's choreography, in memory: namespaces, subscriptions with
//! upstream aggregation, filters, fan-out, cache, and what happens when
//! sessions leave.

mod common;

use bytes::Bytes;
use common::{ns, track};
use moqt::{
    FullTrackName, GroupOrder, Location, ObjectStatus, Properties, PublishDoneCode,
    RequestErrorCode, SubscriptionFilter,
};
use relay::{
    cache::CachedObject,
    engine::{payload_is_shared, Action, Engine, EngineConfig, RequestId, SessionId},
};

const PUB: SessionId = SessionId(1);
const SUB_A: SessionId = SessionId(2);
const SUB_B: SessionId = SessionId(3);

fn obj(group: u64, object: u64) -> CachedObject {
    CachedObject {
        location: Location::new(group, object),
        subgroup: 0,
        datagram: false,
        publisher_priority: 128,
        explicit_priority: true,
        end_of_group: false,
        first_object: false,
        status: ObjectStatus::Normal,
        properties: Properties::new(),
        payload: Bytes::from(format!("g{group}o{object}")),
        part: None,
    }
}

fn locations(objects: &[CachedObject]) -> Vec<(u64, u64)> {
    objects
        .iter()
        .map(|o| (o.location.group, o.location.object))
        .collect()
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// A publisher with namespace live/cam1 and an established upstream
/// subscription for "video" on alias 7, with `subs` downstream subscribers.
fn relaying(subs: &[(SessionId, u64, Option<SubscriptionFilter>)]) -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A, SUB_B] {
        e.session_opened(s);
    }
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    for (s, r, f) in subs {
        e.subscribe(*s, RequestId(*r), track("video"), *f);
    }
    let actions = drain(&mut e);
    let Some(Action::SubscribeUpstream {
        track: t,
        publisher,
        ..
    }) = actions.first().cloned()
    else {
        panic!("expected an upstream subscription first: {actions:?}");
    };
    assert_eq!(publisher, PUB);
    e.upstream_subscribed(t, RequestId(1), 7, None, Properties::new());
    e
}

#[test]
fn unknown_track_and_subscribe_before_publish_namespace_are_refused() {
    let mut e = Engine::new(EngineConfig::default());
    e.session_opened(SUB_A);
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    assert_eq!(
        drain(&mut e),
        [Action::RequestError {
            session: SUB_A,
            request: RequestId(0),
            code: RequestErrorCode::DoesNotExist,
            reason: "no publisher for this track",
        }]
    );
    // Once published, the same subscription works.
    e.publish_namespace(PUB, RequestId(0), ns(&["live"]));
    e.subscribe(SUB_A, RequestId(2), track("video"), None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::SubscribeUpstream { publisher: PUB, .. }]
    ));
}

#[test]
fn one_upstream_subscription_for_many_subscribers_and_shared_payloads() {
    let mut e = Engine::new(EngineConfig::default());
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    e.subscribe(SUB_B, RequestId(4), track("video"), None);
    let actions = drain(&mut e);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::SubscribeUpstream { .. }))
            .count(),
        1
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SubscribeOk { .. })),
        "no SUBSCRIBE_OK before upstream: {actions:?}"
    );
    let Action::SubscribeUpstream { track: t, .. } = actions[0].clone() else {
        unreachable!()
    };
    e.upstream_subscribed(
        t,
        RequestId(1),
        7,
        Some(Location::new(3, 4)),
        Properties::new(),
    );
    let oks: Vec<_> = drain(&mut e);
    assert_eq!(oks.len(), 2);
    assert!(oks.iter().all(
        |a| matches!(a, Action::SubscribeOk { largest: Some(l), .. } if *l == Location::new(3, 4))
    ));

    let o = obj(4, 0);
    e.object(PUB, 7, o.clone());
    let out = drain(&mut e);
    assert_eq!(out.len(), 2);
    // One copy for the cache, shared by every subscriber.
    let mut first: Option<Bytes> = None;
    for a in &out {
        let Action::Object { object, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(object.location, o.location);
        assert_eq!(object.payload, o.payload);
        let first = first.get_or_insert_with(|| object.payload.clone());
        assert!(
            payload_is_shared(&object.payload, first),
            "payload copied per subscriber"
        );
    }
    // A late third subscriber joins without another upstream subscription.
    e.subscribe(
        SessionId(9),
        RequestId(0),
        track("video"),
        Some(SubscriptionFilter::LargestObject),
    );
    assert!(
        matches!(drain(&mut e)[..], [Action::SubscribeOk { largest: Some(l), .. }] if l == Location::new(4, 0))
    );
    assert_eq!(e.stats().upstream_subscriptions, 1);
}

#[test]
fn filters_decide_what_passes() {
    // SUB_B keeps the track relayed while the cache fills.
    let mut e = relaying(&[(SUB_B, 0, None)]);
    for g in 0..3 {
        for o in 0..3 {
            e.object(PUB, 7, obj(g, o));
        }
    }
    drain(&mut e);
    // Largest is {2,2}.
    // One session per subscription: a session subscribes to a track once
    // (§5.1, DUPLICATE_SUBSCRIPTION).
    e.subscribe(
        SessionId(10),
        RequestId(0),
        track("video"),
        Some(SubscriptionFilter::LargestObject),
    );
    e.subscribe(
        SessionId(11),
        RequestId(2),
        track("video"),
        Some(SubscriptionFilter::NextGroupStart),
    );
    e.subscribe(
        SessionId(12),
        RequestId(4),
        track("video"),
        Some(SubscriptionFilter::AbsoluteRange {
            start: Location::new(1, 0),
            end_group_delta: 2,
        }),
    );
    drain(&mut e);
    // Late or reordered object of an old group, then new ones.
    for (g, o) in [(1, 5), (2, 3), (3, 0), (3, 1), (4, 0)] {
        e.object(PUB, 7, obj(g, o));
    }
    let mut got: std::collections::BTreeMap<u64, Vec<(u64, u64)>> = Default::default();
    for a in drain(&mut e) {
        if let Action::Object {
            session: SessionId(10..=12),
            request,
            object,
            ..
        } = a
        {
            got.entry(request.0)
                .or_default()
                .push((object.location.group, object.location.object));
        }
    }
    assert_eq!(
        got[&0],
        [(2, 3), (3, 0), (3, 1), (4, 0)],
        "LargestObject starts after {{2,2}}"
    );
    assert_eq!(
        got[&2],
        [(3, 0), (3, 1), (4, 0)],
        "NextGroupStart starts at {{3,0}}"
    );
    assert_eq!(
        got[&4],
        [(1, 5), (2, 3), (3, 0), (3, 1)],
        "AbsoluteRange ends with group 3"
    );
}

#[test]
fn late_joiner_reads_the_cache_from_its_start() {
    let mut e = relaying(&[(SUB_A, 0, None)]);
    for g in 0..4 {
        for o in 0..5 {
            e.object(PUB, 7, obj(g, o));
        }
    }
    drain(&mut e);
    e.subscribe(
        SUB_B,
        RequestId(2),
        track("video"),
        Some(SubscriptionFilter::LargestObject),
    );
    drain(&mut e);
    // Joining FETCH one group back from the Joining Location (3, 4).
    let plan = e
        .fetch_joining(SUB_B, RequestId(2), 1, true, GroupOrder::Ascending)
        .unwrap();
    assert_eq!(plan.end, Location::new(3, 4));
    assert_eq!(
        plan.unknown_through, None,
        "the cache saw group 0 from its start"
    );
    assert_eq!(
        locations(&plan.objects),
        (2..4)
            .flat_map(|g| (0..5).map(move |o| (g, o)))
            .collect::<Vec<_>>()
    );
    // Descending: newest group first, objects ascending within a group.
    let plan = e
        .fetch_joining(SUB_B, RequestId(2), 2, false, GroupOrder::Descending)
        .unwrap();
    assert_eq!(
        locations(&plan.objects),
        [3, 2]
            .into_iter()
            .flat_map(|g| (0..5).map(move |o| (g, o)))
            .collect::<Vec<_>>()
    );
    // Not a subscription of SUB_B / starting after the joining location.
    assert_eq!(
        e.fetch_joining(SUB_B, RequestId(9), 1, true, GroupOrder::Ascending)
            .unwrap_err()
            .0,
        RequestErrorCode::InvalidJoiningRequestId
    );
    assert_eq!(
        e.fetch_joining(SUB_B, RequestId(2), 4, false, GroupOrder::Ascending)
            .unwrap_err()
            .0,
        RequestErrorCode::InvalidRange
    );
    assert_eq!(
        e.largest_for(SUB_B, RequestId(2)),
        Some(Location::new(3, 4))
    );
}

#[test]
fn publisher_leaving_ends_every_subscription_and_namespace() {
    let mut e = relaying(&[(SUB_A, 0, None), (SUB_B, 2, None)]);
    e.subscribe_namespace(SessionId(9), RequestId(0), ns(&["live"]));
    let announced = drain(&mut e);
    assert!(announced.contains(&Action::Namespace {
        session: SessionId(9),
        request: RequestId(0),
        namespace: ns(&["live", "cam1"])
    }));
    e.session_closed(PUB);
    let after = drain(&mut e);
    for (s, r) in [(SUB_A, 0), (SUB_B, 2)] {
        assert!(
            after.contains(&Action::PublishDone {
                session: s,
                request: RequestId(r),
                code: PublishDoneCode::TrackEnded
            }),
            "{after:?}"
        );
    }
    assert!(after.contains(&Action::NamespaceDone {
        session: SessionId(9),
        request: RequestId(0),
        namespace: ns(&["live", "cam1"])
    }));
    assert_eq!(e.track_count(), 0);
    // Objects on the old alias go nowhere.
    e.object(PUB, 7, obj(9, 0));
    assert!(drain(&mut e).is_empty());
}

#[test]
fn last_subscriber_out_ends_the_upstream_subscription() {
    let mut e = relaying(&[(SUB_A, 0, None), (SUB_B, 2, None)]);
    drain(&mut e);
    e.unsubscribe(SUB_A, RequestId(0));
    assert!(
        drain(&mut e).is_empty(),
        "one subscriber left: upstream stays"
    );
    e.session_closed(SUB_B);
    assert_eq!(
        drain(&mut e),
        [Action::UnsubscribeUpstream {
            publisher: PUB,
            request: RequestId(1)
        }]
    );
    assert_eq!(e.track_count(), 0);
    assert_eq!(e.cache_bytes(), 0);
}

#[test]
fn a_reconnecting_subscriber_starts_clean() {
    let mut e = relaying(&[(SUB_A, 0, None), (SUB_B, 2, None)]);
    e.object(PUB, 7, obj(0, 0));
    drain(&mut e);
    // SUB_A's connection drops; the same session number comes back (same address and port).
    e.session_closed(SUB_A);
    e.session_opened(SUB_A);
    e.subscribe(
        SUB_A,
        RequestId(0),
        track("video"),
        Some(SubscriptionFilter::NextGroupStart),
    );
    let ok = drain(&mut e);
    assert!(
        matches!(
            ok[..],
            [Action::SubscribeOk {
                session: SUB_A,
                request: RequestId(0),
                ..
            }]
        ),
        "{ok:?}"
    );
    e.object(PUB, 7, obj(1, 0));
    let out = drain(&mut e);
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Object { session: SUB_A, .. }))
            .count(),
        1
    );
}

#[test]
fn upstream_refusal_reaches_every_waiting_subscriber() {
    let mut e = Engine::new(EngineConfig::default());
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    e.subscribe(SUB_A, RequestId(0), track("nope"), None);
    e.subscribe(SUB_B, RequestId(0), track("nope"), None);
    let Some(Action::SubscribeUpstream { track: t, .. }) = drain(&mut e).first().cloned() else {
        panic!()
    };
    e.upstream_failed(t, RequestErrorCode::DoesNotExist);
    let refused = drain(&mut e);
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|a| matches!(
        a,
        Action::RequestError {
            code: RequestErrorCode::DoesNotExist,
            ..
        }
    )));
}

#[test]
fn limits_are_enforced() {
    let mut e = Engine::new(EngineConfig {
        max_subscriptions_per_session: 2,
        max_tracks: 2,
        ..EngineConfig::default()
    });
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    for (r, name) in [(0, "a"), (2, "b"), (4, "c")] {
        e.subscribe(SUB_A, RequestId(r), track(name), None);
    }
    let refused: Vec<_> = drain(&mut e)
        .into_iter()
        .filter(|a| matches!(a, Action::RequestError { .. }))
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(matches!(
        refused[0],
        Action::RequestError {
            code: RequestErrorCode::ExcessiveLoad,
            request: RequestId(4),
            ..
        }
    ));
}

#[test]
fn a_duplicate_request_id_creates_nothing() {
    let mut e = relaying(&[(SUB_A, 0, None)]);
    drain(&mut e);
    e.subscribe(SUB_A, RequestId(0), track("audio"), None);
    assert!(matches!(
        drain(&mut e)[..],
        [Action::RequestError {
            code: RequestErrorCode::DuplicateSubscription,
            ..
        }]
    ));
    assert_eq!(
        e.track_count(),
        1,
        "no upstream subscription for a refused request"
    );
}

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

fn track_in(t: &FullTrackName, name: &'static str) -> FullTrackName {
    FullTrackName::new(t.namespace().clone(), Bytes::from_static(name.as_bytes())).unwrap()
}

#[test]
fn subscribe_with_rendezvous_waits_for_the_publisher_then_is_served() {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A] {
        e.session_opened(s);
    }
    let now = std::time::Instant::now();
    let deadline = e.rendezvous_deadline(now, Some(5_000));
    assert!(deadline.is_some());
    e.subscribe_or_wait(SUB_A, RequestId(0), track("video"), None, deadline);
    // Nothing yet: no refusal, no upstream subscription.
    assert_eq!(drain(&mut e), []);
    assert_eq!(e.waiting_count(), 1);
    // Not expired before the deadline.
    e.expire_waiting(now + std::time::Duration::from_secs(1));
    assert_eq!(drain(&mut e), []);

    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    let actions = drain(&mut e);
    let [Action::SubscribeUpstream {
        publisher,
        track: t,
        ..
    }] = actions.as_slice()
    else {
        panic!("expected the upstream SUBSCRIBE: {actions:?}");
    };
    assert_eq!(*publisher, PUB);
    assert_eq!(e.waiting_count(), 0);
    e.upstream_subscribed(*t, RequestId(1), 7, None, Properties::new());
    assert!(matches!(
        drain(&mut e).as_slice(),
        [Action::SubscribeOk {
            session: SUB_A,
            request: RequestId(0),
            ..
        }]
    ));
    e.object(PUB, 7, obj(0, 0));
    assert!(matches!(
        drain(&mut e).as_slice(),
        [Action::Object { session: SUB_A, .. }]
    ));
}

#[test]
fn rendezvous_expires_with_timeout_and_zero_means_no_wait() {
    let mut e = Engine::new(EngineConfig::default());
    e.session_opened(SUB_A);
    let now = std::time::Instant::now();
    assert_eq!(e.rendezvous_deadline(now, Some(0)), None);
    assert_eq!(e.rendezvous_deadline(now, None), None);
    // The relay caps the wait (§10.2.6 allows a shorter one).
    let capped = e.rendezvous_deadline(now, Some(u64::MAX)).unwrap();
    assert_eq!(capped, now + EngineConfig::default().max_rendezvous);

    let deadline = e.rendezvous_deadline(now, Some(2_000));
    e.subscribe_or_wait(SUB_A, RequestId(0), track("video"), None, deadline);
    e.subscribe_or_wait(SUB_A, RequestId(2), track("audio"), None, None);
    assert_eq!(
        drain(&mut e),
        [Action::RequestError {
            session: SUB_A,
            request: RequestId(2),
            code: RequestErrorCode::DoesNotExist,
            reason: "no publisher for this track",
        }]
    );
    e.expire_waiting(now + std::time::Duration::from_secs(3));
    assert_eq!(
        drain(&mut e),
        [Action::RequestError {
            session: SUB_A,
            request: RequestId(0),
            code: RequestErrorCode::Timeout,
            reason: "no publisher within the rendezvous timeout",
        }]
    );
    assert_eq!(e.waiting_count(), 0);
}

#[test]
fn a_waiting_subscription_is_served_by_a_direct_publish_and_freed_on_leave() {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A, SUB_B] {
        e.session_opened(s);
    }
    let deadline = e.rendezvous_deadline(std::time::Instant::now(), Some(5_000));
    e.subscribe_or_wait(SUB_A, RequestId(0), track("video"), None, deadline);
    e.subscribe_or_wait(SUB_B, RequestId(0), track("video"), None, deadline);
    // SUB_B gives up before the publisher arrives; SUB_A stays.
    e.unsubscribe(SUB_B, RequestId(0));
    assert_eq!(e.waiting_count(), 1);
    e.publish(
        PUB,
        RequestId(1),
        track("video"),
        9,
        None,
        Properties::new(),
    );
    let actions = drain(&mut e);
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::PublishOk { session: PUB, .. },
                Action::SubscribeOk {
                    session: SUB_A,
                    request: RequestId(0),
                    ..
                }
            ]
        ),
        "{actions:?}"
    );
    e.object(PUB, 9, obj(0, 0));
    assert!(matches!(
        drain(&mut e).as_slice(),
        [Action::Object { session: SUB_A, .. }]
    ));
    // A session that leaves while waiting leaves nothing behind.
    e.subscribe_or_wait(SUB_B, RequestId(2), track("other"), None, deadline);
    assert_eq!(e.waiting_count(), 1);
    e.session_closed(SUB_B);
    assert_eq!(e.waiting_count(), 0);
}

#[test]
fn a_second_subscribe_to_the_same_track_is_a_duplicate() {
    let mut e = relaying(&[(SUB_A, 0, None)]);
    drain(&mut e);
    e.subscribe(SUB_A, RequestId(2), track("video"), None);
    assert_eq!(
        drain(&mut e),
        [Action::RequestError {
            session: SUB_A,
            request: RequestId(2),
            code: RequestErrorCode::DuplicateSubscription,
            reason: "already subscribed to this track",
        }]
    );
    // Also while the first one waits for its publisher.
    let elsewhere = FullTrackName::new(ns(&["not", "yet"]), Bytes::from("t")).unwrap();
    let deadline = e.rendezvous_deadline(std::time::Instant::now(), Some(5_000));
    e.subscribe_or_wait(SUB_B, RequestId(0), elsewhere.clone(), None, deadline);
    assert_eq!(drain(&mut e), []);
    e.subscribe_or_wait(SUB_B, RequestId(2), elsewhere, None, deadline);
    assert!(matches!(
        drain(&mut e).as_slice(),
        [Action::RequestError {
            code: RequestErrorCode::DuplicateSubscription,
            ..
        }]
    ));
}

#[test]
fn a_withdrawn_namespace_is_not_done_for_its_own_publisher() {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A] {
        e.session_opened(s);
    }
    // The publisher also watches the namespaces under "live".
    e.subscribe_namespace(PUB, RequestId(2), ns(&["live"]));
    e.subscribe_namespace(SUB_A, RequestId(0), ns(&["live"]));
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    let told: Vec<SessionId> = drain(&mut e)
        .iter()
        .filter_map(|a| match a {
            Action::Namespace { session, .. } => Some(*session),
            _ => None,
        })
        .collect();
    assert_eq!(told, [SUB_A]);
    e.withdraw_namespace(PUB, RequestId(0));
    let done: Vec<SessionId> = drain(&mut e)
        .iter()
        .filter_map(|a| match a {
            Action::NamespaceDone { session, .. } => Some(*session),
            _ => None,
        })
        .collect();
    assert_eq!(done, [SUB_A], "NAMESPACE_DONE only where NAMESPACE went");
}

#[test]
fn a_subscription_is_pending_until_its_upstream_answers() {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A] {
        e.session_opened(s);
    }
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    let Some(Action::SubscribeUpstream { track: t, .. }) = drain(&mut e).first().cloned() else {
        panic!("no upstream SUBSCRIBE");
    };
    // A joining FETCH now would be refused: the glue holds it instead.
    assert!(e.is_pending(SUB_A, RequestId(0)));
    assert!(e
        .fetch_joining(SUB_A, RequestId(0), 1, true, GroupOrder::Ascending)
        .is_err());
    e.upstream_subscribed(
        t,
        RequestId(1),
        7,
        Some(Location::new(3, 2)),
        Properties::new(),
    );
    assert!(!e.is_pending(SUB_A, RequestId(0)));
    let plan = e
        .fetch_joining(SUB_A, RequestId(0), 1, true, GroupOrder::Ascending)
        .expect("served once established");
    assert_eq!(plan.end, Location::new(3, 2));
    assert!(!e.is_pending(SUB_A, RequestId(4)), "no such subscription");
}

#[test]
fn subscribe_tracks_offers_pushed_tracks_or_says_publish_blocked_at_the_limit() {
    let mut e = Engine::new(EngineConfig {
        max_subscriptions_per_session: 1,
        ..EngineConfig::default()
    });
    for s in [PUB, SUB_A] {
        e.session_opened(s);
    }
    e.subscribe_tracks(SUB_A, RequestId(0), ns(&["live"]), true);
    e.publish(
        PUB,
        RequestId(1),
        track("video"),
        9,
        None,
        Properties::new(),
    );
    let offer = drain(&mut e)
        .into_iter()
        .find_map(|a| match a {
            Action::OfferTrack {
                session: SUB_A,
                track,
                name,
                ..
            } => Some((track, name)),
            _ => None,
        })
        .expect("PUBLISH offered");
    assert_eq!(offer.1, track("video"));
    e.offered(SUB_A, RequestId(1), offer.0);
    assert!(e.offer_accepted(SUB_A, RequestId(1), true, None));
    e.object(PUB, 9, obj(0, 0));
    assert!(matches!(
        drain(&mut e).as_slice(),
        [Action::Object { session: SUB_A, .. }]
    ));
    // At its limit of one subscription: the next pushed track is blocked.
    e.publish(
        PUB,
        RequestId(3),
        track("audio"),
        10,
        None,
        Properties::new(),
    );
    let blocked: Vec<Action> = drain(&mut e)
        .into_iter()
        .filter(|a| matches!(a, Action::PublishBlocked { .. }))
        .collect();
    assert_eq!(
        blocked,
        [Action::PublishBlocked {
            session: SUB_A,
            request: RequestId(0),
            prefix: ns(&["live"]),
            name: track("audio"),
        }]
    );
}

#[test]
fn all_caches_together_stay_within_the_total_budget() {
    const TOTAL: usize = 64 * 1024;
    let mut e = Engine::new(EngineConfig {
        cache_bytes_per_track: 32 * 1024,
        cache_bytes_total: TOTAL,
        ..EngineConfig::default()
    });
    e.session_opened(PUB);
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    // Four tracks, each within its own budget, together over the total.
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let sub = SessionId(10 + i as u64);
        e.session_opened(sub);
        e.subscribe(sub, RequestId(0), track(name), None);
        let actions = drain(&mut e);
        let Some(Action::SubscribeUpstream { track: t, .. }) = actions
            .iter()
            .find(|a| matches!(a, Action::SubscribeUpstream { .. }))
            .cloned()
        else {
            panic!("no upstream subscription for {name}: {actions:?}");
        };
        e.upstream_subscribed(
            t,
            RequestId(1 + 2 * i as u64),
            i as u64,
            None,
            Properties::new(),
        );
    }
    drain(&mut e);
    let big = |group: u64| CachedObject {
        payload: Bytes::from(vec![1u8; 1000]),
        ..obj(group, 0)
    };
    for group in 0..40 {
        for alias in 0..4 {
            e.object(PUB, alias, big(group));
            assert!(e.cache_bytes() <= TOTAL, "{} cached", e.cache_bytes());
        }
    }
    assert!(e.stats().cache_groups_reclaimed > 0);
    // Every track still has its newest groups, and nothing was lost live.
    assert_eq!(e.stats().objects_out, 160);
    assert!(e.cache_bytes() > TOTAL / 2, "reclaimed far too much");
}

/// Two sessions publish the same namespace (a publisher that reconnected
/// while its old session, dead without a CONNECTION_CLOSE, still lingers):
/// a new subscription goes upstream to the one that published last.
#[test]
fn the_latest_publisher_of_a_namespace_is_subscribed_to() {
    let mut e = Engine::new(EngineConfig::default());
    let (first, last) = (SessionId(2), SessionId(1));
    for s in [first, last, SUB_A] {
        e.session_opened(s);
    }
    e.publish_namespace(first, RequestId(0), ns(&["live", "cam1"]));
    e.publish_namespace(last, RequestId(0), ns(&["live", "cam1"]));
    drain(&mut e);
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    let actions = drain(&mut e);
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::SubscribeUpstream { publisher, .. } if *publisher == last)
        ),
        "{actions:?}"
    );
}
