//! In-memory tests of `moqt::session`: a client and a server `Session`
//! connected by a tiny driver that carries each side's commands to the
//! other side's inputs.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use moqt::session::*;
use moqt::setup::SetupOption;
use moqt::*;

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

// --------------------------------------------------------------------
// Setup
// --------------------------------------------------------------------

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
// Subscriptions and objects
// --------------------------------------------------------------------

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

// --------------------------------------------------------------------
// Request ID and alias rules
// --------------------------------------------------------------------

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

// --------------------------------------------------------------------
// Datagrams and GOAWAY
// --------------------------------------------------------------------

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

// --------------------------------------------------------------------
// Garbage never panics
// --------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Bytes {
        let n = (self.next() as usize) % (max + 1);
        let mut v = Vec::with_capacity(n);
        // Bias towards small values so varints and types are plausible.
        for _ in 0..n {
            let r = self.next();
            v.push(if r.is_multiple_of(3) {
                (r >> 8) as u8 & 0x1f
            } else {
                (r >> 8) as u8
            });
        }
        Bytes::from(v)
    }
}

fn feed_garbage(s: &mut Session, stream: StreamRef, rng: &mut Rng, prefix: Option<Bytes>) {
    if let Some(p) = prefix {
        let _ = s.on_stream_data(stream, p, false);
    }
    for _ in 0..4 {
        let fin = rng.next().is_multiple_of(5);
        let _ = s.on_stream_data(stream, rng.bytes(40), fin);
        if fin {
            break;
        }
    }
    if rng.next().is_multiple_of(7) {
        let _ = s.on_stream_reset(stream, rng.next() % 20);
    }
    if rng.next().is_multiple_of(7) {
        let _ = s.on_stop_sending(stream, rng.next() % 20);
    }
    drain(s);
}

#[test]
fn garbage_on_every_stream_kind_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000 {
        let role = if round % 2 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        let mut s = Session::new(role, SessionConfig::default());
        drain(&mut s);
        let ready = round % 3 != 0;
        if ready {
            let ctrl = s.on_peer_stream(false);
            s.on_stream_data(ctrl, setup_bytes(), false).unwrap();
            match round % 5 {
                // Garbage on the control stream after SETUP.
                0 => feed_garbage(&mut s, ctrl, &mut rng, None),
                // A valid request then garbage on its stream.
                1 => {
                    let bidi = s.on_peer_stream(true);
                    let id = if role == Role::Server { 0 } else { 1 };
                    feed_garbage(&mut s, bidi, &mut rng, Some(subscribe_msg(id)));
                }
                // A subgroup header then garbage objects.
                2 => {
                    let uni = s.on_peer_stream(false);
                    let mut h = BytesMut::new();
                    SubgroupHeader {
                        track_alias: 1,
                        has_properties: rng.next().is_multiple_of(2),
                        ..SubgroupHeader::default()
                    }
                    .encode(&mut h)
                    .unwrap();
                    feed_garbage(&mut s, uni, &mut rng, Some(h.freeze()));
                }
                _ => {}
            }
        }
        let bidi = s.on_peer_stream(true);
        feed_garbage(&mut s, bidi, &mut rng, None);
        let uni = s.on_peer_stream(false);
        feed_garbage(&mut s, uni, &mut rng, None);
        for _ in 0..3 {
            let _ = s.on_datagram(rng.bytes(30));
        }
        if !ready {
            let ctrl = s.on_peer_stream(false);
            let _ = s.on_stream_data(ctrl, setup_bytes(), false);
        }
        // Whatever happened, the session still answers calls sanely.
        let _ = s.subscribe(track("x"), Parameters::new());
        drain(&mut s);
    }
}

#[test]
fn garbage_between_live_sessions_never_panics() {
    let mut rng = Rng(12345);
    for _ in 0..300 {
        let mut p = Pair::ready();
        let (_, _, alias) = subscribed(&mut p);
        p.s.s.send_object(object(alias, 1, 0, 0, "ok")).unwrap();
        p.pump();
        // Corrupt one random command from the server's next batch.
        p.s.s.send_object(object(alias, 1, 0, 1, "ok2")).unwrap();
        p.s.s
            .namespace(RequestId(99), ns(&["x"]))
            .expect_err("unknown request");
        let cmds = p.take_commands(Side::S);
        for c in cmds {
            let c = match c {
                Command::Write { stream, fin, .. } if rng.next().is_multiple_of(2) => {
                    Command::Write {
                        stream,
                        data: rng.bytes(20),
                        fin,
                    }
                }
                c => c,
            };
            p.deliver(Side::S, c);
        }
        p.pump();
    }
}

// --------------------------------------------------------------------
// Limits and zero-copy sending
// --------------------------------------------------------------------

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
