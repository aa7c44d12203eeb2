//! What the relay's integration tests share: names, and quinn-proto clients
//! that run a `moqt::Session` through the relay's own [`SessionDriver`],
//! stepped by hand against an in-memory relay.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dataplane::{
    io::memory::{MemoryPeer, Wire},
    tls::{self, Identity, TransportLimits},
    worker::{IdleMode, WorkerConfig},
};
use moqt::{
    session::{Event as SessionEvent, Object, Role, SessionConfig},
    ControlMessage, FullTrackName, TrackNamespace,
};
use relay::{app::MOQT_ALPN, quic::SessionDriver, router::ALPNS};

pub fn ns(parts: &[&str]) -> TrackNamespace {
    TrackNamespace::new(parts.iter().map(|p| Bytes::copy_from_slice(p.as_bytes()))).unwrap()
}

/// Track `name` in namespace live/cam1.
pub fn track(name: &str) -> FullTrackName {
    FullTrackName::new(
        ns(&["live", "cam1"]),
        Bytes::copy_from_slice(name.as_bytes()),
    )
    .unwrap()
}

pub fn payload(g: u64, o: u64) -> Bytes {
    Bytes::from(format!("group {g} object {o} ").repeat(20))
}

pub fn relay_addr() -> SocketAddr {
    "198.18.0.1:4433".parse().unwrap()
}

/// Client `i`'s address.
pub fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::new([198, 18, 0, 11 + i as u8].into(), 50000)
}

/// The relay's self-signed identity: the roots clients trust it by, and
/// what a worker serves it with.
pub struct Tls {
    pub roots: rustls::RootCertStore,
    endpoint: Arc<quinn_proto::EndpointConfig>,
    server: Arc<tls::SharedServerConfig>,
}

impl Tls {
    pub fn self_signed() -> Self {
        let identity = Identity::self_signed(&["fastrelay"]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let server = tls::server_config(identity, &ALPNS, &TransportLimits::default()).unwrap();
        Self {
            roots,
            endpoint: Arc::new(tls::endpoint_config()),
            server: Arc::new(server.into()),
        }
    }

    /// A busy-polling worker's configuration (workers share one).
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            endpoint: self.endpoint.clone(),
            server: self.server.clone(),
            idle: IdleMode::Busy,
            admission: Default::default(),
            drain: dataplane::worker::GOAWAY_GRACE,
        }
    }
}

pub struct Client {
    pub peer: MemoryPeer,
    pub driver: SessionDriver,
    pub events: Vec<SessionEvent>,
    /// A receive stream the test reads itself instead of the driver, to
    /// see the RESET_STREAM code exactly as it came on the wire.
    pub intercept: Option<quinn_proto::StreamId>,
    /// The code of that stream's RESET_STREAM, once it came.
    pub intercepted_reset: Option<u64>,
}

impl Client {
    pub fn connect(addr: SocketAddr, roots: rustls::RootCertStore) -> Self {
        Self::connect_with(addr, roots, SessionConfig::default())
    }

    /// With its own session configuration (the SETUP it sends, say).
    pub fn connect_with(
        addr: SocketAddr,
        roots: rustls::RootCertStore,
        config: SessionConfig,
    ) -> Self {
        let crypto = tls::client_crypto(roots, MOQT_ALPN).unwrap();
        Self {
            peer: MemoryPeer::connect(addr, relay_addr(), "fastrelay", crypto).unwrap(),
            driver: SessionDriver::new(Role::Client, config),
            events: Vec::new(),
            intercept: None,
            intercepted_reset: None,
        }
    }

    /// Lets the session react to the connection, then queues datagrams.
    pub fn drive(&mut self, now: Instant, wire: &Wire) {
        self.peer.handle_timeout(now);
        let conn = &mut self.peer.conn;
        while let Some(ev) = conn.poll() {
            if let quinn_proto::Event::Stream(quinn_proto::StreamEvent::Readable { id }) = ev {
                if self.intercept == Some(id) {
                    self.intercepted_reset = self.intercepted_reset.or(reset_code(conn, id));
                    continue;
                }
            }
            self.driver.handle_event(conn, &ev);
        }
        self.driver.apply_commands(conn);
        while let Some(ev) = self.driver.session.poll_event() {
            self.events.push(ev);
        }
        self.driver.apply_commands(conn);
        self.peer.transmit(now, wire);
    }

    pub fn take(&mut self, mut pick: impl FnMut(&SessionEvent) -> bool) -> Vec<SessionEvent> {
        let (picked, rest) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|e| pick(e));
        self.events = rest;
        picked
    }

    pub fn count(&mut self, pick: impl FnMut(&SessionEvent) -> bool) -> usize {
        self.take(pick).len()
    }

    /// The objects received so far (taken from the events).
    pub fn objects(&mut self) -> Vec<Object> {
        self.take(|e| matches!(e, SessionEvent::Object(_)))
            .into_iter()
            .map(|e| {
                let SessionEvent::Object(o) = e else {
                    unreachable!()
                };
                o
            })
            .collect()
    }
}

/// Reads `id` to its end (dropping the data): the RESET_STREAM code, if
/// the peer reset it.
fn reset_code(conn: &mut quinn_proto::Connection, id: quinn_proto::StreamId) -> Option<u64> {
    let mut recv = conn.recv_stream(id);
    let mut chunks = recv.read(true).ok()?;
    let code = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(_)) => continue,
            Err(quinn_proto::ReadError::Reset(code)) => break Some(code.into_inner()),
            Ok(None) | Err(_) => break None,
        }
    };
    let _ = chunks.finalize();
    code
}

/// A relay and its clients, stepped by hand on this thread.
pub trait Stepped: Sized {
    /// One round: clients send, the relay runs, clients receive.
    fn step(&mut self);

    fn clients(&mut self) -> &mut [Client];

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.step();
            if done(self) {
                return;
            }
        }
        panic!("{what} did not happen within 10 s");
    }

    fn ready(&mut self) {
        let mut ready = vec![false; self.clients().len()];
        self.run_until("every session ready", |h| {
            for (i, c) in h.clients().iter_mut().enumerate() {
                ready[i] |= c.count(|e| matches!(e, SessionEvent::Ready { .. })) > 0;
            }
            ready.iter().all(|r| *r)
        });
    }
}

pub fn is_request_ok(e: &SessionEvent) -> bool {
    matches!(
        e,
        SessionEvent::Message {
            message: ControlMessage::RequestOk(_),
            ..
        }
    )
}

pub fn is_subscribe_ok(e: &SessionEvent) -> bool {
    matches!(
        e,
        SessionEvent::Message {
            message: ControlMessage::SubscribeOk(_),
            ..
        }
    )
}

pub fn is_upstream_subscribe(e: &SessionEvent) -> bool {
    matches!(
        e,
        SessionEvent::Request {
            message: ControlMessage::Subscribe(_),
            ..
        }
    )
}

pub fn is_publish_done(e: &SessionEvent) -> bool {
    matches!(
        e,
        SessionEvent::Message {
            message: ControlMessage::PublishDone(_),
            ..
        }
    )
}
