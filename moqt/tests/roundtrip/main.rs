//! Deterministic encode -> decode round trips of every message, header and
//! datagram variant, and the draft's error conditions.
//!
//! One file per kind of thing encoded; the shared builders are here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use moqt::params::param_type;
use moqt::properties::property_type;
use moqt::*;

mod errors;
mod fetch;
mod messages;
mod subgroup;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn ns(fields: &[&str]) -> TrackNamespace {
    TrackNamespace::new(fields.iter().map(|f| b(f))).unwrap()
}

fn track(fields: &[&str], name: &str) -> FullTrackName {
    FullTrackName::new(ns(fields), b(name)).unwrap()
}

fn roundtrip(msg: ControlMessage) {
    let wire = msg.to_bytes().unwrap();
    // Zero-copy decode from Bytes.
    let mut buf = wire.clone();
    assert_eq!(ControlMessage::decode(&mut buf).unwrap(), msg);
    assert!(buf.is_empty());
    // From BytesMut with a second message behind it.
    let mut bm = BytesMut::from(&wire[..]);
    bm.extend_from_slice(&wire);
    assert_eq!(ControlMessage::decode(&mut bm).unwrap(), msg);
    assert_eq!(ControlMessage::decode(&mut bm).unwrap(), msg);
    assert!(bm.is_empty());
    // From a non-contiguous buffer.
    let mid = wire.len() / 2;
    let mut chain = wire.slice(..mid).chain(wire.slice(mid..));
    assert_eq!(ControlMessage::decode(&mut chain).unwrap(), msg);
    assert_eq!(chain.remaining(), 0);
    // Every strict prefix is Incomplete and consumes nothing.
    for n in 0..wire.len() {
        let mut p = wire.slice(..n);
        assert_eq!(
            ControlMessage::decode(&mut p),
            Err(DecodeError::Incomplete),
            "prefix {n} of {msg:?}"
        );
        assert_eq!(p.len(), n);
        assert_eq!(ControlMessage::try_decode(&mut wire.slice(..n)), Ok(None));
    }
}

fn all_params() -> Parameters {
    Parameters {
        object_delivery_timeout: Some(100),
        authorization_tokens: vec![
            AuthToken::Delete { alias: 1 },
            AuthToken::Register {
                alias: 2,
                token_type: 0,
                value: b("secret"),
            },
            AuthToken::UseAlias { alias: 3 },
            AuthToken::UseValue {
                token_type: 0x9D,
                value: Bytes::new(),
            },
        ],
        rendezvous_timeout: Some(5000),
        subgroup_delivery_timeout: Some(200),
        expires: Some(u64::MAX),
        largest_object: Some(Location::new(10, 20)),
        fill_timeout: Some(0),
        forward: Some(false),
        subscriber_priority: Some(255),
        subscription_filter: Some(SubscriptionFilter::LargestObject),
        group_order: Some(GroupOrder::Descending),
        new_group_request: Some(11),
        track_namespace_prefix: Some(ns(&["p"])),
    }
}

/// `all_params()` reduced to what `msg` allows.
fn params_for(msg: MessageType) -> Parameters {
    let mut p = all_params();
    let ok = |t| parameter_allowed(t, msg);
    if !ok(param_type::OBJECT_DELIVERY_TIMEOUT) {
        p.object_delivery_timeout = None;
    }
    if !ok(param_type::AUTHORIZATION_TOKEN) {
        p.authorization_tokens.clear();
    }
    if !ok(param_type::RENDEZVOUS_TIMEOUT) {
        p.rendezvous_timeout = None;
    }
    if !ok(param_type::SUBGROUP_DELIVERY_TIMEOUT) {
        p.subgroup_delivery_timeout = None;
    }
    if !ok(param_type::EXPIRES) {
        p.expires = None;
    }
    if !ok(param_type::LARGEST_OBJECT) {
        p.largest_object = None;
    }
    if !ok(param_type::FILL_TIMEOUT) {
        p.fill_timeout = None;
    }
    if !ok(param_type::FORWARD) {
        p.forward = None;
    }
    if !ok(param_type::SUBSCRIBER_PRIORITY) {
        p.subscriber_priority = None;
    }
    if !ok(param_type::SUBSCRIPTION_FILTER) {
        p.subscription_filter = None;
    }
    if !ok(param_type::GROUP_ORDER) {
        p.group_order = None;
    }
    if !ok(param_type::NEW_GROUP_REQUEST) {
        p.new_group_request = None;
    }
    if !ok(param_type::TRACK_NAMESPACE_PREFIX) {
        p.track_namespace_prefix = None;
    }
    p
}

fn props() -> Properties {
    let inner = Properties::from_pairs(vec![KeyValuePair::varint(
        property_type::PRIOR_GROUP_ID_GAP,
        2,
    )
    .unwrap()])
    .unwrap();
    Properties::from_pairs(vec![
        KeyValuePair::varint(property_type::DYNAMIC_GROUPS, 1).unwrap(),
        KeyValuePair::varint(property_type::OBJECT_DELIVERY_TIMEOUT, 7).unwrap(),
        KeyValuePair::bytes(0x3F, b("app")).unwrap(),
        Properties::immutable_pair(&inner).unwrap(),
        KeyValuePair::bytes(0x4001, Bytes::new()).unwrap(),
        KeyValuePair::varint(0x9E, 0).unwrap(),
        KeyValuePair::varint(0x9E, 1).unwrap(),
    ])
    .unwrap()
}
