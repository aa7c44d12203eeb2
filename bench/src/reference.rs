//! Path-limit references, measured by the benchmark on the same machine
//! in the same invocation as the relay runs:
//!
//! - [`quinn_send`]: what quinn-proto itself costs per stream packet on
//!   the sending side. Two quinn-proto connections (the relay's server
//!   configuration, the load clients' client configuration) exchange
//!   datagrams in memory; the server writes objects on unidirectional
//!   streams (a new stream every 30 objects, like a group), the client
//!   reads them and acknowledges with quinn's default ACK policy. Only the
//!   server's side is timed, with the thread's CPU clock, on the relay's
//!   core: `poll_transmit` (sealing, and copying each datagram out, as the
//!   relay copies it into a UMEM frame) and the intake of the client's ACK
//!   datagrams with the timers; the stream writes separately.
//! - [`xsk_tx`] (the hidden subcommand `xsk-tx-ref`, run in the relay
//!   namespace): what AF_XDP copy-mode transmit costs per packet. One
//!   socket on `eth0` queue 0, bound like the dataplane binds its own
//!   (xsk-rs, 4 KiB frames, 2 048-entry rings, need-wakeup, copy mode; no
//!   XDP program: TX needs none), sends pre-built Ethernet/IPv4/UDP frames
//!   to client 1 (UDP port 9, where nothing listens) in batches of 64,
//!   kicking after each batch until the kernel took it (one copy-mode kick
//!   sends the whole batch where the kernel lets the socket raise its
//!   budget, else 32 frames, as in the dataplane's flush) and reaping
//!   completions. When a kick takes nothing (the completion ring is full
//!   of frames the receiving side has not freed: it is the bottleneck),
//!   it sleeps 20 µs rather than spin, so the figure is the transmit cost,
//!   not time spent waiting for the receivers.
//!
//! Their sum is the cost of one packet on the relay's path with nothing
//! else: no MoQT, no fan-out, no event loop.

use std::{
    collections::VecDeque,
    net::{SocketAddr, SocketAddrV4},
    num::NonZeroU32,
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use dataplane::{
    frame::{FrameHeader, MacAddr},
    tls,
};
use quinn_proto::{
    crypto::rustls::QuicClientConfig, ClientConfig, Connection, ConnectionHandle, DatagramEvent,
    Dir, Endpoint, EndpointConfig, Event, StreamEvent, StreamId, TransportConfig,
};
use serde_json::{json, Value};

use crate::{
    harness::{Topology, RELAY_V4},
    procstat::{self, pin_current_thread, thread_cpu_time},
    quic::RELAY_SERVER_NAME,
};

/// Objects per unidirectional stream (a group's worth at the defaults).
pub const OBJECTS_PER_STREAM: usize = 30;
/// UDP payload bytes a relay packet carries beyond the object: QUIC short
/// header, STREAM frame header, the MoQT object header and the AEAD tag.
pub const QUIC_OVERHEAD: usize = 60;
/// The largest UDP payload on the test topology (1 500-byte MTU, IPv4).
pub const MAX_UDP_PAYLOAD: usize = 1472;
/// Datagrams per `poll_transmit`, as the XDP backend asks for.
const MAX_DATAGRAMS: usize = 10;
/// Client 1 of the topology: where the AF_XDP reference sends.
const CLIENT1_V4: &str = "198.18.0.11";

/// The UDP payload size of a relay packet carrying one object.
pub fn packet_payload(object_size: usize) -> usize {
    (object_size + QUIC_OVERHEAD).min(MAX_UDP_PAYLOAD)
}

/// What reading the thread CPU clock costs inside a timed interval
/// (the mean difference of back-to-back readings), subtracted from each.
fn clock_overhead() -> Duration {
    let n = 2000u32;
    let mut sum = Duration::ZERO;
    for _ in 0..n {
        let a = thread_cpu_time();
        let b = thread_cpu_time();
        sum += b.saturating_sub(a);
    }
    sum / n
}

/// A timed interval of the server's work.
struct Meter {
    overhead: Duration,
    total: Duration,
    intervals: u64,
}

impl Meter {
    fn new(overhead: Duration) -> Self {
        Self {
            overhead,
            total: Duration::ZERO,
            intervals: 0,
        }
    }

    fn time<T>(&mut self, on: bool, f: impl FnOnce() -> T) -> T {
        if !on {
            return f();
        }
        let t0 = thread_cpu_time();
        let r = f();
        let spent = thread_cpu_time().saturating_sub(t0);
        self.total += spent.saturating_sub(self.overhead);
        self.intervals += 1;
        r
    }
}

/// The sending side: the relay's server configuration.
struct Server {
    endpoint: Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
    response: Vec<u8>,
    tx: Vec<u8>,
    /// Datagrams out, one after the other, with their lengths: no
    /// allocation per packet.
    staged: Vec<u8>,
    staged_lens: Vec<usize>,
    stream: Option<StreamId>,
    in_stream: usize,
    /// What is left of an object a write took only in part.
    partial: Option<Bytes>,
    max_datagram: usize,
}

impl Server {
    fn receive(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.response.clear();
        match self
            .endpoint
            .handle(now, from, None, None, data, &mut self.response)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.response.clear();
                if let Ok((ch, conn)) =
                    self.endpoint
                        .accept(incoming, now, &mut self.response, None)
                {
                    self.conn = Some((ch, conn));
                }
            }
            Some(DatagramEvent::ConnectionEvent(_, event)) => {
                if let Some((_, conn)) = &mut self.conn {
                    conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(_)) | None => {}
        }
        self.events();
    }

    fn events(&mut self) {
        if let Some((ch, conn)) = &mut self.conn {
            while let Some(e) = conn.poll_endpoint_events() {
                if let Some(reply) = self.endpoint.handle_event(*ch, e) {
                    conn.handle_event(reply);
                }
            }
            while conn.poll().is_some() {}
        }
    }

    fn timeouts(&mut self, now: Instant) {
        if let Some((_, conn)) = &mut self.conn {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
        self.events();
    }

    /// Writes one object (or the rest of the last one); whether it is
    /// all written.
    fn write(&mut self, object: &Bytes) -> bool {
        let Some((_, conn)) = &mut self.conn else {
            return false;
        };
        if self.partial.is_none() {
            if self.stream.is_none() || self.in_stream >= OBJECTS_PER_STREAM {
                if let Some(s) = self.stream.take() {
                    let _ = conn.send_stream(s).finish();
                }
                let Some(id) = conn.streams().open(Dir::Uni) else {
                    return false; // no stream credit yet
                };
                self.stream = Some(id);
                self.in_stream = 0;
            }
            self.partial = Some(object.clone());
        }
        let Some(id) = self.stream else { return false };
        let mut chunk = [self.partial.take().expect("set above")];
        match conn.send_stream(id).write_chunks(&mut chunk) {
            Ok(w) if w.chunks == 1 => {
                self.in_stream += 1;
                true
            }
            _ => {
                self.partial = Some(std::mem::take(&mut chunk[0]));
                false
            }
        }
    }

    /// Everything the connection sends now, staged; the datagram count.
    fn transmit(&mut self, now: Instant) -> usize {
        let Some((_, conn)) = &mut self.conn else {
            return 0;
        };
        let mut n = 0;
        loop {
            self.tx.clear();
            let Some(t) = conn.poll_transmit(now, MAX_DATAGRAMS, &mut self.tx) else {
                break;
            };
            let seg = t.segment_size.unwrap_or(t.size).max(1);
            for d in self.tx[..t.size].chunks(seg) {
                self.staged.extend_from_slice(d);
                self.staged_lens.push(d.len());
                self.max_datagram = self.max_datagram.max(d.len());
                n += 1;
            }
        }
        n
    }
}

/// The receiving side: the load clients' configuration, quinn's default
/// ACK policy; reads every stream to its end.
struct Client {
    endpoint: Endpoint,
    conn: Connection,
    handle: ConnectionHandle,
    buf: Vec<u8>,
    to_read: Vec<StreamId>,
    bytes_read: u64,
}

impl Client {
    fn receive(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.buf.clear();
        if let Some(DatagramEvent::ConnectionEvent(_, event)) =
            self.endpoint
                .handle(now, from, None, None, data, &mut self.buf)
        {
            self.conn.handle_event(event);
        }
    }

    fn step(&mut self, now: Instant, out: &mut VecDeque<BytesMut>) {
        while let Some(e) = self.conn.poll_endpoint_events() {
            if let Some(reply) = self.endpoint.handle_event(self.handle, e) {
                self.conn.handle_event(reply);
            }
        }
        while let Some(e) = self.conn.poll() {
            match e {
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    while let Some(id) = self.conn.streams().accept(Dir::Uni) {
                        self.to_read.push(id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => self.to_read.push(id),
                _ => {}
            }
        }
        for id in self.to_read.drain(..) {
            let mut recv = self.conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else {
                continue;
            };
            while let Ok(Some(c)) = chunks.next(usize::MAX) {
                self.bytes_read += c.bytes.len() as u64;
            }
            let _ = chunks.finalize();
        }
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        loop {
            self.buf.clear();
            let Some(t) = self.conn.poll_transmit(now, 1, &mut self.buf) else {
                break;
            };
            out.push_back(BytesMut::from(&self.buf[..t.size]));
        }
    }
}

/// Both sides and the server's meters.
struct Rounds {
    server: Server,
    client: Client,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
    object: Bytes,
    to_server: VecDeque<BytesMut>,
    send: Meter,
    acks: Meter,
    write: Meter,
}

impl Rounds {
    /// One round: the server takes the ACKs in, writes an object,
    /// transmits; the client receives, reads and answers. Only the
    /// server's work is timed (when `measure`).
    fn round(&mut self, measure: bool, totals: &mut Totals, write_object: bool) {
        let now = Instant::now();
        let (server, to_server) = (&mut self.server, &mut self.to_server);
        let n_acks = to_server.len() as u64;
        let from = self.client_addr;
        // One timed interval for the ACKs and the timers: each reading of
        // the thread clock is a system call, subtracted but not free.
        self.acks.time(measure, || {
            for d in to_server.drain(..) {
                server.receive(now, from, d);
            }
            server.timeouts(now);
        });
        let object = &self.object;
        if write_object && self.write.time(measure, || server.write(object)) {
            totals.objects += 1;
        }
        let n = self.send.time(measure, || server.transmit(now));
        totals.packets += n as u64;
        totals.acks += n_acks;
        let mut at = 0;
        for &len in &server.staged_lens {
            let d = BytesMut::from(&server.staged[at..at + len]);
            at += len;
            self.client.receive(now, self.server_addr, d);
        }
        server.staged.clear();
        server.staged_lens.clear();
        self.client.step(now, &mut self.to_server);
    }
}

/// [`quinn_send`]'s figures.
#[derive(Default)]
struct Totals {
    packets: u64,
    objects: u64,
    acks: u64,
}

/// Measures quinn-proto's send cost per stream packet (module docs) on a
/// thread pinned to `core`, for about `duration` after a warm-up.
pub fn quinn_send(
    object_size: usize,
    core: Option<usize>,
    duration: Duration,
) -> anyhow::Result<Value> {
    std::thread::Builder::new()
        .name("quinn-send-ref".into())
        .spawn(move || quinn_send_here(object_size, core, duration))
        .context("spawning the quinn-proto reference thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the quinn-proto reference thread panicked"))?
}

fn quinn_send_here(
    object_size: usize,
    core: Option<usize>,
    duration: Duration,
) -> anyhow::Result<Value> {
    if let Some(c) = core {
        pin_current_thread(c)?;
    }
    let server_addr: SocketAddr = format!("{RELAY_V4}:4433").parse()?;
    let client_addr: SocketAddr = format!("{CLIENT1_V4}:40000").parse()?;
    let alpn = moqt_client::MOQT_ALPN;

    let identity = tls::Identity::self_signed(&[RELAY_SERVER_NAME])?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(identity.chain[0].clone())
        .context("trusting the reference's certificate")?;
    let server_config = Arc::new(tls::server_config(
        identity,
        &[alpn],
        &tls::TransportLimits::default(),
    )?);
    let server = Server {
        endpoint: Endpoint::new(
            Arc::new(tls::endpoint_config()),
            Some(server_config),
            true,
            None,
        ),
        conn: None,
        response: Vec::new(),
        tx: Vec::with_capacity(64 << 10),
        staged: Vec::with_capacity(256 << 10),
        staged_lens: Vec::with_capacity(256),
        stream: None,
        in_stream: 0,
        partial: None,
        max_datagram: 0,
    };
    let crypto = QuicClientConfig::try_from(tls::client_crypto(roots, alpn)?)?;
    let mut client_config = ClientConfig::new(Arc::new(crypto));
    // As the load clients (quic::client_config): quinn's defaults.
    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn_proto::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s fits"),
        ))
        .datagram_receive_buffer_size(Some(1 << 20));
    client_config.transport_config(Arc::new(transport));
    let mut client_endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
    let (handle, conn) = client_endpoint
        .connect(
            Instant::now(),
            client_config,
            server_addr,
            RELAY_SERVER_NAME,
        )
        .context("connecting the reference client")?;
    let client = Client {
        endpoint: client_endpoint,
        conn,
        handle,
        buf: Vec::with_capacity(2048),
        to_read: Vec::new(),
        bytes_read: 0,
    };

    let overhead = clock_overhead();
    let mut r = Rounds {
        server,
        client,
        server_addr,
        client_addr,
        object: Bytes::from(vec![0x5a; object_size]),
        to_server: VecDeque::new(),
        send: Meter::new(overhead),
        acks: Meter::new(overhead),
        write: Meter::new(overhead),
    };
    let mut totals = Totals::default();

    // Handshake.
    let started = Instant::now();
    let mut scratch = Totals::default();
    while r.client.conn.is_handshaking() || r.server.conn.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "the in-memory handshake did not complete"
        );
        r.round(false, &mut scratch, false);
    }
    // Warm-up: path MTU discovery, congestion window, allocations.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        r.round(false, &mut scratch, true);
    }
    let stats0 = r.server.conn.as_ref().map(|(_, c)| c.stats());
    let t0 = Instant::now();
    while t0.elapsed() < duration && totals.packets < 5_000_000 {
        r.round(true, &mut totals, true);
    }
    let wall = t0.elapsed();
    let stats1 = r.server.conn.as_ref().map(|(_, c)| c.stats());
    anyhow::ensure!(totals.packets > 0, "the quinn-proto reference sent nothing");
    let (send, acks, write) = (r.send.total, r.acks.total, r.write.total);
    let (server, client) = (r.server, r.client);

    let per = |d: Duration| d.as_nanos() as f64 / totals.packets as f64;
    let stream_frames = match (stats0, stats1) {
        (Some(a), Some(b)) => b.frame_tx.stream - a.frame_tx.stream,
        _ => 0,
    };
    let lost = match (stats0, stats1) {
        (Some(a), Some(b)) => b.path.lost_packets - a.path.lost_packets,
        _ => 0,
    };
    let send_ns = per(send);
    let ack_ns = per(acks);
    Ok(json!({
        "what": "quinn-proto server side per packet sent: poll_transmit (+ copying the datagram out) and the intake of the client's ACK datagrams with timers; thread CPU time, in memory",
        "quinn_proto": "0.11 (Cargo.lock)",
        "core": core,
        "object_size": object_size,
        "objects_per_stream": OBJECTS_PER_STREAM,
        "max_datagram_bytes": server.max_datagram,
        "wall_s": wall.as_secs_f64(),
        "objects": totals.objects,
        "packets": totals.packets,
        "stream_frames": stream_frames,
        "lost_packets": lost,
        "ack_datagrams": totals.acks,
        "client_bytes_read": client.bytes_read,
        "send_ns_per_packet": send_ns,
        "ack_intake_ns_per_packet": ack_ns,
        "write_ns_per_packet": per(write),
        "ns_per_packet": send_ns + ack_ns,
        "clock_overhead_ns": overhead.as_nanos() as u64,
        "note": "ns_per_packet = send + ACK intake; the stream writes (write_ns_per_packet) are the relay's fan-out work and not included",
    }))
}

/// `fastrelay-bench xsk-tx-ref`: the AF_XDP transmit reference (module
/// docs), run inside the relay namespace.
#[derive(clap::Args, Debug, Clone)]
pub struct XskTxArgs {
    #[arg(long, default_value = "eth0")]
    pub iface: String,
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Source address of the frames (the relay's).
    #[arg(long)]
    pub src: SocketAddrV4,
    /// Destination address (a client; nothing needs to listen).
    #[arg(long)]
    pub dst: SocketAddrV4,
    /// The destination's MAC address.
    #[arg(long)]
    pub dst_mac: String,
    /// UDP payload bytes per frame.
    #[arg(long)]
    pub payload: usize,
    /// Frames produced to the TX ring before each kick.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    #[arg(long, default_value_t = 5_000_000)]
    pub max_packets: u64,
    /// Pin to this CPU.
    #[arg(long)]
    pub core: Option<usize>,
}

fn parse_mac(s: &str) -> anyhow::Result<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        let p = parts.next().with_context(|| format!("bad MAC {s:?}"))?;
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    anyhow::ensure!(parts.next().is_none(), "bad MAC {s:?}");
    Ok(MacAddr(out))
}

/// The AF_XDP transmit reference itself (module docs); one JSON value.
pub fn xsk_tx(a: &XskTxArgs) -> anyhow::Result<Value> {
    use xsk_rs::{
        config::{
            BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
        },
        FrameDesc, Socket, Umem,
    };
    const RING: u32 = 2048;
    const MAX_KICKS: usize = 65;
    const BACKOFF: Duration = Duration::from_micros(20);
    anyhow::ensure!(
        (1..=RING as usize).contains(&a.batch),
        "--batch must be 1..={RING}"
    );
    if let Some(c) = a.core {
        pin_current_thread(c)?;
    }
    let src_mac = parse_mac(
        &std::fs::read_to_string(format!("/sys/class/net/{}/address", a.iface))
            .with_context(|| format!("reading the MAC address of {}", a.iface))?,
    )?;
    let dst_mac = parse_mac(&a.dst_mac)?;
    let ring = QueueSize::new(RING).map_err(|e| anyhow::anyhow!("ring size: {e}"))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(4096).map_err(|e| anyhow::anyhow!("frame size: {e}"))?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| anyhow::anyhow!("UMEM config: {e}"))?;
    let frames = NonZeroU32::new(RING * 2).expect("non-zero");
    let (umem, mut free) = Umem::new(umem_cfg, frames, false)
        .map_err(|e| anyhow::anyhow!("creating the UMEM: {e}"))?;
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        // Transmit only: no XDP program is needed, and none is loaded.
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | BindFlags::XDP_COPY)
        .build();
    let iface: Interface = a
        .iface
        .parse()
        .map_err(|_| anyhow::anyhow!("bad interface name"))?;
    // SAFETY: this UMEM is not shared with any other socket.
    let (mut tx, rx, rings) = unsafe { Socket::new(sock_cfg, &umem, &iface, a.queue) }
        .map_err(|e| anyhow::anyhow!("binding AF_XDP to {} queue {}: {e}", a.iface, a.queue))?;
    let (_fill, mut comp) = rings.context("no fill/completion rings")?;
    // As the relay's own sockets: a kick may send the whole ring.
    let kick_budget = dataplane::io::xsk::raise_tx_budget(rx.fd().as_raw_fd(), RING);

    let header = FrameHeader {
        src_mac,
        dst_mac,
        vlan: None,
        src: SocketAddr::V4(a.src),
        dst: SocketAddr::V4(a.dst),
        ecn: 0,
        hop_limit: 64,
    };
    let payload: Vec<u8> = (0..a.payload).map(|i| i as u8).collect();
    let mut frame_len = 0;
    for desc in &mut free {
        // SAFETY: a frame of this UMEM that no ring holds yet.
        let mut data = unsafe { umem.data_mut(desc) };
        let mut cursor = data.cursor();
        let capacity = cursor.buf_len();
        cursor.set_pos(capacity);
        frame_len = header
            .write(data.contents_mut(), &payload)
            .map_err(|e| anyhow::anyhow!("building the frame: {e}"))?;
        data.cursor().set_pos(frame_len);
    }
    let mut comp_batch = vec![FrameDesc::default(); 64];
    let mut in_flight = 0usize;
    let (mut sent, mut kicks, mut batches) = (0u64, 0u64, 0u64);
    let mut reap = |free: &mut Vec<FrameDesc>, in_flight: &mut usize, sent: &mut u64| loop {
        // SAFETY: completions are frames of this UMEM that we sent.
        let n = unsafe { comp.consume(&mut comp_batch) };
        for d in &mut comp_batch[..n] {
            // The completion ring carries addresses only: the frame's
            // contents are still there, give it its length back.
            // SAFETY: the kernel is done with this frame.
            unsafe { umem.data_mut(d) }.cursor().set_pos(frame_len);
        }
        free.extend_from_slice(&comp_batch[..n]);
        *in_flight -= n;
        *sent += n as u64;
        if n < comp_batch.len() {
            break;
        }
    };

    let lines0 = procstat::cpu_lines()?;
    let cpu0 = thread_cpu_time();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(a.duration_ms);
    let (mut idle_kicks, mut backoffs) = (0u64, 0u64);
    while Instant::now() < deadline && sent < a.max_packets {
        reap(&mut free, &mut in_flight, &mut sent);
        if free.len() >= a.batch {
            let start = free.len() - a.batch;
            // SAFETY: free frames of this UMEM, written above, owned by us.
            let produced = unsafe { tx.produce(&free[start..]) };
            if produced > 0 {
                free.drain(start..start + produced);
                in_flight += produced;
                batches += 1;
            }
        }
        // As the dataplane's flush: kick until the kernel took the whole
        // TX ring. A kick that takes nothing means the completion ring is
        // full of frames the receivers have not freed yet: the path
        // behind us is the bottleneck, and spinning on kicks would only
        // bill that wait to the sender. Back off instead.
        for _ in 0..MAX_KICKS {
            let queued = RING - tx.nb_free_exact();
            if queued == 0 || !tx.needs_wakeup() {
                break;
            }
            tx.wakeup().context("kicking the TX ring")?;
            kicks += 1;
            reap(&mut free, &mut in_flight, &mut sent);
            if RING - tx.nb_free_exact() == queued {
                idle_kicks += 1;
                backoffs += 1;
                std::thread::sleep(BACKOFF);
                break;
            }
        }
    }
    let cpu = thread_cpu_time().saturating_sub(cpu0);
    let wall = t0.elapsed();
    let lines1 = procstat::cpu_lines()?;
    // Let what is still in flight complete (not counted).
    let settle = Instant::now();
    let mut late = 0;
    while in_flight > 0 && settle.elapsed() < Duration::from_millis(200) {
        let _ = tx.wakeup();
        reap(&mut free, &mut in_flight, &mut late);
    }
    anyhow::ensure!(sent > 0, "no frame completed");
    let cores: std::collections::BTreeSet<usize> = a.core.into_iter().collect();
    let core = procstat::cpu_between(&lines0, &lines1, &cores);
    let per = |d: Duration| d.as_nanos() as f64 / sent as f64;
    Ok(json!({
        "what": "AF_XDP copy-mode TX of pre-built frames, batches of 64, kicked until taken; thread CPU time per completed frame",
        "iface": a.iface,
        "queue": a.queue,
        "core": a.core,
        "frame_bytes": frame_len,
        "udp_payload": a.payload,
        "batch": a.batch,
        "packets": sent,
        "wall_s": wall.as_secs_f64(),
        "packets_per_s": sent as f64 / wall.as_secs_f64(),
        "thread_cpu_s": cpu.as_secs_f64(),
        "ns_per_packet": per(cpu),
        "kicks": kicks,
        "batches": batches,
        "kick_budget": kick_budget,
        "kicks_per_batch": if batches > 0 { kicks as f64 / batches as f64 } else { f64::NAN },
        "idle_kicks": idle_kicks,
        "backoffs": backoffs,
        "backoff_us": BACKOFF.as_micros() as u64,
        "core_busy_s": if cores.is_empty() { Value::Null } else { core.busy().as_secs_f64().into() },
        "core_softirq_s": if cores.is_empty() { Value::Null } else { core.softirq.as_secs_f64().into() },
        "core_busy_ns_per_packet": if cores.is_empty() { Value::Null } else { per(core.busy()).into() },
    }))
}

/// Runs [`xsk_tx`] as `fastrelay-bench xsk-tx-ref` in the relay namespace
/// of `topo`, sending to client 1; its JSON.
pub fn xsk_tx_in_topology(
    topo: &Topology,
    bench_exe: &Path,
    payload: usize,
    core: Option<usize>,
    duration: Duration,
) -> anyhow::Result<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.client_ns(1)])
        .args(["cat", "/sys/class/net/eth0/address"])
        .output()
        .context("reading client 1's MAC address")?;
    anyhow::ensure!(
        out.status.success(),
        "reading client 1's MAC address failed"
    );
    let mac = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "2", &(duration.as_secs() + 20).to_string()])
        .args(["ip", "netns", "exec", &topo.relay_ns()])
        .arg(bench_exe)
        .args(["xsk-tx-ref", "--iface", "eth0", "--queue", "0"])
        .args(["--src", &format!("{RELAY_V4}:4433")])
        .args(["--dst", &format!("{CLIENT1_V4}:9")])
        .args(["--dst-mac", &mac])
        .args(["--payload", &payload.to_string()])
        .args(["--duration-ms", &duration.as_millis().to_string()]);
    if let Some(c) = core {
        cmd.args(["--core", &c.to_string()]);
    }
    let out = cmd.output().context("running xsk-tx-ref")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "xsk-tx-ref failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("xsk-tx-ref printed no JSON")?;
    serde_json::from_str(line).context("parsing xsk-tx-ref's JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_sizes() {
        assert_eq!(packet_payload(1200), 1260);
        assert_eq!(packet_payload(100_000), MAX_UDP_PAYLOAD);
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01\n").unwrap(),
            MacAddr([2, 0, 10, 255, 0, 1])
        );
        assert!(parse_mac("02:00").is_err());
        assert!(parse_mac("02:00:0a:ff:00:01:02").is_err());
    }

    /// The in-memory quinn-proto reference runs and counts packets.
    #[test]
    fn quinn_reference_runs() {
        let v = quinn_send(1200, None, Duration::from_millis(200)).unwrap();
        assert!(v["packets"].as_u64().unwrap() > 100, "{v}");
        assert!(v["ns_per_packet"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["client_bytes_read"].as_u64().unwrap() > 100_000, "{v}");
    }
}
