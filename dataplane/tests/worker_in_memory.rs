//! The worker loop driven without sockets: an in-memory `PacketIo` between
//! the relay's `Worker` (echo application) and a quinn-proto client endpoint
//! that the test steps by hand, like quinn-proto's own tests.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dataplane::{
    echo::{EchoApp, ECHO_ALPN},
    frame::MacAddr,
    io::{
        memory::{EchoTransfer, MemoryIo, MemoryPeer, Wire},
        LinkPeer,
    },
    tls::{self, Identity, TransportLimits},
    worker::{Admission, Application, CloseReason, Connections, IdleMode, Worker, WorkerConfig},
};
use quinn_proto::{Connection, ConnectionHandle, Dir, Event, StreamEvent};

const RELAY: &str = "198.18.0.1:4433";
const CLIENT: &str = "198.18.0.11:50000";

fn relay_addr() -> SocketAddr {
    RELAY.parse().unwrap()
}

/// The hand-stepped quinn-proto client of every test here.
type Client = MemoryPeer;

fn connect(addr: SocketAddr, roots: rustls::RootCertStore) -> Client {
    let crypto = tls::client_crypto(roots, ECHO_ALPN).unwrap();
    MemoryPeer::connect(addr, relay_addr(), "fastrelay", crypto).unwrap()
}

struct Harness<A: Application> {
    worker: Worker<MemoryIo, A>,
    /// The configuration the worker accepts with (replaceable).
    server: Arc<tls::SharedServerConfig>,
    /// What the clients trust: the first certificate.
    roots: rustls::RootCertStore,
    to_relay: Wire,
    from_relay: Wire,
    clients: Vec<Client>,
}

impl Harness<EchoApp> {
    fn new() -> Self {
        Self::with_app(EchoApp::default(), 1)
    }
}

impl<A: Application> Harness<A> {
    fn with_app(app: A, clients: usize) -> Self {
        Self::with_admission(app, clients, Admission::default())
    }

    fn with_admission(app: A, clients: usize, admission: Admission) -> Self {
        Self::with_limits(app, clients, admission, TransportLimits::default())
    }

    fn with_limits(app: A, clients: usize, admission: Admission, limits: TransportLimits) -> Self {
        let identity = Identity::self_signed(&["fastrelay"]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let server = tls::server_config(identity, &[ECHO_ALPN], &limits).unwrap();
        let server: Arc<tls::SharedServerConfig> = Arc::new(server.into());
        let (to_relay, from_relay): (Wire, Wire) = Default::default();
        let io = MemoryIo::new(to_relay.clone(), from_relay.clone());
        let worker = Worker::new(
            io,
            app,
            WorkerConfig {
                endpoint: Arc::new(tls::endpoint_config()),
                server: server.clone(),
                idle: IdleMode::Busy,
                admission,
                drain: dataplane::worker::GOAWAY_GRACE,
            },
        );
        let clients = (0..clients)
            .map(|i| {
                let addr = if i == 0 {
                    CLIENT.parse().unwrap()
                } else {
                    SocketAddr::new([198, 18, 0, 11 + i as u8].into(), 50000)
                };
                connect(addr, roots.clone())
            })
            .collect();
        Self {
            worker,
            server,
            roots,
            to_relay,
            from_relay,
            clients,
        }
    }

    /// Client 0's connection (the single-client tests use only that one).
    fn conn(&mut self) -> &mut Connection {
        &mut self.clients[0].conn
    }

    /// Hands what the relay sent to the clients it was addressed to.
    fn deliver(&mut self, now: Instant) {
        let answers: Vec<_> = self.from_relay.borrow_mut().drain(..).collect();
        for (to, data) in answers {
            let client = self
                .clients
                .iter_mut()
                .find(|c| c.addr == to)
                .expect("relay answered a stranger");
            client.receive(now, &data);
        }
    }

    /// One round: clients transmit, worker iterates, clients take the
    /// answers. Returns client 0's application events.
    fn step(&mut self) -> Vec<Event> {
        let now = Instant::now();
        for c in &mut self.clients {
            c.handle_timeout(now);
            c.transmit(now, &self.to_relay);
        }
        self.worker.iterate(now).unwrap();
        self.deliver(now);
        std::iter::from_fn(|| self.clients[0].conn.poll()).collect()
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self, &[Event]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let events = self.step();
            if done(self, &events) {
                return;
            }
        }
        panic!("{what} did not happen within 10 s");
    }
}

#[test]
fn handshake_stream_and_datagram_echo_without_sockets() {
    let mut h = Harness::new();
    h.run_until("handshake", |_, evs| {
        evs.iter().any(|e| matches!(e, Event::Connected))
    });

    // 300 kB on a stream, echoed back byte for byte.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut echo = EchoTransfer::open(h.conn(), &payload);
    h.run_until("stream echo", |h, _| echo.step(h.conn()));
    assert_eq!(echo.echoed.len(), payload.len());
    assert!(echo.echoed == payload, "echoed bytes differ");

    // Ten datagrams come back.
    for i in 0..10u8 {
        h.conn()
            .datagrams()
            .send(Bytes::from(vec![i; 100]), false)
            .unwrap();
    }
    let mut got = Vec::new();
    h.run_until("datagram echo", |h, _| {
        while let Some(d) = h.conn().datagrams().recv() {
            got.push(d[0]);
        }
        got.len() == 10
    });
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    assert_eq!(h.worker.connection_count(), 1);

    // 300 datagram round trips, one at a time: each moves the relay's
    // deadlines; superseded heap entries must stay bounded.
    for i in 0..300u32 {
        h.conn()
            .datagrams()
            .send(Bytes::from(i.to_be_bytes().to_vec()), false)
            .unwrap();
        h.run_until("ping-pong", |h, _| h.conn().datagrams().recv().is_some());
    }
    assert!(
        h.worker.timer_queue_len() <= 2 + 64,
        "timer heap grew to {}",
        h.worker.timer_queue_len()
    );
    assert_eq!(h.worker.app().datagrams_echoed, 310);
    assert_eq!(h.worker.app().stream_bytes_echoed, payload.len() as u64);
}

#[test]
fn a_replaced_certificate_serves_new_handshakes_and_spares_established_ones() {
    let mut h = Harness::new();
    h.run_until("handshake", |_, evs| {
        evs.iter().any(|e| matches!(e, Event::Connected))
    });

    // What a SIGHUP reload does: a new identity for every handshake from now on.
    let fresh = Identity::self_signed(&["fastrelay"]).unwrap();
    let mut fresh_roots = rustls::RootCertStore::empty();
    fresh_roots.add(fresh.chain[0].clone()).unwrap();
    let config = tls::server_config(fresh, &[ECHO_ALPN], &TransportLimits::default()).unwrap();
    h.server.replace(Arc::new(config));
    let old_roots = h.roots.clone();
    h.clients
        .push(connect("198.18.0.21:50000".parse().unwrap(), fresh_roots));
    h.clients
        .push(connect("198.18.0.22:50000".parse().unwrap(), old_roots));

    let (mut trusting_new, mut trusting_old) = (None, None);
    h.run_until("both new handshakes end", |h, _| {
        for (i, outcome) in [(1, &mut trusting_new), (2, &mut trusting_old)] {
            while let Some(e) = h.clients[i].conn.poll() {
                match e {
                    Event::Connected => *outcome = Some(Ok(())),
                    Event::ConnectionLost { reason } => *outcome = Some(Err(reason.to_string())),
                    _ => {}
                }
            }
        }
        trusting_new.is_some() && trusting_old.is_some()
    });
    assert_eq!(trusting_new, Some(Ok(())), "the new certificate is served");
    let refused = trusting_old.unwrap().unwrap_err();
    assert!(
        refused.to_lowercase().contains("certificate"),
        "a client trusting only the old certificate must fail its handshake: {refused}"
    );

    // The connection made before the reload still works.
    let payload = vec![0x5a; 20_000];
    let mut echo = EchoTransfer::open(h.conn(), &payload);
    h.run_until("echo on the old connection", |h, _| echo.step(h.conn()));
    assert!(echo.echoed == payload);
}

#[test]
fn garbage_from_a_stranger_leaves_the_connection_alone() {
    let mut h = Harness::new();
    h.run_until("handshake", |_, evs| {
        evs.iter().any(|e| matches!(e, Event::Connected))
    });
    let stranger: SocketAddr = "198.18.0.66:9999".parse().unwrap();
    let mut seed = 0x1234_5678u32;
    for i in 0..2_000 {
        let len = 1 + (i * 37) % 1400;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        h.to_relay.borrow_mut().push_back((stranger, bytes));
    }
    // Also garbage that claims to come from the client's own address.
    for len in [1usize, 20, 1200] {
        h.to_relay
            .borrow_mut()
            .push_back((CLIENT.parse().unwrap(), vec![0x40; len]));
    }
    // The stranger's datagrams may draw stateless answers; drain them aside.
    for _ in 0..100 {
        h.worker.iterate(Instant::now()).unwrap();
        h.from_relay.borrow_mut().retain(|(to, _)| *to != stranger);
        if h.to_relay.borrow().is_empty() {
            break;
        }
    }
    let id = h.conn().streams().open(Dir::Bi).unwrap();
    h.conn().send_stream(id).write(b"still here").unwrap();
    h.conn().send_stream(id).finish().unwrap();
    let mut echoed = Vec::new();
    h.run_until("echo after garbage", |h, evs| {
        let readable = evs
            .iter()
            .any(|e| matches!(e, Event::Stream(StreamEvent::Readable { .. })));
        if readable {
            let mut recv = h.conn().recv_stream(id);
            let mut chunks = recv.read(true).unwrap();
            while let Ok(Some(c)) = chunks.next(usize::MAX) {
                echoed.extend_from_slice(&c.bytes);
            }
            let _ = chunks.finalize();
        }
        echoed == b"still here"
    });
    assert_eq!(
        h.worker.connection_count(),
        1,
        "garbage must not create or kill connections"
    );
}

/// Forwards every datagram received on one connection to all the others: the
/// smallest application that needs the whole connection set.
#[derive(Default)]
struct FanOut {
    peers: Vec<ConnectionHandle>,
}

impl Application for FanOut {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        if !matches!(event, Event::DatagramReceived) {
            return;
        }
        while let Some(datagram) = conns.get_mut(ch).and_then(|c| c.datagrams().recv()) {
            self.peers.clear();
            self.peers.extend(conns.handles().filter(|h| *h != ch));
            for &peer in &self.peers {
                if let Some(conn) = conns.get_mut(peer) {
                    // Shared Bytes: the copy per subscriber is its own seal.
                    let _ = conn.datagrams().send(datagram.clone(), true);
                }
            }
        }
    }
}

/// A datagram from client 0 reaches clients 1 and 2 in the very worker
/// iteration that received it.
#[test]
fn forwarding_to_other_connections_leaves_in_the_same_iteration() {
    let mut h = Harness::with_app(FanOut::default(), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut connected = [false; 3];
    while !connected.iter().all(|c| *c) {
        assert!(Instant::now() < deadline, "handshakes did not complete");
        // step() hands back client 0's events; the others are polled here.
        connected[0] |= h.step().iter().any(|e| matches!(e, Event::Connected));
        for (i, c) in h.clients.iter_mut().enumerate().skip(1) {
            while let Some(ev) = c.conn.poll() {
                connected[i] |= matches!(ev, Event::Connected);
            }
        }
    }
    // Let the handshakes settle (HANDSHAKE_DONE, ACKs), then start clean.
    for _ in 0..20 {
        h.step();
    }
    h.from_relay.borrow_mut().clear();

    let now = Instant::now();
    h.clients[0]
        .conn
        .datagrams()
        .send(Bytes::from_static(b"object"), false)
        .unwrap();
    h.clients[0].handle_timeout(now);
    h.clients[0].transmit(now, &h.to_relay);
    h.worker.iterate(now).unwrap();
    let sent_to: Vec<SocketAddr> = h.from_relay.borrow().iter().map(|(to, _)| *to).collect();
    for i in 1..3 {
        assert!(
            sent_to.contains(&h.clients[i].addr),
            "client {i} got nothing in the same iteration: {sent_to:?}"
        );
    }
    h.deliver(now);
    for i in 1..3 {
        let got = h.clients[i]
            .conn
            .datagrams()
            .recv()
            .expect("forwarded datagram");
        assert_eq!(&got[..], b"object");
    }
    assert!(
        h.clients[0].conn.datagrams().recv().is_none(),
        "the sender must not get its own datagram"
    );
}

/// Link addresses are learnt from a new connection's Initial (only for an
/// address not known yet) and then only from packets quinn-proto accepted:
/// a forged or replayed datagram from another link does not redirect the
/// client's replies; the client's own next packet from a new link does.
#[test]
fn links_are_learnt_only_from_accepted_packets() {
    let link = |last: u8| LinkPeer {
        mac: MacAddr([2, 0, 0, 0, 0, last]),
        vlan: None,
    };
    let client_ip = CLIENT.parse::<SocketAddr>().unwrap().ip();
    let mut h = Harness::new();
    h.worker.io_mut().link = Some(link(1));
    h.run_until("handshake", |_, evs| {
        evs.iter().any(|e| matches!(e, Event::Connected))
    });
    h.run_until("quiet", |h, _| h.to_relay.borrow().is_empty());
    assert_eq!(h.worker.io().learned.get(&client_ip), Some(&link(1)));

    // A genuine packet, captured: then replayed and tampered with, both
    // from a forger's link.
    let now = Instant::now();
    h.conn().ping();
    h.clients[0].transmit(now, &h.to_relay);
    let genuine: Vec<_> = h.to_relay.borrow().iter().cloned().collect();
    assert!(!genuine.is_empty());
    h.worker.iterate(now).unwrap();
    h.deliver(now);
    h.worker.io_mut().link = Some(link(66));
    for (from, data) in &genuine {
        let mut tampered = data.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x55;
        let mut wire = h.to_relay.borrow_mut();
        wire.push_back((*from, data.clone()));
        wire.push_back((*from, tampered));
    }
    h.worker.iterate(Instant::now()).unwrap();
    assert_eq!(
        h.worker.io().learned.get(&client_ip),
        Some(&link(1)),
        "a replayed or forged frame moved the client's link"
    );
    assert_eq!(h.worker.connection_count(), 1);

    // The client itself, now behind another link: learnt.
    h.worker.io_mut().link = Some(link(2));
    let now = Instant::now();
    h.conn().ping();
    h.clients[0].transmit(now, &h.to_relay);
    h.worker.iterate(now).unwrap();
    assert_eq!(h.worker.io().learned.get(&client_ip), Some(&link(2)));
}

/// Admission: with Retry required at once, clients still connect (after
/// proving their address); beyond the connection cap the next client is
/// refused and the ones admitted keep working.
#[test]
fn retry_under_load_and_the_connection_cap() {
    let admission = Admission {
        max_connections: 2,
        retry_above_handshakes: 0,
        max_handshakes: 16,
    };
    let mut h = Harness::with_admission(FanOut::default(), 3, admission);
    // The three first Initials are each answered with a Retry packet
    // (long header, type 3) and cost no connection.
    let now = Instant::now();
    for c in &mut h.clients {
        c.transmit(now, &h.to_relay);
    }
    h.worker.iterate(now).unwrap();
    let retries = h
        .from_relay
        .borrow()
        .iter()
        .filter(|(_, d)| d[0] & 0xf0 == 0xf0)
        .count();
    assert_eq!(retries, 3);
    assert_eq!(h.worker.connection_count(), 0);
    h.deliver(now);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut connected, mut lost) = ([false; 3], [false; 3]);
    while Instant::now() < deadline && connected.iter().filter(|c| **c).count() < 2 {
        connected[0] |= h.step().iter().any(|e| matches!(e, Event::Connected));
        for (i, c) in h.clients.iter_mut().enumerate().skip(1) {
            while let Some(ev) = c.conn.poll() {
                connected[i] |= matches!(ev, Event::Connected);
                lost[i] |= matches!(ev, Event::ConnectionLost { .. });
            }
        }
    }
    for _ in 0..50 {
        h.step();
        for (i, c) in h.clients.iter_mut().enumerate().skip(1) {
            while let Some(ev) = c.conn.poll() {
                connected[i] |= matches!(ev, Event::Connected);
                lost[i] |= matches!(ev, Event::ConnectionLost { .. });
            }
        }
    }
    h.worker.publish_stats();
    let stats = h.worker.stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(h.worker.connection_count(), 2);
    assert_eq!(connected.iter().filter(|c| **c).count(), 2, "{connected:?}");
    assert!(
        get(&stats.connections_retried) >= 3,
        "every client got a Retry: {} retried, {} accepted, {} refused",
        get(&stats.connections_retried),
        get(&stats.connections_accepted),
        get(&stats.connections_refused)
    );
    assert_eq!(get(&stats.connections_accepted), 2);
    assert!(get(&stats.connections_refused) >= 1);
    let refused = (0..3).find(|&i| !connected[i]).unwrap();
    assert!(refused == 0 || lost[refused], "the refused client was told");
}

/// How connections ended is counted by reason: a client that closes its
/// application right after the handshake (while its close still travels
/// as a transport APPLICATION_ERROR), one that falls silent until the idle
/// timeout.
#[test]
fn closed_connections_are_counted_by_reason() {
    let limits = TransportLimits {
        idle_timeout: Duration::from_millis(300),
        ..TransportLimits::default()
    };
    let mut h = Harness::with_limits(EchoApp::default(), 2, Admission::default(), limits);
    let mut connected = [false; 2];
    h.run_until("both handshakes", |h, evs| {
        connected[0] |= evs.iter().any(|e| matches!(e, Event::Connected));
        while let Some(ev) = h.clients[1].conn.poll() {
            connected[1] |= matches!(ev, Event::Connected);
        }
        connected == [true, true] && h.worker.connection_count() == 2
    });

    // Client 0 closes; client 1 is never heard from again.
    let now = Instant::now();
    h.clients[0]
        .conn
        .close(now, 0u32.into(), Bytes::from_static(b"bye"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.worker.connection_count() > 0 && Instant::now() < deadline {
        let now = Instant::now();
        h.clients[0].handle_timeout(now);
        h.clients[0].transmit(now, &h.to_relay);
        h.worker.iterate(now).unwrap();
        h.deliver(now);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.worker.connection_count(), 0, "connections left");
    h.worker.publish_stats();
    let stats = h.worker.stats();
    let closed: Vec<(&str, u64)> = CloseReason::ALL
        .iter()
        .map(|r| {
            let n =
                stats.connections_closed[*r as usize].load(std::sync::atomic::Ordering::Relaxed);
            (r.name(), n)
        })
        .collect();
    let expected: Vec<(&str, u64)> = CloseReason::ALL
        .iter()
        .map(|r| {
            let n = match r {
                CloseReason::PeerApplication | CloseReason::IdleTimeout => 1,
                _ => 0,
            };
            (r.name(), n)
        })
        .collect();
    assert_eq!(closed, expected);
}
