//! What the engine's integration tests share: names, objects, and an engine
//! already relaying one track.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use bytes::Bytes;
use moqt::{FullTrackName, Location, ObjectStatus, Properties, SubscriptionFilter, TrackNamespace};
use relay_engine::{
    cache::CachedObject,
    engine::{Action, Engine, EngineConfig, RequestId, SessionId},
};

pub fn ns(parts: &[&str]) -> TrackNamespace {
    TrackNamespace::new(parts.iter().map(|p| Bytes::copy_from_slice(p.as_bytes()))).unwrap()
}

/// Track `name` in namespace live/cam1.
pub fn track(name: &str) -> FullTrackName {
    FullTrackName::new(
        ns(&["live", "cam1"]),
        Bytes::copy_from_slice(name.as_bytes()),
    )
    .unwrap()
}

pub const PUB: SessionId = SessionId(1);
pub const SUB_A: SessionId = SessionId(2);
pub const SUB_B: SessionId = SessionId(3);

pub fn obj(group: u64, object: u64) -> CachedObject {
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

pub fn locations(objects: &[CachedObject]) -> Vec<(u64, u64)> {
    objects
        .iter()
        .map(|o| (o.location.group, o.location.object))
        .collect()
}

pub fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// A publisher with namespace live/cam1 and an established upstream
/// subscription for "video" on alias 7, with `subs` downstream subscribers.
pub fn relaying(subs: &[(SessionId, u64, Option<SubscriptionFilter>)]) -> Engine {
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

pub fn track_in(t: &FullTrackName, name: &'static str) -> FullTrackName {
    FullTrackName::new(t.namespace().clone(), Bytes::from_static(name.as_bytes())).unwrap()
}
