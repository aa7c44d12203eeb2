//! In-memory tests of `moqt::session`: a client and a server `Session`
//! connected by a tiny driver that carries each side's commands to the
//! other side's inputs.
//!
//! One file per topic; the shared helpers and the driver are here.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use moqt::session::*;
use moqt::setup::SetupOption;
use moqt::*;

mod garbage;
mod goaway;
mod limits;
mod requests;
mod setup;
mod subscriptions;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn ns(fields: &[&str]) -> TrackNamespace {
    TrackNamespace::new(fields.iter().map(|f| b(f))).unwrap()
}

fn track(name: &str) -> FullTrackName {
    FullTrackName::new(ns(&["live", "room"]), b(name)).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    C,
    S,
}

/// One endpoint plus the map from its stream handles to the peer's.
struct End {
    s: Session,
    to_peer: HashMap<StreamRef, StreamRef>,
    events: Vec<Event>,
    closed: Option<(SessionErrorCode, String)>,
}

struct Pair {
    c: End,
    s: End,
    /// Split every write into chunks of at most this many bytes.
    chunk: usize,
}

impl Pair {
    fn new() -> Self {
        let cfg = |name: &str| SessionConfig {
            setup: Setup {
                options: vec![SetupOption::MoqtImplementation(b(name))],
            },
            ..SessionConfig::default()
        };
        let end = |s| End {
            s,
            to_peer: HashMap::new(),
            events: Vec::new(),
            closed: None,
        };
        Pair {
            c: end(Session::new(Role::Client, cfg("client"))),
            s: end(Session::new(Role::Server, cfg("server"))),
            chunk: usize::MAX,
        }
    }

    /// A pair after the setup handshake, events drained.
    fn ready() -> Self {
        let mut p = Pair::new();
        p.pump();
        assert!(p.c.s.is_ready() && p.s.s.is_ready());
        p.c.events.clear();
        p.s.events.clear();
        p
    }

    fn ends(&mut self, from: Side) -> (&mut End, &mut End) {
        match from {
            Side::C => (&mut self.c, &mut self.s),
            Side::S => (&mut self.s, &mut self.c),
        }
    }

    fn take_commands(&mut self, from: Side) -> Vec<Command> {
        let (src, _) = self.ends(from);
        std::iter::from_fn(|| src.s.poll_command()).collect()
    }

    /// Deliver one command of `from` to the other side.
    fn deliver(&mut self, from: Side, cmd: Command) {
        let chunk = self.chunk;
        let (src, dst) = self.ends(from);
        if src.closed.is_some() || dst.closed.is_some() {
            return;
        }
        match cmd {
            Command::OpenUni(s) => {
                let t = dst.s.on_peer_stream(false);
                src.to_peer.insert(s, t);
            }
            Command::OpenBi(s) => {
                let t = dst.s.on_peer_stream(true);
                src.to_peer.insert(s, t);
                dst.to_peer.insert(t, s);
            }
            Command::Write { stream, data, fin } => {
                let t = src.to_peer[&stream];
                if data.is_empty() {
                    let _ = dst.s.on_stream_data(t, data, fin);
                } else {
                    let mut rest = data;
                    while !rest.is_empty() {
                        let piece = rest.split_to(rest.len().min(chunk));
                        let last = rest.is_empty();
                        let _ = dst.s.on_stream_data(t, piece, fin && last);
                    }
                }
            }
            Command::Finish(s) => {
                let t = src.to_peer[&s];
                let _ = dst.s.on_stream_data(t, Bytes::new(), true);
            }
            Command::Reset { stream, code } => {
                let t = src.to_peer[&stream];
                let _ = dst.s.on_stream_reset(t, code.code());
            }
            Command::StopSending { stream, code } => {
                let t = src.to_peer[&stream];
                let _ = dst.s.on_stop_sending(t, code.code());
            }
            Command::SendDatagram(d) => {
                let _ = dst.s.on_datagram(d);
            }
            Command::Close { code, reason } => src.closed = Some((code, reason)),
        }
    }

    /// Shuttle commands both ways until nothing moves; collect events.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for side in [Side::C, Side::S] {
                for cmd in self.take_commands(side) {
                    moved = true;
                    self.deliver(side, cmd);
                }
            }
            for side in [Side::C, Side::S] {
                let (e, _) = self.ends(side);
                while let Some(ev) = e.s.poll_event() {
                    moved = true;
                    e.events.push(ev);
                }
            }
            if !moved {
                break;
            }
        }
    }
}

/// Raw peer input into one session: opens streams and writes bytes as
/// a (possibly misbehaving) peer would.
fn drain(s: &mut Session) -> (Vec<Command>, Vec<Event>) {
    (
        std::iter::from_fn(|| s.poll_command()).collect(),
        std::iter::from_fn(|| s.poll_event()).collect(),
    )
}

fn close_code(s: &mut Session) -> Option<SessionErrorCode> {
    let (cmds, _) = drain(s);
    cmds.into_iter().find_map(|c| match c {
        Command::Close { code, .. } => Some(code),
        _ => None,
    })
}

fn setup_bytes() -> Bytes {
    ControlMessage::Setup(Setup::default()).to_bytes().unwrap()
}

/// A server session that has received a client's SETUP.
fn ready_server() -> (Session, StreamRef) {
    let mut s = Session::new(Role::Server, SessionConfig::default());
    let ctrl = s.on_peer_stream(false);
    s.on_stream_data(ctrl, setup_bytes(), false).unwrap();
    assert!(s.is_ready());
    drain(&mut s);
    (s, ctrl)
}

fn subscribe_msg(request_id: u64) -> Bytes {
    ControlMessage::Subscribe(Subscribe {
        request_id,
        track: track("video"),
        parameters: Parameters::new(),
    })
    .to_bytes()
    .unwrap()
}

fn messages(events: &[Event]) -> Vec<&ControlMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message),
            _ => None,
        })
        .collect()
}

fn objects(events: &[Event]) -> Vec<&session::Object> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Object(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn incoming_request(events: &[Event]) -> (RequestId, ControlMessage) {
    events
        .iter()
        .find_map(|e| match e {
            Event::Request { id, message } => Some((*id, message.clone())),
            _ => None,
        })
        .expect("a request event")
}

fn subscribed(p: &mut Pair) -> (RequestId, RequestId, u64) {
    let cid = p.c.s.subscribe(track("video"), Parameters::new()).unwrap();
    assert_eq!(cid, RequestId(0));
    p.pump();
    let (sid, msg) = incoming_request(&p.s.events);
    assert_eq!(sid, cid);
    assert!(matches!(msg, ControlMessage::Subscribe(ref s) if s.track == track("video")));
    let alias =
        p.s.s
            .subscribe_ok(sid, Parameters::new(), Properties::new())
            .unwrap();
    p.pump();
    match messages(&p.c.events)[..] {
        [ControlMessage::SubscribeOk(ok)] => assert_eq!(ok.track_alias, alias),
        ref m => panic!("unexpected {m:?}"),
    }
    p.c.events.clear();
    p.s.events.clear();
    (cid, sid, alias)
}

fn object(alias: u64, group: u64, subgroup: u64, id: u64, payload: &str) -> OutgoingObject {
    OutgoingObject {
        track_alias: alias,
        location: Location::new(group, id),
        subgroup,
        publisher_priority: Some(7),
        payload: b(payload),
        ..OutgoingObject::default()
    }
}
