//! Objects in datagrams, and GOAWAY.

use super::*;

#[test]
fn datagrams_carry_objects() {
    let mut p = Pair::ready();
    let (cid, _, alias) = subscribed(&mut p);
    p.s.s
        .send_datagram(&ObjectDatagram {
            track_alias: alias,
            group_id: 9,
            object_id: 1,
            publisher_priority: Some(3),
            end_of_group: true,
            properties: Properties::new(),
            content: DatagramContent::Payload(b("dg")),
        })
        .unwrap();
    assert!(p
        .s
        .s
        .send_datagram(&ObjectDatagram {
            track_alias: alias + 1,
            ..ObjectDatagram::default()
        })
        .is_err());
    p.pump();
    let objs = objects(&p.c.events);
    assert_eq!(objs.len(), 1);
    let o = objs[0];
    assert_eq!(
        (o.track_alias, o.request, o.location, o.subgroup),
        (alias, Some(cid), Location::new(9, 1), None)
    );
    assert_eq!((o.publisher_priority, o.end_of_group), (Some(3), true));
    assert_eq!(o.payload, b("dg"));
    // A malformed datagram closes the session.
    let (mut s, _) = ready_server();
    assert!(s.on_datagram(Bytes::from_static(&[0x3f, 0x00])).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn goaway_from_server() {
    let mut p = Pair::ready();
    p.s.s.go_away(b("moqt://elsewhere"), 5000).unwrap();
    assert!(p.s.s.go_away(Bytes::new(), 0).is_err(), "only one GOAWAY");
    p.pump();
    assert_eq!(
        p.c.events,
        vec![Event::GoAway {
            new_session_uri: b("moqt://elsewhere"),
            timeout: 5000
        }]
    );
    assert_eq!(
        p.c.s.subscribe(track("x"), Parameters::new()),
        Err(SessionError::GoingAway)
    );
    // The client's GOAWAY must carry an empty URI.
    assert!(p.c.s.go_away(b("x"), 0).is_err());
    p.c.s.go_away(Bytes::new(), 0).unwrap();
    p.pump();
    assert!(matches!(p.s.events[..], [Event::GoAway { .. }]));
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
}

#[test]
fn second_goaway_or_client_uri_closes() {
    // From a client: the server's next request ID, odd (§10.4).
    let goaway = |uri: &str| goaway_with(uri, Some(1));

    let (mut s, ctrl) = ready_server();
    s.on_stream_data(ctrl, goaway(""), false).unwrap();
    assert!(s.on_stream_data(ctrl, goaway(""), false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );

    let (mut s, ctrl) = ready_server();
    assert!(s.on_stream_data(ctrl, goaway("moqt://x"), false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

fn goaway_with(uri: &str, request_id: Option<u64>) -> Bytes {
    ControlMessage::GoAway(GoAway {
        new_session_uri: b(uri),
        timeout: 0,
        request_id,
    })
    .to_bytes()
    .unwrap()
}

#[test]
fn goaway_on_the_control_stream_needs_a_request_id_of_the_receivers_parity() {
    for bad in [None, Some(0), Some(4)] {
        let (mut s, ctrl) = ready_server();
        assert!(s.on_stream_data(ctrl, goaway_with("", bad), false).is_err());
        assert_eq!(
            close_code(&mut s),
            Some(SessionErrorCode::InvalidRequestId),
            "{bad:?}"
        );
    }
}

#[test]
fn a_servers_goaway_names_the_next_client_request_id() {
    let mut p = Pair::ready();
    // Two client requests processed: the next one is 4.
    p.c.s.subscribe(track("a"), Parameters::new()).unwrap();
    p.c.s.subscribe(track("b"), Parameters::new()).unwrap();
    p.pump();
    p.take_commands(Side::S);
    p.s.s.go_away(Bytes::new(), 1000).unwrap();
    let mut buf = p
        .take_commands(Side::S)
        .into_iter()
        .find_map(|c| match c {
            Command::Write { data, .. } => Some(data),
            _ => None,
        })
        .expect("GOAWAY written");
    let ControlMessage::GoAway(g) = ControlMessage::decode(&mut buf).unwrap() else {
        panic!("not a GOAWAY");
    };
    assert_eq!(g.request_id, Some(4));
}
