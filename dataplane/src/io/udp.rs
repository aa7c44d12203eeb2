//! Kernel UDP socket backend: the same worker without XDP, for hosts that
//! lack it and as the baseline of every benchmark. A baseline is only fair
//! if it uses what a well-tuned socket server would, so this one batches
//! through `quinn-udp`:
//!
//! - receive: one `recvmmsg` fills up to 32 buffers of 64 KiB, and with UDP
//!   GRO each buffer may hold many datagrams of one flow, split here at
//!   `RecvMeta::stride`;
//! - send: each [`Outgoing`] leaves as one `sendmsg` with `UDP_SEGMENT`
//!   (GSO), so a whole quinn-proto batch costs one system call (two when it
//!   exceeds the 64 KiB one UDP send may carry).
//!
//! quinn-udp probes the kernel for GSO and GRO when the socket is wrapped;
//! without them [`PacketIo::max_segments`] is 1 and each receive buffer holds
//! one datagram. If the kernel or driver rejects GSO later (EIO/EINVAL),
//! quinn-udp turns it off and the rejected batch is resent segment by segment.
//!
//! Transmits go out at once in `send`. Only when the socket buffer is full
//! (`WouldBlock`) is the rest copied into a bounded backlog that `flush`
//! drains; `tx_capacity` reports the room left in it, so nothing the backend
//! accepts is thrown away uncounted.

use std::{
    collections::VecDeque,
    io::{self, IoSliceMut},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};

use quinn_udp::{EcnCodepoint, RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use super::{poll_fd, IoCounters, Outgoing, PacketIo, Received};

/// Receive buffers per `recvmmsg`: as many as quinn-udp hands the kernel at once.
const RX_SLOTS: usize = quinn_udp::BATCH_SIZE;
/// Holds the largest datagram and the largest GRO batch (the kernel stops
/// coalescing UDP at 64 KiB).
const RX_SLOT_BYTES: usize = 64 * 1024;
/// Largest payload one UDP send may carry (65535 - IPv4 - UDP headers); GSO
/// batches above it are split across sends.
const MAX_SEND_BYTES: usize = 65_507;
/// Segments the backlog takes when the socket pushes back; several GSO
/// batches' worth so the worker keeps building while the kernel drains.
const TX_BACKLOG_SEGMENTS: usize = 512;
/// Backlog bytes preallocated: full-size Ethernet segments. Larger segments
/// grow it once, and only on the rare `WouldBlock` path.
const TX_BACKLOG_BYTES: usize = TX_BACKLOG_SEGMENTS * 1500;
/// SO_RCVBUF/SO_SNDBUF asked for; the kernel caps it at rmem_max/wmem_max.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Where and how one transmit goes; its bytes live elsewhere.
#[derive(Debug, Clone, Copy)]
struct Header {
    remote: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: u8,
    segment_size: usize,
}

/// The unsent rest of a transmit: `backlog_bytes[start..end]`.
#[derive(Debug)]
struct Pending {
    head: Header,
    start: usize,
    end: usize,
}

impl Pending {
    fn segments(&self) -> usize {
        (self.end - self.start).div_ceil(self.head.segment_size)
    }
}

/// The socket and what quinn-udp learnt about it.
struct Wire {
    socket: UdpSocket,
    state: UdpSocketState,
    /// Whether the socket is IPv6 (then IPv4 peers are addressed v4-mapped).
    v6_socket: bool,
}

/// One kernel UDP socket driven by one worker; see the module docs.
pub struct UdpSocketIo {
    wire: Wire,
    rx_bufs: Box<[[u8; RX_SLOT_BYTES]; RX_SLOTS]>,
    rx_meta: [RecvMeta; RX_SLOTS],
    /// Buffers filled by the last receive, and where handing them out stopped
    /// (a GRO batch may be larger than what the caller asked for).
    rx_filled: usize,
    rx_slot: usize,
    rx_offset: usize,
    backlog: VecDeque<Pending>,
    backlog_segments: usize,
    backlog_bytes: Vec<u8>,
    counters: IoCounters,
    /// `recvmmsg` calls made, including the one that finds the socket empty.
    pub rx_syscalls: u64,
    /// `sendmsg` calls made, including refused ones.
    pub tx_syscalls: u64,
}

impl UdpSocketIo {
    /// Wraps a bound socket (a dual-stack `[::]:port` socket serves both
    /// families); it is switched to non-blocking mode, GRO, ECN and
    /// destination-address reporting are turned on where the kernel has them,
    /// and its buffers are grown towards 4 MiB.
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        grow_buffers(&state, &socket);
        let v6_socket = socket.local_addr()?.is_ipv6();
        let rx_bufs: Box<[[u8; RX_SLOT_BYTES]; RX_SLOTS]> = vec![[0u8; RX_SLOT_BYTES]; RX_SLOTS]
            .into_boxed_slice()
            .try_into()
            .map_err(|_| io::Error::other("receive buffers"))?;
        Ok(Self {
            wire: Wire {
                socket,
                state,
                v6_socket,
            },
            rx_bufs,
            rx_meta: [RecvMeta::default(); RX_SLOTS],
            rx_filled: 0,
            rx_slot: 0,
            rx_offset: 0,
            backlog: VecDeque::with_capacity(TX_BACKLOG_SEGMENTS),
            backlog_segments: 0,
            backlog_bytes: Vec::with_capacity(TX_BACKLOG_BYTES),
            counters: IoCounters::default(),
            rx_syscalls: 0,
            tx_syscalls: 0,
        })
    }

    /// Binds a UDP socket on `addr` and wraps it. An unspecified IPv6 address
    /// gives a dual-stack socket. With `reuse_port` several sockets (one per
    /// worker) share the port and the kernel spreads flows among them by
    /// 4-tuple hash.
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        Self::new(socket.into())
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.wire.socket.local_addr()
    }

    /// Datagrams the kernel may coalesce into one receive buffer (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.wire.state.gro_segments()
    }

    /// Hands out datagrams already received, at most `max`.
    fn drain_rx(&mut self, max: usize, sink: &mut dyn FnMut(Received<'_>)) -> usize {
        let mut n = 0;
        while n < max && self.rx_slot < self.rx_filled {
            let meta = &self.rx_meta[self.rx_slot];
            let buf = &self.rx_bufs[self.rx_slot][..meta.len];
            // stride is the length without GRO; max(1) also steps over an empty datagram.
            let stride = meta.stride.max(1);
            let end = (self.rx_offset + stride).min(buf.len());
            sink(Received {
                remote: unmap(meta.addr),
                local_ip: meta.dst_ip.map(unmap_ip),
                ecn: meta.ecn.map_or(0, |e| e as u8),
                payload: &buf[self.rx_offset..end],
                link: None,
            });
            n += 1;
            if end >= buf.len() {
                self.rx_slot += 1;
                self.rx_offset = 0;
            } else {
                self.rx_offset = end;
            }
        }
        self.counters.rx_packets += n as u64;
        n
    }

    /// Copies what the socket did not take into the backlog.
    fn enqueue(&mut self, head: Header, rest: &[u8]) {
        let start = self.backlog_bytes.len();
        self.backlog_bytes.extend_from_slice(rest);
        let pending = Pending {
            head,
            start,
            end: self.backlog_bytes.len(),
        };
        self.backlog_segments += pending.segments();
        self.backlog.push_back(pending);
    }
}

impl Wire {
    fn destination(&self, addr: SocketAddr) -> SocketAddr {
        match (self.v6_socket, addr) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => addr,
        }
    }

    /// Sends `contents` as segments of `head.segment_size`, as few system
    /// calls as GSO allows. Returns how many bytes are done with (sent, or
    /// counted as dropped on an error); less than `contents.len()` only when
    /// the socket buffer is full.
    fn transmit(
        &self,
        counters: &mut IoCounters,
        syscalls: &mut u64,
        head: &Header,
        contents: &[u8],
    ) -> usize {
        let seg = head.segment_size;
        let mut done = 0;
        while done < contents.len() {
            let gso = self.state.max_gso_segments();
            let per_call = (MAX_SEND_BYTES / seg).clamp(1, gso.max(1));
            let chunk = &contents[done..contents.len().min(done + per_call * seg)];
            let segments = chunk.len().div_ceil(seg);
            let transmit = Transmit {
                destination: self.destination(head.remote),
                ecn: EcnCodepoint::from_bits(head.ecn),
                contents: chunk,
                segment_size: (segments > 1).then_some(seg),
                src_ip: head.src_ip,
            };
            *syscalls += 1;
            match self.state.try_send((&self.socket).into(), &transmit) {
                Ok(()) => counters.tx_packets += segments as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return done,
                Err(e) if segments > 1 && self.state.max_gso_segments() < gso => {
                    // quinn-udp just turned GSO off for this socket: resend one by one.
                    tracing::debug!(error = %e, "GSO refused; sending segments singly");
                    continue;
                }
                Err(e) => {
                    counters.tx_dropped += segments as u64;
                    tracing::debug!(to = %head.remote, error = %e, "sendmsg failed");
                }
            }
            done += chunk.len();
        }
        done
    }
}

/// Grows the kernel buffers so a burst between two worker iterations fits;
/// never shrinks them, and a refusal only costs throughput.
fn grow_buffers(state: &UdpSocketState, socket: &UdpSocket) {
    if state
        .recv_buffer_size(socket.into())
        .is_ok_and(|n| n < SOCKET_BUFFER_BYTES)
    {
        let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    }
    if state
        .send_buffer_size(socket.into())
        .is_ok_and(|n| n < SOCKET_BUFFER_BYTES)
    {
        let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    }
    tracing::debug!(
        rcvbuf = ?state.recv_buffer_size(socket.into()).ok(),
        sndbuf = ?state.send_buffer_size(socket.into()).ok(),
        gso = state.max_gso_segments(),
        gro = state.gro_segments(),
        "UDP socket ready"
    );
}

/// A dual-stack socket reports IPv4 peers as v4-mapped IPv6; QUIC sees them as IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap_ip(addr.ip()), addr.port())
}

fn unmap_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PacketIo for UdpSocketIo {
    fn recv_batch(&mut self, max: usize, sink: &mut dyn FnMut(Received<'_>)) -> io::Result<usize> {
        let mut n = self.drain_rx(max, sink);
        while n < max {
            let mut bufs = self.rx_bufs.each_mut().map(|b| IoSliceMut::new(b));
            self.rx_syscalls += 1;
            let got =
                self.wire
                    .state
                    .recv((&self.wire.socket).into(), &mut bufs, &mut self.rx_meta);
            match got {
                Ok(count) => {
                    self.rx_filled = count;
                    self.rx_slot = 0;
                    self.rx_offset = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors surface as ConnectionRefused etc. on the next receive: not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
            n += self.drain_rx(max - n, sink);
        }
        Ok(n)
    }

    fn tx_capacity(&mut self) -> usize {
        TX_BACKLOG_SEGMENTS - self.backlog_segments
    }

    fn send(&mut self, out: &Outgoing<'_>) -> io::Result<()> {
        let head = Header {
            remote: out.remote,
            src_ip: out.local_ip,
            ecn: out.ecn,
            segment_size: out.segment_size.max(1),
        };
        let segments = out.contents.len().div_ceil(head.segment_size);
        if segments > self.tx_capacity() {
            // The caller did not ask for room first; like a full TX ring.
            self.counters.tx_dropped += segments as u64;
            return Ok(());
        }
        // Behind a backlog the transmit waits its turn, so datagrams stay in order.
        let done = if self.backlog.is_empty() {
            self.wire.transmit(
                &mut self.counters,
                &mut self.tx_syscalls,
                &head,
                out.contents,
            )
        } else {
            0
        };
        if done < out.contents.len() {
            self.enqueue(head, &out.contents[done..]);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(pending) = self.backlog.front_mut() {
            let before = pending.segments();
            let done = self.wire.transmit(
                &mut self.counters,
                &mut self.tx_syscalls,
                &pending.head,
                &self.backlog_bytes[pending.start..pending.end],
            );
            pending.start += done;
            self.backlog_segments -= before - pending.segments();
            if pending.start < pending.end {
                break; // the socket is still full
            }
            self.backlog.pop_front();
        }
        if self.backlog.is_empty() {
            self.backlog_bytes.clear();
        }
        Ok(())
    }

    fn max_segments(&self) -> usize {
        self.wire.state.max_gso_segments()
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        // With a backlog, room in the socket buffer is worth waking up for too.
        let events = if self.backlog.is_empty() {
            libc::POLLIN
        } else {
            libc::POLLIN | libc::POLLOUT
        };
        poll_fd(self.wire.socket.as_raw_fd(), events, timeout).map(|_| ())
    }

    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.wire.socket.as_raw_fd())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::Instant,
    };

    use super::*;

    /// remote, local_ip, ecn, payload
    type Datagram = (SocketAddr, Option<IpAddr>, u8, Vec<u8>);

    fn localhost_v4() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    /// Receives until `want` datagrams arrived or five seconds passed, `max`
    /// at a time; flushes `sender` in between in case it holds a backlog.
    fn receive(
        io: &mut UdpSocketIo,
        mut sender: Option<&mut UdpSocketIo>,
        want: usize,
        max: usize,
    ) -> Vec<Datagram> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            if let Some(s) = sender.as_deref_mut() {
                s.flush().unwrap();
            }
            let n = io
                .recv_batch(max, &mut |d| {
                    got.push((d.remote, d.local_ip, d.ecn, d.payload.to_vec()));
                })
                .unwrap();
            assert!(n <= max);
            if n == 0 {
                io.wait(Duration::from_millis(10)).unwrap();
            }
        }
        got
    }

    fn outgoing(remote: SocketAddr, segment_size: usize, contents: &[u8]) -> Outgoing<'_> {
        Outgoing {
            remote,
            local_ip: None,
            ecn: 0,
            segment_size,
            contents,
        }
    }

    fn patterned(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1200) as u8).collect()
    }

    #[test]
    fn gso_batch_arrives_as_separate_datagrams() {
        let mut a = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let mut b = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let contents = patterned(9 * 1200 + 700);

        a.send(&outgoing(b_addr, 1200, &contents)).unwrap();
        a.flush().unwrap();
        // max = 3 makes one GRO buffer span several recv_batch calls.
        let got = receive(&mut b, None, 10, 3);

        assert_eq!(got.len(), 10);
        for ((remote, local_ip, _, payload), expected) in got.iter().zip(contents.chunks(1200)) {
            assert_eq!(*remote, a_addr);
            assert_eq!(*local_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            assert_eq!(payload.as_slice(), expected);
        }
        assert_eq!(a.counters().tx_packets, 10);
        assert_eq!(a.counters().tx_dropped, 0);
        assert_eq!(b.counters().rx_packets, 10);
        if a.max_segments() >= 10 {
            assert_eq!(a.tx_syscalls, 1, "one sendmsg for the whole GSO batch");
        }
        eprintln!(
            "max_segments={} gro_segments={} rx_syscalls={} tx_syscalls={}",
            a.max_segments(),
            b.gro_segments(),
            b.rx_syscalls,
            a.tx_syscalls
        );
    }

    #[test]
    fn gso_batch_above_64k_is_split_across_sends() {
        let mut a = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let mut b = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let b_addr = b.local_addr().unwrap();
        let segments = a.max_segments();
        let contents = patterned(segments * 1200);

        a.send(&outgoing(b_addr, 1200, &contents)).unwrap();
        a.flush().unwrap();
        let got = receive(&mut b, None, segments, 64);

        assert_eq!(got.len(), segments);
        for ((_, _, _, payload), expected) in got.iter().zip(contents.chunks(1200)) {
            assert_eq!(payload.as_slice(), expected);
        }
        assert_eq!(a.counters().tx_packets, segments as u64);
        assert_eq!(a.counters().tx_dropped, 0);
        let per_call = (MAX_SEND_BYTES / 1200).min(segments);
        assert_eq!(a.tx_syscalls as usize, segments.div_ceil(per_call));
    }

    #[test]
    fn dual_stack_socket_reports_plain_ipv4_and_answers() {
        let unspecified: SocketAddr = (Ipv6Addr::UNSPECIFIED, 0).into();
        let mut server = match UdpSocketIo::bind(unspecified, false) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("no IPv6 here ({e}); skipped");
                return;
            }
        };
        let port = server.local_addr().unwrap().port();
        let mut client = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let client_addr = client.local_addr().unwrap();

        client
            .send(&outgoing((Ipv4Addr::LOCALHOST, port).into(), 1200, b"ping"))
            .unwrap();
        client.flush().unwrap();
        let got = receive(&mut server, None, 1, 64);
        assert_eq!(got.len(), 1);
        let (remote, local_ip, _, payload) = &got[0];
        assert_eq!(*remote, client_addr);
        assert!(remote.is_ipv4());
        assert_eq!(*local_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(payload, b"ping");

        // Answered from the address it came to, as the worker does.
        server
            .send(&Outgoing {
                remote: *remote,
                local_ip: *local_ip,
                ecn: 0b10,
                segment_size: 4,
                contents: b"pong",
            })
            .unwrap();
        server.flush().unwrap();
        let got = receive(&mut client, None, 1, 64);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        assert_eq!(got[0].2, 0b10, "ECT(0) set on send and read back");
        assert_eq!(got[0].3, b"pong");
        assert_eq!(server.counters().tx_dropped, 0);

        // An IPv6 peer on the same socket stays IPv6.
        if let Ok(mut client6) = UdpSocketIo::bind((Ipv6Addr::LOCALHOST, 0).into(), false) {
            client6
                .send(&outgoing(
                    (Ipv6Addr::LOCALHOST, port).into(),
                    1200,
                    b"ping6",
                ))
                .unwrap();
            client6.flush().unwrap();
            let got = receive(&mut server, None, 1, 64);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, client6.local_addr().unwrap());
            assert_eq!(got[0].1, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
    }

    #[test]
    fn reuse_port_lets_workers_share_a_port() {
        let first = UdpSocketIo::bind(localhost_v4(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = UdpSocketIo::bind(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let third = UdpSocketIo::bind(addr, false);
        assert_eq!(
            third.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }

    #[test]
    fn burst_of_small_datagrams_all_arrive() {
        const COUNT: usize = 2000;
        let mut a = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let mut b = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let b_addr = b.local_addr().unwrap();
        // UDP has no flow control: the whole burst must fit the receive
        // buffer (each small datagram costs about 1 KiB of it). Where the
        // kernel caps the buffer low, send in slices that do fit.
        let rcvbuf = b
            .wire
            .state
            .recv_buffer_size((&b.wire.socket).into())
            .unwrap();
        let burst = if rcvbuf >= COUNT * 2048 { COUNT } else { 64 };

        let mut got = Vec::new();
        let mut sent = 0;
        while sent < COUNT {
            let end = (sent + burst).min(COUNT);
            for seq in sent..end {
                let mut payload = [0u8; 64];
                payload[..4].copy_from_slice(&(seq as u32).to_be_bytes());
                a.send(&outgoing(b_addr, 64, &payload)).unwrap();
            }
            a.flush().unwrap();
            got.extend(receive(&mut b, Some(&mut a), end - sent, 64));
            sent = end;
        }

        assert_eq!(got.len(), COUNT);
        let mut seqs: Vec<u32> = got
            .iter()
            .map(|(_, _, _, p)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        seqs.sort_unstable();
        assert!(seqs.iter().copied().eq(0..COUNT as u32));
        assert_eq!(a.counters().tx_packets, COUNT as u64);
        assert_eq!(a.counters().tx_dropped, 0);
        assert_eq!(b.counters().rx_packets, got.len() as u64);
        // recvmmsg batches: far fewer calls than datagrams.
        assert!(
            b.rx_syscalls < COUNT as u64,
            "rx_syscalls {}",
            b.rx_syscalls
        );
        eprintln!(
            "burst={burst} rx_syscalls={} tx_syscalls={}",
            b.rx_syscalls, a.tx_syscalls
        );
    }

    #[test]
    fn capacity_and_segments_are_consistent() {
        let mut a = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let mut b = UdpSocketIo::bind(localhost_v4(), false).unwrap();
        let b_addr = b.local_addr().unwrap();
        let max = a.max_segments();
        assert!(max >= 1);
        assert_eq!(max, a.wire.state.max_gso_segments());
        assert_eq!(a.tx_capacity(), TX_BACKLOG_SEGMENTS);
        assert!(a.tx_capacity() >= max, "a full GSO batch must always fit");

        // What the socket refused waits in the backlog, takes capacity, and
        // leaves in order on flush.
        let head = Header {
            remote: b_addr,
            src_ip: None,
            ecn: 0,
            segment_size: 100,
        };
        let first = patterned(250);
        a.enqueue(head, &first);
        assert_eq!(a.tx_capacity(), TX_BACKLOG_SEGMENTS - 3);
        a.send(&outgoing(b_addr, 100, &[9u8; 100])).unwrap();
        assert_eq!(a.tx_capacity(), TX_BACKLOG_SEGMENTS - 4);
        assert_eq!(a.tx_syscalls, 0, "queued behind the backlog, not sent");

        a.flush().unwrap();
        assert_eq!(a.tx_capacity(), TX_BACKLOG_SEGMENTS);
        let got = receive(&mut b, None, 4, 64);
        let payloads: Vec<&[u8]> = got.iter().map(|(_, _, _, p)| p.as_slice()).collect();
        assert_eq!(
            payloads,
            [&first[..100], &first[100..200], &first[200..], &[9u8; 100]]
        );
        assert_eq!(a.counters().tx_packets, 4);

        // A send larger than the room left is counted, not half-sent.
        let huge = vec![0u8; (TX_BACKLOG_SEGMENTS + 1) * 10];
        a.send(&outgoing(b_addr, 10, &huge)).unwrap();
        assert_eq!(a.counters().tx_dropped, TX_BACKLOG_SEGMENTS as u64 + 1);
        assert_eq!(a.counters().tx_packets, 4);
    }
}
