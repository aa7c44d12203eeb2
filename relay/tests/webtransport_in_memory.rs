//! WebTransport (ALPN `h3`) as a peer sees it on the wire, against the
//! production worker and router in memory: a hand-written HTTP/3 peer
//! (quinn-proto, with `web-transport-proto`'s encoders) sends what
//! browsers send and also what they never would, and reads every byte the
//! relay answers. The independent WebTransport client in the namespace
//! tests (`moqt-interop --webtransport`) covers the well-behaved path end
//! to end; this covers refusals, odd orders and the close handshake.

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use common::{client_addr, relay_addr, Tls};
use dataplane::{
    io::memory::{MemoryIo, MemoryPeer, Wire},
    tls,
    worker::Worker,
};
use moqt::{
    session::SessionConfig,
    setup::{Setup, SetupOption},
    ControlMessage, SessionErrorCode,
};
use quinn_proto::{ConnectionError, Dir, Event, StreamEvent, StreamId};
use relay::{engine::EngineConfig, router::AlpnRouter, shed::ShedConfig};
use web_transport_proto::{
    Capsule, ConnectError, ConnectRequest, ConnectResponse, Frame, Settings, StreamUni,
    VarInt as WtVarInt,
};

const H3_NO_ERROR: u64 = 0x100;
const H3_STREAM_CREATION_ERROR: u64 = 0x103;

struct Bench {
    worker: Worker<MemoryIo, AlpnRouter>,
    to_relay: Wire,
    from_relay: Wire,
    peer: MemoryPeer,
    /// Bytes read so far on each stream, and whether it ended.
    read: HashMap<StreamId, (Vec<u8>, bool)>,
    /// Streams the relay opened, in order.
    opened: Vec<StreamId>,
    stopped: Vec<(StreamId, u64)>,
    lost: Option<ConnectionError>,
    connected: bool,
}

impl Bench {
    fn new() -> Self {
        let tls_setup = Tls::self_signed();
        let (to_relay, from_relay): (Wire, Wire) = Default::default();
        let worker = Worker::new(
            MemoryIo::new(to_relay.clone(), from_relay.clone()),
            AlpnRouter::new(
                EngineConfig::default(),
                SessionConfig::default(),
                ShedConfig::default(),
                None,
            ),
            tls_setup.worker_config(),
        );
        let crypto = tls::client_crypto(tls_setup.roots.clone(), b"h3").unwrap();
        let peer = MemoryPeer::connect(client_addr(0), relay_addr(), "fastrelay", crypto).unwrap();
        let mut bench = Self {
            worker,
            to_relay,
            from_relay,
            peer,
            read: HashMap::new(),
            opened: Vec::new(),
            stopped: Vec::new(),
            lost: None,
            connected: false,
        };
        bench.until("the handshake", |b| b.connected);
        bench
    }

    /// One round trip of the wire.
    fn step(&mut self) {
        let now = Instant::now();
        self.peer.handle_timeout(now);
        self.peer.transmit(now, &self.to_relay);
        self.worker.iterate(now).unwrap();
        let answers: Vec<_> = self.from_relay.borrow_mut().drain(..).collect();
        for (_, data) in answers {
            self.peer.receive(now, &data);
        }
        while let Some(event) = self.peer.conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = self.peer.conn.streams().accept(dir) {
                        self.opened.push(id);
                        self.read_stream(id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => self.read_stream(id),
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    self.stopped.push((id, error_code.into_inner()))
                }
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        self.peer.transmit(now, &self.to_relay);
    }

    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            self.step();
            if done(self) {
                return;
            }
        }
        panic!("{what} did not happen within 5 s");
    }

    fn read_stream(&mut self, id: StreamId) {
        let entry = self.read.entry(id).or_default();
        let mut recv = self.peer.conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => entry.0.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => {
                    entry.1 = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = chunks.finalize();
    }

    fn open(&mut self, dir: Dir) -> StreamId {
        self.peer.conn.streams().open(dir).unwrap()
    }

    fn write(&mut self, id: StreamId, bytes: &[u8]) {
        let n = self.peer.conn.send_stream(id).write(bytes).unwrap();
        assert_eq!(n, bytes.len(), "flow control took all of a small write");
    }

    fn finish(&mut self, id: StreamId) {
        self.peer.conn.send_stream(id).finish().unwrap();
    }

    fn bytes(&self, id: StreamId) -> &[u8] {
        self.read.get(&id).map_or(&[], |(b, _)| b)
    }

    /// Opens the control stream with SETTINGS, as every HTTP/3 client does.
    fn settings(&mut self) {
        let id = self.open(Dir::Uni);
        let mut settings = Settings::default();
        settings.enable_webtransport(1);
        let mut out = BytesMut::new();
        settings.encode(&mut out);
        self.write(id, &out);
    }

    /// Sends an extended CONNECT offering `protocols` on a new stream.
    fn connect(&mut self, protocols: &[&str]) -> StreamId {
        let id = self.open(Dir::Bi);
        self.write_connect(id, protocols);
        id
    }

    fn write_connect(&mut self, id: StreamId, protocols: &[&str]) {
        let url = url::Url::parse("https://fastrelay:4433/live").unwrap();
        let mut request = ConnectRequest::new(url);
        for p in protocols {
            request = request.with_protocol(p.to_string());
        }
        let mut out = BytesMut::new();
        request.encode(&mut out).unwrap();
        self.write(id, &out);
    }

    /// The response the relay sent on `id`: its status (and the selected
    /// subprotocol for a 2xx).
    fn response(&mut self, id: StreamId) -> (u16, Option<String>) {
        self.until("the response", |b| {
            !matches!(
                ConnectResponse::decode(&mut b.bytes(id)),
                Err(ConnectError::UnexpectedEnd)
            )
        });
        match ConnectResponse::decode(&mut self.bytes(id)) {
            Ok(r) => (r.status.as_u16(), r.protocol),
            Err(ConnectError::WrongStatus(Some(status))) => (status.as_u16(), None),
            Err(e) => panic!("undecodable response: {e}"),
        }
    }

    /// A uni stream of WebTransport session `session` carrying `setup`.
    fn moqt_control_stream(&mut self, session: StreamId, setup: Setup) -> StreamId {
        let id = self.open(Dir::Uni);
        let mut out = BytesMut::new();
        StreamUni::WEBTRANSPORT.encode(&mut out);
        WtVarInt::from_u64(u64::from(session))
            .unwrap()
            .encode(&mut out);
        ControlMessage::Setup(setup).encode(&mut out).unwrap();
        self.write(id, &out);
        id
    }

    /// Capsules the relay sent on the CONNECT stream after its response.
    fn capsules(&self, id: StreamId) -> Vec<Capsule> {
        let mut buf = self.bytes(id);
        ConnectResponse::decode(&mut buf).unwrap();
        let mut content = BytesMut::new();
        while buf.has_remaining() {
            let kind = WtVarInt::decode(&mut buf).unwrap();
            let len = WtVarInt::decode(&mut buf).unwrap().into_inner() as usize;
            if Frame(kind) == Frame::DATA {
                content.extend_from_slice(&buf[..len]);
            }
            buf.advance(len);
        }
        let mut content = &content[..];
        let mut capsules = Vec::new();
        while content.has_remaining() {
            capsules.push(Capsule::decode(&mut content).unwrap());
        }
        capsules
    }

    /// The relay's uni streams of session `session` (their header checked
    /// and stripped).
    fn session_streams(&self, session: StreamId) -> Vec<Vec<u8>> {
        self.opened
            .iter()
            .filter(|id| id.dir() == Dir::Uni)
            .filter_map(|id| {
                let mut buf = self.bytes(*id);
                let kind = WtVarInt::decode(&mut buf).ok()?;
                if kind.into_inner() != StreamUni::WEBTRANSPORT.0.into_inner() {
                    return None;
                }
                let s = WtVarInt::decode(&mut buf).ok()?.into_inner();
                assert_eq!(s, u64::from(session), "a stream of another session");
                Some(buf.to_vec())
            })
            .collect()
    }

    fn closed_with(&self) -> Option<u64> {
        match &self.lost {
            Some(ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

fn is_setup(bytes: &[u8]) -> bool {
    matches!(
        ControlMessage::decode(&mut &bytes[..]),
        Ok(ControlMessage::Setup(_))
    )
}

/// The relay's control stream opens with SETTINGS announcing WebTransport;
/// a CONNECT offering `moqt-18` is answered 200 selecting it; the MoQT
/// SETUPs then cross on WebTransport uni streams that name the session —
/// and the relay opens none of its own before the session exists.
#[test]
fn a_webtransport_session_carries_the_moqt_setup_exchange() {
    let mut b = Bench::new();
    b.settings();
    b.until("the relay's control stream", |b| !b.opened.is_empty());
    let control = b.opened[0];
    assert_eq!(control.dir(), Dir::Uni);
    let settings = Settings::decode(&mut b.bytes(control)).unwrap();
    assert!(settings.supports_webtransport() >= 1, "{settings:?}");
    for _ in 0..20 {
        b.step();
    }
    assert_eq!(
        b.opened.len(),
        1,
        "no MoQT stream before the WebTransport session exists"
    );

    let session = b.connect(&["moqt-17", "moqt-18"]);
    assert_eq!(b.response(session), (200, Some("moqt-18".into())));
    b.until("the relay's SETUP", |b| {
        b.session_streams(session).iter().any(|s| is_setup(s))
    });
    b.moqt_control_stream(session, Setup::default());
    for _ in 0..20 {
        b.step();
    }
    assert!(b.lost.is_none(), "the session lives: {:?}", b.lost);
    assert!(b.capsules(session).is_empty());
}

/// What is not a MoQT WebTransport session gets an HTTP answer, and the
/// connection stays usable: a CONNECT offering only other subprotocols
/// (400), a plain GET (501), a second session (429).
#[test]
fn requests_that_are_not_a_moqt_session_are_answered_and_refused() {
    let mut b = Bench::new();
    b.settings();
    let other = b.connect(&["moq-lite-02"]);
    assert_eq!(b.response(other).0, 400);

    // GET / with a QPACK field section of static-table references and a
    // literal authority: what a browser sends for a page.
    let get = b.open(Dir::Bi);
    let mut fields = vec![0x00, 0x00, 0xc0 | 17, 0xc0 | 23, 0xc0 | 1, 0x50, 5];
    fields.extend_from_slice(b"relay");
    let mut frame = vec![0x01, fields.len() as u8];
    frame.extend_from_slice(&fields);
    b.write(get, &frame);
    b.finish(get);
    assert_eq!(b.response(get).0, 501);

    let session = b.connect(&["moqt-18"]);
    assert_eq!(b.response(session).0, 200);
    let second = b.connect(&["moqt-18"]);
    assert_eq!(b.response(second).0, 429);
    assert!(b.lost.is_none(), "{:?}", b.lost);
}

/// A SETUP carrying PATH inside WebTransport closes the session with
/// INVALID_PATH (§10.3.1.2) through a CLOSE_WEBTRANSPORT_SESSION capsule
/// and FIN on the CONNECT stream, then the connection with H3_NO_ERROR.
/// The stream carrying it was opened before its CONNECT was sent: it waits
/// for the session instead of being lost.
#[test]
fn a_stream_may_overtake_its_connect_and_path_in_setup_is_refused() {
    let mut b = Bench::new();
    b.settings();
    let session = b.open(Dir::Bi);
    let setup = Setup {
        options: vec![SetupOption::Path(Bytes::from_static(b"/live"))],
    };
    b.moqt_control_stream(session, setup);
    for _ in 0..10 {
        b.step();
    }
    assert!(b.lost.is_none());
    b.write_connect(session, &["moqt-18"]);
    assert_eq!(b.response(session).0, 200);
    b.until("the connection's close", |b| b.lost.is_some());
    assert_eq!(b.closed_with(), Some(H3_NO_ERROR), "{:?}", b.lost);
    let capsules = b.capsules(session);
    assert!(
        matches!(
            &capsules[..],
            [Capsule::CloseWebTransportSession { code, .. }]
                if u64::from(*code) == SessionErrorCode::InvalidPath.code()
        ),
        "{capsules:?}"
    );
    assert!(b.read[&session].1, "FIN after the capsule");
}

/// A uni stream of a type the relay does not know is stopped with
/// H3_STREAM_CREATION_ERROR; the session goes on. The peer's close
/// capsule then ends the session and the connection (H3_NO_ERROR).
#[test]
fn unknown_streams_are_stopped_and_the_peers_close_capsule_ends_the_connection() {
    let mut b = Bench::new();
    b.settings();
    let session = b.connect(&["moqt-18"]);
    assert_eq!(b.response(session).0, 200);
    // A reserved (grease) stream type, 0x1f * 1 + 0x21.
    let odd = b.open(Dir::Uni);
    b.write(odd, &[0x40, 0x40, 1, 2, 3]);
    b.until("STOP_SENDING on the odd stream", |b| {
        b.stopped.iter().any(|(id, _)| *id == odd)
    });
    assert!(b.stopped.contains(&(odd, H3_STREAM_CREATION_ERROR)));
    b.moqt_control_stream(session, Setup::default());
    for _ in 0..10 {
        b.step();
    }
    assert!(b.lost.is_none(), "{:?}", b.lost);

    let mut capsule = BytesMut::new();
    Capsule::CloseWebTransportSession {
        code: 0,
        reason: "bye".into(),
    }
    .encode(&mut capsule);
    let mut frame = BytesMut::new();
    Frame::DATA.encode(&mut frame);
    WtVarInt::from_u32(capsule.len() as u32).encode(&mut frame);
    frame.extend_from_slice(&capsule);
    b.write(session, &frame);
    b.finish(session);
    b.until("the connection's close", |b| b.lost.is_some());
    assert_eq!(b.closed_with(), Some(H3_NO_ERROR), "{:?}", b.lost);
}
