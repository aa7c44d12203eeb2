//! Fan-out: subscribers served from one upstream subscription, refusals,
//! late joiners, datagrams, and objects forwarded while they stream in.

use std::time::Instant;

use crate::common::{
    is_publish_done, is_subscribe_ok, is_upstream_subscribe, payload, track, Stepped,
};
use bytes::Bytes;
use moqt::{
    message::{FetchType, JoiningFetch},
    session::{
        Event as SessionEvent, OutgoingObject, PayloadPart, Role, SessionConfig, StreamFlags,
    },
    ControlMessage, Location, ObjectStatus, Parameters, Properties, PublishDoneCode,
};
use relay::{quic::SessionDriver, shed::ShedConfig};

use crate::harness::*;

#[test]
fn publish_subscribe_fan_out_and_publisher_leaving() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..3);

    for g in 0..3 {
        for o in 0..5 {
            let obj = OutgoingObject {
                track_alias: alias,
                location: Location::new(g, o),
                subgroup: 0,
                publisher_priority: Some(100),
                status: ObjectStatus::Normal,
                properties: Properties::new(),
                payload: payload(g, o),
            };
            h.clients[0].driver.session.send_object(obj).unwrap();
        }
        assert!(h.clients[0].driver.session.end_subgroup(alias, g, 0));
    }
    let mut got: Vec<Vec<(u64, u64, Bytes)>> = vec![Vec::new(); 3];
    h.run_until("15 objects at both subscribers", |h| {
        for s in 1..3 {
            for o in h.clients[s].objects() {
                got[s].push((o.location.group, o.location.object, o.payload));
            }
        }
        got[1].len() >= 15 && got[2].len() >= 15
    });
    for s in 1..3 {
        let expect: Vec<_> = (0..3)
            .flat_map(|g| (0..5).map(move |o| (g, o, payload(g, o))))
            .collect();
        assert_eq!(got[s], expect, "subscriber {s}");
    }
    // Subgroup streams were finished downstream too (no leaked streams).
    h.run_until("subgroup ends downstream", |h| {
        h.clients[1]
            .take(|e| matches!(e, SessionEvent::SubgroupEnded { abort: None, .. }))
            .len()
            == 3
    });

    // The publisher leaves: both subscribers get PUBLISH_DONE.
    h.clients[0]
        .peer
        .conn
        .close(Instant::now(), 0u32.into(), Bytes::from_static(b"bye"));
    let mut done = [false; 3];
    h.run_until("PUBLISH_DONE downstream", |h| {
        for s in 1..3 {
            for e in h.clients[s].take(is_publish_done) {
                let SessionEvent::Message {
                    message: ControlMessage::PublishDone(d),
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(d.status_code, PublishDoneCode::TrackEnded);
                done[s] = true;
            }
        }
        done[1] && done[2]
    });
    assert_eq!(h.worker.app().relay().engine().track_count(), 0);
}

#[test]
fn subscribe_to_an_unknown_track_is_refused() {
    let mut h = Harness::new(1);
    h.ready();
    h.clients[0]
        .driver
        .session
        .subscribe(track("video"), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_ERROR", |h| {
        h.clients[0]
            .take(|e| {
                matches!(e, SessionEvent::Message { message: ControlMessage::RequestError(r), .. }
                    if r.error_code == moqt::RequestErrorCode::DoesNotExist)
            })
            .len()
            == 1
    });
}

#[test]
fn a_late_subscriber_gets_objects_from_its_join_on() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..2);
    let send = |h: &mut Harness, g: u64| {
        for o in 0..3 {
            h.clients[0]
                .driver
                .session
                .send_object(OutgoingObject {
                    track_alias: alias,
                    location: Location::new(g, o),
                    payload: payload(g, o),
                    publisher_priority: Some(1),
                    ..OutgoingObject::default()
                })
                .unwrap();
        }
        h.clients[0].driver.session.end_subgroup(alias, g, 0);
    };
    send(&mut h, 0);
    let mut early = 0;
    h.run_until("group 0 at the early subscriber", |h| {
        early += h.clients[1].objects().len();
        early == 3
    });
    // Client 2 joins late, with no second upstream SUBSCRIBE.
    let late_sub = h.clients[2]
        .driver
        .session
        .subscribe(track("video"), Parameters::default())
        .unwrap();
    h.run_until("late SUBSCRIBE_OK", |h| {
        let upstream_again = h.clients[0].take(is_upstream_subscribe);
        assert!(upstream_again.is_empty(), "second upstream SUBSCRIBE");
        !h.clients[2].take(is_subscribe_ok).is_empty()
    });
    send(&mut h, 1);
    let mut late = Vec::new();
    h.run_until("group 1 at the late subscriber", |h| {
        for o in h.clients[2].objects() {
            late.push((o.location.group, o.location.object));
        }
        late.len() == 3
    });
    assert_eq!(late, [(1, 0), (1, 1), (1, 2)]);

    // A Joining FETCH (relative, 0 groups back) fills in what came before
    // the subscription, from the relay's cache: group 0, up to the Joining
    // Location {0,2}, contiguous with the subscription.
    h.clients[2]
        .driver
        .session
        .fetch(
            FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: late_sub.0,
                joining_start: 0,
            }),
            Parameters::default(),
        )
        .unwrap();
    let (mut fetched, mut ended) = (Vec::new(), false);
    h.run_until("joining FETCH served from the cache", |h| {
        for e in h.clients[2].take(|e| {
            matches!(
                e,
                SessionEvent::FetchObject { .. } | SessionEvent::FetchEnded { .. }
            )
        }) {
            match e {
                SessionEvent::FetchObject { object, .. } => {
                    assert_eq!(
                        object.payload,
                        payload(object.location.group, object.location.object)
                    );
                    fetched.push((object.location.group, object.location.object));
                }
                SessionEvent::FetchEnded { abort, .. } => {
                    assert_eq!(abort, None);
                    ended = true;
                }
                _ => unreachable!(),
            }
        }
        ended
    });
    assert_eq!(fetched, [(0, 0), (0, 1), (0, 2)]);

    // A Joining FETCH for a request that is no subscription is refused.
    h.clients[2]
        .driver
        .session
        .fetch(
            FetchType::AbsoluteJoining(JoiningFetch {
                joining_request_id: 9_999_998,
                joining_start: 0,
            }),
            Parameters::default(),
        )
        .unwrap();
    h.run_until("INVALID_JOINING_REQUEST_ID", |h| {
        !h.clients[2]
            .take(|e| {
                matches!(e, SessionEvent::Message { message: ControlMessage::RequestError(r), .. }
                    if r.error_code == moqt::RequestErrorCode::InvalidJoiningRequestId)
            })
            .is_empty()
    });
}

#[test]
fn datagrams_are_forwarded_as_datagrams() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..3);
    for o in 0..5u64 {
        let datagram = moqt::ObjectDatagram {
            track_alias: alias,
            group_id: 7,
            object_id: o,
            publisher_priority: Some(3),
            end_of_group: false,
            properties: Properties::new(),
            content: moqt::DatagramContent::Payload(payload(7, o)),
        };
        h.clients[0]
            .driver
            .session
            .send_datagram(&datagram)
            .unwrap();
    }
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); 3];
    h.run_until("datagrams at both subscribers", |h| {
        for s in 1..3 {
            for o in h.clients[s].objects() {
                assert_eq!(o.subgroup, None, "arrived on a stream, not as a datagram");
                assert_eq!(o.payload, payload(7, o.location.object));
                got[s].push(o.location.object);
            }
        }
        got[1].len() == 5 && got[2].len() == 5
    });
}

/// Cut-through: a long object is forwarded while it streams in. The
/// publisher sends the first 20 KiB of a 200 KiB object and stops; a
/// subscriber whose session reports parts already has them, before the
/// rest exists. Then the rest: that subscriber reassembles the object, a
/// subscriber taking whole objects gets it whole, an object after it
/// follows on the same stream, and a FETCH serves it whole from the cache.
#[test]
fn a_long_object_is_forwarded_while_it_streams_in() {
    const LEN: usize = 200 * 1024;
    let cut = SessionConfig {
        cut_through_bytes: Some(16 * 1024),
        ..SessionConfig::default()
    };
    let mut h = Harness::build(3, ShedConfig::default(), cut.clone());
    h.clients[1].driver = SessionDriver::new(Role::Client, cut);
    h.ready();
    let alias = publish_tracks(&mut h, &["video"])[0];
    subscribe_to(&mut h, 1, "video", Parameters::default());
    subscribe_to(&mut h, 2, "video", Parameters::default());

    let payload: Bytes = (0..LEN)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let piece = |offset: usize, len: usize| {
        let obj = OutgoingObject {
            track_alias: alias,
            location: Location::new(0, 0),
            publisher_priority: Some(100),
            payload: payload.slice(offset..offset + len),
            ..OutgoingObject::default()
        };
        let part = PayloadPart {
            offset: offset as u64,
            length: LEN as u64,
        };
        (obj, part)
    };
    let (obj, part) = piece(0, 20 * 1024);
    h.clients[0]
        .driver
        .session
        .send_object_part(obj, part, StreamFlags::default())
        .unwrap();
    let mut parts = Vec::new();
    h.run_until("the first part at the subscriber", |h| {
        parts.extend(h.clients[1].objects());
        !parts.is_empty()
    });
    for _ in 0..20 {
        h.step();
    }
    parts.extend(h.clients[1].objects());
    let first = &parts[0];
    assert_eq!(
        first.part.map(|p| (p.offset, p.length)),
        Some((0, LEN as u64))
    );
    let arrived: usize = parts.iter().map(|o| o.payload.len()).sum();
    assert!(
        (16 * 1024..=20 * 1024).contains(&arrived),
        "{arrived} bytes before the rest was sent"
    );
    assert!(
        h.clients[2].objects().is_empty(),
        "a whole object before its end"
    );

    // The rest, in 30 KiB writes, then a short object on the same subgroup.
    let mut offset = 20 * 1024;
    while offset < LEN {
        let n = (LEN - offset).min(30 * 1024);
        let (obj, part) = piece(offset, n);
        h.clients[0]
            .driver
            .session
            .send_object_part(obj, part, StreamFlags::default())
            .unwrap();
        offset += n;
        h.step();
    }
    send(&mut h, alias, 0, 1, 100, 10);
    assert!(h.clients[0].driver.session.end_subgroup(alias, 0, 0));
    let mut whole = Vec::new();
    h.run_until("the object in parts and whole, and the next one", |h| {
        parts.extend(h.clients[1].objects());
        whole.extend(h.clients[2].objects());
        parts.last().is_some_and(|o| o.location.object == 1) && whole.len() == 2
    });
    let (tail, object_parts) = parts.split_last().unwrap();
    let mut joined = Vec::new();
    for o in object_parts {
        assert_eq!(o.part.unwrap().offset as usize, joined.len());
        joined.extend_from_slice(&o.payload);
    }
    assert_eq!(Bytes::from(joined), payload);
    assert_eq!((tail.location.object, tail.part), (1, None));
    assert_eq!(whole[0].part, None);
    assert_eq!(whole[0].payload, payload);
    assert_eq!(whole[1].location.object, 1);

    // The cache collected the parts into the whole object (the end's
    // object is exclusive).
    let (_, fetched) = standalone_fetch(&mut h, 2, Location::new(0, 0), Location::new(0, 2));
    let got: Vec<_> = fetched
        .iter()
        .map(|o| (o.location, o.payload.len()))
        .collect();
    assert_eq!(fetched.len(), 2, "{got:?}");
    assert_eq!(fetched[0].payload, payload);
}
