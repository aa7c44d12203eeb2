//! Deterministic encode -> decode round trips of every message, header and
//! datagram variant, and the draft's error conditions.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use moqt::params::param_type;
use moqt::properties::property_type;
use moqt::*;

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

#[test]
fn every_control_message() {
    let msgs: Vec<ControlMessage> = vec![
        Setup::default().into(),
        Setup {
            options: vec![
                SetupOption::Path(b("/relay?x=1")),
                SetupOption::AuthorizationToken(AuthToken::Register {
                    alias: 0,
                    token_type: 1,
                    value: b("jwt"),
                }),
                SetupOption::AuthorizationToken(AuthToken::UseValue {
                    token_type: 2,
                    value: b("jwt2"),
                }),
                SetupOption::MaxAuthTokenCacheSize(1 << 20),
                SetupOption::Authority(b("example.com:443")),
                SetupOption::MoqtImplementation(b("fastrelay/0.1")),
                SetupOption::Unknown(KeyValuePair::varint(0x9C, 5).unwrap()),
                SetupOption::Unknown(KeyValuePair::bytes(0x9D, b("grease")).unwrap()),
                SetupOption::Unknown(KeyValuePair::bytes(0x9D, b("dup ok")).unwrap()),
            ],
        }
        .into(),
        GoAway::default().into(),
        GoAway {
            new_session_uri: b("moqt://other.example/path"),
            timeout: 30_000,
            request_id: Some(7),
        }
        .into(),
        RequestOk::default().into(),
        RequestOk {
            parameters: params_for(MessageType::RequestOk),
            track_properties: props(),
        }
        .into(),
        ControlMessage::PublishOk(RequestOk {
            parameters: params_for(MessageType::PublishOk),
            track_properties: Properties::new(),
        }),
        RequestError {
            error_code: RequestErrorCode::DoesNotExist,
            retry_interval: 0,
            reason: ReasonPhrase::new(b("no such track")).unwrap(),
            redirect: None,
        }
        .into(),
        RequestError {
            error_code: RequestErrorCode::Unknown(0x9D),
            retry_interval: 1,
            reason: ReasonPhrase::truncated(&"é".repeat(600)),
            redirect: None,
        }
        .into(),
        RequestError {
            error_code: RequestErrorCode::Redirect,
            retry_interval: 60_001,
            reason: ReasonPhrase::empty(),
            redirect: Some(Redirect {
                connect_uri: Bytes::new(),
                track: track(&["other", "ns"], "t"),
            }),
        }
        .into(),
        Subscribe {
            request_id: 0,
            track: track(&[], ""),
            parameters: Parameters::default(),
        }
        .into(),
        Subscribe {
            request_id: 1 << 40,
            track: track(&["a", "b", "c"], "video"),
            parameters: params_for(MessageType::Subscribe),
        }
        .into(),
        SubscribeOk {
            track_alias: 3,
            parameters: params_for(MessageType::SubscribeOk),
            track_properties: props(),
        }
        .into(),
        RequestUpdate {
            request_id: 9,
            parameters: params_for(MessageType::RequestUpdate),
        }
        .into(),
        Publish {
            request_id: 3,
            track: track(&["live"], "audio"),
            track_alias: 99,
            parameters: params_for(MessageType::Publish),
            track_properties: props(),
        }
        .into(),
        PublishDone {
            status_code: PublishDoneCode::SubscriptionEnded,
            stream_count: 12,
            reason: ReasonPhrase::new(b("done")).unwrap(),
        }
        .into(),
        Fetch {
            request_id: 2,
            fetch_type: FetchType::Standalone(StandaloneFetch {
                track: track(&["vod"], "v"),
                start: Location::new(1, 0),
                end: Location::new(5, 0),
            }),
            parameters: params_for(MessageType::Fetch),
        }
        .into(),
        Fetch {
            request_id: 4,
            fetch_type: FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: 2,
                joining_start: 3,
            }),
            parameters: Parameters::default(),
        }
        .into(),
        Fetch {
            request_id: 6,
            fetch_type: FetchType::AbsoluteJoining(JoiningFetch {
                joining_request_id: 2,
                joining_start: 100,
            }),
            parameters: Parameters::default(),
        }
        .into(),
        FetchOk {
            end_of_track: false,
            end_location: Location::new(5, 1),
            parameters: Parameters::default(),
            track_properties: props(),
        }
        .into(),
        TrackStatus {
            request_id: 8,
            track: track(&["x"], "y"),
            parameters: params_for(MessageType::TrackStatus),
        }
        .into(),
        PublishNamespace {
            request_id: 10,
            namespace: ns(&["meeting=123"]),
            parameters: params_for(MessageType::PublishNamespace),
        }
        .into(),
        Namespace {
            suffix: ns(&["participant=100"]),
        }
        .into(),
        NamespaceDone { suffix: ns(&[]) }.into(),
        SubscribeNamespace {
            request_id: 12,
            prefix: ns(&["example.com", "meeting=123"]),
            parameters: params_for(MessageType::SubscribeNamespace),
        }
        .into(),
        SubscribeTracks {
            request_id: 14,
            prefix: ns(&[]),
            parameters: params_for(MessageType::SubscribeTracks),
        }
        .into(),
        PublishBlocked {
            track: track(&["participant=200"], "screen"),
        }
        .into(),
    ];
    let mut seen: Vec<MessageType> = msgs.iter().map(ControlMessage::message_type).collect();
    seen.sort_by_key(|t| t.code());
    seen.dedup();
    assert_eq!(
        seen.len(),
        MessageType::ALL.len(),
        "every message type is covered"
    );
    for m in msgs {
        roundtrip(m);
    }
}

#[test]
fn every_subscription_filter() {
    for f in [
        SubscriptionFilter::NextGroupStart,
        SubscriptionFilter::LargestObject,
        SubscriptionFilter::AbsoluteStart {
            start: Location::new(0, 0),
        },
        SubscriptionFilter::AbsoluteRange {
            start: Location::new(u64::MAX - 1, 3),
            end_group_delta: 1,
        },
    ] {
        roundtrip(
            Subscribe {
                request_id: 0,
                track: track(&["a"], "b"),
                parameters: Parameters {
                    subscription_filter: Some(f),
                    ..Parameters::default()
                },
            }
            .into(),
        );
    }
}

fn frame(ty: u64, payload: &[u8]) -> Bytes {
    let mut v = Vec::new();
    varint::encode(ty, &mut v);
    v.put_u16(payload.len() as u16);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

fn decode_err(ty: u64, payload: &[u8]) -> DecodeError {
    ControlMessage::decode(&mut frame(ty, payload)).unwrap_err()
}

#[test]
fn control_message_errors() {
    // Unknown type: rejected as soon as the type is read.
    assert_eq!(
        ControlMessage::decode(&mut Bytes::from_static(&[0x42])),
        Err(DecodeError::UnknownMessageType(0x42))
    );
    // Length larger than the payload: Truncated.
    assert_eq!(
        decode_err(0x3, &[1]),
        DecodeError::Truncated {
            context: "control message"
        }
    );
    // Trailing bytes after the last field (length mismatch).
    assert_eq!(
        decode_err(0xE, &[0, 0xAA]),
        DecodeError::TrailingBytes {
            context: "control message",
            count: 1
        }
    );
    // Unknown parameter.
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x05, 0]),
        DecodeError::UnknownParameter(0x05)
    );
    // Parameter not allowed in this message: FILL_TIMEOUT in SUBSCRIBE.
    assert_eq!(
        decode_err(0x3, &[0, 0, 0, 1, 0x0A, 0]),
        DecodeError::ParameterNotAllowed {
            parameter: 0x0A,
            message: MessageType::Subscribe
        }
    );
    // Duplicate parameter: FORWARD twice (type delta 0).
    assert_eq!(
        decode_err(0x2, &[0, 2, 0x10, 1, 0x00, 1]),
        DecodeError::DuplicateParameter(0x10)
    );
    // FORWARD out of range; GROUP_ORDER out of range.
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x10, 2]),
        DecodeError::InvalidValue {
            field: "forward",
            value: 2
        }
    );
    assert_eq!(
        decode_err(0x3, &[0, 0, 0, 1, 0x22, 3]),
        DecodeError::InvalidValue {
            field: "group order",
            value: 3
        }
    );
    // Parameter type overflowing 2^64-1.
    let mut p = vec![0, 2, 0x10, 1];
    varint::encode(u64::MAX, &mut p);
    assert_eq!(
        decode_err(0x2, &p),
        DecodeError::Overflow {
            field: "parameter type"
        }
    );
    // Bad filter type; AbsoluteRange end group overflow; filter with trailing
    // bytes inside its length.
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x21, 1, 5]),
        DecodeError::InvalidValue {
            field: "filter type",
            value: 5
        }
    );
    let mut f = vec![0x04];
    varint::encode(u64::MAX, &mut f);
    f.extend_from_slice(&[0, 1]);
    let mut p = vec![0, 1, 0x21, f.len() as u8];
    p.extend_from_slice(&f);
    assert_eq!(
        decode_err(0x2, &p),
        DecodeError::Overflow { field: "end group" }
    );
    assert_eq!(
        decode_err(0x2, &[0, 1, 0x21, 2, 1, 0]),
        DecodeError::TrailingBytes {
            context: "subscription filter",
            count: 1
        }
    );
    // Malformed token: KEY_VALUE_FORMATTING_ERROR.
    for token in [&[][..], &[4, 0], &[0], &[0, 1, 2], &[2, 1, 0]] {
        let mut p = vec![0, 1, 0x03, token.len() as u8];
        p.extend_from_slice(token);
        let e = decode_err(0x2, &p);
        assert_eq!(
            e,
            DecodeError::KeyValueFormatting { key: 0x03 },
            "{token:?}"
        );
        assert_eq!(
            e.session_error_code(),
            Some(SessionErrorCode::KeyValueFormattingError)
        );
    }
    // Namespace limits: 33 fields; an empty field; 4097 bytes.
    let mut p = vec![33];
    for _ in 0..33 {
        p.extend_from_slice(&[1, b'x']);
    }
    assert_eq!(
        decode_err(0x8, &p),
        DecodeError::TooLong {
            field: "track namespace fields",
            limit: 32,
            actual: 33
        }
    );
    assert_eq!(decode_err(0x8, &[1, 0]), DecodeError::EmptyNamespaceField);
    let mut p = vec![2, 0x8f, 0xff]; // field of 4095 bytes
    p.extend(std::iter::repeat_n(b'x', 4095));
    p.extend_from_slice(&[2, b'y', b'z']);
    assert!(matches!(
        decode_err(0x8, &p),
        DecodeError::TooLong {
            field: "track namespace",
            ..
        }
    ));
    // Full Track Name over 4096 (4095-byte field + 2-byte name).
    let mut p = vec![0, 1, 0x8f, 0xff];
    p.extend(std::iter::repeat_n(b'x', 4095));
    p.extend_from_slice(&[2, b'y', b'z', 0]);
    assert!(matches!(
        decode_err(0x3, &p),
        DecodeError::TooLong {
            field: "full track name",
            ..
        }
    ));
    // Reason phrase over 1024; GOAWAY URI over 8192.
    let mut p = vec![0, 0, 0x84, 0x01];
    p.extend(std::iter::repeat_n(b'r', 1025));
    assert!(matches!(
        decode_err(0xB, &p),
        DecodeError::TooLong {
            field: "reason phrase",
            ..
        }
    ));
    let mut p = vec![0xA0, 0x01];
    p.extend(std::iter::repeat_n(b'u', 8193));
    p.push(0);
    assert!(matches!(
        decode_err(0x10, &p),
        DecodeError::TooLong {
            field: "new session uri",
            ..
        }
    ));
    // Fetch type and End Of Track out of range.
    assert_eq!(
        decode_err(0x16, &[0, 4, 0]),
        DecodeError::InvalidValue {
            field: "fetch type",
            value: 4
        }
    );
    assert_eq!(
        decode_err(0x18, &[2, 0, 0, 0]),
        DecodeError::InvalidValue {
            field: "end of track",
            value: 2
        }
    );
    // Setup option value over 65535 bytes cannot even be framed; a KVP
    // type delta overflow in SETUP is a PROTOCOL_VIOLATION.
    let mut p = vec![0x01, 0];
    varint::encode(u64::MAX, &mut p);
    p.push(0);
    assert_eq!(
        decode_err(0x2F00, &p),
        DecodeError::Overflow {
            field: "setup option type"
        }
    );
    assert_eq!(
        DecodeError::Overflow { field: "x" }.session_error_code(),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn control_message_encode_errors() {
    // Payload over 65535 bytes.
    let big = Publish {
        request_id: 0,
        track: track(&["a"], "b"),
        track_alias: 0,
        parameters: Parameters::default(),
        track_properties: Properties::from_pairs(
            (0..3)
                .map(|i| KeyValuePair::bytes(2 * i + 1, vec![0u8; 30_000]).unwrap())
                .collect(),
        )
        .unwrap(),
    };
    let mut out = Vec::new();
    assert!(matches!(
        ControlMessage::from(big).encode(&mut out),
        Err(EncodeError::TooLong { limit: 65535, .. })
    ));
    assert!(out.is_empty(), "nothing written on error");
    // Parameter not allowed.
    let m = Subscribe {
        request_id: 0,
        track: FullTrackName::default(),
        parameters: Parameters {
            fill_timeout: Some(1),
            ..Parameters::default()
        },
    };
    assert_eq!(
        ControlMessage::from(m).encode(&mut out),
        Err(EncodeError::ParameterNotAllowed {
            parameter: 0x0A,
            message: MessageType::Subscribe
        })
    );
    // Redirect without the REDIRECT code and the reverse.
    let mut e = RequestError {
        error_code: RequestErrorCode::Timeout,
        retry_interval: 0,
        reason: ReasonPhrase::empty(),
        redirect: Some(Redirect::default()),
    };
    assert!(ControlMessage::from(e.clone()).encode(&mut out).is_err());
    e.error_code = RequestErrorCode::Redirect;
    e.redirect = None;
    assert!(ControlMessage::from(e).encode(&mut out).is_err());
    // Filter end group overflow.
    let m = RequestUpdate {
        request_id: 0,
        parameters: Parameters {
            subscription_filter: Some(SubscriptionFilter::AbsoluteRange {
                start: Location::new(u64::MAX, 0),
                end_group_delta: 1,
            }),
            ..Parameters::default()
        },
    };
    assert!(ControlMessage::from(m).encode(&mut out).is_err());
    // GOAWAY URI too long.
    let g = GoAway {
        new_session_uri: Bytes::from(vec![b'u'; 8193]),
        timeout: 0,
        request_id: None,
    };
    assert!(ControlMessage::from(g).encode(&mut out).is_err());
    assert!(out.is_empty());
    // Validated constructors.
    assert!(ReasonPhrase::new(vec![0u8; 1025]).is_err());
    assert_eq!(
        ReasonPhrase::truncated(&"ü".repeat(1000)).as_bytes().len(),
        1024
    );
    assert!(TrackNamespace::new((0..33).map(|_| b("x"))).is_err());
    assert!(TrackNamespace::new([b("")]).is_err());
    assert!(TrackNamespace::new([Bytes::from(vec![1u8; 4097])]).is_err());
    assert!(FullTrackName::new(
        TrackNamespace::new([Bytes::from(vec![1u8; 4096])]).unwrap(),
        b("x")
    )
    .is_err());
    assert!(KeyValuePair::varint(1, 0).is_err());
    assert!(KeyValuePair::bytes(2, Bytes::new()).is_err());
    assert!(KeyValuePair::bytes(1, vec![0u8; 65536]).is_err());
}

#[test]
fn namespace_helpers() {
    let full = ns(&["example.com", "meeting=123", "participant=100"]);
    let prefix = ns(&["example.com", "meeting=123"]);
    assert!(full.starts_with(&prefix));
    let suffix = full.strip_prefix(&prefix).unwrap();
    assert_eq!(suffix, ns(&["participant=100"]));
    assert_eq!(suffix.with_prefix(&prefix).unwrap(), full);
    assert_eq!(prefix.strip_prefix(&full), None);
    assert_eq!(
        full.to_string(),
        "example.2ecom-meeting.3d123-participant.3d100"
    );
}

#[test]
fn properties_accessors() {
    let p = props();
    assert_eq!(p.dynamic_groups(), Ok(Some(true)));
    assert_eq!(p.object_delivery_timeout(), Ok(Some(7)));
    assert_eq!(p.subgroup_delivery_timeout(), Ok(None));
    assert_eq!(p.default_publisher_priority(), Ok(None));
    assert_eq!(
        p.prior_group_id_gap(),
        Ok(Some(2)),
        "found inside Immutable Properties"
    );
    assert_eq!(
        p.mandatory_track_properties().collect::<Vec<_>>(),
        vec![0x4001]
    );
    assert_eq!(p.get(0x9E).count(), 2);
    let mut q = p.clone();
    assert_eq!(q.remove(0x9E), 2);
    // Out-of-range values.
    let bad = |k, v| Properties::from_pairs(vec![KeyValuePair::varint(k, v).unwrap()]).unwrap();
    assert!(bad(property_type::DEFAULT_PUBLISHER_PRIORITY, 256)
        .default_publisher_priority()
        .is_err());
    assert_eq!(
        bad(property_type::DEFAULT_PUBLISHER_PRIORITY, 255).default_publisher_priority(),
        Ok(Some(255))
    );
    assert!(bad(property_type::DEFAULT_PUBLISHER_GROUP_ORDER, 0)
        .default_publisher_group_order()
        .is_err());
    assert!(bad(property_type::DYNAMIC_GROUPS, 2)
        .dynamic_groups()
        .is_err());
    // Malformed-track conditions of §12.7-12.9.
    let two_gaps = Properties::from_pairs(vec![
        KeyValuePair::varint(property_type::PRIOR_OBJECT_ID_GAP, 1).unwrap(),
        KeyValuePair::varint(property_type::PRIOR_OBJECT_ID_GAP, 2).unwrap(),
    ])
    .unwrap();
    assert!(matches!(
        two_gaps.prior_object_id_gap(),
        Err(DecodeError::MalformedTrack { .. })
    ));
    let nested =
        Properties::from_pairs(vec![KeyValuePair::bytes(0x0B, vec![0x0B, 0]).unwrap()]).unwrap();
    let e = nested.immutable().unwrap_err();
    assert!(matches!(e, DecodeError::MalformedTrack { .. }));
    assert_eq!(e.session_error_code(), None);
    let garbage =
        Properties::from_pairs(vec![KeyValuePair::bytes(0x0B, vec![0x01, 5]).unwrap()]).unwrap();
    assert!(matches!(
        garbage.immutable(),
        Err(DecodeError::MalformedTrack { .. })
    ));
    assert!(Properties::immutable_pair(&nested).is_err());
    // Object-level checks.
    assert!(
        matches!(
            p.validate_object_properties(),
            Err(DecodeError::MalformedTrack { .. })
        ),
        "0x4001"
    );
    let mut ok = p.clone();
    ok.remove(0x4001);
    assert_eq!(ok.validate_object_properties(), Ok(()));
    assert!(two_gaps.validate_object_properties().is_err());
    let inner_mandatory = Properties::from_pairs(vec![Properties::immutable_pair(
        &Properties::from_pairs(vec![KeyValuePair::varint(0x4000, 1).unwrap()]).unwrap(),
    )
    .unwrap()])
    .unwrap();
    assert!(inner_mandatory.validate_object_properties().is_err());
    assert!(properties::is_application_property(0x3A));
    assert!(properties::is_application_property(0x3800));
    assert!(!properties::is_application_property(0x40));
}

fn sub_header(has_properties: bool, subgroup_id: SubgroupId) -> SubgroupHeader {
    SubgroupHeader {
        track_alias: 1,
        group_id: 2,
        subgroup_id,
        publisher_priority: Some(3),
        has_properties,
        end_of_group: true,
        first_object: true,
    }
}

#[test]
fn subgroup_stream_roundtrip_all_modes() {
    for has_properties in [false, true] {
        for subgroup_id in [
            SubgroupId::Zero,
            SubgroupId::FirstObjectId,
            SubgroupId::Explicit(9),
        ] {
            for priority in [None, Some(0)] {
                let mut header = sub_header(has_properties, subgroup_id);
                header.publisher_priority = priority;
                let objects = vec![
                    SubgroupObject {
                        object_id: 5,
                        properties: if has_properties {
                            props()
                        } else {
                            Properties::new()
                        },
                        status: ObjectStatus::Normal,
                        payload: b("first"),
                    },
                    SubgroupObject {
                        object_id: 6,
                        properties: Properties::new(),
                        status: ObjectStatus::Normal,
                        payload: Bytes::new(),
                    },
                    SubgroupObject {
                        object_id: 100,
                        properties: Properties::new(),
                        status: ObjectStatus::Normal,
                        payload: b("x"),
                    },
                    SubgroupObject {
                        object_id: 101,
                        properties: Properties::new(),
                        status: ObjectStatus::EndOfGroup,
                        payload: Bytes::new(),
                    },
                    SubgroupObject {
                        object_id: u64::MAX,
                        properties: Properties::new(),
                        status: ObjectStatus::EndOfTrack,
                        payload: Bytes::new(),
                    },
                ];
                let mut wire = BytesMut::new();
                let mut enc = SubgroupEncoder::new(header);
                UniStreamHeader::Subgroup(header).encode(&mut wire).unwrap();
                for o in &objects {
                    enc.encode_object(o, &mut wire).unwrap();
                }
                let mut buf = wire.clone().freeze();
                let UniStreamHeader::Subgroup(h) = UniStreamHeader::decode(&mut buf).unwrap()
                else {
                    panic!()
                };
                assert_eq!(h, header);
                let mut dec = SubgroupDecoder::new(h);
                if subgroup_id == SubgroupId::FirstObjectId {
                    assert_eq!(dec.subgroup_id(), None);
                }
                for o in &objects {
                    assert_eq!(&dec.decode_object(&mut buf).unwrap(), o);
                }
                assert_eq!(dec.decode_object(&mut buf), Err(DecodeError::Incomplete));
                assert_eq!(
                    dec.subgroup_id(),
                    Some(match subgroup_id {
                        SubgroupId::Zero => 0,
                        SubgroupId::FirstObjectId => 5,
                        SubgroupId::Explicit(x) => x,
                    })
                );
                // Header-only decoding, payloads consumed by the caller.
                let mut buf = wire.clone().freeze();
                UniStreamHeader::decode(&mut buf).unwrap();
                let mut dec = SubgroupDecoder::new(h);
                for o in &objects {
                    let oh = dec.decode_object_header(&mut buf).unwrap();
                    assert_eq!(oh.object_id, o.object_id);
                    assert_eq!(oh.payload_len, o.payload.len() as u64);
                    assert_eq!(buf.split_to(oh.payload_len as usize), o.payload);
                }
                assert!(buf.is_empty());
            }
        }
    }
}

#[test]
fn subgroup_errors() {
    let h = sub_header(false, SubgroupId::Zero);
    // Object ID overflow: prev + delta + 1 > 2^64-1.
    let mut dec = SubgroupDecoder::new(h);
    let mut first = Vec::new();
    varint::encode(u64::MAX, &mut first);
    first.extend_from_slice(&[1, b'a', 0, 1, b'b']);
    let mut buf = Bytes::from(first);
    dec.decode_object(&mut buf).unwrap();
    assert_eq!(
        dec.decode_object(&mut buf),
        Err(DecodeError::Overflow { field: "object id" })
    );
    // Unknown object status.
    let mut dec = SubgroupDecoder::new(h);
    assert_eq!(
        dec.decode_object(&mut Bytes::from_static(&[0, 0, 1])),
        Err(DecodeError::InvalidValue {
            field: "object status",
            value: 1
        })
    );
    // Properties on a status object.
    let mut dec = SubgroupDecoder::new(sub_header(true, SubgroupId::Zero));
    assert_eq!(
        dec.decode_object(&mut Bytes::from_static(&[0, 2, 0x02, 1, 0, 3])),
        Err(DecodeError::PropertiesOnStatusObject)
    );
    // Properties block shorter than its pairs.
    let mut dec = SubgroupDecoder::new(sub_header(true, SubgroupId::Zero));
    assert_eq!(
        dec.decode_object(&mut Bytes::from_static(&[0, 1, 0x03, 1, 0])),
        Err(DecodeError::Truncated {
            context: "object properties"
        })
    );
    // Encoder checks.
    let mut enc = SubgroupEncoder::new(h);
    let mut out = Vec::new();
    let mut o = SubgroupObject {
        object_id: 3,
        ..Default::default()
    };
    enc.encode_object(&o, &mut out).unwrap();
    assert!(
        enc.encode_object(&o, &mut out).is_err(),
        "object IDs must increase"
    );
    o.object_id = 4;
    o.properties = props();
    assert!(
        enc.encode_object(&o, &mut out).is_err(),
        "no PROPERTIES bit"
    );
    o.properties = Properties::new();
    o.status = ObjectStatus::EndOfGroup;
    o.payload = b("x");
    assert!(
        enc.encode_object(&o, &mut out).is_err(),
        "status object with payload"
    );
}

#[test]
fn datagram_roundtrip_and_errors() {
    let variants = [
        ObjectDatagram::default(),
        ObjectDatagram {
            track_alias: 7,
            group_id: 8,
            object_id: 9,
            publisher_priority: Some(1),
            end_of_group: true,
            properties: props(),
            content: DatagramContent::Payload(b("hello")),
        },
        ObjectDatagram {
            track_alias: 7,
            group_id: 8,
            object_id: 0,
            publisher_priority: None,
            end_of_group: false,
            properties: props(),
            content: DatagramContent::Status(ObjectStatus::Normal),
        },
        ObjectDatagram {
            track_alias: u64::MAX,
            group_id: u64::MAX,
            object_id: u64::MAX,
            publisher_priority: Some(255),
            end_of_group: false,
            properties: Properties::new(),
            content: DatagramContent::Status(ObjectStatus::EndOfTrack),
        },
    ];
    for d in variants {
        let mut out = Vec::new();
        d.encode(&mut out).unwrap();
        let wire = Bytes::from(out);
        assert_eq!(Datagram::decode(&wire), Ok(Datagram::Object(d.clone())));
        if let DatagramContent::Payload(p) = Datagram::decode(&wire)
            .map(|x| match x {
                Datagram::Object(o) => o.content,
                _ => unreachable!(),
            })
            .unwrap()
        {
            // Zero-copy: the payload points into the datagram.
            let range = wire.as_ptr_range();
            assert!(p.is_empty() || range.contains(&p.as_ptr()));
        }
    }
    // Properties bit with length 0.
    assert!(matches!(
        Datagram::decode(&Bytes::from_static(&[0x01, 1, 2, 3, 4, 0])),
        Err(DecodeError::InvalidValue { .. })
    ));
    // Status + properties + non-Normal status.
    assert_eq!(
        Datagram::decode(&Bytes::from_static(&[0x2D, 1, 2, 2, 0x3C, 1, 3])),
        Err(DecodeError::PropertiesOnStatusObject)
    );
    // Trailing bytes after a status.
    assert!(matches!(
        Datagram::decode(&Bytes::from_static(&[0x2C, 1, 2, 3, 9])),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // Truncated header.
    assert_eq!(
        Datagram::decode(&Bytes::from_static(&[0x00, 1])),
        Err(DecodeError::Truncated {
            context: "datagram"
        })
    );
    // Encoder: status with END_OF_GROUP; non-Normal status with properties.
    let mut d = ObjectDatagram {
        end_of_group: true,
        content: DatagramContent::Status(ObjectStatus::Normal),
        ..Default::default()
    };
    assert!(d.encode(&mut Vec::new()).is_err());
    d.end_of_group = false;
    d.content = DatagramContent::Status(ObjectStatus::EndOfGroup);
    d.properties = props();
    assert!(d.encode(&mut Vec::new()).is_err());
}

fn fobj(g: u64, o: u64, sub: Option<u64>, prio: u8, payload: &str) -> FetchItem {
    FetchItem::Object(FetchObject {
        location: Location::new(g, o),
        subgroup_id: sub,
        publisher_priority: prio,
        properties: Properties::new(),
        payload: b(payload),
    })
}

fn eor(kind: EndOfRangeKind, g: u64, o: u64) -> FetchItem {
    FetchItem::EndOfRange(EndOfRange {
        kind,
        location: Location::new(g, o),
    })
}

fn fetch_roundtrip(order: GroupOrder, items: &[FetchItem]) {
    let mut wire = BytesMut::new();
    UniStreamHeader::Fetch(FetchHeader { request_id: 5 })
        .encode(&mut wire)
        .unwrap();
    let mut enc = FetchEncoder::new(order);
    for it in items {
        enc.encode_item(it, &mut wire).unwrap();
    }
    let mut buf = wire.freeze();
    assert_eq!(
        UniStreamHeader::decode(&mut buf),
        Ok(UniStreamHeader::Fetch(FetchHeader { request_id: 5 }))
    );
    let all = buf.clone();
    let mut dec = FetchDecoder::new(order);
    for it in items {
        assert_eq!(&dec.decode_item(&mut buf).unwrap(), it);
    }
    assert_eq!(dec.decode_item(&mut buf), Err(DecodeError::Incomplete));
    // Header-only decoding.
    let mut buf = all;
    let mut dec = FetchDecoder::new(order);
    for it in items {
        match (dec.decode_item_header(&mut buf).unwrap(), it) {
            (FetchItemHeader::Object(h), FetchItem::Object(o)) => {
                assert_eq!(h.location, o.location);
                assert_eq!(h.subgroup_id, o.subgroup_id);
                assert_eq!(buf.split_to(h.payload_len as usize), o.payload);
            }
            (FetchItemHeader::EndOfRange(e), FetchItem::EndOfRange(x)) => assert_eq!(&e, x),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn fetch_stream_roundtrips() {
    use EndOfRangeKind::*;
    fetch_roundtrip(GroupOrder::Ascending, &[]);
    fetch_roundtrip(
        GroupOrder::Ascending,
        &[
            fobj(0, 0, Some(0), 1, "a"),
            fobj(0, 1, Some(0), 1, "b"),
            fobj(0, 5, Some(1), 2, "c"),
            fobj(0, 6, Some(2), 2, ""),
            fobj(0, 7, None, 2, "dgram"),
            fobj(0, 8, Some(7), 2, ""),
            eor(NonExistent, 0, 20),
            eor(Unknown, 3, 4),
            fobj(3, 5, Some(7), 2, "after"),
            fobj(9, 0, Some(8), 2, ""),
            fobj(u64::MAX, u64::MAX, Some(u64::MAX), 0, "end"),
        ],
    );
    fetch_roundtrip(
        GroupOrder::Descending,
        &[
            eor(Unknown, 100, 3),
            fobj(100, 4, Some(0), 9, "x"),
            fobj(50, 0, Some(0), 9, "y"),
            fobj(49, 2, Some(1), 9, "z"),
            fobj(0, 0, Some(2), 9, ""),
        ],
    );
}

#[test]
fn fetch_errors() {
    let dec = || FetchDecoder::new(GroupOrder::Ascending);
    // First object referring to prior fields.
    for (flags, field) in [
        (0x14u8, "group id"),         // no group delta
        (0x18, "object id"),          // no object delta
        (0x0C, "publisher priority"), // no priority
        (0x1D, "subgroup id"),        // prior subgroup
        (0x1E, "subgroup id"),        // prior subgroup + 1
    ] {
        let mut wire = vec![flags];
        if flags & 0x08 != 0 {
            wire.push(1);
        }
        if flags & 0x04 != 0 {
            wire.push(1);
        }
        if flags & 0x10 != 0 {
            wire.push(1);
        }
        wire.push(0);
        assert_eq!(
            dec().decode_item(&mut Bytes::from(wire)),
            Err(DecodeError::NoPriorObject { field }),
            "{flags:#x}"
        );
    }
    // After an End of Range the prior subgroup and priority still come from
    // an actual object.
    let mut d = dec();
    let mut buf = Bytes::from_static(&[0x80, 0x8C, 1, 1, 0x01, 0]);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::NoPriorObject {
            field: "subgroup id"
        })
    );
    // After a datagram object there is no prior Subgroup ID.
    let mut d = dec();
    let mut buf = Bytes::from_static(&[0x5C, 1, 1, 1, 0, 0x01, 0]);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::NoPriorObject {
            field: "subgroup id"
        })
    );
    // Invalid flags values.
    for f in [0x80u64, 0x8D, 0x10D, 0x200, u64::MAX] {
        let mut wire = Vec::new();
        varint::encode(f, &mut wire);
        wire.extend_from_slice(&[0; 4]);
        assert_eq!(
            dec().decode_item(&mut Bytes::from(wire)),
            Err(DecodeError::InvalidValue {
                field: "fetch serialization flags",
                value: f
            })
        );
    }
    // Group ID going below 0 (descending) and above 2^64-1 (ascending).
    let mut d = FetchDecoder::new(GroupOrder::Descending);
    let mut buf = Bytes::from_static(&[0x1C, 1, 0, 0, 0, 0x08, 1, 0]);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::Overflow { field: "group id" })
    );
    let mut first = vec![0x1C];
    varint::encode(u64::MAX, &mut first);
    first.extend_from_slice(&[0, 0, 0, 0x08, 0, 0]);
    let mut d = dec();
    let mut buf = Bytes::from(first);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::Overflow { field: "group id" })
    );
    // Object ID overflow.
    let mut first = vec![0x1C, 0];
    varint::encode(u64::MAX, &mut first);
    first.extend_from_slice(&[0, 0, 0x00, 0]);
    let mut d = dec();
    let mut buf = Bytes::from(first);
    d.decode_item(&mut buf).unwrap();
    assert_eq!(
        d.decode_item(&mut buf),
        Err(DecodeError::Overflow { field: "object id" })
    );
    // Encoder: groups against the order, objects going back.
    let mut enc = FetchEncoder::new(GroupOrder::Ascending);
    let mut out = Vec::new();
    enc.encode_item(&fobj(5, 5, Some(0), 0, ""), &mut out)
        .unwrap();
    assert!(enc
        .encode_item(&fobj(4, 0, Some(0), 0, ""), &mut out)
        .is_err());
    assert!(enc
        .encode_item(&fobj(5, 4, Some(0), 0, ""), &mut out)
        .is_err());
    let mut enc = FetchEncoder::new(GroupOrder::Descending);
    enc.encode_item(&fobj(5, 5, Some(0), 0, ""), &mut out)
        .unwrap();
    assert!(enc
        .encode_item(&fobj(6, 0, Some(0), 0, ""), &mut out)
        .is_err());
}

#[test]
fn stream_type_peek() {
    let mut wire = Vec::new();
    ControlMessage::Setup(Setup::default())
        .encode(&mut wire)
        .unwrap();
    let b = Bytes::from(wire.clone());
    assert_eq!(StreamType::peek(&b), Ok(StreamType::Control));
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x05])),
        Ok(StreamType::Fetch)
    );
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x14])),
        Ok(StreamType::Subgroup(0x14))
    );
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x80])),
        Err(DecodeError::Incomplete)
    );
    assert_eq!(
        StreamType::peek(&Bytes::from_static(&[0x06])),
        Err(DecodeError::UnknownStreamType(6))
    );
    // A control stream header is the whole SETUP message.
    let mut b = Bytes::from(wire);
    assert_eq!(
        UniStreamHeader::decode(&mut b),
        Ok(UniStreamHeader::Control(Setup::default()))
    );
    // Split across chunks.
    let c = Bytes::from_static(&[0xAF]).chain(Bytes::from_static(&[0x00, 0x00, 0x00]));
    assert_eq!(StreamType::peek(&c), Ok(StreamType::Control));
}
