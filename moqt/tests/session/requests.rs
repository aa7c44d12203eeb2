//! Request ID and Track Alias rules, and the protocol violations that
//! close a session.

use super::*;

#[test]
fn wrong_parity_request_id_closes() {
    let (mut s, _) = ready_server();
    let bidi = s.on_peer_stream(true);
    assert!(s.on_stream_data(bidi, subscribe_msg(1), false).is_err());
    assert_eq!(close_code(&mut s), Some(SessionErrorCode::InvalidRequestId));
}

#[test]
fn duplicate_request_id_closes() {
    let (mut s, _) = ready_server();
    for id in [0, 4, 2] {
        let bidi = s.on_peer_stream(true);
        s.on_stream_data(bidi, subscribe_msg(id), false).unwrap();
    }
    let bidi = s.on_peer_stream(true);
    assert!(s.on_stream_data(bidi, subscribe_msg(2), false).is_err());
    assert_eq!(close_code(&mut s), Some(SessionErrorCode::InvalidRequestId));
}

#[test]
fn out_of_order_and_extreme_request_ids() {
    let (mut s, _) = ready_server();
    // Gaps are fine, late arrivals below the highest ID too, once.
    for id in [10, 4, 0, u64::MAX - 1] {
        let bidi = s.on_peer_stream(true);
        s.on_stream_data(bidi, subscribe_msg(id), false).unwrap();
    }
    for id in [4, u64::MAX - 1] {
        let (mut s2, _) = ready_server();
        for first in [4, u64::MAX - 1] {
            let bidi = s2.on_peer_stream(true);
            s2.on_stream_data(bidi, subscribe_msg(first), false)
                .unwrap();
        }
        let bidi = s2.on_peer_stream(true);
        assert!(s2.on_stream_data(bidi, subscribe_msg(id), false).is_err());
        assert_eq!(
            close_code(&mut s2),
            Some(SessionErrorCode::InvalidRequestId)
        );
    }
    // The client side sees odd IDs; 2^64-1 is odd and still tracked.
    let mut c = Session::new(Role::Client, SessionConfig::default());
    let ctrl = c.on_peer_stream(false);
    c.on_stream_data(ctrl, setup_bytes(), false).unwrap();
    for (i, id) in [u64::MAX, u64::MAX].into_iter().enumerate() {
        let bidi = c.on_peer_stream(true);
        assert_eq!(
            c.on_stream_data(bidi, subscribe_msg(id), false).is_err(),
            i == 1
        );
    }
    assert_eq!(close_code(&mut c), Some(SessionErrorCode::InvalidRequestId));
}

#[test]
fn connection_closed_by_transport() {
    let (mut s, _) = ready_server();
    s.subscribe(track("x"), Parameters::new()).unwrap();
    s.on_connection_closed(0x3, "peer said so");
    let (cmds, events) = drain(&mut s);
    assert!(cmds.is_empty());
    assert_eq!(
        events.last(),
        Some(&Event::Closed {
            code: SessionErrorCode::ProtocolViolation,
            reason: "peer said so".into()
        })
    );
    assert_eq!(s.request_count(), 0);
}

#[test]
fn duplicate_request_id_in_request_update_closes() {
    let (mut s, _) = ready_server();
    let bidi = s.on_peer_stream(true);
    s.on_stream_data(bidi, subscribe_msg(0), false).unwrap();
    let upd = ControlMessage::RequestUpdate(RequestUpdate {
        request_id: 0,
        parameters: Parameters::new(),
    })
    .to_bytes()
    .unwrap();
    assert!(s.on_stream_data(bidi, upd, false).is_err());
    assert_eq!(close_code(&mut s), Some(SessionErrorCode::InvalidRequestId));
}

#[test]
fn duplicate_track_alias_closes() {
    let (mut s, _) = ready_server();
    for (i, id) in [0u64, 2].into_iter().enumerate() {
        let bidi = s.on_peer_stream(true);
        let msg = ControlMessage::Publish(Publish {
            request_id: id,
            track: track(&format!("t{id}")),
            track_alias: 42,
            parameters: Parameters::new(),
            track_properties: Properties::new(),
        })
        .to_bytes()
        .unwrap();
        let r = s.on_stream_data(bidi, msg, false);
        assert_eq!(r.is_err(), i == 1);
    }
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::DuplicateTrackAlias)
    );
}

#[test]
fn duplicate_alias_in_subscribe_ok_closes() {
    let mut c = Session::new(Role::Client, SessionConfig::default());
    let ctrl = c.on_peer_stream(false);
    c.on_stream_data(ctrl, setup_bytes(), false).unwrap();
    let a = c.subscribe(track("a"), Parameters::new()).unwrap();
    let bb = c.subscribe(track("b"), Parameters::new()).unwrap();
    // Map the client's own bidi handles: OpenBi commands carry them.
    let (cmds, _) = drain(&mut c);
    let bidis: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::OpenBi(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(bidis.len(), 2);
    let ok = ControlMessage::SubscribeOk(SubscribeOk {
        track_alias: 7,
        parameters: Parameters::new(),
        track_properties: Properties::new(),
    })
    .to_bytes()
    .unwrap();
    c.on_stream_data(bidis[0], ok.clone(), false).unwrap();
    assert!(c.on_stream_data(bidis[1], ok, false).is_err());
    assert_eq!(
        close_code(&mut c),
        Some(SessionErrorCode::DuplicateTrackAlias)
    );
    let _ = (a, bb);
}

#[test]
fn request_ids_sequence() {
    let mut p = Pair::ready();
    let ids: Vec<_> = (0..3)
        .map(|i| {
            p.c.s
                .subscribe(track(&format!("t{i}")), Parameters::new())
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![RequestId(0), RequestId(2), RequestId(4)]);
    let ids: Vec<_> = (0..2)
        .map(|i| {
            p.s.s
                .track_status(track(&format!("t{i}")), Parameters::new())
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![RequestId(1), RequestId(3)]);
    p.pump();
    assert!(p.c.closed.is_none() && p.s.closed.is_none());
    assert_eq!(p.s.events.len(), 3);
    assert_eq!(p.c.events.len(), 2);
}

// --------------------------------------------------------------------
// Protocol violations
// --------------------------------------------------------------------

#[test]
fn malformed_control_message_closes() {
    // SUBSCRIBE whose length claims more than its fields fill.
    let (mut s, _) = ready_server();
    let bidi = s.on_peer_stream(true);
    let mut wire = BytesMut::new();
    wire.put_u8(0x03);
    wire.put_u16(2);
    wire.put_slice(&[0x00, 0x00]);
    assert!(s.on_stream_data(bidi, wire.freeze(), false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn unknown_message_type_closes() {
    let (mut s, ctrl) = ready_server();
    let mut wire = BytesMut::new();
    wire.put_u8(0x3f);
    wire.put_u16(0);
    assert!(s.on_stream_data(ctrl, wire.freeze(), false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn request_on_control_stream_closes() {
    let (mut s, ctrl) = ready_server();
    assert!(s.on_stream_data(ctrl, subscribe_msg(0), false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn bidi_starting_with_response_closes() {
    let (mut s, _) = ready_server();
    let bidi = s.on_peer_stream(true);
    let msg = ControlMessage::RequestOk(RequestOk::default())
        .to_bytes()
        .unwrap();
    assert!(s.on_stream_data(bidi, msg, false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn unexpected_response_closes() {
    // FETCH_OK answering a SUBSCRIBE.
    let mut c = Session::new(Role::Client, SessionConfig::default());
    c.subscribe(track("a"), Parameters::new()).unwrap();
    let (cmds, _) = drain(&mut c);
    let bidi = cmds
        .iter()
        .find_map(|c| match c {
            Command::OpenBi(s) => Some(*s),
            _ => None,
        })
        .unwrap();
    let msg = ControlMessage::FetchOk(FetchOk {
        end_of_track: false,
        end_location: Location::new(0, 0),
        parameters: Parameters::new(),
        track_properties: Properties::new(),
    })
    .to_bytes()
    .unwrap();
    assert!(c.on_stream_data(bidi, msg, false).is_err());
    assert_eq!(
        close_code(&mut c),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn control_stream_fin_or_reset_closes() {
    let (mut s, ctrl) = ready_server();
    assert!(s.on_stream_data(ctrl, Bytes::new(), true).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );

    let (mut s, ctrl) = ready_server();
    assert!(s.on_stream_reset(ctrl, 0).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );

    let mut s = Session::new(Role::Server, SessionConfig::default());
    let (cmds, _) = drain(&mut s);
    let Command::OpenUni(own) = cmds[0] else {
        panic!()
    };
    assert!(s.on_stop_sending(own, 0).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn second_control_stream_closes() {
    let (mut s, _) = ready_server();
    let ctrl2 = s.on_peer_stream(false);
    assert!(s.on_stream_data(ctrl2, setup_bytes(), false).is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn unknown_stream_type_closes_even_before_setup() {
    let mut s = Session::new(Role::Server, SessionConfig::default());
    drain(&mut s);
    let st = s.on_peer_stream(false);
    assert!(s
        .on_stream_data(st, Bytes::from_static(&[0x3f]), false)
        .is_err());
    assert_eq!(
        close_code(&mut s),
        Some(SessionErrorCode::ProtocolViolation)
    );
}

#[test]
fn closed_session_ignores_everything() {
    let (mut s, ctrl) = ready_server();
    s.close(SessionErrorCode::NoError, "bye");
    let (cmds, events) = drain(&mut s);
    assert_eq!(
        cmds,
        vec![Command::Close {
            code: SessionErrorCode::NoError,
            reason: "bye".into()
        }]
    );
    assert!(matches!(events[..], [Event::Closed { .. }]));
    assert!(s.on_stream_data(ctrl, subscribe_msg(0), false).is_err());
    assert!(s.subscribe(track("x"), Parameters::new()).is_err());
    let (cmds, events) = drain(&mut s);
    assert!(cmds.is_empty() && events.is_empty());
}
