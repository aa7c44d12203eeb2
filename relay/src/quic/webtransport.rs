//! WebTransport over HTTP/3 (draft-ietf-webtrans-http3, as browsers ship
//! it): the server side of a connection whose ALPN is `h3`, so that a web
//! page can reach the relay on the same UDP port as raw-QUIC peers.
//!
//! It stays sans-IO like the rest of the driver: the HTTP/3 and
//! WebTransport framing (SETTINGS, the QPACK-coded CONNECT and its answer,
//! capsules) is `web-transport-proto`'s; this module decides what each of
//! the peer's streams is from its first bytes, strips the WebTransport
//! header in front of the MoQT bytes, writes it in front of the relay's own
//! streams and datagrams, and turns the session's close into a
//! CLOSE_WEBTRANSPORT_SESSION capsule. Everything above — the MoQT session,
//! priorities, the backlog, shedding, limits — is the same driver code a
//! raw-QUIC peer goes through.
//!
//! One WebTransport session per connection (the SETTINGS say so), and the
//! connection ends with it. The peer's HTTP/3 control and QPACK streams
//! are read and dropped: the relay announces no dynamic table, so nothing
//! on them can matter to the one request it serves.

use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quinn_proto::{Connection, Dir, StreamId};
use rustc_hash::{FxHashMap, FxHashSet};
use web_transport_proto::{
    Capsule, CapsuleError, ConnectError, ConnectRequest, ConnectResponse, Frame, Settings,
    StreamUni, VarInt as WtVarInt,
};

use super::{varint, SessionDriver};
use crate::priority::REQUEST_STREAM_PRIORITY;

/// The WebTransport subprotocol the relay speaks (`WT-Available-Protocols`,
/// spec §3.1): MoQT draft-18, as the raw-QUIC ALPN names it.
pub const SUBPROTOCOL: &str = "moqt-18";

/// Most bytes a peer stream may send before the relay can tell what it is:
/// a CONNECT request's header block is the only large preamble.
pub const MAX_PREAMBLE_BYTES: usize = 16 * 1024;

/// Most capsule bytes buffered on the CONNECT stream (a close capsule's
/// reason is at most a few hundred bytes in practice).
pub const MAX_CAPSULE_BYTES: usize = 16 * 1024;

/// Peer streams waiting for their first bytes or for the session they
/// name: beyond this many, new ones are refused.
pub const MAX_WAITING_STREAMS: usize = 256;

/// HTTP/3 error codes (RFC 9114 §8.1) and WebTransport's.
pub mod h3_code {
    pub const NO_ERROR: u64 = 0x100;
    pub const STREAM_CREATION_ERROR: u64 = 0x103;
    pub const FRAME_UNEXPECTED: u64 = 0x105;
    pub const REQUEST_REJECTED: u64 = 0x10b;
    pub const MESSAGE_ERROR: u64 = 0x10e;
    /// WEBTRANSPORT_SESSION_GONE: a stream names a session that is over.
    pub const SESSION_GONE: u64 = 0x170d7b68;
    /// WEBTRANSPORT_BUFFERED_STREAM_REJECTED.
    pub const BUFFERED_STREAM_REJECTED: u64 = 0x3994bd84;
}

/// What a peer's stream is, told from its first bytes.
#[derive(Debug)]
pub enum PeerStream {
    /// Not enough bytes yet.
    Incomplete,
    /// A WebTransport stream of the session whose CONNECT stream has ID
    /// `session`; its MoQT bytes start after `header` bytes.
    Session { session: u64, header: usize },
    /// An extended CONNECT request and the length of its HEADERS frame.
    Connect {
        request: Box<ConnectRequest>,
        header: usize,
    },
    /// A request the relay answers with `status` and nothing else.
    BadRequest { status: u16, why: String },
    /// An HTTP/3 stream read and dropped (the peer's control and QPACK
    /// streams).
    Discard,
    /// A stream type the relay does not take: stop it with this code.
    Refuse(u64),
}

/// Tells what a peer stream is from the bytes it sent so far.
pub fn classify(bytes: &[u8], bidi: bool) -> PeerStream {
    let mut buf = bytes;
    let Ok(kind) = WtVarInt::decode(&mut buf) else {
        return PeerStream::Incomplete;
    };
    let kind = kind.into_inner();
    if bidi && kind != Frame::WEBTRANSPORT.0.into_inner() {
        return classify_request(bytes);
    }
    if !bidi {
        // Compared as the full 62-bit value: a large type must not pass
        // for a known one.
        let is = |known: StreamUni| kind == known.0.into_inner();
        if is(StreamUni::CONTROL) || is(StreamUni::QPACK_ENCODER) || is(StreamUni::QPACK_DECODER) {
            return PeerStream::Discard;
        }
        if !is(StreamUni::WEBTRANSPORT) {
            // Push streams (a client may not open them), reserved and
            // unknown types (RFC 9114 §6.2).
            return PeerStream::Refuse(h3_code::STREAM_CREATION_ERROR);
        }
    }
    match WtVarInt::decode(&mut buf) {
        Ok(session) => PeerStream::Session {
            session: session.into_inner(),
            header: bytes.len() - buf.len(),
        },
        Err(_) => PeerStream::Incomplete,
    }
}

/// A request stream: an extended CONNECT for WebTransport, or a refusal.
fn classify_request(bytes: &[u8]) -> PeerStream {
    let mut buf = bytes;
    match ConnectRequest::decode(&mut buf) {
        Ok(request) => PeerStream::Connect {
            request: Box::new(request),
            header: bytes.len() - buf.len(),
        },
        Err(ConnectError::UnexpectedEnd) if bytes.len() < MAX_PREAMBLE_BYTES => {
            PeerStream::Incomplete
        }
        Err(ConnectError::UnexpectedFrame(_)) => PeerStream::Refuse(h3_code::FRAME_UNEXPECTED),
        // A plain GET (the page itself is served by the admin listener).
        Err(ConnectError::WrongMethod(_)) | Err(ConnectError::WrongProtocol(_)) => {
            PeerStream::BadRequest {
                status: 501,
                why: "only WebTransport (extended CONNECT) is served on this port".into(),
            }
        }
        Err(err) => PeerStream::BadRequest {
            status: 400,
            why: err.to_string(),
        },
    }
}

/// The status the relay answers a CONNECT with, and the subprotocol it
/// selects: `moqt-18` when offered, none when the client offers none (it
/// then speaks whatever MoQT its SETUP says), 400 when only others are
/// offered.
pub fn answer(request: &ConnectRequest) -> Result<Option<&'static str>, String> {
    if request.protocols.is_empty() {
        return Ok(None);
    }
    if request.protocols.iter().any(|p| p == SUBPROTOCOL) {
        return Ok(Some(SUBPROTOCOL));
    }
    Err(format!(
        "none of the offered protocols {:?} is {SUBPROTOCOL}",
        request.protocols
    ))
}

/// The HTTP/3 control stream's opening: its type and our SETTINGS.
pub fn settings_bytes() -> Bytes {
    let mut settings = Settings::default();
    // One session per connection: the connection is the session's.
    settings.enable_webtransport(1);
    let mut out = BytesMut::new();
    settings.encode(&mut out);
    out.freeze()
}

/// The header of a stream the relay opens in session `session`.
pub fn stream_header(bidi: bool, session: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(16);
    let kind = if bidi {
        Frame::WEBTRANSPORT.0
    } else {
        StreamUni::WEBTRANSPORT.0
    };
    kind.encode(&mut out);
    encode_varint(session, &mut out);
    out.freeze()
}

fn encode_varint(v: u64, out: &mut BytesMut) {
    if let Ok(v) = WtVarInt::from_u64(v) {
        v.encode(out);
    }
}

fn response_bytes(status: u16, protocol: Option<&str>) -> Bytes {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = ConnectResponse::new(status);
    if let Some(p) = protocol {
        response = response.with_protocol(p);
    }
    let mut out = BytesMut::new();
    // Only a protocol name that cannot be a structured-field string fails.
    let _ = response.encode(&mut out);
    out.freeze()
}

/// A peer stream the relay cannot place yet.
#[derive(Default)]
struct Preamble {
    buf: BytesMut,
    fin: bool,
    reset: Option<u64>,
}

/// The WebTransport state of one `h3` connection.
#[derive(Default)]
pub struct WebTransportServer {
    /// The relay's HTTP/3 control stream, once opened.
    control: Option<StreamId>,
    /// The CONNECT stream of the session, once accepted.
    session: Option<StreamId>,
    /// The headers of the relay's own uni and bidi streams in the session,
    /// encoded once at its acceptance (each stream takes a reference).
    headers: Option<(Bytes, Bytes)>,
    /// Peer streams still being told apart (or waiting for the CONNECT
    /// they name).
    preambles: FxHashMap<StreamId, Preamble>,
    /// Peer HTTP/3 streams whose bytes are dropped.
    discard: FxHashSet<StreamId>,
    /// Bytes of the relay's own HTTP/3 streams flow control held back:
    /// (stream, bytes, finish after).
    out: Vec<(StreamId, Bytes, bool)>,
    /// What the peer sent on the CONNECT stream after its request, not
    /// yet parsed: HTTP/3 frames, whose DATA carries capsules (RFC 9297).
    connect_in: BytesMut,
    /// Capsule bytes taken out of DATA frames, not yet parsed.
    capsules: BytesMut,
    /// The session is over (closed by either side).
    closed: bool,
    /// The relay sent CLOSE_WEBTRANSPORT_SESSION and waits for it to be
    /// acknowledged before closing the connection.
    closing: bool,
}

impl WebTransportServer {
    /// The session ID (its CONNECT stream's ID), once accepted.
    fn session_id(&self) -> u64 {
        self.session.map_or(0, u64::from)
    }
}

/// The WebTransport side of the driver: what `h3` connections add.
impl SessionDriver {
    /// This connection negotiated `h3`: the MoQT session runs inside a
    /// WebTransport session the client still has to request.
    pub fn use_webtransport(&mut self) {
        self.wt = Some(Box::default());
    }

    /// Whether this connection is WebTransport.
    pub fn is_webtransport(&self) -> bool {
        self.wt.is_some()
    }

    /// Opens the relay's HTTP/3 control stream with its SETTINGS as soon
    /// as stream credit allows.
    pub(super) fn wt_open_control(&mut self, conn: &mut Connection) {
        let Some(wt) = self.wt.as_mut() else { return };
        if wt.control.is_some() {
            return;
        }
        let Some(id) = conn.streams().open(Dir::Uni) else {
            return;
        };
        wt.control = Some(id);
        let _ = conn
            .send_stream(id)
            .set_priority(REQUEST_STREAM_PRIORITY.saturating_add(1));
        wt.out.push((id, settings_bytes(), false));
        self.wt_flush(conn);
    }

    /// Writes what the relay's own HTTP/3 streams still owe.
    pub(super) fn wt_flush(&mut self, conn: &mut Connection) {
        let Some(wt) = self.wt.as_mut() else { return };
        wt.out.retain_mut(|(id, bytes, fin)| {
            let mut send = conn.send_stream(*id);
            while !bytes.is_empty() {
                match send.write(bytes) {
                    Ok(n) if n > 0 => bytes.advance(n),
                    Ok(_) => return true,
                    Err(quinn_proto::WriteError::Blocked) => return true,
                    // Stopped or gone: nothing more to write there.
                    Err(_) => return false,
                }
            }
            if *fin {
                let _ = send.finish();
            }
            false
        });
    }

    /// A peer stream was opened: what it is shows in its first bytes.
    pub(super) fn wt_accept(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(wt) = self.wt.as_mut() else { return };
        if wt.preambles.len() >= MAX_WAITING_STREAMS {
            refuse(conn, id, h3_code::BUFFERED_STREAM_REJECTED);
            return;
        }
        wt.preambles.insert(id, Preamble::default());
        self.wt_read(conn, id);
    }

    /// Reads a stream the MoQT session does not own (yet).
    pub(super) fn wt_read(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(wt) = self.wt.as_mut() else { return };
        if wt.session == Some(id) {
            self.wt_read_capsules(conn, id);
            return;
        }
        if wt.discard.contains(&id) {
            if drain(conn, id) {
                wt.discard.remove(&id);
            }
            return;
        }
        let Some(pre) = wt.preambles.get_mut(&id) else {
            return;
        };
        let mut recv = conn.recv_stream(id);
        if let Ok(mut chunks) = recv.read(true) {
            while pre.buf.len() < MAX_PREAMBLE_BYTES {
                match chunks.next(MAX_PREAMBLE_BYTES - pre.buf.len()) {
                    // A copy, once per stream, of at most its first bytes.
                    Ok(Some(chunk)) => pre.buf.extend_from_slice(&chunk.bytes),
                    Ok(None) => {
                        pre.fin = true;
                        break;
                    }
                    Err(quinn_proto::ReadError::Reset(code)) => {
                        pre.reset = Some(code.into_inner());
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = chunks.finalize();
        }
        self.wt_place(conn, id);
        self.tie_receive_window(conn);
    }

    /// Places a peer stream whose first bytes arrived.
    fn wt_place(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(wt) = self.wt.as_mut() else { return };
        let Some(pre) = wt.preambles.get(&id) else {
            return;
        };
        let bidi = id.dir() == Dir::Bi;
        let ended = pre.fin || pre.reset.is_some();
        let full = pre.buf.len() >= MAX_PREAMBLE_BYTES;
        match classify(&pre.buf, bidi) {
            PeerStream::Incomplete => {
                if ended || full {
                    wt.preambles.remove(&id);
                    refuse(conn, id, h3_code::MESSAGE_ERROR);
                }
            }
            PeerStream::Discard => {
                wt.preambles.remove(&id);
                if !ended && !drain(conn, id) {
                    wt.discard.insert(id);
                }
            }
            PeerStream::Refuse(code) => {
                wt.preambles.remove(&id);
                refuse(conn, id, code);
            }
            PeerStream::BadRequest { status, why } => {
                wt.preambles.remove(&id);
                tracing::debug!(peer = %conn.remote_address(), status, %why, "refused an HTTP/3 request");
                let _ = conn.recv_stream(id).stop(varint(h3_code::NO_ERROR));
                wt.out.push((id, response_bytes(status, None), true));
                self.wt_flush(conn);
            }
            PeerStream::Connect { request, header } => self.wt_connect(conn, id, &request, header),
            PeerStream::Session { session, header } => {
                match wt.session {
                    Some(s) if u64::from(s) == session && !wt.closed => {}
                    // Streams may overtake their CONNECT: they wait for it.
                    None if !wt.closed => return,
                    // The session is over and the connection about to
                    // close: a reset now (WEBTRANSPORT_SESSION_GONE) would
                    // only race the close capsule at the peer, and some
                    // stacks take that code for a broken stream rather
                    // than the session's end. Left unread.
                    _ if wt.closed => {
                        wt.preambles.remove(&id);
                        return;
                    }
                    _ => {
                        wt.preambles.remove(&id);
                        refuse(conn, id, h3_code::SESSION_GONE);
                        return;
                    }
                }
                let Some(pre) = wt.preambles.remove(&id) else {
                    return;
                };
                let stream = self.session.on_peer_stream(bidi);
                self.bind(conn, stream, id);
                let rest = pre.buf.freeze().slice(header..);
                if !rest.is_empty() {
                    let _ = self.session.on_stream_data(stream, rest, false);
                }
                if pre.fin {
                    let _ = self.session.on_stream_data(stream, Bytes::new(), true);
                    self.close_recv(id);
                } else if let Some(code) = pre.reset {
                    let code = self.peer_code(code);
                    let _ = self.session.on_stream_reset(stream, code);
                    self.close_recv(id);
                } else {
                    // Whatever followed the first read.
                    self.read(conn, id);
                }
            }
        }
    }

    /// An extended CONNECT: the one session of this connection starts, or
    /// the request is refused.
    fn wt_connect(
        &mut self,
        conn: &mut Connection,
        id: StreamId,
        request: &ConnectRequest,
        header: usize,
    ) {
        let Some(wt) = self.wt.as_mut() else { return };
        let Some(pre) = wt.preambles.remove(&id) else {
            return;
        };
        let status = if wt.session.is_some() || wt.closed {
            Err((429, "one WebTransport session per connection".to_string()))
        } else {
            answer(request).map_err(|why| (400, why))
        };
        let protocol = match status {
            Ok(protocol) => protocol,
            Err((status, why)) => {
                tracing::info!(peer = %conn.remote_address(), status, %why, "refused a WebTransport session");
                let _ = conn.recv_stream(id).stop(varint(h3_code::REQUEST_REJECTED));
                wt.out.push((id, response_bytes(status, None), true));
                self.wt_flush(conn);
                return;
            }
        };
        tracing::debug!(peer = %conn.remote_address(), url = %request.url, ?protocol, "WebTransport session accepted");
        wt.session = Some(id);
        wt.headers = Some((
            stream_header(false, u64::from(id)),
            stream_header(true, u64::from(id)),
        ));
        let _ = conn
            .send_stream(id)
            .set_priority(REQUEST_STREAM_PRIORITY.saturating_add(1));
        wt.out.push((id, response_bytes(200, protocol), false));
        wt.connect_in.extend_from_slice(&pre.buf[header..]);
        let (fin, reset) = (pre.fin, pre.reset.is_some());
        self.wt_flush(conn);
        self.wt_capsules(conn, fin || reset);
        // Streams that arrived before their CONNECT take their place now.
        let waiting: Vec<StreamId> = match self.wt.as_ref() {
            Some(wt) => wt.preambles.keys().copied().collect(),
            None => return,
        };
        for stream in waiting {
            self.wt_place(conn, stream);
        }
        if !(fin || reset) {
            self.wt_read_capsules(conn, id);
        }
    }

    /// Reads the CONNECT stream: after the request come only capsules.
    fn wt_read_capsules(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(wt) = self.wt.as_mut() else { return };
        let mut ended = false;
        let mut recv = conn.recv_stream(id);
        if let Ok(mut chunks) = recv.read(true) {
            loop {
                match chunks.next(MAX_CAPSULE_BYTES.saturating_sub(wt.connect_in.len()).max(1)) {
                    Ok(Some(chunk)) => wt.connect_in.extend_from_slice(&chunk.bytes),
                    Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => {
                        ended = true;
                        break;
                    }
                    Err(_) => break,
                }
                if wt.connect_in.len() > MAX_CAPSULE_BYTES {
                    break;
                }
            }
            let _ = chunks.finalize();
        }
        self.wt_capsules(conn, ended);
    }

    /// Acts on the capsules buffered on the CONNECT stream; `ended`: the
    /// peer finished or reset it, which ends the session too.
    fn wt_capsules(&mut self, conn: &mut Connection, ended: bool) {
        let Some(wt) = self.wt.as_mut() else { return };
        let mut close: Option<(u64, String)> = None;
        // Whole HTTP/3 frames: DATA payloads are capsule bytes; other
        // frames (grease, unknown) are skipped.
        loop {
            let mut buf = &wt.connect_in[..];
            let (Ok(kind), Ok(len)) = (WtVarInt::decode(&mut buf), WtVarInt::decode(&mut buf))
            else {
                break;
            };
            let Ok(len) = usize::try_from(len.into_inner()) else {
                close.get_or_insert((0, "frame too large".into()));
                break;
            };
            if buf.len() < len {
                if len > MAX_CAPSULE_BYTES {
                    close.get_or_insert((0, "frame too large".into()));
                }
                break;
            }
            if Frame(kind) == Frame::DATA {
                wt.capsules.extend_from_slice(&buf[..len]);
            }
            let used = wt.connect_in.len() - buf.len() + len;
            wt.connect_in.advance(used);
        }
        while !wt.capsules.is_empty() {
            let mut buf = &wt.capsules[..];
            match Capsule::decode(&mut buf) {
                Ok(Capsule::CloseWebTransportSession { code, reason }) => {
                    close.get_or_insert((u64::from(code), reason));
                }
                // DRAIN_WEBTRANSPORT_SESSION, grease, unknown: nothing to do.
                Ok(_) => {}
                Err(CapsuleError::UnexpectedEnd | CapsuleError::VarInt(_)) => break,
                Err(err) => {
                    tracing::debug!(peer = %conn.remote_address(), %err, "malformed capsule");
                    close.get_or_insert((0, format!("malformed capsule: {err}")));
                    wt.capsules.clear();
                    break;
                }
            }
            let used = wt.capsules.len() - buf.len();
            wt.capsules.advance(used);
        }
        if wt.capsules.len() > MAX_CAPSULE_BYTES || wt.connect_in.len() > MAX_CAPSULE_BYTES {
            close.get_or_insert((0, "capsule too large".into()));
        }
        if ended && close.is_none() {
            close = Some((0, "the peer ended its WebTransport session".into()));
        }
        let Some((code, reason)) = close else { return };
        if wt.closed {
            return;
        }
        // The peer's side of the session is over: so is the relay's,
        // and the connection carries nothing else.
        wt.closed = true;
        self.session.on_connection_closed(code, &reason);
        conn.close(
            Instant::now(),
            varint(h3_code::NO_ERROR),
            Bytes::from_static(b"WebTransport session closed"),
        );
    }

    /// The session closes on the relay's side: CLOSE_WEBTRANSPORT_SESSION
    /// on the CONNECT stream, then the connection once that is
    /// acknowledged (`wt_stream_finished`). `false`: there is no session
    /// to close that way, close the connection.
    pub(super) fn wt_close(&mut self, conn: &mut Connection, code: u64, reason: &str) -> bool {
        let Some(wt) = self.wt.as_mut() else {
            return false;
        };
        let Some(id) = wt.session else {
            return false;
        };
        if wt.closed {
            return true;
        }
        wt.closed = true;
        wt.closing = true;
        let mut reason = reason.to_string();
        // The capsule's reason is bounded like the one of CONNECTION_CLOSE.
        reason.truncate(1024);
        let capsule = Capsule::CloseWebTransportSession {
            code: u32::try_from(code).unwrap_or(u32::MAX),
            reason,
        };
        let mut body = BytesMut::new();
        capsule.encode(&mut body);
        // In HTTP/3 capsules travel as the content of DATA frames.
        let mut out = BytesMut::with_capacity(body.len() + 16);
        Frame::DATA.encode(&mut out);
        encode_varint(body.len() as u64, &mut out);
        out.put_slice(&body);
        wt.out.push((id, out.freeze(), true));
        self.wt_flush(conn);
        true
    }

    /// quinn reports everything sent on `id` acknowledged: after the
    /// relay's close capsule, the connection can go.
    pub(super) fn wt_stream_finished(&mut self, conn: &mut Connection, id: StreamId) {
        if let Some(wt) = self.wt.as_mut() {
            if wt.closing && wt.session == Some(id) {
                wt.closing = false;
                conn.close(
                    Instant::now(),
                    varint(h3_code::NO_ERROR),
                    Bytes::from_static(b"WebTransport session closed"),
                );
            }
        }
    }

    /// The peer closed its whole connection: the session learns the code
    /// of the capsule, if one came before (else 0).
    pub(super) fn wt_connection_lost(&mut self) -> bool {
        match self.wt.as_mut() {
            Some(wt) => {
                if !wt.closed {
                    wt.closed = true;
                    self.session
                        .on_connection_closed(0, "the WebTransport connection was lost");
                }
                true
            }
            None => false,
        }
    }

    /// Whether this is a WebTransport connection whose session the client
    /// has not requested yet: the MoQT session's commands wait (a session
    /// that ended meanwhile closes the connection).
    pub(super) fn wt_before_connect(&mut self, conn: &mut Connection) -> bool {
        let Some(wt) = self.wt.as_mut() else {
            return false;
        };
        if wt.session.is_some() || wt.closed {
            return false;
        }
        if let Some(code) = self.session.closed() {
            wt.closed = true;
            conn.close(
                Instant::now(),
                varint(h3_code::REQUEST_REJECTED),
                Bytes::from(format!(
                    "MoQT session closed before the WebTransport session ({code:?})"
                )),
            );
        }
        true
    }

    /// Bytes the WebTransport layer holds for the peer (first bytes of
    /// streams not placed yet, capsules): they count against the
    /// connection's receive bound like the session's own buffers.
    pub(super) fn wt_buffered_bytes(&self) -> usize {
        self.wt.as_ref().map_or(0, |wt| {
            wt.preambles.values().map(|p| p.buf.len()).sum::<usize>()
                + wt.connect_in.len()
                + wt.capsules.len()
        })
    }

    /// The header of a stream the relay opens, or nothing on raw QUIC.
    pub(super) fn wt_stream_header(&self, dir: Dir) -> Option<Bytes> {
        let (uni, bidi) = self.wt.as_ref()?.headers.as_ref()?;
        Some(if dir == Dir::Bi { bidi } else { uni }.clone())
    }

    /// A datagram as it goes out: on WebTransport, behind its session's
    /// quarter stream ID (one copy: datagrams are not the relay's bulk path).
    pub(super) fn wt_datagram_out(&self, data: Bytes) -> Bytes {
        let Some(wt) = self.wt.as_ref() else {
            return data;
        };
        let mut out = BytesMut::with_capacity(8 + data.len());
        encode_varint(wt.session_id() / 4, &mut out);
        out.put_slice(&data);
        out.freeze()
    }

    /// A datagram as it came in: on WebTransport, its payload if it is for
    /// the session (others are dropped).
    pub(super) fn wt_datagram_in(&self, data: Bytes) -> Option<Bytes> {
        let Some(wt) = self.wt.as_ref() else {
            return Some(data);
        };
        let mut buf = &data[..];
        let quarter = WtVarInt::decode(&mut buf).ok()?.into_inner();
        let session = wt.session?;
        (quarter == u64::from(session) / 4 && !wt.closed)
            .then(|| data.slice(data.len() - buf.len()..))
    }
}

/// Stops a peer stream the relay will not read (and resets its sending
/// side, on a bidirectional one).
fn refuse(conn: &mut Connection, id: StreamId, code: u64) {
    let _ = conn.recv_stream(id).stop(varint(code));
    if id.dir() == Dir::Bi {
        let _ = conn.send_stream(id).reset(varint(code));
    }
}

/// Reads and drops what is readable on `id`; whether the stream is over.
fn drain(conn: &mut Connection, id: StreamId) -> bool {
    let mut recv = conn.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        return true;
    };
    let over = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(_)) => {}
            Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => break true,
            Err(_) => break false,
        }
    };
    let _ = chunks.finalize();
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocols: &[&str]) -> Bytes {
        let url = url::Url::parse("https://relay.test:4443/moq?x=1").unwrap();
        let mut req = ConnectRequest::new(url);
        for p in protocols {
            req = req.with_protocol(p.to_string());
        }
        let mut out = BytesMut::new();
        req.encode(&mut out).unwrap();
        out.freeze()
    }

    #[test]
    fn uni_streams_are_told_apart_by_their_type() {
        assert!(matches!(classify(&[], false), PeerStream::Incomplete));
        assert!(matches!(
            classify(&[0x00, 0x04], false),
            PeerStream::Discard
        ));
        assert!(matches!(classify(&[0x02], false), PeerStream::Discard));
        assert!(matches!(classify(&[0x03], false), PeerStream::Discard));
        assert!(matches!(
            classify(&[0x01], false),
            PeerStream::Refuse(h3_code::STREAM_CREATION_ERROR)
        ));
        // A type beyond 32 bits whose low bits read 0x54 is not WebTransport.
        assert!(matches!(
            classify(&[0xc0, 0, 0, 1, 0, 0, 0, 0x54, 0], false),
            PeerStream::Refuse(h3_code::STREAM_CREATION_ERROR)
        ));
        // 0x54 is a two-byte varint: 0x40 0x54.
        assert!(matches!(
            classify(&[0x40, 0x54], false),
            PeerStream::Incomplete
        ));
        let mut wt = stream_header(false, 4).to_vec();
        let header = wt.len();
        wt.extend_from_slice(b"moqt");
        match classify(&wt, false) {
            PeerStream::Session {
                session: 4,
                header: h,
            } => assert_eq!(h, header),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bidi_stream_is_a_session_stream_or_a_request() {
        let mut wt = stream_header(true, 0).to_vec();
        let header = wt.len();
        wt.extend_from_slice(&[0x20, 0x00]);
        assert!(matches!(
            classify(&wt, true),
            PeerStream::Session { session: 0, header: h } if h == header
        ));
        let req = request(&["moqt-17", "moqt-18"]);
        for cut in 1..req.len() {
            assert!(
                matches!(classify(&req[..cut], true), PeerStream::Incomplete),
                "a request cut at {cut} of {} bytes is incomplete",
                req.len()
            );
        }
        let mut with_capsule = req.to_vec();
        with_capsule.extend_from_slice(&[0xff]);
        match classify(&with_capsule, true) {
            PeerStream::Connect { request, header } => {
                assert_eq!(header, req.len());
                assert_eq!(request.url.path(), "/moq");
                assert_eq!(answer(&request), Ok(Some(SUBPROTOCOL)));
            }
            other => panic!("{other:?}"),
        }
        // A DATA frame first is not a request.
        assert!(matches!(
            classify(&[0x00, 0x01, 0x00], true),
            PeerStream::Refuse(h3_code::FRAME_UNEXPECTED)
        ));
    }

    #[test]
    fn subprotocol_selection() {
        let pick = |p: &[&str]| {
            let bytes = request(p);
            match classify(&bytes, true) {
                PeerStream::Connect { request, .. } => answer(&request),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(pick(&[]), Ok(None));
        assert_eq!(pick(&["moqt-18"]), Ok(Some("moqt-18")));
        assert!(pick(&["moq-lite-02"]).is_err());
    }

    #[test]
    fn settings_announce_webtransport() {
        let bytes = settings_bytes();
        let settings = Settings::decode(&mut &bytes[..]).unwrap();
        assert!(settings.supports_webtransport() >= 1);
    }
}
