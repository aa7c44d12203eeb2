//! Links to upstream relays: the publisher of last resort, in
//! configuration order, and the loop rule (what arrives over a link, or
//! from a relay's link, is served from local publishers only).

mod common;

use std::time::{Duration, Instant};

use common::*;
use moqt::{Properties, RequestErrorCode};
use relay_engine::engine::{Action, Engine, EngineConfig, RequestId, SessionId, LINK_RETRY};

const LINK_1: SessionId = SessionId(10);
const LINK_2: SessionId = SessionId(11);
const PEER_RELAY: SessionId = SessionId(12);

fn engine() -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    for s in [PUB, SUB_A, SUB_B, LINK_1, LINK_2, PEER_RELAY] {
        e.session_opened(s);
    }
    e
}

fn upstream_of(actions: &[Action]) -> Option<SessionId> {
    actions.iter().find_map(|a| match a {
        Action::SubscribeUpstream { publisher, .. } => Some(*publisher),
        _ => None,
    })
}

fn refusal(actions: &[Action], request: u64) -> Option<RequestErrorCode> {
    actions.iter().find_map(|a| match a {
        Action::RequestError {
            request: r, code, ..
        } if r.0 == request => Some(*code),
        _ => None,
    })
}

#[test]
fn a_track_nobody_publishes_goes_to_the_first_link_that_is_up() {
    let mut e = engine();
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    assert_eq!(
        refusal(&drain(&mut e), 0),
        Some(RequestErrorCode::DoesNotExist)
    );

    // Rank, not arrival, decides.
    e.link_up(LINK_2, 1);
    e.link_up(LINK_1, 0);
    assert_eq!(e.links().collect::<Vec<_>>(), vec![LINK_1, LINK_2]);
    e.subscribe(SUB_A, RequestId(2), track("video"), None);
    assert_eq!(upstream_of(&drain(&mut e)), Some(LINK_1));

    // A second subscriber is aggregated on the same upstream subscription.
    e.subscribe(SUB_B, RequestId(2), track("video"), None);
    assert_eq!(upstream_of(&drain(&mut e)), None);

    // A link going away takes no new track.
    e.link_down(LINK_1);
    e.subscribe(SUB_A, RequestId(4), track("audio"), None);
    assert_eq!(upstream_of(&drain(&mut e)), Some(LINK_2));
}

#[test]
fn a_local_publisher_wins_over_links() {
    let mut e = engine();
    e.link_up(LINK_1, 0);
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    drain(&mut e);
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    assert_eq!(upstream_of(&drain(&mut e)), Some(PUB));
}

#[test]
fn what_arrives_over_a_link_or_from_a_relay_link_is_served_locally_only() {
    let mut e = engine();
    e.link_up(LINK_1, 0);
    e.link_up(LINK_2, 1);
    e.serve_locally(PEER_RELAY);
    assert!(e.is_local_only(LINK_1) && e.is_local_only(PEER_RELAY));
    assert!(!e.is_local_only(SUB_A));
    // Neither is forwarded to a link: refused at once without a local
    // publisher...
    e.subscribe(LINK_1, RequestId(1), track("video"), None);
    e.subscribe(PEER_RELAY, RequestId(1), track("video"), None);
    let actions = drain(&mut e);
    assert_eq!(upstream_of(&actions), None, "{actions:?}");
    assert_eq!(refusal(&actions, 1), Some(RequestErrorCode::DoesNotExist));
    // ...or held for one within its rendezvous, and served by it.
    let now = Instant::now();
    e.subscribe_or_wait(
        PEER_RELAY,
        RequestId(3),
        track("video"),
        None,
        Some(now + Duration::from_secs(5)),
    );
    assert!(drain(&mut e).is_empty());
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    assert_eq!(upstream_of(&drain(&mut e)), Some(PUB));
}

#[test]
fn a_closed_link_ends_its_tracks_and_is_no_longer_used() {
    let mut e = engine();
    e.link_up(LINK_1, 0);
    e.subscribe(SUB_A, RequestId(0), track("video"), None);
    let actions = drain(&mut e);
    let Some(Action::SubscribeUpstream { track: t, .. }) = actions.first().cloned() else {
        panic!("{actions:?}");
    };
    e.upstream_subscribed(t, RequestId(0), 3, None, Properties::new());
    drain(&mut e);
    e.session_closed(LINK_1);
    let actions = drain(&mut e);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::PublishDone { session, .. } if *session == SUB_A)),
        "{actions:?}"
    );
    assert_eq!(e.links().count(), 0);
    e.subscribe(SUB_A, RequestId(2), track("video"), None);
    assert_eq!(
        refusal(&drain(&mut e), 2),
        Some(RequestErrorCode::DoesNotExist)
    );
}

#[test]
fn a_waiting_subscription_goes_upstream_when_a_link_comes_up_with_its_rendezvous() {
    let mut e = engine();
    let deadline = Instant::now() + Duration::from_secs(10);
    e.subscribe_or_wait(SUB_A, RequestId(0), track("video"), None, Some(deadline));
    assert!(drain(&mut e).is_empty());
    e.link_up(LINK_1, 0);
    let actions = drain(&mut e);
    let Some(Action::SubscribeUpstream {
        track: t,
        publisher,
        ..
    }) = actions.first().cloned()
    else {
        panic!("{actions:?}");
    };
    assert_eq!(publisher, LINK_1);
    assert_eq!(e.upstream_rendezvous(t), Some(deadline));
}

#[test]
fn a_link_that_refuses_within_the_rendezvous_is_asked_again() {
    let mut e = engine();
    e.link_up(LINK_1, 0);
    let now = Instant::now();
    let deadline = now + Duration::from_secs(3);
    e.subscribe_or_wait(SUB_A, RequestId(0), track("video"), None, Some(deadline));
    let actions = drain(&mut e);
    let Some(Action::SubscribeUpstream { track: t, .. }) = actions.first().cloned() else {
        panic!("{actions:?}");
    };
    // Refused upstream: the subscriber keeps waiting, nothing is sent yet.
    assert!(e.retry_upstream_later(t, now));
    assert!(drain(&mut e).is_empty());
    e.expire_waiting(now + LINK_RETRY / 2);
    assert!(drain(&mut e).is_empty());
    // Asked again once the retry is due.
    e.expire_waiting(now + LINK_RETRY);
    let actions = drain(&mut e);
    let Some(Action::SubscribeUpstream {
        track: t2,
        publisher,
        ..
    }) = actions.first().cloned()
    else {
        panic!("{actions:?}");
    };
    assert_eq!(publisher, LINK_1);
    // Too close to the deadline: refused for good, with the link's code.
    assert!(!e.retry_upstream_later(t2, deadline - LINK_RETRY / 2));
    e.upstream_failed(t2, RequestErrorCode::DoesNotExist);
    assert_eq!(
        refusal(&drain(&mut e), 0),
        Some(RequestErrorCode::DoesNotExist)
    );
    // A track from a local publisher is never retried this way.
    e.publish_namespace(PUB, RequestId(0), ns(&["live", "cam1"]));
    e.subscribe_or_wait(SUB_B, RequestId(0), track("video"), None, Some(deadline));
    let actions = drain(&mut e);
    let Some(Action::SubscribeUpstream { track: t3, .. }) = actions.first().cloned() else {
        panic!("{actions:?}");
    };
    assert!(!e.retry_upstream_later(t3, now));
}
