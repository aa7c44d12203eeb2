//! The engine's waiting subscriptions (rendezvous), duplicates, pending
//! state, the pushed-track limit, the cache budget and publisher choice.

mod common;

use bytes::Bytes;
use common::*;
use moqt::{FullTrackName, GroupOrder, Location, Properties, RequestErrorCode};
use relay_engine::{
    cache::CachedObject,
    engine::{Action, Engine, EngineConfig, RequestId, SessionId},
};

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
