//! A `moqt::Session` driven over one quinn-proto `Connection`: the stream
//! plumbing shared by the relay (server role) and in-memory test clients.
//!
//! Session commands become stream operations; quinn-proto events become
//! session inputs. Payloads stay `Bytes` all the way: received chunks are
//! slices of the decrypted packet, and writes go through `write_chunks`.
//!
//! Every stream starts at [`REQUEST_STREAM_PRIORITY`] (control and request
//! streams go before any object, §7.2); the relay lowers data streams with
//! [`SessionDriver::set_priority`]. A stream's bookkeeping is dropped once
//! both of its directions are over, so a long session does not accumulate
//! one entry per subgroup it ever carried.
//!
//! What quinn-proto buffers cannot be taken back, so the driver keeps the
//! backlog itself: the connection's send window (quinn's limit on
//! unacknowledged stream data) is the congestion window plus
//! [`SEND_WINDOW_SLACK`], so quinn holds little beyond what is in flight,
//! and data beyond it waits here, per stream, handed over highest priority
//! first as acknowledgements make room. Were the window larger, low-priority
//! data written while nothing better waited would sit in quinn and take the
//! link from higher-priority data arriving just after. A congested
//! subscriber's backlog thus sits where the relay can still order it and
//! drop whole subgroups of it ([`SessionDriver::abandon`],
//! [`SessionDriver::backlog`]).

use std::{collections::VecDeque, time::Instant};

use bytes::Bytes;
use moqt::{
    codes::{webtransport_code, StreamCodeDialect},
    session::{Command, Role, Session, SessionConfig, StreamRef},
    SessionErrorCode, StreamResetCode,
};
use quinn_proto::{Connection, Dir, Event, StreamEvent, StreamId, VarInt};
// Keys are ours (stream handles and IDs), not a peer's: a fast hash is safe.
use rustc_hash::FxHashMap;

use crate::priority::REQUEST_STREAM_PRIORITY;

mod webtransport;
pub use webtransport::{PeerStream, MAX_CAPSULE_BYTES, MAX_PREAMBLE_BYTES, SUBPROTOCOL};

/// The ALPN of HTTP/3, under which browsers reach the relay with
/// WebTransport ([`SessionDriver::use_webtransport`]).
pub const H3_ALPN: &[u8] = b"h3";

/// The ALPN protocol the handshake settled on.
pub fn negotiated_alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.crypto_session()
        .handshake_data()?
        .downcast::<quinn_proto::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Bytes queued on one stream beyond what quinn-proto accepted (flow
/// control) before the stream is reset as too far behind: a slow reader
/// costs its own stream, never the relay's memory.
pub const MAX_PENDING_PER_STREAM: usize = 4 << 20;

/// What quinn-proto may hold beyond one congestion window: enough that a
/// freed window is refilled at once, small enough to keep the order of
/// what waits the relay's decision.
pub const SEND_WINDOW_SLACK: u64 = 16 * 1024;

/// Least receive credit the driver leaves a connection: with the session's
/// buffers at their bound the peer can still send the bytes that complete
/// an object (or push the session over its bound, which stops the stream
/// holding the most) instead of stalling for good.
pub const MIN_RECEIVE_WINDOW: u64 = 64 * 1024;

/// Data quinn-proto has not taken yet on one stream.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    fin: bool,
    /// When each chunk was queued (same length as `chunks`).
    queued_at: VecDeque<Instant>,
}

/// One stream's backlog, as [`SessionDriver::backlog`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub stream: StreamRef,
    pub bytes: usize,
    /// When the oldest byte waiting was queued.
    pub since: Instant,
    pub priority: i32,
}

/// Which directions of a bound stream are still in use.
#[derive(Clone, Copy)]
struct Open {
    send: bool,
    recv: bool,
}

pub struct SessionDriver {
    pub session: Session,
    /// Session stream handle -> QUIC stream (`None` while waiting for credit).
    streams: FxHashMap<StreamRef, Option<StreamId>>,
    by_quic: FxHashMap<StreamId, (StreamRef, Open)>,
    /// The priority of every stream the relay ranked (others: request level).
    priorities: FxHashMap<StreamRef, i32>,
    /// Priority changes to apply with the next commands.
    priority_updates: Vec<(StreamRef, i32)>,
    /// Streams to open once the peer grants more (`StreamEvent::Available`).
    to_open: VecDeque<(StreamRef, Dir)>,
    pending: FxHashMap<StreamRef, Pending>,
    /// Sum of `pending` bytes.
    pending_bytes: usize,
    /// The send window last given to quinn-proto.
    send_window: u64,
    /// When the first byte of each of our send streams was queued, until
    /// quinn reports everything acknowledged (or the stream goes).
    born: FxHashMap<StreamRef, Instant>,
    /// Reused by [`Self::flush_all`] to order the streams (no allocation
    /// per flush once warm).
    order: Vec<(i32, StreamRef)>,
    /// Streams reset because their reader fell too far behind.
    pub streams_reset_too_far_behind: u64,
    /// The session closed the connection with an error code.
    pub closed_with: Option<SessionErrorCode>,
    /// How this peer's stream error codes travel (resolved from `Auto`
    /// by the first code it sends us).
    codes: StreamCodeDialect,
    /// The connection's receive bound: quinn's connection-level receive
    /// window starts at it (the transport config must match) and shrinks
    /// by what the session holds, so credit is handed back only for bytes
    /// the relay has released, not merely copied.
    receive_bound: u64,
    /// The receive window last given to quinn-proto.
    receive_window: u64,
    /// The WebTransport session the MoQT session runs in, on an `h3`
    /// connection (`None`: raw QUIC).
    wt: Option<Box<webtransport::WebTransportServer>>,
}

impl SessionDriver {
    pub fn new(role: Role, config: SessionConfig) -> Self {
        let receive_bound = config.max_buffered_bytes as u64;
        Self {
            receive_bound,
            receive_window: receive_bound,
            session: Session::new(role, config),
            streams: FxHashMap::default(),
            by_quic: FxHashMap::default(),
            priorities: FxHashMap::default(),
            priority_updates: Vec::new(),
            to_open: VecDeque::new(),
            pending: FxHashMap::default(),
            pending_bytes: 0,
            send_window: 0,
            born: FxHashMap::default(),
            order: Vec::new(),
            streams_reset_too_far_behind: 0,
            closed_with: None,
            codes: StreamCodeDialect::default(),
            wt: None,
        }
    }

    /// Whether `stream` is already bound to a QUIC stream (or waiting to be).
    pub fn knows_stream(&self, stream: StreamRef) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Streams with bookkeeping (bound or waiting for credit).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Sets the quinn-proto send priority of `stream` (higher is sent
    /// first), now or when it is opened. Applied with the next
    /// [`apply_commands`](Self::apply_commands); the driver's own backlog
    /// follows it at once.
    pub fn set_priority(&mut self, stream: StreamRef, priority: i32) {
        if self.streams.contains_key(&stream) {
            self.priorities.insert(stream, priority);
        }
        self.priority_updates.push((stream, priority));
    }

    fn priority_of(&self, stream: StreamRef) -> i32 {
        self.priorities
            .get(&stream)
            .copied()
            .unwrap_or(REQUEST_STREAM_PRIORITY)
    }

    /// Bytes waiting in the driver (not yet taken by quinn-proto).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Every stream with data waiting, with its age and priority.
    pub fn backlog(&self) -> impl Iterator<Item = Backlog> + '_ {
        self.pending.iter().filter_map(|(stream, p)| {
            Some(Backlog {
                stream: *stream,
                bytes: p.bytes,
                since: *p.queued_at.front()?,
                priority: self.priority_of(*stream),
            })
        })
    }

    /// Streams with everything handed to quinn-proto but not yet all
    /// acknowledged, with when their first byte was queued: data that may
    /// still be on its way (or waiting inside quinn behind higher
    /// priorities).
    pub fn unacknowledged(&self) -> impl Iterator<Item = (StreamRef, Instant)> + '_ {
        self.born
            .iter()
            .filter(|(s, _)| !self.pending.contains_key(s))
            .map(|(s, t)| (*s, *t))
    }

    /// Gives up on `stream`: what waits is dropped, the stream is reset with
    /// `code` (or never opened, if it still waited for credit) and
    /// forgotten. Returns the bytes dropped.
    pub fn abandon(
        &mut self,
        conn: &mut Connection,
        stream: StreamRef,
        code: StreamResetCode,
    ) -> usize {
        let dropped = self.drop_pending(stream);
        match self.streams.get(&stream).copied() {
            Some(Some(id)) => {
                let _ = conn.send_stream(id).reset(self.wire_code(code));
                self.close_send(id);
            }
            Some(None) => {
                self.to_open.retain(|(s, _)| *s != stream);
                self.streams.remove(&stream);
                self.priorities.remove(&stream);
                self.born.remove(&stream);
            }
            None => {}
        }
        dropped
    }

    fn drop_pending(&mut self, stream: StreamRef) -> usize {
        let bytes = self.pending.remove(&stream).map_or(0, |p| p.bytes);
        self.pending_bytes -= bytes;
        bytes
    }

    /// Feeds one quinn-proto event of this connection to the session.
    pub fn handle_event(&mut self, conn: &mut Connection, event: &Event) {
        match event {
            Event::Stream(StreamEvent::Opened { dir }) => {
                while let Some(id) = conn.streams().accept(*dir) {
                    if self.wt.is_some() {
                        // What it is shows in its first bytes.
                        self.wt_accept(conn, id);
                        continue;
                    }
                    let stream = self.session.on_peer_stream(*dir == Dir::Bi);
                    self.bind(conn, stream, id);
                    self.read(conn, id);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read(conn, *id),
            // Room again (flow control or the send window): the backlog goes
            // out highest priority first, whichever stream quinn named.
            Event::Stream(StreamEvent::Writable { .. }) => {
                self.wt_flush(conn);
                self.flush_all(conn);
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                if let Some((stream, _)) = self.by_quic.get(id).copied() {
                    self.drop_pending(stream);
                    let code = self.peer_code(error_code.into_inner());
                    let _ = self.session.on_stop_sending(stream, code);
                    self.close_send(*id);
                }
            }
            // Everything written was acknowledged.
            Event::Stream(StreamEvent::Finished { id }) => {
                self.wt_stream_finished(conn, *id);
                self.close_send(*id);
            }
            // Stream credit can arrive with MAX_STREAMS or with the peer's
            // transport parameters at the end of the handshake.
            Event::Stream(StreamEvent::Available { .. }) | Event::Connected => {
                self.open_waiting(conn)
            }
            Event::DatagramReceived => {
                while let Some(d) = conn.datagrams().recv() {
                    if let Some(d) = self.wt_datagram_in(d) {
                        let _ = self.session.on_datagram(d);
                    }
                }
            }
            Event::ConnectionLost { .. } if self.wt_connection_lost() => {}
            Event::ConnectionLost { reason } => {
                // A peer that closed its session gives the termination code
                // (§3.5) as the application error code.
                let code = match reason {
                    quinn_proto::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
                    _ => 0,
                };
                self.session.on_connection_closed(code, &reason.to_string());
            }
            _ => {}
        }
    }

    /// Carries out every command the session has queued.
    pub fn apply_commands(&mut self, conn: &mut Connection) {
        let window = conn.congestion_state().window() + SEND_WINDOW_SLACK;
        if window != self.send_window {
            self.send_window = window;
            conn.set_send_window(window);
        }
        self.open_waiting(conn);
        if self.wt_before_connect(conn) {
            // The session's SETUP waits: streams of a WebTransport session
            // can only be opened once it exists.
            return;
        }
        // Read only if a write needs it (a stream's first byte, a backlog
        // entry): most calls, one per object per subscriber, do not.
        let mut now = None;
        while let Some(cmd) = self.session.poll_command() {
            self.apply(conn, cmd, &mut now);
        }
        for i in 0..self.priority_updates.len() {
            let (stream, priority) = self.priority_updates[i];
            match self.streams.get(&stream) {
                Some(Some(id)) => {
                    // A stream quinn already freed has nothing left to order.
                    let _ = conn.send_stream(*id).set_priority(priority);
                    self.priorities.insert(stream, priority);
                }
                Some(None) => {
                    self.priorities.insert(stream, priority);
                }
                None => {}
            }
        }
        self.priority_updates.clear();
        self.flush_all(conn);
    }

    /// Hands waiting data to quinn-proto, highest priority first, as far as
    /// flow control and the send window allow.
    fn flush_all(&mut self, conn: &mut Connection) {
        if self.pending.is_empty() {
            return;
        }
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(
            self.pending
                .keys()
                .map(|stream| (self.priority_of(*stream), *stream)),
        );
        // Highest priority first; equal ones in stream order (older first).
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1 .0.cmp(&b.1 .0)));
        for &(_, stream) in &order {
            self.flush(conn, stream);
        }
        self.order = order;
    }

    /// Opens streams that waited for credit, in the order the session asked;
    /// stops at the first refusal.
    fn open_waiting(&mut self, conn: &mut Connection) {
        self.wt_open_control(conn);
        while let Some((stream, dir)) = self.to_open.pop_front() {
            let Some(id) = conn.streams().open(dir) else {
                self.to_open.push_front((stream, dir));
                break;
            };
            self.bind(conn, stream, id);
        }
        self.flush_all(conn);
    }

    fn bind(&mut self, conn: &mut Connection, stream: StreamRef, id: StreamId) {
        self.streams.insert(stream, Some(id));
        let ours = id.initiator() == conn.side();
        let open = Open {
            send: id.dir() == Dir::Bi || ours,
            recv: id.dir() == Dir::Bi || !ours,
        };
        self.by_quic.insert(id, (stream, open));
        if open.send {
            let _ = conn.send_stream(id).set_priority(self.priority_of(stream));
        }
        if ours {
            if let Some(header) = self.wt_stream_header(id.dir()) {
                self.queue_front(stream, header);
            }
        }
    }

    /// Puts `data` before whatever waits on `stream` (a WebTransport
    /// stream header); it leaves with the next flush.
    fn queue_front(&mut self, stream: StreamRef, data: Bytes) {
        let pending = self.pending.entry(stream).or_default();
        pending.bytes += data.len();
        self.pending_bytes += data.len();
        pending.chunks.push_front(data);
        pending.queued_at.push_front(Instant::now());
    }

    /// Our sending side of `id` is over (acknowledged, reset or stopped).
    fn close_send(&mut self, id: StreamId) {
        if let Some((stream, open)) = self.by_quic.get_mut(&id) {
            open.send = false;
            self.born.remove(stream);
        }
        self.forget_if_done(id);
    }

    /// The peer's sending side of `id` is over (FIN read or reset).
    fn close_recv(&mut self, id: StreamId) {
        if let Some((_, open)) = self.by_quic.get_mut(&id) {
            open.recv = false;
        }
        self.forget_if_done(id);
    }

    fn forget_if_done(&mut self, id: StreamId) {
        if let Some(&(stream, open)) = self.by_quic.get(&id) {
            if !open.send && !open.recv {
                self.by_quic.remove(&id);
                self.streams.remove(&stream);
                self.priorities.remove(&stream);
                self.born.remove(&stream);
                self.drop_pending(stream);
            }
        }
    }

    fn apply(&mut self, conn: &mut Connection, cmd: Command, now: &mut Option<Instant>) {
        match cmd {
            Command::OpenUni(stream) => self.open(conn, stream, Dir::Uni),
            Command::OpenBi(stream) => self.open(conn, stream, Dir::Bi),
            Command::Write {
                stream,
                data,
                mut fin,
            } => {
                let Some(bound) = self.streams.get(&stream).copied() else {
                    // Its sending side is over (stopped or reset): nothing to do.
                    return;
                };
                // An object is a header write followed by a payload write
                // on the same stream: both go to quinn-proto in one call.
                let mut chunks = [data, Bytes::new()];
                let continues =
                    |c: &Command| matches!(c, Command::Write { stream: s, .. } if *s == stream);
                if !fin && self.session.peek_command().is_some_and(continues) {
                    if let Some(Command::Write { data, fin: f, .. }) = self.session.poll_command() {
                        chunks[1] = data;
                        fin = f;
                    }
                }
                let unwritten = |chunks: &[Bytes]| chunks.iter().any(|c| !c.is_empty());
                if unwritten(&chunks) {
                    self.born
                        .entry(stream)
                        .or_insert_with(|| *now.get_or_insert_with(Instant::now));
                }
                // Nothing waits on this connection: straight to quinn-proto,
                // no backlog entry (the common case of a keeping-up
                // subscriber; order cannot be violated with nothing queued).
                // quinn-proto empties what it takes and skips empty chunks.
                if let (Some(id), true) = (bound, self.pending.is_empty()) {
                    let mut send = conn.send_stream(id);
                    while unwritten(&chunks) {
                        match send.write_chunks(&mut chunks) {
                            Ok(w) if w.bytes > 0 => {}
                            _ => break,
                        }
                    }
                    if !unwritten(&chunks) {
                        if fin {
                            let _ = send.finish();
                        }
                        return;
                    }
                }
                let pending = self.pending.entry(stream).or_default();
                for data in &mut chunks {
                    if data.is_empty() {
                        continue;
                    }
                    pending.bytes += data.len();
                    self.pending_bytes += data.len();
                    pending.chunks.push_back(std::mem::take(data));
                    pending
                        .queued_at
                        .push_back(*now.get_or_insert_with(Instant::now));
                }
                pending.fin |= fin;
                if pending.bytes > MAX_PENDING_PER_STREAM {
                    // The last resort when nobody sheds for this stream.
                    self.drop_pending(stream);
                    self.streams_reset_too_far_behind += 1;
                    self.reset(conn, stream, StreamResetCode::TooFarBehind);
                }
                // Handed to quinn-proto by flush_all, in priority order.
            }
            Command::Finish(stream) => {
                let Some(bound) = self.streams.get(&stream).copied() else {
                    return;
                };
                match (bound, self.pending.get_mut(&stream)) {
                    (_, Some(p)) => p.fin = true,
                    // Nothing of it waits: finish at once.
                    (Some(id), None) => {
                        let _ = conn.send_stream(id).finish();
                    }
                    (None, None) => self.pending.entry(stream).or_default().fin = true,
                }
            }
            Command::Reset { stream, code } => {
                self.drop_pending(stream);
                self.reset(conn, stream, code);
                if let Some(Some(id)) = self.streams.get(&stream).copied() {
                    self.close_send(id);
                }
            }
            Command::StopSending { stream, code } => {
                if let Some(Some(id)) = self.streams.get(&stream).copied() {
                    let _ = conn.recv_stream(id).stop(self.wire_code(code));
                }
            }
            Command::SendDatagram(data) => {
                let data = self.wt_datagram_out(data);
                // `true`: a full datagram buffer drops the oldest, never blocks.
                let _ = conn.datagrams().send(data, true);
            }
            Command::Close { code, reason } => {
                if code != SessionErrorCode::NoError {
                    self.closed_with = Some(code);
                    tracing::info!(
                        peer = %conn.remote_address(),
                        ?code,
                        reason = %reason,
                        "closing the session: the peer broke the protocol or was refused"
                    );
                }
                if !self.wt_close(conn, code.code(), &reason) {
                    conn.close(
                        Instant::now(),
                        varint(code.code()),
                        Bytes::from(reason.into_bytes()),
                    );
                }
            }
        }
    }

    fn reset(&mut self, conn: &mut Connection, stream: StreamRef, code: StreamResetCode) {
        if let Some(Some(id)) = self.streams.get(&stream).copied() {
            let _ = conn.send_stream(id).reset(self.wire_code(code));
        }
    }

    fn open(&mut self, conn: &mut Connection, stream: StreamRef, dir: Dir) {
        // Keep the session's order: nothing overtakes a stream still waiting.
        let opened = if self.to_open.is_empty() {
            conn.streams().open(dir)
        } else {
            None
        };
        match opened {
            Some(id) => self.bind(conn, stream, id),
            None => {
                self.streams.insert(stream, None);
                self.to_open.push_back((stream, dir));
            }
        }
    }

    /// Writes what is pending on `stream` as far as flow control allows.
    fn flush(&mut self, conn: &mut Connection, stream: StreamRef) {
        let Some(Some(id)) = self.streams.get(&stream).copied() else {
            return;
        };
        let Some(pending) = self.pending.get_mut(&stream) else {
            return;
        };
        let mut send = conn.send_stream(id);
        while !pending.chunks.is_empty() {
            // quinn-proto keeps the Bytes it takes: no copy here.
            match send.write_chunks(pending.chunks.make_contiguous()) {
                Ok(written) if written.bytes > 0 => {
                    pending.bytes -= written.bytes;
                    self.pending_bytes -= written.bytes;
                    pending.chunks.drain(..written.chunks);
                    pending.queued_at.drain(..written.chunks);
                }
                // Blocked (StreamEvent::Writable brings us back), stopped or
                // closed (the session learns that from quinn's events).
                _ => break,
            }
        }
        if pending.chunks.is_empty() {
            if pending.fin {
                let _ = send.finish();
            }
            self.pending.remove(&stream);
        }
    }

    /// Reads everything readable on `id` into the session.
    fn read(&mut self, conn: &mut Connection, id: StreamId) {
        let Some((stream, _)) = self.by_quic.get(&id).copied() else {
            self.wt_read(conn, id);
            return;
        };
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        let (mut finished, mut reset) = (false, None);
        loop {
            match chunks.next(usize::MAX) {
                // Zero-copy: the chunk is a slice of the decrypted packet.
                Ok(Some(chunk)) => {
                    if self
                        .session
                        .on_stream_data(stream, chunk.bytes, false)
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(None) => {
                    finished = true;
                    break;
                }
                Err(quinn_proto::ReadError::Reset(code)) => {
                    reset = Some(code.into_inner());
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = chunks.finalize();
        if finished {
            let _ = self.session.on_stream_data(stream, Bytes::new(), true);
        }
        if let Some(code) = reset {
            let code = self.peer_code(code);
            let _ = self.session.on_stream_reset(stream, code);
        }
        if finished || reset.is_some() {
            self.close_recv(id);
        }
        self.tie_receive_window(conn);
    }

    /// Connection credit = bound − what the session's buffers hold (at
    /// least [`MIN_RECEIVE_WINDOW`]), updated in steps of a 32nd of the
    /// bound so that MAX_DATA frames stay rare.
    fn tie_receive_window(&mut self, conn: &mut Connection) {
        let held = (self.session.buffered_bytes() + self.wt_buffered_bytes()) as u64;
        let window = self
            .receive_bound
            .saturating_sub(held)
            .max(MIN_RECEIVE_WINDOW);
        if window.abs_diff(self.receive_window) >= self.receive_bound / 32
            || (window == self.receive_bound && self.receive_window != window)
        {
            conn.set_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX));
            self.receive_window = window;
        }
    }
}

impl SessionDriver {
    /// A stream error code as this peer is sent it.
    fn wire_code(&self, code: StreamResetCode) -> VarInt {
        if self.wt.is_some() {
            // WebTransport carries application codes only in its range.
            return varint(webtransport_code(code.code() as u32));
        }
        match self.codes {
            StreamCodeDialect::Draft => varint(code.code()),
            StreamCodeDialect::Auto => varint(webtransport_code(code.code() as u32)),
        }
    }

    /// A code the peer sent (the session decodes either form): a
    /// draft-form one may settle `Auto` to `Draft`. Returns it unchanged.
    fn peer_code(&mut self, wire: u64) -> u64 {
        self.codes = self.codes.after_peer_code(wire);
        wire
    }
}

fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0))
}

/// A server-role driver (the relay's side of a connection).
pub fn server_driver(config: SessionConfig) -> SessionDriver {
    SessionDriver::new(Role::Server, config)
}
