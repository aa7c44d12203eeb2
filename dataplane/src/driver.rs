//! The transport driver: one quinn-proto `Endpoint` and every `Connection`
//! it accepted, fed datagrams and clock ticks by the worker loop
//! ([`crate::worker`]) and writing packets straight into the loop's
//! [`PacketIo`] batch. It never receives, flushes, blocks or sleeps: those
//! are the loop's, and so is deciding which worker a datagram belongs to.
//!
//! Per iteration the loop hands it each datagram (`handle_datagram`), lends
//! it the application for outside work (`with_connections`), runs expired
//! timers (`handle_timeouts`), then has it `drive` every touched connection:
//! the [`Application`] reacts to their events and their packets are queued.
//! An application fanning data out to many connections builds each one's
//! packets right after writing to it ([`Connections::transmit`]), so each
//! is visited once, while its state is in cache, not again by the drive.
//!
//! Only the driver calls `poll_transmit`, so each connection's packet
//! numbers have exactly one writer.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectError, Connection, ConnectionError, ConnectionHandle, DatagramEvent,
    EcnCodepoint, Endpoint, EndpointConfig, Event, ServerConfig, Transmit, TransportErrorCode,
};
// Connection handles are ours, not a peer's: a fast hash is safe.
use rustc_hash::{FxHashMap, FxHashSet};

use crate::io::{LinkPeer, Outgoing, PacketIo};

/// Largest UDP payload quinn-proto may build into one buffer.
const MAX_DATAGRAM: usize = 65_535;
/// Rounds of driving connections touched by other connections' events.
const MAX_DRIVE_ROUNDS: usize = 4;
/// Rounds of event handling for one connection per drive.
const MAX_EVENT_ROUNDS: usize = 8;
/// Superseded timer entries tolerated beyond twice the armed ones before
/// the heap is rebuilt (see `compact_timers`).
const TIMER_SLACK: usize = 64;
/// `Connections::current` when no connection is being driven, so every
/// connection the application touches gets queued.
const NO_CONNECTION: ConnectionHandle = ConnectionHandle(usize::MAX);

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
    /// serving for `grace` ([`crate::worker::WorkerConfig::drain`]), then
    /// calls [`drained`](Self::drained).
    fn going_away(&mut self, _conns: &mut Connections<'_>, _grace: Duration) {}
    /// The grace is over: end what is still open (e.g. finish streams,
    /// MoQT PUBLISH_DONE). The worker flushes briefly, then closes every
    /// connection.
    fn drained(&mut self, _conns: &mut Connections<'_>) {}
    /// Every connection is gone and the worker is about to return: the
    /// last chance to publish final counters.
    fn stopped(&mut self) {}
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
    /// For outgoing connections ([`connect`](Self::connect)).
    endpoint: &'a mut Endpoint,
    touched: &'a mut Vec<ConnectionHandle>,
    /// The connection being driven: it transmits right after the events anyway.
    current: ConnectionHandle,
    /// What [`transmit`](Self::transmit) needs to build packets at once.
    tx: Transmitter<'a>,
}

/// The driver's means of building a connection's packets into the
/// backend's TX batch, lent to the application with the connections.
struct Transmitter<'a> {
    now: Instant,
    io: &'a mut dyn PacketIo,
    buf: &'a mut Vec<u8>,
    timers: &'a mut Timers,
    tx_blocked: &'a mut Vec<ConnectionHandle>,
}

impl Connections<'_> {
    /// The worker iteration's clock: read when the iteration began, just
    /// before it took its batch of datagrams from the backend.
    pub fn now(&self) -> Instant {
        self.tx.now
    }

    pub fn get_mut(&mut self, ch: ConnectionHandle) -> Option<&mut Connection> {
        let conn = self.map.get_mut(&ch)?;
        if ch != self.current {
            self.touched.push(ch);
        }
        Some(conn)
    }

    /// Builds `ch`'s packets now, while its state is still in cache from
    /// what the application just wrote, rather than in the drive's later
    /// pass over every touched connection (in a fan-out, by then the other
    /// subscribers' state has pushed it out). Its timer is re-armed, and
    /// unless it is touched again the drive does not visit it: anything
    /// quinn-proto has to report comes with its next datagram or timeout.
    /// A fan-out should call this once per connection, after everything
    /// for it is written: each call may send a packet of its own.
    pub fn transmit(&mut self, ch: ConnectionHandle) {
        if ch == self.current {
            return;
        }
        let Some(conn) = self.map.get_mut(&ch) else {
            return;
        };
        if conn.is_drained() {
            // The drive lets the endpoint forget it.
            return;
        }
        let tx = &mut self.tx;
        if send_packets(conn, ch, tx.now, &mut *tx.io, tx.buf, tx.tx_blocked).is_err() {
            // The drive meets the error again and reports it.
            return;
        }
        tx.timers.rearm(ch, conn);
        while self.touched.last() == Some(&ch) {
            self.touched.pop();
        }
    }

    /// Opens a client connection to `remote` from this worker's endpoint:
    /// its packets leave from the relay's own address and port through the
    /// same backend as replies to clients, and the connection IDs it issues
    /// name this worker, so the server's answers are steered (or handed) to
    /// it like any other packet of its connections. The handshake starts
    /// with the next drive; the application sees the connection's events
    /// from `Event::Connected` on, and `connection_closed` if it fails.
    pub fn connect(
        &mut self,
        config: ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, ConnectError> {
        let (ch, conn) = self
            .endpoint
            .connect(self.tx.now, config, remote, server_name)?;
        self.map.insert(ch, conn);
        self.touched.push(ch);
        Ok(ch)
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

/// One received UDP datagram, the driver's input: handled by the worker
/// that received it, or by the one that owns its connection after a
/// hand-off ([`crate::handoff`]).
#[derive(Debug)]
pub struct Datagram {
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
    /// The payload, already copied out of the backend's buffer into the
    /// receiving worker's arena (the one copy on receive). A hand-off moves
    /// this slice to the owner without copying again; the arena chunk stays
    /// alive until the owner is done with it, which the bounded inbox bounds.
    pub data: BytesMut,
    /// The sender on the link, so the owner's backend can answer it.
    pub link: Option<LinkPeer>,
}

/// What admission did so far, and how connections ended; the worker
/// publishes these.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AdmissionCounts {
    pub accepted: u64,
    pub refused: u64,
    pub retried: u64,
    /// Connections gone, by [`CloseReason`] (indexed by `as usize`).
    pub closed: [u64; CloseReason::COUNT],
}

/// Why a connection ended, as the control plane counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer's application closed it (CONNECTION_CLOSE 0x1d, or 0x1c
    /// with APPLICATION_ERROR when it closed during the handshake).
    PeerApplication,
    /// The peer's QUIC stack closed it with a transport error code.
    PeerTransport,
    /// Nothing heard from the peer within the idle timeout.
    IdleTimeout,
    /// The peer sent a stateless reset.
    Reset,
    /// The peer broke the QUIC rules as this relay sees them.
    ProtocolError,
    /// The relay closed it (a MoQT violation, shutdown).
    Local,
    /// Anything else (version mismatch, connection IDs exhausted).
    Other,
}

impl CloseReason {
    pub const COUNT: usize = 7;
    /// Every reason, in index order.
    pub const ALL: [CloseReason; Self::COUNT] = [
        Self::PeerApplication,
        Self::PeerTransport,
        Self::IdleTimeout,
        Self::Reset,
        Self::ProtocolError,
        Self::Local,
        Self::Other,
    ];

    /// Its name as a metric label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::PeerApplication => "peer_application",
            Self::PeerTransport => "peer_transport",
            Self::IdleTimeout => "idle_timeout",
            Self::Reset => "reset",
            Self::ProtocolError => "protocol_error",
            Self::Local => "local",
            Self::Other => "other",
        }
    }

    fn of(e: &ConnectionError) -> Self {
        match e {
            ConnectionError::ApplicationClosed(_) => Self::PeerApplication,
            // An application close sent before 1-RTT keys are confirmed
            // travels as this transport code (RFC 9000, 10.2.3).
            ConnectionError::ConnectionClosed(c)
                if c.error_code == TransportErrorCode::APPLICATION_ERROR =>
            {
                Self::PeerApplication
            }
            ConnectionError::ConnectionClosed(_) => Self::PeerTransport,
            ConnectionError::TimedOut => Self::IdleTimeout,
            ConnectionError::Reset => Self::Reset,
            ConnectionError::TransportError(_) => Self::ProtocolError,
            ConnectionError::LocallyClosed => Self::Local,
            ConnectionError::VersionMismatch | ConnectionError::CidsExhausted => Self::Other,
        }
    }
}

/// The endpoint, its connections and their timers (see the module docs).
pub(crate) struct Driver {
    endpoint: Endpoint,
    connections: FxHashMap<ConnectionHandle, Connection>,
    /// Connections still in their handshake (counted for [`Admission`]).
    handshaking: FxHashSet<ConnectionHandle>,
    admission: Admission,
    /// Connections with something new to process this iteration.
    dirty: Vec<ConnectionHandle>,
    /// The batch of `dirty` being driven (kept for its allocation).
    driving: Vec<ConnectionHandle>,
    /// Connections whose transmit stopped on a full TX ring: next iteration.
    tx_blocked: Vec<ConnectionHandle>,
    /// One connection's events, gathered before the application sees them.
    events: Vec<Event>,
    timers: Timers,
    tx_buf: Vec<u8>,
    response_buf: Vec<u8>,
    closed: Vec<ConnectionHandle>,
    /// Why each connection that reported its loss was lost; one that ends
    /// without a report was closed by the relay.
    lost: FxHashMap<ConnectionHandle, CloseReason>,
    counts: AdmissionCounts,
}

impl Driver {
    /// A server endpoint with `endpoint` (connection ID generator already
    /// chosen by the caller) and `server`.
    pub fn new(endpoint: EndpointConfig, server: Arc<ServerConfig>, admission: Admission) -> Self {
        Self {
            endpoint: Endpoint::new(Arc::new(endpoint), Some(server), true, None),
            connections: FxHashMap::default(),
            handshaking: FxHashSet::default(),
            admission,
            dirty: Vec::new(),
            driving: Vec::new(),
            tx_blocked: Vec::new(),
            events: Vec::new(),
            timers: Timers::default(),
            tx_buf: Vec::with_capacity(MAX_DATAGRAM),
            response_buf: Vec::with_capacity(MAX_DATAGRAM),
            closed: Vec::new(),
            lost: FxHashMap::default(),
            counts: AdmissionCounts::default(),
        }
    }

    /// The configuration for handshakes from now on (a reloaded
    /// certificate); connections already accepted are not affected.
    pub fn set_server_config(&mut self, server: Arc<ServerConfig>) {
        self.endpoint.set_server_config(Some(server));
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Entries in the timer heap, superseded ones included.
    pub fn timer_queue_len(&self) -> usize {
        self.timers.heap.len()
    }

    /// The earliest live deadline. Superseded heap entries in front of it
    /// are dropped here: a blocked worker must not wake for them. (A
    /// connection's deadline moves on every packet it sends and every ACK
    /// it takes, so at low rates nearly every old entry is one.)
    pub fn next_timer(&mut self) -> Option<Instant> {
        self.timers.next_live()
    }

    pub fn counts(&self) -> AdmissionCounts {
        self.counts
    }

    /// Whether some connection waits to be driven.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Lends the connections to `f` with none being driven: every one it
    /// borrows is driven by the next [`drive`](Self::drive) unless it
    /// transmits it itself ([`Connections::transmit`], into `io`).
    pub fn with_connections<R>(
        &mut self,
        now: Instant,
        io: &mut dyn PacketIo,
        f: impl FnOnce(&mut Connections<'_>) -> R,
    ) -> R {
        f(&mut Connections {
            map: &mut self.connections,
            endpoint: &mut self.endpoint,
            touched: &mut self.dirty,
            current: NO_CONNECTION,
            tx: Transmitter {
                now,
                io,
                buf: &mut self.tx_buf,
                timers: &mut self.timers,
                tx_blocked: &mut self.tx_blocked,
            },
        })
    }

    /// Closes every connection with application error 0 and `reason`; the
    /// next drives send the closes.
    pub fn close_all(&mut self, now: Instant, reason: Bytes) {
        for (ch, conn) in self.connections.iter_mut() {
            conn.close(now, 0u32.into(), reason.clone());
            self.dirty.push(*ch);
        }
    }

    /// Runs the timers that expired by `now`.
    pub fn handle_timeouts(&mut self, now: Instant) {
        while let Some(Reverse((when, index))) = self.timers.heap.peek().copied() {
            if when > now {
                break;
            }
            self.timers.heap.pop();
            let ch = ConnectionHandle(index);
            if self.timers.armed.get(&ch) == Some(&when) {
                self.timers.armed.remove(&ch);
                if let Some(conn) = self.connections.get_mut(&ch) {
                    conn.handle_timeout(now);
                    self.dirty.push(ch);
                }
            }
        }
    }

    /// Drives every connection touched since the last call, lets `app`
    /// react to their events and queues their packets on `io` (the caller
    /// flushes). Returns whether any connection was waiting.
    pub fn drive<B: PacketIo, A: Application>(
        &mut self,
        now: Instant,
        io: &mut B,
        app: &mut A,
    ) -> std::io::Result<bool> {
        let pending = !self.dirty.is_empty();
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
                self.drive_one(now, ch, io, app)?;
            }
            self.driving = batch;
        }
        self.dirty.append(&mut self.tx_blocked);
        for ch in self.closed.drain(..) {
            self.connections.remove(&ch);
            self.handshaking.remove(&ch);
            self.timers.armed.remove(&ch);
            let reason = self.lost.remove(&ch).unwrap_or(CloseReason::Local);
            self.counts.closed[reason as usize] += 1;
            app.connection_closed(ch);
        }
        Ok(pending)
    }

    /// Feeds one datagram to the endpoint: a packet of a connection, a new
    /// connection's Initial (see [`Admission`]), or one answered statelessly.
    pub fn handle_datagram<B: PacketIo>(&mut self, now: Instant, d: Datagram, io: &mut B) {
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
        let new_link = link.filter(|l| io.known_link(remote.ip()) != Some(*l));
        self.response_buf.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut self.response_buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.response_buf.clear();
                self.admit(now, incoming, remote, new_link, io)
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(conn) = self.connections.get_mut(&ch) {
                    let before = new_link.map(|_| frames_received(conn));
                    conn.handle_event(event);
                    self.dirty.push(ch);
                    // Decoded frames: the packet was authenticated.
                    if let (Some(l), Some(before)) = (new_link, before) {
                        if !conn.is_handshaking() && frames_received(conn) > before {
                            io.learn_peer(remote.ip(), l);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.send_response(&t, io),
            None => {}
        }
    }

    /// A new connection's first Initial: accepted, sent a Retry, or refused,
    /// by [`Admission`].
    fn admit<B: PacketIo>(
        &mut self,
        now: Instant,
        incoming: quinn_proto::Incoming,
        remote: SocketAddr,
        new_link: Option<LinkPeer>,
        io: &mut B,
    ) {
        let limits = self.admission;
        let handshakes = self.handshaking.len();
        let answer = if self.connections.len() >= limits.max_connections
            || handshakes >= limits.max_handshakes
        {
            self.counts.refused += 1;
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
            self.counts.retried += 1;
            self.endpoint.retry(incoming, &mut self.response_buf).ok()
        } else {
            match self
                .endpoint
                .accept(incoming, now, &mut self.response_buf, None)
            {
                Ok((ch, conn)) => {
                    self.counts.accepted += 1;
                    tracing::debug!(%remote, handle = ch.0, "connection accepted");
                    // The handshake's answer needs a link; an address
                    // already known keeps its link (a forged Initial
                    // cannot take it over).
                    if let Some(l) = new_link {
                        if io.known_link(remote.ip()).is_none() {
                            io.learn_peer(remote.ip(), l);
                        }
                    }
                    self.connections.insert(ch, conn);
                    self.handshaking.insert(ch);
                    self.dirty.push(ch);
                    return;
                }
                Err(e) => {
                    self.counts.refused += 1;
                    tracing::debug!(%remote, cause = %e.cause, "connection refused");
                    e.response
                }
            }
        };
        if let Some(t) = answer {
            self.send_response(&t, io);
        }
    }

    fn send_response<B: PacketIo>(&mut self, t: &Transmit, io: &mut B) {
        if io.tx_capacity() == 0 {
            return; // a stateless response may be lost like any datagram
        }
        let out = outgoing(t, &self.response_buf[..t.size]);
        if let Err(e) = io.send(&out) {
            tracing::debug!(error = %e, "stateless response not sent");
        }
    }

    /// Lets one connection and the application catch up, then transmits.
    fn drive_one<B: PacketIo, A: Application>(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        io: &mut B,
        app: &mut A,
    ) -> std::io::Result<()> {
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
            // Only the drive that sees the handshake end touches the set,
            // and only the one that sees the loss the map.
            for e in &self.events {
                match e {
                    Event::Connected => {
                        self.handshaking.remove(&ch);
                    }
                    Event::ConnectionLost { reason } => {
                        self.lost.insert(ch, CloseReason::of(reason));
                    }
                    _ => {}
                }
            }
            let mut events = std::mem::take(&mut self.events);
            let mut conns = Connections {
                map: &mut self.connections,
                endpoint: &mut self.endpoint,
                touched: &mut self.dirty,
                current: ch,
                tx: Transmitter {
                    now,
                    io: &mut *io,
                    buf: &mut self.tx_buf,
                    timers: &mut self.timers,
                    tx_blocked: &mut self.tx_blocked,
                },
            };
            for event in events.drain(..) {
                app.handle_event(ch, event, &mut conns);
            }
            self.events = events;
        }
        let conn = self.connections.get_mut(&ch).expect("checked above");
        send_packets(conn, ch, now, io, &mut self.tx_buf, &mut self.tx_blocked)?;

        if conn.is_drained() {
            // Let the endpoint forget the connection IDs.
            while let Some(event) = conn.poll_endpoint_events() {
                self.endpoint.handle_event(ch, event);
            }
            self.closed.push(ch);
            return Ok(());
        }
        self.timers.rearm(ch, conn);
        Ok(())
    }
}

/// Builds `conn`'s packets into `io`'s TX batch while there is room; a
/// connection stopped by a full ring goes on `tx_blocked` for the next
/// iteration.
fn send_packets<B: PacketIo + ?Sized>(
    conn: &mut Connection,
    ch: ConnectionHandle,
    now: Instant,
    io: &mut B,
    buf: &mut Vec<u8>,
    tx_blocked: &mut Vec<ConnectionHandle>,
) -> std::io::Result<()> {
    let max_segments = io.max_segments();
    while io.tx_capacity() >= max_segments {
        buf.clear();
        let Some(t) = conn.poll_transmit(now, max_segments, buf) else {
            break;
        };
        io.send(&outgoing(&t, &buf[..t.size]))?;
    }
    if io.tx_capacity() < max_segments {
        // The TX ring is full: come back next iteration for the rest.
        tx_blocked.push(ch);
    }
    Ok(())
}

/// The connections' deadlines. A heap entry counts only if it equals the
/// connection's deadline in `armed`, so superseded ones cost a pop.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    armed: FxHashMap<ConnectionHandle, Instant>,
}

impl Timers {
    /// Takes `conn`'s current deadline (after it was driven).
    fn rearm(&mut self, ch: ConnectionHandle, conn: &mut Connection) {
        if let Some(when) = conn.poll_timeout() {
            if self.armed.get(&ch) != Some(&when) {
                self.armed.insert(ch, when);
                self.heap.push(Reverse((when, ch.0)));
                self.compact();
            }
        } else {
            self.armed.remove(&ch);
        }
    }

    /// The earliest deadline still armed, dropping superseded entries
    /// ahead of it.
    fn next_live(&mut self) -> Option<Instant> {
        while let Some(&Reverse((when, index))) = self.heap.peek() {
            if self.armed.get(&ConnectionHandle(index)) == Some(&when) {
                return Some(when);
            }
            self.heap.pop();
        }
        None
    }

    /// Superseded deadlines stay in the heap until they pop; when they
    /// outnumber the live ones, rebuild the heap from `armed` in place. This
    /// bounds the heap to twice the connections (plus slack) at an amortised
    /// O(1) per push, and reuses the heap's allocation.
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.armed.len() + TIMER_SLACK {
            return;
        }
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(self.armed.iter().map(|(ch, when)| Reverse((*when, ch.0))));
        self.heap = BinaryHeap::from(entries);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline that moved later leaves its old heap entry behind; the
    /// worker's sleep must end at the live deadline, not at the old one.
    #[test]
    fn next_timer_skips_superseded_deadlines() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        let (a, b) = (ConnectionHandle(1), ConnectionHandle(2));
        for (ch, when) in [(a, ms(27)), (b, ms(30)), (a, ms(60))] {
            timers.armed.insert(ch, when);
            timers.heap.push(Reverse((when, ch.0)));
        }
        assert_eq!(timers.next_live(), Some(ms(30)));
        // The superseded entry is gone, the live ones stay.
        assert_eq!(timers.heap.len(), 2);
        timers.armed.remove(&b);
        assert_eq!(timers.next_live(), Some(ms(60)));
        timers.armed.clear();
        assert_eq!(timers.next_live(), None);
        assert!(timers.heap.is_empty());
    }
}
