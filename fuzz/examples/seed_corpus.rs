//! Writes the seed inputs of the `frame`, `control_message` and
//! `data_streams` targets into `corpus/<target>/seed-*`: valid encodings
//! made with the crates' own encoders, prefixed with each target's mode
//! byte. (The `session` target reads an operation list, not wire bytes; it
//! injects valid encodings by construction and its corpus is grown by the
//! fuzzer.)
//!
//! ```text
//! cd fuzz && cargo +nightly run --example seed_corpus
//! ```

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use dataplane::frame::{checksum_add, checksum_fold, FrameHeader, MacAddr, ETH_HLEN};
use moqt::data::stream::UniStreamHeader;
use moqt::kvp::KeyValuePair;
use moqt::message::*;
use moqt::params::{AuthToken, Parameters, SubscriptionFilter};
use moqt::setup::{Setup, SetupOption};
use moqt::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

fn props() -> Properties {
    Properties::from_pairs(vec![
        KeyValuePair::varint(0x02, 5000).unwrap(),
        KeyValuePair::bytes(0x3b, b("trace-1")).unwrap(),
    ])
    .unwrap()
}

// ------------------------------------------------------------------ frame

fn frames() {
    let header = |src: &str, dst: &str, vlan: Option<u16>| FrameHeader {
        src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x0a]),
        dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x0b]),
        vlan,
        src: src.parse::<SocketAddr>().unwrap(),
        dst: dst.parse::<SocketAddr>().unwrap(),
        ecn: 2,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 2048];
    let cases = [
        (
            "v4",
            header("198.18.0.10:40000", "198.18.0.1:4433", None),
            32,
        ),
        ("v4-empty", header("10.0.0.1:1", "10.0.0.2:2", None), 0),
        (
            "v4-vlan",
            header("198.18.0.10:5000", "198.18.0.1:4433", Some(7)),
            100,
        ),
        ("v6", header("[fd00::10]:5000", "[fd00::1]:4433", None), 64),
        (
            "v6-vlan",
            header("[fd00::10]:5000", "[fd00::1]:4433", Some(4094)),
            1,
        ),
    ];
    for (name, h, len) in cases {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let n = h.write(&mut buf, &payload).unwrap();
        write("frame", name, &buf[..n]);
    }

    // QinQ outer tag.
    let h = header("198.18.0.10:5000", "198.18.0.1:4433", Some(3));
    let n = h.write(&mut buf, b"qinq").unwrap();
    let mut f = buf[..n].to_vec();
    f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    write("frame", "v4-qinq", &f);

    // IPv4 with a 4-byte option (IHL 6), checksum and lengths fixed up.
    let h = header("198.18.0.10:5000", "198.18.0.1:4433", None);
    let n = h.write(&mut buf, b"options").unwrap();
    let mut f = buf[..ETH_HLEN + 20].to_vec();
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&buf[ETH_HLEN + 20..n]);
    let ip = ETH_HLEN;
    f[ip] = 0x46;
    let total = u16::from_be_bytes([f[ip + 2], f[ip + 3]]) + 4;
    f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = !checksum_fold(checksum_add(0, &f[ip..ip + 24]));
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    write("frame", "v4-options", &f);

    // A fragment, TCP, ARP: parsed and refused.
    let n = h.write(&mut buf, b"frag").unwrap();
    let mut f = buf[..n].to_vec();
    f[ip + 6] = 0x20; // more fragments
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = !checksum_fold(checksum_add(0, &f[ip..ip + 20]));
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    write("frame", "v4-fragment", &f);
    let mut f = buf[..n].to_vec();
    f[ip + 9] = 6;
    f[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = !checksum_fold(checksum_add(0, &f[ip..ip + 20]));
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    write("frame", "v4-tcp", &f);
    let mut f = buf[..n].to_vec();
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    write("frame", "arp", &f);
}

// -------------------------------------------------------- control messages

fn messages() -> Vec<(&'static str, ControlMessage)> {
    let track = FullTrackName::new(
        TrackNamespace::new([b("live"), b("room")]).unwrap(),
        b("video"),
    )
    .unwrap();
    let ns = TrackNamespace::new([b("live")]).unwrap();
    let sub_params = Parameters {
        authorization_tokens: vec![AuthToken::UseValue {
            token_type: 1,
            value: b("token"),
        }],
        forward: Some(true),
        subscriber_priority: Some(10),
        subscription_filter: Some(SubscriptionFilter::AbsoluteRange {
            start: Location::new(5, 0),
            end_group_delta: 10,
        }),
        group_order: Some(GroupOrder::Descending),
        rendezvous_timeout: Some(1000),
        ..Parameters::default()
    };
    let ok_params = Parameters {
        expires: Some(30_000),
        largest_object: Some(Location::new(7, 3)),
        ..Parameters::default()
    };
    vec![
        (
            "setup",
            Setup {
                options: vec![
                    SetupOption::Path(b("/moq")),
                    SetupOption::AuthorizationToken(AuthToken::Register {
                        alias: 1,
                        token_type: 2,
                        value: b("secret"),
                    }),
                    SetupOption::MaxAuthTokenCacheSize(4096),
                    SetupOption::Authority(b("relay.example")),
                    SetupOption::MoqtImplementation(b("fastrelay")),
                ],
            }
            .into(),
        ),
        (
            "goaway",
            GoAway {
                new_session_uri: b("moqt://other.example/moq"),
                timeout: 5000,
                request_id: Some(10),
            }
            .into(),
        ),
        (
            "subscribe",
            Subscribe {
                request_id: 0,
                track: track.clone(),
                parameters: sub_params.clone(),
            }
            .into(),
        ),
        (
            "subscribe-ok",
            SubscribeOk {
                track_alias: 1,
                parameters: ok_params.clone(),
                track_properties: props(),
            }
            .into(),
        ),
        (
            "publish",
            Publish {
                request_id: 2,
                track: track.clone(),
                track_alias: 3,
                parameters: Parameters {
                    forward: Some(false),
                    ..ok_params.clone()
                },
                track_properties: props(),
            }
            .into(),
        ),
        (
            "publish-ok",
            ControlMessage::PublishOk(RequestOk {
                parameters: Parameters {
                    subscriber_priority: Some(1),
                    ..Parameters::default()
                },
                track_properties: Properties::new(),
            }),
        ),
        (
            "publish-done",
            PublishDone {
                status_code: PublishDoneCode::from_code(0x2),
                stream_count: 12,
                reason: ReasonPhrase::new(b("track ended")).unwrap(),
            }
            .into(),
        ),
        (
            "fetch-standalone",
            Fetch {
                request_id: 4,
                fetch_type: FetchType::Standalone(StandaloneFetch {
                    track: track.clone(),
                    start: Location::new(1, 0),
                    end: Location::new(3, 0),
                }),
                parameters: Parameters {
                    fill_timeout: Some(100),
                    group_order: Some(GroupOrder::Ascending),
                    ..Parameters::default()
                },
            }
            .into(),
        ),
        (
            "fetch-joining",
            Fetch {
                request_id: 6,
                fetch_type: FetchType::RelativeJoining(JoiningFetch {
                    joining_request_id: 0,
                    joining_start: 2,
                }),
                parameters: Parameters::default(),
            }
            .into(),
        ),
        (
            "fetch-ok",
            FetchOk {
                end_of_track: true,
                end_location: Location::new(3, 0),
                parameters: Parameters::default(),
                track_properties: props(),
            }
            .into(),
        ),
        (
            "track-status",
            TrackStatus {
                request_id: 8,
                track: track.clone(),
                parameters: Parameters::default(),
            }
            .into(),
        ),
        (
            "publish-namespace",
            PublishNamespace {
                request_id: 10,
                namespace: ns.clone(),
                parameters: Parameters::default(),
            }
            .into(),
        ),
        (
            "subscribe-namespace",
            SubscribeNamespace {
                request_id: 12,
                prefix: ns.clone(),
                parameters: Parameters::default(),
            }
            .into(),
        ),
        (
            "subscribe-tracks",
            SubscribeTracks {
                request_id: 14,
                prefix: ns.clone(),
                parameters: Parameters {
                    forward: Some(true),
                    ..Parameters::default()
                },
            }
            .into(),
        ),
        (
            "namespace",
            Namespace {
                suffix: TrackNamespace::new([b("room")]).unwrap(),
            }
            .into(),
        ),
        (
            "namespace-done",
            NamespaceDone {
                suffix: TrackNamespace::new([b("room")]).unwrap(),
            }
            .into(),
        ),
        (
            "publish-blocked",
            PublishBlocked {
                track: track.clone(),
            }
            .into(),
        ),
        (
            "request-update",
            RequestUpdate {
                request_id: 16,
                parameters: Parameters {
                    track_namespace_prefix: Some(ns.clone()),
                    new_group_request: Some(9),
                    ..Parameters::default()
                },
            }
            .into(),
        ),
        (
            "request-ok",
            RequestOk {
                parameters: ok_params,
                track_properties: props(),
            }
            .into(),
        ),
        (
            "request-error",
            RequestError {
                error_code: RequestErrorCode::from_code(0x2),
                retry_interval: 1001,
                reason: ReasonPhrase::new(b("not found")).unwrap(),
                redirect: None,
            }
            .into(),
        ),
        (
            "request-error-redirect",
            RequestError {
                error_code: RequestErrorCode::Redirect,
                retry_interval: 0,
                reason: ReasonPhrase::default(),
                redirect: Some(Redirect {
                    connect_uri: b("moqt://b.example/moq"),
                    track,
                }),
            }
            .into(),
        ),
    ]
}

fn control_messages() {
    let mut all = Vec::new();
    for (name, m) in messages() {
        let enc = m.to_bytes().unwrap();
        let mut seed = vec![0x00];
        seed.extend_from_slice(&enc);
        write("control_message", name, &seed);
        all.extend_from_slice(&enc);
    }
    // Everything in one stream, whole and in chunks of 1, 2, 3, 5.
    let mut seed = vec![0x00];
    seed.extend_from_slice(&all);
    write("control_message", "all", &seed);
    let mut seed = vec![0x04, 1, 2, 3, 5];
    seed.extend_from_slice(&all);
    write("control_message", "all-chunked", &seed);
}

// ------------------------------------------------------------- data streams

fn data_streams() {
    // mode byte: 0b00kkkdmm
    let stream = |name: &str, mode: u8, body: &[u8]| {
        let mut seed = vec![mode];
        seed.extend_from_slice(body);
        write("data_streams", name, &seed);
    };

    // Subgroup streams with several header shapes.
    let shapes = [
        (
            "subgroup-zero",
            SubgroupId::Zero,
            Some(7u8),
            true,
            false,
            false,
        ),
        (
            "subgroup-first",
            SubgroupId::FirstObjectId,
            None,
            false,
            true,
            true,
        ),
        (
            "subgroup-explicit",
            SubgroupId::Explicit(9),
            Some(0),
            true,
            true,
            true,
        ),
    ];
    for (name, subgroup_id, prio, has_properties, end_of_group, first_object) in shapes {
        let header = SubgroupHeader {
            track_alias: 2,
            group_id: 100,
            subgroup_id,
            publisher_priority: prio,
            has_properties,
            end_of_group,
            first_object,
        };
        let mut enc = SubgroupEncoder::new(header);
        let mut body = Vec::new();
        enc.encode_header(&mut body).unwrap();
        let objs = [
            (3, b("first"), ObjectStatus::Normal),
            (4, b("second"), ObjectStatus::Normal),
            (10, Bytes::new(), ObjectStatus::Normal),
            (11, Bytes::new(), ObjectStatus::EndOfGroup),
        ];
        for (i, (id, payload, status)) in objs.into_iter().enumerate() {
            let properties = if has_properties && i == 0 {
                props()
            } else {
                Properties::new()
            };
            let obj = SubgroupObject {
                object_id: id,
                properties,
                status,
                payload,
            };
            enc.encode_object(&obj, &mut body).unwrap();
        }
        stream(name, 0x00, &body);
        // The same, chunked in 1s and 3s.
        let mut chunked = vec![1, 3];
        chunked.extend_from_slice(&body);
        stream(&format!("{name}-chunked"), 0b0001_0000, &chunked);
    }

    // Fetch streams, both orders, with End of Range markers.
    for (name, order, mode) in [
        ("fetch-asc", GroupOrder::Ascending, 0x00u8),
        ("fetch-desc", GroupOrder::Descending, 0x04),
    ] {
        let mut body = Vec::new();
        FetchHeader { request_id: 4 }.encode(&mut body).unwrap();
        let mut items = Vec::new();
        let mut enc = FetchEncoder::new(order);
        let groups: [u64; 3] = if order == GroupOrder::Ascending {
            [1, 2, 5]
        } else {
            [5, 2, 1]
        };
        enc.encode_end_of_range(
            &EndOfRange {
                kind: EndOfRangeKind::Unknown,
                location: Location::new(groups[0], 0),
            },
            &mut items,
        )
        .unwrap();
        for (i, g) in groups.into_iter().enumerate() {
            for o in 0..2u64 {
                let obj = FetchObject {
                    location: Location::new(g, o + 1),
                    subgroup_id: if i == 2 { None } else { Some(o) },
                    publisher_priority: 3 + i as u8,
                    properties: if o == 0 { props() } else { Properties::new() },
                    payload: b("fetched"),
                };
                enc.encode_object(&obj, &mut items).unwrap();
            }
        }
        enc.encode_end_of_range(
            &EndOfRange {
                kind: EndOfRangeKind::NonExistent,
                location: Location::new(groups[2], 9),
            },
            &mut items,
        )
        .unwrap();
        body.extend_from_slice(&items);
        stream(name, mode, &body);
        stream(&format!("{name}-items"), mode | 3, &items);
    }

    // A control stream: SETUP, then GOAWAY.
    let mut body = Vec::new();
    UniStreamHeader::Control(Setup {
        options: vec![SetupOption::MoqtImplementation(b("fastrelay"))],
    })
    .encode(&mut body)
    .unwrap();
    ControlMessage::GoAway(GoAway {
        new_session_uri: Bytes::new(),
        timeout: 0,
        request_id: Some(2),
    })
    .encode(&mut body)
    .unwrap();
    stream("control", 0x00, &body);

    // A padding stream.
    let mut body = Vec::new();
    UniStreamHeader::Padding.encode(&mut body).unwrap();
    body.extend_from_slice(&[0; 16]);
    stream("padding", 0x00, &body);

    // Datagrams: payload, status, properties, zero object ID, padding.
    let datagrams = [
        (
            "dgram-payload",
            ObjectDatagram {
                track_alias: 1,
                group_id: 4,
                object_id: 2,
                publisher_priority: Some(5),
                end_of_group: true,
                properties: Properties::new(),
                content: DatagramContent::Payload(b("datagram")),
            },
        ),
        (
            "dgram-props",
            ObjectDatagram {
                track_alias: 1,
                group_id: 4,
                object_id: 0,
                publisher_priority: None,
                end_of_group: false,
                properties: props(),
                content: DatagramContent::Payload(b("x")),
            },
        ),
        (
            "dgram-status",
            ObjectDatagram {
                track_alias: 1,
                group_id: 4,
                object_id: 7,
                publisher_priority: Some(1),
                end_of_group: false,
                properties: Properties::new(),
                content: DatagramContent::Status(ObjectStatus::EndOfTrack),
            },
        ),
    ];
    for (name, d) in datagrams {
        let mut body = Vec::new();
        d.encode(&mut body).unwrap();
        stream(name, 0x02, &body);
    }
    let mut body = Vec::new();
    Datagram::Padding { len: 8 }.encode(&mut body).unwrap();
    stream("dgram-padding", 0x02, &body);
}

fn main() {
    frames();
    control_messages();
    data_streams();
    // Structured control messages start from a few arbitrary bytes.
    for (i, s) in [&[0x80u8, 0, 0, 0, 1][..], &[0x80, 0x40, 3, 9, 0xff, 0x10]]
        .into_iter()
        .enumerate()
    {
        write("control_message", &format!("structured-{i}"), s);
    }
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
