//! Cut-through in `moqt::session`: long objects surfaced in parts while
//! they stream in, sent in parts, and the bounds around both.

use bytes::{Buf, Bytes, BytesMut};
use moqt::session::*;
use moqt::*;

const CUT: usize = 16 * 1024;

fn server(config: SessionConfig) -> Session {
    let mut s = Session::new(Role::Server, config);
    let ctrl = s.on_peer_stream(false);
    let setup = ControlMessage::Setup(Setup::default()).to_bytes().unwrap();
    s.on_stream_data(ctrl, setup, false).unwrap();
    assert!(s.is_ready());
    drain(&mut s);
    s
}

fn cut_through() -> SessionConfig {
    SessionConfig {
        cut_through_bytes: Some(CUT),
        ..SessionConfig::default()
    }
}

fn drain(s: &mut Session) -> (Vec<Command>, Vec<Event>) {
    (
        std::iter::from_fn(|| s.poll_command()).collect(),
        std::iter::from_fn(|| s.poll_event()).collect(),
    )
}

fn objects(events: Vec<Event>) -> Vec<session::Object> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Object(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// A subgroup stream's header plus one object header declaring `length`
/// payload bytes (with one property), and the payload itself.
fn long_object(length: usize) -> (Bytes, Bytes, SubgroupEncoder) {
    let mut enc = SubgroupEncoder::new(SubgroupHeader {
        track_alias: 4,
        group_id: 9,
        has_properties: true,
        ..SubgroupHeader::default()
    });
    let mut head = BytesMut::new();
    enc.encode_header(&mut head).unwrap();
    let mut properties = Properties::new();
    properties
        .push(KeyValuePair::varint(0x3e, 7).unwrap())
        .unwrap();
    enc.encode_object_header(
        &SubgroupObjectHeader {
            object_id: 0,
            properties,
            status: ObjectStatus::Normal,
            payload_len: length as u64,
        },
        &mut head,
    )
    .unwrap();
    let payload: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
    (head.freeze(), Bytes::from(payload), enc)
}

/// A long object arriving in packet-sized chunks is passed on in parts of
/// at least the cut-through size, in order, the first one carrying the
/// properties; the stream never holds much more than one part; a short
/// object after it still arrives whole.
#[test]
fn long_objects_arrive_in_parts_while_they_stream_in() {
    let mut s = server(cut_through());
    let uni = s.on_peer_stream(false);
    let (head, payload, mut enc) = long_object(100_000);
    s.on_stream_data(uni, head, false).unwrap();
    let mut parts = Vec::new();
    let mut fed = 0;
    for piece in payload.chunks(1200) {
        s.on_stream_data(uni, Bytes::copy_from_slice(piece), false)
            .unwrap();
        fed += piece.len();
        assert!(
            s.buffered_bytes() <= CUT + 2 * 1200 + CUT / 4,
            "{} bytes held after {fed} fed",
            s.buffered_bytes()
        );
        for o in objects(drain(&mut s).1) {
            let part = o.part.expect("a long object comes in parts");
            // Nothing waits once a part's worth is here.
            assert_eq!(part.offset as usize + o.payload.len(), fed);
            parts.push(o);
        }
    }
    assert!(parts.len() >= 2, "{} parts", parts.len());
    let mut whole = BytesMut::new();
    for (i, o) in parts.iter().enumerate() {
        let part = o.part.unwrap();
        assert_eq!(part.offset as usize, whole.len(), "part {i} out of place");
        assert_eq!(part.length, 100_000);
        assert_eq!(o.location, Location::new(9, 0));
        assert_eq!(o.track_alias, 4);
        if i + 1 < parts.len() {
            assert!(o.payload.len() >= CUT, "part {i} of {}", o.payload.len());
        }
        assert_eq!(o.properties.pairs().is_empty(), i > 0);
        whole.extend_from_slice(&o.payload);
    }
    assert_eq!(whole.freeze(), payload);
    assert_eq!(s.buffered_bytes(), 0);

    // A short object then arrives whole, and the FIN ends the stream.
    let mut tail = BytesMut::new();
    enc.encode_object(
        &SubgroupObject {
            object_id: 1,
            payload: Bytes::from_static(b"short"),
            ..SubgroupObject::default()
        },
        &mut tail,
    )
    .unwrap();
    s.on_stream_data(uni, tail.freeze(), true).unwrap();
    let (_, events) = drain(&mut s);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::SubgroupEnded { abort: None, .. })));
    let short = objects(events);
    assert_eq!(short.len(), 1);
    assert_eq!(short[0].part, None);
    assert_eq!(short[0].payload, Bytes::from_static(b"short"));
}

/// Without cut-through (the default) the same object arrives whole.
#[test]
fn without_cut_through_objects_arrive_whole() {
    let mut s = server(SessionConfig::default());
    let uni = s.on_peer_stream(false);
    let (head, payload, _) = long_object(100_000);
    s.on_stream_data(uni, head, false).unwrap();
    for piece in payload.chunks(1200) {
        s.on_stream_data(uni, Bytes::copy_from_slice(piece), false)
            .unwrap();
    }
    let got = objects(drain(&mut s).1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].part, None);
    assert_eq!(got[0].payload, payload);
}

/// A FIN inside an object being passed on in parts is a protocol
/// violation like a FIN inside a buffered one.
#[test]
fn a_stream_finished_inside_a_part_delivered_object_closes_the_session() {
    let mut s = server(cut_through());
    let uni = s.on_peer_stream(false);
    let (head, payload, _) = long_object(100_000);
    s.on_stream_data(uni, head, false).unwrap();
    s.on_stream_data(uni, payload.slice(..40_000), true)
        .unwrap_err();
    let (cmds, _) = drain(&mut s);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Close {
            code: SessionErrorCode::ProtocolViolation,
            ..
        }
    )));
}

/// An object declaring more than the largest allowed is refused as soon
/// as its header is read, with or without cut-through: nothing of it is
/// buffered or passed on, and only its stream pays.
#[test]
fn an_object_declaring_too_much_is_stopped_at_its_header() {
    for cut in [None, Some(CUT)] {
        let mut s = server(SessionConfig {
            max_object_size: 1 << 20,
            cut_through_bytes: cut,
            ..SessionConfig::default()
        });
        let uni = s.on_peer_stream(false);
        let (head, payload, _) = long_object(2 << 20);
        s.on_stream_data(uni, head, false).unwrap();
        let (cmds, events) = drain(&mut s);
        assert!(
            cmds.contains(&Command::StopSending {
                stream: uni,
                code: StreamResetCode::ExcessiveLoad
            }),
            "{cut:?}: {cmds:?}"
        );
        assert!(events.iter().any(|e| matches!(
            e,
            Event::SubgroupEnded {
                abort: Some(StreamResetCode::ExcessiveLoad),
                ..
            }
        )));
        // What the peer still sends is dropped, not held.
        s.on_stream_data(uni, payload.slice(..100_000), false)
            .unwrap();
        assert_eq!(s.buffered_bytes(), 0);
        assert!(objects(drain(&mut s).1).is_empty());
        assert!(s.closed().is_none());
    }
}

/// A server with one subscription from the peer: returns the Track Alias.
fn subscribed_server() -> (Session, u64) {
    let mut s = server(SessionConfig::default());
    let bidi = s.on_peer_stream(true);
    let subscribe = ControlMessage::Subscribe(Subscribe {
        request_id: 0,
        track: FullTrackName::new(
            TrackNamespace::new([Bytes::from_static(b"live")]).unwrap(),
            Bytes::from_static(b"video"),
        )
        .unwrap(),
        parameters: Parameters::new(),
    })
    .to_bytes()
    .unwrap();
    s.on_stream_data(bidi, subscribe, false).unwrap();
    let (_, events) = drain(&mut s);
    let id = events
        .iter()
        .find_map(|e| match e {
            Event::Request { id, .. } => Some(*id),
            _ => None,
        })
        .expect("the SUBSCRIBE");
    let alias = s
        .subscribe_ok(id, Parameters::new(), Properties::new())
        .unwrap();
    drain(&mut s);
    (s, alias)
}

fn out(alias: u64, object: u64, payload: &'static [u8]) -> OutgoingObject {
    OutgoingObject {
        track_alias: alias,
        location: Location::new(3, object),
        payload: Bytes::from_static(payload),
        ..OutgoingObject::default()
    }
}

fn part(offset: u64, length: u64) -> PayloadPart {
    PayloadPart { offset, length }
}

/// The bytes written on `stream` and whether it was finished or reset.
fn written(cmds: &[Command], stream: StreamRef) -> (BytesMut, Option<bool>) {
    let mut wire = BytesMut::new();
    let mut end = None;
    for c in cmds {
        match c {
            Command::Write {
                stream: s,
                data,
                fin,
            } if *s == stream => {
                wire.extend_from_slice(data);
                if *fin {
                    end = Some(true);
                }
            }
            Command::Finish(s) if *s == stream => end = Some(true),
            Command::Reset { stream: s, .. } if *s == stream => end = Some(false),
            _ => {}
        }
    }
    (wire, end)
}

/// Parts go out as one object on the wire: the header declares the whole
/// length, later parts continue it exactly; anything else (a part out of
/// sequence or too long, another object before the last part) is refused
/// and leaves the stream as it was; a stream ended inside an object is
/// reset, not finished.
#[test]
fn parts_are_sent_as_one_object_and_only_in_sequence() {
    let (mut s, alias) = subscribed_server();
    let flags = StreamFlags::default();
    let stream = s
        .send_object_part(out(alias, 0, b"abcd"), part(0, 10), flags)
        .unwrap();
    let refused = [
        s.send_object(out(alias, 1, b"other")),
        s.send_object_part(out(alias, 0, b"fg"), part(5, 10), flags),
        s.send_object_part(out(alias, 0, b"efghijk"), part(4, 10), flags),
        s.send_object_part(out(alias, 1, b"ef"), part(4, 10), flags),
    ];
    for r in refused {
        assert!(matches!(r, Err(SessionError::InvalidState(_))), "{r:?}");
    }
    s.send_object_part(out(alias, 0, b"ef"), part(4, 10), flags)
        .unwrap();
    s.send_object_part(out(alias, 0, b"ghij"), part(6, 10), flags)
        .unwrap();
    // Complete: the next object may follow.
    s.send_object(out(alias, 1, b"next")).unwrap();
    assert!(s.end_subgroup(alias, 3, 0));
    let (cmds, _) = drain(&mut s);
    let (mut wire, end) = written(&cmds, stream);
    assert_eq!(end, Some(true), "finished");
    let header = SubgroupHeader::decode(&mut wire).unwrap();
    let mut dec = SubgroupDecoder::new(header);
    let first = dec.decode_object(&mut wire).unwrap();
    assert_eq!(first.payload, Bytes::from_static(b"abcdefghij"));
    let second = dec.decode_object(&mut wire).unwrap();
    assert_eq!(
        (second.object_id, second.payload),
        (1, Bytes::from_static(b"next"))
    );
    assert!(!wire.has_remaining());

    // An object whose last part never comes: its stream is reset.
    let stream = s
        .send_object_part(out(alias, 5, b"half"), part(0, 8), flags)
        .unwrap();
    assert!(s.end_subgroup(alias, 3, 0));
    let (cmds, _) = drain(&mut s);
    assert_eq!(written(&cmds, stream).1, Some(false), "{cmds:?}");
}

/// The smallest part size passes on every byte as it comes, and a header
/// arriving without any payload yields no empty part (nor loops).
#[test]
fn a_zero_part_size_passes_on_every_byte() {
    let mut s = server(SessionConfig {
        cut_through_bytes: Some(0),
        ..SessionConfig::default()
    });
    let uni = s.on_peer_stream(false);
    let (head, payload, _) = long_object(100);
    s.on_stream_data(uni, head, false).unwrap();
    assert!(objects(drain(&mut s).1).is_empty());
    let mut got = Vec::new();
    for byte in payload.chunks(1) {
        s.on_stream_data(uni, Bytes::copy_from_slice(byte), false)
            .unwrap();
        let parts = objects(drain(&mut s).1);
        assert_eq!(parts.len(), 1);
        got.extend_from_slice(&parts[0].payload);
    }
    assert_eq!(Bytes::from(got), payload);
}
