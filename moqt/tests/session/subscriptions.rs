//! Subscriptions and their objects, namespaces, and cancellation from
//! either end.

use super::*;

fn subscribe_and_stream_objects(chunk: usize) {
    let mut p = Pair::ready();
    p.chunk = chunk;
    let (cid, _sid, alias) = subscribed(&mut p);
    let s1 = p.s.s.send_object(object(alias, 5, 0, 0, "a0")).unwrap();
    let s1b = p.s.s.send_object(object(alias, 5, 0, 1, "a1")).unwrap();
    assert_eq!(s1, s1b, "same (alias, group, subgroup) reuses the stream");
    let s2 = p.s.s.send_object(object(alias, 5, 3, 10, "b10")).unwrap();
    assert_ne!(s1, s2);
    let mut end = object(alias, 5, 0, 4, "");
    end.status = ObjectStatus::EndOfGroup;
    p.s.s.send_object(end).unwrap();
    // Object IDs must increase on a stream.
    assert!(p.s.s.send_object(object(alias, 5, 3, 9, "x")).is_err());
    assert!(p.s.s.end_subgroup(alias, 5, 0));
    assert!(p.s.s.end_subgroup(alias, 5, 3));
    assert!(!p.s.s.end_subgroup(alias, 5, 3));
    // Unknown alias is refused.
    assert_eq!(
        p.s.s.send_object(object(alias + 9, 1, 0, 0, "z")),
        Err(SessionError::UnknownTrackAlias(alias + 9))
    );
    p.pump();
    let objs = objects(&p.c.events);
    let got: Vec<_> = objs
        .iter()
        .map(|o| {
            (
                o.track_alias,
                o.request,
                o.location.group,
                o.subgroup,
                o.location.object,
                o.status,
                o.payload.clone(),
                o.publisher_priority,
            )
        })
        .collect();
    let n = ObjectStatus::Normal;
    assert_eq!(
        got,
        vec![
            (alias, Some(cid), 5, Some(0), 0, n, b("a0"), Some(7)),
            (alias, Some(cid), 5, Some(0), 1, n, b("a1"), Some(7)),
            (alias, Some(cid), 5, Some(3), 10, n, b("b10"), Some(7)),
            (
                alias,
                Some(cid),
                5,
                Some(0),
                4,
                ObjectStatus::EndOfGroup,
                Bytes::new(),
                Some(7)
            ),
        ]
    );
    let ended: Vec<_> =
        p.c.events
            .iter()
            .filter_map(|e| match e {
                Event::SubgroupEnded {
                    subgroup, abort, ..
                } => Some((*subgroup, *abort)),
                _ => None,
            })
            .collect();
    assert_eq!(ended, vec![(Some(0), None), (Some(3), None)]);
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}

#[test]
fn subscribe_ok_then_objects_in_order() {
    subscribe_and_stream_objects(usize::MAX);
}

#[test]
fn objects_delivered_byte_by_byte() {
    subscribe_and_stream_objects(1);
}

#[test]
fn object_payload_is_zero_copy_when_it_arrives_whole() {
    let (mut s, _) = ready_server();
    let stream = s.on_peer_stream(false);
    let header = SubgroupHeader {
        track_alias: 3,
        group_id: 1,
        ..SubgroupHeader::default()
    };
    let mut enc = SubgroupEncoder::new(header);
    let mut wire = BytesMut::new();
    enc.encode_header(&mut wire).unwrap();
    enc.encode_object(
        &SubgroupObject {
            object_id: 0,
            payload: Bytes::from(vec![9u8; 1000]),
            ..SubgroupObject::default()
        },
        &mut wire,
    )
    .unwrap();
    let wire = wire.freeze();
    let range = wire.as_ptr_range();
    s.on_stream_data(stream, wire.clone(), false).unwrap();
    let (_, events) = drain(&mut s);
    let o = objects(&events)[0];
    assert_eq!(o.payload.len(), 1000);
    assert!(
        range.contains(&o.payload.as_ptr()),
        "payload sliced, not copied"
    );
    assert_eq!(o.request, None);
}

#[test]
fn subscribe_rejected_with_request_error() {
    let mut p = Pair::ready();
    let cid = p.c.s.subscribe(track("nope"), Parameters::new()).unwrap();
    p.pump();
    let (sid, _) = incoming_request(&p.s.events);
    p.s.s
        .request_error(sid, RequestErrorCode::DoesNotExist, "no such track")
        .unwrap();
    p.pump();
    match messages(&p.c.events)[..] {
        [ControlMessage::RequestError(e)] => {
            assert_eq!(e.error_code, RequestErrorCode::DoesNotExist);
            assert_eq!(e.reason.as_str(), Some("no such track"));
        }
        ref m => panic!("unexpected {m:?}"),
    }
    assert!(p
        .c
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerFinished { id } if *id == cid)));
    // The subscriber finishes its side; both forget the request.
    p.c.s.finish(cid).unwrap();
    p.pump();
    assert_eq!(p.c.s.request_count(), 0);
    assert_eq!(p.s.s.request_count(), 0);
}

#[test]
fn publish_done_ends_subscription() {
    let mut p = Pair::ready();
    let (cid, sid, _) = subscribed(&mut p);
    p.s.s
        .publish_done(
            sid,
            PublishDone {
                status_code: PublishDoneCode::TrackEnded,
                stream_count: 0,
                reason: ReasonPhrase::default(),
            },
        )
        .unwrap();
    p.pump();
    assert!(matches!(
        messages(&p.c.events)[..],
        [ControlMessage::PublishDone(_)]
    ));
    p.c.s.finish(cid).unwrap();
    p.pump();
    assert_eq!(p.c.s.request_count(), 0);
    assert_eq!(p.s.s.request_count(), 0);
}

/// An alias stops being ours when its request ends, even right after
/// objects went out on it (the last alias checked is remembered).
#[test]
fn objects_on_an_ended_subscription_alias_are_refused() {
    let mut p = Pair::ready();
    let (cid, sid, alias) = subscribed(&mut p);
    p.s.s.send_object(object(alias, 0, 0, 0, "a")).unwrap();
    p.s.s
        .publish_done(
            sid,
            PublishDone {
                status_code: PublishDoneCode::TrackEnded,
                stream_count: 1,
                reason: ReasonPhrase::default(),
            },
        )
        .unwrap();
    p.pump();
    p.c.s.finish(cid).unwrap();
    p.pump();
    assert_eq!(p.s.s.request_count(), 0);
    assert_eq!(
        p.s.s.send_object(object(alias, 0, 0, 1, "b")),
        Err(SessionError::UnknownTrackAlias(alias))
    );
}

#[test]
fn publish_then_objects() {
    let mut p = Pair::ready();
    let (cid, alias) =
        p.c.s
            .publish(track("audio"), Parameters::new(), Properties::new())
            .unwrap();
    p.pump();
    let (sid, msg) = incoming_request(&p.s.events);
    assert_eq!(sid, cid);
    assert!(matches!(msg, ControlMessage::Publish(ref m) if m.track_alias == alias));
    p.s.s.request_ok(sid, RequestOk::default()).unwrap();
    p.c.s.send_object(object(alias, 0, 0, 0, "hello")).unwrap();
    p.pump();
    assert!(matches!(
        messages(&p.c.events)[..],
        [ControlMessage::RequestOk(_)]
    ));
    let objs = objects(&p.s.events);
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].request, Some(sid));
    assert_eq!(objs[0].payload, b("hello"));
}

#[test]
fn request_update_round_trip() {
    let mut p = Pair::ready();
    let (cid, sid, _) = subscribed(&mut p);
    let uid =
        p.c.s
            .request_update(
                cid,
                Parameters {
                    forward: Some(false),
                    ..Parameters::new()
                },
            )
            .unwrap();
    assert_eq!(uid, RequestId(2));
    p.pump();
    match messages(&p.s.events)[..] {
        [ControlMessage::RequestUpdate(u)] => assert_eq!(u.request_id, 2),
        ref m => panic!("unexpected {m:?}"),
    }
    p.s.s.request_ok(sid, RequestOk::default()).unwrap();
    // Nothing left to answer.
    assert!(p.s.s.request_ok(sid, RequestOk::default()).is_err());
    p.pump();
    assert!(matches!(
        messages(&p.c.events)[..],
        [ControlMessage::RequestOk(_)]
    ));
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}

#[test]
fn fetch_stream_objects() {
    let mut p = Pair::ready();
    let cid =
        p.c.s
            .fetch(
                FetchType::Standalone(StandaloneFetch {
                    track: track("video"),
                    start: Location::new(1, 0),
                    end: Location::new(2, 0),
                }),
                Parameters::new(),
            )
            .unwrap();
    p.pump();
    let (sid, _) = incoming_request(&p.s.events);
    p.s.s
        .fetch_ok(
            sid,
            FetchOk {
                end_of_track: false,
                end_location: Location::new(2, 0),
                parameters: Parameters::new(),
                track_properties: Properties::new(),
            },
        )
        .unwrap();
    p.s.s.open_fetch_stream(sid).unwrap();
    for (g, o, pl) in [(1, 0, "x"), (1, 1, "y"), (2, 0, "z")] {
        p.s.s
            .send_fetch_object(
                sid,
                FetchObject {
                    location: Location::new(g, o),
                    subgroup_id: Some(0),
                    publisher_priority: 1,
                    properties: Properties::new(),
                    payload: b(pl),
                },
            )
            .unwrap();
    }
    p.s.s.finish_fetch(sid).unwrap();
    p.pump();
    assert!(matches!(
        messages(&p.c.events)[..],
        [ControlMessage::FetchOk(_)]
    ));
    let got: Vec<_> =
        p.c.events
            .iter()
            .filter_map(|e| match e {
                Event::FetchObject { id, object } => {
                    assert_eq!(*id, cid);
                    Some((object.location, object.payload.clone()))
                }
                _ => None,
            })
            .collect();
    assert_eq!(
        got,
        vec![
            (Location::new(1, 0), b("x")),
            (Location::new(1, 1), b("y")),
            (Location::new(2, 0), b("z"))
        ]
    );
    assert!(p
        .c
        .events
        .iter()
        .any(|e| matches!(e, Event::FetchEnded { id, abort: None } if *id == cid)));
}

// --------------------------------------------------------------------
// Namespaces
// --------------------------------------------------------------------

#[test]
fn publish_namespace_accepted() {
    let mut p = Pair::ready();
    let cid =
        p.c.s
            .publish_namespace(ns(&["live"]), Parameters::new())
            .unwrap();
    p.pump();
    let (sid, msg) = incoming_request(&p.s.events);
    assert_eq!(sid, cid);
    assert!(matches!(msg, ControlMessage::PublishNamespace(ref m) if m.namespace == ns(&["live"])));
    p.s.s.request_ok(sid, RequestOk::default()).unwrap();
    p.pump();
    assert!(matches!(
        messages(&p.c.events)[..],
        [ControlMessage::RequestOk(_)]
    ));
}

#[test]
fn subscribe_namespace_namespace_and_done() {
    let mut p = Pair::ready();
    // Server-initiated request: odd IDs from 1.
    let sid =
        p.s.s
            .subscribe_namespace(ns(&["live"]), Parameters::new())
            .unwrap();
    assert_eq!(sid, RequestId(1));
    p.pump();
    let (cid, _) = incoming_request(&p.c.events);
    // NAMESPACE before the REQUEST_OK is refused locally.
    assert!(p.c.s.namespace(cid, ns(&["a"])).is_err());
    p.c.s.request_ok(cid, RequestOk::default()).unwrap();
    p.c.s.namespace(cid, ns(&["room1"])).unwrap();
    p.c.s.namespace(cid, ns(&["room2"])).unwrap();
    p.c.s.namespace_done(cid, ns(&["room1"])).unwrap();
    p.pump();
    let m = messages(&p.s.events);
    assert!(matches!(m[0], ControlMessage::RequestOk(_)));
    assert_eq!(
        m[1],
        &ControlMessage::Namespace(Namespace {
            suffix: ns(&["room1"])
        })
    );
    assert_eq!(
        m[2],
        &ControlMessage::Namespace(Namespace {
            suffix: ns(&["room2"])
        })
    );
    assert_eq!(
        m[3],
        &ControlMessage::NamespaceDone(NamespaceDone {
            suffix: ns(&["room1"])
        })
    );
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}

// --------------------------------------------------------------------
// Cancellation
// --------------------------------------------------------------------

#[test]
fn cancel_by_subscriber_reaches_publisher() {
    let mut p = Pair::ready();
    let (cid, sid, _) = subscribed(&mut p);
    p.c.s.cancel(cid, StreamResetCode::Cancelled).unwrap();
    p.pump();
    let ev: Vec<_> =
        p.s.events
            .iter()
            .filter(|e| matches!(e, Event::RequestCancelled { .. }))
            .collect();
    assert_eq!(ev.len(), 1);
    assert!(
        matches!(ev[0], Event::RequestCancelled { id, abort: PeerAbort::Reset(StreamResetCode::Cancelled) | PeerAbort::StopSending(StreamResetCode::Cancelled) } if *id == sid)
    );
    assert_eq!(p.c.s.request_count(), 0);
    assert_eq!(p.s.s.request_count(), 0);
    // The alias is gone with the subscription.
    assert!(p.s.s.send_object(object(0, 0, 0, 0, "x")).is_err());
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}

#[test]
fn cancel_by_publisher_reaches_subscriber() {
    let mut p = Pair::ready();
    let (cid, sid, _) = subscribed(&mut p);
    p.s.s.cancel(sid, StreamResetCode::GoingAway).unwrap();
    p.pump();
    assert!(p.c.events.iter().any(|e| matches!(
        e,
        Event::RequestCancelled { id, abort: PeerAbort::Reset(StreamResetCode::GoingAway) | PeerAbort::StopSending(StreamResetCode::GoingAway) } if *id == cid
    )));
    assert_eq!(p.c.s.request_count(), 0);
    assert!(p.c.s.finish(cid).is_err());
}

#[test]
fn stop_sending_on_subgroup_stream() {
    let mut p = Pair::ready();
    let (_, _, alias) = subscribed(&mut p);
    let st = p.s.s.send_object(object(alias, 1, 0, 0, "a")).unwrap();
    p.pump();
    let peer_stream = p.s.to_peer[&st];
    p.c.s
        .on_stop_sending(peer_stream, 0)
        .expect("stop on a stream we do not send is ignored");
    // Simulate the subscriber asking the publisher to stop.
    p.s.s
        .on_stop_sending(st, StreamResetCode::TooFarBehind.code())
        .unwrap();
    p.pump();
    assert!(p.s.events.iter().any(|e| matches!(
        e,
        Event::SubgroupStopped {
            code: StreamResetCode::TooFarBehind,
            ..
        }
    )));
    assert!(p.c.events.iter().any(|e| matches!(
        e,
        Event::SubgroupEnded {
            abort: Some(StreamResetCode::TooFarBehind),
            ..
        }
    )));
    // A new object on the same subgroup opens a new stream.
    let st2 = p.s.s.send_object(object(alias, 1, 0, 1, "b")).unwrap();
    assert_ne!(st, st2);
}
