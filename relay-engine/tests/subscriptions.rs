//! The engine's subscriptions, in memory: refusals, upstream aggregation with
//! shared payloads, filters, late joiners, and what happens when sessions leave.

mod common;

use bytes::Bytes;
use common::*;
use moqt::{
    GroupOrder, Location, Properties, PublishDoneCode, RequestErrorCode, SubscriptionFilter,
};
use relay_engine::engine::{payload_is_shared, Action, Engine, EngineConfig, RequestId, SessionId};

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
