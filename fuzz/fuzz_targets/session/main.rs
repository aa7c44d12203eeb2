//! The MoQT session state machine (`moqt::session::Session`), live and in
//! memory, fed a sequence of operations decoded from the input with
//! `arbitrary`.
//!
//! The fuzzer plays the peer *after* the transport: it injects plaintext
//! stream data, resets, STOP_SENDINGs and datagrams straight into the
//! session, so every input gets past the handshake. The session (client or
//! server) gets the peer's SETUP on a control stream first (or after a few
//! early operations, to exercise the pre-SETUP buffering); then come
//! operations whose stream data is either arbitrary bytes or well-formed
//! control messages, subgroup / fetch headers and objects, datagrams built
//! from arbitrary fields with the crate's own encoders, with Request IDs and
//! Track Aliases that mostly refer to live ones, so the state machine gets
//! deep. The application side is driven too (requests, responses, objects,
//! fetch streams, GOAWAY, cancel, close).
//!
//! After every operation all commands and events are drained and checked:
//!
//! * commands only name streams the session opened or the peer opened in a
//!   direction that exists (no write on a peer's unidirectional stream, no
//!   STOP_SENDING on our own unidirectional stream), streams it opens are
//!   new, nothing is written after a FIN or reset, Close is the last
//!   command;
//! * the bytes the session writes parse: its control stream is SETUP then
//!   GOAWAY, request streams carry control messages, its data streams are
//!   well-formed subgroup or fetch streams, its datagrams decode;
//! * events: Ready at most once, no peer request or object before Ready,
//!   Closed once and last, `closed()` agrees with the inputs' results;
//! * an application call that fails emits nothing.
//!
//! The operations are in `input`, the Request IDs and aliases they name in
//! `names`, the parser of what the session writes in `output`, and the
//! harness that applies operations and checks the results in `harness`
//! (peer and transport input), `app` (application calls) and `check`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqt::session::{Event, Role, SessionConfig};
use moqt::ControlMessage;

mod app;
mod check;
mod harness;
mod input;
mod names;
mod output;

use crate::harness::Harness;
use crate::input::Input;

fuzz_target!(|input: Input| {
    let role = if input.server {
        Role::Server
    } else {
        Role::Client
    };
    let mut config = SessionConfig {
        setup: input.our_setup.build(),
        ..SessionConfig::default()
    };
    if input.max_object.0 >= 0xe0 {
        config.max_object_size = usize::from(input.max_object.1);
    }
    if input.cut_through.0 >= 0x80 {
        config.cut_through_bytes = Some(usize::from(input.cut_through.1 % 4096));
    }
    let mut h = Harness::new(role, config);

    // The peer's SETUP on its control stream, possibly after a few
    // operations (streams and datagrams that must wait for it).
    let early = if input.early >= 0xf0 {
        usize::from(input.early & 0x0f)
    } else {
        0
    };
    let peer_setup = if role == Role::Client && !input.allow_path {
        input.peer_setup.build_without_path()
    } else {
        input.peer_setup.build()
    };
    let mut setup = Vec::new();
    ControlMessage::Setup(peer_setup)
        .encode(&mut setup)
        .expect("SETUP does not encode");
    let mut ops = input.ops.iter();
    for op in ops.by_ref().take(early) {
        h.op(op);
    }
    if h.s.closed().is_none() {
        let cs = h.open(false);
        h.control = Some(cs);
        h.data(cs, setup, &input.setup_split, false);
    }
    for op in ops {
        h.op(op);
    }

    // The end: the transport goes away.
    let was_closed = h.s.closed().is_some();
    h.s.on_connection_closed(0, "end");
    assert_eq!(h.s.poll_command(), None);
    if !was_closed {
        assert!(matches!(h.s.poll_event(), Some(Event::Closed { .. })));
    }
    assert_eq!(h.s.poll_event(), None);
});
