//! AF_XDP backend (xsk-rs): one socket bound to one NIC queue, with its own
//! UMEM. The XDP program redirects the relay's UDP ports into it; this
//! backend parses and builds the Ethernet/IP/UDP headers itself.
//!
//! Frames: the UMEM is split once into an RX half, which only ever cycles
//! fill ring -> RX ring -> fill ring, and a TX half, which cycles free list ->
//! TX ring -> completion ring -> free list. Nothing is allocated per packet.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use rustc_hash::FxHashMap;
use xsk_rs::{
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
};

use super::{poll_readable, IoCounters, LinkPeer, Outgoing, PacketIo, Received};
use crate::{
    frame::{parse_udp, FrameHeader, MacAddr},
    neighbor::NextHopView,
};

/// Frames per ring; the UMEM holds twice this many (RX half and TX half).
pub const DEFAULT_RING_SIZE: u32 = 2048;
/// UMEM frame size: one frame per packet.
const FRAME_SIZE: u32 = 4096;

/// Memory one socket's UMEM locks: RX and TX halves of `ring_size` frames
/// each. Charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
pub fn umem_bytes(ring_size: u32) -> u64 {
    u64::from(ring_size) * 2 * u64::from(FRAME_SIZE)
}
/// Bound on the MAC addresses learned from received frames, and on the
/// next hops cached per destination (each map is cleared when full).
const MAX_LEARNED_PEERS: usize = 65_536;
/// Largest RX/completion batch handled at once.
const BATCH: usize = 64;
/// Upper bound on TX kicks per flush (a full 2 048-frame ring at 32 a kick,
/// the most a kernel without `XDP_MAX_TX_SKB_BUDGET` sends per kick).
const MAX_TX_KICKS: usize = 65;
/// `SOL_XDP` socket option (Linux 6.17+): frames one copy-mode TX kick may
/// send (the kernel's default is 32). Not in libc's headers yet.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Lets one copy-mode kick send the whole TX ring instead of 32 frames: a
/// fan-out of one object to 100 subscribers then costs one `sendto`, not
/// four (each a system call and, with RPS, possibly an IPI). Kernels
/// without the option keep their 32. Returns the budget in force.
pub fn raise_tx_budget(fd: RawFd, ring_size: u32) -> u32 {
    const KERNEL_DEFAULT: u32 = 32;
    let budget: u32 = ring_size;
    // SAFETY: a plain setsockopt on our own socket with a u32 option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        budget
    } else {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "XDP_MAX_TX_SKB_BUDGET not available; {KERNEL_DEFAULT} frames per TX kick"
        );
        KERNEL_DEFAULT
    }
}

#[derive(Debug, Clone)]
pub struct XskConfig {
    pub iface: String,
    pub queue: u32,
    pub local_mac: MacAddr,
    /// Source addresses used when quinn-proto leaves the choice to us (first of each family).
    pub local_ips: Vec<IpAddr>,
    pub port: u16,
    pub ring_size: u32,
    /// Force copy mode (zero-copy is used when the driver offers it otherwise).
    pub force_copy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid AF_XDP ring size {0}: must be a power of two")]
    RingSize(u32),
    #[error("creating the UMEM failed: {0}")]
    Umem(String),
    #[error(
        "binding an AF_XDP socket to {iface} queue {queue} failed: {reason} \
         (does the interface have that queue? is another AF_XDP socket bound to it?)"
    )]
    Bind {
        iface: String,
        queue: u32,
        reason: String,
    },
}

pub struct XskIo {
    cfg: XskConfig,
    umem: Umem,
    fill: FillQueue,
    comp: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    /// TX frames not in the kernel's hands.
    tx_free: Vec<FrameDesc>,
    /// TX frames written but not yet produced to the TX ring.
    tx_pending: Vec<FrameDesc>,
    /// TX frames in the TX or completion ring.
    tx_in_flight: usize,
    rx_batch: Vec<FrameDesc>,
    comp_batch: Vec<FrameDesc>,
    next_hops: NextHopView,
    /// Source MAC (and VLAN) of the last frame from each peer IP: the fallback
    /// next hop when the kernel's neighbour table has no entry.
    learned: HashMap<IpAddr, (MacAddr, Option<u16>)>,
    /// Each destination's next hop as last resolved from `learned` and the
    /// kernel's tables: one lookup per transmitted frame instead of two
    /// keyed hashes and a route scan. An entry goes when its peer's learned
    /// link changes; all go when the kernel's tables do.
    resolved: FxHashMap<IpAddr, Option<(MacAddr, Option<u16>)>>,
    counters: IoCounters,
}

impl XskIo {
    pub fn open(cfg: XskConfig, next_hops: NextHopView) -> Result<Self, XskError> {
        let ring = QueueSize::new(cfg.ring_size).map_err(|_| XskError::RingSize(cfg.ring_size))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).expect("4096 is a valid frame size"))
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| XskError::Umem(e.to_string()))?;
        let frames = NonZeroU32::new(cfg.ring_size * 2).expect("ring size is non-zero");
        let (umem, mut descs) =
            Umem::new(umem_cfg, frames, false).map_err(|e| XskError::Umem(e.to_string()))?;

        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        if cfg.force_copy {
            bind |= BindFlags::XDP_COPY;
        }
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // The relay loads its own program; libxdp must not load another over it.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let iface: Interface = cfg.iface.parse().map_err(|_| XskError::Bind {
            iface: cfg.iface.clone(),
            queue: cfg.queue,
            reason: "interface name contains a NUL byte".into(),
        })?;
        // SAFETY: this UMEM is not shared with any other socket.
        let (tx, rx, rings) =
            unsafe { Socket::new(sock_cfg, &umem, &iface, cfg.queue) }.map_err(|e| {
                XskError::Bind {
                    iface: cfg.iface.clone(),
                    queue: cfg.queue,
                    reason: e.to_string(),
                }
            })?;
        let tx_budget = raise_tx_budget(rx.fd().as_raw_fd(), cfg.ring_size);
        tracing::debug!(queue = cfg.queue, tx_budget, "AF_XDP frames per TX kick");
        let (mut fill, comp) = rings.ok_or_else(|| XskError::Bind {
            iface: cfg.iface.clone(),
            queue: cfg.queue,
            reason: "no fill/completion rings returned".into(),
        })?;

        let tx_free = descs.split_off(cfg.ring_size as usize);
        // SAFETY: the RX half belongs to this UMEM and is handed to the kernel once.
        let filled = unsafe { fill.produce(&descs) };
        if filled != descs.len() {
            return Err(XskError::Umem(format!(
                "fill ring took {filled} of {} frames",
                descs.len()
            )));
        }

        Ok(Self {
            cfg,
            umem,
            fill,
            comp,
            tx,
            rx,
            tx_pending: Vec::with_capacity(tx_free.len()),
            tx_free,
            tx_in_flight: 0,
            rx_batch: vec![FrameDesc::default(); BATCH],
            comp_batch: vec![FrameDesc::default(); BATCH],
            next_hops,
            learned: HashMap::new(),
            resolved: FxHashMap::default(),
            counters: IoCounters::default(),
        })
    }

    /// The socket's descriptor, for the XSKMAP entry of its queue.
    pub fn raw_fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    pub fn queue(&self) -> u32 {
        self.cfg.queue
    }

    /// Returns completed TX frames to the free list.
    fn reclaim_completions(&mut self) {
        if self.tx_in_flight == 0 {
            return;
        }
        loop {
            // SAFETY: completion descriptors are frames of this UMEM that we sent.
            let n = unsafe { self.comp.consume(&mut self.comp_batch) };
            self.tx_in_flight -= n;
            // Counted on completion: a frame is sent once the kernel is done with it.
            self.counters.tx_packets += n as u64;
            self.tx_free.extend_from_slice(&self.comp_batch[..n]);
            if n < self.comp_batch.len() {
                break;
            }
        }
    }

    fn next_hop_mac(&mut self, dst: IpAddr) -> Option<(MacAddr, Option<u16>)> {
        if let Some(hop) = self.resolved.get(&dst) {
            return *hop;
        }
        let learned = self.learned.get(&dst).copied();
        let hop = match self.next_hops.resolve(dst) {
            Some(mac) => Some((mac, learned.and_then(|(_, vlan)| vlan))),
            None => learned,
        };
        if self.resolved.len() >= MAX_LEARNED_PEERS {
            self.resolved.clear();
        }
        self.resolved.insert(dst, hop);
        hop
    }

    fn source_ip(&self, out: &Outgoing<'_>) -> Option<IpAddr> {
        out.local_ip.or_else(|| {
            self.cfg
                .local_ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == out.remote.is_ipv4())
        })
    }
}

impl PacketIo for XskIo {
    fn recv_batch(&mut self, max: usize, sink: &mut dyn FnMut(Received<'_>)) -> io::Result<usize> {
        if self.next_hops.refresh() {
            self.resolved.clear();
        }
        let want = max.min(self.rx_batch.len());
        // SAFETY: RX descriptors are frames of this UMEM, read before they go back to the fill ring.
        let n = unsafe { self.rx.consume(&mut self.rx_batch[..want]) };
        for desc in &self.rx_batch[..n] {
            // SAFETY: the kernel handed this frame to us and does not touch it until refilled.
            let data = unsafe { self.umem.data(desc) };
            let frame = data.contents();
            match parse_udp(frame) {
                Ok(udp) if udp.dst.port() == self.cfg.port => {
                    self.counters.rx_packets += 1;
                    let link = LinkPeer {
                        mac: udp.src_mac,
                        vlan: udp.vlan,
                    };
                    // Learnt by the worker once quinn-proto accepts the packet.
                    sink(Received {
                        remote: udp.src,
                        local_ip: Some(udp.dst.ip()),
                        ecn: udp.ecn,
                        payload: udp.payload(frame),
                        link: Some(link),
                    });
                }
                Ok(_) | Err(_) => self.counters.rx_dropped_malformed += 1,
            }
        }
        if n > 0 {
            // SAFETY: these frames were just consumed from the RX ring and are no longer read.
            let refilled = unsafe { self.fill.produce(&self.rx_batch[..n]) };
            debug_assert_eq!(refilled, n, "fill ring sized for the whole RX half");
        }
        if self.fill.needs_wakeup() {
            self.fill.wakeup(self.rx.fd_mut(), 0)?;
        }
        Ok(n)
    }

    fn tx_capacity(&mut self) -> usize {
        if self.tx_free.len() < BATCH {
            self.reclaim_completions();
        }
        self.tx_free.len()
    }

    fn send(&mut self, out: &Outgoing<'_>) -> io::Result<()> {
        let Some(src_ip) = self.source_ip(out) else {
            self.counters.tx_dropped += out.segments().count() as u64;
            return Ok(());
        };
        let Some((dst_mac, vlan)) = self.next_hop_mac(out.remote.ip()) else {
            tracing::debug!(remote = %out.remote, "no next-hop MAC known; datagram dropped");
            self.counters.tx_dropped += out.segments().count() as u64;
            return Ok(());
        };
        let header = FrameHeader {
            src_mac: self.cfg.local_mac,
            dst_mac,
            vlan,
            src: SocketAddr::new(src_ip, self.cfg.port),
            dst: out.remote,
            ecn: out.ecn,
            hop_limit: 64,
        };
        for segment in out.segments() {
            let Some(mut desc) = self.tx_free.pop() else {
                self.counters.tx_dropped += 1;
                continue;
            };
            // SAFETY: a free TX frame of this UMEM: neither the kernel nor a queue holds it.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            let mut cursor = data.cursor();
            let capacity = cursor.buf_len();
            cursor.set_pos(capacity);
            // One copy, from quinn-proto's transmit buffer into the UMEM frame:
            // poll_transmit writes into a Vec, not into memory we could lend it.
            match header.write(data.contents_mut(), segment) {
                Ok(len) => {
                    data.cursor().set_pos(len);
                    self.tx_pending.push(desc);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot frame datagram");
                    self.tx_free.push(desc);
                    self.counters.tx_dropped += 1;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.tx_pending.is_empty() {
            // SAFETY: pending frames are written and owned by us until completion.
            let produced = unsafe { self.tx.produce(&self.tx_pending) };
            self.tx_in_flight += produced;
            // The TX ring is as large as the TX half, so everything fits; keep
            // any remainder for the next flush rather than lose it.
            self.tx_pending.drain(..produced);
        }
        // Copy mode needs a kick for every batch, and one kick sends at most
        // its budget (the whole ring where `raise_tx_budget` could, else
        // 32): kick until the ring is drained, or until a kick makes no
        // progress (zero-copy drivers complete asynchronously and only ask
        // when they need it).
        self.reclaim_completions();
        for _ in 0..MAX_TX_KICKS {
            if self.tx_in_flight == 0 || !self.tx.needs_wakeup() {
                break;
            }
            self.tx.wakeup()?;
            let before = self.tx_in_flight;
            self.reclaim_completions();
            if self.tx_in_flight == before {
                break;
            }
        }
        Ok(())
    }

    fn max_segments(&self) -> usize {
        // Each segment takes its own frame; a batch of ten amortises poll_transmit.
        10
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        poll_readable(self.raw_fd(), timeout).map(|_| ())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.raw_fd())
    }

    fn known_link(&self, remote: IpAddr) -> Option<LinkPeer> {
        self.learned
            .get(&remote)
            .map(|&(mac, vlan)| LinkPeer { mac, vlan })
    }

    fn learn_peer(&mut self, remote: IpAddr, link: LinkPeer) {
        if learn(&mut self.learned, remote, link) {
            self.resolved.remove(&remote);
        }
    }

    fn counters(&self) -> IoCounters {
        IoCounters {
            tx_frames_in_flight: self.tx_in_flight as u64,
            ..self.counters
        }
    }
}

/// Remembers the link address a peer's frames came from, so replies to it
/// need no neighbour-table entry. Bounded: cleared when full. Returns
/// whether `ip`'s entry changed.
fn learn(
    learned: &mut HashMap<IpAddr, (MacAddr, Option<u16>)>,
    ip: IpAddr,
    link: LinkPeer,
) -> bool {
    if learned.get(&ip) == Some(&(link.mac, link.vlan)) {
        return false;
    }
    if learned.len() >= MAX_LEARNED_PEERS {
        learned.clear();
    }
    learned.insert(ip, (link.mac, link.vlan));
    true
}
