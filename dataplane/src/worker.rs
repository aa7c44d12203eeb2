//! The worker loop: one thread per NIC queue, owning its I/O backend and a
//! transport [`Driver`](crate::driver) (one quinn-proto `Endpoint` and every
//! `Connection` it accepts). The loop does the I/O, the waiting and the
//! bookkeeping; the driver does QUIC and never blocks.
//!
//! One iteration: receive a batch -> feed the driver (which feeds the
//! endpoint/connections) -> let the application do its outside work -> run
//! expired timers -> drive touched connections, which lets the application
//! react and builds packets straight into the backend's TX batch -> flush.
//! Datagrams received in an iteration are acknowledged in the same
//! iteration's transmit.
//!
//! In a group of several workers ([`crate::handoff::WorkerGroup`]) each
//! received datagram first goes to the worker that owns its connection
//! ([`crate::cid::owner_of`]); datagrams handed over by other workers are
//! taken from this worker's inbox every iteration and handled like its own.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use quinn_proto::{EcnCodepoint, EndpointConfig};

// Re-exported: other crates name these through `worker`.
pub use crate::driver::{Admission, Application, CloseReason, Connections};
use crate::{
    cid::{self, WorkerCidGenerator, LOCAL_CID_LEN},
    driver::{AdmissionCounts, Datagram, Driver},
    handoff::Steering,
    io::{poll_any_readable, IoCounters, PacketIo},
    tls::SharedServerConfig,
};

/// Datagrams taken from the backend per iteration.
const RX_BATCH: usize = 64;
/// Receive arena chunk: datagrams are copied in and split off, so one
/// allocation serves many packets (and is reused once they are all dropped).
const RX_ARENA_CHUNK: usize = 256 * 1024;
/// How long an idle worker spins before it blocks in poll().
const SPIN_BEFORE_BLOCK: Duration = Duration::from_micros(200);
/// Upper bound on one blocking wait, so the stop flag is seen promptly.
const MAX_BLOCK: Duration = Duration::from_millis(50);
/// A timer due sooner than this is met by spinning: a sleep and its
/// wake-up take about as long (the kernel's default timer slack is 50 µs).
const SPIN_FOR_TIMER_BELOW: Duration = Duration::from_micros(50);
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
/// How often local counters are published to [`WorkerStats`].
const STATS_PERIOD: Duration = Duration::from_millis(100);

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

impl IdleMode {
    /// Every mode, in the order a command line lists them.
    pub const ALL: [IdleMode; 3] = [IdleMode::Busy, IdleMode::Adaptive, IdleMode::Block];

    /// Its lowercase name, as written on a command line.
    pub fn name(self) -> &'static str {
        match self {
            IdleMode::Busy => "busy",
            IdleMode::Adaptive => "adaptive",
            IdleMode::Block => "block",
        }
    }
}

impl std::fmt::Display for IdleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no [`IdleMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown idle mode {0:?}: expected busy, adaptive or block")]
pub struct ParseIdleModeError(pub String);

impl std::str::FromStr for IdleMode {
    type Err = ParseIdleModeError;

    /// The exact lowercase names of [`IdleMode::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdleMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| ParseIdleModeError(s.to_string()))
    }
}

/// Counters a worker publishes for the control plane (single writer).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub rx_dropped_malformed: AtomicU64,
    pub tx_dropped: AtomicU64,
    /// TX frames in the AF_XDP TX or completion ring at the last publish.
    pub tx_frames_in_flight: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Initials answered with a Retry (address validation under load).
    pub connections_retried: AtomicU64,
    pub connections_active: AtomicU64,
    /// Connections gone, by [`CloseReason`] (indexed by `as usize`).
    pub connections_closed: [AtomicU64; CloseReason::COUNT],
    pub iterations: AtomicU64,
    /// Datagrams this worker received for a connection of another worker
    /// and handed over to it.
    pub handed_off_out: AtomicU64,
    /// Datagrams other workers handed over to this one.
    pub handed_off_in: AtomicU64,
    /// Datagrams this worker could not hand over (owner's inbox full or gone).
    pub handoff_dropped: AtomicU64,
}

/// [`WorkerStats`] read once, as plain numbers.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerCounts {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped_malformed: u64,
    pub tx_dropped: u64,
    pub tx_frames_in_flight: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_retried: u64,
    pub connections_active: u64,
    pub connections_closed: [u64; CloseReason::COUNT],
    pub iterations: u64,
    pub handed_off_out: u64,
    pub handed_off_in: u64,
    pub handoff_dropped: u64,
}

impl WorkerStats {
    /// What the worker published last (each counter read on its own).
    pub fn read(&self) -> WorkerCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerCounts {
            rx_packets: get(&self.rx_packets),
            tx_packets: get(&self.tx_packets),
            rx_dropped_malformed: get(&self.rx_dropped_malformed),
            tx_dropped: get(&self.tx_dropped),
            tx_frames_in_flight: get(&self.tx_frames_in_flight),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_retried: get(&self.connections_retried),
            connections_active: get(&self.connections_active),
            connections_closed: std::array::from_fn(|i| get(&self.connections_closed[i])),
            iterations: get(&self.iterations),
            handed_off_out: get(&self.handed_off_out),
            handed_off_in: get(&self.handed_off_in),
            handoff_dropped: get(&self.handoff_dropped),
        }
    }

    fn publish(
        &self,
        io: IoCounters,
        admission: AdmissionCounts,
        local: &LocalCounters,
        active: usize,
    ) {
        self.rx_packets.store(io.rx_packets, Ordering::Relaxed);
        self.tx_packets.store(io.tx_packets, Ordering::Relaxed);
        self.rx_dropped_malformed
            .store(io.rx_dropped_malformed, Ordering::Relaxed);
        self.tx_dropped.store(io.tx_dropped, Ordering::Relaxed);
        self.tx_frames_in_flight
            .store(io.tx_frames_in_flight, Ordering::Relaxed);
        self.connections_accepted
            .store(admission.accepted, Ordering::Relaxed);
        self.connections_refused
            .store(admission.refused, Ordering::Relaxed);
        self.connections_retried
            .store(admission.retried, Ordering::Relaxed);
        self.connections_active
            .store(active as u64, Ordering::Relaxed);
        for (a, v) in self.connections_closed.iter().zip(admission.closed) {
            a.store(v, Ordering::Relaxed);
        }
        self.iterations.store(local.iterations, Ordering::Relaxed);
        self.handed_off_out
            .store(local.handed_off_out, Ordering::Relaxed);
        self.handed_off_in
            .store(local.handed_off_in, Ordering::Relaxed);
        self.handoff_dropped
            .store(local.handoff_dropped, Ordering::Relaxed);
    }
}

/// The loop's own counters (admission's are the driver's).
#[derive(Debug, Default)]
struct LocalCounters {
    iterations: u64,
    handed_off_out: u64,
    handed_off_in: u64,
    handoff_dropped: u64,
}

pub struct WorkerConfig {
    pub endpoint: Arc<EndpointConfig>,
    /// Shared by the workers; the control plane may replace it while they
    /// run (certificate reload).
    pub server: Arc<SharedServerConfig>,
    pub idle: IdleMode,
    pub admission: Admission,
    /// How long a stopping worker keeps serving after the application's
    /// last word (see [`Application::going_away`]).
    pub drain: Duration,
}

pub struct Worker<B: PacketIo, A: Application> {
    io: B,
    app: A,
    driver: Driver,
    server: Arc<SharedServerConfig>,
    /// The generation of `server` the driver accepts with.
    server_generation: u64,
    drain: Duration,
    rx_arena: BytesMut,
    rx_batch: Vec<Datagram>,
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
        let (server, server_generation) = config.server.current();
        Self {
            io,
            app,
            driver: Driver::new(endpoint_config, server, config.admission),
            server: config.server,
            server_generation,
            drain: config.drain,
            rx_arena: BytesMut::with_capacity(RX_ARENA_CHUNK),
            rx_batch: Vec::with_capacity(RX_BATCH),
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

    /// Entries in the timer heap, superseded ones included (the driver
    /// keeps them bounded).
    pub fn timer_queue_len(&self) -> usize {
        self.driver.timer_queue_len()
    }

    pub fn connection_count(&self) -> usize {
        self.driver.connection_count()
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
                    .driver
                    .next_timer()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(MAX_BLOCK);
                // The wait has nanosecond resolution; only a timer closer
                // than a wake-up takes is met by spinning.
                if until_timer >= SPIN_FOR_TIMER_BELOW {
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

    /// The application's last word, its grace, its end, then closing.
    fn shutdown(&mut self) -> std::io::Result<()> {
        let (app, drain) = (&mut self.app, self.drain);
        self.driver
            .with_connections(Instant::now(), &mut self.io, |conns| {
                app.going_away(conns, drain)
            });
        if self.driver.has_pending() {
            self.serve_for(self.drain)?;
            let app = &mut self.app;
            self.driver
                .with_connections(Instant::now(), &mut self.io, |conns| app.drained(conns));
            self.serve_for(FLUSH_GRACE)?;
        }
        let now = Instant::now();
        self.driver
            .close_all(now, Bytes::from_static(b"relay shutting down"));
        self.serve_until(now + DRAIN_TIMEOUT)?;
        self.publish_stats();
        self.app.stopped();
        Ok(())
    }

    /// Keeps iterating for `period` or until no connection is left.
    fn serve_for(&mut self, period: Duration) -> std::io::Result<()> {
        self.serve_until(Instant::now() + period)
    }

    fn serve_until(&mut self, deadline: Instant) -> std::io::Result<()> {
        while self.driver.connection_count() > 0 && Instant::now() < deadline {
            if !self.iterate(Instant::now())? {
                self.io.wait(Duration::from_millis(1))?;
            }
        }
        Ok(())
    }

    /// Publishes the counters to [`WorkerStats`] now; [`run`](Self::run)
    /// does it every 100 ms.
    pub fn publish_stats(&self) {
        self.stats.publish(
            self.io.counters(),
            self.driver.counts(),
            &self.local,
            self.driver.connection_count(),
        );
    }

    /// One pass of the loop. Returns whether anything happened.
    pub fn iterate(&mut self, now: Instant) -> std::io::Result<bool> {
        self.local.iterations += 1;
        if self.server.generation() != self.server_generation {
            let (server, generation) = self.server.current();
            self.driver.set_server_config(server);
            self.server_generation = generation;
        }
        let received = self.receive()?;
        let mut batch = std::mem::take(&mut self.rx_batch);
        for d in batch.drain(..) {
            if let Some(d) = self.steer(d) {
                self.driver.handle_datagram(now, d, &mut self.io);
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
            self.driver.handle_datagram(now, d, &mut self.io);
        }
        self.local.handed_off_in += handed_in as u64;

        // The application's own cross-worker work; every connection it
        // touches is driven below.
        let app = &mut self.app;
        let external = self
            .driver
            .with_connections(now, &mut self.io, |conns| app.poll_external(conns));

        self.driver.handle_timeouts(now);
        // Evaluated before the `||` so the drive always happens.
        let pending = self.driver.drive(now, &mut self.io, &mut self.app)?;
        let busy = received > 0 || handed_in > 0 || external || pending;
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

#[cfg(test)]
mod tests {
    use super::IdleMode;

    #[test]
    fn idle_mode_names_round_trip() {
        for mode in IdleMode::ALL {
            assert_eq!(mode.to_string().parse::<IdleMode>(), Ok(mode));
        }
        assert_eq!(IdleMode::Adaptive.to_string(), "adaptive");
        for bad in ["", "Busy", "spin", "block "] {
            let err = bad.parse::<IdleMode>().unwrap_err();
            assert!(err.to_string().contains("busy, adaptive or block"), "{err}");
        }
    }
}
