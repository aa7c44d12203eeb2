//! Every control message and subscription filter through encode and
//! decode, and the namespace and properties helpers.

use super::*;

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
