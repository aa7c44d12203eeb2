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

use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

use bytes::Bytes;
use moqt::{
    session::{Command, Role, Session, SessionConfig, StreamRef},
    SessionErrorCode, StreamResetCode,
};
use quinn_proto::{Connection, Dir, Event, StreamEvent, StreamId, VarInt};

use crate::priority::REQUEST_STREAM_PRIORITY;

/// Bytes queued on one stream beyond what quinn-proto accepted (flow
/// control) before the stream is reset as too far behind: a slow reader
/// costs its own stream, never the relay's memory.
pub const MAX_PENDING_PER_STREAM: usize = 4 << 20;

/// Data quinn-proto has not taken yet on one stream.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    fin: bool,
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
    streams: HashMap<StreamRef, Option<StreamId>>,
    by_quic: HashMap<StreamId, (StreamRef, Open)>,
    /// Priorities set before the stream was opened, applied when it is.
    priorities: HashMap<StreamRef, i32>,
    /// Priority changes to apply with the next commands.
    priority_updates: Vec<(StreamRef, i32)>,
    /// Streams to open once the peer grants more (`StreamEvent::Available`).
    to_open: VecDeque<(StreamRef, Dir)>,
    pending: HashMap<StreamRef, Pending>,
    /// Streams reset because their reader fell too far behind.
    pub streams_reset_too_far_behind: u64,
    /// The session closed the connection with an error code.
    pub closed_with: Option<SessionErrorCode>,
}

impl SessionDriver {
    pub fn new(role: Role, config: SessionConfig) -> Self {
        Self {
            session: Session::new(role, config),
            streams: HashMap::new(),
            by_quic: HashMap::new(),
            priorities: HashMap::new(),
            priority_updates: Vec::new(),
            to_open: VecDeque::new(),
            pending: HashMap::new(),
            streams_reset_too_far_behind: 0,
            closed_with: None,
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
    /// [`apply_commands`](Self::apply_commands).
    pub fn set_priority(&mut self, stream: StreamRef, priority: i32) {
        self.priority_updates.push((stream, priority));
    }

    /// Feeds one quinn-proto event of this connection to the session.
    pub fn handle_event(&mut self, conn: &mut Connection, event: &Event) {
        match event {
            Event::Stream(StreamEvent::Opened { dir }) => {
                while let Some(id) = conn.streams().accept(*dir) {
                    let stream = self.session.on_peer_stream(*dir == Dir::Bi);
                    self.bind(conn, stream, id);
                    self.read(conn, id);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read(conn, *id),
            Event::Stream(StreamEvent::Writable { id }) => {
                if let Some((stream, _)) = self.by_quic.get(id).copied() {
                    self.flush(conn, stream);
                }
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                if let Some((stream, _)) = self.by_quic.get(id).copied() {
                    self.pending.remove(&stream);
                    let _ = self
                        .session
                        .on_stop_sending(stream, error_code.into_inner());
                    self.close_send(*id);
                }
            }
            // Everything written was acknowledged.
            Event::Stream(StreamEvent::Finished { id }) => self.close_send(*id),
            // Stream credit can arrive with MAX_STREAMS or with the peer's
            // transport parameters at the end of the handshake.
            Event::Stream(StreamEvent::Available { .. }) | Event::Connected => {
                self.open_waiting(conn)
            }
            Event::DatagramReceived => {
                while let Some(d) = conn.datagrams().recv() {
                    let _ = self.session.on_datagram(d);
                }
            }
            Event::ConnectionLost { reason } => {
                self.session.on_connection_closed(0, &reason.to_string());
            }
            _ => {}
        }
    }

    /// Carries out every command the session has queued.
    pub fn apply_commands(&mut self, conn: &mut Connection) {
        self.open_waiting(conn);
        while let Some(cmd) = self.session.poll_command() {
            self.apply(conn, cmd);
        }
        for (stream, priority) in std::mem::take(&mut self.priority_updates) {
            match self.streams.get(&stream) {
                Some(Some(id)) => {
                    // A stream quinn already freed has nothing left to order.
                    let _ = conn.send_stream(*id).set_priority(priority);
                }
                Some(None) => {
                    self.priorities.insert(stream, priority);
                }
                None => {}
            }
        }
    }

    /// Opens streams that waited for credit, in the order the session asked;
    /// stops at the first refusal.
    fn open_waiting(&mut self, conn: &mut Connection) {
        while let Some((stream, dir)) = self.to_open.pop_front() {
            let Some(id) = conn.streams().open(dir) else {
                self.to_open.push_front((stream, dir));
                break;
            };
            self.bind(conn, stream, id);
            self.flush(conn, stream);
        }
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
            let priority = self
                .priorities
                .remove(&stream)
                .unwrap_or(REQUEST_STREAM_PRIORITY);
            let _ = conn.send_stream(id).set_priority(priority);
        }
    }

    /// Our sending side of `id` is over (acknowledged, reset or stopped).
    fn close_send(&mut self, id: StreamId) {
        if let Some((_, open)) = self.by_quic.get_mut(&id) {
            open.send = false;
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
                self.pending.remove(&stream);
            }
        }
    }

    fn apply(&mut self, conn: &mut Connection, cmd: Command) {
        match cmd {
            Command::OpenUni(stream) => self.open(conn, stream, Dir::Uni),
            Command::OpenBi(stream) => self.open(conn, stream, Dir::Bi),
            Command::Write { stream, data, fin } => {
                if !self.streams.contains_key(&stream) {
                    // Its sending side is over (stopped or reset): nothing to do.
                    return;
                }
                let pending = self.pending.entry(stream).or_default();
                pending.bytes += data.len();
                if !data.is_empty() {
                    pending.chunks.push_back(data);
                }
                pending.fin |= fin;
                if pending.bytes > MAX_PENDING_PER_STREAM {
                    self.pending.remove(&stream);
                    self.streams_reset_too_far_behind += 1;
                    self.reset(conn, stream, StreamResetCode::TooFarBehind);
                    return;
                }
                self.flush(conn, stream);
            }
            Command::Finish(stream) => {
                if !self.streams.contains_key(&stream) {
                    return;
                }
                self.pending.entry(stream).or_default().fin = true;
                self.flush(conn, stream);
            }
            Command::Reset { stream, code } => {
                self.pending.remove(&stream);
                self.reset(conn, stream, code);
                if let Some(Some(id)) = self.streams.get(&stream).copied() {
                    self.close_send(id);
                }
            }
            Command::StopSending { stream, code } => {
                if let Some(Some(id)) = self.streams.get(&stream) {
                    let _ = conn.recv_stream(*id).stop(varint(code.code()));
                }
            }
            Command::SendDatagram(data) => {
                // `true`: a full datagram buffer drops the oldest, never blocks.
                let _ = conn.datagrams().send(data, true);
            }
            Command::Close { code, reason } => {
                if code != SessionErrorCode::NoError {
                    self.closed_with = Some(code);
                }
                conn.close(
                    Instant::now(),
                    varint(code.code()),
                    Bytes::from(reason.into_bytes()),
                );
            }
        }
    }

    fn reset(&mut self, conn: &mut Connection, stream: StreamRef, code: StreamResetCode) {
        if let Some(Some(id)) = self.streams.get(&stream) {
            let _ = conn.send_stream(*id).reset(varint(code.code()));
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
            Some(id) => {
                self.bind(conn, stream, id);
                self.flush(conn, stream);
            }
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
                    pending.chunks.drain(..written.chunks);
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
            let _ = self.session.on_stream_reset(stream, code);
        }
        if finished || reset.is_some() {
            self.close_recv(id);
        }
    }
}

fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0))
}

/// Convenience for callers that build a server-role driver with defaults.
pub fn server_driver() -> SessionDriver {
    SessionDriver::new(Role::Server, SessionConfig::default())
}
