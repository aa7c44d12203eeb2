//! A test application for the dataplane until the MoQT layer lands: echoes
//! every bidirectional stream back on itself and every QUIC DATAGRAM back to
//! its sender. It proves the path end to end under its own ALPN.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use quinn_proto::{Connection, ConnectionHandle, Dir, Event, StreamEvent, StreamId, VarInt};

use crate::driver::{Application, Connections};

pub const ECHO_ALPN: &[u8] = b"fastrelay-echo/1";

/// Bytes an echo stream may hold unsent before it stops reading (the peer is
/// then held back by flow control, not by our memory).
const MAX_PENDING_PER_STREAM: usize = 1 << 20;

#[derive(Default)]
struct EchoStream {
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// The peer finished its side: finish ours once everything is echoed.
    fin_received: bool,
}

#[derive(Default)]
pub struct EchoApp {
    streams: HashMap<(ConnectionHandle, StreamId), EchoStream>,
    pub datagrams_echoed: u64,
    pub stream_bytes_echoed: u64,
}

impl EchoApp {
    fn pump(&mut self, ch: ConnectionHandle, conn: &mut Connection, id: StreamId) {
        let Some(state) = self.streams.get_mut(&(ch, id)) else {
            return;
        };
        // Write out what is pending first, then read more while there is room.
        loop {
            while let Some(chunk) = state.pending.front_mut() {
                match conn.send_stream(id).write(chunk) {
                    Ok(n) => {
                        self.stream_bytes_echoed += n as u64;
                        state.pending_bytes -= n;
                        if n == chunk.len() {
                            state.pending.pop_front();
                        } else {
                            let _ = chunk.split_to(n);
                            break;
                        }
                    }
                    Err(quinn_proto::WriteError::Blocked) => break,
                    Err(_) => {
                        // Peer stopped or reset the stream: nothing more to echo.
                        self.streams.remove(&(ch, id));
                        return;
                    }
                }
            }
            if state.pending_bytes >= MAX_PENDING_PER_STREAM || state.fin_received {
                break;
            }
            let mut recv = conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                break;
            };
            let mut got_any = false;
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        got_any = true;
                        state.pending_bytes += chunk.bytes.len();
                        state.pending.push_back(chunk.bytes);
                        if state.pending_bytes >= MAX_PENDING_PER_STREAM {
                            break;
                        }
                    }
                    Ok(None) => {
                        state.fin_received = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Dropping `chunks` releases flow-control credit to the peer.
            let _ = chunks.finalize();
            if !got_any {
                break;
            }
        }
        if state.fin_received && state.pending.is_empty() {
            let _ = conn.send_stream(id).finish();
            self.streams.remove(&(ch, id));
        }
    }
}

impl Application for EchoApp {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        let Some(conn) = conns.get_mut(ch) else {
            return;
        };
        match event {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                while let Some(id) = conn.streams().accept(Dir::Bi) {
                    self.streams.entry((ch, id)).or_default();
                    self.pump(ch, conn, id);
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                // Not part of the echo protocol: refuse the stream.
                while let Some(id) = conn.streams().accept(Dir::Uni) {
                    let _ = conn.recv_stream(id).stop(VarInt::from_u32(1));
                }
            }
            Event::Stream(StreamEvent::Readable { id })
            | Event::Stream(StreamEvent::Writable { id }) => {
                self.pump(ch, conn, id);
            }
            Event::DatagramReceived => {
                while let Some(datagram) = conn.datagrams().recv() {
                    // `true`: if the send buffer is full, drop the oldest (datagrams are unreliable).
                    if conn.datagrams().send(datagram, true).is_ok() {
                        self.datagrams_echoed += 1;
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                tracing::debug!(handle = ch.0, %reason, "echo connection lost");
            }
            _ => {}
        }
    }

    fn connection_closed(&mut self, ch: ConnectionHandle) {
        self.streams.retain(|(c, _), _| *c != ch);
    }
}
