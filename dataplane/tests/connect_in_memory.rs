//! A worker opens a QUIC connection itself (`Connections::connect`, what a
//! relay's links to upstream relays use) to another worker, over the
//! in-memory backend: the handshake completes from the worker's own
//! address, a stream is echoed back, and the closed connection is
//! reported to the application.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use dataplane::{
    echo::{EchoApp, ECHO_ALPN},
    io::memory::{MemoryIo, Wire},
    tls::{self, Identity, TransportLimits},
    worker::{Admission, Application, Connections, IdleMode, Worker, WorkerConfig},
};
use quinn_proto::{ClientConfig, ConnectionHandle, Dir, Event, StreamEvent};

const SERVER: &str = "198.18.0.1:4433";
const DIALER: &str = "198.18.0.2:4433";
const MESSAGE: &[u8] = b"a worker's own connection";

/// Connects once (from `poll_external`), sends `MESSAGE` on a stream and
/// collects what comes back.
struct Dialer {
    client: Option<ClientConfig>,
    ch: Option<ConnectionHandle>,
    connected: bool,
    echoed: Vec<u8>,
    closed: Option<ConnectionHandle>,
}

impl Application for Dialer {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        let Some(conn) = conns.get_mut(ch) else {
            return;
        };
        match event {
            Event::Connected => {
                self.connected = true;
                let id = conn.streams().open(Dir::Bi).expect("stream credit");
                let written = conn.send_stream(id).write(MESSAGE).unwrap();
                assert_eq!(written, MESSAGE.len());
                conn.send_stream(id).finish().unwrap();
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                let mut recv = conn.recv_stream(id);
                let mut chunks = recv.read(true).unwrap();
                while let Ok(Some(c)) = chunks.next(usize::MAX) {
                    self.echoed.extend_from_slice(&c.bytes);
                }
                let _ = chunks.finalize();
            }
            _ => {}
        }
    }

    fn connection_closed(&mut self, ch: ConnectionHandle) {
        self.closed = Some(ch);
    }

    fn poll_external(&mut self, conns: &mut Connections<'_>) -> bool {
        let Some(client) = self.client.take() else {
            return false;
        };
        let ch = conns
            .connect(client, SERVER.parse().unwrap(), "fastrelay")
            .expect("connect");
        self.ch = Some(ch);
        true
    }
}

fn worker<A: Application>(
    app: A,
    inbox: Wire,
    outbox: Wire,
    server: &Arc<tls::SharedServerConfig>,
) -> Worker<MemoryIo, A> {
    Worker::new(
        MemoryIo::new(inbox, outbox),
        app,
        WorkerConfig {
            endpoint: Arc::new(tls::endpoint_config()),
            server: server.clone(),
            idle: IdleMode::Busy,
            admission: Admission::default(),
            drain: dataplane::worker::GOAWAY_GRACE,
        },
    )
}

/// Moves what `from` (at `from_addr`) sent to `to`'s inbox, as coming
/// from `from_addr`; checks it was addressed to `to_addr`.
fn carry(outbox: &Wire, from_addr: SocketAddr, inbox: &Wire, to_addr: SocketAddr) -> usize {
    let sent: Vec<_> = outbox.borrow_mut().drain(..).collect();
    let n = sent.len();
    for (dst, data) in sent {
        assert_eq!(dst, to_addr, "sent to a stranger");
        inbox.borrow_mut().push_back((from_addr, data));
    }
    n
}

#[test]
fn a_worker_connects_out_from_its_own_address() {
    let identity = Identity::self_signed(&["fastrelay"]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.chain[0].clone()).unwrap();
    let limits = TransportLimits::default();
    let server = Arc::new(
        tls::server_config(identity, &[ECHO_ALPN], &limits)
            .unwrap()
            .into(),
    );
    let client = tls::link_client_config(roots, ECHO_ALPN, &limits).unwrap();

    let (to_server, from_server, to_dialer, from_dialer): (Wire, Wire, Wire, Wire) =
        Default::default();
    let mut echo = worker(
        EchoApp::default(),
        to_server.clone(),
        from_server.clone(),
        &server,
    );
    let dialer = Dialer {
        client: Some(client),
        ch: None,
        connected: false,
        echoed: Vec::new(),
        closed: None,
    };
    let mut dialer = worker(dialer, to_dialer.clone(), from_dialer.clone(), &server);
    let (server_addr, dialer_addr) = (SERVER.parse().unwrap(), DIALER.parse().unwrap());

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut carried = 0;
    while dialer.app().echoed.len() < MESSAGE.len() {
        assert!(Instant::now() < deadline, "no echo within 10 s");
        let now = Instant::now();
        dialer.iterate(now).unwrap();
        carried += carry(&from_dialer, dialer_addr, &to_server, server_addr);
        echo.iterate(now).unwrap();
        carried += carry(&from_server, server_addr, &to_dialer, dialer_addr);
    }
    assert!(dialer.app().connected);
    assert_eq!(dialer.app().echoed, MESSAGE);
    assert!(
        carried > 2,
        "{carried} datagrams for a handshake and an echo"
    );
    assert_eq!(echo.connection_count(), 1);
    assert_eq!(dialer.connection_count(), 1);

    // The server goes: the dialer's connection closes and the application
    // hears of it.
    drop(echo);
    let ch = dialer.app().ch.expect("connected");
    let deadline = Instant::now() + Duration::from_secs(60);
    while dialer.app().closed.is_none() {
        assert!(
            Instant::now() < deadline,
            "the lost connection was never reported"
        );
        dialer.iterate(Instant::now()).unwrap();
        from_dialer.borrow_mut().clear();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(dialer.app().closed, Some(ch));
    assert_eq!(dialer.connection_count(), 0);
}
