//! Resource limits, zero-copy sending, and orderings a relay runs into.

use super::*;

#[test]
fn payload_is_written_as_its_own_bytes() {
    let mut p = Pair::ready();
    let (_, _, alias) = subscribed(&mut p);
    let payload = Bytes::from(vec![1u8; 4096]);
    let mut o = object(alias, 0, 0, 0, "");
    o.payload = payload.clone();
    let st = p.s.s.send_object(o).unwrap();
    let cmds = p.take_commands(Side::S);
    assert!(cmds.iter().any(|c| matches!(c,
        Command::Write { stream, data, fin: false }
            if *stream == st && data.as_ptr() == payload.as_ptr() && data.len() == 4096)));
}

#[test]
fn too_many_peer_requests_are_refused() {
    let (mut s, _) = ready_server();
    let mut last = None;
    for i in 0..=MAX_CONCURRENT_REQUESTS as u64 {
        let bidi = s.on_peer_stream(true);
        s.on_stream_data(bidi, subscribe_msg(2 * i), false).unwrap();
        last = Some(bidi);
    }
    let (cmds, events) = drain(&mut s);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count(),
        MAX_CONCURRENT_REQUESTS
    );
    let refused = cmds
        .iter()
        .find_map(|c| match c {
            Command::Write {
                stream,
                data,
                fin: true,
            } if Some(*stream) == last => Some(data),
            _ => None,
        })
        .expect("REQUEST_ERROR on the refused stream");
    match ControlMessage::decode(&mut refused.clone()).unwrap() {
        ControlMessage::RequestError(e) => {
            assert_eq!(e.error_code, RequestErrorCode::ExcessiveLoad)
        }
        m => panic!("unexpected {m:?}"),
    }
    assert!(s.closed().is_none());
}

#[test]
fn too_many_local_requests_are_refused() {
    let mut s = Session::new(Role::Client, SessionConfig::default());
    for _ in 0..MAX_CONCURRENT_REQUESTS {
        s.subscribe(track("x"), Parameters::new()).unwrap();
    }
    assert_eq!(
        s.subscribe(track("x"), Parameters::new()),
        Err(SessionError::TooManyRequests)
    );
}

#[test]
fn oversized_object_stops_the_stream() {
    let mut s = Session::new(
        Role::Server,
        SessionConfig {
            max_object_size: 100,
            ..SessionConfig::default()
        },
    );
    let ctrl = s.on_peer_stream(false);
    s.on_stream_data(ctrl, setup_bytes(), false).unwrap();
    drain(&mut s);
    let uni = s.on_peer_stream(false);
    let mut wire = BytesMut::new();
    let mut enc = SubgroupEncoder::new(SubgroupHeader::default());
    enc.encode_header(&mut wire).unwrap();
    enc.encode_object(
        &SubgroupObject {
            object_id: 0,
            payload: Bytes::from(vec![0u8; 1000]),
            ..SubgroupObject::default()
        },
        &mut wire,
    )
    .unwrap();
    // Deliver all but the last byte: the object stays incomplete.
    let wire = wire.freeze();
    s.on_stream_data(uni, wire.slice(..wire.len() - 1), false)
        .unwrap();
    let (cmds, events) = drain(&mut s);
    assert!(cmds.contains(&Command::StopSending {
        stream: uni,
        code: StreamResetCode::ExcessiveLoad
    }));
    assert!(matches!(
        events[..],
        [Event::SubgroupEnded {
            abort: Some(StreamResetCode::ExcessiveLoad),
            ..
        }]
    ));
    // Later data on the stopped stream is ignored.
    s.on_stream_data(uni, wire.slice(wire.len() - 1..), true)
        .unwrap();
    assert!(s.closed().is_none());
}

/// Incomplete objects on many streams: together they never hold more
/// than the connection's bound; the streams holding the most are stopped
/// (EXCESSIVE_LOAD), the others keep going, and a completed object frees
/// its stream's buffer.
#[test]
fn incomplete_objects_on_many_streams_stay_within_the_connection_bound() {
    const BOUND: usize = 64 * 1024;
    let mut s = Session::new(
        Role::Server,
        SessionConfig {
            max_object_size: 32 * 1024,
            max_buffered_bytes: BOUND,
            ..SessionConfig::default()
        },
    );
    let ctrl = s.on_peer_stream(false);
    s.on_stream_data(ctrl, setup_bytes(), false).unwrap();
    drain(&mut s);
    // One object of 20 000 bytes per stream, all but its last byte sent:
    // three fit in the bound, the fourth pushes the largest out.
    let object = |id: u64| {
        let mut wire = BytesMut::new();
        let mut enc = SubgroupEncoder::new(SubgroupHeader {
            group_id: id,
            ..SubgroupHeader::default()
        });
        enc.encode_header(&mut wire).unwrap();
        enc.encode_object(
            &SubgroupObject {
                object_id: 0,
                payload: Bytes::from(vec![7u8; 20_000]),
                ..SubgroupObject::default()
            },
            &mut wire,
        )
        .unwrap();
        wire.freeze()
    };
    let mut streams = Vec::new();
    let mut stopped = Vec::new();
    for i in 0..8u64 {
        let uni = s.on_peer_stream(false);
        let wire = object(i);
        // In small chunks, so the buffer grows the slow way.
        let body = wire.slice(..wire.len() - 1);
        for piece in body.chunks(1000) {
            s.on_stream_data(uni, Bytes::copy_from_slice(piece), false)
                .unwrap();
        }
        assert!(
            s.buffered_bytes() <= BOUND,
            "{} buffered after stream {i}",
            s.buffered_bytes()
        );
        let (cmds, _) = drain(&mut s);
        for c in cmds {
            if let Command::StopSending {
                stream,
                code: StreamResetCode::ExcessiveLoad,
            } = c
            {
                stopped.push(stream);
            }
        }
        streams.push((uni, wire));
    }
    assert!(s.closed().is_none());
    assert!(!stopped.is_empty(), "nothing stopped over the bound");
    assert!(stopped.len() < streams.len(), "every stream stopped");
    // The streams still open complete their objects, which frees them.
    let mut delivered = 0;
    for (uni, wire) in &streams {
        if stopped.contains(uni) {
            continue;
        }
        s.on_stream_data(*uni, wire.slice(wire.len() - 1..), true)
            .unwrap();
        let (_, events) = drain(&mut s);
        delivered += events
            .iter()
            .filter(|e| matches!(e, Event::Object(_)))
            .count();
    }
    assert_eq!(delivered, streams.len() - stopped.len());
    assert_eq!(s.buffered_bytes(), 0, "completed objects still buffered");
}

/// A publisher that drops its read side right after PUBLISH_DONE: its
/// STOP_SENDING may overtake the PUBLISH_DONE. The subscriber still gets
/// the PUBLISH_DONE (with its status), and the request ends with the FIN.
#[test]
fn publish_done_arrives_after_the_publishers_stop_sending() {
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
    let cmds = p.take_commands(Side::S);
    let server_stream = cmds
        .iter()
        .find_map(|c| match c {
            Command::Write { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("PUBLISH_DONE written");
    // STOP_SENDING first (in WebTransport's mapped form, as that stack sends it).
    let client_stream = p.s.to_peer[&server_stream];
    p.c.s
        .on_stop_sending(client_stream, moqt::codes::webtransport_code(0))
        .unwrap();
    assert_eq!(
        p.c.s.request_count(),
        1,
        "the request waits for the peer's side"
    );
    for c in cmds {
        p.deliver(Side::S, c);
    }
    p.pump();
    assert!(
        matches!(
            messages(&p.c.events)[..],
            [ControlMessage::PublishDone(ref d)] if d.status_code == PublishDoneCode::TrackEnded
        ),
        "{:?}",
        p.c.events
    );
    assert!(p
        .c
        .events
        .iter()
        .any(|e| matches!(e, Event::RequestCancelled { id, .. } if *id == cid)));
    assert_eq!(p.c.s.request_count(), 0);
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}

/// UNSUBSCRIBE (0xA, drafts up to 16) on the stream of a peer's SUBSCRIBE
/// cancels that subscription; the session stays open.
#[test]
fn legacy_unsubscribe_on_a_subscribe_stream_cancels_it() {
    let mut p = Pair::ready();
    let (cid, sid, _) = subscribed(&mut p);
    // Find the server's end of the request stream through a client write.
    p.c.s.request_update(cid, Parameters::new()).unwrap();
    let client_stream = p
        .take_commands(Side::C)
        .into_iter()
        .find_map(|c| match c {
            Command::Write { stream, .. } => Some(stream),
            _ => None,
        })
        .expect("REQUEST_UPDATE written");
    let server_stream = p.c.to_peer[&client_stream];
    // Type 0xA, length 1, Request ID 0.
    p.s.s
        .on_stream_data(
            server_stream,
            Bytes::from_static(&[0x0A, 0x00, 0x01, 0x00]),
            false,
        )
        .unwrap();
    p.pump();
    assert!(p
        .s
        .events
        .iter()
        .any(|e| matches!(e, Event::RequestCancelled { id, .. } if *id == sid)));
    assert_eq!(p.s.s.request_count(), 0);
    assert!(p.s.s.closed().is_none());
}

/// A request stream that the client finished right after its request and
/// that arrives, FIN and all, before the client's SETUP: buffered, then
/// served after SETUP (not "finished inside its header").
#[test]
fn a_finished_request_stream_before_setup_waits_for_setup() {
    let mut p = Pair::new();
    for c in p.take_commands(Side::S) {
        p.deliver(Side::S, c);
    }
    let cid = p.c.s.subscribe(track("early"), Parameters::new()).unwrap();
    p.c.s.finish(cid).unwrap();
    let cmds = p.take_commands(Side::C);
    let (ctrl, rest): (Vec<_>, Vec<_>) = cmds.into_iter().partition(|c| match c {
        Command::OpenUni(s) | Command::Write { stream: s, .. } => s.0 == 0,
        _ => false,
    });
    for c in rest {
        p.deliver(Side::C, c);
    }
    assert!(p.s.s.closed().is_none(), "closed before SETUP");
    for c in ctrl {
        p.deliver(Side::C, c);
    }
    p.pump();
    let (sid, _) = incoming_request(&p.s.events);
    assert_eq!(sid, cid);
    assert!(p.s.closed.is_none() && p.c.closed.is_none());
}

/// FIRST_OBJECT, END_OF_GROUP and DEFAULT_PRIORITY of a subgroup stream
/// reach the receiver as the sender set them, so a relay can pass them on.
#[test]
fn subgroup_header_bits_travel_to_the_receiver() {
    let mut p = Pair::ready();
    let (_, _, alias) = subscribed(&mut p);
    let flags = StreamFlags {
        end_of_group: true,
        first_object: true,
    };
    let mut first = object(alias, 4, 1, 0, "a");
    first.publisher_priority = None;
    p.s.s.send_object_flagged(first, flags).unwrap();
    p.s.s.send_object(object(alias, 4, 1, 1, "b")).unwrap();
    // Another subgroup without the bits.
    p.s.s.send_object(object(alias, 4, 2, 7, "c")).unwrap();
    p.pump();
    let got: Vec<(u64, bool, bool, Option<u8>)> = objects(&p.c.events)
        .iter()
        .map(|o| {
            (
                o.location.object,
                o.first_object,
                o.end_of_group,
                o.publisher_priority,
            )
        })
        .collect();
    let explicit = object(alias, 0, 0, 0, "").publisher_priority;
    assert_eq!(
        got,
        [
            (0, true, true, None),
            (1, false, true, None),
            (7, false, false, explicit)
        ]
    );
}

/// A REQUEST_UPDATE that arrives before the SUBSCRIBE_OK (a relay still
/// waiting for its upstream) is answered after it: the SUBSCRIBE_OK is
/// not lost and the subscriber reads it first.
#[test]
fn an_update_answered_before_subscribe_ok_follows_it() {
    let mut p = Pair::ready();
    let cid = p.c.s.subscribe(track("video"), Parameters::new()).unwrap();
    p.pump();
    let (sid, _) = incoming_request(&p.s.events);
    p.c.s.request_update(cid, Parameters::new()).unwrap();
    p.pump();
    p.s.s.request_ok(sid, RequestOk::default()).unwrap();
    let alias =
        p.s.s
            .subscribe_ok(sid, Parameters::new(), Properties::new())
            .unwrap();
    p.pump();
    match messages(&p.c.events)[..] {
        [ControlMessage::SubscribeOk(ok), ControlMessage::RequestOk(_)] => {
            assert_eq!(ok.track_alias, alias)
        }
        ref m => panic!("unexpected {m:?}"),
    }
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}
