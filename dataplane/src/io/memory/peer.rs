//! The hand-stepped client side of a [`MemoryIo`](super::MemoryIo) wire
//! (feature `test-support`).

use std::net::SocketAddr;

use super::Wire;

/// A quinn-proto client endpoint with one connection to the worker, stepped
/// by hand over a [`Wire`] pair (the other side of a [`MemoryIo`](super::MemoryIo)).
pub struct MemoryPeer {
    /// This peer's address, as the worker sees it.
    pub addr: SocketAddr,
    server: SocketAddr,
    endpoint: quinn_proto::Endpoint,
    handle: quinn_proto::ConnectionHandle,
    pub conn: quinn_proto::Connection,
}

impl MemoryPeer {
    /// Starts a handshake from `addr` to `server` with `crypto` (see
    /// [`crate::tls::client_crypto`]).
    pub fn connect(
        addr: SocketAddr,
        server: SocketAddr,
        server_name: &str,
        crypto: rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(crypto)?;
        let mut endpoint = quinn_proto::Endpoint::new(
            std::sync::Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            true,
            None,
        );
        let config = quinn_proto::ClientConfig::new(std::sync::Arc::new(crypto));
        let (handle, conn) =
            endpoint.connect(std::time::Instant::now(), config, server, server_name)?;
        Ok(Self {
            addr,
            server,
            endpoint,
            handle,
            conn,
        })
    }

    /// Runs the connection's timers if one is due.
    pub fn handle_timeout(&mut self, now: std::time::Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
    }

    /// Puts every datagram the connection wants to send on `wire`.
    pub fn transmit(&mut self, now: std::time::Instant, wire: &Wire) {
        let mut buf = Vec::new();
        while let Some(t) = self.conn.poll_transmit(now, 1, &mut buf) {
            wire.borrow_mut()
                .push_back((self.addr, buf[..t.size].to_vec()));
            buf.clear();
        }
    }

    /// Feeds one datagram from the worker to the connection.
    pub fn receive(&mut self, now: std::time::Instant, data: &[u8]) {
        let mut response = Vec::new();
        let data = bytes::BytesMut::from(data);
        if let Some(quinn_proto::DatagramEvent::ConnectionEvent(_, event)) =
            self.endpoint
                .handle(now, self.server, None, None, data, &mut response)
        {
            self.conn.handle_event(event);
        }
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(reply) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(reply);
            }
        }
    }
}

/// One bidirectional-stream echo driven by hand over a [`MemoryPeer`]'s
/// connection: [`EchoTransfer::step`] writes what flow control allows,
/// finishes the stream once all is written, and collects what comes back.
pub struct EchoTransfer<'a> {
    pub id: quinn_proto::StreamId,
    payload: &'a [u8],
    written: usize,
    finished: bool,
    /// What came back so far.
    pub echoed: Vec<u8>,
}

impl<'a> EchoTransfer<'a> {
    /// Opens a bidirectional stream on `conn` for `payload`.
    pub fn open(conn: &mut quinn_proto::Connection, payload: &'a [u8]) -> Self {
        let id = conn
            .streams()
            .open(quinn_proto::Dir::Bi)
            .expect("stream credit for one bidirectional stream");
        Self {
            id,
            payload,
            written: 0,
            finished: false,
            echoed: Vec::new(),
        }
    }

    /// One round; true once the peer's FIN arrived.
    pub fn step(&mut self, conn: &mut quinn_proto::Connection) -> bool {
        if self.written < self.payload.len() {
            self.written += conn
                .send_stream(self.id)
                .write(&self.payload[self.written..])
                .unwrap_or(0);
        } else if !self.finished {
            self.finished = conn.send_stream(self.id).finish().is_ok();
        }
        let mut recv = conn.recv_stream(self.id);
        let Ok(mut chunks) = recv.read(true) else {
            return false;
        };
        let mut fin = false;
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(c)) => self.echoed.extend_from_slice(&c.bytes),
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = chunks.finalize();
        fin
    }
}
