//! Two workers of one group, each over its own in-memory backend: datagrams
//! that reach the wrong worker are handed to the owner of their connection,
//! which alone runs the connection and answers through its own backend.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use dataplane::{
    cid::{dcid_of, owner_of, CidKey, WorkerCidGenerator, LOCAL_CID_LEN},
    echo::{EchoApp, ECHO_ALPN},
    frame::MacAddr,
    handoff::WorkerGroup,
    io::{
        memory::{EchoTransfer, MemoryIo, MemoryPeer, Wire},
        LinkPeer,
    },
    tls::{self, Identity, TransportLimits},
    worker::{IdleMode, Worker, WorkerConfig, WorkerStats},
};
use quinn_proto::{ConnectionIdGenerator, Event};

const RELAY: &str = "198.18.0.1:4433";
const CLIENT: &str = "198.18.0.11:50000";

/// Where the test puts the client's datagrams.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    /// All to the worker that does not own the connection.
    Misrouted,
    /// Alternating between the two workers, datagram by datagram.
    Mixed,
}

struct Pair {
    workers: Vec<Worker<MemoryIo, EchoApp>>,
    to_worker: Vec<Wire>,
    from_worker: Vec<Wire>,
    client: MemoryPeer,
    /// The owner of the client's connection: the worker that received its
    /// first Initial.
    owner: usize,
    delivery: Delivery,
    /// Client datagrams put on each worker's wire.
    delivered: [u64; 2],
    next_mixed: usize,
}

impl Pair {
    fn new(inbox_capacity: usize) -> Self {
        let identity = Identity::self_signed(&["fastrelay"]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let server: Arc<tls::SharedServerConfig> = Arc::new(
            tls::server_config(identity, &[ECHO_ALPN], &TransportLimits::default())
                .unwrap()
                .into(),
        );
        let endpoint = Arc::new(tls::endpoint_config());
        let mut to_worker = Vec::new();
        let mut from_worker = Vec::new();
        let workers = WorkerGroup::new(2, inbox_capacity)
            .unwrap()
            .split()
            .into_iter()
            .map(|steering| {
                let (to, from): (Wire, Wire) = Default::default();
                to_worker.push(to.clone());
                from_worker.push(from.clone());
                let mut io = MemoryIo::new(to, from);
                io.link = Some(link_of(steering.index()));
                Worker::in_group(
                    io,
                    EchoApp::default(),
                    WorkerConfig {
                        endpoint: endpoint.clone(),
                        server: server.clone(),
                        idle: IdleMode::Busy,
                        admission: Default::default(),
                        drain: dataplane::worker::GOAWAY_GRACE,
                    },
                    steering,
                )
            })
            .collect::<Vec<_>>();
        assert_eq!(workers[1].index(), 1);
        let crypto = tls::client_crypto(roots, ECHO_ALPN).unwrap();
        let mut client = MemoryPeer::connect(
            CLIENT.parse().unwrap(),
            RELAY.parse().unwrap(),
            "fastrelay",
            crypto,
        )
        .unwrap();
        // The worker that receives the client's first Initial owns the
        // connection (its DCID is the client's, not one of ours); every
        // later datagram then goes to the other one.
        let scratch: Wire = Default::default();
        client.transmit(Instant::now(), &scratch);
        let first = scratch.borrow().front().unwrap().1.clone();
        assert_eq!(owner_of(dcid_of(&first, LOCAL_CID_LEN).unwrap(), 2), None);
        let owner = 0;
        to_worker[owner]
            .borrow_mut()
            .extend(scratch.borrow_mut().drain(..));
        let delivered = {
            let mut d = [0; 2];
            d[owner] = to_worker[owner].borrow().len() as u64;
            d
        };
        Self {
            workers,
            to_worker,
            from_worker,
            client,
            owner,
            delivery: Delivery::Misrouted,
            delivered,
            next_mixed: 0,
        }
    }

    fn misrouted(&self) -> usize {
        1 - self.owner
    }

    /// One round: the client transmits, both workers iterate (the one that
    /// received first, so its hand-offs are taken in the same round), the
    /// client takes the answers. Returns the client's events.
    fn step(&mut self) -> Vec<Event> {
        let now = Instant::now();
        self.client.handle_timeout(now);
        let scratch: Wire = Default::default();
        self.client.transmit(now, &scratch);
        for (from, data) in scratch.borrow_mut().drain(..) {
            // Short-header packets carry a CID the relay issued: the owner's.
            if data[0] & 0x80 == 0 {
                let dcid = dcid_of(&data, LOCAL_CID_LEN).unwrap();
                assert_eq!(CidKey::process().decode(dcid, 2), Some(self.owner));
            }
            let target = match self.delivery {
                Delivery::Misrouted => self.misrouted(),
                Delivery::Mixed => {
                    self.next_mixed ^= 1;
                    self.next_mixed
                }
            };
            self.delivered[target] += 1;
            self.to_worker[target].borrow_mut().push_back((from, data));
        }
        let misrouted = self.misrouted();
        self.workers[misrouted].iterate(now).unwrap();
        self.workers[self.owner].iterate(now).unwrap();
        assert!(
            self.from_worker[misrouted].borrow().is_empty(),
            "the worker that does not own the connection sent something"
        );
        let answers: Vec<_> = self.from_worker[self.owner]
            .borrow_mut()
            .drain(..)
            .collect();
        for (to, data) in answers {
            assert_eq!(to, CLIENT.parse::<SocketAddr>().unwrap());
            self.client.receive(now, &data);
        }
        std::iter::from_fn(|| self.client.conn.poll()).collect()
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

    fn stats(&self, worker: usize) -> Arc<WorkerStats> {
        self.workers[worker].publish_stats();
        self.workers[worker].stats()
    }

    /// Sends `payload` on a new stream and checks it comes back whole.
    fn echo(&mut self, payload: &[u8]) {
        let mut echo = EchoTransfer::open(&mut self.client.conn, payload);
        self.run_until("stream echo", |p, _| echo.step(&mut p.client.conn));
        assert!(echo.echoed == payload, "echoed bytes differ");
    }
}

/// The fake source MAC that worker `i`'s backend reports.
fn link_of(i: usize) -> LinkPeer {
    LinkPeer {
        mac: MacAddr([2, 0, 0, 0, 0, i as u8]),
        vlan: Some(7),
    }
}

fn get(stat: &std::sync::atomic::AtomicU64) -> u64 {
    stat.load(Ordering::Relaxed)
}

#[test]
fn misrouted_client_is_served_by_the_owner() {
    let mut p = Pair::new(1024);
    let (owner, misrouted) = (p.owner, p.misrouted());
    p.run_until("handshake", |_, evs| {
        evs.iter().any(|e| matches!(e, Event::Connected))
    });
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    p.echo(&payload);

    assert_eq!(p.workers[owner].connection_count(), 1);
    assert_eq!(p.workers[misrouted].connection_count(), 0);
    assert_eq!(
        p.workers[owner].app().stream_bytes_echoed,
        payload.len() as u64
    );
    let (o, m) = (p.stats(owner), p.stats(misrouted));
    // Only the first Initial reached the owner; everything after it came
    // through the other worker.
    assert_eq!(get(&o.rx_packets), p.delivered[owner]);
    assert!(p.delivered[owner] >= 1);
    assert!(p.delivered[misrouted] > 10);
    // Every later client datagram went through the hand-off, none was lost there.
    assert_eq!(get(&m.rx_packets), p.delivered[misrouted]);
    assert_eq!(get(&m.handed_off_out), p.delivered[misrouted]);
    assert_eq!(get(&o.handed_off_in), p.delivered[misrouted]);
    assert_eq!(get(&o.handed_off_out), 0);
    assert_eq!(get(&m.handed_off_in), 0);
    assert_eq!(get(&m.handoff_dropped) + get(&o.handoff_dropped), 0);
    // Answers left through the owner's backend only.
    assert!(get(&o.tx_packets) > 10);
    assert_eq!(get(&m.tx_packets), 0);
    assert_eq!(get(&o.connections_accepted), 1);
    assert_eq!(get(&m.connections_accepted), 0);
    // The owner's backend learned the client's link address from the
    // worker that received its datagrams.
    let client_ip = CLIENT.parse::<SocketAddr>().unwrap().ip();
    assert_eq!(
        p.workers[owner].io().learned.get(&client_ip),
        Some(&link_of(misrouted))
    );
    assert!(p.workers[misrouted].io().learned.is_empty());
}

#[test]
fn mixed_delivery_after_the_handshake() {
    let mut p = Pair::new(1024);
    let (owner, misrouted) = (p.owner, p.misrouted());
    p.run_until("handshake", |_, evs| {
        evs.iter().any(|e| matches!(e, Event::Connected))
    });
    let before = p.delivered;
    p.delivery = Delivery::Mixed;
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i ^ (i >> 5)) as u8).collect();
    p.echo(&payload);

    let direct = p.delivered[owner] - before[owner];
    let handed = p.delivered[misrouted] - before[misrouted];
    assert!(direct > 5 && handed > 5, "direct {direct}, handed {handed}");
    let (o, m) = (p.stats(owner), p.stats(misrouted));
    assert_eq!(get(&o.rx_packets), p.delivered[owner]);
    assert_eq!(get(&o.handed_off_in), p.delivered[misrouted]);
    assert_eq!(get(&m.handed_off_out), p.delivered[misrouted]);
    assert_eq!(get(&m.handoff_dropped), 0);
    assert_eq!(p.workers[owner].connection_count(), 1);
    assert_eq!(p.workers[misrouted].connection_count(), 0);
    assert_eq!(get(&m.tx_packets), 0);
}

#[test]
fn full_inbox_drops_and_counts_without_blocking() {
    let capacity = 4;
    let mut p = Pair::new(capacity);
    // Datagrams for worker 1's connections (which do not exist: the owner
    // drops or resets them; only the hand-off matters here), received by 0.
    p.to_worker.iter().for_each(|w| w.borrow_mut().clear());
    let mut cids = WorkerCidGenerator::new(1, 2);
    let stranger: SocketAddr = "198.18.0.77:4000".parse().unwrap();
    let mut send = |p: &mut Pair, n: usize| {
        for _ in 0..n {
            let mut d = vec![0x40];
            d.extend_from_slice(&cids.generate_cid());
            d.extend_from_slice(&[0x5a; 40]);
            p.to_worker[0].borrow_mut().push_back((stranger, d));
        }
    };
    send(&mut p, 10);
    let started = Instant::now();
    p.workers[0].iterate(Instant::now()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let s0 = p.stats(0);
    assert_eq!(get(&s0.handed_off_out), capacity as u64);
    assert_eq!(get(&s0.handoff_dropped), 10 - capacity as u64);

    // The owner takes what fit; then there is room again.
    p.workers[1].iterate(Instant::now()).unwrap();
    assert_eq!(get(&p.stats(1).handed_off_in), capacity as u64);
    send(&mut p, 2);
    p.workers[0].iterate(Instant::now()).unwrap();
    p.workers[1].iterate(Instant::now()).unwrap();
    let (s0, s1) = (p.stats(0), p.stats(1));
    assert_eq!(get(&s0.handed_off_out), capacity as u64 + 2);
    assert_eq!(get(&s0.handoff_dropped), 10 - capacity as u64);
    assert_eq!(get(&s1.handed_off_in), capacity as u64 + 2);
    assert_eq!(p.workers[1].connection_count(), 0);
}
