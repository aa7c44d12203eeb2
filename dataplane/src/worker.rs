//! The worker loop: one thread per NIC queue, owning one quinn-proto
//! `Endpoint` and every `Connection` it accepts. Only this loop calls
//! `poll_transmit` on its connections, so each connection's packet numbers
//! have exactly one writer.
//!
//! One iteration: receive a batch -> feed the endpoint/connections -> let the
//! application react to connection events -> run expired timers -> build
//! packets straight into the backend's TX batch -> flush. Datagrams received
//! in an iteration are acknowledged in the same iteration's transmit.
//!
//! In a group of several workers ([`crate::handoff::WorkerGroup`]) each
//! received datagram first goes to the worker that owns its connection
//! ([`crate::cid::owner_of`]); datagrams handed over by other workers are
//! taken from this worker's inbox every iteration and handled like its own.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
// Connection handles are ours, not a peer's: a fast hash is safe.
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, EcnCodepoint, Endpoint, EndpointConfig, Event,
    ServerConfig, Transmit,
};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    cid::{self, WorkerCidGenerator, LOCAL_CID_LEN},
    handoff::{Datagram, Steering},
    io::{poll_any_readable, IoCounters, LinkPeer, Outgoing, PacketIo},
};

/// Datagrams taken from the backend per iteration.
const RX_BATCH: usize = 64;
/// Receive arena chunk: datagrams are copied in and split off, so one
/// allocation serves many packets (and is reused once they are all dropped).
const RX_ARENA_CHUNK: usize = 256 * 1024;
/// Largest UDP payload accepted from the wire.
const MAX_DATAGRAM: usize = 65_535;
/// How long an idle worker spins before it blocks in poll().
const SPIN_BEFORE_BLOCK: Duration = Duration::from_micros(200);
/// Upper bound on one blocking wait, so the stop flag is seen promptly.
const MAX_BLOCK: Duration = Duration::from_millis(50);
/// Upper bound on one blocking wait of a worker in a group whose backend
/// has no descriptor to poll together with the hand-off eventfd (see
/// [`PacketIo::poll_fd`]): such a worker sees handed-over datagrams at the
/// latest this late, at the price of up to 1000 wake-ups/s when idle.
/// Backends with a descriptor are woken at once instead.
const GROUP_MAX_BLOCK: Duration = Duration::from_millis(1);
/// Handed-over datagrams taken from the inbox per iteration.
const INBOX_BATCH: usize = RX_BATCH;
/// How long a stopping worker waits for its connections to close cleanly.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Default of [`WorkerConfig::drain`]: how long a stopping worker leaves
/// peers to act on the application's last word ([`Application::going_away`])
/// before it ends the application's work ([`Application::drained`]) and
/// closes their connections.
pub const GOAWAY_GRACE: Duration = Duration::from_millis(300);
/// After [`Application::drained`]: time to send its last data before the
/// connections are closed.
const FLUSH_GRACE: Duration = Duration::from_millis(200);
/// Rounds of driving connections touched by other connections' events.
const MAX_DRIVE_ROUNDS: usize = 4;
/// Rounds of event handling for one connection per drive.
const MAX_EVENT_ROUNDS: usize = 8;
/// How often local counters are published to [`WorkerStats`].
const STATS_PERIOD: Duration = Duration::from_millis(100);

/// What the worker does with the connections it accepts.
pub trait Application {
    /// A connection event (stream readable, datagram received, lost, ...) of
    /// connection `ch`. Every connection of this worker is reachable through
    /// `conns`, so an application can forward data from one to others.
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>);
    /// The connection is gone; free what belongs to it.
    fn connection_closed(&mut self, _ch: ConnectionHandle) {}
    /// The worker is stopping: a last word to the peers (e.g. MoQT GOAWAY
    /// with `grace` as its timeout) through `conns`. The worker keeps
    /// serving for `grace` ([`WorkerConfig::drain`]), then calls
    /// [`drained`](Self::drained).
    fn going_away(&mut self, _conns: &mut Connections<'_>, _grace: Duration) {}
    /// The grace is over: end what is still open (e.g. finish streams,
    /// MoQT PUBLISH_DONE). The worker flushes briefly, then closes every
    /// connection.
    fn drained(&mut self, _conns: &mut Connections<'_>) {}
    /// Work from outside this worker's connections (other workers' queues),
    /// called once per iteration. Connections borrowed through `conns` are
    /// driven in the same iteration. Returns whether anything happened.
    fn poll_external(&mut self, _conns: &mut Connections<'_>) -> bool {
        false
    }
    /// Whether external work is waiting: a worker about to block checks it
    /// after announcing its sleep, so work queued (and woken for, see
    /// [`crate::handoff::GroupWaker`]) just before is not missed.
    fn external_pending(&self) -> bool {
        false
    }
}

/// The connections of one worker, as an [`Application`] sees them. Any
/// connection borrowed through [`get_mut`](Self::get_mut) is driven (its
/// packets built and queued) before the worker's iteration ends.
pub struct Connections<'a> {
    map: &'a mut FxHashMap<ConnectionHandle, Connection>,
    touched: &'a mut Vec<ConnectionHandle>,
    /// The connection being driven: it transmits right after the events anyway.
    current: ConnectionHandle,
}

impl Connections<'_> {
    pub fn get_mut(&mut self, ch: ConnectionHandle) -> Option<&mut Connection> {
        let conn = self.map.get_mut(&ch)?;
        if ch != self.current {
            self.touched.push(ch);
        }
        Some(conn)
    }

    /// Handles of every connection of this worker.
    pub fn handles(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.map.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// How a worker waits when there is nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleMode {
    /// Never block: lowest latency, burns the core.
    Busy,
    /// Spin briefly, then block in poll() until traffic or the next timer.
    #[default]
    Adaptive,
    /// Block in poll() as soon as an iteration finds nothing to do: the
    /// least CPU, a wake-up's latency on every burst.
    Block,
}

/// Counters a worker publishes for the control plane (single writer).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub rx_dropped_malformed: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Initials answered with a Retry (address validation under load).
    pub connections_retried: AtomicU64,
    pub connections_active: AtomicU64,
    pub iterations: AtomicU64,
    /// Datagrams this worker received for a connection of another worker
    /// and handed over to it.
    pub handed_off_out: AtomicU64,
    /// Datagrams other workers handed over to this one.
    pub handed_off_in: AtomicU64,
    /// Datagrams this worker could not hand over (owner's inbox full or gone).
    pub handoff_dropped: AtomicU64,
}

impl WorkerStats {
    fn publish(&self, io: IoCounters, local: &LocalCounters, active: usize) {
        self.rx_packets.store(io.rx_packets, Ordering::Relaxed);
        self.tx_packets.store(io.tx_packets, Ordering::Relaxed);
        self.rx_dropped_malformed
            .store(io.rx_dropped_malformed, Ordering::Relaxed);
        self.tx_dropped.store(io.tx_dropped, Ordering::Relaxed);
        self.connections_accepted
            .store(local.accepted, Ordering::Relaxed);
        self.connections_refused
            .store(local.refused, Ordering::Relaxed);
        self.connections_retried
            .store(local.retried, Ordering::Relaxed);
        self.connections_active
            .store(active as u64, Ordering::Relaxed);
        self.iterations.store(local.iterations, Ordering::Relaxed);
        self.handed_off_out
            .store(local.handed_off_out, Ordering::Relaxed);
        self.handed_off_in
            .store(local.handed_off_in, Ordering::Relaxed);
        self.handoff_dropped
            .store(local.handoff_dropped, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct LocalCounters {
    accepted: u64,
    refused: u64,
    retried: u64,
    iterations: u64,
    handed_off_out: u64,
    handed_off_in: u64,
    handoff_dropped: u64,
}

pub struct WorkerConfig {
    pub endpoint: Arc<EndpointConfig>,
    pub server: Arc<ServerConfig>,
    pub idle: IdleMode,
    pub admission: Admission,
    /// How long a stopping worker keeps serving after the application's
    /// last word (see [`Application::going_away`]).
    pub drain: Duration,
}

/// Which new connections a worker takes. A connection costs memory from
/// its first Initial on, and Initials are cheap to forge, so both the
/// established and the half-open ones are capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Most connections (any state) per worker; further ones are refused
    /// (CONNECTION_REFUSED).
    pub max_connections: usize,
    /// With this many handshakes in progress, a client whose address is
    /// not validated yet gets a Retry (it must prove it receives at its
    /// address before it costs a connection).
    pub retry_above_handshakes: usize,
    /// Most handshakes in progress per worker; further Initials are
    /// refused even from validated addresses.
    pub max_handshakes: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            retry_above_handshakes: 64,
            max_handshakes: 1024,
        }
    }
}

pub struct Worker<B: PacketIo, A: Application> {
    io: B,
    app: A,
    endpoint: Endpoint,
    connections: FxHashMap<ConnectionHandle, Connection>,
    /// Connections still in their handshake (counted for [`Admission`]).
    handshaking: FxHashSet<ConnectionHandle>,
    admission: Admission,
    drain: Duration,
    /// Connections with something new to process this iteration.
    dirty: Vec<ConnectionHandle>,
    /// The batch of `dirty` being driven (kept for its allocation).
    driving: Vec<ConnectionHandle>,
    /// Connections whose transmit stopped on a full TX ring: next iteration.
    tx_blocked: Vec<ConnectionHandle>,
    /// One connection's events, gathered before the application sees them.
    events: Vec<Event>,
    /// Timer queue; an entry counts only if it equals the connection's
    /// deadline in `armed`, so superseded ones cost a pop (see `compact_timers`).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    armed: FxHashMap<ConnectionHandle, Instant>,
    rx_arena: BytesMut,
    rx_batch: Vec<Datagram>,
    tx_buf: Vec<u8>,
    response_buf: Vec<u8>,
    closed: Vec<ConnectionHandle>,
    idle: IdleMode,
    stats: Arc<WorkerStats>,
    local: LocalCounters,
    steering: Steering,
}

impl<B: PacketIo, A: Application> Worker<B, A> {
    /// A worker on its own: it owns every connection it receives.
    pub fn new(io: B, app: A, config: WorkerConfig) -> Self {
        Self::in_group(io, app, config, Steering::single())
    }

    /// A worker of a group ([`crate::handoff::WorkerGroup`]). Its endpoint
    /// issues connection IDs that name it ([`WorkerCidGenerator`]; this
    /// replaces any generator set in `config.endpoint`), and datagrams of
    /// other workers' connections are handed over to them.
    pub fn in_group(io: B, app: A, config: WorkerConfig, steering: Steering) -> Self {
        // A clone keeps the shared reset key, so any worker's stateless
        // reset for any of the group's CIDs carries the right token.
        let mut endpoint_config = EndpointConfig::clone(&config.endpoint);
        let (worker, workers) = (steering.index(), steering.workers());
        endpoint_config.cid_generator(move || Box::new(WorkerCidGenerator::new(worker, workers)));
        let endpoint = Endpoint::new(Arc::new(endpoint_config), Some(config.server), true, None);
        Self {
            io,
            app,
            endpoint,
            connections: FxHashMap::default(),
            handshaking: FxHashSet::default(),
            admission: config.admission,
            drain: config.drain,
            dirty: Vec::new(),
            driving: Vec::new(),
            tx_blocked: Vec::new(),
            events: Vec::new(),
            timers: BinaryHeap::new(),
            armed: FxHashMap::default(),
            rx_arena: BytesMut::with_capacity(RX_ARENA_CHUNK),
            rx_batch: Vec::with_capacity(RX_BATCH),
            tx_buf: Vec::with_capacity(MAX_DATAGRAM),
            response_buf: Vec::with_capacity(MAX_DATAGRAM),
            closed: Vec::new(),
            idle: config.idle,
            stats: Arc::new(WorkerStats::default()),
            local: LocalCounters::default(),
            steering,
        }
    }

    /// This worker's index in its group.
    pub fn index(&self) -> usize {
        self.steering.index()
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// The I/O backend (tests inspect the in-memory one).
    pub fn io(&self) -> &B {
        &self.io
    }

    /// The I/O backend, to change (tests: the in-memory one's link).
    pub fn io_mut(&mut self) -> &mut B {
        &mut self.io
    }

    pub fn app(&self) -> &A {
        &self.app
    }

    /// Entries in the timer heap, superseded ones included (bounded by
    /// `compact_timers`).
    pub fn timer_queue_len(&self) -> usize {
        self.timers.len()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Runs until `stop` is set, then closes every connection and drains.
    pub fn run(&mut self, stop: &AtomicBool) -> std::io::Result<()> {
        let mut last_publish = Instant::now();
        let mut idle_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let busy = self.iterate(now)?;
            if now.duration_since(last_publish) >= STATS_PERIOD {
                self.publish_stats();
                last_publish = now;
            }
            if busy {
                idle_since = None;
                continue;
            }
            let spin = match self.idle {
                IdleMode::Busy => {
                    std::hint::spin_loop();
                    continue;
                }
                IdleMode::Adaptive => SPIN_BEFORE_BLOCK,
                IdleMode::Block => Duration::ZERO,
            };
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) >= spin {
                let until_timer = self
                    .next_timer()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(MAX_BLOCK);
                // poll() sleeps in whole milliseconds: a nearer timer is
                // met by spinning.
                if until_timer >= Duration::from_millis(1) {
                    self.block(until_timer.min(MAX_BLOCK))?;
                }
            }
        }
        self.shutdown()
    }

    /// Waits for datagrams from the backend or from other workers, at most
    /// `timeout`.
    fn block(&mut self, timeout: Duration) -> std::io::Result<()> {
        if self.steering.workers() == 1 {
            if self.app.external_pending() {
                return Ok(());
            }
            return self.io.wait(timeout);
        }
        match (self.io.poll_fd(), self.steering.wake_fd()) {
            (Some(io_fd), Some(wake_fd)) => {
                let app = &self.app;
                if self
                    .steering
                    .prepare_sleep_unless(|| app.external_pending())
                {
                    let result = poll_any_readable(&[io_fd, wake_fd], timeout);
                    self.steering.woke();
                    result?;
                }
            }
            _ => {
                if self.steering.inbox_is_empty() && !self.app.external_pending() {
                    self.io.wait(timeout.min(GROUP_MAX_BLOCK))?;
                }
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        let mut conns = Connections {
            map: &mut self.connections,
            touched: &mut self.dirty,
            // No connection is being driven: every one touched is queued.
            current: ConnectionHandle(usize::MAX),
        };
        self.app.going_away(&mut conns, self.drain);
        if !self.dirty.is_empty() {
            self.serve_for(self.drain)?;
            let mut conns = Connections {
                map: &mut self.connections,
                touched: &mut self.dirty,
                current: ConnectionHandle(usize::MAX),
            };
            self.app.drained(&mut conns);
            self.serve_for(FLUSH_GRACE)?;
        }
        let now = Instant::now();
        for (ch, conn) in self.connections.iter_mut() {
            conn.close(
                now,
                0u32.into(),
                bytes::Bytes::from_static(b"relay shutting down"),
            );
            self.dirty.push(*ch);
        }
        let deadline = now + DRAIN_TIMEOUT;
        while !self.connections.is_empty() && Instant::now() < deadline {
            if !self.iterate(Instant::now())? {
                self.io.wait(Duration::from_millis(1))?;
            }
        }
        self.publish_stats();
        Ok(())
    }

    /// Keeps iterating for `period` or until no connection is left.
    fn serve_for(&mut self, period: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + period;
        while !self.connections.is_empty() && Instant::now() < deadline {
            if !self.iterate(Instant::now())? {
                self.io.wait(Duration::from_millis(1))?;
            }
        }
        Ok(())
    }

    /// Publishes the counters to [`WorkerStats`] now; [`run`](Self::run)
    /// does it every 100 ms.
    pub fn publish_stats(&self) {
        self.stats
            .publish(self.io.counters(), &self.local, self.connections.len());
    }

    /// Superseded deadlines stay in the heap until they pop; when they
    /// outnumber the live ones, rebuild the heap from `armed` in place. This
    /// bounds the heap to twice the connections (plus slack) at an amortised
    /// O(1) per push, and reuses the heap's allocation.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.armed.len() + 64 {
            return;
        }
        let mut entries = std::mem::take(&mut self.timers).into_vec();
        entries.clear();
        entries.extend(self.armed.iter().map(|(ch, when)| Reverse((*when, ch.0))));
        self.timers = BinaryHeap::from(entries);
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// One pass of the loop. Returns whether anything happened.
    pub fn iterate(&mut self, now: Instant) -> std::io::Result<bool> {
        self.local.iterations += 1;
        let received = self.receive()?;
        let mut batch = std::mem::take(&mut self.rx_batch);
        for d in batch.drain(..) {
            if let Some(d) = self.steer(d) {
                self.handle_datagram(now, d);
            }
        }
        // Keep the allocation for the next iteration.
        self.rx_batch = batch;

        // Datagrams other workers received for our connections. Bounded, so
        // a flood of hand-offs cannot starve our own queue and timers.
        let mut handed_in = 0;
        while handed_in < INBOX_BATCH {
            let Some(d) = self.steering.take() else {
                break;
            };
            handed_in += 1;
            self.handle_datagram(now, d);
        }
        self.local.handed_off_in += handed_in as u64;

        // The application's own cross-worker work; no connection is being
        // driven, so every one it touches is driven below.
        let external = {
            let mut conns = Connections {
                map: &mut self.connections,
                touched: &mut self.dirty,
                current: ConnectionHandle(usize::MAX),
            };
            self.app.poll_external(&mut conns)
        };

        // Expired timers.
        while let Some(Reverse((when, index))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            let ch = ConnectionHandle(index);
            if self.armed.get(&ch) == Some(&when) {
                self.armed.remove(&ch);
                if let Some(conn) = self.connections.get_mut(&ch) {
                    conn.handle_timeout(now);
                    self.dirty.push(ch);
                }
            }
        }

        let busy = received > 0 || handed_in > 0 || external || !self.dirty.is_empty();
        // Driving one connection can touch others (an application forwarding
        // data); those are driven in a further round of the same iteration,
        // so forwarded data leaves without waiting for the next one.
        for _ in 0..MAX_DRIVE_ROUNDS {
            if self.dirty.is_empty() {
                break;
            }
            let mut batch = std::mem::take(&mut self.driving);
            std::mem::swap(&mut batch, &mut self.dirty);
            batch.sort_unstable_by_key(|ch| ch.0);
            batch.dedup();
            for ch in batch.drain(..) {
                self.drive(now, ch)?;
            }
            self.driving = batch;
        }
        self.dirty.append(&mut self.tx_blocked);
        for ch in self.closed.drain(..) {
            self.connections.remove(&ch);
            self.handshaking.remove(&ch);
            self.armed.remove(&ch);
            self.app.connection_closed(ch);
        }
        self.io.flush()?;
        Ok(busy)
    }

    fn receive(&mut self) -> std::io::Result<usize> {
        let arena = &mut self.rx_arena;
        let batch = &mut self.rx_batch;
        self.io.recv_batch(RX_BATCH, &mut |d| {
            if arena.capacity() - arena.len() < d.payload.len() {
                // Reclaims the chunk in place when every earlier split is gone.
                arena.reserve(RX_ARENA_CHUNK.max(d.payload.len()));
            }
            // The one copy on receive: quinn-proto takes ownership of a
            // BytesMut and decrypts in place, so the frame must leave the
            // UMEM/socket buffer that is recycled right after this batch.
            arena.extend_from_slice(d.payload);
            let data = arena.split_to(d.payload.len());
            batch.push(Datagram {
                remote: d.remote,
                local_ip: d.local_ip,
                ecn: EcnCodepoint::from_bits(d.ecn),
                data,
                link: d.link,
            });
        })
    }

    /// Hands `d` to the worker that owns its connection, or gives it back
    /// when that is this worker (always, in a group of one). Datagrams
    /// whose DCID is not one of ours (a new connection's first Initial) or
    /// unreadable stay here: this worker accepts the connection, or the
    /// endpoint drops or answers them statelessly.
    fn steer(&mut self, d: Datagram) -> Option<Datagram> {
        let workers = self.steering.workers();
        if workers == 1 {
            return Some(d);
        }
        let owner =
            cid::dcid_of(&d.data, LOCAL_CID_LEN).and_then(|dcid| cid::owner_of(dcid, workers));
        match owner {
            Some(owner) if owner != self.steering.index() => {
                match self.steering.hand_off(owner, d) {
                    Ok(()) => self.local.handed_off_out += 1,
                    Err(e) => {
                        self.local.handoff_dropped += 1;
                        tracing::trace!(owner, error = ?e, "hand-off dropped");
                    }
                }
                None
            }
            _ => Some(d),
        }
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        let Datagram {
            remote,
            local_ip,
            ecn,
            data,
            link,
        } = d;
        // A link the backend does not know for this address yet. It is
        // learnt only from a packet quinn-proto accepted (below): a frame
        // with a forged source must not redirect a peer's replies.
        let new_link = link.filter(|l| self.io.known_link(remote.ip()) != Some(*l));
        self.response_buf.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut self.response_buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.response_buf.clear();
                self.admit(now, incoming, remote, new_link)
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(conn) = self.connections.get_mut(&ch) {
                    let before = new_link.map(|_| frames_received(conn));
                    conn.handle_event(event);
                    self.dirty.push(ch);
                    // Decoded frames: the packet was authenticated.
                    if let (Some(l), Some(before)) = (new_link, before) {
                        if !conn.is_handshaking() && frames_received(conn) > before {
                            self.io.learn_peer(remote.ip(), l);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.send_response(&t),
            None => {}
        }
    }

    /// A new connection's first Initial: accepted, sent a Retry, or refused,
    /// by [`Admission`].
    fn admit(
        &mut self,
        now: Instant,
        incoming: quinn_proto::Incoming,
        remote: SocketAddr,
        new_link: Option<LinkPeer>,
    ) {
        let limits = self.admission;
        let handshakes = self.handshaking.len();
        let answer = if self.connections.len() >= limits.max_connections
            || handshakes >= limits.max_handshakes
        {
            self.local.refused += 1;
            tracing::debug!(
                %remote,
                handshakes,
                connections = self.connections.len(),
                "connection refused: worker at its admission limit"
            );
            Some(self.endpoint.refuse(incoming, &mut self.response_buf))
        } else if handshakes >= limits.retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            self.local.retried += 1;
            self.endpoint.retry(incoming, &mut self.response_buf).ok()
        } else {
            match self
                .endpoint
                .accept(incoming, now, &mut self.response_buf, None)
            {
                Ok((ch, conn)) => {
                    self.local.accepted += 1;
                    tracing::debug!(%remote, handle = ch.0, "connection accepted");
                    // The handshake's answer needs a link; an address
                    // already known keeps its link (a forged Initial
                    // cannot take it over).
                    if let Some(l) = new_link {
                        if self.io.known_link(remote.ip()).is_none() {
                            self.io.learn_peer(remote.ip(), l);
                        }
                    }
                    self.connections.insert(ch, conn);
                    self.handshaking.insert(ch);
                    self.dirty.push(ch);
                    return;
                }
                Err(e) => {
                    self.local.refused += 1;
                    tracing::debug!(%remote, cause = %e.cause, "connection refused");
                    e.response
                }
            }
        };
        if let Some(t) = answer {
            self.send_response(&t);
        }
    }

    fn send_response(&mut self, t: &Transmit) {
        if self.io.tx_capacity() == 0 {
            return; // a stateless response may be lost like any datagram
        }
        let out = outgoing(t, &self.response_buf[..t.size]);
        if let Err(e) = self.io.send(&out) {
            tracing::debug!(error = %e, "stateless response not sent");
        }
    }

    /// Lets one connection and the application catch up, then transmits.
    fn drive(&mut self, now: Instant, ch: ConnectionHandle) -> std::io::Result<()> {
        if !self.connections.contains_key(&ch) {
            return Ok(());
        }
        // Bounded: an application that keeps producing events on its own
        // connection cannot hold the worker here.
        for _ in 0..MAX_EVENT_ROUNDS {
            let conn = self.connections.get_mut(&ch).expect("checked above");
            while let Some(event) = conn.poll_endpoint_events() {
                if let Some(reply) = self.endpoint.handle_event(ch, event) {
                    conn.handle_event(reply);
                }
            }
            self.events.extend(std::iter::from_fn(|| conn.poll()));
            if self.events.is_empty() {
                break;
            }
            // Only the drive that sees the handshake end touches the set.
            if self.events.iter().any(|e| matches!(e, Event::Connected)) {
                self.handshaking.remove(&ch);
            }
            let mut events = std::mem::take(&mut self.events);
            let mut conns = Connections {
                map: &mut self.connections,
                touched: &mut self.dirty,
                current: ch,
            };
            for event in events.drain(..) {
                self.app.handle_event(ch, event, &mut conns);
            }
            self.events = events;
        }
        let conn = self.connections.get_mut(&ch).expect("checked above");

        let max_segments = self.io.max_segments();
        while self.io.tx_capacity() >= max_segments {
            self.tx_buf.clear();
            let Some(t) = conn.poll_transmit(now, max_segments, &mut self.tx_buf) else {
                break;
            };
            self.io.send(&outgoing(&t, &self.tx_buf[..t.size]))?;
        }
        if self.io.tx_capacity() < max_segments {
            // The TX ring is full: come back next iteration for the rest.
            self.tx_blocked.push(ch);
        }

        if conn.is_drained() {
            // Let the endpoint forget the connection IDs.
            while let Some(event) = conn.poll_endpoint_events() {
                self.endpoint.handle_event(ch, event);
            }
            self.closed.push(ch);
            return Ok(());
        }
        if let Some(when) = conn.poll_timeout() {
            if self.armed.get(&ch) != Some(&when) {
                self.armed.insert(ch, when);
                self.timers.push(Reverse((when, ch.0)));
                self.compact_timers();
            }
        } else {
            self.armed.remove(&ch);
        }
        Ok(())
    }
}

fn outgoing<'a>(t: &Transmit, contents: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        remote: t.destination,
        local_ip: t.src_ip,
        ecn: t.ecn.map(|e| e as u8).unwrap_or(0),
        segment_size: t.segment_size.unwrap_or(t.size),
        contents,
    }
}

/// Pins the calling thread to `core`, refusing a core that does not exist.
pub fn pin_to_core(core: usize) -> anyhow::Result<()> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let id = cores
        .into_iter()
        .find(|c| c.id == core)
        .ok_or_else(|| anyhow::anyhow!("core {core} does not exist on this machine"))?;
    if !core_affinity::set_for_current(id) {
        anyhow::bail!("could not pin the worker thread to core {core}");
    }
    Ok(())
}

/// Frames quinn-proto decoded from a connection's packets so far: it grows
/// only when a packet was authenticated.
fn frames_received(conn: &Connection) -> u64 {
    let f = conn.stats().frame_rx;
    f.acks
        + f.crypto
        + f.stream
        + f.ping
        + f.datagram
        + f.max_data
        + f.max_stream_data
        + f.max_streams_bidi
        + f.max_streams_uni
        + f.reset_stream
        + f.stop_sending
        + f.connection_close
        + f.new_connection_id
        + f.retire_connection_id
        + f.path_challenge
        + f.path_response
        + f.data_blocked
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.new_token
        + f.immediate_ack
        + f.ack_frequency
        + u64::from(f.handshake_done)
}
