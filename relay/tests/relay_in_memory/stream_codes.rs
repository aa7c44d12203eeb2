//! The form of stream error codes the relay sends a peer whose dialect it
//! has not learnt yet (see `moqt::codes::StreamCodeDialect`).

use crate::common::{is_subscribe_ok, is_upstream_subscribe, track, Stepped};
use moqt::{
    codes::webtransport_code, session::Event as SessionEvent, Parameters, Properties,
    StreamResetCode,
};
use quinn_proto::{Dir, Side, StreamId, VarInt};

use crate::harness::*;

/// quinn sends STOP_SENDING 0 on its own whenever an application drops a
/// receive stream before its end, whatever codes the application speaks.
/// A WebTransport-mapping peer (moq-transport over raw QUIC) that does so
/// must keep getting mapped codes: a draft code ends its whole session.
#[test]
fn a_peer_s_stop_sending_0_does_not_switch_the_relay_to_draft_codes() {
    let mut h = Harness::new(2);
    h.ready();
    publish_namespace(&mut h);
    let downstream: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            h.clients[1]
                .driver
                .session
                .subscribe(track(name), Parameters::default())
                .unwrap()
        })
        .collect();
    let mut upstream = Vec::new();
    h.run_until("both upstream SUBSCRIBEs", |h| {
        for e in h.clients[0].take(is_upstream_subscribe) {
            let SessionEvent::Request { id, .. } = e else {
                unreachable!()
            };
            upstream.push(id);
        }
        upstream.len() == 2
    });
    for id in upstream {
        h.clients[0]
            .driver
            .session
            .subscribe_ok(id, Parameters::default(), Properties::new())
            .unwrap();
    }
    let mut ok = 0;
    h.run_until("both SUBSCRIBE_OKs downstream", |h| {
        ok += h.clients[1].take(is_subscribe_ok).len();
        ok == 2
    });

    // The relay opened the publisher's two request streams, in order.
    let first = StreamId::new(Side::Server, Dir::Bi, 0);
    let second = StreamId::new(Side::Server, Dir::Bi, 1);
    let publisher = &mut h.clients[0];
    publisher
        .peer
        .conn
        .recv_stream(first)
        .stop(VarInt::from_u32(0))
        .unwrap();
    publisher.intercept = Some(second);
    for _ in 0..20 {
        h.step();
    }

    // The subscriber leaves: the relay cancels the second upstream request.
    let cancelled = StreamResetCode::Cancelled;
    for id in downstream {
        let _ = h.clients[1].driver.session.cancel(id, cancelled);
    }
    h.run_until("the relay's RESET_STREAM on the second request", |h| {
        h.clients[0].intercepted_reset.is_some()
    });
    assert_eq!(
        h.clients[0].intercepted_reset,
        Some(webtransport_code(cancelled.code() as u32)),
        "CANCELLED in the WebTransport-mapped form (a raw {} would end a mapping peer's session)",
        cancelled.code()
    );
}
