//! Property tests: random values round-trip, random and mutated bytes never
//! panic, and every truncation of a valid encoding is reported as
//! incomplete (streams) or rejected (datagrams) instead of decoding wrongly.

use bytes::{Buf, Bytes, BytesMut};
use moqt::params::param_type;
use moqt::*;
use proptest::collection::vec;
use proptest::prelude::*;

// ------------------------------------------------------------ strategies

fn int() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..128u64,
        2 => 0..20_000u64,
        2 => any::<u64>(),
        1 => (1..=9usize).prop_map(|l| varint::max_value(l).unwrap()),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn namespace() -> impl Strategy<Value = TrackNamespace> {
    prop_oneof![
        3 => vec(vec(any::<u8>(), 1..=6), 0..=4),
        1 => vec(vec(any::<u8>(), 1..=3), 0..=32),
    ]
    .prop_map(|f| TrackNamespace::new(f.into_iter().map(Bytes::from)).unwrap())
}

fn full_track_name() -> impl Strategy<Value = FullTrackName> {
    (namespace(), bytes(12)).prop_map(|(n, b)| FullTrackName::new(n, b).unwrap())
}

fn location() -> impl Strategy<Value = Location> {
    (int(), int()).prop_map(|(g, o)| Location::new(g, o))
}

fn auth_token() -> impl Strategy<Value = AuthToken> {
    prop_oneof![
        int().prop_map(|alias| AuthToken::Delete { alias }),
        (int(), int(), bytes(12)).prop_map(|(alias, token_type, value)| AuthToken::Register {
            alias,
            token_type,
            value
        }),
        int().prop_map(|alias| AuthToken::UseAlias { alias }),
        (int(), bytes(12))
            .prop_map(|(token_type, value)| AuthToken::UseValue { token_type, value }),
    ]
}

fn filter() -> impl Strategy<Value = SubscriptionFilter> {
    prop_oneof![
        Just(SubscriptionFilter::NextGroupStart),
        Just(SubscriptionFilter::LargestObject),
        location().prop_map(|start| SubscriptionFilter::AbsoluteStart { start }),
        (location(), int()).prop_map(|(start, d)| SubscriptionFilter::AbsoluteRange {
            start,
            end_group_delta: d.min(u64::MAX - start.group),
        }),
    ]
}

fn group_order() -> impl Strategy<Value = GroupOrder> {
    prop_oneof![Just(GroupOrder::Ascending), Just(GroupOrder::Descending)]
}

fn params(msg: MessageType) -> impl Strategy<Value = Parameters> {
    let a = (
        proptest::option::of(int()),
        vec(auth_token(), 0..3),
        proptest::option::of(int()),
        proptest::option::of(int()),
        proptest::option::of(int()),
        proptest::option::of(location()),
        proptest::option::of(int()),
    );
    let b = (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(filter()),
        proptest::option::of(group_order()),
        proptest::option::of(int()),
        proptest::option::of(namespace()),
    );
    (a, b).prop_map(
        move |((odt, tokens, rdv, sdt, exp, lo, fill), (fwd, prio, flt, go, ngr, tnp))| {
            let ok = |t| parameter_allowed(t, msg);
            Parameters {
                object_delivery_timeout: odt.filter(|_| ok(param_type::OBJECT_DELIVERY_TIMEOUT)),
                authorization_tokens: if ok(param_type::AUTHORIZATION_TOKEN) {
                    tokens
                } else {
                    vec![]
                },
                rendezvous_timeout: rdv.filter(|_| ok(param_type::RENDEZVOUS_TIMEOUT)),
                subgroup_delivery_timeout: sdt
                    .filter(|_| ok(param_type::SUBGROUP_DELIVERY_TIMEOUT)),
                expires: exp.filter(|_| ok(param_type::EXPIRES)),
                largest_object: lo.filter(|_| ok(param_type::LARGEST_OBJECT)),
                fill_timeout: fill.filter(|_| ok(param_type::FILL_TIMEOUT)),
                forward: fwd.filter(|_| ok(param_type::FORWARD)),
                subscriber_priority: prio.filter(|_| ok(param_type::SUBSCRIBER_PRIORITY)),
                subscription_filter: flt.filter(|_| ok(param_type::SUBSCRIPTION_FILTER)),
                group_order: go.filter(|_| ok(param_type::GROUP_ORDER)),
                new_group_request: ngr.filter(|_| ok(param_type::NEW_GROUP_REQUEST)),
                track_namespace_prefix: tnp.filter(|_| ok(param_type::TRACK_NAMESPACE_PREFIX)),
            }
        },
    )
}

fn key() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..0x100u64, 1 => 0x3800..0x8000u64, 1 => any::<u64>()]
}

fn kvp() -> impl Strategy<Value = KeyValuePair> {
    prop_oneof![
        (key(), int()).prop_map(|(k, v)| KeyValuePair::varint(k & !1, v).unwrap()),
        (key(), bytes(16)).prop_map(|(k, b)| KeyValuePair::bytes(k | 1, b).unwrap()),
    ]
}

fn properties() -> impl Strategy<Value = Properties> {
    vec(kvp(), 0..6).prop_map(|v| Properties::from_pairs(v).unwrap())
}

fn reason() -> impl Strategy<Value = ReasonPhrase> {
    prop_oneof![
        5 => bytes(40),
        1 => vec(any::<u8>(), MAX_REASON_PHRASE_LEN..=MAX_REASON_PHRASE_LEN).prop_map(Bytes::from),
    ]
    .prop_map(|b| ReasonPhrase::new(b).unwrap())
}

fn setup() -> impl Strategy<Value = Setup> {
    let known = [1u64, 3, 4, 5, 7];
    let option = prop_oneof![
        bytes(20).prop_map(SetupOption::Path),
        auth_token().prop_map(SetupOption::AuthorizationToken),
        int().prop_map(SetupOption::MaxAuthTokenCacheSize),
        bytes(20).prop_map(SetupOption::Authority),
        bytes(20).prop_map(SetupOption::MoqtImplementation),
        kvp()
            .prop_filter("unknown", move |kv| !known.contains(&kv.key))
            .prop_map(SetupOption::Unknown),
    ];
    vec(option, 0..8).prop_map(|mut options| {
        options.sort_by_key(SetupOption::option_type);
        Setup { options }
    })
}

fn control_message() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        setup().prop_map(ControlMessage::Setup),
        (bytes(30), int(), proptest::option::of(int())).prop_map(
            |(new_session_uri, timeout, request_id)| {
                GoAway {
                    new_session_uri,
                    timeout,
                    request_id,
                }
                .into()
            }
        ),
        (params(MessageType::RequestOk), properties()).prop_map(
            |(parameters, track_properties)| {
                RequestOk {
                    parameters,
                    track_properties,
                }
                .into()
            }
        ),
        (params(MessageType::PublishOk), properties()).prop_map(
            |(parameters, track_properties)| {
                ControlMessage::PublishOk(RequestOk {
                    parameters,
                    track_properties,
                })
            }
        ),
        (int(), int(), reason(), bytes(20), full_track_name()).prop_map(
            |(code, retry_interval, reason, uri, track)| {
                let error_code = RequestErrorCode::from_code(code % 0x40);
                let redirect = (error_code == RequestErrorCode::Redirect).then(|| Redirect {
                    connect_uri: uri,
                    track,
                });
                RequestError {
                    error_code,
                    retry_interval,
                    reason,
                    redirect,
                }
                .into()
            }
        ),
        (int(), full_track_name(), params(MessageType::Subscribe)).prop_map(
            |(request_id, track, parameters)| {
                Subscribe {
                    request_id,
                    track,
                    parameters,
                }
                .into()
            }
        ),
        (int(), params(MessageType::SubscribeOk), properties()).prop_map(
            |(track_alias, parameters, track_properties)| SubscribeOk {
                track_alias,
                parameters,
                track_properties,
            }
            .into()
        ),
        (int(), params(MessageType::RequestUpdate)).prop_map(|(request_id, parameters)| {
            RequestUpdate {
                request_id,
                parameters,
            }
            .into()
        }),
        (
            int(),
            full_track_name(),
            int(),
            params(MessageType::Publish),
            properties()
        )
            .prop_map(
                |(request_id, track, track_alias, parameters, track_properties)| Publish {
                    request_id,
                    track,
                    track_alias,
                    parameters,
                    track_properties,
                }
                .into()
            ),
        (int(), int(), reason()).prop_map(|(code, stream_count, reason)| {
            PublishDone {
                status_code: PublishDoneCode::from_code(code),
                stream_count,
                reason,
            }
            .into()
        }),
        (int(), fetch_type(), params(MessageType::Fetch)).prop_map(
            |(request_id, fetch_type, parameters)| {
                Fetch {
                    request_id,
                    fetch_type,
                    parameters,
                }
                .into()
            }
        ),
        (any::<bool>(), location(), properties()).prop_map(
            |(end_of_track, end_location, track_properties)| {
                FetchOk {
                    end_of_track,
                    end_location,
                    parameters: Parameters::default(),
                    track_properties,
                }
                .into()
            }
        ),
        (int(), full_track_name(), params(MessageType::TrackStatus)).prop_map(
            |(request_id, track, parameters)| {
                TrackStatus {
                    request_id,
                    track,
                    parameters,
                }
                .into()
            }
        ),
        (int(), namespace(), params(MessageType::PublishNamespace)).prop_map(
            |(request_id, namespace, parameters)| {
                PublishNamespace {
                    request_id,
                    namespace,
                    parameters,
                }
                .into()
            }
        ),
        namespace().prop_map(|suffix| Namespace { suffix }.into()),
        namespace().prop_map(|suffix| NamespaceDone { suffix }.into()),
        (int(), namespace(), params(MessageType::SubscribeNamespace)).prop_map(
            |(request_id, prefix, parameters)| {
                SubscribeNamespace {
                    request_id,
                    prefix,
                    parameters,
                }
                .into()
            }
        ),
        (int(), namespace(), params(MessageType::SubscribeTracks)).prop_map(
            |(request_id, prefix, parameters)| {
                SubscribeTracks {
                    request_id,
                    prefix,
                    parameters,
                }
                .into()
            }
        ),
        full_track_name().prop_map(|track| PublishBlocked { track }.into()),
    ]
}

fn fetch_type() -> impl Strategy<Value = FetchType> {
    let joining = || {
        (int(), int()).prop_map(|(joining_request_id, joining_start)| JoiningFetch {
            joining_request_id,
            joining_start,
        })
    };
    prop_oneof![
        (full_track_name(), location(), location()).prop_map(|(track, start, end)| {
            FetchType::Standalone(StandaloneFetch { track, start, end })
        }),
        joining().prop_map(FetchType::RelativeJoining),
        joining().prop_map(FetchType::AbsoluteJoining),
    ]
}

fn subgroup_header() -> impl Strategy<Value = SubgroupHeader> {
    let id = prop_oneof![
        Just(SubgroupId::Zero),
        Just(SubgroupId::FirstObjectId),
        int().prop_map(SubgroupId::Explicit)
    ];
    (
        int(),
        int(),
        id,
        proptest::option::of(any::<u8>()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                track_alias,
                group_id,
                subgroup_id,
                publisher_priority,
                has_properties,
                end_of_group,
                first_object,
            )| {
                SubgroupHeader {
                    track_alias,
                    group_id,
                    subgroup_id,
                    publisher_priority,
                    has_properties,
                    end_of_group,
                    first_object,
                }
            },
        )
}

fn status() -> impl Strategy<Value = ObjectStatus> {
    prop_oneof![
        Just(ObjectStatus::Normal),
        Just(ObjectStatus::EndOfGroup),
        Just(ObjectStatus::EndOfTrack)
    ]
}

/// A subgroup stream: header and objects with increasing IDs.
fn subgroup_stream() -> impl Strategy<Value = (SubgroupHeader, Vec<SubgroupObject>)> {
    let object = (int(), properties(), status(), bytes(24));
    (subgroup_header(), int(), vec(object, 0..8)).prop_map(|(header, first, objects)| {
        let mut out = Vec::new();
        let mut next = Some(first);
        for (gap, props, status, payload) in objects {
            let Some(id) = next else { break };
            let (properties, payload) = match status {
                ObjectStatus::Normal if header.has_properties => (props, payload),
                ObjectStatus::Normal => (Properties::new(), payload),
                _ => (Properties::new(), Bytes::new()),
            };
            out.push(SubgroupObject {
                object_id: id,
                properties,
                status,
                payload,
            });
            next = id.checked_add(gap % 1000).and_then(|v| v.checked_add(1));
        }
        (header, out)
    })
}

fn datagram() -> impl Strategy<Value = ObjectDatagram> {
    let content = prop_oneof![
        bytes(40).prop_map(DatagramContent::Payload),
        status().prop_map(DatagramContent::Status),
    ];
    (
        int(),
        int(),
        prop_oneof![Just(0u64), int()],
        proptest::option::of(any::<u8>()),
        any::<bool>(),
        properties(),
        content,
    )
        .prop_map(
            |(track_alias, group_id, object_id, publisher_priority, eog, props, content)| {
                let (end_of_group, properties) = match content {
                    DatagramContent::Payload(_) => (eog, props),
                    DatagramContent::Status(ObjectStatus::Normal) => (false, props),
                    DatagramContent::Status(_) => (false, Properties::new()),
                };
                ObjectDatagram {
                    track_alias,
                    group_id,
                    object_id,
                    publisher_priority,
                    end_of_group,
                    properties,
                    content,
                }
            },
        )
}

/// A fetch stream's items, ordered as `order` requires.
fn fetch_stream() -> impl Strategy<Value = (GroupOrder, Vec<FetchItem>)> {
    let step = (
        0..6u8,
        any::<bool>(),
        prop_oneof![1..4u64, int().prop_map(|g| g.max(1))],
        prop_oneof![0..4u64, int()],
        prop_oneof![
            Just(None),
            Just(Some(0u64)),
            (0..3u64).prop_map(Some),
            int().prop_map(Some)
        ],
        0..3u8,
        properties(),
        bytes(16),
    );
    (group_order(), int(), int(), vec(step, 0..10)).prop_map(|(order, g0, o0, steps)| {
        let mut items = Vec::new();
        let mut cur: Option<Location> = None;
        for (kind, same_group, gstep, ostep, subgroup_id, prio, properties, payload) in steps {
            let loc = match cur {
                None => Some(Location::new(g0, o0)),
                Some(c) if same_group => c
                    .object
                    .checked_add(ostep)
                    .map(|o| Location::new(c.group, o)),
                Some(c) => match order {
                    GroupOrder::Ascending => c.group.checked_add(gstep),
                    GroupOrder::Descending => c.group.checked_sub(gstep),
                }
                .map(|g| Location::new(g, ostep)),
            };
            let Some(location) = loc else { break };
            cur = Some(location);
            items.push(match kind {
                0 => FetchItem::EndOfRange(EndOfRange {
                    kind: EndOfRangeKind::NonExistent,
                    location,
                }),
                1 => FetchItem::EndOfRange(EndOfRange {
                    kind: EndOfRangeKind::Unknown,
                    location,
                }),
                _ => FetchItem::Object(FetchObject {
                    location,
                    subgroup_id,
                    publisher_priority: prio,
                    properties,
                    payload,
                }),
            });
        }
        (order, items)
    })
}

// ------------------------------------------------------------ helpers

fn encode_subgroup_stream(header: &SubgroupHeader, objects: &[SubgroupObject]) -> Bytes {
    let mut out = BytesMut::new();
    UniStreamHeader::Subgroup(*header).encode(&mut out).unwrap();
    let mut enc = SubgroupEncoder::new(*header);
    for o in objects {
        enc.encode_object(o, &mut out).unwrap();
    }
    out.freeze()
}

/// Read a subgroup stream the way a stream reader does: everything that is
/// complete, then stop at Incomplete. Other errors are returned.
fn read_subgroup_stream(
    mut buf: Bytes,
) -> Result<Option<(SubgroupHeader, Vec<SubgroupObject>)>, DecodeError> {
    let header = match UniStreamHeader::decode(&mut buf) {
        Ok(UniStreamHeader::Subgroup(h)) => h,
        Ok(other) => panic!("unexpected {other:?}"),
        Err(DecodeError::Incomplete) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut dec = SubgroupDecoder::new(header);
    let mut objects = Vec::new();
    loop {
        let before = buf.len();
        match dec.decode_object(&mut buf) {
            Ok(o) => objects.push(o),
            Err(DecodeError::Incomplete) => {
                assert_eq!(buf.len(), before, "Incomplete consumed bytes");
                return Ok(Some((header, objects)));
            }
            Err(e) => return Err(e),
        }
    }
}

fn encode_fetch_stream(order: GroupOrder, items: &[FetchItem]) -> Bytes {
    let mut out = BytesMut::new();
    FetchHeader { request_id: 1 }.encode(&mut out).unwrap();
    let mut enc = FetchEncoder::new(order);
    for it in items {
        enc.encode_item(it, &mut out).unwrap();
    }
    out.freeze()
}

fn read_fetch_stream(
    order: GroupOrder,
    mut buf: Bytes,
) -> Result<Option<Vec<FetchItem>>, DecodeError> {
    match UniStreamHeader::decode(&mut buf) {
        Ok(UniStreamHeader::Fetch(_)) => {}
        Ok(other) => panic!("unexpected {other:?}"),
        Err(DecodeError::Incomplete) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut dec = FetchDecoder::new(order);
    let mut items = Vec::new();
    loop {
        let before = buf.len();
        match dec.decode_item(&mut buf) {
            Ok(i) => items.push(i),
            Err(DecodeError::Incomplete) => {
                assert_eq!(buf.len(), before, "Incomplete consumed bytes");
                return Ok(Some(items));
            }
            Err(e) => return Err(e),
        }
    }
}

// ------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn varint_roundtrip(v in any::<u64>(), extra in 0..9usize) {
        let mut out = Vec::new();
        varint::encode(v, &mut out);
        prop_assert_eq!(out.len(), varint::encoded_len(v));
        prop_assert_eq!(varint::decode_slice(&out), Ok((v, out.len())));
        // Any longer encoding decodes to the same value.
        let len = (varint::encoded_len(v) + extra).min(9);
        let mut long = Vec::new();
        varint::encode_with_len(v, len, &mut long).unwrap();
        prop_assert_eq!(varint::decode_slice(&long), Ok((v, len)));
        for n in 0..long.len() {
            prop_assert_eq!(varint::decode_slice(&long[..n]), Err(DecodeError::Incomplete));
        }
    }

    #[test]
    fn control_message_roundtrip(msg in control_message()) {
        let wire = msg.to_bytes().unwrap();
        let mut buf = wire.clone();
        prop_assert_eq!(ControlMessage::decode(&mut buf).unwrap(), msg.clone());
        prop_assert!(buf.is_empty());
        let mut v: &[u8] = &wire;
        prop_assert_eq!(ControlMessage::decode(&mut v).unwrap(), msg);
    }

    #[test]
    fn control_message_truncations_are_incomplete(msg in control_message()) {
        let wire = msg.to_bytes().unwrap();
        for n in 0..wire.len() {
            let mut p = wire.slice(..n);
            prop_assert_eq!(ControlMessage::decode(&mut p), Err(DecodeError::Incomplete));
            prop_assert_eq!(p.len(), n);
        }
    }

    #[test]
    fn control_stream_fed_in_chunks(
        msgs in vec(control_message(), 1..5),
        cuts in vec(1..64usize, 1..40),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut rx = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cuts = cuts.into_iter().cycle();
        while pos < wire.len() {
            let n = cuts.next().unwrap().min(wire.len() - pos);
            rx.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(m) = ControlMessage::try_decode(&mut rx).unwrap() {
                got.push(m);
            }
        }
        prop_assert!(rx.is_empty());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn control_message_from_split_buffer(msg in control_message(), at in any::<prop::sample::Index>()) {
        let wire = msg.to_bytes().unwrap();
        let at = at.index(wire.len() + 1);
        let mut chain = wire.slice(..at).chain(wire.slice(at..));
        prop_assert_eq!(ControlMessage::decode(&mut chain).unwrap(), msg);
        prop_assert_eq!(chain.remaining(), 0);
        // Incomplete on a split buffer consumes nothing either.
        let mut short = wire.slice(..at / 2).chain(wire.slice(at / 2..wire.len() - 1));
        prop_assert_eq!(ControlMessage::decode(&mut short), Err(DecodeError::Incomplete));
        prop_assert_eq!(short.remaining(), wire.len() - 1);
    }

    #[test]
    fn subgroup_stream_roundtrip((header, objects) in subgroup_stream()) {
        let wire = encode_subgroup_stream(&header, &objects);
        prop_assert_eq!(read_subgroup_stream(wire).unwrap(), Some((header, objects)));
    }

    #[test]
    fn subgroup_stream_truncations((header, objects) in subgroup_stream()) {
        let wire = encode_subgroup_stream(&header, &objects);
        for n in 0..wire.len() {
            match read_subgroup_stream(wire.slice(..n)).unwrap() {
                None => {}
                Some((h, got)) => {
                    prop_assert_eq!(h, header);
                    prop_assert!(got.len() <= objects.len());
                    prop_assert_eq!(&got[..], &objects[..got.len()]);
                }
            }
        }
    }

    #[test]
    fn fetch_stream_roundtrip((order, items) in fetch_stream()) {
        let wire = encode_fetch_stream(order, &items);
        prop_assert_eq!(read_fetch_stream(order, wire).unwrap(), Some(items));
    }

    #[test]
    fn fetch_stream_truncations((order, items) in fetch_stream()) {
        let wire = encode_fetch_stream(order, &items);
        for n in 0..wire.len() {
            if let Some(got) = read_fetch_stream(order, wire.slice(..n)).unwrap() {
                prop_assert!(got.len() <= items.len());
                prop_assert_eq!(&got[..], &items[..got.len()]);
            }
        }
    }

    #[test]
    fn datagram_roundtrip(d in datagram()) {
        let mut out = Vec::new();
        d.encode(&mut out).unwrap();
        let wire = Bytes::from(out);
        prop_assert_eq!(Datagram::decode(&wire), Ok(Datagram::Object(d.clone())));
        // A truncated datagram never decodes to the original; with a
        // payload it may decode to a shorter one, which is all a datagram
        // without a length field can offer.
        for n in 0..wire.len() {
            match Datagram::decode(&wire.slice(..n)) {
                Ok(Datagram::Object(got)) => {
                    prop_assert!(got != d);
                    prop_assert!(matches!(d.content, DatagramContent::Payload(_)));
                }
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(e) => prop_assert!(!e.is_incomplete()),
            }
        }
    }

    #[test]
    fn padding_datagram_roundtrip(len in 0..64usize) {
        let mut out = Vec::new();
        Datagram::Padding { len }.encode(&mut out).unwrap();
        prop_assert_eq!(Datagram::decode(&Bytes::from(out)), Ok(Datagram::Padding { len }));
    }

    #[test]
    fn serialized_names_roundtrip(name in full_track_name()) {
        let text = name.to_serialized();
        prop_assert_eq!(FullTrackName::parse_serialized(&text), Ok(name.clone()));
        prop_assert_eq!(TrackNamespace::parse_serialized(&name.namespace().to_serialized()), Ok(name.namespace().clone()));
    }
}

/// Decoding arbitrary input must not panic; whatever decodes must re-encode
/// to something that decodes to the same value.
fn check_arbitrary(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);

    let _ = varint::decode_slice(data);

    let mut b = bytes.clone();
    let before = b.len();
    match ControlMessage::decode(&mut b) {
        Ok(m) => {
            assert!(b.len() < before);
            let again = m.to_bytes().expect("a decoded message re-encodes");
            assert_eq!(ControlMessage::decode(&mut again.clone()).unwrap(), m);
        }
        Err(DecodeError::Incomplete) => assert_eq!(b.len(), before),
        Err(_) => {}
    }

    match Datagram::decode(&bytes) {
        Ok(Datagram::Object(d)) => {
            let mut out = Vec::new();
            d.encode(&mut out).expect("a decoded datagram re-encodes");
            assert_eq!(Datagram::decode(&Bytes::from(out)), Ok(Datagram::Object(d)));
        }
        Ok(Datagram::Padding { .. }) | Err(_) => {}
    }

    let _ = StreamType::peek(&bytes);
    let mut b = bytes.clone();
    match UniStreamHeader::decode(&mut b) {
        Ok(UniStreamHeader::Subgroup(h)) => {
            let mut dec = SubgroupDecoder::new(h);
            let mut enc = SubgroupEncoder::new(h);
            let mut out = Vec::new();
            while let Ok(o) = dec.decode_object(&mut b) {
                enc.encode_object(&o, &mut out)
                    .expect("a decoded object re-encodes");
            }
        }
        Ok(UniStreamHeader::Fetch(_)) => {
            for order in [GroupOrder::Ascending, GroupOrder::Descending] {
                let mut b = b.clone();
                let mut dec = FetchDecoder::new(order);
                let mut enc = FetchEncoder::new(order);
                let mut out = Vec::new();
                while let Ok(i) = dec.decode_item(&mut b) {
                    enc.encode_item(&i, &mut out)
                        .expect("a decoded fetch item re-encodes");
                }
            }
        }
        _ => {}
    }
    // Raw object decoders on arbitrary bytes too (no header).
    for has_properties in [false, true] {
        let mut b = bytes.clone();
        let mut dec = SubgroupDecoder::new(SubgroupHeader {
            has_properties,
            ..Default::default()
        });
        while dec.decode_object(&mut b).is_ok() {}
    }
    let mut b = bytes;
    let mut dec = FetchDecoder::new(GroupOrder::Descending);
    while dec.decode_item_header(&mut b).is_ok() {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        check_arbitrary(&data);
    }

    #[test]
    fn random_bytes_with_valid_prefix_never_panic(ty in prop::sample::select(
        vec![0x2F00u64, 0x10, 0x3, 0x4, 0x1D, 0x1E, 0xB, 0x16, 0x18, 0xD, 0x6, 0x50, 0x51, 0x8, 0xE, 0xF, 0x2, 0x7, 0x5]
    ), tail in vec(any::<u8>(), 0..200)) {
        // A valid type and a length matching the tail exercise the payload
        // decoders rather than the framing.
        let mut data = Vec::new();
        varint::encode(ty, &mut data);
        data.extend_from_slice(&(tail.len() as u16).to_be_bytes());
        data.extend_from_slice(&tail);
        check_arbitrary(&data);
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in control_message(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut data = msg.to_bytes().unwrap().to_vec();
        for (i, x) in flips {
            let i = i.index(data.len());
            data[i] ^= x;
        }
        check_arbitrary(&data);
    }

    #[test]
    fn mutated_data_streams_never_panic(
        (header, objects) in subgroup_stream(),
        (order, items) in fetch_stream(),
        d in datagram(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut dg = Vec::new();
        d.encode(&mut dg).unwrap();
        for wire in [encode_subgroup_stream(&header, &objects).to_vec(), encode_fetch_stream(order, &items).to_vec(), dg] {
            let mut data = wire;
            for (i, x) in &flips {
                let i = i.index(data.len());
                data[i] ^= x;
            }
            check_arbitrary(&data);
        }
    }
}
