//! SETUP, and what a session does with requests and objects that come
//! before it.

use super::*;

#[test]
fn setup_handshake() {
    let mut p = Pair::new();
    // Each side's first commands open its control stream with SETUP.
    let cmds: Vec<_> = std::iter::from_fn(|| p.c.s.poll_command()).collect();
    assert!(matches!(cmds[0], Command::OpenUni(_)));
    assert!(matches!(&cmds[1], Command::Write { data, fin: false, .. }
        if matches!(ControlMessage::decode(&mut data.clone()), Ok(ControlMessage::Setup(_)))));
    for c in cmds {
        p.deliver(Side::C, c);
    }
    p.pump();
    for (end, peer) in [(&p.c, "server"), (&p.s, "client")] {
        assert!(end.s.is_ready());
        match &end.events[0] {
            Event::Ready { peer_setup } => {
                assert_eq!(peer_setup.implementation(), Some(&b(peer)))
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(end.closed.is_none());
    }
}

#[test]
fn server_path_in_setup_is_invalid_path() {
    let mut c = Session::new(Role::Client, SessionConfig::default());
    drain(&mut c);
    let ctrl = c.on_peer_stream(false);
    let setup = ControlMessage::Setup(Setup {
        options: vec![SetupOption::Path(b("/x"))],
    })
    .to_bytes()
    .unwrap();
    assert!(c.on_stream_data(ctrl, setup, false).is_err());
    assert_eq!(close_code(&mut c), Some(SessionErrorCode::InvalidPath));
}

#[test]
fn setup_byte_by_byte() {
    let mut p = Pair::new();
    p.chunk = 1;
    p.pump();
    assert!(p.c.s.is_ready() && p.s.s.is_ready());
}

// --------------------------------------------------------------------
// Before setup
// --------------------------------------------------------------------

#[test]
fn request_and_objects_before_setup_are_buffered() {
    let mut p = Pair::new();
    // The server's control stream reaches the client first.
    for c in p.take_commands(Side::S) {
        p.deliver(Side::S, c);
    }
    let (_, alias_hint) = (0, 0u64);
    let cid = p.c.s.subscribe(track("early"), Parameters::new()).unwrap();
    // Hold the client's control stream (OpenUni + SETUP) back; deliver
    // its request stream first, byte by byte.
    let cmds = p.take_commands(Side::C);
    let (ctrl, rest): (Vec<_>, Vec<_>) = cmds.into_iter().partition(|c| match c {
        Command::OpenUni(s) | Command::Write { stream: s, .. } => s.0 == 0,
        _ => false,
    });
    p.chunk = 1;
    for c in rest {
        p.deliver(Side::C, c);
    }
    // An object stream (raw, on an alias the server does not know yet)
    // and a datagram also arrive early.
    let uni = p.s.s.on_peer_stream(false);
    let mut wire = BytesMut::new();
    let mut enc = SubgroupEncoder::new(SubgroupHeader {
        track_alias: alias_hint,
        group_id: 2,
        ..SubgroupHeader::default()
    });
    enc.encode_header(&mut wire).unwrap();
    enc.encode_object(
        &SubgroupObject {
            object_id: 3,
            payload: b("early-object"),
            ..SubgroupObject::default()
        },
        &mut wire,
    )
    .unwrap();
    p.s.s.on_stream_data(uni, wire.freeze(), false).unwrap();
    let mut dg = BytesMut::new();
    Datagram::Object(ObjectDatagram {
        track_alias: alias_hint,
        group_id: 2,
        object_id: 4,
        content: DatagramContent::Payload(b("early-dgram")),
        ..ObjectDatagram::default()
    })
    .encode(&mut dg)
    .unwrap();
    p.s.s.on_datagram(dg.freeze()).unwrap();
    assert!(p.s.s.poll_event().is_none(), "nothing before SETUP");
    assert!(!p.s.s.is_ready());
    for c in ctrl {
        p.deliver(Side::C, c);
    }
    p.pump();
    let ev = &p.s.events;
    assert!(matches!(ev[0], Event::Ready { .. }), "{ev:?}");
    let (sid, _) = incoming_request(ev);
    assert_eq!(sid, cid);
    let objs = objects(ev);
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0].payload, b("early-object"));
    assert_eq!(objs[0].location, Location::new(2, 3));
    assert_eq!(objs[1].payload, b("early-dgram"));
    assert_eq!(objs[1].subgroup, None);
}

#[test]
fn pre_setup_buffer_is_bounded() {
    let mut s = Session::new(Role::Server, SessionConfig::default());
    drain(&mut s);
    let bidi = s.on_peer_stream(true);
    // A huge request stream prefix is refused, not buffered without end.
    let big = Bytes::from(vec![0u8; MAX_PRE_SETUP_STREAM_BYTES + 1]);
    s.on_stream_data(bidi, big, false).unwrap();
    let (cmds, _) = drain(&mut s);
    assert!(cmds.contains(&Command::Reset {
        stream: bidi,
        code: StreamResetCode::ExcessiveLoad
    }));
    assert!(s.closed().is_none());
}
